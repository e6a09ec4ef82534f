"""The `dialogues` stage: captions (or generic topics) x instruction x replicas -> work items.

Input shard i of the caption source becomes output shard i. Rejected captions become rows with
status "rejected" at once (no engine call), so every input row is accounted for.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import prompts
from pipeline.sources.captions import CaptionSource
from pipeline.dialogue.protocol import DialogueConfig, dialogue_id, dialogue_seed
from pipeline.sources.sharded import base_name, first_records
from pipeline.core.types import (
    DIALOGUE_SCHEMA,
    CaptionRejection,
    Dialogue,
    ImageRef,
    WorkItem,
    dialogue_to_row,
    stable_hash,
)

GENERIC_SHARD_SIZE = 1000


@dataclass
class DialogueStage:
    source: CaptionSource | None  # None for the generic (non-image) set
    instruction: str
    run_seed: int
    replicas: int
    limit: int | None
    dialogue: DialogueConfig
    models: dict  # role -> model provenance (name, fingerprint, quality)
    topics: list[str] | None = None
    count: int = 0  # generic only: number of dialogues
    name: str = "dialogues"
    schema: Any = DIALOGUE_SCHEMA
    # set by the runner: input shard i -> its complete output shard (skipped unopened), or None
    done_shard: Callable[[int], Path | None] | None = field(default=None, repr=False, compare=False)

    def total_hint(self) -> int | None:
        if self.source is None:
            return self.count
        return self.limit * self.replicas if self.limit is not None else None

    def config(self) -> dict:
        cfg = asdict(self.dialogue)
        return {
            "stage": self.name,
            "source": self.source.describe() if self.source else {"source": "generic", "topics": len(self.topics or [])},
            "instruction": self.instruction,
            "seed": self.run_seed,
            "replicas": self.replicas,
            "limit": self.limit,
            "count": self.count if self.source is None else None,
            "dialogue": cfg,
            "models": self.models,
            "prompt_version": prompts.PROMPT_VERSION,
        }

    def _item(self, shard: int, row: int, caption=None, topic: str | None = None, replica: int = 0) -> WorkItem:
        src = self.source.source if self.source else "generic"
        key = caption.id if caption is not None else f"topic{row}"
        return WorkItem(
            id=dialogue_id(self.run_seed, src, key, self.instruction, replica),
            source=src,
            instruction=self.instruction,
            seed=dialogue_seed(self.run_seed, src, key, self.instruction, replica),
            replica=replica,
            input_shard=shard,
            input_row=row,
            caption=caption,
            topic=topic,
        )

    def entries(self) -> Iterator[tuple[int, WorkItem | dict | None]]:
        if self.source is None:
            yield from self._generic_entries()
            return
        for shard, rec in first_records(self.source, self.limit, self._done if self.done_shard else None):
            if rec is None:  # a shard with no rows (an empty file): its output shard is written empty
                yield shard, None
                continue
            for replica in range(self.replicas):
                if isinstance(rec, CaptionRejection):
                    yield shard, self._rejection_row(shard, rec, replica)
                else:
                    yield shard, self._item(shard, rec.row, caption=rec, replica=replica)

    def unchanged_since(self, rec: dict) -> bool:
        """The input is part of the config (the source's files or hub shards): the same config, the same input."""
        return True

    def _done(self, shard: int) -> tuple[int, Callable[[], Iterator[tuple[str, int]]]] | None:
        """For `first_records`: a shard complete downstream gave (its rows / replicas) records, one output row
        each per replica; its records' (caption id, row) are in its output, caption rejections (whose id is
        the position hash `stable_hash(source, file name, row)`) left out, as `first_records` leaves them."""
        out = self.done_shard(shard)
        if out is None:
            return None
        import pyarrow.parquet as pq

        base = base_name(self.source.shards[shard].name)

        def ids() -> Iterator[tuple[str, int]]:
            t = pq.read_table(out, columns=["caption_id", "input_row"])
            for key, row in zip(t.column("caption_id").to_pylist(), t.column("input_row").to_pylist()):
                if key and key != stable_hash(self.source.source, base, row):
                    yield key, row

        return pq.ParquetFile(out).metadata.num_rows // self.replicas, ids

    def _generic_entries(self) -> Iterator[tuple[int, WorkItem]]:
        topics = self.topics or prompts.load_topics()
        for n in range(self.count):
            # the topic of dialogue n derives from the run seed, like everything else
            topic = random.Random(f"{self.run_seed}:{n}").choice(topics)
            yield n // GENERIC_SHARD_SIZE, self._item(n // GENERIC_SHARD_SIZE, n, topic=topic)

    def _rejection_row(self, shard: int, rec: CaptionRejection, replica: int) -> dict:
        d = Dialogue(
            id=dialogue_id(self.run_seed, rec.source, rec.id, self.instruction, replica),
            caption_id=rec.caption_id or rec.id,  # as the source names the row, else its place
            source=rec.source,
            instruction=self.instruction,
            image=rec.image or ImageRef(),
            seed=dialogue_seed(self.run_seed, rec.source, rec.id, self.instruction, replica),
            replica=replica,
            status="rejected",
            reason=rec.reason,
            note=rec.detail,
            model_user=self.models["user"]["name"],
            model_assistant=self.models["assistant"]["name"],
            prompt_version=prompts.PROMPT_VERSION,
            input_shard=shard,
            input_row=rec.row,
        )
        return dialogue_to_row(d)
