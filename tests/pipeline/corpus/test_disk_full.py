"""`ssvd run` on a volume that fills up (issue 14, item 4), on a real tmpfs mounted by the test.

The session's tiny corpus is copied onto a tmpfs without its speech split's speech and tokens, with a
few hundred KB to spare: the speech shard (about 1 MB of audio) cannot be written. The run stops with one
error naming the volume and the space needed; no shard, part or `*.tmp` is left broken; `ssvd verify`
passes on what manifest.json lists and says the corpus is partial; after the volume is enlarged the same
command completes it, with the rows the uninterrupted corpus has."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq

from tests.pipeline.corpus.conftest import TINY, ssvd
from tests.pipeline.core.test_disk_space import resize, tmpfs


def test_a_full_volume_stops_the_run_cleanly_and_a_larger_one_completes_it(corpus_dir, tmp_path):
    with tmpfs(tmp_path / "vol", "64m") as vol:
        out = vol / "corpus"
        shutil.copytree(corpus_dir, out)
        for stage in ("speech", "tokens"):
            shutil.rmtree(out / "docci-prop" / stage)
        used = shutil.disk_usage(vol).used
        resize(vol, f"{used // 1024 + 384}k")  # room for run records and manifest.json, not for the audio

        p = ssvd("run", TINY, "--out", out, "--no-progress", "--workers", "0", check=False)
        assert p.returncode == 2, p.stderr[-3000:]
        assert "Traceback" not in p.stderr
        err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        assert len(err) == 1, p.stderr[-3000:]
        assert f"disk full: the volume {vol} (tmpfs" in err[0] and "which needs about" in err[0]
        assert "speech" in err[0] and "run the same command again" in err[0]

        assert not list(out.rglob("*.tmp"))
        for f in out.rglob("*.parquet"):  # every shard and part file there is whole
            pq.read_table(f)
        prov = json.loads((out / "manifest.json").read_text())
        assert prov["state"] == "partial"
        assert {s["name"]: s["state"] for s in prov["splits"]}["docci-prop"] != "complete"
        v = ssvd("verify", out, check=False)
        assert v.returncode == 0, v.stderr[-2000:]
        assert json.loads(v.stdout.strip().splitlines()[-1]) | {"shards_checked": 0} == {
            "shards_checked": 0, "bad": 0, "ok": True, "state": "partial"}
        assert "partial" in v.stderr and "docci-prop" in v.stderr

        resize(vol, "64m")
        ssvd("run", TINY, "--out", out, "--no-progress", "--workers", "0")
        assert json.loads(ssvd("verify", out).stdout.strip().splitlines()[-1])["state"] == "complete"
        for stage in ("speech", "tokens"):
            want, got = ([r for f in sorted((d / "docci-prop" / stage).glob(f"{stage}-*.parquet"))
                          for r in pq.read_table(f, columns=["id", "status"]).to_pylist()] for d in (corpus_dir, out))
            assert sorted(got, key=str) == sorted(want, key=str) and got
