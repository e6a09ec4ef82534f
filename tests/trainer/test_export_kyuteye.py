"""`ssvd export-adapters --format kyuteye`: a tiny run exported has exactly the names and shapes of Kyutai's
release (fixture written from kyuteye_pt's module structure, source recorded in it); the adapters and the
backbone map back to ours exactly (logits torch.equal); variants the release cannot load are refused."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.config import load_train_config
from trainer.export_kyuteye import (ExportError, check_release_compatible, kyuteye_to_adapters,
                                    kyuteye_to_transformers, moshi_to_kyuteye)
from trainer.loop import train
from trainer.model import ModelConfig, build_model, tiny_batch

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "kyuteye_tiny_keys.json"


@pytest.fixture(scope="module")
def tiny_run(handmade_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = yaml.safe_load((ROOT / "manifests" / "train-quickstart.yaml").read_text())
    data["train"].update(steps=2, eval_every=0, ckpt_every=0, lr=3e-2, warmup_steps=1)
    (tmp / "train.yaml").write_text(yaml.safe_dump(data))
    run = tmp / "run"
    train(load_train_config(tmp / "train.yaml"), handmade_corpus, run, progress=False)
    out = tmp / "moshivis_pt.safetensors"  # the name Kyutai's server loads (server.py 371-377)
    r = subprocess.run([sys.executable, "-m", "cli", "export-adapters", str(run), "--format", "kyuteye",
                        "--backbone", "tiny", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return run, out, json.loads(r.stdout.strip().splitlines()[-1])


def test_every_key_and_shape_is_the_release_s(tiny_run):
    _, out, summary = tiny_run
    expected = {k: tuple(v) for k, v in json.loads(FIXTURE.read_text())["keys"].items()}
    with safe_open(str(out), "pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        meta = f.metadata()
    assert set(got) - set(expected) == set(), "keys the release does not have"
    assert set(expected) - set(got) == set(), "keys the release's loader would report missing"
    assert got == expected
    assert dtypes == {"BF16"}
    assert meta["format"] == "kyuteye" and meta["checkpoint"] == "step-000002"
    assert meta["ssvd_adapters_format"] == "2"  # norm_cross mean-square, as the release runs it
    assert summary["keys"] == len(expected)


def test_round_trip_gives_equal_logits(tiny_run):
    run, out, _ = tiny_run
    bundle = load_file(str(out))
    cfg = ModelConfig(**{k: v for k, v in json.loads((run / "config.json").read_text())["config"]["model"].items()})
    trained = build_model(cfg)
    trained.load_adapter_state_dict({k: v.to(torch.bfloat16).float()  # what bf16 keeps of the trained adapters
                                     for k, v in load_file(str(run / "checkpoints" / "step-000002" / "adapters.safetensors")).items()})
    back = build_model(cfg)
    back.load_adapter_state_dict({k: v.float() for k, v in kyuteye_to_adapters(bundle).items()})
    for kind in ("speech", "text"):
        batch = tiny_batch(kind, B=2, T=10, cfg=cfg, seed=3)
        with torch.no_grad():
            a, b = trained.outputs(batch), back.outputs(batch)
        for k in a:
            assert torch.equal(a[k], b[k]), (kind, k)
    # the adapters moved: the gates are not all closed any more, so the round trip is not trivially equal
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in bundle.items() if k.endswith("gate.alpha.2.weight"))
    # the backbone maps back to transformers' names and values (bf16 of the frozen weights)
    with back.backbone_only():
        ours = {k: v for k, v in back.backbone.state_dict().items() if not k.startswith("audio_encoder.")}
        theirs = kyuteye_to_transformers(bundle, back.backbone.config)
    assert set(theirs) == set(ours)
    for k, v in ours.items():
        assert torch.equal(theirs[k], v.to(torch.bfloat16)), k


def test_a_moshi_layout_checkpoint_is_renamed_into_moshivis_names(tiny_run, tmp_path):
    run, out, _ = tiny_run
    bundle = load_file(str(out))
    # Kyutai's moshi LMModel names (emb, text_emb, transformer, out_norm, text_linear, linears, depformer*)
    moshi = {}
    for k, v in bundle.items():
        if k.startswith("image_prefix.") or ".cross_attention." in k or ".norm_cross." in k:
            continue
        k = k.removeprefix("llm.").replace("audio_emb.", "emb.").replace("audio_linears.", "linears.")
        moshi[k] = v
    assert "transformer.layers.0.self_attn.in_proj_weight" in moshi and "emb.0.weight" in moshi
    renamed = moshi_to_kyuteye(moshi)
    assert {k for k in bundle if not (k.startswith("image_prefix.") or "cross" in k)} == set(renamed)
    from safetensors.torch import save_file

    save_file(moshi, str(tmp_path / "moshiko.safetensors"))
    r = subprocess.run([sys.executable, "-m", "cli", "export-adapters", str(run), "--backbone",
                        str(tmp_path / "moshiko.safetensors"), "--out", str(tmp_path / "b_pt.safetensors")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    again = load_file(str(tmp_path / "b_pt.safetensors"))
    assert set(again) == set(bundle) and all(torch.equal(again[k], bundle[k]) for k in bundle)


@pytest.mark.parametrize("change, words", [
    (dict(sharing="kv"), "sharing: 'kv'"),
    (dict(gating="shared"), "Rust/MLX"),
    (dict(gating="none"), "gating: 'none'"),
    (dict(gate_init_bias=-2.0), "gate_init_bias"),
    (dict(gate_hidden_div=4), "gate_hidden_div"),
])
def test_variants_the_release_cannot_load_are_refused(change, words):
    with pytest.raises(ExportError, match=words):
        check_release_compatible(ModelConfig(**change))
    check_release_compatible(ModelConfig())  # the default is the release's


def test_a_directory_without_a_run_is_an_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cli", "export-adapters", str(tmp_path), "--out", str(tmp_path / "x_pt.safetensors")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_a_name_kyutai_s_server_would_not_load_is_refused(tiny_run, tmp_path):
    """With `model: X.safetensors` Kyutai's server loads X_pt.safetensors (kyuteye_pt server.py 371-377)."""
    run, _, _ = tiny_run
    r = subprocess.run([sys.executable, "-m", "cli", "export-adapters", str(run), "--backbone", "tiny",
                        "--out", str(tmp_path / "moshivis.safetensors")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "moshivis_pt.safetensors" in r.stderr, r.stderr
    assert not (tmp_path / "moshivis.safetensors").exists()


def test_adapters_of_the_old_norm_cross_are_refused(tiny_run, tmp_path):
    """A checkpoint written before issue 27 (no format mark: norm_cross trained variance-based) is refused by
    the export and by --resume (checkpoint.read), with the reason and the fix."""
    import shutil

    from safetensors.torch import save_file

    from trainer import checkpoint

    run, _, _ = tiny_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    ck = old / "checkpoints" / "step-000002"
    assert checkpoint.read(ck)[0].keys() == load_file(str(ck / "adapters.safetensors")).keys()  # format 2 reads
    save_file(load_file(str(ck / "adapters.safetensors")), str(ck / "adapters.safetensors"))  # as format 1 wrote it
    with pytest.raises(ValueError, match="format 1.*variance-based.*train a new run"):
        checkpoint.read(ck)
    r = subprocess.run([sys.executable, "-m", "cli", "export-adapters", str(old), "--backbone", "tiny",
                        "--out", str(tmp_path / "x_pt.safetensors")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "variance-based" in r.stderr and "norm_cross" in r.stderr, r.stderr
