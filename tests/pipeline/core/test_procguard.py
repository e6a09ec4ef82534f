"""A killed actor takes its children with it (pipeline/core/procguard.py), on a real process tree and Ray."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest



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


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from pipeline.core.procguard import guard_descendants
    if {guard}:
        assert guard_descendants(poll_s=0.1)
    # a child, and a grandchild whose middle process exits (re-parented to init while the parent lives)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    middle = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time; print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']).pid, "
        "flush=True); time.sleep(3)"],
        stdout=subprocess.PIPE, text=True)
    grandchild = int(middle.stdout.readline())
    middle.wait()
    time.sleep(0.5)  # the watchdog (polling every 0.1 s) saw the grandchild while the middle process lived
    print(child.pid, grandchild, flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("guard", [True, False])
def test_a_killed_process_takes_its_descendants(guard):
    """SIGKILL of the parent alone (the OOM killer, `timeout -s KILL`): its descendants die only when guarded."""
    p = subprocess.Popen([sys.executable, "-c", PARENT.format(guard=guard)], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    pids = [int(x) for x in p.stdout.readline().split()]
    assert all(_alive(x) for x in pids)
    p.kill()
    p.wait()
    try:
        assert [_wait_gone(x, 10.0) for x in pids] == [guard, guard]
    finally:
        for x in pids:
            if _alive(x):
                os.kill(x, signal.SIGKILL)


def test_only_descendants_are_hit():
    """The watchdog kills only processes with the start time it recorded: a process that is no descendant
    (here: this test process and its other children) survives a guarded parent's death."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    p = subprocess.Popen([sys.executable, "-c", PARENT.format(guard=True)], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    pids = [int(x) for x in p.stdout.readline().split()]
    p.kill()
    p.wait()
    assert all(_wait_gone(x) for x in pids)
    assert _alive(bystander.pid) and _alive(os.getpid())
    bystander.kill()
    bystander.wait()


DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pipeline.core.ray_pool import RayPool, init_ray

    class SpawningWorker:  # a Ray worker that starts a child process, as vLLM's engine does
        def __init__(self, spec):
            self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

        def info(self):
            return {"pid": os.getpid(), "child": self.child.pid}

        def run(self, items):
            return items

    init_ray(None)
    pool = RayPool(None, 2, worker_cls=SpawningWorker, max_concurrency=1)
    print(json.dumps(pool.infos), flush=True)
    time.sleep(300)
""")


def test_ray_actor_children_die_with_a_killed_driver_group():
    """SIGKILL of the driver's whole process group (preemption) takes the local cluster down; the actors
    (each in a process group of its own, which the kill does not reach) then exit, and no child of theirs
    may outlive them."""
    import json

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    p = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": root})
    infos = json.loads(p.stdout.readline())
    children = [i["child"] for i in infos]
    try:
        assert all(_alive(c) for c in children)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert all(_wait_gone(i["pid"], 60.0) for i in infos)  # the actors notice and exit
        assert all(_wait_gone(c) for c in children)
    finally:
        for pid in children + [i["pid"] for i in infos]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
