"""DDP on CPU (gloo, 2 processes under torchrun): one all-reduce per optimizer step whatever the accumulation
(only the adapters' gradients, never the frozen model), the same losses and adapters as one process doing the
two ranks' work, eval on rank 0, and a resume with another world size refused naming it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainer.config import load_train_config, resolve_missing_images
from trainer.loop import lr_factor, train

ROOT = Path(__file__).resolve().parents[2]
STEPS, ACCUM = 3, 2


@pytest.fixture(scope="module")
def ddp_run(handmade_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = yaml.safe_load((ROOT / "manifests" / "train-quickstart.yaml").read_text())
    data["train"].update(steps=STEPS, grad_accum=ACCUM, eval_every=2, ckpt_every=0, warmup_steps=1)
    cfg_path = tmp / "t.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    run = tmp / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(ROOT / "tests" / "trainer" / "ddp_worker.py"), str(cfg_path), str(handmade_corpus), str(run)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    return cfg_path, run


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_one_all_reduce_per_optimizer_step(ddp_run):
    _, run = ddp_run
    for rank in (0, 1):
        counts = json.loads((run / f"counts-{rank}.json").read_text())
        assert counts["per_step"] == [1] * STEPS, counts  # grad_accum=2 micro-batches, one reduction
        assert counts["all_reduce"] == STEPS
    evals = [m for m in _metrics(run) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [2, 3]  # rank 0 evaluates; rank 1 did not wait on a collective for it


def test_same_losses_and_adapters_as_one_process_doing_both_ranks(ddp_run, handmade_corpus):
    """Emulate the 2-rank step in one process: both ranks' micro-batches (rank-strided loaders), gradients
    summed then divided by the world size, clipping, AdamW with the same groups and schedule."""
    import dataclasses

    from trainer.data import CorpusLoader
    from trainer.model import build_model

    cfg_path, run = ddp_run
    cfg = load_train_config(cfg_path)
    o = cfg.train
    data_cfg = dataclasses.replace(cfg.data, missing_images=resolve_missing_images(cfg))
    model = build_model(cfg.model)
    groups = model.adapter_param_groups(o.weight_decay)
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    params = [p for g in groups for p in g["params"]]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, o.warmup_steps, o.steps, o.min_lr_ratio))
    loaders = [iter(CorpusLoader(handmade_corpus, data_cfg, rank=r, world=2)) for r in (0, 1)]
    losses = []
    for _ in range(STEPS):
        model.train()
        total = 0.0
        for it in loaders:
            for _ in range(ACCUM):
                loss, _ = model.loss(next(it))
                (loss / ACCUM).backward()
                total += float(loss.detach()) / ACCUM
        for p in params:
            p.grad /= 2
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total / 2)
    logged = [m["loss"] for m in _metrics(run) if "loss" in m]
    assert logged == pytest.approx(losses, rel=1e-5, abs=1e-6)
    saved = load_file(str(run / "checkpoints" / f"step-{STEPS:06d}" / "adapters.safetensors"))
    mine = model.adapter_state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, mine[k], rtol=1e-4, atol=1e-5)  # summation order: float rounding


def test_resume_with_another_world_size_is_refused(ddp_run, handmade_corpus):
    cfg_path, run = ddp_run
    info = json.loads((run / "checkpoints" / f"step-{STEPS:06d}" / "run.json").read_text())
    assert info["world_size"] == 2 and len(info["loader"]) == 2  # each rank's position
    state = torch.load(run / "checkpoints" / f"step-{STEPS:06d}" / "state.pt", weights_only=True)
    assert state["step"] == STEPS
    with pytest.raises(ValueError, match=r"world size: the run was trained on 2 process\(es\), this resume has 1"):
        train(load_train_config(cfg_path), handmade_corpus, run, progress=False, resume=True)
