"""A lost worker and a lost node on a real two-node Ray cluster on this machine (`ray start --head` + `ray start
--address`, two raylets, token authentication, loopback only): `ssvd dialogues` and `ssvd run` with workers on
both nodes; one worker actor's process is SIGKILLed, then the second node's raylet. The run finishes on what
remains, every caption exactly once, and the lost work is reported (warnings, and the run record)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.test_kill_storm import corpus_rows, manifest
from tests.integration.test_ray_cluster import RAY, _free_port, cmdline, kill_cluster, ppid

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "captions"


def _pids(match) -> list[int]:
    return [int(d) for d in filter(str.isdigit, os.listdir("/proc")) if match(cmdline(d))]


class Cluster:
    def __init__(self, tmp: Path):
        self.token = tmp / "auth_token"
        self.token.write_text("ssvd-test-" + os.urandom(16).hex())
        self.temp_dir = Path("/tmp") / f"ssvd-lost-{os.getpid()}"  # Ray needs a short path for its sockets
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token),
                    "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1",
                    "RAY_worker_niceness": "0"}  # Ray starts workers at niceness 15: starved on a busy machine
        self.env.pop("RAY_ADDRESS", None)
        self.node_port = 0
        self._ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", "--num-cpus=1",
                  "--include-dashboard=false", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")

    def _ray(self, *args: str) -> None:
        p = subprocess.run([str(RAY), *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]

    def add_node(self) -> None:
        """A second node (its own raylet) with one CPU."""
        self.node_port = _free_port()
        self._ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                  f"--node-manager-port={self.node_port}", "--disable-usage-stats")

    def raylets(self) -> list[int]:
        """This cluster's raylets (other clusters may run on this machine: never touch their processes)."""
        gcs = f":{self.port}"  # Ray writes the machine's own address into --gcs-address: match the port
        return _pids(lambda c: bool(c) and c[0].endswith("raylet")
                     and any(a.startswith("--gcs-address=") and a.endswith(gcs) for a in c))

    def second_raylet(self) -> list[int]:
        return [p for p in self.raylets() if any(f"={self.node_port}" in a for a in cmdline(p))]

    def workers(self, prefix: str = "ray::") -> list[int]:
        """Ray worker processes of this cluster whose title starts with `prefix` (children of its raylets)."""
        raylets = set(self.raylets())
        return [p for p in _pids(lambda c: bool(c) and c[0].startswith(prefix)) if ppid(p) in raylets]

    def stop(self) -> None:
        kill_cluster(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("ray"))
    try:
        yield c
    finally:
        c.stop()


def _start(cluster: Cluster, *args, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *map(str, args), "--ray-address", cluster.address,
                             "--no-progress"], cwd=ROOT, env={**cluster.env, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(cond, p: subprocess.Popen, what: str, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if p.poll() is not None:
            out, err = p.communicate()
            raise AssertionError(f"the run ended before {what}: rc {p.returncode}\n{err[-4000:]}")
        assert time.monotonic() < end, f"no {what} in {timeout} s"
        time.sleep(0.5)


def _finish(p: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = p.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    assert p.returncode == 0, err[-5000:]
    return out, err


@pytest.mark.full  # minutes of a two-node cluster (make test-full); tests/integration/test_ray_cluster.py runs in CI
def test_dialogues_survive_a_killed_worker_and_a_lost_node(cluster, tmp_path):
    cluster.add_node()
    out = tmp_path / "out"
    p = _start(cluster, "dialogues", "--source", "pixmo", "--instruction", "COMB", "--input", FIX / "pixmo",
               "--out", out, "--limit", 16, "--min-pairs", 2, "--max-pairs", 3, "--max-new-tokens", 24,
               "--model", "builtin:tiny-mistral", "--workers", 2, "--max-inflight", 2,
               SSVD_CHUNK_SIZE="2", SSVD_FLUSH_ROWS="1")  # small chunks, saved as they come: work before and after
    try:
        _wait_for(lambda: len(cluster.workers("ray::DialogueWorker")) == 2, p, "two dialogue workers")
        _wait_for(lambda: any(out.glob(".parts/*/part-*.parquet")) or any(out.glob("dialogues-*.parquet")), p,
                  "a first part file")
        # (a) one worker actor's process, SIGKILLed (its engine core goes with it: procguard)
        os.kill(cluster.workers("ray::DialogueWorker")[0], signal.SIGKILL)
        time.sleep(5)
        # (b) the second node's raylet, SIGKILLed: its workers and engines are lost with it
        raylets = cluster.second_raylet()
        assert len(raylets) == 1, raylets
        if p.poll() is None:
            os.kill(raylets[0], signal.SIGKILL)
        _, err = _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    rows = [r for f in sorted(out.glob("dialogues-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 16 and len({r["caption_id"] for r in rows}) == 16  # every caption exactly once
    assert "died" in err and "sent again" in err  # the lost worker and its lost work, reported
    rec = json.loads((out / "_dialogues.run.json").read_text())
    assert rec["worker_restarts"] >= 1 and rec["items_resent"] >= 1 and rec["state"] == "complete"


@pytest.mark.full  # minutes of a two-node cluster (make test-full)
def test_corpus_run_survives_a_lost_node(cluster, tmp_path):
    """`ssvd run` (dialogues, speech, tokens; text and benchmark splits) with workers on both nodes; the second
    node is lost mid-run: the corpus completes on the head node, each row once, and verifies."""
    cluster.add_node()
    m = manifest(tmp_path)
    out = tmp_path / "corpus"
    p = _start(cluster, "run", m, "--out", out, "--workers", 2)
    try:
        _wait_for(lambda: len(cluster.workers("ray::DialogueWorker")) >= 2, p, "workers")
        time.sleep(10)
        raylets = cluster.second_raylet()
        assert len(raylets) == 1, raylets
        if p.poll() is None:
            os.kill(raylets[0], signal.SIGKILL)
        _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    rows = corpus_rows(out)  # asserts no duplicate
    assert {k[:2] for k in rows} >= {("docci-prop", "tokens"), ("pixelprose-ts1", "tokens"), ("tallyqa", "tokens"),
                                     ("generic", "tokens")}
    v = subprocess.run([sys.executable, "-m", "cli", "verify", str(out)], cwd=ROOT, env=cluster.env,
                       capture_output=True, text=True, timeout=600)
    assert v.returncode == 0, v.stderr[-3000:]
