"""Sharing out the CPU cores between engines (pipeline/dialogue/cpu_binding.py); the binding of a real engine's threads:
tests/pipeline/dialogue/test_engines.py."""
from __future__ import annotations

import os

from pipeline.dialogue.cpu_binding import cpu_cores_for, numa_nodes


def test_cpu_cores_are_shared_out_between_engines():
    cores = list(range(7))
    one = [cores]
    assert [cpu_cores_for((i, 3), cores, one) for i in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert cpu_cores_for((0, 1), cores, one) == cores
    assert cpu_cores_for((1, 4), [0, 1], [[0, 1]]) == [0, 1]  # more engines than cores: they share all
    assert cpu_cores_for((1, 2), [0, 1], [[0, 1]]) == [1]
    # two NUMA nodes: one engine stays on node 0 (as vLLM's own binding), engines alternate nodes
    two = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cpu_cores_for((0, 1), list(range(8)), two) == [0, 1, 2, 3]
    assert [cpu_cores_for((i, 2), list(range(8)), two) for i in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [cpu_cores_for((i, 4), list(range(8)), two) for i in range(4)] == [[0, 1], [4, 5], [2, 3], [6, 7]]
    assert [cpu_cores_for((i, 3), list(range(8)), two) for i in range(3)] == [[0, 1], [4, 5, 6, 7], [2, 3]]
    # this machine: every allowed core is in exactly one group
    mine = sorted(os.sched_getaffinity(0))
    assert sorted(c for g in numa_nodes(mine) for c in g) == mine
