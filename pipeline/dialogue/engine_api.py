"""What every LLM engine shares: the request's sampling, the completion, the engine options, the engine
errors and the `Engine` interface (`await engine.chat(messages, sampling) -> Completion`).

The engines themselves: pipeline/dialogue/engines.py (vLLM in-process, and the factory) and
pipeline/dialogue/openai_engine.py (an OpenAI-compatible server).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from pipeline.dialogue.models import ResolvedModel


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.7
    max_tokens: int = 150
    seed: int | None = None
    min_tokens: int = 1
    ignore_eos: bool = False  # benchmarks only: fixed output lengths
    repetition_penalty: float = 1.0  # 1.0: plain sampling (the released generator's)
    tag: tuple[str, int] = ("", 0)  # (dialogue id, message index): lets benchmarks replay requests


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How to run an engine; everything here is recorded in the run's provenance."""

    kind: str = "vllm"  # vllm | openai
    device: str = "auto"  # auto | cpu | cuda
    max_model_len: int = 0  # 0: the model's default (builtins set their own)
    gpu_memory_utilization: float = 0.90
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # None: True on CPU (fast start), False on GPU
    prefix_caching: bool = True
    max_num_seqs: int = 0  # 0: vLLM's default
    cpu_kvcache_gib: int = 2
    dtype: str = "auto"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_max_concurrency: int = 64  # requests in flight per worker (per engine)
    openai_timeout_s: float = 300.0  # one request, connect to last byte
    openai_retry_s: float = 600.0  # total time one request may spend retrying transient faults (docs/openai.md)

    def to_dict(self) -> dict:
        return asdict(self)


class EngineError(RuntimeError):
    """A request failed; it may succeed when retried."""


class EngineDead(RuntimeError):
    """The engine cannot serve any more requests: its worker must be restarted."""


class EngineRefused(RuntimeError):
    """The server refuses every request (unreachable at start, key refused, model not served): no retry and no
    restarted worker fixes it, so the run stops (resumable) with this message, which says how to fix it."""


class Engine(Protocol):
    model: ResolvedModel

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion: ...

    def info(self) -> dict: ...

    def close(self) -> None: ...
