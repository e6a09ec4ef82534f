"""A local HTTP server of generated images and bad answers, for the tests and `make demo`.

Serves on 127.0.0.1 only. Paths:

    /<anything>.jpg | .png     a generated image (colour bands derived from the path), 96 x 72
    /bad/404.jpg               404            /bad/500.jpg          500
    /bad/redirect.jpg          302 -> /redirected/ok.jpg
    /bad/slow.jpg, /slow/*     answers after SLOW_S seconds (past the tests' timeout)
    /bad/page.html, /bad/html.jpg   an HTML page
    /bad/truncated.jpg         the first half of a JPEG
    /bad/tiny.jpg              an 8 x 8 image (below min_side)
    /bad/to-private.jpg        302 -> http://10.0.0.1/x.jpg          /bad/to-metadata.jpg  302 -> 169.254.169.254
    /bad/to-file.jpg           302 -> file:///etc/passwd
    /bad/optout.jpg            an image with X-Robots-Tag: noai
    /bad/huge.png              a 20000 x 20000 PNG (small file, 400 M pixels: a decompression bomb)

With `root` (e.g. tests/fixtures/web, the fixture captions' URLs as files laid out <host>/<path>), a
file there is served as it is (PixelProse's fixture sha256 values are those files' hashes).
`requests` counts the GETs per path (the tests check that a resumed run fetches nothing twice).
Run it alone: `python -m pipeline.images.fixture_server --root tests/fixtures/web --url-file F`
(prints its base URL; `make demo` does this).
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import Counter
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_S = 3.0


def fixture_image(path: str, size: tuple[int, int] = (96, 72)):
    """The PIL image served at `path`: four horizontal bands of colours derived from the path."""
    from PIL import Image, ImageDraw

    h = hashlib.sha256(path.encode()).digest()
    im = Image.new("RGB", size)
    d = ImageDraw.Draw(im)
    for b in range(4):
        d.rectangle([0, b * size[1] // 4, size[0], (b + 1) * size[1] // 4], fill=tuple(h[3 * b:3 * b + 3]))
    return im


def encode(im, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _bomb() -> bytes:
    import struct
    import zlib

    w = h = 20000

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * (w // 8 + 1) * 64, 9)  # the header is what matters: never decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) + \
        chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class _Handler(BaseHTTPRequestHandler):
    server: "FixtureServer"

    def log_message(self, *a):  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _redirect(self, to: str):
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        p = self.path.split("?", 1)[0]
        self.server.requests[p] += 1
        root = self.server.root
        if root is not None and not p.startswith("/bad/"):
            f = (root / p.lstrip("/")).resolve()
            if f.is_file() and f.is_relative_to(root):
                return self._send(200, f.read_bytes(), "image/png" if f.suffix == ".png" else "image/jpeg")
        if p == "/bad/404.jpg":
            return self._send(404, b"not found", "text/plain")
        if p == "/bad/500.jpg":
            return self._send(500, b"boom", "text/plain")
        if p == "/bad/redirect.jpg":
            return self._redirect("/redirected/ok.jpg")
        if p == "/bad/to-private.jpg":
            return self._redirect("http://10.0.0.1/x.jpg")
        if p == "/bad/to-metadata.jpg":
            return self._redirect("http://169.254.169.254/latest/meta-data/iam/")
        if p == "/bad/to-file.jpg":
            return self._redirect("file:///etc/passwd")
        if p == "/bad/slow.jpg" or p.startswith("/slow/"):
            time.sleep(self.server.slow_s)
            return self._send(200, encode(fixture_image(p)))
        if p in ("/bad/page.html", "/bad/html.jpg"):
            return self._send(200, b"<!DOCTYPE html><html><body>Not an image</body></html>", "text/html")
        if p == "/bad/truncated.jpg":
            data = encode(fixture_image(p, (320, 240)))
            return self._send(200, data[: len(data) // 2])
        if p == "/bad/tiny.jpg":
            return self._send(200, encode(fixture_image(p, (8, 8))))
        if p == "/bad/optout.jpg":
            return self._send(200, encode(fixture_image(p)), headers={"X-Robots-Tag": "noai"})
        if p == "/bad/huge.png":
            return self._send(200, _bomb(), "image/png")
        if p.endswith(".png"):
            return self._send(200, encode(fixture_image(p), "PNG"), "image/png")
        if p.endswith((".jpg", ".jpeg")):
            return self._send(200, encode(fixture_image(p)))
        return self._send(404, b"not found", "text/plain")


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, slow_s: float = SLOW_S, root: str | Path | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = Path(root).resolve() if root is not None else None
        self.requests: Counter = Counter()
        self.slow_s = slow_s
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address):  # a client that gave up (the timeout test): not news
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "FixtureServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--root", default=None, help="serve the files of this folder first (e.g. tests/fixtures/web)")
    ap.add_argument("--url-file", default=None, help="write the base URL to this file once listening")
    a = ap.parse_args()
    srv = FixtureServer(a.port, root=a.root)
    print(srv.base, flush=True)
    if a.url_file:
        tmp = Path(a.url_file + ".tmp")
        tmp.write_text(srv.base)
        tmp.replace(a.url_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
