"""Run by tests/trainer/test_ddp.py under torchrun: `ssvd train`'s loop with torch.distributed.all_reduce
counted per optimizer step (AdamW.step marks the step boundaries); writes OUT/counts-<rank>.json."""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.config import load_train_config
from trainer.loop import train

calls = {"all_reduce": 0, "broadcast": 0}
per_step: list[int] = []
_all_reduce, _broadcast, _step = dist.all_reduce, dist.broadcast, torch.optim.AdamW.step


def all_reduce(*a, **k):
    calls["all_reduce"] += 1
    return _all_reduce(*a, **k)


def broadcast(*a, **k):
    calls["broadcast"] += 1
    return _broadcast(*a, **k)


def step(self, *a, **k):
    per_step.append(calls["all_reduce"] - sum(per_step))
    return _step(self, *a, **k)


dist.all_reduce, dist.broadcast, torch.optim.AdamW.step = all_reduce, broadcast, step

config, data, out = sys.argv[1:4]
resume = "--resume" in sys.argv
summary = train(load_train_config(config), Path(data), Path(out), progress=False, resume=resume)
rank = int(os.environ["RANK"])
(Path(out) / f"counts-{rank}.json").write_text(json.dumps({"per_step": per_step, **calls}))
