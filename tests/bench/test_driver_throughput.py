"""`make bench-driver` at toy size: every stage's driver measured with instant workers; the last line is the JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def test_driver_benchmark_measures_every_stage_and_the_no_op_rerun(tmp_path):
    keep = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "bench" / "driver_throughput.py"), "--rows", "240", "--shard-rows", "100",
           "--audio-s", "0.2", "--noop-rows", "120", "--noop-small", "12", "--repeats", "2", "--keep", str(keep)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(r["stages"]) == {"dialogues", "speech", "tokens"}
    for name, s in r["stages"].items():
        # every row went through the driver, shard i in -> shard i out (240 rows in files of 100: 3 shards)
        assert (s["rows"], s["shards"]) == (240, 3), s
        assert s["driver_rows_per_s"] > 0 and s["driver_cpu_s_per_1000_rows"] > 0
        assert s["worker_wall_s"] < s["wall_s"]
        files = sorted((keep / "run" / name).glob(f"{name}-*.parquet"))
        assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 240
    # the speech rows carry the audio: that is what passes through today's driver
    assert r["stages"]["speech"]["bytes_per_row_through_driver"] > r["stages"]["dialogues"]["bytes_per_row_through_driver"]
    assert r["noop"]["big"]["rows"] == 120 and r["noop"]["small"]["rows"] == 12
    assert r["noop"]["ratio"] == round(r["noop"]["big"]["rerun_s"] / r["noop"]["small"]["rerun_s"], 3)
    assert r["noop"]["ratio_min"] == round(r["noop"]["big"]["min_s"] / r["noop"]["small"]["min_s"], 3)
    assert len(r["machine"]["load_avg"]) == 3
