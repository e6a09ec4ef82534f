"""`ssvd train` end to end on the tiny real corpus (tests/pipeline/corpus/conftest.py): loss falls when
over-fitting a handful of samples; a run stopped and resumed sees the batches an uninterrupted run sees;
checkpoints hold only the adapters; metrics.jsonl has one JSON object per logged step."""
import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.pipeline.corpus.conftest import ssvd
from trainer.config import load_train_config
from trainer.loop import train

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "manifests" / "train-quickstart.yaml"


def _config(tmp_path, **train_overrides):
    data = yaml.safe_load(QUICK.read_text())
    data["train"].update(train_overrides)
    p = tmp_path / "train.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_train_config(p)


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_overfitting_a_handful_of_samples_drives_the_loss_down(corpus_dir, tmp_path):
    cfg = _config(tmp_path, steps=30, eval_every=0, ckpt_every=0, lr=1e-2, warmup_steps=2)
    cfg.data.p_concat = 0.0
    cfg.data.splits = {"docci-prop": 1.0}  # one visual speech sample
    run = tmp_path / "run"
    train(cfg, corpus_dir, run, progress=False)
    steps = [m for m in _metrics(run) if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, 31))
    first = sum(m["loss"] for m in steps[:3]) / 3
    last = sum(m["loss"] for m in steps[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert any("eval_loss" in m for m in _metrics(run))  # the end of training evaluates


def test_resume_sees_the_batches_an_uninterrupted_run_sees(corpus_dir, tmp_path):
    cfg = _config(tmp_path, steps=6, eval_every=0, ckpt_every=0)
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, corpus_dir, a, progress=False)
    train(cfg, corpus_dir, b, progress=False, stop_after=3)
    assert (b / "checkpoints" / "latest").read_text() == "step-000003"
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, corpus_dir, b, progress=False)  # a second start into a run directory is refused
    train(cfg, corpus_dir, b, progress=False, resume=True)
    ma = [m for m in _metrics(a) if "loss" in m]
    mb = [m for m in _metrics(b) if "loss" in m]
    assert [m["step"] for m in mb] == [1, 2, 3, 4, 5, 6]
    assert [m["batches"] for m in mb] == [m["batches"] for m in ma]
    for x, y in zip(ma, mb):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-5)
    before = (b / "metrics.jsonl").read_text()
    again = train(cfg, corpus_dir, b, progress=False, resume=True)  # finished: nothing left to do
    assert again["start"] == 6 and (b / "metrics.jsonl").read_text() == before
    fresh = train(cfg, corpus_dir, tmp_path / "c", progress=False, resume=True, stop_after=1)  # nothing to resume
    assert fresh["start"] == 0 and fresh["steps"] == 1


def test_checkpoints_hold_only_the_adapters(corpus_dir, tmp_path):
    from trainer.model import build_model

    cfg = _config(tmp_path, steps=2, eval_every=0, ckpt_every=1, keep_checkpoints=1)
    run = tmp_path / "run"
    train(cfg, corpus_dir, run, progress=False)
    ck = sorted((run / "checkpoints").glob("step-*"))
    assert [c.name for c in ck] == ["step-000002"]  # keep_checkpoints=1
    saved = load_file(str(ck[0] / "adapters.safetensors"))
    model = build_model(cfg.model)
    assert set(saved) == set(model.adapter_state_dict())
    n_saved = sum(t.numel() for t in saved.values())
    assert n_saved == sum(p.numel() for p in model.adapter_parameters())
    assert n_saved < sum(p.numel() for p in model.parameters()) / 2
    # nothing pickled: state.pt loads with weights_only=True, the loader position is JSON
    import torch

    state = torch.load(ck[0] / "state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "step", "rng"} <= set(state) and state["step"] == 2
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [cfg.train.weight_decay, 0.0]
    run_info = json.loads((ck[0] / "run.json").read_text())
    assert run_info["world_size"] == 1 and len(run_info["loader"]) == 1 and run_info["manifest_sha256"]
    from trainer.checkpoint import read

    adapters, st, info = read(ck[0])
    assert set(adapters) == set(saved) and info["step"] == 2


def test_resume_names_what_differs(handmade_corpus, tmp_path):
    import shutil

    cfg = _config(tmp_path, steps=4, eval_every=0, ckpt_every=0)
    run = tmp_path / "run"
    train(cfg, handmade_corpus, run, progress=False, stop_after=1)
    other = tmp_path / "other-corpus"
    shutil.copytree(handmade_corpus, other)
    man = json.loads((other / "manifest.json").read_text())
    man["weights"] = {k: (v * 2 if i == 0 else v) for i, (k, v) in enumerate(man["weights"].items())}
    (other / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match=r"(?s)--data .*other-corpus.*another corpus.*manifest.json sha256"):
        train(cfg, other, run, progress=False, resume=True)
    changed = _config(tmp_path, steps=4, eval_every=0, ckpt_every=0, lr=0.01)
    with pytest.raises(ValueError, match=r"config differs from the run's: train\.lr: 0\.003 -> 0\.01"):
        train(changed, handmade_corpus, run, progress=False, resume=True)
    config_json = (run / "config.json").read_text()
    assert train(cfg, handmade_corpus, run, progress=False, resume=True)["start"] == 1  # the same: continues
    assert (run / "config.json").read_text() == config_json  # a resume does not rewrite it


def test_a_real_encoder_with_a_wrong_image_root_fails_at_the_first_batch(handmade_corpus, tmp_path):
    """`missing_images: auto` is an error with a real (non-tiny) encoder: here a SigLIP saved to disk."""
    from transformers import SiglipVisionModel

    from trainer.images import MissingImageError
    from trainer.model import ModelConfig, tiny_configs

    enc_dir = tmp_path / "siglip"
    SiglipVisionModel(tiny_configs(ModelConfig(image_size=64))[1]).save_pretrained(enc_dir)
    cfg = _config(tmp_path, steps=2, eval_every=0, ckpt_every=0)
    cfg.model.image_encoder = str(enc_dir)
    cfg.data.image_root = str(tmp_path / "no-images-here")
    cfg.data.missing_images = "auto"
    with pytest.raises(MissingImageError, match="no-images-here"):
        train(cfg, handmade_corpus, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").read_text()  # not one step taken
    cfg.data.missing_images = "placeholder"  # an explicit choice still trains, and counts them per step
    train(cfg, handmade_corpus, tmp_path / "run2", progress=False)
    steps = [m for m in _metrics(tmp_path / "run2") if "loss" in m]
    assert steps and all(0 <= m["images_missing"] <= 2 for m in steps)  # batch_size 2
    assert sum(m["images_missing"] for m in steps) > 0  # no image found: placeholders, counted per step


def test_cli_train_stops_and_resumes(corpus_dir, tmp_path):
    """`ssvd train --stop-after 2`, then `--resume`: the run continues from its checkpoint to the end, with the
    batches and losses of an uninterrupted run; without --resume the run directory is not started again."""
    cfg = yaml.safe_load(QUICK.read_text())
    cfg["train"].update(steps=3, eval_every=0, ckpt_every=0)
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    out = ssvd("train", p, "--data", corpus_dir, "--out", run, "--stop-after", 2, "--no-progress")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["start"], summary["steps"]) == (0, 2)
    assert (run / "checkpoints" / "latest").read_text() == "step-000002"
    again = ssvd("train", p, "--data", corpus_dir, "--out", run, "--no-progress", check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    out = ssvd("train", p, "--data", corpus_dir, "--out", run, "--resume", "--no-progress")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["start"], summary["steps"]) == (2, 3)
    resumed = [m for m in _metrics(run) if "loss" in m]
    assert [m["step"] for m in resumed] == [1, 2, 3]
    assert all({"step", "loss"} <= set(m) or "eval_loss" in m for m in _metrics(run))
    whole = train(_config(tmp_path, steps=3, eval_every=0, ckpt_every=0), corpus_dir, tmp_path / "whole",
                  progress=False)
    assert whole["steps"] == 3
    straight = [m for m in _metrics(tmp_path / "whole") if "loss" in m]
    assert [m["batches"] for m in resumed] == [m["batches"] for m in straight]
    for x, y in zip(straight, resumed):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-5)
    bad = ssvd("train", tmp_path / "missing.yaml", "--data", corpus_dir, "--out", tmp_path / "r2", check=False)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr
