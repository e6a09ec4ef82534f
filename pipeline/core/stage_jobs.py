"""What the row-stage jobs (`ssvd speech`, `ssvd tokens`) share: the worker pool's arguments and start, running
the stage over the pool, finding a stage finished before without starting a worker, and the input stats."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.core.ray_pool import KeptPool, LocalPool, RayPool, check_gpu_workers, init_ray
from pipeline.core.runner import RunOptions, Summary, finished_before, run_stage
from pipeline.core.runstate import RunState, write_json_atomic

log = logging.getLogger("ssvd")


@dataclass
class PoolArgs:
    workers: int = 1  # 0: in-process, no Ray
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    verbose: bool = False


def pool_args(workers: int, ray_address: str | None, device: str, verbose: bool) -> PoolArgs:
    """CPU workers share this machine's cores (Ray gives each actor that many threads); GPU workers one GPU each."""
    import os

    gpu = device.startswith("cuda")
    cpus = 0.0 if gpu else float(max(1, (os.cpu_count() or 1) // max(workers, 1)))
    return PoolArgs(workers=workers, ray_address=ray_address, cpus_per_worker=cpus,
                    gpus_per_worker=1.0 if gpu and workers else 0.0, verbose=verbose)


def start_pool(worker_cls, spec, args: PoolArgs):
    if args.workers == 0:
        return LocalPool(worker_cls(spec))
    init_ray(args.ray_address, verbose=args.verbose)
    import ray

    check_gpu_workers(getattr(worker_cls, "__name__", "stage"), args.workers, args.gpus_per_worker,
                      ray.cluster_resources().get("GPU", 0))
    # CPU-bound workers: one call at a time per actor; the driver keeps a few chunks queued per worker.
    pool = RayPool(spec, args.workers, args.gpus_per_worker, max_concurrency=1, worker_cls=worker_cls,
                   cpus_per_worker=args.cpus_per_worker)
    for info in pool.infos:
        log.info("worker ready: %s", json.dumps(info, default=str))
    return pool


def run_row_stage(stage, out: Path, pool, opts: RunOptions, kept: bool, startup_s: float = 0.0) -> Summary:
    """`pool` None: the stage finished before (`if_finished`), nothing is read but its run record. `startup_s`:
    the seconds spent starting `pool` (TTS or codec loading) before this call, counted in the run's `startup_s`
    and `elapsed_s` as the dialogue stage's engine start is (so `ssvd estimate` counts it)."""
    if pool is not None and stage.total_hint() == 0:  # not an error: every upstream row was rejected
        log.warning("%s: 0 rows to process (no \"ok\" row in %d input shard(s)); writing empty shards",
                    stage.input.dir, len(stage.input.shards))
    try:
        summary = run_stage(stage, out, (lambda: pool) if pool is not None else no_workers, opts, startup_s=startup_s)
    finally:
        if not kept and pool is not None:
            pool.shutdown()
    if stage.input.unfinished:
        log.warning("input shards still in progress upstream were left for a later run: %s", stage.input.unfinished)
    if not summary.noop:  # a no-op read no input row: the recorded input stats stand
        record_input_stats(out, stage)
    return summary


def record_input_stats(out: Path, stage) -> None:
    """Add what was not taken from the input (rows not "ok", unfinished shards) to the run record."""
    state = RunState(out, stage.name)
    rec = state.load() or {}
    rec["input"] = {
        "not_ok_rows": int(stage.input_stats.get("input_not_ok", 0)),
        "unfinished_input_shards": stage.input.unfinished,
        "input_shards": [i for i, _ in stage.input.shards],
    }
    write_json_atomic(state.path, rec)


def if_finished(out: Path, name: str, make_stage, opts: RunOptions) -> Summary | None:
    """The summary of a stage finished before in `out`, found without starting any worker (None: work left).

    The stage is rebuilt from the worker facts (TTS backends, codec, tokenizer) its run record holds,
    `make_stage(recorded config)`, and `run_stage` then only skips."""
    rec = RunState(out, name).load()
    if not rec or rec.get("state") != "complete":
        return None
    stage = make_stage(rec.get("config") or {})
    return run_row_stage(stage, out, None, opts, True) if finished_before(stage, out, opts, rec) else None


def no_workers():
    raise AssertionError("a finished stage asked for workers")


def get_pool(worker_cls, spec, args: PoolArgs, kept: KeptPool | None):
    """(pool, seconds spent starting it): 0 s for a kept pool started by an earlier split."""
    t = time.monotonic()
    if kept is None:
        pool = start_pool(worker_cls, spec, args)
    else:
        # the split is written into each row by the stage, so one pool serves every split (of one spec:
        # a token pool per kind, since a speech worker loads the codec and a text worker does not)
        key = (worker_cls.__name__, replace(spec, split=None), args)
        pool = kept.get(key, lambda: start_pool(worker_cls, key[1], args))
    return pool, time.monotonic() - t
