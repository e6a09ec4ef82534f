"""`ssvd report DIR`: a quality report of a corpus made by `ssvd run` (docs/corpus.md).

Writes DIR/report/ (or `out_dir`): `index.html` with tables, the PNG plots next to it
(pipeline/corpus/report_plots.py) and `report.json` with every number shown. Shards are streamed
row by row, reading only the columns needed (never the audio or the Mimi codes).

What it covers, per split: pairs per dialogue, words per message (user vs assistant), speech
durations, rejections (the stages' `rejected_by_reason` and the rows with status "rejected"),
the instruction of every pair, the voices, and the training tokens of each split against the
manifest weights. Training tokens count the steps a trainer sees: `num_frames` Mimi frames for a
speech row, `len(text_tokens)` for a text row.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.corpus.layout import load_provenance
from pipeline.core.shards import iter_rows

REPORT_DIR = "report"
REPORT_FORMAT = "ssvd-report/1"
_COLUMNS = {
    "dialogues": ["status", "reason", "num_pairs", "turns"],
    "speech": ["status", "reason", "duration_s", "voice_user", "voice_assistant"],
    "tokens": ["status", "reason", "kind", "num_frames", "text_tokens"],
    "images": ["status", "reason"],
}


def _counter_stats(c: Counter) -> dict[str, Any]:
    """count / mean / median / max of a histogram {value: count}."""
    n = sum(c.values())
    if not n:
        return {"count": 0, "mean": None, "median": None, "max": None}
    acc, median = 0, None
    for v in sorted(c):
        acc += c[v]
        if acc * 2 >= n:
            median = v
            break
    return {"count": n, "mean": round(sum(v * k for v, k in c.items()) / n, 2), "median": median, "max": max(c)}


def _float_stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"count": 0, "total_s": 0.0, "hours": 0.0, "mean_s": None, "min_s": None, "max_s": None}
    total = sum(xs)
    return {"count": len(xs), "total_s": round(total, 3), "hours": round(total / 3600, 4),
            "mean_s": round(total / len(xs), 2), "min_s": round(min(xs), 2), "max_s": round(max(xs), 2)}


def _sorted(c: Counter) -> dict:
    return {str(k): c[k] for k in sorted(c, key=lambda k: (-c[k], str(k)))}


class _Split:
    """Everything counted for one split while streaming its shards."""

    def __init__(self, entry: dict[str, Any]):
        self.entry = entry
        self.status: dict[str, Counter] = {}
        self.rejected_rows: dict[str, Counter] = {}
        self.pairs: Counter = Counter()
        self.words: dict[str, Counter] = {"user": Counter(), "assistant": Counter()}
        self.instructions: Counter = Counter()
        self.durations: list[float] = []
        self.voices: dict[str, Counter] = {"user": Counter(), "assistant": Counter()}
        self.tok = Counter()
        self.missing: list[str] = []

    def rows(self, root: Path, stage: dict[str, Any]):
        name = stage["stage"]
        self.status.setdefault(name, Counter())
        self.rejected_rows.setdefault(name, Counter())
        for shard in stage.get("shards") or []:
            path = root / shard["path"]
            if not path.is_file():
                self.missing.append(shard["path"])
                continue
            columns = _COLUMNS.get(name)
            if name == "tokens" and self.entry.get("kind") == "speech":  # num_frames says it all: skip the stream
                columns = [c for c in columns if c != "text_tokens"]
            for r in iter_rows(path, columns=columns):
                self.status[name][r["status"]] += 1
                if r["status"] == "rejected" or (name == "images" and r["status"] == "failed"):  # every image not had
                    self.rejected_rows[name][r.get("reason") or "(no reason)"] += 1
                if r["status"] == "ok":
                    yield r

    def add(self, name: str, r: dict[str, Any]) -> None:
        if name == "dialogues":
            self.pairs[int(r["num_pairs"] or 0)] += 1
            for t in r.get("turns") or []:
                role = t.get("role")
                if role in self.words:
                    self.words[role][len((t.get("text") or "").split())] += 1
                if role == "assistant":  # one per pair: both turns of a pair share its instruction
                    self.instructions[t.get("instruction") or "(none)"] += 1
        elif name == "speech":
            self.durations.append(float(r["duration_s"] or 0.0))
            self.voices["user"][r.get("voice_user") or "(none)"] += 1
            self.voices["assistant"][r.get("voice_assistant") or "(none)"] += 1
        elif name == "tokens":
            if r.get("kind") == "speech":
                self.tok["speech_rows"] += 1
                self.tok["audio_frames"] += int(r["num_frames"] or 0)
                self.tok["training_tokens"] += int(r["num_frames"] or 0)
            else:
                n = len(r["text_tokens"] or []) if "text_tokens" in r else int(r["num_frames"] or 0)
                self.tok["text_rows"] += 1
                self.tok["text_tokens"] += n
                self.tok["training_tokens"] += n

    def rejections(self) -> list[dict[str, Any]]:
        out = []
        for stage in self.entry.get("stages") or []:
            name = stage["stage"]
            st = stage.get("stats") or {}
            stats = Counter((st.get("images") or {}).get("by_reason") or st.get("rejected_by_reason") or {})
            rows = self.rejected_rows.get(name, Counter())
            for reason in sorted(set(stats) | set(rows)):
                out.append({"stage": name, "reason": str(reason), "stats": int(stats.get(reason, 0)),
                            "rows": int(rows.get(reason, 0)),
                            "count": max(int(stats.get(reason, 0)), int(rows.get(reason, 0)))})
        return out

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        stages = {s["stage"]: {"state": s.get("state"), "stats": s.get("stats") or {},
                               "rows": {k: self.status.get(s["stage"], Counter()).get(k, 0)
                                        for k in ("ok", "rejected", "failed")},
                               "shards": len(s.get("shards") or [])} for s in e.get("stages") or []}
        return {
            "name": e["name"], "role": e.get("role"), "kind": e.get("kind"), "weight": e.get("weight"),
            "source": e.get("source"), "instruction": e.get("instruction"), "benchmark": e.get("benchmark"),
            "state": e.get("state"), "stages": stages,
            "dialogues": {"ok": sum(self.pairs.values()),
                          "pairs_histogram": {str(k): self.pairs[k] for k in sorted(self.pairs)},
                          "pairs": _counter_stats(self.pairs),
                          "words": {role: _counter_stats(c) for role, c in self.words.items()},
                          "instructions": _sorted(self.instructions)},
            "speech": {"durations": _float_stats(self.durations),
                       "voices": {role: _sorted(c) for role, c in self.voices.items()}},
            "tokens": {k: int(self.tok.get(k, 0)) for k in
                       ("speech_rows", "text_rows", "audio_frames", "text_tokens", "training_tokens")},
            "rejections": self.rejections(),
            "missing_shards": self.missing,
        }


def collect(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report numbers, raw values for the plots) of the corpus at `root`."""
    root = Path(root)
    prov = load_provenance(root)
    splits: list[_Split] = []
    for entry in prov.get("splits") or []:
        s = _Split(entry)
        for stage in entry.get("stages") or []:
            for r in s.rows(root, stage):
                s.add(stage["stage"], r)
        splits.append(s)
    data = {
        "format": REPORT_FORMAT,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "corpus": {k: prov.get(k) for k in ("name", "description", "state", "config_hash", "created", "updated",
                                            "manifest_file")},
        "warnings": warnings(prov),
        "splits": [s.to_json() for s in splits],
    }
    data["mixture"] = mixture(prov, data["splits"])
    words = {role: sum((s.words[role] for s in splits), Counter()) for role in ("user", "assistant")}
    data["words"] = {role: {**_counter_stats(c), "histogram": {str(k): c[k] for k in sorted(c)}}
                     for role, c in words.items()}
    raw = {"durations": {s.entry["name"]: s.durations for s in splits if s.durations}, "words": words}
    return data, raw


def mixture(prov: dict[str, Any], splits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per weighted split: its share of all training tokens next to its share of the weights."""
    weights = prov.get("weights") or {s["name"]: s["weight"] for s in splits if s.get("weight") is not None}
    weights = {k: float(v) for k, v in weights.items() if v is not None}
    tokens = {s["name"]: s["tokens"]["training_tokens"] for s in splits}
    raw = {s["name"]: s.get("weight") for s in splits}
    wsum = sum(weights.values())
    tsum = sum(tokens.get(k, 0) for k in weights)
    rows = []
    for name, w in weights.items():
        t = tokens.get(name, 0)
        rows.append({"split": name, "training_tokens": t, "weight": raw.get(name) if raw.get(name) is not None else w,
                     "weight_share": w / wsum if wsum else 0.0, "token_share": t / tsum if tsum else 0.0})
    return {"total_training_tokens": tsum, "splits": rows}


def warnings(prov: dict[str, Any]) -> list[str]:
    """What makes this corpus less than the real thing, in plain words."""
    from pipeline.corpus.provenance import caveats

    return [f"{title}: {text}" for title, text in caveats(prov)]


def write_report(root: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Write the report of the corpus at `root`; return its numbers with the paths written.

    Returns report.json's content plus `paths`: {"dir", "html", "json", "plots": {name: path}}."""
    from pipeline.corpus import report_html, report_plots

    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    data, raw = collect(root)
    plots = report_plots.plot_all(data, raw, out)
    data["plots"] = plots  # file names relative to the report directory
    json_path = out / "report.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    tmp.replace(json_path)
    html_path = out / "index.html"
    tmp = html_path.with_name(html_path.name + ".tmp")
    tmp.write_text(report_html.render(data), encoding="utf-8")
    tmp.replace(html_path)
    return {**data, "paths": {"dir": str(out), "html": str(html_path), "json": str(json_path),
                              "plots": {k: str(out / v) for k, v in plots.items()}}}
