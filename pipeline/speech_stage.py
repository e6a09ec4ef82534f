"""The `speech` stage: accepted dialogues -> stereo speech rows (shard i of dialogues -> shard i).

Only dialogues with status "ok" are spoken; the others are counted (`input_not_ok`) in the run
record, their reasons stay in the dialogue shards.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from pipeline.speech_worker import SpeechSpec
from pipeline.stage_input import RowItem, StageInput
from pipeline.types import SPEECH_SCHEMA


@dataclass
class SpeechStage:
    input: StageInput
    spec: SpeechSpec
    tts: dict  # backend provenance (name, version, model hash), from a probe worker
    limit: int | None = None
    name: str = "speech"
    schema: Any = SPEECH_SCHEMA
    row_group_rows: int = 32  # rows hold seconds of FLAC audio: small row groups for streaming readers
    input_stats: Counter = field(default_factory=Counter)

    def total_hint(self) -> int | None:
        return self.limit

    def config(self) -> dict:
        return {
            "stage": self.name,
            "input": self.input.describe(),
            "limit": self.limit,
            "voices": asdict(self.spec.voices),
            "timeline": asdict(self.spec.timeline),
            "backend_options": {b: dict(kw) for b, kw in self.spec.backend_options},
            "split": self.spec.split,
            "tts": self.tts,
        }

    def entries(self) -> Iterator[tuple[int, RowItem]]:
        return self.input.ok_items(self.limit, self.input_stats)
