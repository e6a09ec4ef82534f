"""The `speech` stage: accepted dialogues -> stereo speech rows (shard i of dialogues -> shard i).

Only dialogues with status "ok" are spoken; the others are counted (`input_not_ok`) in the run
record, their reasons stay in the dialogue shards.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.speech.worker import SpeechSpec
from pipeline.core.stage_input import RowStage, StageInput
from pipeline.core.types import SPEECH_SCHEMA


@dataclass
class SpeechStage(RowStage):
    input: StageInput
    spec: SpeechSpec
    tts: dict  # backend provenance (name, version, model hash), from a probe worker
    limit: int | None = None
    name: str = "speech"
    schema: Any = SPEECH_SCHEMA
    row_group_rows: int = 32  # rows hold seconds of FLAC audio: small row groups for streaming readers
    input_stats: Counter = field(default_factory=Counter)

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
