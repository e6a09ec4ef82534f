"""Reading a previous stage's output directory as the input of the next stage.

Only finished shards are read (`DIR/<stage>-0000i.parquet`); shard i in gives shard i out. A shard
still in progress upstream is reported, and picked up by a rerun once it is finished.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from pipeline.core.shards import iter_rows

_SHARD = re.compile(r"^(?P<stage>[a-z_]+)-(?P<index>\d{5})\.parquet$")


class StageInputError(ValueError):
    pass


@dataclass(slots=True)
class RowItem:
    """A work item made of one input row (a dialogue, a speech sample)."""

    id: str
    input_shard: int
    input_row: int
    row: dict


@dataclass
class StageInput:
    dir: Path
    stage: str  # "dialogues", "generic" (same schema), "speech", "tokens"
    shards: list[tuple[int, Path]]
    unfinished: list[int]
    run_record: dict

    def rows(self, index: int, path: Path, columns: list[str] | None = None) -> Iterator[tuple[int, dict]]:
        for n, r in enumerate(iter_rows(path, columns=columns, batch_rows=64)):
            yield n, r

    def ok_items(self, limit: int | None, stats: Counter, shard_markers: bool = False,
                 done_shard: Callable[[int], Path | None] | None = None) -> Iterator[tuple[int, RowItem | None]]:
        """(shard index, RowItem) for every row with status "ok"; the others counted as `input_not_ok`.

        With `shard_markers`, each shard (within the limit) opens with (index, None), so a shard with no
        "ok" row still gets its (empty) output shard: shard i in -> shard i out along the whole chain.
        `done_shard(i)`: shard i's complete output shard (one row per "ok" input row), or None; without a
        limit, such a shard's rows are not read."""
        seen = 0
        for index, path in self.shards:
            if limit is not None and seen >= limit:
                return
            if shard_markers:
                yield index, None
            out = done_shard(index) if done_shard is not None and limit is None else None
            if out is not None:  # complete downstream: its rows are not read (rows not "ok": footers only)
                stats["input_not_ok"] += footer_rows(path) - footer_rows(out)
                continue
            for n, row in self.rows(index, path):
                if row.get("status") != "ok":
                    stats["input_not_ok"] += 1
                    continue
                if limit is not None and seen >= limit:
                    return
                seen += 1
                row["input_shard"], row["input_row"] = index, n
                yield index, RowItem(row["id"], index, n, row)

    def count_ok(self, limit: int | None = None, done_shard: Callable[[int], Path | None] | None = None) -> int:
        """Rows with status "ok" (reads the status column only; a shard complete downstream, `done_shard`,
        is counted from its output's footer): the progress bar's total."""
        n = 0
        for i, p in self.shards:
            out = done_shard(i) if done_shard is not None else None
            n += footer_rows(out) if out is not None else \
                pq.read_table(p, columns=["status"]).column("status").to_pylist().count("ok")
        return n if limit is None else min(n, limit)

    def unchanged_since(self, rec: dict) -> bool:
        """The same finished input shards as the run recorded in `rec` read, and none in progress upstream."""
        seen = rec.get("input") or {}
        return (not self.unfinished and not seen.get("unfinished_input_shards")
                and seen.get("input_shards") == [i for i, _ in self.shards])

    def describe(self) -> dict[str, Any]:
        # no shard list: shards finished upstream later are picked up by a rerun with the same config
        return {"dir": str(self.dir.resolve()), "stage": self.stage, "config_hash": self.run_record.get("config_hash")}


class RowStage:
    """What a stage over an earlier stage's rows shares: progress total and entries (needs `input`,
    `limit`, `input_stats`)."""

    input: StageInput
    limit: int | None
    input_stats: Counter
    done_shard: Callable[[int], Path | None] | None = None  # set by the runner (pipeline/core/runner.py)

    def total_hint(self) -> int | None:
        return self.input.count_ok(self.limit, None if self.limit is not None else self.done_shard)

    def unchanged_since(self, rec: dict) -> bool:
        return self.input.unchanged_since(rec)

    def entries(self) -> Iterator[tuple[int, RowItem | None]]:
        split = getattr(getattr(self, "spec", None), "split", None)
        for index, item in self.input.ok_items(self.limit, self.input_stats, shard_markers=True,
                                               done_shard=self.done_shard):
            if split and item is not None:  # the row names its split, so one worker pool serves every split of a corpus
                item.row["split"] = split
            yield index, item


def open_stage_input(path: Path, accept: tuple[str, ...]) -> StageInput:
    """The finished shards of the stage held by `path` (one of `accept`), with a clear error otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise StageInputError(f"{path}: no such directory; pass the --out directory of an earlier "
                              f"`ssvd {accept[0]}` run")
    found: dict[str, list[tuple[int, Path]]] = {}
    for f in sorted(path.glob("*.parquet")):
        m = _SHARD.match(f.name)
        if m and m["stage"] in accept:
            found.setdefault(m["stage"], []).append((int(m["index"]), f))
    parts = {}
    for d in sorted((path / ".parts").glob("*-*")) if (path / ".parts").is_dir() else []:
        m = re.match(r"^([a-z_]+)-(\d{5})$", d.name)
        if m and m[1] in accept:
            parts.setdefault(m[1], []).append(int(m[2]))
    stages = sorted(set(found) | set(parts))
    if not stages:
        raise StageInputError(f"{path}: holds no {' or '.join(accept)} shards "
                              f"(expected files like {accept[0]}-00000.parquet); pass the --out directory "
                              f"of an earlier `ssvd {accept[0]}` run")
    if len(stages) > 1:
        raise StageInputError(f"{path}: holds shards of several stages ({', '.join(stages)}); "
                              "give one stage's directory")
    stage = stages[0]
    shards = found.get(stage, [])
    done = {i for i, _ in shards}
    unfinished = sorted(i for i in parts.get(stage, []) if i not in done)
    rec_path = path / f"_{stage}.run.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    return StageInput(path, stage, shards, unfinished, record)


def footer_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer (no row is read)."""
    return pq.ParquetFile(path).metadata.num_rows


def shard_kind(path: Path) -> str:
    return (pq.read_schema(path).metadata or {}).get(b"ssvd.kind", b"").decode()


def split_name(row: dict, split: str | None) -> str:
    return split or f"{row['source']}-{row['instruction']}".lower()


def carried(row: dict, split: str | None) -> dict:
    """The columns a speech or token row carries over from its dialogue (or speech) row."""
    return {
        "id": row["id"],
        "dialogue_id": row.get("dialogue_id") or row["id"],
        "split": row.get("split") or split_name(row, split),
        "source": row["source"],
        "instruction": row["instruction"],
        "caption_id": row.get("caption_id"),
        "image": row.get("image"),
        "seed": row["seed"],
        "status": "ok",
        "reason": "",
        "error": "",
        "model_user": row.get("model_user", ""),
        "model_assistant": row.get("model_assistant", ""),
        "prompt_version": row.get("prompt_version", ""),
        "input_shard": row["input_shard"],
        "input_row": row["input_row"],
    }
