"""`make bench-loader` at toy size on the real tiny corpus: samples/s per core and memory at 1x and Nx shards;
the last line is the JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_loader_benchmark_prints_throughput_and_memory_last(corpus_dir, tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "loader_throughput.py"), "--corpus", str(corpus_dir), "--batches", "3",
           "--warmup", "1", "--batch-size", "2", "--image-size", "32", "--max-frames", "200", "--scale", "3",
           "--keep", str(tmp_path / "keep")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    documented = {"samples_per_s_per_core", "cores", "samples_per_s", "cpu_wall_ratio", "batch_size", "p_concat",
                  "image_size", "corpus", "shards", "peak_rss_mib", "flat_memory", "goal_met"}
    assert documented <= set(r)
    assert (r["batch_size"], r["image_size"], r["p_concat"], r["corpus"]) == (2, 32, 0.5, str(corpus_dir))
    n1 = sum(len(s.get("shards") or []) for s in json.loads((Path(corpus_dir) / "manifest.json").read_text())["splits"])
    assert n1 and r["shards"] == {"1x": n1, "3x": 3 * n1}
    assert r["samples_per_s_per_core"] > 0 and r["samples_per_s"] > 0 and r["cores"] == 1
    peaks = r["peak_rss_mib"]
    assert set(peaks) == {str(n1), str(3 * n1)} and all(v > 0 for v in peaks.values())
    assert r["flat_memory"] == (peaks[str(3 * n1)] <= 1.10 * peaks[str(n1)] + 16)
    assert r["goal_met"] == (r["samples_per_s_per_core"] >= 500 and r["flat_memory"])
