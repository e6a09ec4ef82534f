"""Which CPU cores a vLLM CPU engine computes on: each engine of a process gets its share of the process's
cores, within one NUMA node (`cpu_cores_for`), bound while it starts (`cpu_binding`; used by pipeline/dialogue/engines.py)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def numa_nodes(cores: list[int]) -> list[list[int]]:
    """`cores` grouped by NUMA node (from /sys; one group where that is unreadable)."""
    from glob import glob

    allowed, groups = set(cores), []
    for path in sorted(glob("/sys/devices/system/node/node[0-9]*/cpulist")):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        ids = set()
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            ids.update(range(int(lo), int(hi or lo) + 1))
        if ids & allowed:
            groups.append(sorted(ids & allowed))
    covered = {c for g in groups for c in g}
    return groups if covered == allowed else [sorted(allowed)]


def _share(items: list[int], i: int, n: int) -> list[int]:
    """Part i of n near-equal contiguous parts of `items`; all of them when there are fewer items than parts."""
    if n <= 1 or len(items) < n:
        return items
    k, extra = divmod(len(items), n)
    start = i * k + min(i, extra)
    return items[start : start + k + (1 if i < extra else 0)]


def cpu_cores_for(slot: tuple[int, int], cores: list[int] | None = None,
                  nodes: list[list[int]] | None = None) -> list[int]:
    """The CPU cores engine `slot = (index, count)` computes on: its share of this process's cores.

    Engines go round-robin over the NUMA nodes (an engine never spans two, as in vLLM's own binding)
    and share their node's cores; with more engines than cores on a node, those engines share them all."""
    cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
    nodes = numa_nodes(cores) if nodes is None else nodes
    i, n = slot
    node = i % len(nodes)
    on_node = len(range(node, max(n, 1), len(nodes)))
    return _share(nodes[node], i // len(nodes), on_node)


@contextlib.contextmanager
def cpu_binding(slot: tuple[int, int]) -> Iterator[str]:
    """Bind the CPU engine's OpenMP threads to its share of the cores (`cpu_cores_for`: within one NUMA
    node) while it starts; its processes inherit the binding.

    vLLM's CPU backend otherwise reserves one core for its scheduler process and computes on the rest:
    on a 2-core machine one core computes. Measured here (tiny-mistral, 128 requests): 491 tokens/s
    with vLLM's binding, 885 with both cores. A binding the user set ($VLLM_CPU_OMP_THREADS_BIND) wins.
    """
    if os.environ.get(CPU_BIND_ENV):
        yield os.environ[CPU_BIND_ENV]
        return
    binding = ",".join(map(str, cpu_cores_for(slot)))
    keys = (CPU_BIND_ENV, "VLLM_CPU_NUM_OF_RESERVED_CPU")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update({CPU_BIND_ENV: binding, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
    try:
        yield binding
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
