"""Options and helpers the `ssvd` commands share (cli.py registers the commands).

An option used by several commands is one Annotated type here; a block of options several commands
take in the same order is one tuple of parameters, added to a command's signature by `with_options`
(typer reads `__signature__`), so its help text and default are written once.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

PRODUCTION_MODEL = "mistralai/Mistral-Nemo-Instruct-2407"

Model = Annotated[str, typer.Option("--model", help="Model of both roles: a hub id, a local folder, or builtin:smollm2 / builtin:tiny-mistral / builtin:nemo-shape (offline; the last is 12B random weights for GPU benchmarks).")]
UserModel = Annotated[Optional[str], typer.Option("--user-model", help="Model of the questioning user role (default: --model).")]
AssistantModel = Annotated[Optional[str], typer.Option("--assistant-model", help="Model of the answering assistant role (default: --model).")]
Separate = Annotated[bool, typer.Option("--separate-engines", help="Give each role its own engine even when the models are equal.")]
EngineKind = Annotated[str, typer.Option("--engine", help="vllm (in-process AsyncLLM per worker) or openai (an OpenAI-compatible server).")]
BaseUrl = Annotated[str, typer.Option("--openai-base-url", help="Server of --engine openai (its API root, ending in /v1); the key is read from $OPENAI_API_KEY. Asked for its models before the run starts; recorded per run, not part of the config (another server serving the same model may resume the run).")]
OpenAITimeout = Annotated[float, typer.Option("--openai-timeout-s", min=0.1, help="--engine openai: longest wait for one answer; a request without one is retried (docs/openai.md).")]
OpenAIRetry = Annotated[float, typer.Option("--openai-retry-s", min=0.0, help="--engine openai: total time one request may spend retrying transient faults (connection lost, timeout, 408/409/425/429/5xx, a malformed answer), with exponential backoff and Retry-After; then its dialogue is recorded failed (--retry-failed runs it again). The default rides out a server restart.")]
OpenAIConcurrency = Annotated[int, typer.Option("--openai-max-concurrency", min=1, help="--engine openai: requests in flight per worker (per engine).")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Ray dialogue workers (one engine each).")]
Inflight = Annotated[int, typer.Option("--max-inflight", min=1, help="Dialogues in flight per worker.")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Join an existing Ray cluster (default: start a local one).")]
Seed = Annotated[int, typer.Option("--seed", help="Run seed: every dialogue's randomness derives from it.")]
Out = Annotated[Path, typer.Option("--out", help="Output directory (shards, run record).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Discard what --out holds and start over.")]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="Run again the dialogues recorded as failed.")]
MinPairs = Annotated[int, typer.Option("--min-pairs", min=1, help="Fewest question/answer pairs a dialogue plans (paper: 8).")]
MaxPairs = Annotated[int, typer.Option("--max-pairs", min=1, help="Most question/answer pairs a dialogue plans (paper: 16).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Token limit of one message (the released generator's 150); see --on-length.")]
OnLength = Annotated[str, typer.Option("--on-length", help="A message cut by --max-new-tokens: 'trim' it to its last full sentence (default; Kyutai's released generator keeps such messages as cut) or 'reject' it (redrawn, see --redraws).")]
RepPenalty = Annotated[Optional[float], typer.Option("--repetition-penalty", min=0.01, help="vLLM repetition penalty for every message (1.0: none). Default: the model's own, 1.0 (plain sampling, as Kyutai's released generator) for every model but builtin:smollm2 (1.1: without it the 135M model loops and copies earlier turns). Recorded in the run's config.")]
Redraws = Annotated[int, typer.Option("--redraws", min=0, help="A message a filter rejects (empty, repeated, caption leak, over the token limit) is sampled again with a new seed up to N times; each redraw is listed in the row's note. 0: the first bad message ends the dialogue.")]
Temperature = Annotated[float, typer.Option("--temperature", help="Sampling temperature.")]
MaxLen = Annotated[int, typer.Option("--max-model-len", min=0, help="Engine context length (0: one full dialogue's, from --max-pairs and --max-new-tokens; docs/gpu.md).")]
GpuMemory = Annotated[Optional[float], typer.Option("--gpu-memory-utilization", min=0.01, max=1.0, help="Fraction of each GPU's memory for its engines, shared by the engines on it (two models or --separate-engines: half each). Default 0.9 (ssvd run: the manifest's).")]
TensorParallel = Annotated[Optional[int], typer.Option("--tensor-parallel-size", min=1, help="GPUs per engine (a worker takes that many). Default 1 (ssvd run: the manifest's).")]
MaxSeqs = Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, help="Sequences an engine batches at once. Default: vLLM's (ssvd run: the manifest's).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show engine and Ray logs.")]
StageIn = Annotated[Path, typer.Option("--in", help="Output directory of the previous stage.")]
StageWorkers = Annotated[int, typer.Option("--workers", min=0, help="Ray workers (one CPU each); 0 runs in-process without Ray.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N accepted input rows.")]
Split = Annotated[Optional[str], typer.Option("--split", help="Split name written in every row (default: SOURCE-INSTRUCTION, e.g. pixmo-comb).")]
CorpusDir = Annotated[Path, typer.Argument(help="A corpus directory made by `ssvd run`.")]


def _block(**options: tuple) -> tuple[inspect.Parameter, ...]:
    """name=(Annotated type, default), in --help order."""
    return tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
                 for name, (kind, default) in options.items())


# The options of the two dialogue commands (dialogues, generic): the run seed, both roles' engines and the
# dialogue length, listed after the command's own input options ...
DIALOGUE_ENGINE_OPTIONS = _block(
    seed=(Seed, 0), model=(Model, PRODUCTION_MODEL), user_model=(UserModel, None),
    assistant_model=(AssistantModel, None), separate_engines=(Separate, False), engine=(EngineKind, "vllm"),
    openai_base_url=(BaseUrl, "http://127.0.0.1:8000/v1"), openai_timeout_s=(OpenAITimeout, 300.0),
    openai_retry_s=(OpenAIRetry, 600.0), openai_max_concurrency=(OpenAIConcurrency, 64), workers=(Workers, 1), max_inflight=(Inflight, 256),
    ray_address=(RayAddress, None), min_pairs=(MinPairs, 8), max_pairs=(MaxPairs, 16))
# ... then the sampling of each message and the engine's context and device, after the command's other options.
DIALOGUE_SAMPLING_OPTIONS = _block(
    temperature=(Temperature, 0.7), max_new_tokens=(MaxNew, 150), on_length=(OnLength, "trim"), redraws=(Redraws, 3),
    repetition_penalty=(RepPenalty, None), max_model_len=(MaxLen, 0), gpu_memory_utilization=(GpuMemory, None),
    tensor_parallel_size=(TensorParallel, None), max_num_seqs=(MaxSeqs, None), device=(Device, "auto"))
# The last options of every stage command (dialogues, generic, speech, tokens).
RUN_OPTIONS = _block(overwrite=(Overwrite, False), retry_failed=(RetryFailed, False), no_progress=(NoProgress, False),
                     verbose=(Verbose, False))


def with_options(block: tuple[inspect.Parameter, ...], after: str | None = None):
    """Add `block` to a command's options after its option `after` (default: at the end). The command takes
    them as keyword arguments (`**opts`); `inspect.signature` and typer see them as its own parameters."""

    def add(command):
        sig = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        names = [p.name for p in own]
        at = len(own) if after is None else names.index(after) + 1
        command.__signature__ = sig.replace(parameters=own[:at] + list(block) + own[at:])
        return command

    return add


def refuse_urls(app: typer.Typer) -> None:
    """Every path option and argument (annotated `Path`) of every command of `app` and its sub-apps refuses a
    URL before the command runs (pipeline/core/locations.py): `--out s3://bucket/x` is an error naming --out,
    not a local folder named `s3:`."""
    import typing

    from typer.models import ParameterInfo

    for info in app.registered_commands:
        # kept as the command's signature: typer reads `__signature__`, while evaluating the annotations again
        # (`from __future__ import annotations`) would make new option objects without the callback
        sig = info.callback.__signature__ = inspect.signature(info.callback, eval_str=True)
        for p in sig.parameters.values():
            if typing.get_origin(p.annotation) is not Annotated:
                continue
            base, *meta = typing.get_args(p.annotation)
            if base is Path or Path in typing.get_args(base):
                for m in meta:
                    if isinstance(m, ParameterInfo) and m.callback is not _no_url:
                        if m.callback is not None:
                            raise TypeError(f"{info.callback.__name__}: option {p.name} has its own callback")
                        m.callback = _no_url
    for group in app.registered_groups:
        refuse_urls(group.typer_instance)


def _no_url(ctx: typer.Context, param: typer.CallbackParam, value):
    from pipeline.core.locations import UnsupportedLocation, refuse_url

    for v in value if isinstance(value, (list, tuple)) else [value]:
        try:
            refuse_url(v, param.opts[0] if param.param_type_name == "option" else (param.metavar or param.name).upper())
        except UnsupportedLocation as e:
            fail(e)
    return value


def default_env() -> None:
    """Quiet, CPU-friendly defaults that a user can override from the environment."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def setup(verbose: bool) -> None:
    default_env()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(2)


def finish(summary, out: Path) -> None:
    d = summary.to_dict()
    typer.echo(json.dumps(d, sort_keys=True))
    typer.echo(f"wrote {summary.shards_written} shard(s), skipped {summary.shards_skipped} complete; "
               f"ok={d['status'].get('ok', 0)} rejected={d['status'].get('rejected', 0)} "
               f"failed={d['status'].get('failed', 0)} -> {out}", err=True)


def run_options(opts: dict, max_inflight: int, chunk_size: int = 8, flush_rows: int = 64):
    """RunOptions from RUN_OPTIONS' values; tuning from the environment: SSVD_CHUNK_SIZE (items per worker
    call), SSVD_FLUSH_ROWS (rows per part file)."""
    import os

    from pipeline.core.runner import RunOptions

    return RunOptions(overwrite=opts["overwrite"], retry_failed=opts["retry_failed"], max_inflight=max_inflight,
                      progress=not opts["no_progress"], chunk_size=int(os.environ.get("SSVD_CHUNK_SIZE", chunk_size)),
                      flush_rows=int(os.environ.get("SSVD_FLUSH_ROWS", flush_rows)))
