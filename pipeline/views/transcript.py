"""Readable transcripts of dialogue shards (`ssvd show`)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterator

from pipeline.core.shards import iter_rows


def dialogue_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob("dialogues-*.parquet"))
    if not files:
        files = sorted((path / ".parts").glob("dialogues-*/part-*.parquet"))  # a run still in progress
    return files


def format_dialogue(r: dict, width: int = 100) -> str:
    head = (
        f"== {r['id']}  [{r['status']}{': ' + r['reason'] if r.get('reason') else ''}]  "
        f"{r['source']}/{r['instruction']}  caption={r.get('caption_id')}  pairs={r.get('num_pairs', 0)}  "
        f"seed={r['seed']}"
    )
    lines = [head]
    quality = "" if r.get("model_user") == r.get("model_assistant") else f" / assistant={r.get('model_assistant')}"
    lines.append(f"   models: user={r.get('model_user')}{quality}   prompts: {r.get('prompt_version')}")
    for key in ("note", "error"):
        if r.get(key):
            lines.append(f"   {key}: {r[key]}")
    if r.get("caption"):
        lines.append(textwrap.fill(r["caption"], width, initial_indent="   caption: ", subsequent_indent="            "))
    for t in r.get("turns") or []:
        tag = f"{t['role'].upper():9} ({t['instruction']})"
        lines.append(textwrap.fill(t["text"], width, initial_indent=f"   {tag} ", subsequent_indent=" " * (len(tag) + 4)))
    return "\n".join(lines)
