"""Dialogue throughput: ssvd's scheduler vs. the engine's ceiling vs. Kyutai's lockstep schedule.

Measured in one run, on the same model and machine, over the same requests:
- ssvd:     the real `ssvd dialogues` path (stage runner -> Ray worker -> AsyncLLM), every request
            recorded (prompt token ids, output length);
- ceiling:  the *same engine instance* replaying every recorded request at once, as independent
            requests (prefix cache reset first) — what no dialogue scheduler can beat;
- lockstep: a second engine instance with prefix caching off replaying the same requests in
            Kyutai's schedule: fixed batches of 64 dialogues, one message per step, each step
            waiting for its longest message.
- released: the released generator's own engine (`--baseline hf-lockstep`; by default whenever the
            model is a local transformers folder, e.g. builtin:smollm2): the same requests through
            Hugging Face transformers `generate` in left-padded batches of 64 dialogues, one message
            per step, no KV reuse across steps (pipeline/dialogue/replay_hf.py). `ratio_vs_released` is its
            generation time over ssvd's; `ratio_vs_released_with_start` adds each side's model/engine start.
Message lengths follow a fixed distribution drawn from each dialogue's seed (`ignore_eos`),
prompts are the real rendered instructions over the fixture captions.

The last line printed is one JSON object (ratios, tokens/s, prefix-cache hit rate, peak memory).
Without --verbose, only our progress lines (stderr) and the JSON are printed.
`lockstep_vs_ceiling` is the engine's own bound on `ratio_vs_lockstep`: what a scheduler running exactly
at the ceiling would reach (more only through prefix-cache hits the ceiling's replay does not get).
Run: `make bench` or `python bench/dialogue_throughput.py --help`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny-mistral")
    p.add_argument("--engine", default="vllm", choices=["vllm"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dialogues", type=int, default=64)
    p.add_argument("--min-pairs", type=int, default=8)
    p.add_argument("--max-pairs", type=int, default=16)
    p.add_argument("--min-tokens", type=int, default=16, help="shortest message target (tokens)")
    p.add_argument("--max-tokens", type=int, default=96, help="longest message target (tokens)")
    p.add_argument("--workers", type=int, default=0,
                   help="dialogue workers, one engine each (0: one per GPU, or 2 on a CPU with 2+ cores: measured best)")
    p.add_argument("--max-inflight", type=int, default=256)
    p.add_argument("--lockstep-batch", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--captions", default=str(ROOT / "tests" / "fixtures" / "captions" / "pixmo"))
    p.add_argument("--source", default="pixmo")
    p.add_argument("--instruction", default="COMB")
    p.add_argument("--skip-lockstep", action="store_true")
    p.add_argument("--baseline", default="auto", choices=["auto", "hf-lockstep", "none"],
                   help="the released generator's engine as an arm: hf-lockstep (transformers generate), none, or "
                        "auto (hf-lockstep when the model is a local transformers folder)")
    p.add_argument("--hf-batch", type=int, default=64, help="dialogues per transformers batch (the released 64)")
    p.add_argument("--verbose", action="store_true", help="show vLLM, Ray and transformers logs")
    p.add_argument("--padded-lockstep", action="store_true",
                   help="also time lockstep with HF-style padding: every message of a step runs to the step's longest")
    p.add_argument("--memory-scan", type=int, default=0, metavar="N",
                   help="instead: peak memory of driver and worker for N and 10*N short dialogues (fresh processes)")
    p.add_argument("--memory-probe", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args()


def synthetic_captions(n: int, folder: Path) -> Path:
    """n distinct PixMo-style captions (fixture texts, unique image urls), in shards of 1000 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [r["caption"] for f in sorted((ROOT / "tests/fixtures/captions/pixmo").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    for s in range(0, n, 1000):
        rows = [{"image_url": f"https://example.com/synthetic/{i}.jpg", "caption": base[i % len(base)],
                 "transcripts": []} for i in range(s, min(n, s + 1000))]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"train-{s // 1000:05d}.parquet")
    return folder


def memory_probe(a: argparse.Namespace) -> None:
    """One short-dialogue run over N synthetic captions; prints peak RSS of driver and worker."""
    import ray

    from pipeline.sources.captions import open_source
    from pipeline.dialogue.stage import DialogueStage
    from pipeline.dialogue.protocol import DialogueConfig
    from pipeline.dialogue.engines import EngineOptions
    from pipeline.dialogue.models import resolve_model
    from pipeline.core.runner import RunOptions, run_stage
    from pipeline.core.ray_pool import RayPool, init_ray, peak_rss_mib
    from pipeline.dialogue.worker import DialogueWorker, WorkerSpec

    model = resolve_model(a.model)
    dcfg = DialogueConfig(min_pairs=1, max_pairs=1, min_accepted_pairs=1, ignore_eos=True, length_targets=(2, 2))
    with tempfile.TemporaryDirectory() as tmp:
        src = open_source("pixmo", str(synthetic_captions(a.memory_probe, Path(tmp) / "in")))
        stage = DialogueStage(source=src, instruction="LOC", run_seed=0, replicas=1, limit=None, dialogue=dcfg,
                              models={"user": {"name": a.model}, "assistant": {"name": a.model}})
        init_ray(None)
        opts = EngineOptions(kind=a.engine, device=a.device, max_model_len=a.max_model_len)
        pool = RayPool(WorkerSpec(model, model, opts, dcfg), 1, worker_cls=DialogueWorker)
        t0 = time.perf_counter()
        s = run_stage(stage, Path(tmp) / "out", lambda: pool, RunOptions(progress=False, max_inflight=a.max_inflight))
        worker = ray.get(pool.actors[0].peak_rss_mib.remote())
        pool.shutdown()
    print(json.dumps({"captions": a.memory_probe, "dialogues": s.items_run, "seconds": round(time.perf_counter() - t0, 1),
                      "driver_peak_rss_mib": round(peak_rss_mib(), 1), "worker_peak_rss_mib": round(worker, 1)}))


def memory_scan(a: argparse.Namespace) -> None:
    import subprocess

    out = []
    for n in (a.memory_scan, 10 * a.memory_scan):
        cmd = [sys.executable, __file__, "--memory-probe", str(n), "--model", a.model, "--max-inflight",
               str(a.max_inflight), "--max-model-len", str(a.max_model_len)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    small, big = out
    print(json.dumps({"memory_growth_10x": {
        "driver": round(big["driver_peak_rss_mib"] / small["driver_peak_rss_mib"], 3),
        "worker": round(big["worker_peak_rss_mib"] / small["worker_peak_rss_mib"], 3)}, "runs": out}))


def _released(a: argparse.Namespace, model, requests: list, gpus: float, log) -> dict:
    from pipeline.dialogue.replay_hf import hf_lockstep

    import torch

    device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
    log(f"released: transformers generate, left-padded batches of {a.hf_batch} dialogues, one message per step, "
        f"no KV reuse across steps ({device})...")
    return hf_lockstep(model.path, requests, a.hf_batch, device=device, verbose=a.verbose)


def main() -> None:
    a = parse()
    from pipeline.core.cli_options import default_env

    default_env()
    if a.memory_probe:
        return memory_probe(a)
    if a.memory_scan:
        return memory_scan(a)
    import ray

    from pipeline.sources.captions import open_source
    from pipeline.dialogue.stage import DialogueStage
    from pipeline.dialogue.protocol import DialogueConfig
    from pipeline.dialogue.engines import EngineOptions
    from pipeline.dialogue.models import resolve_model
    from pipeline.core.runner import RunOptions, run_stage
    from pipeline.core.ray_pool import RayPool, init_ray, peak_rss_mib
    from pipeline.dialogue.worker import DialogueWorker, WorkerSpec

    model = resolve_model(a.model)
    from pipeline.dialogue.replay_hf import has_hf_weights

    hf = a.baseline == "hf-lockstep" or (a.baseline == "auto" and has_hf_weights(model.path))
    if hf and not has_hf_weights(model.path):
        sys.exit(f"--baseline hf-lockstep: {a.model} ({model.path}) is not a local transformers folder "
                 "(config.json + safetensors)")
    source = open_source(a.source, a.captions)
    n_captions = sum(1 for s in source.shards for r in source.iter_shard(s.index) if not hasattr(r, "reason"))
    replicas = math.ceil(a.dialogues / n_captions)
    limit = math.ceil(a.dialogues / replicas)  # captions used: replicas x limit >= dialogues
    dcfg = DialogueConfig(min_pairs=a.min_pairs, max_pairs=a.max_pairs, min_accepted_pairs=a.min_pairs,
                          ignore_eos=True, length_targets=(a.min_tokens, a.max_tokens), max_new_tokens=a.max_tokens)
    opts = EngineOptions(kind=a.engine, device=a.device, max_model_len=a.max_model_len)
    stage = DialogueStage(source=source, instruction=a.instruction, run_seed=0, replicas=replicas, limit=limit,
                          dialogue=dcfg, models={"user": {"name": a.model}, "assistant": {"name": a.model}})
    init_ray(None, verbose=a.verbose)
    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus = 1.0 if n_gpus > 0 else 0.0
    if a.workers <= 0:
        a.workers = n_gpus or min(2, os.cpu_count() or 1)
    log = lambda *x: print(*x, file=sys.stderr, flush=True)  # noqa: E731

    # --- ssvd: the real stage runner over Ray workers ---------------------------------------
    t0 = time.perf_counter()
    pool = RayPool(WorkerSpec(model, model, opts, dcfg), a.workers, gpus_per_worker=gpus, worker_cls=DialogueWorker)
    ray.get([w.record.remote(True) for w in pool.actors])
    start_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        log(f"ssvd: {limit * replicas} dialogues on {a.workers} worker(s)...")
        t0 = time.perf_counter()
        summary = run_stage(stage, Path(out), lambda: pool, RunOptions(progress=False, max_inflight=a.max_inflight))
        ssvd_s = time.perf_counter() - t0
    recorded = ray.get([w.recorded.remote() for w in pool.actors])
    worker_rss = max(ray.get([w.peak_rss_mib.remote() for w in pool.actors]))
    requests = [r for rs in recorded for r in rs]
    completion = sum(r.output_tokens for r in requests)
    prompt = sum(len(r.prompt_ids) for r in requests)
    cached = sum(r.cached_tokens for r in requests)
    log(f"ssvd: {ssvd_s:.1f}s, {len(requests)} requests, {completion} completion tokens, "
        f"prefix-cache hits {cached / max(prompt, 1):.1%}")

    # --- ceiling: the same engine instances replay their own requests all at once -------------
    log("ceiling: replaying every request at once on the same engine(s)...")
    t0 = time.perf_counter()
    ceil = ray.get([w.replay.remote(rs, "all") for w, rs in zip(pool.actors, recorded)])
    ceiling_s = time.perf_counter() - t0
    pool.shutdown()

    # --- lockstep: a fresh engine with prefix caching off, Kyutai's schedule ------------------
    lock_s = padded_s = float("nan")
    if not a.skip_lockstep:
        log(f"lockstep: batches of {a.lockstep_batch} dialogues, one message per step, no prefix reuse...")
        lopts = EngineOptions(kind=a.engine, device=a.device, max_model_len=a.max_model_len, prefix_caching=False)
        lpool = RayPool(WorkerSpec(model, model, lopts, dcfg), 1, gpus_per_worker=gpus, worker_cls=DialogueWorker)
        res = ray.get(lpool.actors[0].replay.remote(requests, "lockstep", a.lockstep_batch))
        lock_s = res["elapsed_s"]
        if a.padded_lockstep:
            log("lockstep-padded: every message of a step generates as long as the step's longest...")
            padded_s = ray.get(lpool.actors[0].replay.remote(requests, "lockstep-padded", a.lockstep_batch))["elapsed_s"]
        lpool.shutdown()

    # --- released: the released generator's engine, transformers generate in lockstep -----------
    hf_s, hf = float("nan"), hf and _released(a, model, requests, gpus, log)
    if hf:
        hf_s = hf["elapsed_s"]

    tps = {k: round(completion / v, 1) for k, v in (("ssvd", ssvd_s), ("ceiling", ceiling_s), ("lockstep", lock_s),
                                                     ("lockstep_padded", padded_s), ("released", hf_s))
           if v == v}
    result = {
        "ratio_vs_ceiling": round(ceiling_s / ssvd_s, 3),
        "ratio_vs_lockstep": round(lock_s / ssvd_s, 3) if lock_s == lock_s else None,
        "ratio_vs_lockstep_padded": round(padded_s / ssvd_s, 3) if padded_s == padded_s else None,
        # the engine's own bound: what ratio_vs_lockstep a scheduler running exactly at the ceiling would get
        "lockstep_vs_ceiling": round(lock_s / ceiling_s, 3) if lock_s == lock_s else None,
        "ratio_vs_released": round(hf_s / ssvd_s, 3) if hf else None,
        "ratio_vs_released_with_start": round((hf["load_s"] + hf_s) / (start_s + ssvd_s), 3) if hf else None,
        "tokens_per_s": tps,
        "seconds": {"ssvd": round(ssvd_s, 2), "ceiling": round(ceiling_s, 2),
                    "lockstep": round(lock_s, 2) if lock_s == lock_s else None,
                    "lockstep_padded": round(padded_s, 2) if padded_s == padded_s else None,
                    "released": round(hf_s, 2) if hf else None,
                    "ssvd_start": round(start_s, 2), "released_load": round(hf["load_s"], 2) if hf else None},
        "engine": a.engine,
        "model": a.model,
        "device": "cuda" if gpus else "cpu",
        "workers": a.workers,
        "dialogues": summary.items_run,
        "messages": len(requests),
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "prefix_cache_hit_rate": round(cached / max(prompt, 1), 4),
        "peak_rss_mib": {"driver": round(peak_rss_mib(), 1), "worker": round(worker_rss, 1)},
        "ceiling_detail": ceil,
        "released_detail": {k: v for k, v in hf.items() if k not in ("elapsed_s", "load_s")} if hf else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    main()
