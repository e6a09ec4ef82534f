"""The job behind `ssvd speech`: open the dialogue shards, start the speech workers, run the stage."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.ray_pool import KeptPool
from pipeline.core.runner import RunOptions, Summary
from pipeline.core.stage_input import open_stage_input
from pipeline.core.stage_jobs import PoolArgs, get_pool, if_finished, run_row_stage
from pipeline.speech.stage import SpeechStage
from pipeline.speech.worker import SpeechSpec, SpeechWorker, check_speech_spec


def speech(input_dir: Path, out: Path, spec: SpeechSpec, *, limit: int | None, pool_args: PoolArgs,
           opts: RunOptions, kept: KeptPool | None = None) -> Summary:
    """`kept`: reuse (and keep) its pool across calls instead of starting and stopping one."""
    check_speech_spec(spec)  # settings (kyutai cfg_coef, voices) before any dialogue is read
    inp = open_stage_input(input_dir, ("dialogues",))
    make = lambda facts: SpeechStage(inp, spec, tts=facts.get("tts"), limit=limit)  # noqa: E731
    done = if_finished(out, "speech", make, opts)
    if done is not None:
        return done
    pool, startup_s = get_pool(SpeechWorker, spec, pool_args, kept)
    return run_row_stage(make({"tts": pool.infos[0]["backends"]}), out, pool, opts, kept is not None, startup_s)
