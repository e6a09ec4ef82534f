"""The `tokens` stage: speech rows (or dialogues, for text splits) -> token rows, shard i -> shard i.

`kind=speech` reads speech shards and writes Mimi codes + the padded assistant text stream;
`kind=text` reads dialogue (or speech) shards and writes the whole transcript as plain text tokens.
Only input rows with status "ok" become token rows; the others are counted (`input_not_ok`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core.stage_input import RowStage, StageInput, StageInputError
from pipeline.tokens.worker import TokenSpec
from pipeline.core.types import TOKEN_SCHEMA



def check_kind(kind: str, stage: str) -> None:
    if kind not in ("speech", "text"):
        raise StageInputError(f"--kind {kind!r}: use speech or text")
    if kind == "speech" and stage != "speech":
        raise StageInputError(f"--kind speech needs speech shards, but the input holds {stage} shards: "
                              "run `ssvd speech --in DIALOGUES --out SPEECH` first, or use --kind text")


@dataclass
class TokenStage(RowStage):
    input: StageInput
    spec: TokenSpec
    workers_info: dict  # codec and tokenizer provenance, from a probe worker
    limit: int | None = None
    name: str = "tokens"
    schema: Any = TOKEN_SCHEMA
    row_group_rows: int = 64  # rows hold [16 x frames] codes: small row groups for streaming readers
    input_stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        check_kind(self.spec.kind, self.input.stage)

    def config(self) -> dict:
        return {
            "stage": self.name,
            "input": self.input.describe(),
            "limit": self.limit,
            "spec": asdict(self.spec),
            "codec": self.workers_info.get("codec"),
            "tokenizer": self.workers_info.get("tokenizer"),
        }
