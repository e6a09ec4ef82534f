"""pipeline.dialogue.models: builtin model builds (real files, real transformers), hub/local resolution, errors.

The builds go to a module-scoped temporary SSVD_CACHE, so each happens once per run. No vLLM here.
"""
from __future__ import annotations

import json
import os
import subprocess
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.core import model_cache as mc
from pipeline.core.model_cache import cache_dir
from pipeline.dialogue import builtin_models as bm
from pipeline.dialogue.models import (BUILTIN_MODELS, PRODUCTION_MODEL, ModelUnavailable, ResolvedModel,
                             resolve_model)

REPO = Path(__file__).resolve().parents[3]
TINY_FILES = {"config.json", "generation_config.json", "model.safetensors", "tekken.json", mc.MARKER}


def _resolve_in(cache: Path, name: str) -> ResolvedModel:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSVD_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        return resolve_model(name)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models are tiny: one thread is as fast, and far faster when other processes share the 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ssvd-cache")


@pytest.fixture(scope="module")
def tiny(cache) -> ResolvedModel:
    return _resolve_in(cache, "builtin:tiny-mistral")


@pytest.fixture(scope="module")
def smol(cache) -> ResolvedModel:
    return _resolve_in(cache, "builtin:smollm2")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SSVD_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("SSVD_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "ssvd"


def test_tiny_mistral_folder(tiny, cache):
    folder = Path(tiny.path)
    assert folder == cache / "models" / bm.TINY_MISTRAL_DIR
    assert {p.name for p in folder.iterdir()} == TINY_FILES
    assert (tiny.name, tiny.tokenizer_mode, tiny.builtin, tiny.quality, tiny.max_model_len) == (
        "builtin:tiny-mistral", "mistral", True, "random-weights", 8192)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    shape = ("vocab_size", "head_dim", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings")
    assert [config[k] for k in shape] == [131072, 32, 128, 2, 4, 2, 8192]
    assert (config["bos_token_id"], config["eos_token_id"], config["dtype"]) == (1, 2, "bfloat16")
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2
    assert (folder / "tekken.json").read_bytes() == bm.tekken_source().read_bytes()
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert len(tiny.fingerprint) == 16 and tiny.fingerprint == mc.fingerprint_dir(folder)


NEMO_CHECK = """
import json, sys
from vllm.engine.arg_utils import AsyncEngineArgs
if __name__ == "__main__":
    cfg = AsyncEngineArgs(model=sys.argv[1], tokenizer_mode="mistral", load_format=sys.argv[2], max_model_len=8192,
                          enforce_eager=True, enable_chunked_prefill=False).create_engine_config()
    m, par = cfg.model_config, cfg.parallel_config
    print(json.dumps([m.get_hidden_size(), m.get_num_layers(par), m.get_num_attention_heads(par), m.get_head_size(),
                      m.get_num_kv_heads(par), m.hf_config.intermediate_size, m.get_vocab_size(),
                      m.hf_config.rope_parameters["rope_theta"], cfg.load_config.load_format]))
"""


def test_nemo_shape_is_nemos_exact_shape_without_weights(cache):
    nemo = _resolve_in(cache, "builtin:nemo-shape")
    folder = Path(nemo.path)
    assert {p.name for p in folder.iterdir()} == {"config.json", "generation_config.json", "tekken.json", mc.MARKER}
    assert (nemo.tokenizer_mode, nemo.quality, nemo.load_format, nemo.max_model_len) == (
        "mistral", "random-weights", "dummy", 8192)
    assert (folder / "tekken.json").read_bytes() == bm.tekken_source().read_bytes()
    # vLLM reads the folder as the engine would (no weights loaded): Mistral-Nemo-Instruct-2407's shape
    out = subprocess.run([sys.executable, "-c", NEMO_CHECK, str(folder), nemo.load_format], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [5120, 40, 32, 128, 8, 14336, 131072, 1e6, "dummy"]


def test_tiny_mistral_second_resolve_does_not_rebuild(tiny, cache):
    folder = Path(tiny.path)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = _resolve_in(cache, "builtin:tiny-mistral")
    assert again == tiny
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_tiny_mistral_concurrent_builds_are_deterministic(tiny, tmp_path):
    """Two processes build into a fresh cache at once: one folder, the same fingerprint as the other cache's;
    the leftover of a killed build is cleaned up."""
    stale = tmp_path / "models" / f".{bm.TINY_MISTRAL_DIR}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    code = ("import json, os; from pipeline.dialogue.models import resolve_model; r = resolve_model('builtin:tiny-mistral'); "
            "print(json.dumps([r.fingerprint, r.path, os.stat(r.path).st_ino]))")
    env = {**os.environ, "SSVD_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0][0] == tiny.fingerprint
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == [f".{bm.TINY_MISTRAL_DIR}.lock", bm.TINY_MISTRAL_DIR]
    assert {p.name for p in (models / bm.TINY_MISTRAL_DIR).iterdir()} == TINY_FILES


def test_tiny_mistral_eos_probability(tiny):
    """EOS gets about 1/30 per step at T=0.7 whatever the context; other tokens stay varied; control tokens never."""
    import torch
    from transformers import MistralForCausalLM

    model = MistralForCausalLM.from_pretrained(tiny.path, dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(bm.TINY_SUPPRESSED, 131072, (6, 48), generator=gen)
    ids[:, 0] = 1
    with torch.no_grad():
        probs = (model(ids).logits.float() / 0.7).softmax(-1)
    p_eos = probs[..., 2].flatten()
    assert 1 / 50 < p_eos.mean().item() < 1 / 20, p_eos.mean()
    assert 1 / 100 < p_eos.min().item() and p_eos.max().item() < 1 / 8
    control = torch.cat([probs[..., :2], probs[..., 3:bm.TINY_SUPPRESSED]], -1)
    assert control.sum(-1).max().item() < 1e-4
    perplexity = (-(probs * probs.clamp_min(1e-30).log()).sum(-1)).exp()
    assert perplexity.min().item() > 10_000  # sampled text is varied ...
    flat = probs.reshape(-1, probs.shape[-1])
    assert 0.5 * (flat[1:] - flat[:-1]).abs().sum(-1).mean().item() > 0.05  # ... and depends on the context


def test_smollm2_conversion(smol, cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(smol.path)
    assert folder == cache / "models" / bm.SMOLLM2_DIR
    assert (smol.tokenizer_mode, smol.builtin, smol.quality, smol.max_model_len) == ("auto", True, "smoke-test", 8192)
    assert smol.fingerprint == mc.fingerprint_dir(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.chat_template and "<|im_end|>" in tok.chat_template
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == eos == tok.eos_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert sum(c.isascii() and c.isalpha() for c in text) >= 5, text


def test_fingerprints_follow_the_files_and_tell_models_apart(tiny, smol, tmp_path, monkeypatch):
    """A fingerprint changes when any file of the folder changes (content, name or a new file) and differs
    between models; equal files give equal fingerprints wherever the folder lies."""
    assert tiny.fingerprint != smol.fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(tiny.path, copy)
    (copy / mc.MARKER).unlink()  # the build marker is not part of the model
    assert resolve_model(str(copy)).fingerprint == tiny.fingerprint
    seen = {tiny.fingerprint}
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rope_theta": config.get("rope_theta", 1e6) * 2}))
    seen.add(resolve_model(str(copy)).fingerprint)
    (copy / "generation_config.json").rename(copy / "generation_config.bak")  # same bytes, another name
    seen.add(resolve_model(str(copy)).fingerprint)
    (copy / "extra.txt").write_text("x")
    seen.add(resolve_model(str(copy)).fingerprint)
    assert len(seen) == 4, seen
    # files over the big-file limit are fingerprinted by size, head and tail: a change in either shows
    monkeypatch.setattr(mc, "_BIG_FILE", 1 << 10)
    monkeypatch.setattr(mc, "_SAMPLE", 1 << 8)
    weights = copy / "model.safetensors"
    big = {mc.fingerprint_dir(copy)}
    data = bytearray(weights.read_bytes())
    for at in (10, len(data) - 10):
        data[at] ^= 0xFF
        weights.write_bytes(bytes(data))
        big.add(mc.fingerprint_dir(copy))
    assert len(big) == 3, big


def test_unknown_builtin(cache):
    with pytest.raises(ModelUnavailable) as err:
        _resolve_in(cache, "builtin:xyz")
    msg = str(err.value)
    assert "builtin:xyz" in msg and all(name in msg for name in BUILTIN_MODELS)


@pytest.mark.parametrize("name", [PRODUCTION_MODEL, "ssvd-tests/no-such-model-0000@v1"])
def test_hub_unavailable_offline(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as err:
        resolve_model(name)
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    assert '"builtin:smollm2"' in msg and '"builtin:tiny-mistral"' in msg


def test_hub_without_check():
    r = resolve_model(PRODUCTION_MODEL, check_hub=False)
    assert (r.path, r.tokenizer_mode, r.builtin, r.quality, r.max_model_len) == (
        PRODUCTION_MODEL, "mistral", False, "production", 0)
    assert r.fingerprint == f"{PRODUCTION_MODEL}@main" and r.revision is None
    r = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct@abc123", check_hub=False)
    assert (r.path, r.revision, r.tokenizer_mode, r.fingerprint) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct", "abc123", "auto", "HuggingFaceTB/SmolLM2-135M-Instruct@abc123")


def test_local_directories(tiny, tmp_path):
    r = resolve_model(tiny.path)
    assert (r.path, r.tokenizer_mode, r.builtin, r.fingerprint) == (tiny.path, "mistral", False, tiny.fingerprint)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert resolve_model(str(plain)).tokenizer_mode == "auto"
    with pytest.raises(ModelUnavailable, match="no such directory"):
        resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelUnavailable, match="neither config.json nor params.json"):
        resolve_model(str(tmp_path))


def test_hub_model_in_local_cache_is_available_offline(tmp_path):
    """A hub id whose config.json is in the Hugging Face cache resolves with HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "models--ssvd-tests--cached-mistral" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--ssvd-tests--cached-mistral" / "refs").mkdir()
    (tmp_path / "models--ssvd-tests--cached-mistral" / "refs" / "main").write_text("0" * 40)
    code = ("from pipeline.dialogue.models import resolve_model; "
            "print(resolve_model('ssvd-tests/cached-mistral').tokenizer_mode)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "mistral"
