"""The training data loader: token shards -> one-kind batches of tensors, resumable (docs/trainer.md).

`CorpusLoader(corpus_dir, DataConfig(...))` is an endless iterator of batches:

* Splits and weights come from `DIR/manifest.json` (`weights`, or `DataConfig.splits`, which
  replaces them); the generic set only feeds the augmentation unless it is given a weight.
* Each split is read by its own `augment.rows.RowStream` (one decoded row group in memory, cycling
  forever with shard / row-group / row orders shuffled per epoch from the seed) behind a small
  per-split shuffle buffer (`shuffle_buffer` rows) that is drained at the end of each epoch, so
  every epoch of a split yields each of its training rows exactly once.
* Held out: the first `eval_rows` ok rows (file order) of each split's first shard; `eval_batches()`
  yields them (no augmentation), training never does.
* Per batch, the sampler (`numpy.random.Generator(PCG64(seed))`) first draws the batch's kind
  (speech or text) with probability = the summed weight of that kind's splits, then each of the
  `batch_size` samples' split among the splits of that kind by relative weight: each split is drawn
  with probability `w_i / sum_j w_j` per sample, as in the paper's Table 7, and every batch holds one
  kind, so a checkpoint (taken between batches) never has a half-built batch to save.
* Speech samples of visual splits go through `augment.concat_augment` with the global sample counter
  as `step` (the generic window advances by 2 rows after each augmented sample); then rows longer than
  `max_frames` frames (text rows: `max_text_tokens` tokens) are cropped, keeping the
  beginning: at the last turn start that keeps at least half of the limit, else exactly at the limit.
* Collation (numpy, then `torch.from_numpy`): Moshi's per-codebook delays, padding with the zero
  token -1 to the batch's length, loss weights and masks, images resized for the encoder
  (`trainer.images`). The batch format is in docs/trainer.md.

`state_dict()` (JSON-serialisable) holds the sampler's RNG state, per split the stream position
(epoch, shard, row group, row, ordinal) and the shuffle buffer's row positions, the generic window,
the sample and batch counters and the stats; `load_state_dict()` on a fresh loader continues with
exactly the batches the saved one would have yielded next.

DDP: give each rank its own loader with the same config and `rank` / `world`; every rank
draws the same kinds and splits (same seed) and reads different rows (rank striding of each split's
stream).
"""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from augment.concat import GenericPool, concat_augment
from augment.rows import RowGroupCache, RowStream, copy_row
from trainer.collate import collate_speech, collate_text, crop_row
from trainer.config import DataConfig
from trainer.images import ImageLoader

STATE_FORMAT = "ssvd-loader/1"


# --- the loader -----------------------------------------------------------------------------------

def one_codec(shards: dict[str, list[str]]) -> str | None:
    """The one codec (`name#weights sha256`, the token rows' `codec` column) of the speech splits' shards, or
    None when no row names one; audio codes of two codecs mean nothing together, so two are refused. Reads the
    `codec` column alone (one value a shard: a tokens stage refuses to change its codec)."""
    seen: dict[str, list[str]] = {}
    for name, paths in shards.items():
        for p in paths:
            if "codec" not in pq.read_schema(p).names:
                continue
            for c in set(pq.read_table(p, columns=["codec"]).column("codec").to_pylist()) - {None, ""}:
                seen.setdefault(c, []).append(f"{name} ({Path(p).name})")
    if len(seen) > 1:
        found = "; ".join(f"{c}: {', '.join(w[:3])}{' ...' if len(w) > 3 else ''}" for c, w in sorted(seen.items()))
        raise ValueError(f"the speech splits' token rows come from {len(seen)} codecs ({found}); their audio codes "
                         "cannot be trained on together. Fix: rebuild the odd splits' tokens with the corpus's codec "
                         "(`ssvd tokens --codec ...` / the manifest's models.codec), or leave them out (data.splits).")
    return next(iter(seen), None)


class _SplitReader:
    """One split's stream behind its shuffle buffer (drained at each epoch's end)."""

    def __init__(self, stream: RowStream, buffer: int):
        self.stream = stream
        self.size = max(1, buffer)
        self.buffer: list[dict] = []

    def next(self, rng: np.random.Generator) -> dict:
        while True:
            while len(self.buffer) < self.size:
                r = self.stream.take()
                if r is None:
                    break
                self.buffer.append(copy_row(r))
            if self.buffer:
                break
            self.stream.new_epoch()
        j = int(rng.integers(len(self.buffer)))
        row = self.buffer[j]
        self.buffer[j] = self.buffer[-1]
        self.buffer.pop()
        return row

    def state_dict(self) -> dict:
        return {**self.stream.state_dict(), "buffer": [list(map(int, r["_pos"])) for r in self.buffer]}

    def load_state_dict(self, st: dict) -> None:
        self.stream.load_state_dict(st)
        self.buffer = self.stream.read_positions(st.get("buffer", []))


class _ArrayPool:
    """Reuses the large image arrays of earlier batches once nothing references them any more.

    A fresh 40 MB array costs more in page faults than filling it; an array handed out in a batch is
    referenced by its tensor (`torch.from_numpy` holds the array) for as long as any view of that
    tensor lives, so an array whose only reference is this pool is free to overwrite.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.arrays: list[np.ndarray] = []

    def get(self, shape: tuple, dtype) -> np.ndarray:
        for a in self.arrays:
            # references: self.arrays, `a`, getrefcount's argument
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) <= 3:
                return a
        a = np.empty(shape, dtype)
        if len(self.arrays) >= self.keep:
            self.arrays.pop(0)
        self.arrays.append(a)
        return a


def _torch(d: dict) -> dict:
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


class CorpusLoader:
    """Endless batches from a corpus directory (see the module docstring and docs/trainer.md)."""

    def __init__(self, corpus: str | Path, cfg: DataConfig | None = None, *, split: str = "train", rank: int = 0,
                 world: int = 1):
        self.corpus = Path(corpus)
        self.cfg = (cfg or DataConfig()).validate()
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} must be in [0, world={world})")
        self.part = split
        self.rank, self.world_size = rank, world
        mpath = self.corpus / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath}: no corpus manifest (build one with `ssvd run MANIFEST --out {self.corpus}`)")
        man = json.loads(mpath.read_text())
        self.split_info: dict[str, dict] = {}
        for s in man.get("splits", []):
            self.split_info[s["name"]] = {"kind": s.get("kind", "speech"), "role": s.get("role", "split"),
                                          "rows": s.get("rows"),
                                          "shards": [str(self.corpus / sh["path"]) for sh in s.get("shards") or []]}
        raw = self.cfg.splits if self.cfg.splits is not None else (man.get("weights") or {})
        unknown = sorted(set(raw) - set(self.split_info))
        if unknown:
            raise ValueError(f"data.splits / manifest weights name splits not in {mpath}: {unknown}; "
                             f"the corpus has {sorted(self.split_info)}")
        # the images stage's shards (DIR/<split>/images): pixels by image id; the token rows of a split with
        # an images stage whose image could not be had are left out of training and eval, counted by reason
        from pipeline.images.store import ImageStore, corpus_image_dirs

        self.image_store = ImageStore(corpus_image_dirs(self.corpus, man.get("splits", [])))
        with_images = {s["name"] for s in man.get("splits", [])
                       if any(st.get("stage") == "images" for st in s.get("stages") or [])}
        self.dropped: dict[str, str] = {}
        weights = {}
        for name, w in raw.items():
            info = self.split_info[name]
            if w <= 0:
                continue
            if not info["shards"]:
                self.dropped[name] = "no token shards"
                continue
            weights[name] = float(w)
        # held-out eval rows: the first eval_rows ok rows of each split's first shard (at most all but one
        # of the split's ok rows, so that every split keeps a training row)
        self._eval_pos: dict[str, list[tuple[int, int, int]]] = {}
        self._eval_ids: dict[str, list[str]] = {}
        self._no_image: dict[str, set[tuple[int, int, int]]] = {}
        self.skipped_images: dict[str, dict[str, int]] = {}
        for name in list(weights):
            if name in with_images and self.image_store:
                self._no_image[name], self.skipped_images[name] = self._without_image(self.split_info[name]["shards"])
            rows = self.split_info[name]["rows"]
            if rows is not None:
                rows -= len(self._no_image.get(name, ()))
            if rows is not None and rows <= 0:
                self.dropped[name] = "no ok rows" if not self._no_image.get(name) else \
                    f"no ok row with an image (images stage: {self.skipped_images[name]})"
                del weights[name]
                continue
            n_eval = self.cfg.eval_rows if rows is None else min(self.cfg.eval_rows, rows - 1)
            pos, ids = self._first_ok(self.split_info[name]["shards"][0], n_eval, self._no_image.get(name, ()))
            self._eval_pos[name], self._eval_ids[name] = pos, ids
        for name, why in self.dropped.items():
            warnings.warn(f"data: split {name!r} left out of training: {why}", stacklevel=2)
        if not weights:
            raise ValueError(f"{self.corpus}: no split to train on (weights {raw}; left out: {self.dropped})")
        total = sum(weights.values())
        self.weights = {k: v / total for k, v in sorted(weights.items())}
        speech = [n for n in self.weights if self.split_info[n]["kind"] == "speech"]
        if speech and self.cfg.p_concat > 0 and "generic" in self.split_info:
            speech.append("generic")  # its rows are concatenated with the visual ones
        self.codec = one_codec({n: self.split_info[n]["shards"] for n in speech})
        self._kinds: dict[str, tuple[list[str], np.ndarray]] = {}
        for kind in ("speech", "text"):
            names = [n for n in self.weights if self.split_info[n]["kind"] == kind]
            if names:
                self._kinds[kind] = (names, np.cumsum([self.weights[n] for n in names]))
        self._kind_names = list(self._kinds)
        self._kind_cum = np.cumsum([self._kinds[k][1][-1] for k in self._kind_names])
        self.cache = RowGroupCache(self.cfg.row_group_cache_mib << 20)
        self.readers = {n: _SplitReader(RowStream(n, self.split_info[n]["shards"], seed=self.cfg.seed,
                                                  skip=set(self._eval_pos.get(n, ())) | self._no_image.get(n, set()),
                                                  rank=rank, world_size=world,
                                                  cache=self.cache),
                                        self.cfg.shuffle_buffer) for n in self.weights}
        self.generic: GenericPool | None = None
        if self.cfg.p_concat > 0 and "speech" in self._kinds:
            self.generic = GenericPool.from_corpus(self.corpus, capacity=self.cfg.generic_pool, seed=self.cfg.seed,
                                                   cache=self.cache)
        self._image_arrays = _ArrayPool()
        self.rng = np.random.Generator(np.random.PCG64(self.cfg.seed))
        self.images = ImageLoader(self.cfg.image_root, self.cfg.image_size, self.cfg.image_mean, self.cfg.image_std,
                                  # "auto" outside the trainer (which resolves it by encoder): placeholders
                                  "placeholder" if self.cfg.missing_images == "auto" else self.cfg.missing_images,
                                  store=self.image_store)
        self.samples = 0
        self.batches = 0
        self.counters = {"speech_batches": 0, "text_batches": 0, "augmented": 0, "cropped": 0}

    # --- introspection ---
    @property
    def stats(self) -> dict:
        return {"samples": self.samples, "batches": self.batches, **self.counters, **self.images.stats,
                "epochs": {n: r.stream.epoch for n, r in self.readers.items()},
                "row_groups_read": sum(r.stream.row_groups_read for r in self.readers.values()),
                "row_groups_decoded": self.cache.misses if self.cache.max_bytes else None,
                "dropped_splits": dict(self.dropped),
                "rows_skipped_no_image": sum(sum(c.values()) for c in self.skipped_images.values()),
                "rows_skipped_no_image_by_split": {k: dict(v) for k, v in self.skipped_images.items() if v}}

    def eval_ids(self) -> dict[str, list[str]]:
        """The held-out row ids per split (all ranks)."""
        return {k: list(v) for k, v in self._eval_ids.items() if v}

    def _without_image(self, shards: list[str]) -> tuple[set[tuple[int, int, int]], dict[str, int]]:
        """Positions of the ok token rows whose image the images stage could not get, and their reasons."""
        from collections import Counter

        pos: set[tuple[int, int, int]] = set()
        why: Counter = Counter()
        for k, shard in enumerate(shards):
            pf = pq.ParquetFile(shard)
            for g in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(g, columns=["status", "image"], use_threads=False)
                for i, (st, img) in enumerate(zip(t.column("status").to_pylist(), t.column("image").to_pylist())):
                    reason = self.image_store.unavailable(img) if st == "ok" else None
                    if reason:
                        pos.add((k, g, i))
                        why[reason] += 1
        return pos, dict(sorted(why.items()))

    @staticmethod
    def _first_ok(shard: str, n: int, skip=()) -> tuple[list[tuple[int, int, int]], list[str]]:
        pos, ids = [], []
        if n <= 0:
            return pos, ids
        pf = pq.ParquetFile(shard)
        for g in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(g, columns=["id", "status"], use_threads=False)
            for i, (rid, st) in enumerate(zip(t.column("id").to_pylist(), t.column("status").to_pylist())):
                if st == "ok" and (0, g, i) not in skip:
                    pos.append((0, g, i))
                    ids.append(rid)
                    if len(pos) == n:
                        return pos, ids
        return pos, ids

    # --- iteration ---
    def __iter__(self) -> Iterator[dict]:
        """Train: the loader itself (endless). Eval (`split="eval"`): the held-out batches, once."""
        return self if self.part == "train" else self.eval_batches()

    def __next__(self) -> dict:
        return self.next_batch()

    def _prepare(self, row: dict, split: str, augment: bool) -> dict:
        info = self.split_info[split]
        if row.get("kind", info["kind"]) != info["kind"]:
            raise ValueError(f"token row {row.get('id')!r} in split {split!r} is of kind {row.get('kind')!r}, "
                             f"but manifest.json says the split is {info['kind']!r}")
        row["split"] = split
        if info["kind"] == "speech":
            if augment and info["role"] != "generic":
                row = concat_augment(row, self.generic, p_concat=self.cfg.p_concat, seed=self.cfg.seed,
                                     step=self.samples, max_frames=self.cfg.max_frames)
                if row["augment"]:
                    self.counters["augmented"] += 1
                    self.generic.advance(2)
            else:
                n = len(row["text_tokens"])
                row = {**row, "visual_start_frame": 0, "visual_end_frame": 0 if info["role"] == "generic" else n}
            row, cut = crop_row(row, self.cfg.max_frames)
        else:
            row, cut = crop_row(row, self.cfg.max_text_tokens)
        self.counters["cropped"] += cut
        return row

    def collate(self, rows: list[dict], kind: str) -> dict:
        """Rows of one kind (already augmented / cropped) -> a batch of tensors."""
        c = self.cfg
        if kind == "speech":
            out = collate_speech(rows, delays=c.delays, text_pad_ids=c.text_pad_ids, text_pad_weight=c.text_pad_weight)
        else:
            out = collate_text(rows)
        img = self._image_arrays.get((len(rows), 3, c.image_size, c.image_size), np.float32)
        for i, r in enumerate(rows):
            self.images.load(r.get("image"), row_id=r.get("id", ""), split=r.get("split", ""), out=img[i])
        out["image"] = img
        batch = {"kind": kind, **_torch(out)}
        if kind == "speech":
            batch["delays"] = tuple(c.delays)  # the model checks that it undoes these
        batch["ids"] = [r["id"] for r in rows]
        batch["splits"] = [r["split"] for r in rows]
        return batch

    def next_batch(self) -> dict:
        if self.part != "train":
            raise RuntimeError("an eval loader (split='eval') has no endless batches: iterate over it")
        u = self.rng.random()
        kind = self._kind_names[min(int(np.searchsorted(self._kind_cum, u * self._kind_cum[-1], "right")),
                                    len(self._kind_names) - 1)]
        names, cum = self._kinds[kind]
        rows = []
        for _ in range(self.cfg.batch_size):
            j = min(int(np.searchsorted(cum, self.rng.random() * cum[-1], "right")), len(names) - 1)
            split = names[j]
            row = self.readers[split].next(self.rng)
            rows.append(self._prepare(row, split, augment=True))
            self.samples += 1
        batch = self.collate(rows, kind)
        self.batches += 1
        self.counters[f"{kind}_batches"] += 1
        return batch

    def eval_batches(self, splits: Sequence[str] | None = None, batch_size: int | None = None) -> Iterator[dict]:
        """The held-out rows, split by split (each batch: one split), no augmentation, no shuffling;
        with several ranks each rank gets every world_size-th row."""
        bs = batch_size or self.cfg.batch_size
        for name in splits or list(self._eval_pos):
            pos = self._eval_pos.get(name, [])[self.rank::self.world_size]
            if not pos:
                continue
            kind = self.split_info[name]["kind"]
            rows = self.readers[name].stream.read_positions(pos) if name in self.readers else \
                RowStream(name, self.split_info[name]["shards"]).read_positions(pos)
            rows = [self._prepare(r, name, augment=False) for r in rows]
            for i in range(0, len(rows), bs):
                yield self.collate(rows[i:i + bs], kind)

    # --- position ---
    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT, "seed": self.cfg.seed, "rank": self.rank, "world_size": self.world_size,
            "weights": dict(self.weights), "samples": self.samples, "batches": self.batches,
            "rng": self.rng.bit_generator.state,
            "splits": {n: r.state_dict() for n, r in self.readers.items()},
            "generic": self.generic.state_dict() if self.generic is not None else None,
            "counters": dict(self.counters), "images": dict(self.images.stats),
        }

    def load_state_dict(self, st: dict) -> None:
        if st.get("format") != STATE_FORMAT:
            raise ValueError(f"not a loader state of format {STATE_FORMAT}: {st.get('format')!r}")
        diff = [f"{k}: {st.get(k)!r} -> {v!r}" for k, v in (("seed", self.cfg.seed), ("rank", self.rank),
                                                           ("world_size", self.world_size), ("weights", self.weights))
                if st.get(k) != v]
        if diff:
            warnings.warn("data: resuming a loader saved with other settings; the batches will not continue the "
                          "saved stream exactly: " + "; ".join(diff), stacklevel=2)
        self.samples, self.batches = int(st["samples"]), int(st["batches"])
        self.rng.bit_generator.state = st["rng"]
        for n, r in self.readers.items():
            if n in st["splits"]:
                r.load_state_dict(st["splits"][n])
        if self.generic is not None and st.get("generic"):
            self.generic.load_state_dict(st["generic"])
        self.counters.update(st.get("counters", {}))
        self.images.stats.update(st.get("images", {}))
