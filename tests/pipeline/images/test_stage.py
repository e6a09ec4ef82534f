"""`ssvd images` against a real HTTP server on 127.0.0.1: every outcome with its reason, the address
policy, hash verification, real pixels stored, and a killed run resumed without fetching anything twice."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.images.fixture_server import encode, fixture_image
from pipeline.images.schema import IMAGES_SCHEMA, image_id
from tests.pipeline.images.conftest import write_dialogues

ROOT = Path(__file__).resolve().parents[3]

# path on the test server -> (status, reason) with --min-side 16 --timeout-s 2 --retries 0
EXPECT = {
    "/pixmo/000001.jpg": ("ok", ""),
    "/docs/page-2.png": ("ok", ""),
    "/bad/redirect.jpg": ("ok", ""),
    "/hash/good.jpg": ("ok", ""),
    "/bad/404.jpg": ("rejected", "image:dead_link"),
    "/bad/500.jpg": ("failed", "image:server_error"),
    "/bad/slow.jpg": ("failed", "image:timeout"),
    "/bad/page.html": ("rejected", "image:not_an_image"),
    "/bad/html.jpg": ("rejected", "image:not_an_image"),
    "/bad/truncated.jpg": ("rejected", "image:truncated"),
    "/hash/wrong.jpg": ("rejected", "image:hash_mismatch"),
    "/bad/to-private.jpg": ("rejected", "image:refused_address"),
    "/bad/to-metadata.jpg": ("rejected", "image:refused_address"),
    "/bad/to-file.jpg": ("rejected", "image:refused_scheme"),
    "/bad/optout.jpg": ("rejected", "image:opt_out"),
    "/bad/huge.png": ("rejected", "image:too_many_pixels"),
    "/bad/tiny.jpg": ("rejected", "image:too_small"),
}


def ssvd(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"ssvd {' '.join(map(str, args))} exited {p.returncode}:\n{p.stderr[-4000:]}")
    return p


def _ref(base: str, path: str) -> dict:
    sha = None
    if path == "/hash/good.jpg":
        sha = hashlib.sha256(encode(fixture_image(path))).hexdigest()
    elif path == "/hash/wrong.jpg":
        sha = hashlib.sha256(b"other bytes").hexdigest()
    return {"url": base + path, "sha256": sha}


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for f in sorted(out.glob("images-*.parquet")):
        assert pq.read_schema(f).remove_metadata().equals(IMAGES_SCHEMA.remove_metadata())
        for r in pq.read_table(f).to_pylist():
            assert r["id"] not in rows, f"image {r['id']} stored twice"
            rows[r["id"]] = r
    return rows


COMMON = ("--workers", "0", "--timeout-s", "2", "--retries", "0", "--min-side", "16", "--no-progress")


def test_every_outcome_with_its_reason(image_server, tmp_path):
    base = image_server.base
    paths = list(EXPECT)
    local = ROOT / "tests/fixtures/captions/docci/images/train_00001.jpg"
    shard0 = [_ref(base, p) for p in paths[:9]] + [None, _ref(base, paths[0])]  # no image; a repeat
    mine = tmp_path / "local.png"
    fixture_image("/local.png").save(mine)
    shard1 = [_ref(base, p) for p in paths[9:]] + [{"url": "file:///etc/passwd"}, {"path": str(local)},
                                                   {"path": "/no/such/file.jpg"}, {"path": str(mine)}]
    dlg = write_dialogues(tmp_path / "dlg", [shard0, shard1])
    out = tmp_path / "images"
    before = image_server.requests.copy()
    p = ssvd("images", "--in", dlg, "--out", out, "--allow-address", "127.0.0.1", *COMMON)
    rows = _rows(out)
    assert len(rows) == len(paths) + 4  # each image once; the repeat and the imageless row add none
    for path, (status, reason) in EXPECT.items():
        r = rows[image_id(base + path)]
        assert (r["status"], r["reason"]) == (status, reason), (path, r["error"])
    assert rows[image_id("file:///etc/passwd")]["reason"] == "image:refused_scheme"
    assert rows[image_id(None, str(local))]["reason"] == "image:too_small"  # DOCCI fixture: 8 x 6 < --min-side 16
    assert rows[image_id(None, str(mine))]["status"] == "ok"
    assert rows[image_id(None, "/no/such/file.jpg")]["reason"] == "image:not_found"
    # the private / metadata redirect targets were never contacted (they are not this server), and the
    # repeated reference was fetched once
    assert image_server.requests["/pixmo/000001.jpg"] - before["/pixmo/000001.jpg"] == 1
    # stored pixels are the served image (JPEG re-encoded: close, not exact)
    from PIL import Image

    r = rows[image_id(base + "/pixmo/000001.jpg")]
    got = np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"), np.float32)
    want = np.asarray(fixture_image("/pixmo/000001.jpg"), np.float32)
    assert got.shape == want.shape and np.abs(got - want).mean() < 4
    assert (r["width"], r["height"], r["format"]) == (96, 72, "jpg")
    assert r["content_sha256"] == hashlib.sha256(encode(fixture_image("/pixmo/000001.jpg"))).hexdigest()
    # counted in the run record and the command's JSON line
    rec = json.loads((out / "_images.run.json").read_text())
    n_bad = sum(1 for s, _ in EXPECT.values() if s != "ok") + 3
    assert sum(rec["images"]["by_reason"].values()) == n_bad
    assert rec["images"]["by_reason"]["image:refused_address"] == 2
    assert rec["input"]["no_image_reference"] == 1 and rec["input"]["refs_repeated"] == 1
    assert rec["input"]["not_ok_rows"] == 2
    assert json.loads(p.stdout.splitlines()[-1])["images"]["status"]["ok"] == 5


def test_private_addresses_refused_without_the_allow_list(image_server, tmp_path):
    from pipeline.images.cli import options
    from pipeline.images.stage import images
    from pipeline.core.runner import RunOptions

    base = image_server.base
    dlg = write_dialogues(tmp_path / "dlg", [[_ref(base, "/pixmo/refused.jpg")]])
    out = tmp_path / "images"
    images(dlg, out, options(timeout_s=2, retries=0), workers=0, run_opts=RunOptions(progress=False))  # in-process
    (r,) = _rows(out).values()
    assert (r["status"], r["reason"]) == ("rejected", "image:refused_address")
    assert "127.0.0.1" in r["error"] and "loopback" in r["error"]
    assert image_server.requests["/pixmo/refused.jpg"] == 0  # refused before connecting


def test_killed_and_resumed_fetches_nothing_twice(image_server, tmp_path):
    base = image_server.base
    # 4 chunks of 16 images (a chunk is 2 x --threads images), each with one slow image (2 s timeout),
    # so that the run is still going when the first chunk's rows are saved
    refs = []
    for c in range(4):
        refs += [{"url": f"{base}/resume/{c}-{i}.jpg"} for i in range(15)] + [{"url": f"{base}/slow/{c}.jpg"}]
    dlg = write_dialogues(tmp_path / "dlg", [refs])
    out = tmp_path / "images"
    cmd = [sys.executable, "-m", "cli", "images", "--in", str(dlg), "--out", str(out), "--allow-address",
           "127.0.0.1", "--threads", "8", *COMMON]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / ".parts" / "images-00000"
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and list(parts.glob("part-*.parquet"))):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = {r["url"] for f in parts.glob("part-*.parquet") for r in pq.read_table(f, columns=["url"]).to_pylist()}
    assert 0 < len(saved) < len(refs)
    counts_at_kill = image_server.requests.copy()
    ssvd("images", "--in", dlg, "--out", out, "--allow-address", "127.0.0.1", "--threads", "8", *COMMON)
    rows = _rows(out)
    assert len(rows) == len(refs)
    for u in saved:  # nothing saved before the kill was fetched again
        path = u[len(base):]
        assert image_server.requests[path] == counts_at_kill[path], (path, rows[image_id(u)])
        if rows[image_id(u)]["status"] == "ok":
            assert counts_at_kill[path] == 1
    # every image accounted for: the fast ones ok (a busy machine may time some out: counted), the slow ones not
    assert {r["reason"] for r in rows.values() if r["status"] != "ok"} == {"image:timeout"}
    assert all(rows[image_id(f"{base}/slow/{c}.jpg")]["reason"] == "image:timeout" for c in range(4))
    assert sum(r["status"] == "ok" for r in rows.values()) > 0
    # a third run fetches nothing at all
    before = sum(image_server.requests.values())
    ssvd("images", "--in", dlg, "--out", out, "--allow-address", "127.0.0.1", "--threads", "8", *COMMON)
    assert sum(image_server.requests.values()) == before
