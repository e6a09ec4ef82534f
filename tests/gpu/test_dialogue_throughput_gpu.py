"""The dialogue benchmark on a GPU with Mistral-Nemo's exact shape (random weights, nothing downloaded).

Skipped without a GPU. The full-size figures for docs/throughput.md come from `make bench` itself:

    make bench BENCH_ARGS="--model builtin:nemo-shape"
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("model", ["builtin:tiny-mistral", "builtin:nemo-shape"])
def test_benchmark_runs_on_the_gpu(model, tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "dialogue_throughput.py"), "--model", model, "--dialogues", "8",
           "--min-pairs", "2", "--max-pairs", "3", "--lockstep-batch", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert (r["device"], r["model"], r["dialogues"]) == ("cuda", model, 8)
    assert r["workers"] == torch.cuda.device_count()
    assert r["ratio_vs_ceiling"] > 0 and r["ratio_vs_lockstep"] > 0 and r["prefix_cache_hit_rate"] > 0
