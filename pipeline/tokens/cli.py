"""`ssvd tokens`: the command's options and body (registered in cli.py; the job behind it is in
pipeline/tokens/jobs.py)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.core.cli_options import (RUN_OPTIONS, Limit, Out, RayAddress, Split, StageIn, StageWorkers, fail, finish,
                                  run_options, setup, with_options)


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
    from pipeline.core.stage_input import open_stage_input
    from pipeline.core.stage_jobs import pool_args
    from pipeline.tokens.jobs import tokens as run_tokens
    from pipeline.tokens.worker import StreamOptions, TokenSpec

    setup(opts["verbose"])
    try:
        if kind is None:
            kind = "speech" if open_stage_input(input, ("speech", "dialogues")).stage == "speech" else "text"
        stream = StreamOptions(bos_id=bos_id, eos_id=eos_id, delay_s=delay_s, keep_and_shift=keep_and_shift)
        spec = TokenSpec(kind=kind, codec=codec, device=device, tokenizer=tokenizer, stream=stream, split=split)
        summary = run_tokens(input, out, spec, limit=limit,
                             pool_args=pool_args(workers, ray_address, device, opts["verbose"]),
                             opts=run_options(opts, 8, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)
