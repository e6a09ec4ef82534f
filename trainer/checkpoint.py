"""Checkpoints that hold only the adapters (+ optimizer, schedule, loader position, RNG, step).

    RUN_DIR/checkpoints/step-000050/adapters.safetensors   adapter weights only
    RUN_DIR/checkpoints/step-000050/state.pt               optimizer, scheduler, loader, rng, step
    RUN_DIR/checkpoints/latest                             name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed when complete; `latest` is replaced
atomically afterwards, so a run killed at any moment resumes from the last complete one.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def ckpt_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, step: int, adapters: dict[str, torch.Tensor], state: dict[str, Any], keep: int) -> Path:
    root = ckpt_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in adapters.items()}, str(tmp / "adapters.safetensors"))
    state = dict(state, step=step, rng={"python": random.getstate(), "numpy": np.random.get_state(),
                                        "torch": torch.get_rng_state()})
    torch.save(state, tmp / "state.pt")
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / "latest.tmp"
    latest_tmp.write_text(name)
    os.replace(latest_tmp, root / "latest")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep or None]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    p = ckpt_root(run_dir) / "latest"
    if not p.is_file():
        return None
    d = ckpt_root(run_dir) / p.read_text().strip()
    return d if (d / "state.pt").is_file() else None


def load(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    adapters = load_file(str(ckpt / "adapters.safetensors"))
    state = torch.load(ckpt / "state.pt", weights_only=False)
    rng = state.get("rng") or {}
    if rng:
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
    return adapters, state
