"""Jobs behind `ssvd speech` and `ssvd tokens`: open the input stage, start the workers, run the stage."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.ray_pool import KeptPool, LocalPool, RayPool, init_ray
from pipeline.runner import RunOptions, Summary, finished_before, run_stage
from pipeline.runstate import RunState
from pipeline.speech_stage import SpeechStage
from pipeline.speech_worker import SpeechSpec, SpeechWorker, check_speech_spec
from pipeline.stage_input import open_stage_input
from pipeline.token_stage import TokenStage, check_kind
from pipeline.token_worker import TokenSpec, TokenWorker

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


def _pool(worker_cls, spec, args: PoolArgs):
    if args.workers == 0:
        return LocalPool(worker_cls(spec))
    init_ray(args.ray_address, verbose=args.verbose)
    # CPU-bound workers: one call at a time per actor; the driver keeps a few chunks queued per worker.
    pool = RayPool(spec, args.workers, args.gpus_per_worker, max_concurrency=1, worker_cls=worker_cls,
                   cpus_per_worker=args.cpus_per_worker)
    for info in pool.infos:
        log.info("worker ready: %s", json.dumps(info, default=str))
    return pool


def _run(stage, out: Path, pool, opts: RunOptions, kept: bool) -> Summary:
    if stage.total_hint() == 0:  # not an error: every upstream row was rejected (or none was asked for)
        log.warning("%s: 0 rows to process (no \"ok\" row in %d input shard(s)); writing empty shards",
                    stage.input.dir, len(stage.input.shards))
    try:
        summary = run_stage(stage, out, (lambda: pool) if pool is not None else _no_workers, opts)
    finally:
        if not kept and pool is not None:
            pool.shutdown()
    if stage.input.unfinished:
        log.warning("input shards still in progress upstream were left for a later run: %s", stage.input.unfinished)
    _record_input_stats(out, stage)
    return summary


def _record_input_stats(out: Path, stage) -> None:
    """Add what was not taken from the input (rows not "ok", unfinished shards) to the run record."""
    state = RunState(out, stage.name)
    rec = state.load() or {}
    rec["input"] = {
        "not_ok_rows": int(stage.input_stats.get("input_not_ok", 0)),
        "unfinished_input_shards": stage.input.unfinished,
        "input_shards": [i for i, _ in stage.input.shards],
    }
    from pipeline.runstate import write_json_atomic

    write_json_atomic(state.path, rec)


def _if_finished(out: Path, name: str, make_stage, opts: RunOptions) -> Summary | None:
    """The summary of a stage finished before in `out`, found without starting any worker (None: work left).

    The stage is rebuilt from the worker facts (TTS backends, codec, tokenizer) its run record holds,
    `make_stage(recorded config)`, and `run_stage` then only skips."""
    rec = RunState(out, name).load()
    if not rec or rec.get("state") != "complete":
        return None
    stage = make_stage(rec.get("config") or {})
    return _run(stage, out, None, opts, True) if finished_before(stage, out, opts, rec) else None


def _no_workers():
    raise AssertionError("a finished stage asked for workers")


def _get_pool(worker_cls, spec, args: PoolArgs, kept: KeptPool | None):
    if kept is None:
        return _pool(worker_cls, spec, args)
    # the split is written into each row by the stage, so one pool serves every split
    key = (worker_cls.__name__, replace(spec, split=None), args)
    return kept.get(key, lambda: _pool(worker_cls, key[1], args))


def speech(input_dir: Path, out: Path, spec: SpeechSpec, *, limit: int | None, pool_args: PoolArgs,
           opts: RunOptions, kept: KeptPool | None = None) -> Summary:
    """`kept`: reuse (and keep) its pool across calls instead of starting and stopping one."""
    check_speech_spec(spec)  # settings (kyutai cfg_coef, voices) before any dialogue is read
    inp = open_stage_input(input_dir, ("dialogues",))
    make = lambda facts: SpeechStage(inp, spec, tts=facts.get("tts"), limit=limit)  # noqa: E731
    done = _if_finished(out, "speech", make, opts)
    if done is not None:
        return done
    pool = _get_pool(SpeechWorker, spec, pool_args, kept)
    return _run(make({"tts": pool.infos[0]["backends"]}), out, pool, opts, kept is not None)


def tokens(input_dir: Path, out: Path, spec: TokenSpec, *, limit: int | None, pool_args: PoolArgs,
           opts: RunOptions, kept: KeptPool | None = None) -> Summary:
    inp = open_stage_input(input_dir, ("speech", "dialogues"))
    check_kind(spec.kind, inp.stage)  # before starting any worker
    make = lambda facts: TokenStage(inp, spec, limit=limit,  # noqa: E731
                                    workers_info={"codec": facts.get("codec"), "tokenizer": facts.get("tokenizer")})
    done = _if_finished(out, "tokens", make, opts)
    if done is not None:
        return done
    pool = _get_pool(TokenWorker, spec, pool_args, kept)
    return _run(make(pool.infos[0]), out, pool, opts, kept is not None)
