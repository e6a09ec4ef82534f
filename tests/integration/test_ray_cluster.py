"""Joining a real `ray start --head` cluster on this machine (loopback only): token authentication.

The head runs in its own --temp-dir, so no `ray_current_cluster` file is left where other runs look.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")

JOIN = """
import ray
from pipeline.core.ray_pool import init_ray
init_ray({address!r})
print("CPUS", ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


def cmdline(pid: int | str) -> list[str]:
    """A process's arguments ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def ppid(pid: int | str) -> int:
    """A process's parent id (-1 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(text[text.rindex(")") + 1:].split()[1])


def kill_cluster(temp_dir: Path) -> None:
    """SIGKILL a test cluster's processes: those naming its temp dir, and their descendants. Never `ray stop`:
    it stops every Ray process of the machine, other people's clusters included."""
    pids = [d for d in os.listdir("/proc") if d.isdigit()]
    children: dict[int, list[int]] = {}
    for pid in pids:
        children.setdefault(ppid(pid), []).append(int(pid))
    todo = [int(p) for p in pids if any(str(temp_dir) in a for a in cmdline(p))]
    doomed = set(todo)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in doomed:
                doomed.add(c)
                todo.append(c)
    for pid in doomed:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A one-node cluster started by `ray start --head` in token mode, with its own token file."""
    tmp = tmp_path_factory.mktemp("ray")
    token = tmp / "auth_token"
    token.write_text("ssvd-test-" + os.urandom(16).hex())
    temp_dir = Path("/tmp") / f"ssvd-ray-{os.getpid()}"  # Ray needs a short path for its sockets
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    # a second node (its own raylet) on this machine, in the same token mode with the head's token
    p = subprocess.run([str(RAY), "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", token
    finally:
        kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _join(address: str, **env_over: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(env_over, PYTHONPATH=str(ROOT))
    return _driver(JOIN.format(address=address), env)


def _driver(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_join_without_the_token_mode_fails_saying_what_to_set(token_head):
    address, _ = token_head
    p = _join(address, RAY_py_gcs_connect_timeout_s="8", RAY_gcs_rpc_server_connect_timeout_s="8")
    assert p.returncode != 0
    assert "InvalidAuthToken" in p.stderr or "uthentication" in p.stderr
    assert "RAY_AUTH_MODE=(unset)" in p.stderr  # ssvd's note: the mode it used ...
    assert "RAY_AUTH_MODE=token everywhere" in p.stderr and "~/.ray/auth_token" in p.stderr  # ... and the fix


def test_join_with_the_token_mode_and_token_works(token_head):
    address, token = token_head
    p = _join(address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "CPUS 2.0" in p.stdout  # both nodes joined


SPREAD = """
import json, os, ray
from dataclasses import dataclass, replace
from pipeline.core.ray_pool import RayPool, init_ray

@dataclass(frozen=True)
class Spec:
    slot: tuple = (0, 1)
    def for_worker(self, index, workers):
        return replace(self, slot=(index, workers))

class Where:
    def __init__(self, spec):
        self.spec = spec
    def info(self):
        return {{"node": ray.get_runtime_context().get_node_id(), "slot": list(self.spec.slot)}}
    def run(self, items):
        return items

init_ray({address!r})
pool = RayPool(Spec(), {workers}, worker_cls=Where, max_concurrency=1)
print("INFOS", json.dumps(pool.infos))
pool.shutdown()
ray.shutdown()
"""


@pytest.mark.parametrize("workers", [2, 3])
def test_cpu_workers_spread_over_the_nodes_with_per_node_core_slots(token_head, workers):
    """CPU workers ask for almost no CPU, yet spread over both nodes; each engine's core share is its slot among
    the workers of its own node (one worker alone on a node gets all of that node's cores)."""
    import json
    from collections import Counter

    address, token = token_head
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": str(ROOT)}
    p = _driver(SPREAD.format(address=address, workers=workers), env)
    assert p.returncode == 0, p.stderr[-3000:]
    infos = json.loads(p.stdout.split("INFOS", 1)[1])
    per_node = Counter(i["node"] for i in infos)
    assert len(per_node) == 2 and sorted(per_node.values()) == ([1, 1] if workers == 2 else [1, 2])
    for node, count in per_node.items():
        slots = sorted(tuple(i["slot"]) for i in infos if i["node"] == node)
        assert slots == [(k, count) for k in range(count)]
