"""One (unit, stage) step of `ssvd run`: the same jobs as the single-stage commands, with pools kept
across splits (one engine for every dialogue split with the same settings, one TTS pool, one token pool per kind:
the codec's for speech splits, a tokenizer-only one for text splits)."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.corpus.layout import stage_dir
from pipeline.corpus.plan import Unit
from pipeline.manifest.spec import Manifest
from pipeline.core.ray_pool import KeptPool
from pipeline.core.runner import RunOptions, Summary


def _options(stage: str, progress: bool) -> RunOptions:
    if stage == "dialogues":
        return RunOptions(max_inflight=256, chunk_size=int(os.environ.get("SSVD_CHUNK_SIZE", 8)),
                          flush_rows=int(os.environ.get("SSVD_FLUSH_ROWS", 64)), progress=progress)
    return RunOptions(max_inflight=8, chunk_size=4, flush_rows=8, progress=progress)


def _device(device: str, ray_address: str | None = None, verbose: bool = False) -> str:
    """The speech and token workers' device. `auto`: on a joined Ray cluster (--ray-address) whether the cluster
    has GPUs, as the dialogue stage decides (the driver node may have none); on this machine, its own GPU."""
    if device != "auto":
        return device
    if ray_address:
        import ray

        from pipeline.core.ray_pool import init_ray

        init_ray(ray_address, verbose=verbose)
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def engine_sizing(d, args) -> dict:
    """EngineOptions' sizing keywords: the manifest's models.dialogue, each overridden by its `ssvd run` flag
    when given (RunArgs: None = the manifest's). max_model_len 0: decided per split from its dialogues."""
    pick = {k: getattr(args, k, None) if getattr(args, k, None) is not None else getattr(d, k)
            for k in ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs")}
    return {k: (v or 0) if k in ("max_model_len", "max_num_seqs") else v for k, v in pick.items()}


class Steps:
    def __init__(self, manifest: Manifest, out: Path, args) -> None:
        self.m, self.out, self.args = manifest, Path(out), args
        self.device = _device(args.device, args.ray_address, args.verbose)
        self.kept = {"dialogues": KeptPool(), "images": KeptPool(), "speech": KeptPool(), "tokens": KeptPool()}

    def close_pools(self) -> None:
        for k in self.kept.values():
            k.close()

    def run(self, u: Unit, stage: str) -> Summary:
        out = stage_dir(self.out, u.name, stage)
        if stage == "dialogues":
            return self._benchmark(u, out) if u.is_benchmark else self._dialogues(u, out)
        if stage == "images":
            return self._images(u, stage_dir(self.out, u.name, u.upstream(stage)), out)
        src = stage_dir(self.out, u.name, u.upstream(stage))
        return self._speech(u, src, out) if stage == "speech" else self._tokens(u, src, out)

    # --- dialogues ---
    def _engine_args(self):
        from pipeline.dialogue.engines import EngineOptions
        from pipeline.dialogue.jobs import EngineArgs

        d = self.m.models.dialogue
        eng = EngineOptions(kind=d.engine, device=self.args.device, **engine_sizing(d, self.args),
                            openai_timeout_s=d.openai_timeout_s, openai_retry_s=d.openai_retry_s,
                            openai_max_concurrency=d.openai_max_concurrency,
                            **({"openai_base_url": d.openai_base_url} if d.openai_base_url else {}))
        return EngineArgs(user_model=d.user_model or d.model, assistant_model=d.assistant_model or d.model,
                          engine=eng, workers=max(1, self.args.workers), ray_address=self.args.ray_address,
                          verbose=self.args.verbose)

    def check_engines(self, todo) -> None:
        """Before any work, when the engines will run on this machine's device (no --ray-address): size every
        dialogue split's engine(s) from the model's config and refuse one that cannot hold a full dialogue
        (EngineSizeError). On a joined cluster each worker checks its own GPU before its engine starts."""
        from pipeline.dialogue.jobs import _resolve, engine_options
        from pipeline.dialogue.protocol import DialogueConfig
        from pipeline.dialogue.sizing import check_worker

        todo = [u for u in todo if "dialogues" in u.stages and not u.is_benchmark]
        args = self._engine_args()
        if not todo or args.engine.kind != "vllm" or self.args.ray_address:
            return
        from pipeline.dialogue.models import ModelUnavailable

        try:
            user, assistant = _resolve(args)
        except ModelUnavailable:
            return  # the dialogue step reports it, as before
        seen = set()
        for u in todo:
            if (u.settings.max_pairs, u.settings.max_new_tokens) in seen:
                continue
            seen.add((u.settings.max_pairs, u.settings.max_new_tokens))
            dcfg = DialogueConfig(max_pairs=u.settings.max_pairs, max_new_tokens=u.settings.max_new_tokens,
                                  min_pairs=min(u.settings.min_pairs, u.settings.max_pairs))
            check_worker(user, assistant, engine_options(args, user, assistant, dcfg), args.separate_engines, self.device)

    def _dialogues(self, u: Unit, out: Path) -> Summary:
        from pipeline.dialogue import jobs
        from pipeline.dialogue.protocol import DialogueConfig

        s = u.settings
        dcfg = DialogueConfig(min_pairs=s.min_pairs, max_pairs=s.max_pairs, min_accepted_pairs=s.min_pairs,
                              temperature=s.temperature, max_new_tokens=s.max_new_tokens, on_length=s.on_length,
                              redraws=s.redraws, repetition_penalty=s.repetition_penalty)
        opts = _options("dialogues", self.args.progress)
        if u.role == "generic":
            topics = None
            if u.spec.topics:
                topics = [t.strip() for t in Path(u.spec.topics).read_text().splitlines() if t.strip()]
            count = u.spec.count if s.limit is None else min(u.spec.count, s.limit)
            return jobs.generic(out, count=count, topics=topics, seed=self.m.seed, args=self._engine_args(),
                                dcfg=dcfg, opts=opts, kept=self.kept["dialogues"])
        return jobs.dialogues(u.spec.source, u.spec.instruction, u.spec.input, out, limit=s.limit,
                              replicas=s.replicas, seed=self.m.seed, args=self._engine_args(), dcfg=dcfg,
                              opts=opts, kept=self.kept["dialogues"], caption_options=u.spec.caption_options())

    def _benchmark(self, u: Unit, out: Path) -> Summary:
        from pipeline.sources.benchmarks import open_benchmark
        from pipeline.corpus.benchmark_stage import BenchmarkStage
        from pipeline.core.runner import run_stage

        stage = BenchmarkStage(open_benchmark(u.spec.benchmark, u.spec.input), u.settings.limit)
        return run_stage(stage, out, _no_pool, _options("dialogues", self.args.progress))

    # --- images ---
    def _images(self, u: Unit, src: Path, out: Path) -> Summary:
        """The split's images (pipeline/images). In-process (img2dataset's thread pool) on one machine; on a
        joined Ray cluster (--ray-address) `--workers` actors spread over its nodes. Images another split of
        this corpus stored already are copied from it, not fetched again."""
        from pipeline.images.schema import ImageOptions
        from pipeline.images.stage import images, run_options

        opts = self.args.images or ImageOptions()
        workers = self.args.workers if self.args.ray_address else 0
        reuse = tuple(sorted(p for p in self.out.glob("*/images") if p.is_dir() and p != out))
        embedded = None
        if u.is_benchmark:  # the bytes are in the benchmark dataset: read them back, shard by shard
            from pipeline.sources.benchmarks import open_benchmark

            embedded = open_benchmark(u.spec.benchmark, u.spec.input)
        return images(src, out, opts, workers=workers, ray_address=self.args.ray_address, verbose=self.args.verbose,
                      reuse=reuse, kept=self.kept["images"], embedded=embedded,
                      run_opts=run_options(opts, progress=self.args.progress))

    # --- speech and tokens ---
    def _pool_args(self):
        from pipeline.core.stage_jobs import pool_args

        return pool_args(self.args.workers, self.args.ray_address, self.device, self.args.verbose)

    def speech_spec(self, split: str | None = None):
        from pipeline.speech.worker import SpeechSpec, TimelineConfig, kyutai_options
        from tts.voices import VoiceConfig

        sp = self.m.models.speech
        voices = VoiceConfig(sp.assistant_voice, tuple(sp.user_voices))
        return SpeechSpec(voices, TimelineConfig(), kyutai_options(voices, self.device, sp.model, sp.cfg_coef), split)

    def check(self) -> None:
        """Settings that can be checked before any work (kyutai model, cfg_coef, voice files)."""
        from pipeline.speech.worker import check_speech_spec

        check_speech_spec(self.speech_spec())

    def _speech(self, u: Unit, src: Path, out: Path) -> Summary:
        from pipeline.speech.jobs import speech

        spec = self.speech_spec(u.name)
        return speech(src, out, spec, limit=None, pool_args=self._pool_args(),
                      opts=_options("speech", self.args.progress), kept=self.kept["speech"])

    def _tokens(self, u: Unit, src: Path, out: Path) -> Summary:
        from pipeline.tokens.jobs import tokens
        from pipeline.tokens.worker import TokenSpec

        spec = TokenSpec(kind=u.kind, codec=self.m.models.codec, device=self.device,
                         tokenizer=self.m.models.tokenizer, split=u.name)
        return tokens(src, out, spec, limit=None, pool_args=self._pool_args(),
                      opts=_options("tokens", self.args.progress), kept=self.kept["tokens"])


def _no_pool():
    raise AssertionError("benchmark splits need no workers")
