"""ssvd — synthetic spoken visual dialogues (MoshiVis corpus). Run `ssvd --help`.

The `ssvd` app: it registers the commands, whose options and bodies live with their stage
(pipeline/dialogue/cli.py, pipeline/speech/cli.py, pipeline/tokens/cli.py, pipeline/images/cli.py,
pipeline/corpus/cli.py, trainer/cli.py; shared options in pipeline/core/cli_options.py), and holds the small inspection commands (export, show, prompts show).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.speech.cli import speech
from pipeline.tokens.cli import tokens
from pipeline.core.cli_options import Limit, NoProgress, Out, fail, refuse_urls
from pipeline.corpus.cli import estimate, plan, preview, report, run, status, verify
from pipeline.dialogue.cli import dialogues, generic
from pipeline.images.cli import images
from trainer.cli import export_adapters, train

app = typer.Typer(
    help="Regenerate the MoshiVis synthetic spoken visual dialogue corpus: captions -> two-role LLM "
    "dialogues -> speech -> token shards, one stage per command, or a whole manifest (Table 7) with "
    "`ssvd run`; then status, verify, preview, report, and `ssvd train` for the adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prompts_app = typer.Typer(help="Inspect the Appendix F prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

for _command in (dialogues, generic, speech, tokens, images):
    app.command()(_command)


@app.command()
def export(
    input: Annotated[Path, typer.Option("--in", help="A speech or tokens output directory.")],
    out: Out,
    format: Annotated[str, typer.Option("--format", help="moshi-finetune: stereo wav (left assistant, right user) + alignment json + jsonl index.")] = "moshi-finetune",
    codec: Annotated[Optional[str], typer.Option("--codec", help="For tokens input: the codec to decode with (default: the one recorded in the shards).")] = None,
    limit: Limit = None,
    no_progress: NoProgress = False,
) -> None:
    """Export speech (or decoded token) shards in another trainer's format."""
    from pipeline.views.export import export_moshi_finetune

    if format != "moshi-finetune":
        fail(ValueError(f"--format {format!r}: only moshi-finetune is supported"))
    try:
        n = export_moshi_finetune(input, out, limit=limit, codec=codec, progress=not no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    typer.echo(json.dumps({"exported": n, "out": str(out), "index": str(Path(out) / "index.jsonl")}))


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="A dialogues, speech or tokens output directory (or a dialogue shard file).")],
    id: Annotated[Optional[str], typer.Option("--id", help="Show only this record.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only records with this status: ok, rejected, failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (0: all).")] = 5,
) -> None:
    """Print dialogues as readable transcripts; speech rows with turn times; token rows with their text stream."""
    from pipeline.views import sample_view
    from pipeline.core.shards import iter_rows
    from pipeline.core.stage_input import StageInputError, open_stage_input
    from pipeline.views.transcript import dialogue_files, format_dialogue

    rows, fmt = None, format_dialogue
    if path.is_dir():
        try:
            inp = open_stage_input(path, ("dialogues", "speech", "tokens"))
        except StageInputError as e:
            fail(e)
        if inp.stage != "dialogues":
            rows = (r for _, f in inp.shards for r in iter_rows(f, batch_rows=8))
            fmt = sample_view.formatter(inp.stage)
    if rows is None:
        if not dialogue_files(path):
            fail(FileNotFoundError(f"{path}: no dialogue shards there"))
        rows = (r for f in dialogue_files(path) for r in iter_rows(f))
    shown = 0
    for r in rows:
        if (id and r["id"] != id) or (status and r["status"] != status):
            continue
        typer.echo(fmt(r) + "\n")
        shown += 1
        if limit and shown >= limit and not id:
            break
    if id and not shown:
        fail(KeyError(f"no record with id {id} in {path}"))


for _command in (run, plan, status, estimate, verify, preview, report, train, export_adapters):
    app.command()(_command)


@prompts_app.command("show")
def prompts_show(
    instruction: Annotated[str, typer.Argument(help="COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2 or GENERIC.")],
    role: Annotated[str, typer.Option("--role", help="user or assistant.")] = "user",
    caption: Annotated[str, typer.Option("--caption", help="The image caption (data, never template source).")] = "",
    topic: Annotated[Optional[str], typer.Option("--topic", help="Topic of a GENERIC dialogue.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of COMB's random choices.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"system": ..., "forced_start": ...}.')] = False,
) -> None:
    """Render the system prompt (and forced start) one role sees."""
    import random

    import prompts

    try:
        options = prompts.sample_options(instruction.upper(), random.Random(seed))
        p = prompts.render(instruction.upper(), role, caption, options, topic=topic)
    except ValueError as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps({"system": p.system, "forced_start": p.forced_start}, ensure_ascii=False))
    else:
        typer.echo(f"--- system ---\n{p.system}")
        if p.forced_start is not None:
            typer.echo(f"--- forced start ---\n{p.forced_start}")


refuse_urls(app)  # every path option and argument of every command: no URL (object storage is not built yet)

if __name__ == "__main__":
    app()
