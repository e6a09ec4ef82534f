"""What a stage run measures about itself: rows, generated tokens and audio seconds per second, and an ETA.

Rates count only the work this run did (rows it wrote), never rows skipped on resume;
the time to start the workers (engine or codec loading) is measured apart, so that the rate is the
one of the work itself and `startup_s + rows / rows_per_s` reproduces the wall time. The run record
(`_<stage>.run.json`) carries these figures: `progress` while the run goes, `summary.run` once it
finished; `ssvd status` and `ssvd estimate` read them from there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

# The natural unit of each stage besides rows: generated tokens for dialogues, audio seconds otherwise.
UNITS = {"dialogues": "tokens", "speech": "audio_s", "tokens": "audio_s"}


def fmt_duration(s: float | None) -> str:
    """3:05, 1:02:03, 2d03h; '?' when unknown."""
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    if s >= 2 * 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def rates(rows: int, tokens: int, audio_s: float, work_s: float) -> dict:
    w = max(work_s, 1e-9)
    return {"rows_per_s": round(rows / w, 4) if rows else 0.0, "tokens_per_s": round(tokens / w, 2) if tokens else 0.0,
            "audio_s_per_s": round(audio_s / w, 4) if audio_s else 0.0}


def eta_s(left: int | None, rows_per_s: float | None) -> float | None:
    if left is None:
        return None
    if left == 0:
        return 0.0
    return left / rows_per_s if rows_per_s else None


@dataclass
class Meter:
    stage: str
    total: int | None = None  # rows the stage will hold (the bar's total), when known
    t0: float = field(default_factory=time.monotonic)
    startup_s: float = 0.0  # spent starting workers
    rows: int = 0  # rows this run wrote
    generated_tokens: int = 0
    audio_s: float = 0.0
    done: int = 0  # rows accounted for so far, skipped ones included (the bar's position)
    workers: int = 0

    def add(self, row: dict) -> None:
        self.rows += 1
        gen = row.get("generated_tokens")
        self.generated_tokens += int(gen if gen is not None else row.get("completion_tokens") or 0)
        self.audio_s += float(row.get("duration_s") or 0.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def snapshot(self) -> dict:
        el = self.elapsed()
        work = max(el - self.startup_s, 1e-9)
        r = rates(self.rows, self.generated_tokens, self.audio_s, work)
        left = None if self.total is None else max(self.total - self.done, 0)
        return {"rows": self.rows, "generated_tokens": self.generated_tokens, "audio_s": round(self.audio_s, 3),
                "elapsed_s": round(el, 3), "startup_s": round(self.startup_s, 3), "workers": self.workers,
                **r, "left": left, "eta_s": None if left is None else _round(eta_s(left, r["rows_per_s"]))}

    def postfix(self) -> str:
        s = self.snapshot()
        unit = UNITS.get(self.stage)
        parts = [f"{s['rows_per_s']:.2f} rows/s"]
        if unit == "tokens":
            parts.append(f"{s['tokens_per_s']:.0f} tok/s")
        elif unit == "audio_s" and self.audio_s:
            parts.append(f"{s['audio_s_per_s']:.2f} audio-s/s")
        if self.total is not None:
            parts.append(f"ETA {fmt_duration(s['eta_s'])}")
        return ", ".join(parts)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
