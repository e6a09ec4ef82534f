"""The job behind `ssvd tokens`: open the speech (or dialogue) shards, start the token workers, run the stage."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.ray_pool import KeptPool
from pipeline.core.runner import RunOptions, Summary
from pipeline.core.stage_input import open_stage_input
from pipeline.core.stage_jobs import PoolArgs, get_pool, if_finished, run_row_stage
from pipeline.tokens.stage import TokenStage, check_kind
from pipeline.tokens.worker import TokenSpec, TokenWorker


def tokens(input_dir: Path, out: Path, spec: TokenSpec, *, limit: int | None, pool_args: PoolArgs,
           opts: RunOptions, kept: KeptPool | None = None) -> Summary:
    inp = open_stage_input(input_dir, ("speech", "dialogues"))
    check_kind(spec.kind, inp.stage)  # before starting any worker
    make = lambda facts: TokenStage(inp, spec, limit=limit,  # noqa: E731
                                    workers_info={"codec": facts.get("codec"), "tokenizer": facts.get("tokenizer")})
    done = if_finished(out, "tokens", make, opts)
    if done is not None:
        return done
    pool, startup_s = get_pool(TokenWorker, spec, pool_args, kept)
    return run_row_stage(make(pool.infos[0]), out, pool, opts, kept is not None, startup_s)
