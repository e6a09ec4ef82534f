"""`ssvd speech`: the command's options and body (registered in cli.py; the job behind it is in
pipeline/speech/jobs.py)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.core.cli_options import (RUN_OPTIONS, Limit, Out, RayAddress, Split, StageIn, StageWorkers, fail, finish,
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
    from pipeline.core.stage_jobs import pool_args
    from pipeline.speech.jobs import speech as run_speech
    from pipeline.speech.worker import SpeechSpec, TimelineConfig, kyutai_options
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
        summary = run_speech(input, out, spec, limit=limit,
                             pool_args=pool_args(workers, ray_address, device, opts["verbose"]),
                             opts=run_options(opts, 8, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)
