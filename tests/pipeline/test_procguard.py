"""A killed actor takes its children with it (pipeline/procguard.py), on a real process tree and Ray."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.procguard import guard_process_group


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


LEADER = textwrap.dedent("""
    import subprocess, sys, time
    from pipeline.procguard import guard_process_group
    guarded = {guard}
    if guarded:
        assert guard_process_group(poll_s=0.1)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    print(child.pid, flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("guard", [True, False])
def test_a_killed_group_leader_takes_its_children(guard):
    """SIGKILL of the leader alone (as raylet or the OOM killer does): its child dies only when guarded."""
    p = subprocess.Popen([sys.executable, "-c", LEADER.format(guard=guard)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    child = int(p.stdout.readline())
    assert _alive(child)
    p.kill()
    p.wait()
    try:
        assert _wait_gone(child, 10.0) is guard
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_not_a_group_leader_is_left_alone():
    """The test process is not its group's leader (pytest runs in the shell's job): no watchdog, no kill."""
    if os.getpgid(0) == os.getpid():
        pytest.skip("pytest is itself a process group leader here")
    assert guard_process_group() is False


DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pipeline.ray_pool import RayPool, init_ray

    class SpawningWorker:  # a Ray worker that starts a child process, as vLLM's engine does
        def __init__(self, spec):
            self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

        def info(self):
            return {"pid": os.getpid(), "child": self.child.pid, "pgid": os.getpgid(0)}

        def run(self, items):
            return items

    init_ray(None)
    pool = RayPool(None, 2, worker_cls=SpawningWorker, max_concurrency=1)
    print(json.dumps(pool.infos), flush=True)
    time.sleep(300)
""")


def test_ray_actor_children_die_with_a_killed_driver_group():
    """SIGKILL of the driver's whole process group (preemption) takes the local cluster down; the actors
    (each the leader of its own group) then exit, and no child of theirs may outlive them."""
    import json

    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    p = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": root})
    infos = json.loads(p.stdout.readline())
    children = [i["child"] for i in infos]
    try:
        assert all(i["pgid"] == i["pid"] != p.pid for i in infos)  # each actor leads its own group
        assert all(_alive(c) for c in children)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert all(_wait_gone(i["pid"], 60.0) for i in infos)  # the actors notice and exit
        assert all(_wait_gone(c) for c in children)
    finally:
        for pid in children + [i["pid"] for i in infos]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
