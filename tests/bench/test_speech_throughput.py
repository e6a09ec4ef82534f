"""`make bench-speech` at toy size: speech + tokens against the Mimi-encode-only ceiling; the last line is the JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def test_speech_benchmark_prints_its_ratio_last(tmp_path):
    keep = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "bench" / "speech_throughput.py"), "--dialogues", "2", "--pairs", "1",
           "--workers", "0", "--keep", str(keep)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert (r["dialogues"], r["pairs"], r["workers"], r["assistant_voice"]) == (2, 1, 0, "piper:joe")
    assert r["codec"].startswith("random")
    wall = r["wall_s"]
    assert all(wall[k] > 0 for k in ("speech", "tokens", "ceiling"))
    # ratio_vs_ceiling = ceiling seconds / (speech + tokens seconds), from unrounded seconds
    ssvd_s = wall["speech"] + wall["tokens"]
    assert (wall["ceiling"] - 0.05) / (ssvd_s + 0.1) - 0.001 <= r["ratio_vs_ceiling"] <= (wall["ceiling"] + 0.05) / (ssvd_s - 0.1) + 0.001
    # the audio it timed is the audio it wrote: both stages' shards, every dialogue ok
    speech = [row for f in sorted((keep / "speech").glob("speech-*.parquet")) for row in pq.read_table(f).to_pylist()]
    tokens = [row for f in sorted((keep / "tokens").glob("tokens-*.parquet")) for row in pq.read_table(f).to_pylist()]
    assert len(speech) == len(tokens) == 2 and {x["status"] for x in speech + tokens} == {"ok"}
    assert abs(r["audio_s"] - sum(x["duration_s"] for x in speech)) <= 0.05 + 1e-9
    assert r["audio_s_per_s"]["ssvd"] > 0 and r["audio_s_per_s"]["ceiling"] > 0
