"""Fetching untrusted image URLs safely: the policy that img2dataset's own urllib call lacks.

A dataset URL is attacker-controlled. `fetch(url, policy)`:

* accepts only http and https (the URL and every redirect target): never file://, ftp://, data:, ...;
* resolves the host itself and connects to the checked address (no second lookup, so no DNS
  rebinding between the check and the connection); every address the host resolves to must be
  public (`ipaddress`: not loopback, private, link-local, multicast, reserved, unspecified, shared
  100.64/10, nor a cloud metadata address such as 169.254.169.254 or fd00:ec2::254), unless it is in
  the explicit allow-list (`--allow-address 127.0.0.1`, the tests' server; never a default);
* checks each redirect the same way (the redirect is a new connection through the same handlers);
* uses no proxy from the environment and no other urllib handler (no file, ftp or data handler);
* stops reading past `max_bytes` (also refused at once by Content-Length) and past the overall
  timeout (a server that drips bytes);
* honours the sites' opt-out (X-Robots-Tag, with img2dataset's own `is_disallowed`).

`check_image(data, max_pixels)` then reads the image header (PIL), refuses more than `max_pixels`
pixels before anything is decoded (decompression bombs), and decodes it fully once, so that a
truncated or corrupt file ends as `image:truncated` / `image:not_an_image` (OpenCV, which
img2dataset's resizer uses, silently fills a truncated JPEG with grey).

Every refusal raises `Refused(reason, detail)` with a reason of pipeline.images.schema.REASONS.
"""
from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import socket
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200",
                                              "fd00:ec2::254", "192.0.0.192")}


class Refused(Exception):
    """An image that will not be fetched or kept, with its reason (schema.REASONS)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[str, ...] = ()  # IPs or CIDRs allowed although not public
    max_bytes: int = 32 << 20
    timeout_s: float = 10.0
    user_agent: str = "ssvd-images"
    user_agent_token: str = "ssvd"
    disallowed_header_directives: tuple[str, ...] = ()
    mirrors: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def networks(self) -> tuple:
        out = []
        for a in self.allow:
            try:
                out.append(ipaddress.ip_network(a, strict=False))
            except ValueError as e:
                raise ValueError(f"--allow-address {a!r}: not an IP address or CIDR ({e})") from None
        return tuple(out)


def parse_allow(values) -> tuple[str, ...]:
    """Validate allow-list entries (IP or CIDR); a clear error names the bad one."""
    FetchPolicy(allow=tuple(values)).networks  # noqa: B018 - raises on a bad entry
    return tuple(values)


def address_problem(ip: str, policy: FetchPolicy) -> str | None:
    """Why connecting to `ip` is refused (None: allowed)."""
    a = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if any(a in n for n in policy.networks):
        return None
    if a in METADATA:
        return f"{a} is a cloud metadata address"
    for what in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(a, f"is_{what}"):
            return f"{a} is a {what.replace('_', '-')} address"
    if not a.is_global:
        return f"{a} is not a public address"
    return None


def _connect(host: str, port: int, timeout, source_address, policy: FetchPolicy) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise urllib.error.URLError(f"cannot resolve {host!r}: {e}") from None
    for *_, addr in infos:
        why = address_problem(addr[0], policy)
        if why:
            raise Refused("image:refused_address", f"host {host!r} resolves to {addr[0]}: {why} "
                          "(allow it explicitly with --allow-address only for a server you trust)")
    err: OSError | None = None
    for family, socktype, proto, _, addr in infos:
        s = socket.socket(family, socktype, proto)
        try:
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                s.settimeout(timeout)
            if source_address:
                s.bind(source_address)
            s.connect(addr)  # the checked address itself: no second DNS lookup
            return s
        except OSError as e:
            err = e
            s.close()
    raise err or OSError(f"no address for {host!r}")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *a, policy: FetchPolicy, **kw):
        super().__init__(*a, **kw)
        self._policy = policy

    def connect(self):
        self.sock = _connect(self.host, self.port, self.timeout, self.source_address, self._policy)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *a, policy: FetchPolicy, **kw):
        super().__init__(*a, **kw)
        self._policy = policy

    def connect(self):
        sock = _connect(self.host, self.port, self.timeout, self.source_address, self._policy)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: FetchPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, policy=self.policy), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: FetchPolicy):
        super().__init__()
        self.policy = policy

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, policy=self.policy), req, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise Refused("image:refused_scheme", f"redirect ({code}) from {req.full_url} to a {scheme}: URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(policy: FetchPolicy) -> urllib.request.OpenerDirector:
    """Only our HTTP(S) handlers, redirects and error processing: no proxy, file, ftp or data handler."""
    op = urllib.request.OpenerDirector()
    for h in (_HTTPHandler(policy), _HTTPSHandler(policy), _RedirectHandler(),
              urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        op.add_handler(h)
    return op


def mirrored(url: str, policy: FetchPolicy) -> str:
    for prefix, repl in policy.mirrors:
        if url.startswith(prefix):
            return repl + url[len(prefix):]
    return url


def _is_timeout(e: BaseException) -> bool:
    r = getattr(e, "reason", e)
    return isinstance(r, (TimeoutError, socket.timeout)) or "timed out" in str(r).lower()


def fetch(url: str, policy: FetchPolicy, op: urllib.request.OpenerDirector | None = None) -> bytes:
    """The bytes at `url` (after --mirror), or Refused with the reason (see the module docstring)."""
    from img2dataset.downloader import is_disallowed

    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("image:refused_scheme", f"{url[:80]!r}: only http and https URLs are fetched")
    req = urllib.request.Request(url, headers={"User-Agent": policy.user_agent})
    deadline = time.monotonic() + policy.timeout_s
    try:
        with (op or opener(policy)).open(req, timeout=policy.timeout_s) as r:
            if policy.disallowed_header_directives and is_disallowed(
                    r.headers, policy.user_agent_token, set(policy.disallowed_header_directives)):
                raise Refused("image:opt_out", f"X-Robots-Tag {r.headers.get_all('X-Robots-Tag')} disallows it")
            n = r.headers.get("Content-Length")
            if n and n.isdigit() and int(n) > policy.max_bytes:
                raise Refused("image:too_large", f"Content-Length {n} > max_bytes {policy.max_bytes}")
            buf = io.BytesIO()
            while True:
                chunk = r.read(64 << 10)
                if not chunk:
                    break
                buf.write(chunk)
                if buf.tell() > policy.max_bytes:
                    raise Refused("image:too_large", f"more than max_bytes {policy.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise Refused("image:timeout", f"not all bytes within {policy.timeout_s} s")
            return buf.getvalue()
    except Refused:
        raise
    except urllib.error.HTTPError as e:
        if e.code in (301, 302, 303, 307, 308):
            if "is not allowed" in str(e.reason):  # urllib's own check of the target's scheme
                raise Refused("image:refused_scheme", f"redirect ({e.code}) to a non-http(s) URL: {e.reason}") from None
            raise Refused("image:too_many_redirects", f"HTTP {e.code}: {e.reason}") from None
        if 500 <= e.code < 600:
            raise Refused("image:server_error", f"HTTP {e.code} {e.reason}") from None
        raise Refused("image:dead_link", f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        if _is_timeout(e):
            raise Refused("image:timeout", f"no answer within {policy.timeout_s} s") from None
        raise Refused("image:unreachable", f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an image that decodes fully and has at most `max_pixels` pixels, else Refused."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise Refused("image:too_many_pixels", str(e)) from None
        except UnidentifiedImageError:
            head = data[:64].lstrip().lower()
            what = "an HTML page" if head.startswith((b"<!doctype html", b"<html")) else f"{len(data)} bytes"
            raise Refused("image:not_an_image", f"not an image: {what}") from None
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise Refused("image:too_many_pixels", f"{w} x {h} = {w * h} pixels > max_pixels {max_pixels}")
            try:
                im.load()
            except (OSError, SyntaxError, ValueError) as e:
                if "truncated" in str(e) or "broken data stream" in str(e):
                    raise Refused("image:truncated", f"{im.format} {w} x {h}: {e}") from None
                raise Refused("image:not_an_image", f"{im.format} does not decode: {e}") from None
    return w, h
