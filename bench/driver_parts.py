"""Benchmark parts for bench/driver_throughput.py: instant workers, so that only the driver is measured.

None of these is a default of ssvd, or reachable from its CLI: they exist for the driver benchmark only.
- `BenchReplayDialogueWorker`: replays one recorded dialogue (fixed turns) for every work item, with the
  item's own ids, seed and caption: a dialogue row as the real worker returns it, made in microseconds.
- `BenchNullTtsWorker`: a speech worker with a null TTS: every dialogue gets the same pre-encoded FLAC audio
  (quiet noise, `audio_s` seconds, encoded once) and word/turn timings spread over it.
- `BenchNullCodecWorker`: a token worker with a null codec: all-zero codes [16 x frames] for the row's
  duration at 12.5 Hz, and a text stream of pad ids.
- `Timed`: wraps a worker; counts the thread CPU and wall time spent inside `run` (in-process pool: that
  time is the worker's, not the driver's) and the Arrow bytes of the rows it returns (what the driver
  receives and has to write).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa

from pipeline.core.stage_input import RowItem, carried
from pipeline.core.types import Dialogue, Turn, dialogue_to_row

RECORDED_TURNS = [  # one recorded 4-pair dialogue, replayed for every item
    ("user", "What is the main object in the picture?"),
    ("assistant", "A red bicycle leaning against a white brick wall, its front wheel turned to the left."),
    ("user", "Where is it standing?"),
    ("assistant", "On a narrow cobbled street, next to a green wooden door."),
    ("user", "Is anyone around?"),
    ("assistant", "No, the street is empty; only a cat sits on the window sill above the door."),
    ("user", "What time of day does it look like?"),
    ("assistant", "Late afternoon: long shadows fall across the cobbles from the left."),
]
FRAME_RATE_HZ = 12.5
SAMPLE_RATE_HZ = 24000


class BenchReplayDialogueWorker:
    """Benchmark part (never a default): replays a recorded dialogue instantly."""

    def __init__(self, spec=None):
        self.turns = [Turn(role, text, "LOC", prompt_tokens=225, completion_tokens=30) for role, text in RECORDED_TURNS]

    def info(self) -> dict:
        return {"pid": os.getpid(), "engine": "bench-replay"}

    def run(self, items: list) -> list[dict]:
        return [dialogue_to_row(Dialogue(
            id=it.id, caption_id=it.caption.id, source=it.source, instruction=it.instruction, seed=it.seed,
            replica=it.replica, turns=self.turns, input_shard=it.input_shard, input_row=it.input_row,
            model_user="bench-replay", model_assistant="bench-replay", generated_tokens=240)) for it in items]


def bench_flac(audio_s: float, seed: int = 0) -> bytes:
    from tts.audio import to_flac

    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 0.01, size=(2, int(audio_s * SAMPLE_RATE_HZ))).astype(np.float32)
    return to_flac(audio, SAMPLE_RATE_HZ)


class BenchNullTtsWorker:
    """Benchmark part (never a default): speech rows with the same pre-encoded audio for every dialogue."""

    def __init__(self, spec, audio_s: float = 1.0):
        self.spec, self.audio_s = spec, audio_s
        self.flac = bench_flac(audio_s)

    def info(self) -> dict:
        return {"pid": os.getpid(), "backends": {"bench-null": {"name": "bench-null-tts"}}}

    def run(self, items: list[RowItem]) -> list[dict]:
        out = []
        for it in items:
            turns = it.row.get("turns") or []
            step = self.audio_s / max(len(turns), 1)
            r = carried(it.row, self.spec.split)
            r.update(status="ok", error="", tts="bench-null-tts", voice_assistant="bench:a", voice_user="bench:u",
                     sample_rate_hz=SAMPLE_RATE_HZ, num_samples=int(self.audio_s * SAMPLE_RATE_HZ),
                     duration_s=self.audio_s, audio_flac=self.flac,
                     words=[{"word": w, "start_s": n * step, "end_s": (n + 0.5) * step, "speaker": t["role"]}
                            for n, t in enumerate(turns) for w in t["text"].split()[:1]],
                     turns=[{"role": t["role"], "text": t["text"], "start_s": n * step, "end_s": (n + 1) * step,
                             "voice": "bench:a"} for n, t in enumerate(turns)],
                     codes=None, codes_codec="")
            out.append(r)
        return out


class BenchNullCodecWorker:
    """Benchmark part (never a default): token rows with all-zero codes for the row's duration."""

    def __init__(self, spec):
        self.spec = spec

    def info(self) -> dict:
        return {"pid": os.getpid(), "codec": {"name": "bench-null-codec"}, "tokenizer": {"name": "bench-none"}}

    def run(self, items: list[RowItem]) -> list[dict]:
        out = []
        for it in items:
            row = it.row
            frames = max(1, int(round((row.get("duration_s") or 0.0) * FRAME_RATE_HZ)))
            r = carried(row, self.spec.split)
            turns = row.get("turns") or []
            r.update(kind="speech", num_frames=frames, frame_rate_hz=FRAME_RATE_HZ, duration_s=row.get("duration_s"),
                     text_tokens=[3] * frames, audio_codes=[[0] * frames for _ in range(16)],
                     turn_start_frames=[int(t["start_s"] * FRAME_RATE_HZ) for t in turns],
                     turn_roles=[t["role"] for t in turns], words=row.get("words") or [],
                     codec="bench-null-codec", tokenizer="bench-none", dropped_text_tokens=0,
                     provenance=json.dumps({"bench": True}))
            out.append(r)
        return out


class Timed:
    """A worker's time inside `run` (thread CPU, wall) and the Arrow bytes of the rows it returned."""

    def __init__(self, worker, schema: pa.Schema):
        self.worker, self.schema = worker, schema
        self.cpu_s = self.wall_s = 0.0
        self.bytes = self.rows = 0

    def info(self) -> dict:
        return self.worker.info()

    def run(self, items: list) -> list[dict]:
        c, w = time.thread_time(), time.perf_counter()
        rows = self.worker.run(items)
        self.rows += len(rows)
        self.bytes += pa.Table.from_pylist(rows, schema=self.schema).nbytes  # measuring: the worker's time too
        self.cpu_s += time.thread_time() - c
        self.wall_s += time.perf_counter() - w
        return rows
