"""What the caption sources (pipeline/sources/captions.py) and the benchmark sources (pipeline/sources/benchmarks.py) share:
resolving an input to local files or a hub dataset id, the shards' rows, and `first_records`."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterator

from pipeline.core.locations import HUB_SCHEMES, refuse_url
from pipeline.sources.hub_load import check_not_script, hub_rows
from pipeline.sources.input_files import Fingerprint, kind_of, walk_files
from pipeline.sources.record_files import Row, read_rows
from pipeline.core.types import Caption, CaptionRejection, InputShard, stable_hash

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".parquet", ".jsonl", ".jsonlines", ".json", ".csv")  # a name ending so is a file, not a hub id


def base_name(shard_name: str) -> str:
    """The last part of a shard's name (its file name): what a rejection's id is hashed from."""
    return re.split(r"[\\/]", shard_name)[-1]


def looks_like_path(s: str) -> bool:
    """Not "name" or "owner/name": "./x", "/x", "a/b/c", "x.parquet", "C:\\x"."""
    return not _HUB_ID.match(s) or s.startswith(".") or s.lower().endswith(_FILE_SUFFIXES)


def resolve_input(input: str, suffixes: tuple[str, ...], what: str, give: str,
                  example: str) -> tuple[str | None, list[Path]]:
    """(hub id, []) or (None, local files) for `input`: `hub:ID` and `hf://datasets/ID` are hub ids; an existing
    file (one of `suffixes`) or folder (searched recursively, sorted by path; hidden files and folders skipped)
    is local; what looks like a path but is none is an error; anything else is a hub id. A loading-script
    repository is refused before any work. `what` ("caption"), `give` and `example` word the errors."""
    refuse_url(input, "input", allowed=HUB_SCHEMES)  # s3:// and the like: not yet (pipeline/core/locations.py)
    check_not_script(input)  # google/docci and the like: before any work
    if input.startswith("hub:"):
        return input[4:], []
    if input.startswith("hf://"):
        return input[5:].removeprefix("datasets/").strip("/"), []
    p = Path(input).expanduser()
    kind = kind_of(p)  # a broken link, a link loop, a folder not allowed in: say so, not "no such file"
    if kind == "file":
        if p.suffix.lower() not in suffixes:
            raise ValueError(f"{input}: unsupported {what} file type {p.suffix!r}; "
                             f"use one of {', '.join(suffixes)}")
        return None, [p]
    if kind == "dir":
        files = walk_files(p, suffixes)
        if not files:
            raise FileNotFoundError(f"{input}: directory has no {what} files "
                                    f"({', '.join('*' + s for s in suffixes)}, searched recursively)")
        return None, files
    if looks_like_path(input.partition("@")[0]):
        raise FileNotFoundError(
            f"{input}: no such file or directory. Give an existing {give}, or a "
            f"hub dataset id such as {example} (prefix hub: to force the hub loader)."
        )
    return input, []


class ShardedSource:
    """The shards of one input: local files (one shard each), or the shards of a streaming hub dataset.

    A subclass says which columns it reads (`columns`) and checks a file before its rows (`check_file`)."""

    columns: tuple[str, ...] = ()

    def __init__(self, input: str, kind: str, shards: list[InputShard], files: list[Path] | None = None,
                 dataset: Any = None):
        self.input, self.kind, self.shards = input, kind, shards
        self._files, self._dataset = files, dataset
        # each local file as it was when opened: a file that changes while it is read stops its shard
        self._prints = [Fingerprint.of(f) for f in files] if files is not None else None

    def check_file(self, path: Path) -> None:
        raise NotImplementedError

    def _shard_rows(self, index: int) -> Iterator[Row]:
        """Shard `index`'s rows; its file is checked now, not at the first next()."""
        if not 0 <= index < len(self.shards):
            raise IndexError(f"{self.input}: shard {index} out of range (0..{len(self.shards) - 1})")
        if self._files is not None:
            self.check_file(self._files[index])
        return self._raw_rows(index)

    def _raw_rows(self, index: int) -> Iterator[Row]:
        if self._files is not None:
            return read_rows(self._files[index], self.columns)
        ds = self._dataset.shard(num_shards=len(self.shards), index=index)
        return hub_rows(ds, self.shards[index].name)

    def _check_unchanged(self, index: int, rows_read: int) -> None:
        """After a shard is read: its file is still the one opened (else InputFileError)."""
        if self._prints is not None:
            self._prints[index].check(self._files[index], rows_read)


def first_records(source: Any, limit: int | None, done: Any = None) -> Iterator[tuple[int, Any]]:
    """(shard index, record) of a source's first `limit` records (None: all), in shard order.

    Works on any source with `shards` and `iter_shard` (captions, benchmarks); a rejection counts as a
    record, since it stands for an input row. A record whose id (a caption's id, a benchmark row's key) was
    already read becomes a `row:duplicate_id` rejection naming the first one: two rows with one id would give
    two dialogues with one id, of which a shard keeps only the last. A shard none of whose rows is read
    (an empty file) is still named, as (index, None), so it gets its (empty) output shard.

    `done(index)`: for a shard whose work is complete, (records it gave, a reader of its records'
    (id, row)), else None. Such a shard is named (index, None) and not opened; its ids are read (from the
    reader, i.e. its output) only when a later shard is read, for the duplicate-id check."""
    seen = 0
    first: dict[int, int] = {}  # 64-bit hash of the id -> shard << 40 | row of its first row (~100 B an id)
    skipped: list = []  # id readers of the shards skipped since the last shard read
    for shard in source.shards:
        if limit is not None and seen >= limit:
            return
        d = done(shard.index) if done is not None else None
        if d is not None:  # complete downstream: not opened
            seen += d[0]
            skipped.append((shard, d[1]))
            yield shard.index, None
            continue
        for sk, ids in skipped:  # a shard is read after skipped ones: their ids still count as read first
            for key, row in ids():
                h = _id_hash(key)
                first.setdefault(h, sk.index << 40 | row)
        skipped.clear()
        named = False
        for rec in source.iter_shard(shard.index):
            if limit is not None and seen >= limit:
                return
            seen += 1
            named = True
            yield shard.index, _first_of_id(source, shard, rec, first)
        if not named and (limit is None or seen < limit):
            yield shard.index, None


def _id_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _first_of_id(source: Any, shard: InputShard, rec: Any, first: dict[int, int]) -> Any:
    if isinstance(rec, CaptionRejection):
        return rec
    key = getattr(rec, "caption_id", None) or rec.id  # a benchmark Dialogue's key, or a Caption's id
    h = _id_hash(key)
    row = rec.row if isinstance(rec, Caption) else rec.input_row
    if h not in first:
        first[h] = shard.index << 40 | row
        return rec
    k, r = first[h] >> 40, first[h] & ((1 << 40) - 1)
    return CaptionRejection(
        stable_hash(rec.source, base_name(shard.name), row), rec.source, row, "row:duplicate_id",
        f"{shard.name} row {row + 1}: id {key[:80]!r} was already read at {source.shards[k].name} row {r + 1}; "
        "a second row with the same id would make a dialogue with the same id. The first one is used. Fix: "
        "remove the duplicate row, or give it its own id.", caption_id=key, image=getattr(rec, "image", None))
