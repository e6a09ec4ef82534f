"""A Ray actor's child processes die with it.

A worker actor is the leader of its own process group, and what it starts (vLLM's engine-core
process, a multiprocessing resource tracker) joins that group. When the actor is killed (`ray.kill`,
a SIGKILLed driver whose raylet takes the workers down, the OOM killer), those children are
re-parented to init and live on, holding memory (and, on a GPU, the KV cache) — over hundreds of
preemptions they pile up. `guard_process_group()` starts a small watchdog in a session of its own
that waits for its parent (the actor) to go and then kills the actor's process group.

The watchdog polls `getppid()`: it changes exactly when the actor dies, and the group id cannot
be reused while any member of the group is alive, so nothing but the actor's leftovers is hit.
"""
from __future__ import annotations

import os
import subprocess
import sys

_WATCHDOG = """
import os, signal, sys, time
leader = int(sys.argv[1])
while os.getppid() == leader:
    time.sleep(float(sys.argv[2]))
try:
    os.killpg(leader, signal.SIGKILL)
except ProcessLookupError:
    pass
"""
_started_for: int | None = None


def guard_process_group(poll_s: float = 0.5) -> bool:
    """Kill this process's group when this process dies. Only for a process group leader (a Ray
    actor is one; a CLI driver run from a shell is not, and its group is the shell's job): returns
    False and does nothing otherwise. Idempotent per process."""
    global _started_for
    pid = os.getpid()
    if _started_for == pid:
        return True
    if os.name != "posix" or os.getpgid(0) != pid:
        return False
    subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(pid), str(poll_s)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     close_fds=True)
    _started_for = pid
    return True


def guarded(worker_cls: type) -> type:
    """`worker_cls` whose instances first guard their process group (for Ray actor classes)."""

    class Guarded(worker_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            guard_process_group()
            super().__init__(*args, **kwargs)

    Guarded.__name__, Guarded.__qualname__ = worker_cls.__name__, worker_cls.__qualname__
    Guarded.__doc__ = worker_cls.__doc__
    return Guarded
