"""Replaying recorded engine requests: the ceiling and the lockstep baseline of the throughput benchmark.

A request is (prompt token ids, output tokens). Replays use `ignore_eos` and `max_tokens = output
tokens`, so they do exactly the work that was recorded.
- `all_at_once`: every request submitted together, as independent requests (the engine's ceiling).
- `lockstep`: Kyutai's released generator's schedule: fixed batches of dialogues advance one
  message per step; a step starts only when every message of the previous one has finished.
  With `padded=True` every message of a step also generates as many tokens as the step's longest
  one (surplus discarded), as a padded Hugging Face `generate` batch computes them.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    dialogue: str
    index: int  # message index within its dialogue
    prompt_ids: tuple[int, ...]
    output_tokens: int
    cached_tokens: int = 0


_ids = itertools.count()


async def _one(llm, r: Request, run_tokens: int | None = None) -> int:
    """Replay one request; returns the useful tokens (its recorded output length)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    n = run_tokens or r.output_tokens
    params = SamplingParams(temperature=0.7, max_tokens=n, min_tokens=n, ignore_eos=True, seed=r.index)
    final = None
    async for out in llm.generate(TokensPrompt(prompt_token_ids=list(r.prompt_ids)), params, f"replay{next(_ids)}"):
        final = out
    return min(len(final.outputs[0].token_ids), r.output_tokens)


async def all_at_once(llm, requests: list[Request]) -> dict:
    t0 = time.perf_counter()
    produced = await asyncio.gather(*(_one(llm, r) for r in requests))
    return {"elapsed_s": time.perf_counter() - t0, "completion_tokens": sum(produced), "requests": len(requests)}


async def lockstep(llm, requests: list[Request], batch_dialogues: int = 64, padded: bool = False) -> dict:
    by_dialogue: dict[str, list[Request]] = {}
    for r in sorted(requests, key=lambda r: (r.dialogue, r.index)):
        by_dialogue.setdefault(r.dialogue, []).append(r)
    dialogues = list(by_dialogue.values())
    t0 = time.perf_counter()
    produced = 0
    for b in range(0, len(dialogues), batch_dialogues):
        batch = dialogues[b : b + batch_dialogues]
        for step in range(max(len(d) for d in batch)):
            todo = [d[step] for d in batch if step < len(d)]
            longest = max(r.output_tokens for r in todo) if padded else None
            produced += sum(await asyncio.gather(*(_one(llm, r, longest) for r in todo)))
    return {"elapsed_s": time.perf_counter() - t0, "completion_tokens": produced, "requests": len(requests)}
