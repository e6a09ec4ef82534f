"""A SIGKILLed `ssvd dialogues` leaves no process behind: not its in-process vLLM engine core, not its Ray
cluster, not its actors' engines (the leftovers a preempted run used to pile up)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "captions" / "pixmo"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, start time, name) of a live process, None when it is gone (zombies count as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 1:].split()
    return None if rest[0] == "Z" else (int(rest[1]), rest[19], name)


def _descendants(root: int) -> dict[tuple[int, str], str]:
    """(pid, start time) -> name of every live descendant of root (found through parent ids; processes
    like vLLM's engine core rewrite their environment, so an environment marker cannot find them)."""
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        st = _stat(int(d))
        if st:
            children.setdefault(st[0], []).append(int(d))
    out, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            st = _stat(pid)
            if st:
                out[(pid, st[1])] = st[2]
                todo.append(pid)
    return out


def _still_alive(seen: dict[tuple[int, str], str]) -> dict[tuple[int, str], str]:
    return {k: v for k, v in seen.items() if (_stat(k[0]) or (0, None))[1] == k[1]}


IN_PROCESS = """
import time
from pipeline.dialogue.engines import EngineOptions, VllmEngine
from pipeline.dialogue.models import resolve_model

if __name__ == "__main__":  # vLLM spawns its engine core
    engine = VllmEngine.create(resolve_model("builtin:tiny-mistral"), EngineOptions(device="cpu", cpu_kvcache_gib=1))
    time.sleep(300)
"""


@pytest.mark.parametrize("what,kill", [("cli", "driver"), ("cli", "group"), ("engine", "driver")])
def test_a_killed_run_leaves_no_process(tmp_path, what, kill):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cli", "dialogues", "--source", "pixmo", "--instruction", "COMB", "--input", FIX,
           "--out", tmp_path / "out", "--model", "builtin:tiny-mistral", "--limit", "40", "--workers", "1"]
    if what == "engine":  # a vLLM engine in the process itself (benchmarks, scripts, in-process stages)
        (tmp_path / "engine.py").write_text(IN_PROCESS)
        cmd = [sys.executable, tmp_path / "engine.py"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[tuple[int, str], str] = {}
    try:
        end = time.monotonic() + 300
        while not any("EngineCor" in name for name in seen.values()):  # the engine is up: kill now
            assert p.poll() is None, "the run ended before its engine started"
            assert time.monotonic() < end, "no engine started in 300 s"
            time.sleep(0.5)
            seen.update(_descendants(p.pid))
        time.sleep(2)
        seen.update(_descendants(p.pid))
        if kill == "driver":  # the driver alone, as the OOM killer or `timeout -s KILL` would
            p.kill()
        else:  # the driver's whole process group, as a scheduler's preemption would
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        end = time.monotonic() + 60
        while _still_alive(seen) and time.monotonic() < end:
            time.sleep(0.5)
        assert _still_alive(seen) == {}
    finally:
        if p.poll() is None:
            p.kill()
        for pid, _ in _still_alive(seen):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
