"""The `dialogues` stage of a benchmark split: question/answer rows written as dialogue rows, no engine.

Every benchmark row becomes one speechless user/assistant exchange (pipeline/sources/benchmarks.py); a row
that cannot be used becomes a "rejected" row with its reason, so every input row is accounted for.
The text split then reaches `tokens --kind text` exactly like a caption split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from pipeline.sources.benchmarks import INSTRUCTION, BenchmarkSource
from pipeline.sources.sharded import first_records
from pipeline.core.types import DIALOGUE_SCHEMA, CaptionRejection, Dialogue, ImageRef, dialogue_to_row


@dataclass
class BenchmarkStage:
    source: BenchmarkSource
    limit: int | None = None
    name: str = "dialogues"
    schema: Any = DIALOGUE_SCHEMA

    def total_hint(self) -> int | None:
        return self.limit

    def config(self) -> dict:
        return {"stage": self.name, "benchmark": self.source.describe(), "limit": self.limit}

    def entries(self) -> Iterator[tuple[int, dict | None]]:
        for shard, rec in first_records(self.source, self.limit):
            yield shard, None if rec is None else self._row(shard, rec)  # None: an empty file, an empty shard

    def _row(self, shard: int, rec: Dialogue | CaptionRejection) -> dict:
        if isinstance(rec, CaptionRejection):
            rec = Dialogue(id=rec.id, caption_id=rec.caption_id or rec.id, source=rec.source, instruction=INSTRUCTION,
                           seed=0, status="rejected", reason=rec.reason, note=rec.detail, input_shard=shard,
                           input_row=rec.row, image=rec.image or ImageRef())
        rec.input_shard = shard
        return dialogue_to_row(rec)
