"""`ssvd speech` and `ssvd tokens`: the commands' options and bodies (registered in cli.py; the jobs behind
them are in pipeline/audio_jobs.py)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.cli_options import (RUN_OPTIONS, Limit, Out, RayAddress, Split, StageIn, StageWorkers, fail, finish,
                                  run_options, setup, with_options)


@with_options(RUN_OPTIONS)
def speech(
    input: StageIn,
    out: Out,
    assistant_voice: Annotated[str, typer.Option("--assistant-voice", help="The one assistant voice of the corpus, BACKEND:VOICE (piper:joe offline; kyutai:VOICE, any voice of the kyutai voice repository, e.g. kyutai:vctk/p226_023.wav).")] = "piper:joe",
    user_voice: Annotated[Optional[list[str]], typer.Option("--user-voice", help="A user voice BACKEND:VOICE; repeat for a pool (default: 12 eSpeak NG variants). One is drawn per dialogue from its seed.")] = None,
    gap_s: Annotated[tuple[float, float], typer.Option("--gap-s", help="Range of the silence between turns, seconds.")] = (0.2, 0.8),
    overlap_prob: Annotated[float, typer.Option("--overlap-prob", min=0.0, max=1.0, help="Chance that a turn starts before the previous one ends.")] = 0.0,
    max_overlap_s: Annotated[float, typer.Option("--max-overlap-s", min=0.0, help="Longest such overlap, seconds.")] = 0.25,
    limit: Limit = None,
    split: Split = None,
    workers: StageWorkers = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (kyutai backend; cpu is slow with the real model).")] = "cpu",
    kyutai_model: Annotated[Optional[str], typer.Option("--kyutai-model", help="Kyutai TTS: hub repo (default kyutai/tts-1.6b-en_fr) or builtin:kyutai-tiny (random weights, offline, for tests and smoke runs).")] = None,
    kyutai_cfg_coef: Annotated[Optional[float], typer.Option("--kyutai-cfg-coef", help="Kyutai TTS CFG coefficient (default 2.0; kyutai/tts-1.6b-en_fr takes 1.0, 1.5, ..., 4.0).")] = None,
    **opts,
) -> None:
    """Speak accepted dialogues: TTS per turn, user on one channel and assistant on the other (24 kHz FLAC)."""
    from pipeline import audio_jobs
    from pipeline.speech_worker import SpeechSpec, TimelineConfig, kyutai_options
    from tts.voices import DEFAULT_USERS, VoiceConfig

    setup(opts["verbose"])
    try:
        voices = VoiceConfig(assistant_voice, tuple(user_voice or DEFAULT_USERS))
        if gap_s[0] > gap_s[1] or gap_s[0] < 0:
            raise ValueError(f"--gap-s {gap_s[0]} {gap_s[1]}: give MIN MAX with 0 <= MIN <= MAX")
        if (kyutai_model or kyutai_cfg_coef is not None) and "kyutai" not in voices.backends():
            raise ValueError("--kyutai-model/--kyutai-cfg-coef: no voice is kyutai:...; give kyutai voices or drop them")
        backend_opts = kyutai_options(voices, device, kyutai_model, kyutai_cfg_coef)
        spec = SpeechSpec(voices, TimelineConfig(tuple(gap_s), overlap_prob, max_overlap_s), backend_opts, split)
        summary = audio_jobs.speech(input, out, spec, limit=limit, pool_args=_pool_args(workers, ray_address, device, opts),
                                    opts=run_options(opts, 8, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)


@with_options(RUN_OPTIONS)
def tokens(
    input: StageIn,
    out: Out,
    kind: Annotated[Optional[str], typer.Option("--kind", help="speech (Mimi codes + padded text stream; needs speech shards) or text (plain transcript tokens). Default: speech for speech input, text for dialogues.")] = None,
    codec: Annotated[str, typer.Option("--codec", help="Mimi weights: kyutai/mimi, a local transformers folder, random[:SEED] (offline, seeded random weights), or builtin:kyutai-tiny (the Mimi of the tiny Kyutai TTS). Speech rows whose TTS codes came from the same Mimi keep them.")] = "random",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Text SentencePiece model: a path (production: Moshi's tokenizer_spm_32k_3.model) or a hub repo holding it. Default: mistral-common's 32k model, recorded as a stand-in.")] = None,
    delay_s: Annotated[float, typer.Option("--delay-s", help="Put the text this many seconds ahead of the audio (moshi-finetune's audio_delay); negative zero-fills the first frames.")] = 0.0,
    bos_id: Annotated[Optional[int], typer.Option("--bos-id", help="Token marking the start of each assistant turn (default: none).")] = None,
    eos_id: Annotated[Optional[int], typer.Option("--eos-id", help="Token marking the end of each assistant turn (default: none).")] = None,
    keep_and_shift: Annotated[bool, typer.Option("--keep-and-shift", help="Keep a word's unfinished tokens when the next word starts, shifting it (default: replace them, as Moshi).")] = False,
    limit: Limit = None,
    split: Split = None,
    workers: StageWorkers = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda for the codec.")] = "cpu",
    **opts,
) -> None:
    """Turn speech shards into Mimi-code + text-stream token shards (or dialogues into text-only rows)."""
    from pipeline import audio_jobs
    from pipeline.stage_input import open_stage_input
    from pipeline.token_worker import StreamOptions, TokenSpec

    setup(opts["verbose"])
    try:
        if kind is None:
            kind = "speech" if open_stage_input(input, ("speech", "dialogues")).stage == "speech" else "text"
        stream = StreamOptions(bos_id=bos_id, eos_id=eos_id, delay_s=delay_s, keep_and_shift=keep_and_shift)
        spec = TokenSpec(kind=kind, codec=codec, device=device, tokenizer=tokenizer, stream=stream, split=split)
        summary = audio_jobs.tokens(input, out, spec, limit=limit, pool_args=_pool_args(workers, ray_address, device, opts),
                                    opts=run_options(opts, 8, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)


def _pool_args(workers, ray_address, device, opts):
    from pipeline.audio_jobs import pool_args

    return pool_args(workers, ray_address, device, opts["verbose"])
