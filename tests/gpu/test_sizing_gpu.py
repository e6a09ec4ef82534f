"""Engine sizing and the training memory check against a real GPU (skipped without one): the device's memory is
what the checks read, and Mistral-Nemo's engine fits an 80 GB GPU as docs/gpu.md computes. The measured
comparison (vLLM's own KV-cache tokens, a training step's peak memory) is bench/gpu_check.py's."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_worker_check_reads_this_gpu():
    from pipeline.dialogue.engines import EngineOptions
    from pipeline.dialogue.models import resolve_model
    from pipeline.dialogue.sizing import GIB, check_worker, device_bytes, dialogue_tokens

    total = torch.cuda.get_device_properties(0).total_memory
    assert device_bytes("cuda", 2) == total
    nemo = resolve_model("builtin:nemo-shape")
    opts = EngineOptions(device="cuda", max_model_len=dialogue_tokens())
    if total < 30 * GIB:
        pytest.skip("a GPU under 30 GiB cannot hold Mistral-Nemo's weights")
    [size] = check_worker(nemo, nemo, opts, False, "cuda")
    assert size.device_bytes == total and size.kv_bytes_per_token == 160 * 1024 and size.dialogues_at_once >= 1


def test_training_memory_check_reads_this_gpu():
    from pathlib import Path

    from trainer.config import load_train_config
    from trainer.memory import TrainMemoryError, check_before_training

    cfg = load_train_config(Path(__file__).resolve().parents[2] / "manifests/train-moshivis.yaml")
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        est = check_before_training(cfg, 8, torch.device("cuda"))
        assert est.total_bytes <= total
    except TrainMemoryError as e:
        assert "does not fit" in str(e) and torch.cuda.get_device_name(0) in str(e)
