"""The ssvd cache of built models: where it is, and building a model folder once, atomically.

A build writes a temporary folder next to the final one, then renames it into place (`os.replace`,
atomic), under an exclusive `fcntl.flock` on a lock file beside it, so that several processes (Ray
workers) asking at once build it once and never see half a folder. The finished folder holds
`ssvd_model.json` (fingerprint and build facts); its presence marks it complete. Used by the built-in
LLMs (`pipeline.dialogue.builtin_models`) and the built-in tiny Kyutai TTS (`tts.kyutai_tiny`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

MARKER = "ssvd_model.json"


def cache_dir() -> Path:
    """$SSVD_CACHE, or ~/.cache/ssvd."""
    env = os.environ.get("SSVD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ssvd"


_BIG_FILE = 512 << 20  # files above this are fingerprinted by size + head + tail, not read whole
_SAMPLE = 16 << 20


def fingerprint_dir(path: Path) -> str:
    """sha256 (first 16 hex) over the files of a model folder: config, tokenizer, weights (not subfolders).

    Files over 512 MiB (shards of production models) contribute their size and first and last 16 MiB,
    so that fingerprinting a 24 GB folder takes a second, not minutes.
    """
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != MARKER and not p.name.startswith("."))
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}\x1f{size}\x1f".encode())
        with p.open("rb") as f:
            if size <= _BIG_FILE:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(f.read(_SAMPLE))
                f.seek(size - _SAMPLE)
                h.update(f.read(_SAMPLE))
    return h.hexdigest()[:16]


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_built(models_dir: Path, dirname: str, build: Callable[[Path], None]) -> tuple[Path, dict]:
    """The finished folder `models_dir/dirname` and its marker, building it first if needed.

    Fast path: the marker exists (one small read, no lock). Otherwise take the lock, look again (another
    process may have finished meanwhile), build into a temporary sibling and rename it into place.
    """
    final = models_dir / dirname
    marker = read_marker(final)
    if marker is not None:
        return final, marker
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir / f".{dirname}.lock"):
        marker = read_marker(final)
        if marker is not None:
            return final, marker
        if final.exists():  # without its marker it is incomplete or foreign: the build replaces it
            shutil.rmtree(final)
        for stale in models_dir.glob(f".{dirname}.tmp-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.tmp-", dir=models_dir))
        try:
            t0 = time.perf_counter()
            build(tmp)
            marker = {"dir": dirname, "fingerprint": fingerprint_dir(tmp),
                      "build_s": round(time.perf_counter() - t0, 2)}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            for f in tmp.iterdir():  # mkdtemp and some writers use 0o600: the cache may be shared
                f.chmod(0o755 if f.is_dir() else 0o644)
            tmp.chmod(0o755)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, marker
