"""A full output volume: one clear error naming the volume and the space needed, and no half-written file.

Every file ssvd writes goes to `NAME.tmp` first and is renamed into place (pipeline/core/shards.py,
runstate.write_json_atomic, the corpus card). `writing(tmp, need)` wraps such a write: when the volume is
full (ENOSPC, or EDQUOT for a quota) it removes the partial `tmp` (giving its space back, so the run record
and manifest.json can still be written) and raises `DiskFull`, whose message names the volume (mount point,
type, size, free space), the file that did not fit, and about how much space it needs. Completed shards and
part files are never touched, so the same command, rerun once there is room, continues where it stopped.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(RuntimeError):
    """The output volume is full; the message names it, the file and the space needed."""


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when pyarrow reports it as an OSError without an errno."""
    if isinstance(e, DiskFull):
        return True
    if isinstance(e, OSError) and e.errno in _FULL:
        return True
    text = str(e)
    return isinstance(e, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text)


def volume(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the volume holding `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    mounts: dict[str, str] = {}
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mounts[parts[1].replace("\\040", " ")] = parts[2]
    except OSError:
        pass
    q = p.resolve()
    while True:
        if str(q) in mounts or os.path.ismount(q) or q == q.parent:
            return str(q), mounts.get(str(q), "?")
        q = q.parent


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def message(path: Path, need: int | None) -> str:
    mount, fstype = volume(path)
    try:
        du = shutil.disk_usage(mount)
        room = f"{_mib(du.total)}, {_mib(du.free)} free"
    except OSError:
        room = "size unknown"
    needs = f"which needs about {_mib(need)}" if need else "which needs more space"
    return (f"disk full: the volume {mount} ({fstype}, {room}) could not hold {path.name} (in {path.parent}), "
            f"{needs}; the rest of the run needs more again. Nothing written is corrupt: completed shards "
            f"and part files are kept and the partial file was removed. Fix: free space on {mount} or give the "
            "run a larger volume, then run the same command again; it continues where it stopped.")


@contextmanager
def writing(tmp: Path, need: int | None = None) -> Iterator[None]:
    """Write `tmp` inside this block; on a full volume remove it and raise DiskFull."""
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e) or isinstance(e, DiskFull):
            raise
        Path(tmp).unlink(missing_ok=True)
        raise DiskFull(message(Path(tmp).with_suffix(""), need)) from e
