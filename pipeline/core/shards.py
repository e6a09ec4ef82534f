"""Parquet shard IO: atomic writes, per-shard part files for resume, finalisation.

Layout of a stage's output directory:
    DIR/<stage>-00003.parquet                 a completed shard (input shard 3 -> output shard 3)
    DIR/.parts/<stage>-00003/part-000012.parquet   completed records of a shard still in progress
Every file is written as `*.tmp` then `os.replace`d, so a reader (and a resumed run) only ever
sees whole files; `*.tmp` leftovers of a killed run are ignored and cleaned. A full volume raises
`DiskFull` (pipeline/core/disk_space.py) with the partial `*.tmp` removed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.disk_space import writing

ROW_GROUP_ROWS = 256


def shard_name(stage: str, index: int) -> str:
    return f"{stage}-{index:05d}.parquet"


def write_table_atomic(path: Path, table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with writing(tmp, table.nbytes):  # uncompressed size: an upper bound of what the file needs
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, row_group_size=row_group_rows, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """`t` cast to `schema`; columns a newer schema added (e.g. the dialogues' token accounting) are
    filled with nulls, so the part files of a run begun by an older ssvd still finalise."""
    for f in schema:
        if f.name not in t.column_names:
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
    return t.select(schema.names).cast(schema)


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def read_rows(path: Path, columns: list[str] | None = None) -> list[dict]:
    return pq.read_table(path, columns=columns).to_pylist()


def iter_rows(path: Path, columns: list[str] | None = None, batch_rows: int = 256) -> Iterable[dict]:
    """Stream a shard row by row without loading it whole."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        yield from batch.to_pylist()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ShardStore:
    """The output shards of one stage in one directory."""

    def __init__(self, out_dir: Path, stage: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.dir = Path(out_dir)
        self.stage = stage
        self.schema = schema
        self.row_group_rows = row_group_rows

    def final_path(self, index: int) -> Path:
        return self.dir / shard_name(self.stage, index)

    def parts_dir(self, index: int) -> Path:
        return self.dir / ".parts" / f"{self.stage}-{index:05d}"

    def is_complete(self, index: int) -> bool:
        return self.final_path(index).exists()

    def part_paths(self, index: int) -> list[Path]:
        d = self.parts_dir(index)
        return sorted(d.glob("part-*.parquet")) if d.is_dir() else []

    def has_parts(self) -> bool:
        """Whether any shard of this stage is in progress (has a parts folder)."""
        d = self.dir / ".parts"
        return d.is_dir() and any(d.glob(f"{self.stage}-*"))

    def write_part(self, index: int, rows: list[dict]) -> None:
        if not rows:
            return
        existing = self.part_paths(index)
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        write_table_atomic(self.parts_dir(index) / f"part-{n:06d}.parquet", rows_to_table(rows, self.schema),
                           self.row_group_rows)

    def done_ids(self, index: int, redo_failed: bool = False) -> set[str]:
        """Ids of records already completed for a shard in progress (failed ones left out if asked)."""
        ids: set[str] = set()
        for p in self.part_paths(index):
            t = pq.read_table(p, columns=["id", "status"])
            for i, s in zip(t.column("id").to_pylist(), t.column("status").to_pylist()):
                if redo_failed and s == "failed":
                    ids.discard(i)
                else:
                    ids.add(i)
        return ids

    def finalize(self, index: int) -> Path:
        """Write the completed shard from its parts atomically (last record per id wins), then drop the parts.

        Streams part by part (speech parts hold audio), so memory stays at one part file."""
        parts = self.part_paths(index)
        last: dict[str, tuple[int, int]] = {}
        for k, p in enumerate(parts):
            for n, i in enumerate(pq.read_table(p, columns=["id"]).column("id").to_pylist()):
                last[i] = (k, n)
        keep: dict[int, list[int]] = defaultdict(list)
        for k, n in last.values():
            keep[k].append(n)
        path = self.final_path(index)
        tmp = path.with_name(path.name + ".tmp")
        with writing(tmp, sum(p.stat().st_size for p in parts)):  # the shard is about its parts' size
            with pq.ParquetWriter(tmp, self.schema, compression="zstd") as w:
                for k, p in enumerate(parts):
                    t = conform(pq.read_table(p), self.schema)
                    if len(keep[k]) != t.num_rows:
                        t = t.take(pa.array(sorted(keep[k]), type=pa.int64()))  # typed: [] when all superseded
                    if t.num_rows:
                        w.write_table(t, row_group_size=self.row_group_rows)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self.drop_parts(index)
        return path

    def drop_parts(self, index: int) -> None:
        shutil.rmtree(self.parts_dir(index), ignore_errors=True)

    def reopen(self, index: int) -> None:
        """Turn a completed shard back into parts (for --retry-failed); crash-safe order."""
        self.parts_dir(index).mkdir(parents=True, exist_ok=True)
        os.replace(self.final_path(index), self.parts_dir(index) / "part-000000.parquet")  # one atomic rename

    def clean_tmp(self) -> None:
        if self.dir.is_dir():
            for p in self.dir.rglob("*.tmp"):
                p.unlink(missing_ok=True)

    def remove_all(self) -> None:
        for p in self.dir.glob(f"{self.stage}-*.parquet"):
            p.unlink()
        for d in (self.dir / ".parts").glob(f"{self.stage}-*"):
            shutil.rmtree(d, ignore_errors=True)
