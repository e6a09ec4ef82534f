"""Row-level batch building: crop a token row, collate speech rows (Moshi's per-codebook delays,
zero-token padding, loss weights and masks) and text rows into numpy arrays (docs/trainer.md)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ZERO_TOKEN = -1
# Moshi (moshiko): text stream, then 8 assistant codebooks, then 8 user codebooks.
MOSHI_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)


def crop_row(row: dict, max_len: int) -> tuple[dict, bool]:
    """A row of at most `max_len` frames (speech) or tokens (text), keeping the beginning: cut at
    the last turn start <= `max_len` if that keeps at least half of `max_len`, else at `max_len`."""
    text = row["text_tokens"]
    n = len(text)
    if n <= max_len:
        return row, False
    tsf = np.asarray(row.get("turn_start_frames") if row.get("turn_start_frames") is not None else [], np.int64)
    ok = tsf[(tsf > 0) & (tsf <= max_len)]
    cut = int(ok.max()) if ok.size and ok.max() * 2 >= max_len else max_len
    out = dict(row)
    out["text_tokens"] = np.asarray(text)[:cut]
    a = row.get("audio_codes")
    if a is not None and np.asarray(a).size:
        out["audio_codes"] = np.asarray(a)[:, :cut]
    keep = int((tsf < cut).sum())
    out["turn_start_frames"] = tsf[:keep].astype(np.int32)
    out["turn_roles"] = list(row.get("turn_roles") or [])[:keep]
    out["num_frames"] = cut
    if "visual_start_frame" in row:
        out["visual_start_frame"] = min(int(row["visual_start_frame"]), cut)
        out["visual_end_frame"] = min(int(row["visual_end_frame"]), cut)
    return out, True


def collate_speech(rows: Sequence[dict], *, delays: Sequence[int] = MOSHI_DELAYS, text_pad_ids: Sequence[int] = (3, 0),
                   text_pad_weight: float = 0.5) -> dict[str, np.ndarray]:
    """Speech rows (undelayed `text_tokens` [T_i], `audio_codes` [K, T_i]) -> numpy arrays:
    text [B, T], audio [B, K, T] (delays applied, -1 elsewhere), text_weight [B, T], audio_mask
    [B, K, T], visual [B, T], lengths [B]; T = max T_i. A codebook delayed by d is shifted right by d within
    its row's frames: its last d frames fall off, as in Moshi's (and moshi-finetune's) training, so no frame
    is added past the row's end (its inputs would be all zero tokens, which the frozen Moshi never saw)."""
    delays = np.asarray(delays, np.int64)
    k = len(delays) - 1
    lens = [len(r["text_tokens"]) for r in rows]
    b, t = len(rows), max(lens)
    text = np.full((b, t), ZERO_TOKEN, np.int64)
    audio = np.full((b, k, t), ZERO_TOKEN, np.int64)
    mask = np.zeros((b, k, t), bool)
    weight = np.zeros((b, t), np.float32)
    visual = np.zeros((b, t), bool)
    dt = int(delays[0])
    groups = []  # (delay, codebook slice or index array)
    for d in np.unique(delays[1:]):
        ks = np.flatnonzero(delays[1:] == d)
        groups.append((int(d), slice(int(ks[0]), int(ks[-1]) + 1) if ks[-1] - ks[0] + 1 == len(ks) else ks))
    pad_ids = np.asarray(list(text_pad_ids), np.int64)
    for i, (r, n) in enumerate(zip(rows, lens)):
        tt = np.asarray(r["text_tokens"])
        codes = np.asarray(r["audio_codes"])
        if codes.shape != (k, n):
            raise ValueError(f"token row {r.get('id')!r} (split {r.get('split')!r}): audio_codes {codes.shape}, "
                             f"expected [{k}, {n}] (one row per codebook, as long as text_tokens)")
        text[i, dt:dt + n] = tt
        w = np.where(np.isin(tt, pad_ids), np.float32(text_pad_weight), np.float32(1.0))
        w[tt == ZERO_TOKEN] = 0.0
        weight[i, dt:dt + n] = w
        for d, ks in groups:
            if d < n:
                audio[i, ks, d:n] = codes[ks, :n - d]
                mask[i, ks, d:n] = True
        vs = int(r.get("visual_start_frame", 0))
        ve = int(r.get("visual_end_frame", n))
        visual[i, vs:ve] = True
    return {"text": text, "audio": audio, "text_weight": weight, "audio_mask": mask, "visual": visual,
            "lengths": np.asarray(lens, np.int64)}


def collate_text(rows: Sequence[dict]) -> dict[str, np.ndarray]:
    """Text rows -> text [B, L] right-padded with -1, text_weight [B, L] (1 on tokens), lengths [B]."""
    lens = [len(r["text_tokens"]) for r in rows]
    b, n = len(rows), max(1, max(lens))
    text = np.full((b, n), ZERO_TOKEN, np.int64)
    weight = np.zeros((b, n), np.float32)
    for i, (r, m) in enumerate(zip(rows, lens)):
        text[i, :m] = r["text_tokens"]
        weight[i, :m] = 1.0
    return {"text": text, "text_weight": weight, "lengths": np.asarray(lens, np.int64)}
