"""Checkpoints that hold only the adapters (+ optimizer, schedule, loader position, RNG, step), read without pickle.

    RUN_DIR/checkpoints/step-000050/adapters.safetensors   adapter weights only; metadata `ssvd_adapters_format`
                                                           (trainer.adapters.ADAPTERS_FORMAT: what they compute)
    RUN_DIR/checkpoints/step-000050/state.pt               optimizer, scheduler, RNG states, step: tensors,
                                                           numbers, strings, lists and dicts only, so
                                                           torch.load(weights_only=True) reads it
    RUN_DIR/checkpoints/step-000050/run.json               loader position of every rank, world size, the
                                                           corpus manifest hash, the config hash (JSON)
    RUN_DIR/checkpoints/latest                             name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed when complete; `latest` is replaced
atomically afterwards, so a run killed at any moment resumes from the last complete one. Nothing in a
checkpoint is unpickled: `state.pt` is read with `weights_only=True`, the rest is safetensors and JSON.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trainer.adapters import ADAPTERS_FORMAT

FORMAT_KEY = "ssvd_adapters_format"


def ckpt_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors, numbers and lists (weights_only-loadable)."""
    py = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "torch": torch.get_rng_state()}


def set_rng_state(rng: dict[str, Any]) -> None:
    py = rng["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(rng["torch"])


def save(run_dir: Path, step: int, adapters: dict[str, torch.Tensor], state: dict[str, Any], keep: int,
         run: dict[str, Any] | None = None) -> Path:
    """`state`: optimizer / scheduler state dicts (tensors and plain values); `run`: JSON-serialisable
    (loader positions, world size, hashes)."""
    root = ckpt_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in adapters.items()}, str(tmp / "adapters.safetensors"),
              metadata={FORMAT_KEY: str(ADAPTERS_FORMAT)})
    torch.save(dict(state, step=step, rng=rng_state()), tmp / "state.pt")
    (tmp / "run.json").write_text(json.dumps(dict(run or {}, step=step), indent=1, sort_keys=True))
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


def read_adapters(ckpt: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's adapter weights, refused unless they are of this version's format (`ADAPTERS_FORMAT`)."""
    path = Path(ckpt) / "adapters.safetensors"
    with safe_open(str(path), "pt") as f:
        fmt = (f.metadata() or {}).get(FORMAT_KEY, "1")
    if fmt != str(ADAPTERS_FORMAT):
        if fmt == "1":
            raise ValueError(
                f"{path}: adapters of format 1 (written before issue 27, no '{FORMAT_KEY}' mark): their per-layer "
                "norms (norms.{l}, the release's norm_cross) were trained as a variance-based RMSNorm, while "
                "Kyutai's MoshiVis and this version run a mean-square one (eps 1e-8, float32); the two differ by "
                "each token's mean, which no change of weights absorbs, so these adapters can be neither resumed "
                "nor exported: train a new run (another --out)")
        raise ValueError(f"{path}: adapters of format {fmt!r}, this version reads format {ADAPTERS_FORMAT} only: "
                         "use the ssvd version that wrote them, or train a new run")
    return load_file(str(path))


def read(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(adapters, state, run) of a checkpoint, without unpickling anything and without touching the RNGs."""
    adapters = read_adapters(ckpt)
    try:
        state = torch.load(ckpt / "state.pt", weights_only=True, map_location="cpu")
    except Exception as e:  # an old checkpoint (pickled numpy state) or a foreign file: never unpickled
        raise ValueError(f"{ckpt / 'state.pt'}: not loadable with weights_only=True ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]}); checkpoints of older versions cannot be resumed: "
                         "start a new run") from None
    run_p = ckpt / "run.json"
    run = json.loads(run_p.read_text()) if run_p.is_file() else {}
    return adapters, state, run


def load(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """`read` and restore the RNG states saved with it."""
    adapters, state, run = read(ckpt)
    if state.get("rng"):
        set_rng_state(state["rng"])
    return adapters, state, run
