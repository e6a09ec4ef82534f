"""Two runs, one directory (issue 14, item 6), with real `ssvd run` processes on builtin:tiny-mistral.

Run A and run C start at once on two different corpus directories, sharing one fresh model cache (both
build tiny-mistral into it at the same moment). While A holds its directory, a second run B on it is
refused naming A's pid. A is then SIGKILLed with its whole process group; C, on its own Ray cluster, goes
on and finishes. The lock file A leaves behind does not block: the same command on A's directory finishes
its corpus, with the same rows as C's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import yaml

from pipeline.corpus.run import holder
from tests.pipeline.corpus.conftest import ROOT, TINY, ssvd


def _manifest(tmp_path):
    data = yaml.safe_load(TINY.read_text())
    data.pop("generic")
    data["models"]["dialogue"]["model"] = "builtin:tiny-mistral"
    data["defaults"].update(max_new_tokens=16, max_pairs=1, limit=1)
    data["splits"] = [s for s in data["splits"] if s["kind"] == "text"]  # a caption split and a benchmark
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(data))
    return m


def _start(m, out, env):
    return subprocess.Popen([sys.executable, "-m", "cli", "run", str(m), "--out", str(out), "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a scheduler would kill it


def _rows(out):
    return sorted((r["id"], r["status"]) for f in sorted(out.glob("*/tokens/tokens-*.parquet"))
                  for r in pq.read_table(f, columns=["id", "status"]).to_pylist())


def test_one_live_run_per_directory_a_killed_runs_lock_never_blocks_and_two_directories_run_at_once(tmp_path):
    m = _manifest(tmp_path)
    env = {**os.environ, "SSVD_CACHE": str(tmp_path / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("RAY_ADDRESS", None)
    a_dir, c_dir = tmp_path / "a", tmp_path / "c"
    a, c = _start(m, a_dir, env), _start(m, c_dir, env)
    try:
        deadline = time.monotonic() + 300
        while (holder(a_dir / "_corpus.lock") or {}).get("pid") != a.pid:
            assert a.poll() is None, a.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "run A never took its directory"
            time.sleep(0.2)
        b = subprocess.run([sys.executable, "-m", "cli", "run", str(m), "--out", str(a_dir), "--no-progress"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert b.returncode == 2 and f"pid {a.pid}" in b.stderr and "is writing it" in b.stderr, b.stderr[-2000:]
        assert "Traceback" not in b.stderr
        os.killpg(a.pid, signal.SIGKILL)  # preempted: the driver and everything in its group
        a.wait(timeout=60)
        assert a.returncode == -signal.SIGKILL
        assert json.loads((a_dir / "_corpus.lock").read_text())["pid"] == a.pid  # left behind, but not held
        _, err = c.communicate(timeout=900)
        assert c.returncode == 0, err[-4000:]  # the other directory's run did not notice
    finally:
        for p in (a, c):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    # the dead run's lock does not block: the same command, in the same environment (A's model cache)
    again = subprocess.run([sys.executable, "-m", "cli", "run", str(m), "--out", str(a_dir), "--no-progress"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["ok"] is True
    for d in (a_dir, c_dir):
        assert json.loads(ssvd("verify", d).stdout.strip().splitlines()[-1])["ok"] is True
        assert holder(d / "_corpus.lock") is None
    assert _rows(a_dir) == _rows(c_dir) and _rows(c_dir)
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.startswith(".")] == [
        "tiny-mistral-v1"]
