"""trainer/memory.py: the per-GPU estimate of a training config from the model's shapes (meta device, no
weights), the shipped production config (manifests/train-moshivis.yaml) and the refusal of what cannot fit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from trainer.config import load_train_config
from trainer.memory import GIB, TrainMemoryError, check, estimate

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "manifests/train-moshivis.yaml"


def test_production_config_is_the_papers_and_fits_an_80gb_gpu_only_with_checkpointing():
    import dataclasses

    cfg = load_train_config(PROD)
    assert (cfg.data.batch_size * 8, cfg.train.steps, cfg.model.gradient_checkpointing, cfg.model.dtype) == (
        64, 50000, True, "bfloat16")
    est = estimate(cfg, 8)
    assert est.adapter_params == 206_184_448  # the paper: "~206M parameters" of adaptation modules
    assert 7.7e9 < est.backbone_params < 7.8e9 and 0.4e9 < est.encoder_params < 0.45e9  # Moshi ~7B, SigLIP ~400M
    assert est.frozen_bytes_per_param == 2 and 30 * GIB < est.total_bytes < 45 * GIB
    check(est, 80 * GIB)
    off = estimate(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gradient_checkpointing=False)), 8)
    assert off.activation_bytes > 8 * est.activation_bytes
    with pytest.raises(TrainMemoryError, match="model.gradient_checkpointing: true") as e:
        check(off, 80 * GIB, "NVIDIA H100 80GB HBM3")
    assert "NVIDIA H100 80GB HBM3" in str(e.value) and "activations" in str(e.value)


def test_tiny_config_estimate_is_small():
    est = estimate(load_train_config(REPO / "manifests/train-quickstart.yaml"), 1, "cpu")
    assert est.frozen_bytes_per_param == 4 and est.total_bytes < 3 * GIB


def test_cli_check_memory():
    runner = CliRunner()
    ok = runner.invoke(app, ["train", str(PROD), "--check-memory", "--gpu-memory-gib", "80"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.strip().splitlines()[0])["adapter_params"] == 206_184_448
    small = runner.invoke(app, ["train", str(PROD), "--check-memory", "--gpu-memory-gib", "24"])
    assert small.exit_code == 2 and "does not fit" in small.output
    assert runner.invoke(app, ["train", str(PROD)]).exit_code == 2  # no --data/--out
