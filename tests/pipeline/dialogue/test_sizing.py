"""pipeline.dialogue.sizing: engines sized from the model's own config.json, refused with numbers when one full
dialogue does not fit; the vLLM arguments ssvd passes (checked against the installed vLLM's EngineArgs); a worker
whose constructor refuses is reported once, never restarted. No vLLM engine starts here."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.dialogue import builtin_models as bm
from pipeline.dialogue.engines import EngineOptions, VllmEngine
from pipeline.dialogue.models import ResolvedModel
from pipeline.dialogue.sizing import (GIB, EngineSizeError, ModelShape, check_worker, context_length, dialogue_tokens,
                                      size_engine, size_model)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "configs"
NEMO = json.loads((FIXTURES / "mistral-nemo-instruct-2407.config.json").read_text())


def _hub(name="mistralai/Mistral-Nemo-Instruct-2407@0e6d9e8", max_len=0) -> ResolvedModel:
    repo, _, rev = name.partition("@")
    return ResolvedModel(name=name, path=repo, tokenizer_mode="mistral", builtin=False, quality="production",
                         fingerprint=name, max_model_len=max_len, revision=rev or None)


def test_fixture_is_nemo_shape():
    assert {k: NEMO[k] for k in bm.NEMO_SHAPE} == bm.NEMO_SHAPE


def test_nemo_kv_bytes_weights_and_default_context():
    shape = ModelShape.from_config(NEMO)
    assert shape.kv_bytes_per_token() == 40 * 2 * 8 * 128 * 2 == 160 * 1024
    assert shape.kv_bytes_per_token(tensor_parallel=2) == 80 * 1024
    assert 12.2e9 < shape.parameters() < 12.3e9  # Mistral-Nemo is "12B"
    # the paper's dialogues: 16 pairs x 2 roles x (150 + 4) + 1024 -> 6144; a shorter dialogue needs less
    assert dialogue_tokens(16, 150) == 6144 and dialogue_tokens(3, 80) == 1536
    # the failure: vLLM's default context (1,024,000) needs ~156 GiB of KV cache for one sequence
    assert shape.max_position * shape.kv_bytes_per_token() / GIB == pytest.approx(156.25)


def test_head_dim_from_hidden_and_heads():
    cfg = {k: v for k, v in NEMO.items() if k != "head_dim"}
    assert ModelShape.from_config(cfg).head_dim == 5120 // 32
    with pytest.raises(EngineSizeError, match="num_hidden_layers|hidden_size"):
        ModelShape.from_config({"num_hidden_layers": 2})


def test_h100_fits_many_dialogues_and_two_engines_share_the_gpu():
    shape = ModelShape.from_config(NEMO)
    one = size_engine("nemo", shape, device="cuda", device_bytes=80 * GIB, gpu_memory_utilization=0.9,
                      engines_per_gpu=1, tensor_parallel=1, max_model_len=6144).check()
    two = size_engine("nemo", shape, device="cuda", device_bytes=80 * GIB, gpu_memory_utilization=0.9,
                      engines_per_gpu=2, tensor_parallel=1, max_model_len=6144).check()
    assert one.dialogues_at_once == 50 and two.utilization == 0.45
    assert two.kv_tokens == (int(80 * GIB * 0.45) - two.weight_bytes - 2 * GIB) // (160 * 1024)
    assert 0 < two.dialogues_at_once < one.dialogues_at_once


def test_too_small_gpu_is_refused_with_numbers_and_fix():
    shape = ModelShape.from_config(NEMO)
    with pytest.raises(EngineSizeError) as e:
        size_engine("nemo", shape, device="cuda", device_bytes=40 * GIB, gpu_memory_utilization=0.9,
                    engines_per_gpu=2, tensor_parallel=1, max_model_len=6144).check()
    msg = str(e.value)
    assert "max_model_len 6144" in msg and "160 KiB per token" in msg and "shared by 2 engines" in msg
    assert "Fix:" in msg and "--tensor-parallel-size" in msg
    # the same GPU with the model split over two of them fits
    assert size_engine("nemo", shape, device="cuda", device_bytes=40 * GIB, gpu_memory_utilization=0.9,
                       engines_per_gpu=1, tensor_parallel=2, max_model_len=6144).check().dialogues_at_once > 10
    with pytest.raises(EngineSizeError, match="max_position_embeddings"):
        size_engine("nemo", shape, device="cuda", device_bytes=80 * GIB, gpu_memory_utilization=0.9,
                    engines_per_gpu=1, tensor_parallel=1, max_model_len=2_000_000)


def test_engine_kwargs_are_vllm_fields_with_revision_and_sizing():
    from vllm.engine.arg_utils import AsyncEngineArgs

    opts = EngineOptions(device="cuda", max_model_len=6144, gpu_memory_utilization=0.45, tensor_parallel_size=2,
                         max_num_seqs=128)
    kwargs, device = VllmEngine.engine_kwargs(_hub(), opts)
    assert device == "cuda"
    assert set(kwargs) <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert kwargs["revision"] == "0e6d9e8" and kwargs["model"] == "mistralai/Mistral-Nemo-Instruct-2407"
    assert (kwargs["max_model_len"], kwargs["gpu_memory_utilization"], kwargs["tensor_parallel_size"],
            kwargs["max_num_seqs"]) == (6144, 0.45, 2, 128)
    cpu_kwargs, _ = VllmEngine.engine_kwargs(_hub("mistralai/Mistral-Nemo-Instruct-2407"), EngineOptions(device="cpu"))
    assert "revision" not in cpu_kwargs and "gpu_memory_utilization" not in cpu_kwargs
    assert set(cpu_kwargs) <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def test_context_length_defaults_to_one_dialogue():
    assert context_length(EngineOptions(), (_hub(),), 16, 150) == 6144
    assert context_length(EngineOptions(max_model_len=4096), (_hub(),), 16, 150) == 4096
    assert context_length(EngineOptions(), (_hub(max_len=8192),), 16, 150) == 8192  # builtins keep theirs


def test_worker_check_on_cpu_reads_the_built_model(tiny_mistral, monkeypatch):
    opts = EngineOptions(device="cpu", max_model_len=8192)
    [size] = check_worker(tiny_mistral, tiny_mistral, opts, False, "cpu")
    assert size.kv_bytes_per_token == 2 * 2 * 2 * 32 * 2  # 2 layers, 2 KV heads of 32, bf16
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "0.001")  # 1 MiB: 2048 tokens < 8192
    with pytest.raises(EngineSizeError, match="VLLM_CPU_KVCACHE_SPACE"):
        check_worker(tiny_mistral, tiny_mistral, opts, True, "cpu")
    assert size_model(_hub("nobody/not-cached-model"), opts, device="cpu", memory=GIB, engines_per_gpu=1) is None


class _Refuses:
    def __init__(self, spec):
        raise EngineSizeError(f"engine for {spec} cannot hold one full dialogue: numbers. Fix: this.")

    def info(self):
        return {}


@pytest.mark.cluster  # a real Ray pool
def test_constructor_error_ends_the_pool_once_without_restarts():
    import ray

    from pipeline.core.ray_pool import RayPool, WorkerStartError, init_ray

    init_ray(None)
    try:
        with pytest.raises(WorkerStartError) as e:
            RayPool("nemo", 2, worker_cls=_Refuses)
        assert "not restarted" in str(e.value) and "EngineSizeError: engine for nemo cannot hold" in str(e.value)
        assert "Fix: this." in str(e.value)
    finally:
        ray.shutdown()


def test_ssvd_run_refuses_an_engine_that_cannot_hold_a_dialogue_before_any_work(tmp_path, tiny_mistral, monkeypatch):
    """`ssvd run` sizes the engines before any engine starts (here on the CPU: a KV-cache space of 1 MiB holds
    2048 tokens of tiny-mistral, the context asked for is 8192) and exits 2 with the numbers, writing nothing."""
    from typer.testing import CliRunner

    from cli import app

    repo = Path(__file__).resolve().parents[3]
    text = (repo / "tests/fixtures/manifests/tiny.yaml").read_text().replace("builtin:smollm2", "builtin:tiny-mistral")
    (tmp_path / "m.yaml").write_text(text.replace("input: tests/", f"input: {repo}/tests/"))
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "0.001")
    r = CliRunner().invoke(app, ["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--no-progress",
                                 "--device", "cpu", "--max-model-len", "8192", "--only", "docci-prop"])
    assert r.exit_code == 2, r.output
    assert "cannot hold one full dialogue: max_model_len 8192" in r.output and "VLLM_CPU_KVCACHE_SPACE" in r.output
    assert not (tmp_path / "out").exists()
