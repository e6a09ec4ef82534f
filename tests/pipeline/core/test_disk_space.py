"""A full output volume (issue 14, item 4), on a real tmpfs the test mounts (as root; skipped with the reason
where mounting is not permitted; always unmounted): one DiskFull naming the volume and the space needed, the
partial file removed, every file written before intact, and the same write succeeding once the volume is
larger. The whole `ssvd run` on a full volume: tests/pipeline/corpus/test_disk_full.py."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.disk_space import DiskFull, volume
from pipeline.core.runstate import write_json_atomic
from pipeline.core.shards import ShardStore
from pipeline.core.types import DIALOGUE_SCHEMA


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A tmpfs of `size` at `where`, unmounted however the test ends; skip where mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root (and mount): the full-volume test cannot run here")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}): the full-volume test cannot run")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def resize(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def fill(where: Path, leave: int) -> None:
    """Take all but about `leave` bytes of the volume with a filler file."""
    free = shutil.disk_usage(where).free
    with open(where / "filler.bin", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def _rows(n: int, text: str) -> list[dict]:
    return [{"id": f"d{i}", "status": "ok", "input_shard": 0, "note": text} for i in range(n)]


def _table(n: int, text: str) -> pa.Table:
    return pa.Table.from_pylist([{**{f.name: None for f in DIALOGUE_SCHEMA}, **r} for r in _rows(n, text)],
                                schema=DIALOGUE_SCHEMA)


def test_a_part_that_does_not_fit_is_one_clear_error_and_nothing_is_corrupt(tmp_path):
    with tmpfs(tmp_path / "vol", "1m") as vol:
        store = ShardStore(vol / "dialogues", "dialogues", DIALOGUE_SCHEMA)
        small = [{**{f.name: None for f in DIALOGUE_SCHEMA}, **r} for r in _rows(3, "a note")]
        store.write_part(0, small)
        noise = os.urandom(1 << 20).hex()  # incompressible: a 2 MiB part on a 1 MiB volume
        big = [{**{f.name: None for f in DIALOGUE_SCHEMA}, **r} for r in _rows(1, noise)]
        with pytest.raises(DiskFull) as e:
            store.write_part(0, big)
        msg = str(e.value)
        assert f"the volume {vol} (tmpfs, 1.0 MiB" in msg and "part-000001.parquet" in msg
        assert "which needs about 2.0 MiB" in msg and "Fix: free space" in msg and "run the same command again" in msg
        assert not list(vol.rglob("*.tmp"))  # the partial file is gone (and its space with it)
        assert [p.name for p in store.part_paths(0)] == ["part-000000.parquet"]
        assert pq.read_table(store.part_paths(0)[0]).num_rows == 3  # what was written before is whole
        assert shutil.disk_usage(vol).free > 900_000
        resize(vol, "8m")
        store.write_part(0, big)  # room again: the same write goes through
        assert store.done_ids(0) == {"d0", "d1", "d2"}


def test_a_shard_that_cannot_be_finalised_keeps_its_parts(tmp_path):
    with tmpfs(tmp_path / "vol", "4m") as vol:
        store = ShardStore(vol / "speech", "dialogues", DIALOGUE_SCHEMA)
        noise = os.urandom(600_000).hex()
        store.write_part(0, [{**{f.name: None for f in DIALOGUE_SCHEMA}, **r} for r in _rows(1, noise)])
        fill(vol, 200_000)  # the shard needs about its parts' size again (0.6 MB: hex compresses 2:1)
        want = r"0\.2 MiB free\) could not hold dialogues-00000.parquet .*needs about 0\.6 MiB"
        with pytest.raises(DiskFull, match=want):
            store.finalize(0)
        assert not store.is_complete(0) and not list(vol.rglob("*.tmp"))
        assert pq.read_table(store.part_paths(0)[0]).num_rows == 1
        (vol / "filler.bin").unlink()
        store.finalize(0)
        assert store.is_complete(0) and pq.read_table(store.final_path(0)).num_rows == 1
        assert store.part_paths(0) == []


def test_a_run_record_that_does_not_fit_leaves_the_old_one(tmp_path):
    with tmpfs(tmp_path / "vol", "256k") as vol:
        path = vol / "_dialogues.run.json"
        write_json_atomic(path, {"state": "running"})
        fill(vol, 0)
        with pytest.raises(DiskFull, match="could not hold _dialogues.run.json"):
            write_json_atomic(path, {"state": "complete", "pad": "x" * 100_000})
        assert json.loads(path.read_text()) == {"state": "running"} and not list(vol.glob("*.tmp"))


def test_volume_names_the_mount_point_of_a_path_not_yet_made(tmp_path):
    with tmpfs(tmp_path / "vol", "64k") as vol:
        assert volume(vol / "not" / "yet" / "made.parquet") == (str(vol), "tmpfs")
