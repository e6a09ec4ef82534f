"""`make bench` end to end at toy size: the three arms run over the same requests and the last line is the JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_prints_comparable_arms_as_its_last_line(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "dialogue_throughput.py"), "--dialogues", "3", "--min-pairs", "1",
           "--max-pairs", "2", "--min-tokens", "2", "--max-tokens", "5", "--lockstep-batch", "2", "--padded-lockstep",
           "--hf-batch", "2",
           "--max-model-len", "4096"]
    env = {**os.environ, "SSVD_CACHE": os.environ.get("SSVD_CACHE", str(Path.home() / ".cache" / "ssvd"))}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert (r["engine"], r["model"], r["device"], r["dialogues"]) == ("vllm", "builtin:tiny-mistral", "cpu", 3)
    # 1..2 pairs, two messages each, every message 2..5 tokens (ignore_eos): the replays did the same work
    assert 6 <= r["messages"] <= 12
    assert 2 * r["messages"] <= r["completion_tokens"] <= 5 * r["messages"]
    assert r["workers"] == min(2, os.cpu_count() or 1)  # the default on a CPU: measured best here
    detail = r["ceiling_detail"]  # each worker's engine replayed its own requests
    assert len(detail) == r["workers"]
    assert sum(d["completion_tokens"] for d in detail) == r["completion_tokens"]
    assert sum(d["requests"] for d in detail) == r["messages"]
    secs = r["seconds"]
    assert all(secs[k] > 0 for k in ("ssvd", "ceiling", "lockstep", "lockstep_padded", "released"))
    # the released generator's engine (transformers generate, tiny-mistral is a transformers folder: on by
    # default) replayed the same requests in lockstep: 2 dialogues per batch, one message per step
    rel = r["released_detail"]
    assert rel["requests"] == r["messages"] and rel["completion_tokens"] == r["completion_tokens"]
    assert rel["batch_dialogues"] == 2 and rel["steps"] >= r["messages"] / 2
    assert r["completion_tokens"] <= rel["computed_tokens"] <= 5 * r["messages"]  # padded to each step's longest
    assert secs["released_load"] > 0 and secs["ssvd_start"] > 0
    # quiet by default: no transformers generation notices, no weight-loading bars, no Ray/vLLM INFO
    for noise in ("Setting `pad_token_id`", "Loading weights", "Token authentication", "INFO "):
        assert noise not in p.stderr, noise

    def near(ratio, num, den):  # seconds are printed to 0.01 s: the ratio lies within their rounding
        return (num - 0.005) / (den + 0.005) - 0.001 <= ratio <= (num + 0.005) / (den - 0.005) + 0.001

    assert near(r["ratio_vs_ceiling"], secs["ceiling"], secs["ssvd"])
    assert near(r["ratio_vs_lockstep"], secs["lockstep"], secs["ssvd"])
    assert near(r["lockstep_vs_ceiling"], secs["lockstep"], secs["ceiling"])
    assert near(r["ratio_vs_released"], secs["released"], secs["ssvd"])
    assert r["prompt_tokens"] > 100 * r["messages"]  # the real rendered instructions over fixture captions
    assert 0 <= r["prefix_cache_hit_rate"] < 1
    assert r["peak_rss_mib"]["driver"] > 0 and r["peak_rss_mib"]["worker"] > r["peak_rss_mib"]["driver"] / 2


def test_memory_scan_prints_the_growth_of_both_processes_last(tmp_path):
    """`make bench BENCH_ARGS="--memory-scan N"` at toy size: N and 10·N captions in fresh processes."""
    cmd = [sys.executable, str(REPO / "bench" / "dialogue_throughput.py"), "--memory-scan", "1", "--max-model-len",
           "4096"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(r) == {"memory_growth_10x", "runs"}
    assert [(run["captions"], run["dialogues"]) for run in r["runs"]] == [(1, 1), (10, 10)]
    small, big = r["runs"]
    for proc in ("driver", "worker"):
        assert small[f"{proc}_peak_rss_mib"] > 0 and big[f"{proc}_peak_rss_mib"] > 0
        ratio = big[f"{proc}_peak_rss_mib"] / small[f"{proc}_peak_rss_mib"]
        assert abs(r["memory_growth_10x"][proc] - ratio) <= 0.001 + 1e-9
