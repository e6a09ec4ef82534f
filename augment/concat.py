"""Prefix/suffix concatenation of generic dialogues around a visual speech row (MoshiVis §3.3).

"At training time, each visual dialogue has a p_concat chance of being concatenated on-the-fly with a
prefix and suffix conversation, randomly sampled from this set of unrelated dialogues. In addition,
we randomly sample and trim the length of each of the three dialogues being concatenated."

`concat_augment(row, generic, p_concat=, seed=, step=)` works on one token row (a dict with the
columns of `pipeline.core.types.TOKEN_SCHEMA`: lists as from `pyarrow`'s `to_pylist`, or numpy arrays as
from `augment.rows`). All randomness comes from `random.Random(f"{seed}:{step}:{row['id']}")`, drawn
in this order:

1. `u = random()`; the row is augmented iff `u < p_concat` (so `p_concat=0`: never, `1`: always);
2. the prefix and suffix: `sample(range(len(generic)), 2)` (two different generic rows; with a pool
   of one row, that row is both);
3. the number of whole turns kept of the visual dialogue, the prefix, the suffix:
   `randint(1, n_turns)` each, in that order.

Trimming keeps the first `k` turns of a dialogue: frames `[0, turn_start_frames[k])` (or the whole
row when `k` is its number of turns), so every cut is at a turn boundary and each part keeps its
lead-in before its first turn. The text stream (`text_tokens`) and both audio channels
(`audio_codes`, all 16 codebooks, undelayed) are cut at the same frames and concatenated in time:
prefix, visual, suffix. The result is the visual row (same id, image, split, ...) with
`text_tokens` int32 [T], `audio_codes` int16 [16, T], `num_frames = T`, `duration_s`,
`turn_start_frames` / `turn_roles` of the kept turns (offset into the new time line), `words` shifted
likewise when all three rows carry them, and

    visual_start_frame, visual_end_frame   the frames [start, end) of the (trimmed) visual dialogue
    augment                                JSON: seed, step, and per part its id, turns kept / of, frames

With `max_frames`, turn counts are lowered (suffix first, then prefix, then the visual dialogue,
never below one) until the total fits, without further random draws; what still does not fit is
for the caller to crop. Rows that are not augmented (not drawn, kind "text", an empty or missing
pool) come back as a shallow copy with `visual_start_frame=0`, `visual_end_frame=num_frames`,
`augment=""` and their arrays untouched. Nothing is modified in place.

`GenericPool` is where the prefixes and suffixes come from: a window of `capacity` rows over a
cycling stream of the generic set's token shards (`augment.rows.RowStream`, shuffled per epoch),
never the whole set in memory. After each augmented row the trainer calls `advance(2)`: the two
oldest rows leave the window and the next two of the stream enter, so over an epoch of the generic
set every row spends the same time in the window. Its position (`state_dict()`) is the stream's and
the window's row positions, restored by re-reading those row groups. `augment_stream` is the same as
a streaming transform over any iterable of rows, usable outside the trainer.
"""
from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from augment.rows import TRAIN_COLUMNS, RowGroupCache, RowStream, copy_row

__all__ = ["concat_augment", "augment_stream", "turn_ends", "trim_turns", "GenericPool"]


def _arr(x, dtype) -> np.ndarray:
    return x if isinstance(x, np.ndarray) and x.dtype == dtype else np.asarray(x if x is not None else [], dtype=dtype)


def _codes(row: dict) -> np.ndarray:
    a = row.get("audio_codes")
    if isinstance(a, np.ndarray):
        return a.astype(np.int16, copy=False)
    return np.asarray(a, dtype=np.int16) if a else np.zeros((0, 0), np.int16)


def turn_ends(row: dict) -> np.ndarray:
    """`ends[k-1]`: the frame where the first `k` turns of a speech row end (a turn boundary, or the
    row's end for all of them). A row without turns counts as one turn spanning the row."""
    n = len(row["text_tokens"])
    tsf = _arr(row.get("turn_start_frames"), np.int64)
    if len(tsf) == 0:
        return np.array([n], np.int64)
    ends = np.append(np.clip(tsf[1:], 1, n), n)
    return np.maximum.accumulate(ends)


def trim_turns(row: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int]:
    """(text [c], codes [16, c], turn starts [k], roles [k], c) of the first `k` turns of a speech row."""
    c = int(turn_ends(row)[k - 1])
    text = _arr(row["text_tokens"], np.int32)
    codes = _codes(row)
    if codes.ndim != 2 or codes.shape[1] != len(text):
        raise ValueError(f"token row {row.get('id')!r}: audio_codes {codes.shape} do not match "
                         f"text_tokens [{len(text)}] (expected [codebooks, {len(text)}])")
    tsf = _arr(row.get("turn_start_frames"), np.int32)[:k]
    roles = list(row.get("turn_roles") or [])[:k]
    return text[:c], codes[:, :c], tsf, roles, c


def _n_turns(row: dict) -> int:
    return max(1, len(row.get("turn_start_frames") if row.get("turn_start_frames") is not None else []))


def _shift_words(words, offset_s: float, end_s: float) -> list[dict]:
    out = []
    for w in words or []:
        if w["start_s"] < end_s:
            out.append({**w, "start_s": w["start_s"] + offset_s, "end_s": min(w["end_s"], end_s) + offset_s})
    return out


def _unchanged(row: dict) -> dict:
    out = dict(row)
    n = len(row["text_tokens"]) if row.get("text_tokens") is not None else int(row.get("num_frames") or 0)
    out["visual_start_frame"] = 0
    out["visual_end_frame"] = n
    out["augment"] = ""
    return out


def concat_augment(row: dict, generic: Sequence[dict] | None, *, p_concat: float, seed: int, step: int,
                   max_frames: int | None = None) -> dict:
    """The visual speech `row`, with probability `p_concat` framed by a generic prefix and suffix
    (see the module docstring for the draws, the trimming and the fields of the result)."""
    if row.get("kind", "speech") != "speech" or p_concat <= 0 or generic is None or len(generic) == 0:
        return _unchanged(row)
    rng = random.Random(f"{seed}:{step}:{row['id']}")
    if not rng.random() < p_concat:
        return _unchanged(row)
    n = len(generic)
    ip, is_ = rng.sample(range(n), 2) if n >= 2 else (0, 0)
    pre, suf = generic[ip], generic[is_]
    parts = [pre, row, suf]
    nt = [_n_turns(r) for r in parts]
    kv = rng.randint(1, nt[1])
    kp = rng.randint(1, nt[0])
    ks = rng.randint(1, nt[2])
    k = [kp, kv, ks]
    if max_frames is not None:
        ends = [turn_ends(r) for r in parts]
        for j in (2, 0, 1):
            while k[j] > 1 and sum(int(e[kk - 1]) for e, kk in zip(ends, k)) > max_frames:
                k[j] -= 1
    trimmed = [trim_turns(r, kk) for r, kk in zip(parts, k)]
    n_cb = {t[1].shape[0] for t in trimmed}
    if len(n_cb) != 1:
        raise ValueError(f"token row {row.get('id')!r}: generic rows {pre.get('id')!r}/{suf.get('id')!r} have "
                         f"another number of codebooks ({sorted(n_cb)})")
    lens = [t[4] for t in trimmed]
    offs = [0, lens[0], lens[0] + lens[1]]
    out = dict(row)
    out["text_tokens"] = np.concatenate([t[0] for t in trimmed])
    out["audio_codes"] = np.concatenate([t[1] for t in trimmed], axis=1)
    out["turn_start_frames"] = np.concatenate([t[2] + o for t, o in zip(trimmed, offs)]).astype(np.int32)
    out["turn_roles"] = [r for t in trimmed for r in t[3]]
    total = sum(lens)
    out["num_frames"] = total
    fr = float(row.get("frame_rate_hz") or 12.5)
    out["duration_s"] = total / fr
    if all(r.get("words") is not None for r in parts):
        out["words"] = [w for r, o, c in zip(parts, offs, lens) for w in _shift_words(r["words"], o / fr, c / fr)]
    out["visual_start_frame"] = offs[1]
    out["visual_end_frame"] = offs[1] + lens[1]
    out["augment"] = json.dumps({
        "seed": seed, "step": step,
        "prefix": {"id": pre.get("id"), "turns": k[0], "of": nt[0], "frames": lens[0]},
        "visual": {"id": row.get("id"), "turns": k[1], "of": nt[1], "frames": lens[1]},
        "suffix": {"id": suf.get("id"), "turns": k[2], "of": nt[2], "frames": lens[2]},
    }, sort_keys=True)
    return out


def augment_stream(rows: Iterable[dict], generic: Sequence[dict] | None, *, p_concat: float, seed: int,
                   start_step: int = 0, max_frames: int | None = None, advance: int = 2) -> Iterator[dict]:
    """`concat_augment` over a stream of rows (the i-th row gets `step = start_step + i`); after each
    augmented row the pool moves on by `advance` rows when it can (`GenericPool.advance`)."""
    for i, row in enumerate(rows):
        out = concat_augment(row, generic, p_concat=p_concat, seed=seed, step=start_step + i, max_frames=max_frames)
        if out["augment"] and hasattr(generic, "advance"):
            generic.advance(advance)
        yield out


class GenericPool:
    """A window of at most `capacity` generic speech rows, streamed (see the module docstring).

    Indexable (`len(pool)`, `pool[i]`: numpy token rows). Nothing is read before the first use.
    When the generic set has fewer ok rows than `capacity`, the window is the whole set, in the
    order of the stream's first epoch, and `advance` leaves it as it is.
    """

    def __init__(self, shards: Sequence[str | Path], *, capacity: int = 64, seed: int = 0, name: str = "generic",
                 columns: Sequence[str] | None = TRAIN_COLUMNS, cache: RowGroupCache | None = None):
        if capacity < 1:
            raise ValueError(f"GenericPool capacity must be >= 1, got {capacity}")
        self.stream = RowStream(name, shards, seed=seed, columns=columns, shuffle=True, cache=cache)
        self.capacity = capacity
        self._cap = capacity
        self._win: deque[dict] = deque()
        self._filled = False
        self._whole = False  # the window holds the whole set: advancing changes nothing

    @classmethod
    def from_corpus(cls, corpus: str | Path, **kw) -> GenericPool | None:
        """The pool of a corpus directory's generic set (manifest.json: the split with role
        "generic"); None when the corpus has no generic set of kind speech or it has no shards."""
        corpus = Path(corpus)
        man = json.loads((corpus / "manifest.json").read_text())
        for s in man.get("splits", []):
            if s.get("role") == "generic" and s.get("kind", "speech") == "speech":
                shards = [corpus / sh["path"] for sh in s.get("shards") or []]
                if shards:
                    return cls(shards, **kw)
        return None

    def _fill(self) -> None:
        while len(self._win) < self._cap:
            r = self.stream.take()
            if r is None:
                if not self._filled:  # the first pass ended: the whole set fits in the window
                    self._cap = len(self._win)
                    self._whole = True
                    break
                self.stream.new_epoch()
                continue
            if r.get("kind", "speech") == "speech":
                self._win.append(copy_row(r))
        self._filled = True

    def _ensure(self) -> None:
        if not self._filled:
            self._fill()

    def __len__(self) -> int:
        self._ensure()
        return len(self._win)

    def __getitem__(self, i: int) -> dict:
        self._ensure()
        return self._win[i]

    def ids(self) -> list[str]:
        self._ensure()
        return [r["id"] for r in self._win]

    def advance(self, n: int = 2) -> None:
        """Drop the `n` oldest rows of the window and read the next `n` of the stream."""
        self._ensure()
        if self._cap == 0 or self._whole:
            return
        for _ in range(min(n, len(self._win))):
            self._win.popleft()
        self._fill()

    def state_dict(self) -> dict:
        self._ensure()
        return {"stream": self.stream.state_dict(), "capacity": self._cap, "whole": self._whole,
                "window": [list(map(int, r["_pos"])) for r in self._win]}

    def load_state_dict(self, st: dict) -> None:
        self.stream.load_state_dict(st["stream"])
        self._cap = int(st["capacity"])
        self._whole = bool(st.get("whole", False))
        self._win = deque(self.stream.read_positions(st["window"]))
        self._filled = True
