"""The `openai` engine: any OpenAI-compatible chat server (`vllm serve`, a router over replicas, a hosted API).

What real servers do, and what this engine does about it (the policy, with its options: docs/openai.md):

- **Transient faults are retried**: connection errors, timeouts (`--openai-timeout-s`), HTTP 408 / 409 / 425 /
  429 / 5xx, and any answer that is not the JSON the API promises (not JSON, cut off, an `error` object, no or
  empty `choices`, no `message`, no text and no tokens). Each is an `EngineError` naming the status and the
  start of the server's own message. Waits grow exponentially (1 s, 2 s, 4 s ... capped at 60 s) with full
  jitter (a uniform draw below the step: many workers hitting one restarting server do not come back in step);
  the draws come from a generator seeded by the request's own seed, so a rerun waits the same. A `Retry-After`
  header (seconds or an HTTP-date, RFC 9110 section 10.2.3) is waited instead. One request retries for at most
  `--openai-retry-s` seconds (default 600: a server restart, model loading included) and is then an
  `EngineError` (its dialogue is recorded `failed`; `--retry-failed` runs it again). The request body, its
  sampling seed included, is the same on every try, so a retried message is the message a fault-free run writes.
- **Faults no retry fixes stop the run**: a refused key (401 / 403) or a model the server does not serve
  (404) raise `EngineRefused`, which the dialogue loop and the worker let through: the run stops at once with
  what to fix, keeping every row finished so far, and the same command resumes it.
- `check_server` asks `/models` once before a run starts (pipeline/dialogue/jobs.py): an unreachable server, a
  refused key or a model it does not list stops the run before any row, and what it reports for the model
  (its id, the weights it serves, its context length) goes into the run's config.

The API key is read from $OPENAI_API_KEY; it is sent in the Authorization header only, and removed from any
text of the server's that ssvd repeats (a server may echo the header).
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.core.types import stable_int
from pipeline.dialogue.engine_api import Completion, EngineError, EngineOptions, EngineRefused, Sampling
from pipeline.dialogue.models import ResolvedModel

log = logging.getLogger("ssvd")

KEY_ENV = "OPENAI_API_KEY"
RETRIED_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx
MESSAGE_CHARS = 300  # how much of the server's own message an error repeats


class Transient(EngineError):
    """A fault that a later try may not meet; `retry_after_s`: how long the server asked to wait."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    budget_s: float = 600.0  # total time one request may spend waiting to be tried again
    base_s: float = 1.0  # the first step of the exponential backoff
    cap_s: float = 60.0  # the largest step

    def wait_s(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        """How long to wait before try `attempt + 1`: the server's Retry-After, else full jitter."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** attempt))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: delay-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2026 07:28:00
    GMT"), counted from `now` (time.time()); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def shown_url(url: str) -> str:
    """The URL without user:password@ (a URL may carry credentials): what errors and the run record show."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, p.query, p.fragment)).rstrip("/")


def _headers() -> dict[str, str]:
    key = os.environ.get(KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _scrub(text: str) -> str:
    """The server's text, cut to its start, without the API key (a server may echo the request's header)."""
    key = os.environ.get(KEY_ENV)
    text = " ".join(text.split())[:MESSAGE_CHARS]
    return text.replace(key, f"<${KEY_ENV}>") if key else text


def _refused(url: str, status: int, message: str, model: str | None = None) -> EngineRefused:
    """The error of a fault no retry fixes, with what to do about it."""
    said = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status in (401, 403):
        key = "its key" if os.environ.get(KEY_ENV) else f"no key (${KEY_ENV} is not set)"
        return EngineRefused(f"the OpenAI-compatible server at {url} refuses {key} ({said}). Set ${KEY_ENV} to a key "
                             f"it accepts, then run the same command again (it resumes).")
    what = f" model {model!r}" if model else " the request"
    return EngineRefused(f"the OpenAI-compatible server at {url} does not serve{what} ({said}). Serve it there, or "
                         f"point --openai-base-url at a server that does, then run the same command again (it resumes).")


def parse_completion(status: int, content: bytes) -> Completion:
    """The completion in a 2xx answer; any other shape is a `Transient` fault naming what is wrong."""
    shown = _scrub(content.decode("utf-8", "replace"))
    try:
        data = json.loads(content)
    except ValueError as e:
        raise Transient(f"HTTP {status}: the answer is not JSON ({e}): {shown}") from None
    if not isinstance(data, dict):
        raise Transient(f"HTTP {status}: the answer is not a JSON object: {shown}")
    if data.get("error"):
        err = data["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise Transient(f"HTTP {status}: the server answered an error: {_scrub(str(msg))}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Transient(f"HTTP {status}: the answer has no choices: {shown}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise Transient(f"HTTP {status}: the answer's choice has no message: {shown}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") or {}
    text = message.get("content") or ""
    completion_tokens = int(usage.get("completion_tokens") or 0)
    if not text and not completion_tokens:  # no answer at all (min_tokens >= 1): the server's fault
        raise Transient(f"HTTP {status}: empty completion (finish reason {choices[0].get('finish_reason')!r})")
    return Completion(text=text, finish_reason=choices[0].get("finish_reason") or "",
                      prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=completion_tokens,
                      cached_tokens=int(details.get("cached_tokens") or 0))


@dataclass
class OpenAIEngine:
    """Any OpenAI-compatible chat server. The API key comes from $OPENAI_API_KEY and is never logged."""

    model: ResolvedModel
    options: EngineOptions
    _client: Any = None
    _sem: asyncio.Semaphore | None = None
    retries_itself = True  # protocol._chat does not retry this engine's errors again

    @classmethod
    def create(cls, model: ResolvedModel, options: EngineOptions) -> "OpenAIEngine":
        import httpx

        client = httpx.AsyncClient(base_url=options.openai_base_url.rstrip("/"), headers=_headers(),
                                   timeout=options.openai_timeout_s)
        return cls(model=model, options=options, _client=client)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(budget_s=self.options.openai_retry_s)

    def body(self, messages: list[dict], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model.path, "messages": messages,
                                "temperature": sampling.temperature, "max_tokens": sampling.max_tokens}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.ignore_eos:
            body["ignore_eos"] = True  # vLLM extension
        if sampling.min_tokens:
            body["min_tokens"] = sampling.min_tokens  # vLLM extension; others ignore it
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty  # vLLM extension
        return body

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        body, policy = self.body(messages, sampling), self.policy
        rng = random.Random(stable_int("openai-backoff", sampling.seed, *sampling.tag))
        deadline = time.monotonic() + policy.budget_s
        attempt = 0
        while True:
            try:
                return await self._once(body)
            except Transient as e:
                wait = policy.wait_s(attempt, rng, e.retry_after_s)
                if wait > deadline - time.monotonic():
                    raise EngineError(f"{e} (given up after {attempt + 1} tries: the retry budget of "
                                      f"{policy.budget_s:g} s, --openai-retry-s, is spent)") from None
                log.info("openai: %s; trying again in %.1f s (try %d)", e, wait, attempt + 2)
                await asyncio.sleep(wait)
                attempt += 1

    async def _once(self, body: dict) -> Completion:
        import httpx

        if self._sem is None:  # created lazily: it must belong to the running loop
            self._sem = asyncio.Semaphore(self.options.openai_max_concurrency)
        async with self._sem:
            try:
                r = await self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException as e:
                raise Transient(f"{type(e).__name__}: no answer in {self.options.openai_timeout_s:g} s "
                                f"(--openai-timeout-s)") from None
            except httpx.HTTPError as e:
                raise Transient(f"{type(e).__name__}: {_scrub(str(e))}") from None
        status = r.status_code
        if status in RETRIED_STATUSES or status >= 500:
            raise Transient(f"HTTP {status}: {_scrub(r.text)}", retry_after_s(r.headers.get("retry-after")))
        if status in (401, 403, 404):
            raise _refused(shown_url(self.options.openai_base_url), status, _scrub(r.text), self.model.path)
        if status >= 400:  # 400, 413, 422 ...: the server refuses this request, whatever the try
            raise ValueError(f"HTTP {status}: {_scrub(r.text)}")
        return parse_completion(status, r.content)

    def info(self) -> dict:
        return {
            "engine": "openai",
            "base_url": shown_url(self.options.openai_base_url),
            "model": self.model.name,
            "model_fingerprint": self.model.fingerprint,
            "model_quality": self.model.quality,
            "timeout_s": self.options.openai_timeout_s,
            "retry_s": self.options.openai_retry_s,
            "max_concurrency": self.options.openai_max_concurrency,
        }

    def close(self) -> None:
        self._client = None


def check_server(options: EngineOptions, models: list[str]) -> dict[str, dict]:
    """Ask the server at `options.openai_base_url` for `/models` once; for each of `models` (the names requests
    send), what it serves: {"id", "root" (the weights, where the server says), "max_model_len" (None where it
    does not say)}. An unreachable server, a refused key, an answer that is no list of models or a model not
    listed raise `EngineRefused` naming the URL, the status and the fix."""
    import httpx

    url = shown_url(options.openai_base_url) + "/models"
    try:
        r = httpx.get(options.openai_base_url.rstrip("/") + "/models", headers=_headers(),
                      timeout=min(options.openai_timeout_s, 30.0))
    except httpx.HTTPError as e:
        raise EngineRefused(f"the OpenAI-compatible server at {url} cannot be reached ({type(e).__name__}: "
                            f"{_scrub(str(e))}). Start it, or fix --openai-base-url (the server's API root, "
                            f"e.g. http://127.0.0.1:8000/v1).") from None
    if r.status_code in (401, 403):
        raise _refused(url, r.status_code, _scrub(r.text))
    listed = None
    if r.status_code == 200:
        try:
            listed = json.loads(r.content).get("data")
        except (ValueError, AttributeError):
            pass
    if not isinstance(listed, list):
        raise EngineRefused(f"the server at {url} answered HTTP {r.status_code} ({_scrub(r.text)}), not its list of "
                            f"models. Check --openai-base-url (the server's OpenAI API root, ending in /v1) and "
                            f"that the server is up.")
    served = {m["id"]: m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)}
    out = {}
    for name in models:
        if name not in served:
            raise EngineRefused(
                f"the server at {url} does not serve model {name!r} (HTTP {r.status_code}: it lists "
                f"{', '.join(sorted(served)) or 'no model'}). Pass --model (or --user-model / --assistant-model) "
                f"with a model it lists, or serve {name!r} there (vllm serve ... --served-model-name {name}).")
        m = served[name]
        length = m.get("max_model_len") or m.get("context_length") or m.get("context_window")
        out[name] = {"id": name, "root": m.get("root") or name, "max_model_len": int(length) if length else None}
    return out
