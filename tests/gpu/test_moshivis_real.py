"""MoshiVis with the real backbone and image encoder on CUDA (docs/trainer.md, "Model"): loads Moshi
(kmhf/hf-moshiko, ~15.4 GB in bf16) and PaliGemma 2's SigLIP vision tower (google/paligemma2-3b-pt-448, a
gated repo: accept its licence and log in, or point SSVD_IMAGE_ENCODER at a local copy) by id or path, runs one
forward, checks the zero-gate equality and the adapter size (~206M, paper §3.1). Skipped without a GPU;
the real-weight tests are skipped too when the weights cannot be fetched (no hub access and no local copy).

    SSVD_MOSHI=/path/to/hf-moshiko SSVD_IMAGE_ENCODER=/path/to/paligemma2-3b-pt-448 pytest tests/gpu -m gpu
"""
from __future__ import annotations

import os

import pytest
import torch

from trainer.model import ModelConfig, build_model, tiny_batch

CUDA = torch.cuda.is_available()
MOSHI = os.environ.get("SSVD_MOSHI", "kmhf/hf-moshiko")
ENCODER = os.environ.get("SSVD_IMAGE_ENCODER", "google/paligemma2-3b-pt-448")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]


def _equal_to_backbone(model, batch):
    model.set_gates_closed(True)
    try:
        with torch.no_grad():
            out = model.outputs(batch)
            text_in, audio_in = model.speech_inputs(batch)
            n = model.num_codebooks
            with model.backbone_only() as moshi:  # transformers' own forward and layers
                ref = moshi(input_ids=text_in, moshi_audio_codes=audio_in[:, :n], user_audio_codes=audio_in[:, n:],
                            use_cache=False)
    finally:
        model.set_gates_closed(False)
    return torch.equal(out["text_logits"], ref.logits) and torch.equal(out["hidden"], ref.last_hidden_state)


def _to(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def test_tiny_on_cuda_bf16():
    cfg = ModelConfig(image_size=32, dtype="bfloat16")
    model = build_model(cfg, device="cuda")
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters())
    batch = _to(tiny_batch("speech", 2, 12, cfg, full=True), "cuda")
    assert _equal_to_backbone(model, batch)
    for autocast in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss, metrics = model.loss(batch)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.adapter_parameters())


@pytest.fixture(scope="module")
def real():
    cfg = ModelConfig(backbone=MOSHI, image_encoder=ENCODER, image_size=448, dtype="bfloat16")
    try:
        return build_model(cfg, device="cuda")
    except OSError as e:  # not downloadable here (no hub access, gated repo) and not a local path
        pytest.skip(f"real weights unavailable: {e}")


def test_real_forward_and_zero_gate_equality(real):
    n = sum(p.numel() for p in real.adapter_parameters())
    assert 200e6 < n < 215e6, n  # paper: 206M trainable parameters
    assert real.backbone.config.vocab_size == 32000 and real.backbone.config.num_codebooks == 8
    batch = _to(tiny_batch("speech", 1, 16, real.cfg, full=True), "cuda")
    assert _equal_to_backbone(real, batch)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, metrics = real.loss(batch)
        text_loss, _ = real.loss(_to(tiny_batch("text", 1, 16, real.cfg), "cuda"))
    assert torch.isfinite(loss) and torch.isfinite(text_loss) and 0 < metrics["gate_mean"] < 0.05
    loss.backward()
    assert all(p.grad is not None for p in real.adapter_parameters())
