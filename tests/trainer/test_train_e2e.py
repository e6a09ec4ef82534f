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


def test_torchrun_ddp_on_cpu_two_processes(corpus_dir, tmp_path):
    import subprocess
    import sys

    cfg = yaml.safe_load(QUICK.read_text())
    cfg["train"].update(steps=2, eval_every=0, ckpt_every=0)
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "cli", "train", str(p), "--data", str(corpus_dir), "--out", str(run), "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world"] == 2  # rank 0 reports
    import torch

    state = torch.load(run / "checkpoints" / "step-000002" / "state.pt", weights_only=False)
    assert isinstance(state["loader"], list) and len(state["loader"]) == 2  # each rank's position
    assert [m["step"] for m in _metrics(run) if "loss" in m] == [1, 2]
