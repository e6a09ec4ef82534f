"""Where ssvd can read and write: local (or mounted) paths only, for now.

A URL (`s3://bucket/x`, `gs://...`, `file://...`, any `scheme://`) given where a path is expected is refused
before any work, with an error naming the option: without this, `--out s3://bucket/x` silently wrote to a
local folder named `s3:` (pathlib reads the URL as a relative path). Object storage is planned (issue 25,
docs/scale.md); until it is built, a bucket can be used through a mount (s3fs, gcsfuse) given as a path.
"""
from __future__ import annotations

import re

# `scheme:/` too: pathlib has already collapsed `s3://b/x` to `s3:/b/x` when a CLI path option arrives here.
# Two letters at least, so a Windows drive (`C:/x`) is a path.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")


# Where an input may name a Hugging Face dataset: `hf://datasets/ID` and `hub:ID` (an ID that looks like an
# absolute path, `hub:/x/y`, reads as a URL to the pattern above) are hub ids, not URLs of storage.
HUB_SCHEMES = ("hf", "hub")


class UnsupportedLocation(ValueError):
    """A URL where ssvd needs a local path."""


def url_scheme(value: object) -> str | None:
    """The URL scheme of `value` (`s3`, `gs`, `file`, ...), or None for a plain path."""
    m = _URL.match(str(value)) if value is not None else None
    return m["scheme"].lower() if m else None


def refuse_url(value: object, where: str, allowed: tuple[str, ...] = ()) -> None:
    """Raise UnsupportedLocation when `value` (given as `where`, e.g. "--out") is a URL whose scheme is not in
    `allowed` (e.g. ("hf",) where a hub dataset may be named by its hf:// URL)."""
    scheme = url_scheme(value)
    if scheme is None or scheme in allowed:
        return
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)", r"\1://", str(value))
    raise UnsupportedLocation(
        f"{where} {shown}: a {scheme}:// URL, but ssvd reads and writes local (or mounted) paths only: "
        "object storage is not supported yet (planned, docs/scale.md). Give a local path, or mount the "
        "bucket (e.g. s3fs, gcsfuse) and give the mount's path.")
