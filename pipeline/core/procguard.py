"""What a process started dies with it, however it dies.

vLLM runs its engine core (and, on some backends, its workers) in child processes. When their
parent is SIGKILLed — a preempted driver, `timeout -s KILL`, the OOM killer, `ray.kill` of an actor,
an actor whose raylet went down — those children are re-parented to init and live on, holding
memory (on a GPU, the whole KV cache); over hundreds of preemptions they pile up (seen here: a
3.3 GB `VLLM::EngineCore` outliving its driver by half an hour).

`guard_descendants()` starts a small watchdog in a session of its own. While its parent lives it
records the parent's descendants (pid and start time) every `poll_s`; when the parent is gone
(its `getppid()` changes), it SIGKILLs every recorded descendant that is still the same process
(same start time, so a reused pid is never hit). Called by Ray worker actors (`guarded`), by a
driver that starts a Ray cluster (`init_ray`) and by an in-process vLLM engine.
"""
from __future__ import annotations

import os
import subprocess
import sys

_WATCHDOG = r"""
import os, signal, sys, time

parent, poll = int(sys.argv[1]), float(sys.argv[2])
me = os.getpid()


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), rest[19]  # ppid, start time
    except (OSError, IndexError, ValueError):
        return None


known = {}
while os.getppid() == parent:
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = stat(d)
            if s:
                children.setdefault(s[0], []).append((int(d), s[1]))
    todo, found = [parent], {}
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if pid != me and pid not in found:
                found[pid] = start
                todo.append(pid)
    # keep earlier descendants that were re-parented (a dead middle process) while they still live
    known = {p: s for p, s in known.items() if (stat(p) or (0, None))[1] == s}
    known.update(found)
    time.sleep(poll)
for pid, start in known.items():
    if (stat(pid) or (0, None))[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
"""
_started_for: int | None = None


def guard_descendants(poll_s: float = 0.5) -> bool:
    """Kill this process's descendants when it dies. Idempotent per process; False where /proc is missing."""
    global _started_for
    pid = os.getpid()
    if _started_for == pid:
        return True
    if not os.path.isdir(f"/proc/{pid}"):
        return False
    subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(pid), str(poll_s)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     close_fds=True)
    _started_for = pid
    return True


def guarded(worker_cls: type) -> type:
    """`worker_cls` whose instances first guard their descendants (for Ray actor classes)."""

    class Guarded(worker_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            guard_descendants()
            super().__init__(*args, **kwargs)

    Guarded.__name__, Guarded.__qualname__ = worker_cls.__name__, worker_cls.__qualname__
    Guarded.__doc__ = worker_cls.__doc__
    return Guarded
