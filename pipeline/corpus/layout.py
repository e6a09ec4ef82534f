"""Where everything of a corpus lives in its directory (see docs/corpus.md)::

    DIR/manifest.json                 provenance: splits, shards (path, rows, sha256), stats, config, models
    DIR/README.md                     dataset card (Hugging Face dataset layout)
    DIR/_corpus.lock                  pid + host of a running `ssvd run` (emptied, kept, when it ends)
    DIR/<split>/dialogues/            dialogues-NNNNN.parquet + _dialogues.run.json
    DIR/<split>/images/               images-NNNNN.parquet (every split but generic): the images the dialogues
                                      reference, one row per image id (pipeline/images, docs/images.md)
    DIR/<split>/speech/               speech splits (and the generic set when its kind is speech)
    DIR/<split>/tokens/               the training rows: what trainers read
    DIR/generic/...                   the generic (non-image) dialogues, same stages

Benchmark splits have a `dialogues` stage too: their question/answer pairs written as dialogue
rows (no engine), so that every text split reaches `tokens` the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST_JSON = "manifest.json"
CARD = "README.md"
LOCK = "_corpus.lock"
FORMAT = "ssvd-corpus/1"
FINAL_STAGE = "tokens"
IMAGES = "images"  # the side stage of every split but generic (reads dialogues; see plan.Unit.stages)

STAGES: dict[str, tuple[str, ...]] = {
    "speech": ("dialogues", "speech", "tokens"),
    "text": ("dialogues", "tokens"),
}


def stages_for(kind: str) -> tuple[str, ...]:
    """The stages a split of this kind goes through, in order."""
    return STAGES[kind]


def split_dir(root: Path, split: str) -> Path:
    return Path(root) / split


def stage_dir(root: Path, split: str, stage: str) -> Path:
    return Path(root) / split / stage


def load_provenance(root: Path) -> dict[str, Any]:
    """DIR/manifest.json, or a clear error when the directory is not a corpus."""
    p = Path(root) / MANIFEST_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{root}: no {MANIFEST_JSON}, so not a corpus made by `ssvd run` "
                                f"(run `ssvd run MANIFEST.yaml --out {root}` first)")
    data = json.loads(p.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{p}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data
