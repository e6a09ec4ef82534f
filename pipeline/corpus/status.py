"""`ssvd status DIR`: per split and stage, what is done, running, interrupted, failed and left.

Counted from the shard files themselves (finished shards and the part files of shards in
progress), so it is exact while a run is writing and after one died.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.corpus.layout import LOCK, load_provenance
from pipeline.core.progress import UNITS, eta_s, fmt_duration


def _lock(root: Path) -> dict | None:
    from pipeline.corpus.run import holder

    return holder(root / LOCK)


def _count(d: Path, stage: str) -> tuple[Counter, int, int]:
    """Row statuses of a stage directory, finished shards and shards in progress."""
    c: Counter = Counter()
    files = sorted(d.glob(f"{stage}-*.parquet")) if d.is_dir() else []
    parts_dirs = sorted((d / ".parts").glob(f"{stage}-*")) if (d / ".parts").is_dir() else []
    for f in files + [p for pd in parts_dirs for p in sorted(pd.glob("part-*.parquet"))]:
        c.update(pq.read_table(f, columns=["status"]).column("status").to_pylist())
    done = {f.stem for f in files}
    return c, len(files), sum(1 for pd in parts_dirs if pd.name not in done)


def _expected_first(config: dict, split: dict) -> int | None:
    m = config.get("manifest", {})
    if split["role"] == "generic":
        g = m.get("generic") or {}
        lim = config.get("limit")
        return g.get("count") if lim is None else min(g.get("count", lim), lim)
    s = (m.get("splits") or {}).get(split["name"], {})
    limit = s.get("limit", (m.get("defaults") or {}).get("limit"))
    if config.get("limit") is not None:
        limit = config["limit"] if limit is None else min(limit, config["limit"])
    if limit is None:
        return None
    replicas = 1 if "benchmark" in s else int(s.get("replicas", (m.get("defaults") or {}).get("replicas", 1)))
    return limit * replicas


def _rate(rec: dict | None, left: int | None) -> dict[str, Any]:
    """The measured rate of the latest run that did work (its run record), and the ETA of what is left at it."""
    m = (rec or {}).get("measured")
    if not m:
        return {"rate": None, "eta_s": 0.0 if left == 0 else None}
    keep = ("rows", "elapsed_s", "startup_s", "workers", "rows_per_s", "tokens_per_s", "audio_s_per_s",
            "generated_tokens", "audio_s", "updated")
    eta = eta_s(left, m.get("rows_per_s"))
    return {"rate": {k: m.get(k) for k in keep}, "eta_s": None if eta is None else round(eta, 1)}


def corpus_status(root: Path) -> dict[str, Any]:
    root = Path(root)
    prov = load_provenance(root)
    lock = _lock(root)
    out = {"name": prov["name"], "config_hash": prov["config_hash"], "running": lock, "splits": []}
    for split in prov["splits"]:
        expected = _expected_first(prov["config"], split)
        rows = []
        for st in split["stages"]:
            d = root / st["dir"]
            rec_p = d / f"_{st['stage']}.run.json"
            rec = json.loads(rec_p.read_text()) if rec_p.is_file() else None
            c, shards, in_progress = _count(d, st["stage"])
            state = "pending" if rec is None else rec.get("state", "pending")
            if state == "running" and lock is None:
                state = "interrupted"  # its run died: `ssvd run` again resumes it
            state = {"complete": "done"}.get(state, state)
            done = sum(c.values())
            left = None if expected is None else max(expected - done, 0)
            if state == "done":
                left = 0
            if st["stage"] == "images":  # one row per image, not per dialogue: no count of what is left
                from pipeline.images.stage import reason_counts

                rows.append({"stage": "images", "state": state, "ok": c["ok"], "rejected": c["rejected"],
                             "failed": c["failed"], "left": 0 if state == "done" else None, "shards": shards,
                             "shards_in_progress": in_progress, "by_reason": reason_counts(d)["by_reason"],
                             **_rate(rec, 0 if state == "done" else None)})
                continue  # a side stage: speech / tokens read the dialogues
            rows.append({"stage": st["stage"], "state": state, "ok": c["ok"], "rejected": c["rejected"],
                         "failed": c["failed"], "left": left, "shards": shards, "shards_in_progress": in_progress,
                         **_rate(rec, left)})
            # what the next stage should take in: the accepted rows of this one, once it is done
            expected = c["ok"] if state == "done" else None
        out["splits"].append({"name": split["name"], "kind": split["kind"], "stages": rows})
    return out


def format_status(st: dict[str, Any]) -> str:
    run = st["running"]
    head = (f"corpus {st['name']}  config {st['config_hash']}  "
            + (f"running: pid {run['pid']} since {run.get('started')}" if run else "not running"))
    lines = [head, f"{'split':<22}{'stage':<11}{'state':<13}{'ok':>7}{'rejected':>10}{'failed':>8}{'left':>7}"
                   f"{'shards':>8}  {'rows/s':>8} {'unit/s':>15} {'ETA':>9}"]
    for s in st["splits"]:
        for r in s["stages"]:
            left = "?" if r["left"] is None else str(r["left"])
            shards = f"{r['shards']}" + (f"+{r['shards_in_progress']}" if r["shards_in_progress"] else "")
            lines.append(f"{s['name']:<22}{r['stage']:<11}{r['state']:<13}{r['ok']:>7}{r['rejected']:>10}"
                         f"{r['failed']:>8}{left:>7}{shards:>8}  {_rate_cols(r)}")
    for s in st["splits"]:
        for r in s["stages"]:
            if r.get("by_reason"):
                lines.append(f"{s['name']} images not had, by reason: "
                             + ", ".join(f"{k.removeprefix('image:')} {v}" for k, v in r["by_reason"].items()))
    todo = [f"{s['name']}/{r['stage']}" for s in st["splits"] for r in s["stages"] if r["state"] != "done"]
    lines.append("all done" if not todo else f"not done: {', '.join(todo)}")
    etas = [r["eta_s"] for s in st["splits"] for r in s["stages"] if r["state"] != "done"]
    if todo:
        known = [e for e in etas if e is not None]
        lines.append(f"ETA of what is left, stage after stage at the measured rates: {fmt_duration(sum(known))}"
                     + (f" + {len(etas) - len(known)} stage(s) not measured yet" if len(known) < len(etas) else ""))
    lines.append("rates: the latest run of each stage that did work (its run record); '-' none yet")
    return "\n".join(lines)


def _rate_cols(r: dict) -> str:
    m = r.get("rate")
    if not m:
        return f"{'-':>8} {'-':>15} {fmt_duration(r['eta_s']) if r['eta_s'] == 0 else '?':>9}"
    unit = UNITS.get(r["stage"])
    u = (f"{m['tokens_per_s']:.0f} tok/s" if unit == "tokens" and m.get("tokens_per_s")
         else f"{m['audio_s_per_s']:.2f} audio-s/s" if unit == "audio_s" and m.get("audio_s_per_s") else "-")
    return f"{m['rows_per_s']:>8.3g} {u:>15} {fmt_duration(r['eta_s']):>9}"
