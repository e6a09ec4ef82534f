"""The first GPU run, in one script (`make gpu-check`): short GPU measurements, no network, one JSON line.

Sections (each under its own time budget; a failing section records its error and the others still run):

- `dialogue`: builtin:nemo-shape (Mistral-Nemo's exact shape, random weights made by vLLM, nothing
  downloaded) in one vLLM engine sized as `ssvd run` sizes it (pipeline/dialogue/sizing.py), then a burst of
  dialogue-shaped requests (a 600-token prompt, 150 generated tokens, ignore_eos): tokens/s, and the KV-cache
  tokens vLLM itself allocated next to ssvd's estimate (`kv_tokens_vllm` vs `kv_tokens_estimated`).
- `mimi`: Mimi's architecture with random weights (tts/codec.py "random") on the GPU: seconds of audio encoded
  per second, 8 stereo dialogues x 10 s (both channels encoded).
- `tts`: the built-in tiny Kyutai TTS (moshi's CUDA-graph path with this torch): turns/s at batch 1 and batched.
- `train`: one optimizer step of the adapters on a frozen random backbone of Moshi's shapes (transformers'
  MoshiConfig defaults, bf16) and PaliGemma 2's SigLIP shape, gradient checkpointing on: step seconds, the
  peak memory next to trainer/memory.py's estimate for the same rows and steps.

Designed for under 8 minutes on one H100 (engine start with dummy weights and CUDA graphs ~1-2 min, the rest
seconds each). Run: `python bench/gpu_check.py` (last line: JSON). Record the figures in docs/throughput.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(results: dict, name: str, fn, *args) -> None:
    t0 = time.monotonic()
    try:
        results[name] = {**fn(*args), "seconds": round(time.monotonic() - t0, 1)}
    except Exception as e:  # one section's failure must not lose the others' figures
        results[name] = {"error": f"{type(e).__name__}: {e}"[:500], "seconds": round(time.monotonic() - t0, 1)}
        traceback.print_exc()
    print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)


def dialogue(requests: int, prompt_tokens: int, new_tokens: int, model_name: str = "builtin:nemo-shape",
             device: str = "cuda") -> dict:
    from pipeline.dialogue.engines import EngineOptions, Sampling, VllmEngine
    from pipeline.dialogue.models import resolve_model
    from pipeline.dialogue.sizing import check_worker, dialogue_tokens

    model = resolve_model(model_name)
    opts = EngineOptions(device=device, max_model_len=dialogue_tokens())
    [size] = check_worker(model, model, opts, False, device)
    t0 = time.monotonic()
    engine = VllmEngine.create(model, opts)
    start_s = time.monotonic() - t0
    cache = engine._llm.vllm_config.cache_config
    # the frontend's copy of the engine core's KV cache (vllm/v1/engine/core_client.py:852-855)
    kv_vllm = int(getattr(cache, "kv_cache_size_tokens", None) or (cache.num_gpu_blocks or 0) * cache.block_size)
    words = ("the red cup stands on a wooden table near the window " * 200).split()

    async def one(i: int):  # a dialogue-shaped request: a system prompt of ~prompt_tokens, 150 tokens out
        msgs = [{"role": "system", "content": " ".join(words[i % 7: i % 7 + prompt_tokens // 2])},
                {"role": "user", "content": f"Question {i}: describe it."}]
        return await engine.chat(msgs, Sampling(temperature=0.7, max_tokens=new_tokens, ignore_eos=True,
                                                min_tokens=new_tokens, seed=i))

    async def burst():
        t = time.monotonic()
        out = await asyncio.gather(*(one(i) for i in range(requests)))
        return out, time.monotonic() - t

    try:
        out, secs = asyncio.run(burst())
    finally:
        engine.close()
    gen = sum(c.completion_tokens for c in out)
    return {"model": model_name, "engine_start_s": round(start_s, 1), "requests": requests,
            "prompt_tokens_mean": round(sum(c.prompt_tokens for c in out) / len(out)), "generated_tokens": gen,
            "tokens_per_s": round(gen / secs, 1), "max_model_len": opts.max_model_len,
            "kv_tokens_estimated": size.kv_tokens, "kv_tokens_vllm": kv_vllm,
            "kv_estimate_ratio": round(size.kv_tokens / kv_vllm, 3) if kv_vllm else None}


def mimi(batch: int, seconds: float, device: str = "cuda") -> dict:
    import numpy as np
    import torch

    from tts.codec import load_codec

    codec = load_codec("random", device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal((2, int(24000 * seconds))).astype(np.float32) * 0.1 for _ in range(batch)]  # stereo
    codec.encode_many(audio[:1])  # warm-up
    sync()
    t = time.monotonic()
    codec.encode_many(audio)
    sync()
    secs = time.monotonic() - t
    return {"batch": batch, "channels": 2, "audio_s": batch * seconds, "audio_s_per_s": round(batch * seconds / secs, 1)}


def tts(turns: int, device: str = "cuda") -> dict:
    from tts.kyutai_backend import KyutaiBackend
    from tts.kyutai_tiny import TINY_VOICES, resolve_kyutai_tiny

    resolve_kyutai_tiny()
    b = KyutaiBackend("builtin:kyutai-tiny", device=device, voices=TINY_VOICES)
    texts = [f"Turn number {i}: the red cup stands on the table near the window." for i in range(turns)]
    voices = [TINY_VOICES[i % len(TINY_VOICES)] for i in range(turns)]
    b.synthesize(texts[0], voices[0], seed=0)  # warm-up (CUDA graphs)
    t = time.monotonic()
    one = [b.synthesize(x, v, seed=i) for i, (x, v) in enumerate(zip(texts, voices))]
    single_s = time.monotonic() - t
    t = time.monotonic()
    many = b.synthesize_batch(texts, voices, list(range(turns)))
    batch_s = time.monotonic() - t
    same = all((a.codes == c.codes).all() for a, c in zip(one, many))
    return {"model": "builtin:kyutai-tiny", "turns": turns, "turns_per_s_batch1": round(turns / single_s, 2),
            "turns_per_s_batched": round(turns / batch_s, 2), "batched_equals_batch1": bool(same)}


def train(rows: int, steps: int, device: str = "cuda") -> dict:
    import torch
    from transformers import MoshiConfig, MoshiForConditionalGeneration, SiglipVisionModel

    from trainer.adapters import VisionAdapters
    from trainer.config import DataConfig, TrainConfig
    from trainer.memory import estimate, paligemma2_448_vision
    from trainer.model import ModelConfig, MoshiVisModel, tiny_batch

    cfg = ModelConfig(backbone="random-moshi", image_encoder="random-siglip", image_size=448, dtype="bfloat16",
                      gradient_checkpointing=True)
    mc, vc = MoshiConfig(), paligemma2_448_vision()
    if device == "cpu":  # --smoke-cpu: the same code on the tiny shapes
        from trainer.model import tiny_configs

        cfg = ModelConfig(image_size=64, dtype="float32", gradient_checkpointing=True)
        mc, vc = tiny_configs(cfg)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        backbone = MoshiForConditionalGeneration._from_config(mc, dtype=dtype).eval().requires_grad_(False)
        encoder = SiglipVisionModel._from_config(vc, dtype=dtype).eval().requires_grad_(False)
        adapters = VisionAdapters(mc.hidden_size, mc.num_attention_heads, mc.num_hidden_layers, vc.hidden_size)
        from transformers.models.moshi.modeling_moshi import MoshiFlexibleLinear

        for mod in backbone.modules():  # drawn N(0, 1) by transformers: tamed as trainer.model.load_backbone does
            if isinstance(mod, MoshiFlexibleLinear):
                torch.nn.init.normal_(mod.weight, std=mc.initializer_range)
    model = MoshiVisModel(cfg, backbone, encoder, adapters.to(device))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=1e-4)
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in tiny_batch("speech", rows, steps, cfg).items()}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(2):  # the first step includes allocator warm-up
        sync()
        t = time.monotonic()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss, _ = model.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.monotonic() - t)
    est = estimate(TrainConfig(cfg, DataConfig(batch_size=rows, max_frames=steps, max_text_tokens=1,
                                               image_size=cfg.image_size)),
                   device=device, backbone_config=mc, encoder_config=vc)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else est.total_bytes
    return {"rows": rows, "steps_per_row": steps, "gradient_checkpointing": True, "step_s": round(times[-1], 2),
            "loss": round(float(loss.detach()), 3), "peak_gib": round(peak / 2**30, 2),
            "estimate_gib": round(est.total_bytes / 2**30, 2), "estimate_ratio": round(est.total_bytes / peak, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=("dialogue", "mimi", "tts", "train"))
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--train-rows", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--smoke-cpu", action="store_true",
                    help="Run mimi, tts and train on the CPU at tiny sizes (checks the code, measures nothing)")
    a = ap.parse_args()
    if a.smoke_cpu:
        results: dict = {"device": "cpu (smoke)"}
        smoke = {"mimi": (1, 1.0, "cpu"), "tts": (2, "cpu"), "train": (1, 24, "cpu"),
                 "dialogue": (2, 60, 8, "builtin:tiny-mistral", "cpu")}
        for name in a.only or ["mimi", "tts", "train", "dialogue"]:
            args = smoke[name]
            _timed(results, name, globals()[name], *args)
        print(json.dumps(results), flush=True)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: nothing here downloads
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here")
    results: dict = {"device": torch.cuda.get_device_name(0),
                     "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                     "torch": torch.__version__}
    try:
        import vllm

        results["vllm"] = vllm.__version__
    except ImportError:
        results["vllm"] = None
    todo = a.only or ["mimi", "tts", "train", "dialogue"]  # the engine last: it holds most of the GPU
    for name in todo:
        args = {"dialogue": (a.requests, 600, 150), "mimi": (8, 10.0), "tts": (16,),
                "train": (a.train_rows, a.train_steps)}[name]
        _timed(results, name, globals()[name], *args)
        torch.cuda.empty_cache()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
