"""The driver's own cost per stage, with instant workers: what the orchestration alone can sustain.

Each stage's orchestration (pipeline/core/runner.py with the real stage classes, the options `ssvd run`
uses) runs over N synthetic rows in-process (LocalPool, no Ray), with workers that take no time
(bench/driver_parts.py: a replayed dialogue, a null TTS, a null codec; benchmark parts, never defaults):
- dialogues: N synthetic PixMo captions (files of --shard-rows rows) -> dialogue shards;
- speech: those dialogues -> speech rows holding the same pre-encoded FLAC (--audio-s seconds);
- tokens: those speech rows -> token rows with all-zero codes for the audio's frames.
Per stage it prints the driver's rows/s (rows / (wall - time inside the workers)), its CPU seconds per
1,000 rows (process CPU - the workers' thread CPU) and the bytes per row that pass through the driver
(Arrow bytes of the rows the workers return: in-process here, through the Ray object store otherwise).

Then the no-op rerun: the three stages of a finished split of --noop-rows rows and of one of
--noop-small rows (each one input file) are run again, --repeats times, interleaved, as `ssvd run` does it:
open the input, find the stage finished, start no worker. `noop.ratio` = big / small medians (goal <= 1.2);
`noop.ratio_min`, of the fastest runs, is the steadier one on a loaded machine.

The last line printed is one JSON object. Run: `make bench-driver` or `python bench/driver_throughput.py --help`.
Timings on a shared machine: compare the ratio, and note the load (`load_avg` is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from driver_parts import BenchNullCodecWorker, BenchNullTtsWorker, BenchReplayDialogueWorker, Timed  # noqa: E402
from pipeline.core.ray_pool import LocalPool  # noqa: E402
from pipeline.core.runner import RunOptions, run_stage  # noqa: E402
from pipeline.core.stage_input import open_stage_input  # noqa: E402
from pipeline.core.stage_jobs import if_finished, run_row_stage  # noqa: E402
from pipeline.core.types import DIALOGUE_SCHEMA, SPEECH_SCHEMA, TOKEN_SCHEMA  # noqa: E402
from pipeline.dialogue.protocol import DialogueConfig  # noqa: E402
from pipeline.dialogue.stage import DialogueStage  # noqa: E402
from pipeline.sources.captions import open_source  # noqa: E402
from pipeline.speech.stage import SpeechStage  # noqa: E402
from pipeline.speech.worker import SpeechSpec  # noqa: E402
from pipeline.tokens.stage import TokenStage  # noqa: E402
from pipeline.tokens.worker import TokenSpec  # noqa: E402

MODELS = {"user": {"name": "bench-replay"}, "assistant": {"name": "bench-replay"}, "engine": "bench-replay"}
# the options `ssvd run` gives each stage (pipeline/corpus/steps.py, _options)
DIALOGUE_OPTS = RunOptions(max_inflight=256, chunk_size=8, flush_rows=64, progress=False)
ROW_OPTS = RunOptions(max_inflight=8, chunk_size=4, flush_rows=8, progress=False)
SPEECH_SPEC = SpeechSpec(split="bench")
TOKEN_SPEC = TokenSpec(kind="speech", codec="bench-null-codec", split="bench")


def write_captions(d: Path, rows: int, shard_rows: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, rows, shard_rows)):
        n = range(start, min(rows, start + shard_rows))
        pq.write_table(pa.table({
            "image_url": [f"https://example.com/bench/{i:08d}.jpg" for i in n],
            "caption": [f"A photograph number {i}: a red bicycle leaning against a white wall in a quiet street."
                        for i in n]}), d / f"pixmo-{k:05d}.parquet")


def dialogue_stage(captions: Path) -> DialogueStage:
    return DialogueStage(source=open_source("pixmo", str(captions)), instruction="LOC", run_seed=0, replicas=1,
                         limit=None, dialogue=DialogueConfig(), models=MODELS)


def speech_stage(inp) -> SpeechStage:
    return SpeechStage(inp, SPEECH_SPEC, tts={"bench-null": {"name": "bench-null-tts"}})


def token_stage(inp) -> TokenStage:
    return TokenStage(inp, TOKEN_SPEC, workers_info={"codec": {"name": "bench-null-codec"},
                                                     "tokenizer": {"name": "bench-none"}})


def measure(name: str, stage, out: Path, worker, schema: pa.Schema, opts: RunOptions) -> dict:
    timed = Timed(worker, schema)
    c0, t0 = time.process_time(), time.perf_counter()
    if isinstance(stage, DialogueStage):
        s = run_stage(stage, out, lambda: LocalPool(timed), opts)
    else:  # as `ssvd speech` / `ssvd tokens` do, recording what was read for a later rerun
        s = run_row_stage(stage, out, LocalPool(timed), opts, True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = s.items_run
    drv_wall, drv_cpu = max(wall - timed.wall_s, 1e-9), max(cpu - timed.cpu_s, 0.0)
    return {"stage": name, "rows": rows, "shards": s.shards_written, "wall_s": round(wall, 3),
            "worker_wall_s": round(timed.wall_s, 3),
            "driver_rows_per_s": round(rows / drv_wall, 1),
            "driver_cpu_s_per_1000_rows": round(drv_cpu / max(rows, 1) * 1000, 4),
            "bytes_per_row_through_driver": round(timed.bytes / max(timed.rows, 1), 1)}


def build(root: Path, rows: int, shard_rows: int, audio_s: float) -> dict:
    """The three stages over `rows` captions in `root`; their measures."""
    write_captions(root / "captions", rows, shard_rows)
    out = {}
    out["dialogues"] = measure("dialogues", dialogue_stage(root / "captions"), root / "dialogues",
                               BenchReplayDialogueWorker(), DIALOGUE_SCHEMA, DIALOGUE_OPTS)
    out["speech"] = measure("speech", speech_stage(open_stage_input(root / "dialogues", ("dialogues",))),
                            root / "speech", BenchNullTtsWorker(SPEECH_SPEC, audio_s), SPEECH_SCHEMA, ROW_OPTS)
    out["tokens"] = measure("tokens", token_stage(open_stage_input(root / "speech", ("speech",))), root / "tokens",
                            BenchNullCodecWorker(TOKEN_SPEC), TOKEN_SCHEMA, ROW_OPTS)
    return out


def noop_rerun_s(root: Path) -> float:
    """A no-op rerun of the three finished stages of `root`, as the jobs do it (no worker may start)."""
    def no_workers():
        raise AssertionError("a finished stage asked for workers")

    t0 = time.perf_counter()
    s = run_stage(dialogue_stage(root / "captions"), root / "dialogues", no_workers, DIALOGUE_OPTS)
    assert s.items_run == 0 and s.shards_written == 0, s.to_dict()
    for name, src, make in (("speech", "dialogues", speech_stage), ("tokens", "speech", token_stage)):
        inp = open_stage_input(root / src, (src,))
        done = if_finished(root / name, name, lambda facts, inp=inp, make=make: make(inp), ROW_OPTS)
        assert done is not None and done.items_run == 0, f"{name}: not found finished"
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic rows through each stage")
    ap.add_argument("--shard-rows", type=int, default=10_000, help="rows per input file")
    ap.add_argument("--audio-s", type=float, default=1.0, help="seconds of audio per speech row (null TTS)")
    ap.add_argument("--noop-rows", type=int, default=20_000, help="rows of the big finished split (no-op rerun)")
    ap.add_argument("--noop-small", type=int, default=200, help="rows of the small finished split")
    ap.add_argument("--repeats", type=int, default=15, help="no-op reruns timed per split, interleaved (median)")
    ap.add_argument("--keep", type=Path, default=None, help="write here and keep (default: a temporary folder)")
    a = ap.parse_args(argv)
    tmp = None
    if a.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="ssvd-bench-driver-")
    root = a.keep or Path(tmp.name)
    try:
        stages = build(root / "run", a.rows, a.shard_rows, a.audio_s)
        for s in stages.values():
            print(f"{s['stage']:>9}: {s['rows']} rows, driver {s['driver_rows_per_s']:.0f} rows/s, "
                  f"{s['driver_cpu_s_per_1000_rows']:.3f} CPU s / 1000 rows, "
                  f"{s['bytes_per_row_through_driver']:.0f} B/row through the driver", file=sys.stderr)
        splits = {"small": (a.noop_small, root / f"noop-{a.noop_small}"), "big": (a.noop_rows, root / f"noop-{a.noop_rows}")}
        for n, split in splits.values():
            build(split, n, n, a.audio_s)  # one input file, as one split of a source
        times: dict[str, list[float]] = {"small": [], "big": []}
        for _ in range(a.repeats):  # interleaved, so that both see the same machine load
            for key, (_, split) in splits.items():
                times[key].append(noop_rerun_s(split))
        noop = {key: {"rows": splits[key][0], "rerun_s": round(statistics.median(t), 4), "min_s": round(min(t), 4)}
                for key, t in times.items()}
        noop["ratio"] = round(noop["big"]["rerun_s"] / max(noop["small"]["rerun_s"], 1e-9), 3)
        noop["ratio_min"] = round(noop["big"]["min_s"] / max(noop["small"]["min_s"], 1e-9), 3)
        print(f"no-op rerun (median of {a.repeats}): {a.noop_rows} rows {noop['big']['rerun_s']:.3f} s vs "
              f"{a.noop_small} rows {noop['small']['rerun_s']:.3f} s: ratio {noop['ratio']} (fastest: "
              f"{noop['ratio_min']}; goal <= 1.2)", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = {"rows": a.rows, "shard_rows": a.shard_rows, "audio_s": a.audio_s, "stages": stages, "noop": noop,
              "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
                          "python": platform.python_version()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
