"""Jobs behind the CLI: wire a caption source, models, a Ray worker pool and the stage runner."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.sources.caption_rows import CaptionOptions
from pipeline.sources.captions import open_source
from pipeline.dialogue.stage import DialogueStage
from pipeline.dialogue.protocol import DialogueConfig
from pipeline.dialogue.engine_api import EngineOptions, EngineRefused
from pipeline.dialogue.models import ResolvedModel, resolve_model
from pipeline.dialogue.sizing import context_length
from pipeline.core.ray_pool import KeptPool, check_gpu_workers
from pipeline.core.runner import RunOptions, Summary, run_stage
from pipeline.core.runstate import ConfigMismatch, RunState

log = logging.getLogger("ssvd")


@dataclass
class EngineArgs:
    """Which models, on which engine, on how many workers."""

    user_model: str
    assistant_model: str
    separate_engines: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    workers: int = 1
    ray_address: str | None = None
    gpus_per_worker: float | None = None  # None: 1 per worker when the cluster has GPUs
    verbose: bool = False


def _provenance(m: ResolvedModel) -> dict:
    return {"name": m.name, "path": m.path, "fingerprint": m.fingerprint, "quality": m.quality,
            "repetition_penalty": m.repetition_penalty,
            "tokenizer_mode": m.tokenizer_mode}


def _resolve(args: EngineArgs) -> tuple[ResolvedModel, ResolvedModel]:
    check = args.engine.kind == "vllm"
    user = resolve_model(args.user_model, check_hub=check)
    assistant = user if args.assistant_model == args.user_model else resolve_model(args.assistant_model, check_hub=check)
    return user, assistant


def _served(args: EngineArgs, user: ResolvedModel, assistant: ResolvedModel, out: Path, name: str,
            opts: RunOptions) -> dict[str, dict]:
    """openai engine: what the server serves for each role's model (pipeline/dialogue/openai_engine.py:
    `check_server`), asked once here before anything starts: an unreachable server, a refused key or a model
    it does not list stop the run before any row. (Not in each worker: one request instead of one per worker,
    and the answer must be in the run's config before the run record is begun.) A run that finished here
    with these models and has nothing to redo is not asked again: `ssvd run` goes on to speech with the
    server gone."""
    if args.engine.kind != "openai":
        return {}
    old = RunState(out, name).load() or {}
    was = (old.get("config") or {}).get("models") or {}
    if (old.get("state") == "complete" and not (opts.overwrite or opts.retry_failed)
            and all((was.get(r) or {}).get("path") == m.path and (was.get(r) or {}).get("served")
                    for r, m in (("user", user), ("assistant", assistant)))):
        return {"user": was["user"]["served"], "assistant": was["assistant"]["served"]}
    from pipeline.dialogue.openai_engine import check_server

    served = check_server(args.engine, sorted({user.path, assistant.path}))
    return {"user": served[user.path], "assistant": served[assistant.path]}


def _check_same_server_model(out: Path, name: str, models: dict, url: str, opts: RunOptions) -> None:
    """A resume must be served the model the run began with (another URL serving it is fine)."""
    old = RunState(out, name).load()
    if not old or opts.overwrite:
        return
    for role in ("user", "assistant"):
        was = ((old.get("config") or {}).get("models") or {}).get(role, {}).get("served")
        now = models[role].get("served")
        if was and now and was != now:
            raise ConfigMismatch(
                f"{out} holds a {name} run whose {role} role was served {was['root']!r} as {was['id']!r} "
                f"(context {was.get('max_model_len')}); the server at {url} now serves {now['root']!r} as "
                f"{now['id']!r} (context {now.get('max_model_len')}). Resume against a server that serves "
                f"{was['root']!r}, pick another --out, or pass --overwrite to discard the earlier run.")


def _note_server(out: Path, name: str, url: str) -> None:
    """The server this run used, per run (a deployment detail like --ray-address: not part of the config)."""
    state = RunState(out, name)
    rec = state.load()
    if rec and rec.get("config"):
        urls = list(rec.get("openai_base_urls") or [])
        state.note(openai_base_url=url, openai_base_urls=urls + [url] * (url not in urls))


def _pool_factory(args: EngineArgs, user: ResolvedModel, assistant: ResolvedModel, dcfg: DialogueConfig):
    def make():
        import ray

        from pipeline.core.ray_pool import RayPool, init_ray
        from pipeline.dialogue.worker import DialogueWorker, WorkerSpec

        init_ray(args.ray_address, verbose=args.verbose)
        gpus = args.gpus_per_worker
        if gpus is None:  # a worker's engine(s) take tensor_parallel_size GPUs (vLLM splits the model over them)
            on_gpu = ray.cluster_resources().get("GPU", 0) > 0 and args.engine.kind == "vllm"
            gpus = float(args.engine.tensor_parallel_size) if on_gpu else 0.0
        check_gpu_workers("dialogue", args.workers, gpus, ray.cluster_resources().get("GPU", 0))
        spec = WorkerSpec(user, assistant, engine_options(args, user, assistant, dcfg), dcfg, args.separate_engines)
        pool = RayPool(spec, args.workers, gpus_per_worker=gpus, worker_cls=DialogueWorker)
        for info in pool.infos:
            log.info("worker ready: %s", json.dumps(info))
        return pool

    return make


def engine_options(args: EngineArgs, user: ResolvedModel, assistant: ResolvedModel, dcfg: DialogueConfig) -> EngineOptions:
    """The engine options with max_model_len decided: the one asked for, else one full dialogue's context
    (pipeline.dialogue.sizing.context_length)."""
    return replace(args.engine, max_model_len=context_length(args.engine, (user, assistant), dcfg.max_pairs,
                                                             dcfg.max_new_tokens))


def run_dialogue_job(
    stage_kwargs: dict, args: EngineArgs, dcfg: DialogueConfig, out: Path, opts: RunOptions,
    kept: KeptPool | None = None,
) -> tuple[Summary, DialogueStage]:
    """`kept`: reuse (and keep) its pool when the models and dialogue settings are the same."""
    user, assistant = _resolve(args)
    served = _served(args, user, assistant, out, "dialogues", opts)
    models = {role: {**_provenance(m), **({"served": served[role]} if served else {})}
              for role, m in (("user", user), ("assistant", assistant))}
    models["engine"] = args.engine.kind
    stage = DialogueStage(dialogue=dcfg, models=models, **stage_kwargs)
    url = ""
    if served:
        from pipeline.dialogue.openai_engine import shown_url

        url = shown_url(args.engine.openai_base_url)
        _check_same_server_model(out, stage.name, models, url, opts)
    holder: dict = {}
    make = _pool_factory(args, user, assistant, dcfg)

    def factory():
        if kept is not None:
            holder["used"] = kept.get(("dialogues", args, user, assistant, dcfg), make)
            return holder["used"]
        holder["pool"] = holder["used"] = make()
        return holder["pool"]

    try:
        try:
            summary = run_stage(stage, out, factory, opts)
        except EngineRefused as e:  # raised in a worker: Ray's error holds the traceback; the message is the point
            raise EngineRefused(f"{getattr(e, 'cause', None) or e} The run stopped; every dialogue finished so far "
                                f"is kept.") from None
        finally:
            if url:
                _note_server(out, stage.name, url)
        pool = holder.get("used")
        if pool is not None:  # what the engines ran on (device, batch-invariant mode, cores), and lost workers
            RunState(out, stage.name).note(engines=pool.infos, worker_restarts=getattr(pool, "restarts", 0),
                                           items_resent=getattr(pool, "resent", 0))
    finally:
        if "pool" in holder:
            holder["pool"].shutdown()
    return summary, stage


def dialogues(source: str, instruction: str, input: str, out: Path, *, limit: int | None, replicas: int,
              seed: int, args: EngineArgs, dcfg: DialogueConfig, opts: RunOptions,
              kept: KeptPool | None = None, caption_options: CaptionOptions | None = None) -> Summary:
    src = open_source(source, input, caption_options or CaptionOptions())
    stage_kwargs = dict(source=src, instruction=instruction, run_seed=seed, replicas=replicas, limit=limit)
    return run_dialogue_job(stage_kwargs, args, dcfg, out, opts, kept)[0]


def generic(out: Path, *, count: int, topics: list[str] | None, seed: int, args: EngineArgs,
            dcfg: DialogueConfig, opts: RunOptions, kept: KeptPool | None = None) -> Summary:
    stage_kwargs = dict(source=None, instruction="GENERIC", run_seed=seed, replicas=1, limit=None,
                        topics=topics, count=count)
    return run_dialogue_job(stage_kwargs, args, dcfg, out, opts, kept)[0]
