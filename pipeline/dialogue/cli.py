"""`ssvd dialogues` and `ssvd generic`: the commands' options and bodies (registered in cli.py; the jobs
behind them are in pipeline/dialogue/jobs.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.core.locations import HUB_SCHEMES, UnsupportedLocation, refuse_url
from pipeline.core.cli_options import (DIALOGUE_ENGINE_OPTIONS, DIALOGUE_SAMPLING_OPTIONS, RUN_OPTIONS, Out, fail, finish,
                                  run_options, setup, with_options)


@with_options(DIALOGUE_ENGINE_OPTIONS, after="replicas")
@with_options(DIALOGUE_SAMPLING_OPTIONS + RUN_OPTIONS)
def dialogues(
    source: Annotated[str, typer.Option("--source", help="Caption source: pixmo, docci or pixelprose.")],
    instruction: Annotated[str, typer.Option("--instruction", help="COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2 (Appendix F).")],
    input: Annotated[str, typer.Option("--input", help="Hub dataset id[@split] (allenai/pixmo-cap, tomg-group-umd/pixelprose) or local Parquet/JSONL/JSON/CSV file or folder; DOCCI: its release file docci_descriptions.jsonlines (google/docci is a loading script and is refused).")],
    out: Out,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N captions.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Dialogues per caption (different seeds).")] = 1,
    comb_pool: Annotated[str, typer.Option("--comb-pool", help="Instructions COMB samples for pairs 2..n, comma-separated.")] = "LOC,PROP,NUM,LEAD1,TS1,TS2",
    split: Annotated[str, typer.Option("--split", help="Hub split to read; DOCCI release file: the `split` value whose rows are used (others are skipped and counted).")] = "train",
    image_root: Annotated[Optional[Path], typer.Option("--image-root", help="DOCCI release: folder the image_file column is relative to (default: images/ next to the file when present).")] = None,
    watermark_classes: Annotated[Optional[str], typer.Option("--watermark-classes", help="PixelProse: keep only these watermark_class_id values, comma-separated (0 watermark, 1 clean, 2 text overlay), e.g. 1. Default: keep all, as Kyutai's released generator.")] = None,
    max_toxicity: Annotated[Optional[float], typer.Option("--max-toxicity", min=0.0, max=1.0, help="PixelProse: reject rows whose highest Detoxify score is above this. Default: no filter, as Kyutai's released generator.")] = None,
    **opts,
) -> None:
    """Generate two-role text dialogues about image captions with one of the paper's instructions."""
    from pipeline.dialogue import jobs
    from pipeline.core.types import INSTRUCTIONS, SOURCES

    setup(opts["verbose"])
    try:  # a hub dataset may be named hf://datasets/ID; any other URL is refused before any work
        refuse_url(input, "--input", allowed=HUB_SCHEMES)
    except UnsupportedLocation as e:
        fail(e)
    instruction = instruction.upper()
    if instruction not in INSTRUCTIONS:
        fail(ValueError(f"unknown --instruction {instruction!r}; valid: {' '.join(INSTRUCTIONS)}"))
    if source not in SOURCES:
        fail(ValueError(f"unknown --source {source!r}; valid: {' '.join(SOURCES)}"))
    pool = tuple(p.strip().upper() for p in comb_pool.split(",") if p.strip())
    bad = [p for p in pool if p not in INSTRUCTIONS or p == "COMB"]
    if bad or not pool:
        fail(ValueError(f"--comb-pool has {bad or 'nothing'}; choose from {' '.join(INSTRUCTIONS[1:])}"))
    copts = _caption_options(split, image_root, watermark_classes, max_toxicity)
    dcfg, args = _dialogue_config(opts, pool), _engine_args(opts)  # before `try`: typer.Exit is a RuntimeError
    try:
        summary = jobs.dialogues(source, instruction, input, out, limit=limit, replicas=replicas, seed=opts["seed"],
                                 args=args, dcfg=dcfg, opts=run_options(opts, opts["max_inflight"]),
                                 caption_options=copts)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)


@with_options(DIALOGUE_ENGINE_OPTIONS + DIALOGUE_SAMPLING_OPTIONS + RUN_OPTIONS)
def generic(
    out: Out,
    topics: Annotated[Optional[Path], typer.Option("--topics", help="Text file, one topic per line (default: the shipped list).")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Number of dialogues.")] = 100,
    **opts,
) -> None:
    """Generate generic (no image) dialogues about everyday topics, for the concatenation augmentation."""
    from pipeline.dialogue import jobs

    setup(opts["verbose"])
    topic_list = None
    if topics is not None:
        if not topics.is_file():
            fail(FileNotFoundError(f"--topics {topics}: no such file (one topic per line)"))
        topic_list = [t.strip() for t in topics.read_text().splitlines() if t.strip()]
        if not topic_list:
            fail(ValueError(f"--topics {topics}: no topics in it (one topic per line)"))
    dcfg, args = _dialogue_config(opts, None), _engine_args(opts)
    try:
        summary = jobs.generic(out, count=count, topics=topic_list, seed=opts["seed"], args=args, dcfg=dcfg,
                               opts=run_options(opts, opts["max_inflight"]))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    finish(summary, out)


def _engine_args(o: dict):
    """EngineArgs from DIALOGUE_ENGINE_OPTIONS' and DIALOGUE_SAMPLING_OPTIONS' values."""
    from pipeline.dialogue.engine_api import EngineOptions
    from pipeline.dialogue.jobs import EngineArgs

    return EngineArgs(
        user_model=o["user_model"] or o["model"],
        assistant_model=o["assistant_model"] or o["model"],
        separate_engines=o["separate_engines"],
        engine=EngineOptions(kind=o["engine"], openai_base_url=o["openai_base_url"], max_model_len=o["max_model_len"],
                             device=o["device"], gpu_memory_utilization=o["gpu_memory_utilization"] or 0.9,
                             tensor_parallel_size=o["tensor_parallel_size"] or 1, max_num_seqs=o["max_num_seqs"] or 0,
                             openai_timeout_s=o["openai_timeout_s"], openai_retry_s=o["openai_retry_s"],
                             openai_max_concurrency=o["openai_max_concurrency"]),
        workers=o["workers"],
        ray_address=o["ray_address"],
        verbose=o["verbose"],
    )


def _caption_options(split, image_root, watermark_classes, max_toxicity):
    from pipeline.sources.caption_rows import CaptionOptions

    classes = None
    if watermark_classes is not None:
        try:
            classes = tuple(sorted({int(x) for x in watermark_classes.split(",") if x.strip()}))
        except ValueError:
            fail(ValueError(f"--watermark-classes {watermark_classes!r}: write class ids, comma-separated, "
                            "from 0 (watermark), 1 (clean), 2 (text overlay), e.g. 1"))
    try:
        return CaptionOptions(split=split, image_root=str(image_root) if image_root else None,
                              watermark_classes=classes, max_toxicity=max_toxicity)
    except ValueError as e:
        fail(e)


def _dialogue_config(o: dict, pool):
    """DialogueConfig from the dialogue options' values; `pool`: COMB's instructions (None: the default)."""
    from pipeline.dialogue.protocol import DialogueConfig

    if o["min_pairs"] > o["max_pairs"]:
        fail(ValueError(f"--min-pairs {o['min_pairs']} is above --max-pairs {o['max_pairs']}"))
    if o["on_length"] not in ("trim", "reject"):
        fail(ValueError(f"--on-length {o['on_length']!r}: choose trim or reject"))
    kw = dict(min_pairs=o["min_pairs"], max_pairs=o["max_pairs"], min_accepted_pairs=o["min_pairs"],
              temperature=o["temperature"], max_new_tokens=o["max_new_tokens"], on_length=o["on_length"],
              redraws=o["redraws"], repetition_penalty=o["repetition_penalty"])
    if pool:
        kw["comb_pool"] = pool
    return DialogueConfig(**kw)
