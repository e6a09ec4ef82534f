"""Ray dialogue workers: each actor owns its engine(s) and keeps many dialogues in flight as coroutines.

The driver (pipeline.core.runner) sends small chunks of work items; an actor runs every item of
every chunk concurrently on its event loop, so the engine always has a full batch to schedule.
A worker whose engine died is restarted and its chunk resent.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace

from pipeline.dialogue.protocol import DialogueConfig, generate_dialogue
from pipeline.dialogue.engines import EngineOptions, _cuda_available, create_engine
from pipeline.dialogue.sizing import check_worker
from pipeline.dialogue.models import ResolvedModel
from pipeline.core.types import WorkItem, dialogue_to_row

from pipeline.core.ray_pool import peak_rss_mib


@dataclass(frozen=True)
class WorkerSpec:
    user_model: ResolvedModel
    assistant_model: ResolvedModel
    engine: EngineOptions
    dialogue: DialogueConfig
    separate_engines: bool = False
    cpu_slot: tuple[int, int] = (0, 1)  # (worker index, workers): on CPU each worker's engine gets its share of cores

    def for_worker(self, index: int, workers: int) -> "WorkerSpec":
        return replace(self, cpu_slot=(index, workers))


class DialogueWorker:
    """Runs dialogues. Used as a Ray actor (see `RayPool`), or directly in-process."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.sizes: list = []  # the engines' sizes (pipeline.dialogue.sizing), checked before they start
        i, n = spec.cpu_slot
        options = spec.engine
        if options.kind == "vllm":  # before any engine starts: refuse one that cannot hold a full dialogue
            device = options.device if options.device != "auto" else ("cuda" if _cuda_available() else "cpu")
            self.sizes = check_worker(spec.user_model, spec.assistant_model, options, spec.separate_engines, device)
        if spec.assistant_model == spec.user_model and not spec.separate_engines:
            user = assistant = create_engine(spec.user_model, options, (i, n))  # same weights: bigger batches
        else:  # two engines in this worker: each computes on half of its cores, and has half the GPU memory
            options = replace(options, gpu_memory_utilization=options.gpu_memory_utilization / 2)
            user = create_engine(spec.user_model, options, (2 * i, 2 * n))
            assistant = create_engine(spec.assistant_model, options, (2 * i + 1, 2 * n))
        self.engines = {"user": user, "assistant": assistant}

    async def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "user": self.engines["user"].info(),
            "assistant": self.engines["assistant"].info(),
            "shared_engine": self.engines["user"] is self.engines["assistant"],
            "sizes": [z.to_dict() for z in self.sizes],
        }

    async def run(self, items: list[WorkItem]) -> list[dict]:
        dialogues = await asyncio.gather(*(generate_dialogue(it, self.engines, self.spec.dialogue) for it in items))
        return [dialogue_to_row(d) for d in dialogues]

    # --- benchmarks (bench/dialogue_throughput.py): same engine instance, recorded requests ---
    async def record(self, on: bool = True) -> None:
        """Record the requests of the user role's engine (both roles' when they share it, as in the benchmark)."""
        self.engines["user"].recorder = [] if on else None

    async def recorded(self) -> list:
        return list(self.engines["user"].recorder or [])

    async def replay(self, requests: list, mode: str = "all", batch_dialogues: int = 64) -> dict:
        """mode: "all" (ceiling), "lockstep", or "lockstep-padded" (HF-style padded batches)."""
        from pipeline.dialogue import replay

        llm = self.engines["user"]._llm
        await llm.reset_prefix_cache()
        if mode == "all":
            return await replay.all_at_once(llm, requests)
        return await replay.lockstep(llm, requests, batch_dialogues, padded=mode == "lockstep-padded")

    async def peak_rss_mib(self) -> float:
        return peak_rss_mib()

    def close(self) -> None:
        for e in {id(e): e for e in self.engines.values()}.values():
            e.close()
