"""Token rows as numpy, read row group by row group, and a resumable cycling stream over shards.

A *token row* here is a dict with the columns of `pipeline.core.types.TOKEN_SCHEMA` that training needs,
the list columns as numpy arrays (views into the decoded row group, never Python lists of ints):

    id, split, kind, status, image ({url, path, sha256} or None), num_frames, frame_rate_hz,
    text_tokens   int32 [T]       (speech: the padded text stream; text rows: plain tokens)
    audio_codes   int16 [16, T]   (speech rows, undelayed; text rows: shape [0, 0])
    turn_start_frames int32 [n], turn_roles list[str]
    _pos          (shard index, row group, row) of the row in its split's shard list

`RowStream` is the reader both `augment.GenericPool` and `trainer.data.CorpusLoader` use: it cycles
forever over the ok rows of a list of shards, one decoded row group in memory at a time. Epoch `e`
visits the shards in an order shuffled from `(seed, name, e)`, each shard's row groups in an order
shuffled from `(seed, name, e, shard)` and each row group's rows in an order shuffled from
`(seed, name, e, shard, row group)`; with `shuffle=False` everything is in file order. Its position
(`state_dict()`: epoch, shard, row group, row in those orders, and an ordinal for rank striding) is
a few integers, so a stream restored from it continues with exactly the same rows.
"""
from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.types import stable_int

# The columns a trainer reads (never `words`, `provenance`, ...: they are large and unused).
TRAIN_COLUMNS = ["id", "split", "kind", "status", "image", "num_frames", "frame_rate_hz", "text_tokens",
                 "audio_codes", "turn_start_frames", "turn_roles"]


def _list_parts(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a list column: row i's values are `values[offsets[i]:offsets[i+1]]`."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = arr.offsets.to_numpy()
    return offsets, arr.values


def table_to_rows(table: pa.Table, shard: int = -1, row_group: int = -1) -> list[dict]:
    """The rows of a decoded token table as dicts of numpy views (see the module docstring)."""
    n = table.num_rows
    names = set(table.column_names)
    cols: dict[str, list] = {}
    for c in ("id", "split", "kind", "status", "image", "num_frames", "frame_rate_hz", "turn_roles", "caption_id",
              "source", "instruction", "dialogue_id", "duration_s"):
        if c in names:
            cols[c] = table.column(c).to_pylist()
    text = audio = tsf = None
    if "text_tokens" in names:
        t_off, t_vals = _list_parts(table.column("text_tokens"))
        text = (t_off, t_vals.to_numpy(zero_copy_only=False).astype(np.int32, copy=False))
    if "audio_codes" in names:
        a_off, inner = _list_parts(table.column("audio_codes"))
        i_off = inner.offsets.to_numpy()
        flat = inner.values.to_numpy(zero_copy_only=False).astype(np.int16, copy=False)
        audio = (a_off, i_off, flat)
    if "turn_start_frames" in names:
        s_off, s_vals = _list_parts(table.column("turn_start_frames"))
        tsf = (s_off, s_vals.to_numpy(zero_copy_only=False).astype(np.int32, copy=False))
    rows = []
    for i in range(n):
        r = {k: v[i] for k, v in cols.items()}
        if text is not None:
            r["text_tokens"] = text[1][text[0][i]:text[0][i + 1]]
        if audio is not None:
            a0, a1 = audio[0][i], audio[0][i + 1]
            if a1 > a0:
                lo, hi = audio[1][a0], audio[1][a1]
                k = a1 - a0
                r["audio_codes"] = audio[2][lo:hi].reshape(k, (hi - lo) // k)
            else:
                r["audio_codes"] = np.zeros((0, 0), np.int16)
        if tsf is not None:
            r["turn_start_frames"] = tsf[1][tsf[0][i]:tsf[0][i + 1]]
        if "turn_roles" in r and r["turn_roles"] is None:
            r["turn_roles"] = []
        r["_pos"] = (shard, row_group, i)
        rows.append(r)
    return rows


def copy_row(row: dict) -> dict:
    """A row that owns its arrays (so it does not keep its whole decoded row group alive)."""
    out = dict(row)
    for k in ("text_tokens", "audio_codes", "turn_start_frames"):
        v = out.get(k)
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
    return out


class RowGroupCache:
    """Decoded row groups (rows of numpy views), least recently used dropped beyond `max_bytes`.

    Small corpora (a few rows per shard, as the quickstart) are then decoded once instead of once per
    epoch; large ones keep at most `max_bytes` of decoded data, whatever the number of shards.
    Rows taken from it must be treated as read-only (`copy_row` before changing an array in place).
    """

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._d: OrderedDict[tuple, tuple[list[dict], int]] = OrderedDict()

    def get(self, key: tuple) -> list[dict] | None:
        got = self._d.get(key)
        if got is None:
            self.misses += 1
            return None
        self.hits += 1
        self._d.move_to_end(key)
        return got[0]

    def put(self, key: tuple, rows: list[dict], nbytes: int) -> None:
        if nbytes > self.max_bytes or key in self._d:
            return
        self._d[key] = (rows, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, b) = self._d.popitem(last=False)
            self.bytes -= b


def _columns(pf: pq.ParquetFile, columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    have = set(pf.schema_arrow.names)
    return [c for c in columns if c in have]


def read_row_group(path: str | Path, row_group: int, columns: Sequence[str] | None = TRAIN_COLUMNS,
                   shard: int = -1, pf: pq.ParquetFile | None = None, cache: RowGroupCache | None = None,
                   _cols: list[str] | None = None) -> list[dict]:
    """One row group of a token shard as numpy rows (only `columns`, those the file has)."""
    key = (str(path), row_group, shard, tuple(columns) if columns is not None else None)
    if cache is not None:
        got = cache.get(key)
        if got is not None:
            return got
    pf = pf or pq.ParquetFile(path)
    table = pf.read_row_group(row_group, columns=_cols if _cols is not None else _columns(pf, columns),
                              use_threads=False)
    rows = table_to_rows(table, shard, row_group)
    if cache is not None:
        cache.put(key, rows, table.nbytes)
    return rows


def iter_token_rows(paths: Iterable[str | Path], columns: Sequence[str] | None = TRAIN_COLUMNS,
                    status: str | None = "ok") -> Iterator[dict]:
    """Every row of the shards in file order, one row group in memory at a time (`status=None`: all)."""
    for s, p in enumerate(paths):
        pf = pq.ParquetFile(p)
        for g in range(pf.metadata.num_row_groups):
            for r in read_row_group(p, g, columns, shard=s, pf=pf):
                if status is None or r.get("status") == status:
                    yield r


def _perm(n: int, *key: object) -> np.ndarray:
    """A permutation of range(n) determined by `key` (stable across processes and machines)."""
    order = list(range(n))
    if n > 1:
        random.Random(stable_int(*key)).shuffle(order)
    return np.asarray(order, np.int64)


class EmptyStreamError(RuntimeError):
    pass


class RowStream:
    """Cycles forever over the ok rows of `shards` (see the module docstring).

    `take()` returns the next row of the current epoch, or None at its end (the caller decides when
    to `new_epoch()`); `next()` does both. `skip` holds (shard, row group, row) positions left out
    (the held-out eval rows); with `world_size > 1` the stream yields only the candidate rows whose
    running ordinal (counted over all epochs) is `rank` modulo `world_size`.
    """

    def __init__(self, name: str, shards: Sequence[str | Path], *, seed: int = 0,
                 columns: Sequence[str] | None = TRAIN_COLUMNS, skip: Iterable[tuple[int, int, int]] = (),
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, cache: RowGroupCache | None = None):
        self.name = name
        self.shards = [str(p) for p in shards]
        self.seed = seed
        self.columns = list(columns) if columns is not None else None
        self.skip = frozenset(tuple(x) for x in skip)
        self.rank, self.world_size = rank, world_size
        self.shuffle = shuffle
        self.cache = cache
        self.epoch = self.shard = self.row_group = self.row = self.ordinal = 0
        self.candidates = 0  # candidate rows passed in this epoch (an epoch without any: EmptyStreamError)
        self.row_groups_read = 0
        self._pf: tuple[int, pq.ParquetFile, list[str] | None] | None = None
        self._rg: tuple[tuple[int, int, int], list[dict], np.ndarray] | None = None  # ((epoch, shard, rg), rows, order)
        self._orders: dict[tuple, np.ndarray] = {}

    # --- orders ---
    def _cached(self, key: tuple, make) -> np.ndarray:
        got = self._orders.get(key)
        if got is None:
            if len(self._orders) > 64:
                self._orders.clear()
            got = self._orders[key] = make()
        return got

    def shard_order(self, epoch: int) -> np.ndarray:
        n = len(self.shards)
        return self._cached(("s", epoch), lambda: _perm(n, "shards", self.seed, self.name, epoch) if self.shuffle
                            else np.arange(n))

    def _file(self, s: int) -> pq.ParquetFile:
        if self._pf is None or self._pf[0] != s:
            pf = pq.ParquetFile(self.shards[s])
            self._pf = (s, pf, _columns(pf, self.columns))
        return self._pf[1]

    def _rg_order(self, epoch: int, s: int) -> np.ndarray:
        def make():
            n = self._file(s).metadata.num_row_groups
            return _perm(n, "row_groups", self.seed, self.name, epoch, s) if self.shuffle else np.arange(n)
        return self._cached(("g", epoch, s), make)

    def _load(self) -> tuple[list[dict], np.ndarray] | None:
        """Rows and row order of the current (shard, row group); None past the shard's end."""
        s = int(self.shard_order(self.epoch)[self.shard])
        key = (self.epoch, s, self.row_group)
        if self._rg is not None and self._rg[0] == key:
            return self._rg[1], self._rg[2]
        order = self._rg_order(self.epoch, s)
        if self.row_group >= len(order):
            return None
        g = int(order[self.row_group])
        pf = self._file(s)
        rows = read_row_group(self.shards[s], g, self.columns, shard=s, pf=pf, cache=self.cache, _cols=self._pf[2])
        self.row_groups_read += 1
        perm = _perm(len(rows), "rows", self.seed, self.name, self.epoch, s, g) if self.shuffle else np.arange(len(rows))
        self._rg = (key, rows, perm)
        return rows, perm

    # --- reading ---
    def take(self) -> dict | None:
        while self.shard < len(self.shards):
            got = self._load()
            if got is None:
                self.shard += 1
                self.row_group = self.row = 0
                continue
            rows, perm = got
            while self.row < len(rows):
                r = rows[perm[self.row]]
                self.row += 1
                if r.get("status", "ok") != "ok" or r["_pos"] in self.skip:
                    continue
                self.candidates += 1
                mine = self.ordinal % self.world_size == self.rank
                self.ordinal += 1
                if mine:
                    return r
            self.row_group += 1
            self.row = 0
        return None

    def new_epoch(self) -> None:
        if self.candidates == 0:
            raise EmptyStreamError(f"{self.name}: no ok rows to read in its shards {self.shards[:3]}"
                                   f"{'...' if len(self.shards) > 3 else ''} (held-out eval rows excluded)")
        self.epoch += 1
        self.shard = self.row_group = self.row = self.candidates = 0
        self._rg = None

    def next(self) -> dict:
        r = self.take()
        while r is None:
            self.new_epoch()
            r = self.take()
        return r

    # --- position ---
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard, "row_group": self.row_group, "row": self.row,
                "ordinal": self.ordinal, "candidates": self.candidates}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.shard, self.row_group = int(st["epoch"]), int(st["shard"]), int(st["row_group"])
        self.row, self.ordinal, self.candidates = int(st["row"]), int(st["ordinal"]), int(st["candidates"])
        self._rg = None

    def read_positions(self, positions: Sequence[Sequence[int]]) -> list[dict]:
        """The rows at (shard, row group, row) positions, in that order (one read per row group)."""
        by_rg: dict[tuple[int, int], list[dict]] = {}
        out = []
        for s, g, i in positions:
            if (s, g) not in by_rg:
                by_rg[(s, g)] = read_row_group(self.shards[s], g, self.columns, shard=s, cache=self.cache)
            out.append(copy_row(by_rg[(s, g)][i]))
        return out


def rows_to_token_table(rows: Sequence[dict]) -> pa.Table:
    """Token rows (numpy arrays or lists) -> a `TOKEN_SCHEMA` table; columns a row lacks get empty
    defaults. For tests, benchmarks and tools that write token shards outside the tokens stage."""
    from pipeline.core.types import TOKEN_SCHEMA

    n = len(rows)
    defaults = {"string": "", "int32": 0, "int64": 0, "float": 0.0, "double": 0.0}
    cols: dict[str, object] = {}
    for f in TOKEN_SCHEMA:
        if f.name == "text_tokens":
            lens = [len(r["text_tokens"]) for r in rows]
            off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
            vals = np.concatenate([np.asarray(r["text_tokens"], np.int32) for r in rows]) if n else np.zeros(0, np.int32)
            cols[f.name] = pa.ListArray.from_arrays(pa.array(off), pa.array(vals, pa.int32()))
        elif f.name == "audio_codes":
            codes = [np.asarray(r.get("audio_codes") if r.get("audio_codes") is not None else np.zeros((0, 0)),
                                np.int16).reshape(-1, len(r["text_tokens"]) if len(r["text_tokens"]) else 0)
                     for r in rows]
            outer = np.concatenate([[0], np.cumsum([c.shape[0] for c in codes])]).astype(np.int32)
            inner = np.concatenate([[0], np.cumsum([c.shape[1] for c in codes for _ in range(c.shape[0])])]).astype(np.int32)
            flat = np.concatenate([c.ravel() for c in codes]) if n else np.zeros(0, np.int16)
            cols[f.name] = pa.ListArray.from_arrays(
                pa.array(outer), pa.ListArray.from_arrays(pa.array(inner), pa.array(flat, pa.int16())))
        elif f.name == "turn_start_frames":
            cols[f.name] = pa.array([[int(x) for x in (r.get(f.name) if r.get(f.name) is not None else [])]
                                     for r in rows], f.type)
        elif f.name == "num_frames":
            cols[f.name] = pa.array([int(r.get("num_frames", len(r["text_tokens"]))) for r in rows], f.type)
        elif f.name in ("image", "words", "turn_roles", "caption_id"):
            empty = {"image": None, "words": [], "turn_roles": [], "caption_id": None}[f.name]
            cols[f.name] = pa.array([r.get(f.name, empty) for r in rows], f.type)
        elif f.name == "status":
            cols[f.name] = pa.array([r.get("status", "ok") for r in rows], f.type)
        elif f.name == "frame_rate_hz":
            cols[f.name] = pa.array([float(r.get(f.name, 12.5 if r.get("kind", "speech") == "speech" else 0.0))
                                     for r in rows], f.type)
        elif f.name == "kind":
            cols[f.name] = pa.array([r.get("kind", "speech") for r in rows], f.type)
        else:
            d = defaults.get(str(f.type), None)
            cols[f.name] = pa.array([r.get(f.name, d) for r in rows], f.type)
    return pa.Table.from_arrays([cols[f.name].cast(f.type) for f in TOKEN_SCHEMA], schema=TOKEN_SCHEMA)


def write_token_shard(path: str | Path, rows: Sequence[dict], row_group_rows: int = 64) -> Path:
    """Write token rows as a Parquet shard (`TOKEN_SCHEMA`, zstd, `row_group_rows` rows per group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_token_table(rows), path, row_group_size=row_group_rows, compression="zstd")
    return path
