"""`ssvd train` and `ssvd export-adapters`: the commands' options and bodies (registered in cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.core.cli_options import NoProgress, fail, setup


def train(
    config: Annotated[Path, typer.Argument(help="Training config YAML: model, data and train sections (manifests/train-quickstart.yaml runs on CPU).")],
    data: Annotated[Optional[Path], typer.Option("--data", help="A corpus directory made by `ssvd run` (reads DIR/<split>/tokens, weights from manifest.json).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory: metrics.jsonl, config.json, checkpoints/ (adapters only + optimizer and loader state).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out (same config); with none there, start fresh.")] = False,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", min=1, help="Stop after this many steps in total, with a checkpoint (the schedule stays that of train.steps); --resume continues.")] = None,
    check_memory: Annotated[bool, typer.Option("--check-memory", help="Only print the memory estimate per GPU (from the model's shapes) and check it against --gpu-memory-gib or this machine's GPU; exit 2 if it does not fit. Needs no --data.")] = False,
    gpu_memory_gib: Annotated[Optional[float], typer.Option("--gpu-memory-gib", min=1.0, help="With --check-memory: the GPU to check against (default: this machine's GPU; none: print only).")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Train the MoshiVis adapters (gated cross-attention on a frozen Moshi and SigLIP) on a corpus. Multi-GPU: torchrun --nproc-per-node N -m cli train ... Before the first step it prints the memory estimate per GPU and refuses a config that cannot fit (docs/gpu.md)."""
    from trainer.config import TrainConfigError, load_train_config
    from trainer.loop import train as run_training
    from trainer.memory import TrainMemoryError

    setup(False)
    if check_memory:
        try:
            _check_memory(load_train_config(config), gpu_memory_gib)
        except (TrainConfigError, TrainMemoryError, ValueError, FileNotFoundError) as e:
            fail(e)
        return
    if data is None or out is None:
        fail(ValueError("ssvd train needs --data CORPUS and --out RUN (or --check-memory)"))
    try:
        cfg = load_train_config(config)
        summary = run_training(cfg, data, out, resume=resume, progress=not no_progress, stop_after=stop_after)
    except (TrainConfigError, ValueError, FileNotFoundError) as e:
        fail(e)
    if summary["rank"] == 0:  # under torchrun: one summary (rank 0's losses), not one per process
        typer.echo(json.dumps(summary, default=str))


def _check_memory(cfg, gpu_memory_gib: float | None) -> None:
    import torch

    from trainer.memory import GIB, check, estimate

    est = estimate(cfg, 1, "cuda")  # the frozen parts as they would be on a GPU (bf16 under dtype auto)
    typer.echo(json.dumps(est.to_dict()))
    typer.echo(est.line(), err=True)
    if gpu_memory_gib is not None:
        check(est, int(gpu_memory_gib * GIB), f"GPU of {gpu_memory_gib:g} GiB")
    elif torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        check(est, int(props.total_memory), props.name)
    else:
        typer.echo("not checked: no GPU here (give --gpu-memory-gib)", err=True)


def export_adapters(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `ssvd train` (its newest checkpoint is exported).")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (bf16, the full bundle), named *_pt.safetensors: the name Kyutai's server loads (docs/trainer.md).")],
    fmt: Annotated[str, typer.Option("--format", help="kyuteye: the layout Kyutai's PyTorch MoshiVis loads.")] = "kyuteye",
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="The Moshi the adapters go with: a transformers id/path (default: the run's model.backbone) or Kyutai's moshi model.safetensors.")] = None,
) -> None:
    """Export trained adapters with their backbone and SigLIP as one checkpoint Kyutai's MoshiVis loads (docs/trainer.md)."""
    from trainer.export_kyuteye import export_adapters as run_export

    setup(False)
    try:
        typer.echo(json.dumps(run_export(run_dir, out, backbone=backbone, fmt=fmt), default=str))
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(e)
