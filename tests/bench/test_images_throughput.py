"""`make bench-images` at toy size: img2dataset's distributor vs. `ssvd images` in-process and on Ray; the last
line is the JSON, and every arm stored every served image (counted from its own output)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.images.schema import image_id

REPO = Path(__file__).resolve().parents[2]
N = 12


def test_images_benchmark_prints_its_ratios_last(tmp_path):
    keep = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "bench" / "images_throughput.py"), "--images", str(N), "--width", "800",
           "--shard-size", "4", "--keep", str(keep)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert {"ratio_vs_img2dataset", "ratio_vs_img2dataset_ray", "ratio_vs_img2dataset_fetch",
            "ratio_vs_img2dataset_fetch_ray", "images_per_s", "images_per_s_fetch", "wall_s", "fetch_s", "stored",
            "load_avg_before", "load_avg_after"} <= set(r)
    arms = ("img2dataset", "ssvd", "ssvd_ray")
    assert (r["images"], r["processes"], r["rounds"], tuple(r["arms"])) == (N, 2, 1, arms)
    assert r["stored"] == {a: [N] for a in arms}
    # the ratio is img2dataset's wall time over the arm's (from unrounded seconds)
    w = r["wall_s"]
    for key, arm in (("ratio_vs_img2dataset", "ssvd"), ("ratio_vs_img2dataset_ray", "ssvd_ray")):
        lo, hi = (w["img2dataset"][0] - 0.005) / (w[arm][0] + 0.005), (w["img2dataset"][0] + 0.005) / (w[arm][0] - 0.005)
        assert lo - 0.001 <= r[key] <= hi + 0.001
        assert abs(r["images_per_s"][arm] - N / w[arm][0]) <= 0.02 * r["images_per_s"][arm] + 0.01
    # counted here from each arm's own output: the N served URLs, each stored once, at the same policy (448 px short side)
    served = {f"/img/{k:05d}.jpg" for k in range(N)}
    i2d = [x for f in sorted((keep / "out/img2dataset").glob("*.parquet")) for x in pq.read_table(f).to_pylist()]
    assert len(i2d) == N and {x["status"] for x in i2d} == {"success"}
    assert {x["url"].split("/", 3)[3] for x in i2d} == {s.lstrip("/") for s in served}
    urls = {x["url"] for x in i2d}
    for arm in ("ssvd", "ssvd_ray"):
        rows = [x for f in sorted((keep / "out" / arm).glob("images-*.parquet")) for x in pq.read_table(f).to_pylist()]
        assert len(rows) == N and {x["status"] for x in rows} == {"ok"}, arm
        assert {x["id"] for x in rows} == {image_id(u) for u in urls}, arm
        assert {min(x["width"], x["height"]) for x in rows} == {448}, arm
    assert {min(x["width"], x["height"]) for x in i2d} == {448}
