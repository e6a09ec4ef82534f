"""Hand-made token rows and corpora for the augment/ and trainer/ data tests (fast: no pipeline run)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augment.rows import write_token_shard


def speech_row(rid: str, turn_lens=(5, 7, 4, 6), *, lead: int = 3, tag: int = 0, n_cb: int = 16, split: str = "s",
               image: dict | None = None, status: str = "ok") -> dict:
    """A speech token row: `lead` frames before the first turn, then turns of `turn_lens` frames.
    Text value at frame t is `tag * 10000 + t`; code of codebook k at frame t `(7t + 131k + 997 tag) % 2048`,
    so any slice can be traced back to its row and frame."""
    n = lead + int(sum(turn_lens))
    t = np.arange(n)
    starts = lead + np.concatenate([[0], np.cumsum(turn_lens)[:-1]]).astype(np.int32)
    return {
        "id": rid, "split": split, "kind": "speech", "status": status,
        "image": image if image is not None else {"url": None, "path": f"images/{rid}.jpg", "sha256": None},
        "num_frames": n, "frame_rate_hz": 12.5, "duration_s": n / 12.5,
        "text_tokens": (tag * 10000 + t).astype(np.int32),
        "audio_codes": ((7 * t[None, :] + 131 * np.arange(n_cb)[:, None] + 997 * tag) % 2048).astype(np.int16),
        "turn_start_frames": starts.astype(np.int32),
        "turn_roles": [("user", "assistant")[i % 2] for i in range(len(turn_lens))],
    }


def text_row(rid: str, n: int = 6, *, tag: int = 0, split: str = "t", status: str = "ok") -> dict:
    return {"id": rid, "split": split, "kind": "text", "status": status,
            "image": {"url": None, "path": f"images/{rid}.jpg", "sha256": None}, "num_frames": n,
            "frame_rate_hz": 0.0, "text_tokens": (tag * 10000 + 100 + np.arange(n)).astype(np.int32),
            "audio_codes": None, "turn_start_frames": np.array([0, n // 2], np.int32),
            "turn_roles": ["user", "assistant"]}


def write_corpus(root: Path, splits: dict[str, dict], row_group_rows: int = 4) -> Path:
    """A corpus directory: `splits[name] = {"kind", "weight" (None: not in weights), "role", "shards":
    [[row, ...], ...]}` -> DIR/<name>/tokens/tokens-0000k.parquet and DIR/manifest.json."""
    root = Path(root)
    man_splits, weights = [], {}
    for name, s in splits.items():
        shards = []
        for k, rows in enumerate(s["shards"]):
            for r in rows:
                r["split"] = name
            rel = f"{name}/tokens/tokens-{k:05d}.parquet"
            write_token_shard(root / rel, rows, row_group_rows=row_group_rows)
            shards.append({"path": rel, "rows": len(rows)})
        ok = sum(r.get("status", "ok") == "ok" for rows in s["shards"] for r in rows)
        man_splits.append({"name": name, "role": s.get("role", "split"), "kind": s["kind"], "weight": s.get("weight"),
                           "rows": ok, "state": "complete", "shards": shards})
        if s.get("weight"):
            weights[name] = s["weight"]
    tot = sum(weights.values())
    man = {"format": "ssvd-corpus/1", "name": "handmade", "state": "complete",
           "weights": {k: v / tot for k, v in weights.items()}, "splits": man_splits}
    (root / "manifest.json").write_text(json.dumps(man, indent=1))
    return root
