"""Speech + tokens throughput vs. the Mimi-encode-only ceiling, measured in one run on the same audio.

- ssvd:    `ssvd speech` then `ssvd tokens` through the real stage runner (TTS per turn, timeline,
           FLAC shards; then FLAC decode, Mimi encode of both channels, text stream, token shards);
- ceiling: the same codec encoding the same stereo audio (decoded from the speech shards beforehand,
           not timed) in the same batches, in this process with every core — what the tokens stage
           cannot beat, since every sample must go through Mimi.
ratio_vs_ceiling = (audio seconds / ssvd wall seconds) / (audio seconds / ceiling wall seconds).

Dialogues are built from the fixture captions' sentences (assistant) and spoken questions (user),
seeded, so the workload is the same on every run. The last line printed is one JSON object.
Run: `make bench-speech` or `python bench/speech_throughput.py --help`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "What's the first thing you notice in this picture?", "How many people can you see?",
    "What colors stand out the most?", "Where do you think this was taken?", "Is there any text in the image?",
    "What is happening in the background?", "Can you describe the lighting?", "What time of day does it look like?",
    "Is anything unusual going on here?", "What's on the left side?", "And what about the right?",
    "Does it look crowded or quiet?",
]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dialogues", type=int, default=6)
    p.add_argument("--pairs", type=int, default=6, help="question/answer pairs per dialogue")
    p.add_argument("--workers", type=int, default=0, help="Ray workers per stage (0: in-process, no Ray)")
    p.add_argument("--codec", default="random", help="Mimi weights (random[:SEED], kyutai/mimi, a folder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--assistant-voice", default="piper:joe")
    p.add_argument("--user-voice", action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    return p.parse_args()


def caption_sentences() -> list[str]:
    import pyarrow.parquet as pq

    out = []
    for f in sorted((ROOT / "tests/fixtures/captions/pixmo").glob("*.parquet")):
        for cap in pq.read_table(f, columns=["caption"]).column("caption").to_pylist():
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", cap or "") if 30 <= len(s.strip()) <= 220]
    return out


def write_dialogues(out: Path, n: int, pairs: int, seed: int) -> None:
    from pipeline.core.runstate import RunState
    from pipeline.core.shards import ShardStore
    from pipeline.core.types import DIALOGUE_SCHEMA, Dialogue, Turn, dialogue_to_row

    rng = random.Random(seed)
    sentences = caption_sentences()
    rows = []
    for i in range(n):
        turns = []
        for _ in range(pairs):
            turns.append(Turn("user", rng.choice(QUESTIONS), "COMB"))
            turns.append(Turn("assistant", " ".join(rng.sample(sentences, 2)), "COMB"))
        rows.append(dialogue_to_row(Dialogue(id=f"bench{i:04d}", caption_id=f"c{i}", source="pixmo", instruction="COMB",
                                             seed=seed * 100003 + i, turns=turns, prompt_version="bench")))
    store = ShardStore(out, "dialogues", DIALOGUE_SCHEMA)
    store.write_part(0, rows)
    store.finalize(0)
    st = RunState(out, "dialogues")
    st.begin({"stage": "dialogues", "bench": seed})
    st.finish({})


def encode_in_process(codec, batches) -> float:
    codec.encode_many([batches[0][0][:, :24000]])  # warm-up, as the workers' first batch is
    t = time.perf_counter()
    for b in batches:
        codec.encode_many(b)
    return time.perf_counter() - t


class _Encoder:
    def __init__(self, spec: str, device: str):
        from tts.codec import load_codec

        self.codec = load_codec(spec, device=device)
        self.codec.encode_many([__import__("numpy").zeros((2, 24000), dtype="float32")])

    def ready(self) -> bool:
        return True

    def encode(self, batches) -> float:
        t = time.perf_counter()
        for b in batches:
            self.codec.encode_many(b)
        return time.perf_counter() - t


def encode_on_ray(spec: str, device: str, batches, workers: int, cpus: float) -> float:
    """Wall time of W Ray actors (`cpus` each) encoding their share of the batches at once (actors warm)."""
    import ray

    from pipeline.core.ray_pool import init_ray

    init_ray(None)
    cls = ray.remote(num_cpus=cpus)(_Encoder)
    actors = [cls.remote(spec, device) for _ in range(workers)]
    ray.get([x.ready.remote() for x in actors])
    shares: list[list] = [[] for _ in range(workers)]
    loads = [0] * workers
    for b in sorted(batches, key=lambda b: -sum(x.shape[-1] for x in b)):
        k = loads.index(min(loads))
        shares[k].append(b)
        loads[k] += sum(x.shape[-1] for x in b)
    refs = [ray.put(sh) for sh in shares]
    t = time.perf_counter()
    ray.get([x.encode.remote(r) for x, r in zip(actors, refs)])
    wall = time.perf_counter() - t
    for x in actors:
        ray.kill(x)
    return wall


def main() -> None:
    a = parse()
    from pipeline.core.stage_jobs import PoolArgs
    from pipeline.speech.jobs import speech as speech_job
    from pipeline.tokens.jobs import tokens as tokens_job
    from pipeline.core.runner import RunOptions
    from pipeline.core.shards import iter_rows
    from pipeline.speech.worker import SpeechSpec
    from pipeline.tokens.worker import TokenSpec, _batches
    from tts.audio import from_flac
    from tts.codec import load_codec
    from tts.voices import DEFAULT_USERS, VoiceConfig

    base = a.keep or Path(tempfile.mkdtemp(prefix="ssvd-bench-speech-"))
    dlg, speech, tokens = base / "dialogues", base / "speech", base / "tokens"
    write_dialogues(dlg, a.dialogues, a.pairs, a.seed)
    # as `ssvd speech/tokens` do: the machine's cores shared among the workers
    pool = PoolArgs(workers=a.workers, cpus_per_worker=float(max(1, (os.cpu_count() or 1) // max(a.workers, 1))))
    opts = RunOptions(overwrite=True, progress=False, chunk_size=2, max_inflight=4, flush_rows=8)
    voices = VoiceConfig(a.assistant_voice, tuple(a.user_voice or DEFAULT_USERS))
    tspec = TokenSpec(kind="speech", codec=a.codec, device=a.device)

    # Stage wall time from the runner (workers already up: model loading is a one-time cost,
    # reported apart as setup_s); the ceiling likewise starts with its codec loaded and warm.
    t0 = time.perf_counter()
    s_speech = speech_job(dlg, speech, SpeechSpec(voices), limit=None, pool_args=pool, opts=opts)
    t1 = time.perf_counter()
    s_tokens = tokens_job(speech, tokens, tspec, limit=None, pool_args=pool, opts=opts)
    t2 = time.perf_counter()
    setup_s = (t2 - t0) - s_speech.elapsed_s - s_tokens.elapsed_s

    rows = [r for f in sorted(speech.glob("speech-*.parquet")) for r in iter_rows(f)]
    bad = [r["error"] for r in rows if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"speech failed: {bad[:3]}")
    audio_s = sum(r["duration_s"] for r in rows)
    audios = [(k, from_flac(r["audio_flac"])[0]) for k, r in enumerate(rows)]
    codec = load_codec(a.codec, device=a.device)
    batches = [[x for _, x in b] for b in _batches(audios, tspec.max_batch_s * codec.sample_rate_hz)]
    ceilings = {"in_process": encode_in_process(codec, batches)}
    if a.workers > 0:  # the same parallelism as the tokens stage: W Ray processes encoding their share
        ceilings[f"ray_{a.workers}x{pool.cpus_per_worker:g}cpu"] = encode_on_ray(a.codec, a.device, batches, a.workers,
                                                                               pool.cpus_per_worker)
    ceiling_s = min(ceilings.values())

    speech_s, tokens_s = s_speech.elapsed_s, s_tokens.elapsed_s
    ssvd_s = speech_s + tokens_s
    result = {
        "ratio_vs_ceiling": round(ceiling_s / ssvd_s, 3),
        "audio_s": round(audio_s, 1),
        "audio_s_per_s": {"ssvd": round(audio_s / ssvd_s, 2), "ceiling": round(audio_s / ceiling_s, 2),
                          "speech_stage": round(audio_s / speech_s, 2), "tokens_stage": round(audio_s / tokens_s, 2)},
        "wall_s": {"speech": round(speech_s, 1), "tokens": round(tokens_s, 1), "ceiling": round(ceiling_s, 1),
                   "setup": round(setup_s, 1)},
        "ceiling_wall_s": {k: round(v, 1) for k, v in ceilings.items()},
        "codec": codec.info()["name"], "codec_dtype": str(codec.dtype), "assistant_voice": a.assistant_voice,
        "dialogues": a.dialogues, "pairs": a.pairs, "workers": a.workers, "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "out": str(base),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
