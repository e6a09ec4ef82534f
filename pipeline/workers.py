"""Ray dialogue workers: each actor owns its engine(s) and keeps many dialogues in flight as coroutines.

The driver (pipeline.runner) sends small chunks of work items; an actor runs every item of
every chunk concurrently on its event loop, so the engine always has a full batch to schedule.
A worker whose engine died is restarted and its chunk resent.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from pipeline.dialogues import DialogueConfig, generate_dialogue
from pipeline.engines import EngineDead, EngineOptions, create_engine
from pipeline.models import ResolvedModel
from pipeline.types import WorkItem, dialogue_to_row

# Environment the engines need inside Ray workers (copied from the driver when set there).
_FORWARD_ENV = ("VLLM_", "HF_", "HUGGING_FACE_", "SSVD_", "OPENAI_", "OMP_", "CUDA_VISIBLE_DEVICES", "TRANSFORMERS_")


@dataclass(frozen=True)
class WorkerSpec:
    user_model: ResolvedModel
    assistant_model: ResolvedModel
    engine: EngineOptions
    dialogue: DialogueConfig
    separate_engines: bool = False


class DialogueWorker:
    """Runs dialogues. Used as a Ray actor (see `RayPool`), or directly in-process."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        user = create_engine(spec.user_model, spec.engine)
        if spec.assistant_model == spec.user_model and not spec.separate_engines:
            assistant = user  # same weights: one engine, bigger batches
        else:
            assistant = create_engine(spec.assistant_model, spec.engine)
        self.engines = {"user": user, "assistant": assistant}

    async def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "user": self.engines["user"].info(),
            "assistant": self.engines["assistant"].info(),
            "shared_engine": self.engines["user"] is self.engines["assistant"],
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
        from pipeline import replay

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


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def init_ray(address: str | None, *, verbose: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV)}
    kwargs: dict[str, Any] = dict(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        log_to_driver=verbose,
        runtime_env={"env_vars": env} if env else None,
        configure_logging=True,
        logging_level="INFO" if verbose else "WARNING",
    )
    if not kwargs["address"]:
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)


class RayPool:
    """`workers` DialogueWorker actors; submit chunks, collect finished ones, restart dead workers."""

    MAX_RESTARTS = 3

    def __init__(self, spec: WorkerSpec, workers: int, gpus_per_worker: float = 0.0, max_concurrency: int = 4096):
        import ray

        self._ray = ray
        self._cls = ray.remote(DialogueWorker).options(
            num_cpus=0, num_gpus=gpus_per_worker, max_concurrency=max_concurrency
        )
        self.spec = spec
        self.size = workers
        self.actors = [self._cls.remote(spec) for _ in range(workers)]
        self.infos = ray.get([a.info.remote() for a in self.actors])
        self._pending: dict[Any, tuple[int, list[WorkItem], Any]] = {}
        self._load = [0] * workers
        self.restarts = 0

    def inflight(self) -> int:
        return sum(len(p[1]) for p in self._pending.values())

    def submit(self, items: list[WorkItem]) -> Any:
        w = min(range(self.size), key=self._load.__getitem__)
        ref = self.actors[w].run.remote(items)
        self._pending[ref] = (w, items, self.actors[w])
        self._load[w] += len(items)
        return ref

    def wait(self, timeout_s: float) -> list[tuple[Any, list[dict]]]:
        if not self._pending:
            time.sleep(min(timeout_s, 0.05))
            return []
        ready, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout_s)
        out = []
        for ref in ready:
            w, items, actor = self._pending.pop(ref)
            self._load[w] -= len(items)
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as e:  # the actor died or its engine did: restart it, resend the chunk
                if not _is_engine_death(e):
                    raise
                if self.actors[w] is actor:  # not yet restarted by another of its failed chunks
                    self._restart(w, e)
                self.submit(items)
        return out

    def _restart(self, w: int, error: Exception) -> None:
        self.restarts += 1
        if self.restarts > self.MAX_RESTARTS * self.size:
            raise RuntimeError(f"workers keep dying ({self.restarts} restarts); last error: {error}") from error
        try:
            self._ray.kill(self.actors[w])
        except Exception:
            pass
        self.actors[w] = self._cls.remote(self.spec)

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:
                pass


def _is_engine_death(e: Exception) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(e, RayActorError) or EngineDead.__name__ in str(e)
