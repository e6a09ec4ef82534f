"""The released generator's engine as a benchmark arm: Hugging Face transformers `generate` in lockstep.

Kyutai's released generator (kyutai-labs/moshivis ssvd/generate.py, ssvd/multiturn_prompting.py,
read on GitHub) feeds a transformers "text-generation" pipeline with batches of 64 dialogues; the
tokenizer pads on the left (pad = eos); every step generates one message of each dialogue of the
batch from its full chat prompt, re-encoded from scratch (no KV cache kept across steps); a step's
batch runs until its longest message is done. This module replays recorded requests (prompt token
ids, output length; pipeline/dialogue/replay.py) that way: the same prompts, message counts and token limits
as the ssvd arm, on the same weights, through `model.generate`. Every message of a step generates
as many tokens as the step's longest (`min_new_tokens`): what a padded batch computes anyway.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.dialogue.replay import Request


def has_hf_weights(path: str) -> bool:
    """A local folder transformers can load: config.json and safetensors/bin weights."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (any(p.glob("*.safetensors")) or any(p.glob("*.bin")))


def steps(requests: list[Request], batch_dialogues: int) -> list[list[Request]]:
    """The lockstep schedule: batches of `batch_dialogues` dialogues, one message of each per step."""
    by_dialogue: dict[str, list[Request]] = {}
    for r in sorted(requests, key=lambda r: (r.dialogue, r.index)):
        by_dialogue.setdefault(r.dialogue, []).append(r)
    dialogues = list(by_dialogue.values())
    out = []
    for b in range(0, len(dialogues), batch_dialogues):
        batch = dialogues[b : b + batch_dialogues]
        for step in range(max(len(d) for d in batch)):
            out.append([d[step] for d in batch if step < len(d)])
    return out


def hf_lockstep(model_path: str, requests: list[Request], batch_dialogues: int = 64, temperature: float = 0.7,
                device: str = "cpu", dtype: str = "auto", verbose: bool = False) -> dict:
    """Replay `requests` with transformers generate, left-padded, in the released generator's lockstep.

    Returns elapsed seconds (generation only) and load seconds, the useful completion tokens (the
    recorded lengths), the tokens the batches computed (padding included) and the steps run."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    if not verbose:  # "Setting pad_token_id ...", generation-config notices: not ours to show
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    torch_dtype = {"auto": (torch.float16 if device.startswith("cuda") else torch.float32),
                   "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch_dtype).to(device).eval()
    eos = model.config.eos_token_id
    pad = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0  # as the released generator: pad = eos
    load_s = time.perf_counter() - t0
    plan = steps(requests, batch_dialogues)
    computed = useful = 0
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for todo in plan:
            width = max(len(r.prompt_ids) for r in todo)
            ids = torch.full((len(todo), width), pad, dtype=torch.long)
            mask = torch.zeros((len(todo), width), dtype=torch.long)
            for k, r in enumerate(todo):  # left padding: every prompt ends at the last column
                ids[k, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
                mask[k, width - len(r.prompt_ids):] = 1
            longest = max(r.output_tokens for r in todo)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=longest,
                                 min_new_tokens=longest, do_sample=temperature > 0, temperature=temperature or None,
                                 top_p=None, top_k=None, pad_token_id=pad)
            computed += (out.shape[1] - width) * len(todo)
            useful += sum(min(r.output_tokens, out.shape[1] - width) for r in todo)
    return {"elapsed_s": time.perf_counter() - t0, "load_s": load_s, "completion_tokens": useful,
            "computed_tokens": computed, "requests": sum(len(t) for t in plan), "steps": len(plan),
            "batch_dialogues": batch_dialogues, "dtype": str(torch_dtype).removeprefix("torch.")}
