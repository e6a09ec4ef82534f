"""Core types of ssvd, in one place, with the pyarrow schemas of what is written to disk.

Units are in field names (`start_s`, `num_frames`); ids are deterministic hashes, never uuids.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

Role = Literal["user", "assistant"]
Status = Literal["ok", "rejected", "failed"]

INSTRUCTIONS: tuple[str, ...] = ("COMB", "LOC", "PROP", "NUM", "TS1", "TS2", "LEAD1", "LEAD2")
GENERIC = "GENERIC"
SOURCES: tuple[str, ...] = ("pixmo", "docci", "pixelprose")
# Kyutai's released generator samples the instruction of every pair after COMB's first from these.
DEFAULT_COMB_POOL: tuple[str, ...] = ("LOC", "PROP", "NUM", "LEAD1", "TS1", "TS2")


def stable_hash(*parts: object, n: int = 16) -> str:
    """Hex digest of the parts, stable across processes and machines (unlike `hash`)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


def stable_int(*parts: object) -> int:
    """A 63-bit integer derived from the parts: used for seeds."""
    return int(stable_hash(*parts, n=16), 16) & ((1 << 63) - 1)


@dataclass(slots=True, frozen=True)
class ImageRef:
    url: str | None = None
    path: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class InputShard:
    """One shard of a caption or benchmark input: a local file, or a shard of a streaming hub dataset."""

    index: int
    name: str  # file path, or f"{hub_id}#shard{i}"


@dataclass(slots=True)
class Caption:
    id: str
    source: str
    text: str
    image: ImageRef
    row: int = -1  # position in its input shard


@dataclass(slots=True)
class CaptionRejection:
    """An input row that cannot become a dialogue: counted and recorded, never a crash."""

    id: str
    source: str
    row: int
    reason: str  # short machine-readable reason, e.g. "caption:empty"
    detail: str = ""  # human-readable: file, row, field and the fix
    # What the source calls the row, when it can be read, as an ok row's: its caption id (PixMo: sha256 of
    # image_url) and image. `id` stays the row's place (file, row): unique, whatever ids the rows repeat.
    caption_id: str | None = None
    image: ImageRef | None = None


@dataclass(slots=True)
class Turn:
    role: Role
    text: str
    instruction: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str = ""


@dataclass(slots=True)
class Dialogue:
    id: str
    caption_id: str | None
    source: str
    instruction: str
    seed: int
    replica: int = 0
    turns: list[Turn] = field(default_factory=list)
    status: Status = "ok"
    reason: str = ""  # why it was rejected (status "rejected")
    error: str = ""  # what failed (status "failed")
    note: str = ""  # e.g. an accepted dialogue that ended early: "ended at pair 11: repeated_message"
    model_user: str = ""
    model_assistant: str = ""
    prompt_version: str = ""
    caption: str = ""
    image: ImageRef = field(default_factory=ImageRef)
    forced_start: str = ""
    input_shard: int = 0
    input_row: int = -1
    # Every completion token the engines produced for this dialogue: kept turns, the turns cut
    # when it ended early, every redrawn message and, for a rejected/failed dialogue, all its turns.
    generated_tokens: int = 0

    @property
    def num_pairs(self) -> int:
        return sum(1 for t in self.turns if t.role == "assistant")

    @property
    def prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)

    @property
    def kept_tokens(self) -> int:
        """Completion tokens of the stored turns of an accepted dialogue (0 for rejected/failed)."""
        return self.completion_tokens if self.status == "ok" else 0

    @property
    def wasted_tokens(self) -> int:
        return max(self.generated_tokens - self.kept_tokens, 0)


@dataclass(slots=True)
class WorkItem:
    """One dialogue to generate: a caption (or a generic topic) under one instruction and replica."""

    id: str
    source: str
    instruction: str
    seed: int
    replica: int
    input_shard: int
    input_row: int
    caption: Caption | None = None
    topic: str | None = None


@dataclass(slots=True)
class WordSpan:
    """Same meaning as moshi-finetune's alignments: (word, [start, end], speaker)."""

    word: str
    start_s: float
    end_s: float
    speaker: Role


@dataclass(slots=True)
class Utterance:
    """One turn spoken by one speech backend (tts/).

    `words` has exactly one span per whitespace-separated written word of the text, in order, with
    times relative to the utterance start, taken from the backend itself (never spread evenly).
    """

    audio: np.ndarray  # float32 mono, in [-1, 1]
    sample_rate_hz: int
    words: list[WordSpan]
    voice: str
    codes: np.ndarray | None = None  # [8, frames] Mimi codes when the backend makes them (kyutai)


@dataclass(slots=True)
class TurnSpan:
    role: Role
    start_s: float
    end_s: float
    text: str
    voice: str


@dataclass(slots=True)
class SpeechSample:
    """A dialogue laid out on two channels (tts/timeline.py): ch0 assistant, ch1 user."""

    dialogue_id: str
    audio: np.ndarray  # float32 [2, num_samples]
    sample_rate_hz: int
    words: list[WordSpan]  # global times, both speakers, sorted by start
    turns: list[TurnSpan]
    codes: np.ndarray | None = None  # [16, frames] when the backend made Mimi codes itself

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / self.sample_rate_hz


IMAGE_TYPE = pa.struct([("url", pa.string()), ("path", pa.string()), ("sha256", pa.string())])
TURN_TYPE = pa.struct(
    [
        ("role", pa.string()),
        ("text", pa.string()),
        ("instruction", pa.string()),
        ("completion_tokens", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("finish_reason", pa.string()),
    ]
)

DIALOGUE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("caption_id", pa.string()),
        ("source", pa.string()),
        ("instruction", pa.string()),
        ("seed", pa.int64()),
        ("replica", pa.int32()),
        ("turns", pa.list_(TURN_TYPE)),
        ("num_pairs", pa.int32()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("note", pa.string()),
        ("model_user", pa.string()),
        ("model_assistant", pa.string()),
        ("prompt_version", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("caption", pa.string()),
        ("image", IMAGE_TYPE),
        ("forced_start", pa.string()),
        ("input_shard", pa.int32()),
        ("input_row", pa.int64()),
        ("generated_tokens", pa.int64()),  # every completion token the engines spent on this dialogue
        ("wasted_tokens", pa.int64()),  # of those, not in an accepted dialogue's stored turns
    ],
    metadata={"ssvd.kind": "dialogues", "ssvd.schema_version": "2"},
)


def dialogue_to_row(d: Dialogue) -> dict:
    return {
        "id": d.id,
        "caption_id": d.caption_id,
        "source": d.source,
        "instruction": d.instruction,
        "seed": d.seed,
        "replica": d.replica,
        "turns": [
            {
                "role": t.role,
                "text": t.text,
                "instruction": t.instruction,
                "completion_tokens": t.completion_tokens,
                "prompt_tokens": t.prompt_tokens,
                "finish_reason": t.finish_reason,
            }
            for t in d.turns
        ],
        "num_pairs": d.num_pairs,
        "status": d.status,
        "reason": d.reason,
        "error": d.error,
        "note": d.note,
        "model_user": d.model_user,
        "model_assistant": d.model_assistant,
        "prompt_version": d.prompt_version,
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "caption": d.caption,
        "image": {"url": d.image.url, "path": d.image.path, "sha256": d.image.sha256},
        "forced_start": d.forced_start,
        "input_shard": d.input_shard,
        "input_row": d.input_row,
        "generated_tokens": d.generated_tokens,
        "wasted_tokens": d.wasted_tokens,
    }


def dialogue_from_row(r: dict) -> Dialogue:
    img = r.get("image") or {}
    return Dialogue(
        id=r["id"],
        caption_id=r.get("caption_id"),
        source=r["source"],
        instruction=r["instruction"],
        seed=r["seed"],
        replica=r.get("replica", 0),
        turns=[Turn(**t) for t in (r.get("turns") or [])],
        status=r["status"],
        reason=r.get("reason", ""),
        error=r.get("error", ""),
        note=r.get("note", ""),
        model_user=r.get("model_user", ""),
        model_assistant=r.get("model_assistant", ""),
        prompt_version=r.get("prompt_version", ""),
        caption=r.get("caption", ""),
        image=ImageRef(**img),
        forced_start=r.get("forced_start", ""),
        input_shard=r.get("input_shard", 0),
        input_row=r.get("input_row", -1),
        generated_tokens=r.get("generated_tokens") or 0,
    )


# --- speech and token shards (tts/, pipeline/speech/stage.py, pipeline/tokens/stage.py) ---

WORD_TYPE = pa.struct([("word", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("speaker", pa.string())])
TURN_SPAN_TYPE = pa.struct(
    [("role", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("text", pa.string()), ("voice", pa.string())]
)
CODES_TYPE = pa.list_(pa.list_(pa.int16()))  # [codebooks][frames]

# Columns every speech / token row carries over from its dialogue.
_CARRIED = [
    ("id", pa.string()),
    ("dialogue_id", pa.string()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("instruction", pa.string()),
    ("caption_id", pa.string()),
    ("image", IMAGE_TYPE),
    ("seed", pa.int64()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
]
_TRAILER = [
    ("model_user", pa.string()),
    ("model_assistant", pa.string()),
    ("prompt_version", pa.string()),
    ("input_shard", pa.int32()),
    ("input_row", pa.int64()),
]

SPEECH_SCHEMA = pa.schema(
    _CARRIED
    + [
        ("sample_rate_hz", pa.int32()),
        ("num_samples", pa.int64()),
        ("duration_s", pa.float64()),
        ("audio_flac", pa.binary()),  # stereo 16-bit FLAC: ch0 assistant, ch1 user
        ("words", pa.list_(WORD_TYPE)),  # global times, both speakers, sorted by start
        ("turns", pa.list_(TURN_SPAN_TYPE)),
        ("voice_assistant", pa.string()),
        ("voice_user", pa.string()),
        ("tts", pa.string()),  # JSON: backend provenance per role (name, version, model sha256)
        ("codes", CODES_TYPE),  # [16][frames] only when the TTS made Mimi codes itself (kyutai)
        ("codes_codec", pa.string()),
    ]
    + _TRAILER,
    metadata={"ssvd.kind": "speech", "ssvd.schema_version": "1"},
)

TOKEN_SCHEMA = pa.schema(
    _CARRIED
    + [
        ("kind", pa.string()),  # "speech" | "text"
        ("num_frames", pa.int32()),  # speech: frames at frame_rate_hz; text: number of text tokens
        ("frame_rate_hz", pa.float32()),  # 12.5 for speech, 0 for text rows
        ("duration_s", pa.float64()),
        ("text_tokens", pa.list_(pa.int32())),  # speech: [num_frames] padded stream; text: plain tokens
        ("audio_codes", CODES_TYPE),  # speech: [16][num_frames], rows 0-7 assistant, 8-15 user, undelayed
        ("turn_start_frames", pa.list_(pa.int32())),  # text rows: token offsets of the turns
        ("turn_roles", pa.list_(pa.string())),
        ("words", pa.list_(WORD_TYPE)),
        ("codec", pa.string()),  # "<name>#<weights sha256>"; "" for text rows
        ("tokenizer", pa.string()),  # "<name>#<model sha256>"
        ("dropped_text_tokens", pa.int32()),
        ("provenance", pa.string()),  # JSON: models, prompt version, voices, tts, text stream options
    ]
    + _TRAILER,
    metadata={"ssvd.kind": "tokens", "ssvd.schema_version": "1"},
)
