"""A local OpenAI-compatible server for tests (127.0.0.1, a thread of the test process) that answers
deterministically and misbehaves on chosen requests, as real servers do.

The answer to a chat request is a function of its seed, its token limit and its last message only, so a request
tried again gets the same answer, and a run with faults writes the same words as a run without.

Faults (`FAULTS`): set `server.by_count[n] = kind` (the n-th chat request, counting from 1), or
`server.by_text.append([text, kind, times])` (the next `times` requests whose body contains `text`; times
-1: all of them), or `server.lasting = kind` (every chat request). `/models` answers `server.models`
({id: root}) unless `server.models_fault` is set.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("red green small large round square bright quiet old new wooden metal soft warm cold tall short near far "
         "kite boat tree house river cloud stone bird chair lamp window garden road hill bridge cup book door").split()

TRANSIENT = ("503json", "429", "429date", "500html", "close", "delay", "cut", "error200", "html200", "nochoices",
             "nomessage", "empty", "408", "409", "425", "502", "504")
FATAL = ("401", "403", "404")
FAULTS = TRANSIENT + FATAL


def answer(seed, max_tokens: int, last: str) -> str:
    """Two or three short sentences drawn from (seed, last message): the same request, the same words."""
    rng = random.Random(hashlib.sha256(f"{seed}|{max_tokens}|{last}".encode()).hexdigest())
    n = min(max_tokens, rng.randint(8, 20))
    words = [rng.choice(WORDS) for _ in range(n)]
    cut = rng.randint(3, n - 3)
    first, second = " ".join(words[:cut]), " ".join(words[cut:])
    return f"{first.capitalize()}. {second.capitalize()}?"


class FakeServer:
    def __init__(self, key: str | None, models: dict[str, str], max_model_len: int = 4096, delay_s: float = 2.0):
        self.key, self.models, self.max_model_len, self.delay_s = key, models, max_model_len, delay_s
        self.by_count: dict[int, str] = {}
        self.by_text: list[list] = []
        self.lasting: str | None = None
        self.models_fault: str | None = None
        self.revoke_after: int | None = None  # chat requests answered before the key is refused
        self.chats = 0  # chat requests received
        self.bodies: list[dict] = []  # every chat request's body, in arrival order
        self.faulted: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client gone after a delay: expected
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def heal(self) -> None:
        self.by_count.clear()
        self.by_text.clear()
        self.lasting = self.models_fault = self.revoke_after = None

    def fault_for(self, raw: bytes) -> str | None:
        with self.lock:
            self.chats += 1
            n = self.chats
            if self.revoke_after is not None and n > self.revoke_after:
                return "401"
            if n in self.by_count:
                return self.by_count.pop(n)
            text = raw.decode("utf-8", "replace")
            for entry in self.by_text:
                if entry[2] != 0 and entry[0] in text:
                    entry[2] -= 1
                    return entry[1]
            return self.lasting


def _handler(server: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None,
                  length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _error(self, status: int, message: str, headers: dict | None = None) -> None:
            self._json(status, {"error": {"message": message, "type": "fake", "code": status}}, headers)

        def _authorised(self) -> bool:
            got = self.headers.get("Authorization", "")
            if server.key is None or got == f"Bearer {server.key}":
                return True
            # like some servers, the refusal repeats what it got: ssvd must not repeat it
            self._error(401, f"invalid API key in {got!r}")
            return False

        def do_GET(self) -> None:
            if not self.path.rstrip("/").endswith("/models"):
                return self._error(404, f"no route {self.path}")
            if not self._authorised():
                return
            if server.models_fault:
                return self._error(int(server.models_fault), "forbidden for this key")
            data = [{"id": i, "object": "model", "owned_by": "fake", "root": root, "max_model_len": server.max_model_len}
                    for i, root in server.models.items()]
            self._json(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._error(404, f"no route {self.path}")
            if not self._authorised():
                return
            body = json.loads(raw)
            with server.lock:
                server.bodies.append(body)
            kind = server.fault_for(raw)
            if kind:
                with server.lock:
                    server.faulted.append(kind)
                if self._fault(kind, body):
                    return
            if body["model"] not in server.models:
                return self._error(404, f"The model `{body['model']}` does not exist.")
            text = answer(body.get("seed"), body["max_tokens"], body["messages"][-1]["content"])
            n = len(text.split())
            self._json(200, {"id": "cmpl-fake", "object": "chat.completion", "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                                       "completion_tokens": n, "total_tokens": n}})

        def _fault(self, kind: str, body: dict) -> bool:
            """Misbehave as `kind` says; False: answer normally after all (a delay)."""
            if kind == "503json":
                self._error(503, "the server is restarting")
            elif kind == "429":
                self._error(429, "rate limited", {"Retry-After": "1"})
            elif kind == "429date":
                self._error(429, "rate limited", {"Retry-After": email.utils.formatdate(time.time() + 1, usegmt=True)})
            elif kind == "500html":
                self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html")
            elif kind in ("502", "504", "408", "409", "425"):
                self._error(int(kind), f"fault {kind}")
            elif kind == "close":
                self.close_connection = True
                self.connection.close()
            elif kind == "delay":
                time.sleep(server.delay_s)
                return False
            elif kind == "cut":
                whole = json.dumps({"choices": [{"message": {"role": "assistant", "content": "cut off here"}}]})
                self._send(200, whole[: len(whole) // 2].encode())
            elif kind == "error200":
                self._json(200, {"error": {"message": "upstream model crashed", "code": 500}})
            elif kind == "html200":
                self._send(200, b"<html>Bad gateway</html>", "text/html")
            elif kind == "nochoices":
                self._json(200, {"id": "x", "choices": []})
            elif kind == "nomessage":
                self._json(200, {"id": "x", "choices": [{"index": 0, "finish_reason": "stop"}]})
            elif kind == "empty":
                self._json(200, {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
                                 "usage": {"completion_tokens": 0}})
            elif kind in ("401", "403"):
                self._error(int(kind), f"key refused ({self.headers.get('Authorization', '')!r})")
            elif kind == "404":
                self._error(404, f"The model `{body['model']}` does not exist.")
            else:
                raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(FAULTS)}")
            return True

    return Handler
