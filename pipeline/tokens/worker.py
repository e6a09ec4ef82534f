"""Token workers: speech rows -> Mimi codes + padded text stream; dialogue rows -> plain text tokens.

Speech rows of one chunk are Mimi-encoded together (both channels of every dialogue in one batch).
Codes are stored undelayed, frame-aligned with the text stream; a model's per-codebook delays are
applied by whoever reads them.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from pipeline.core import faults
from pipeline.core.stage_input import RowItem, carried


CODEC_ATTEMPTS = 3  # a codec batch that fails (not for its input) is tried this many times in all, with backoff


@dataclass(frozen=True)
class StreamOptions:
    """Text stream conventions (pipeline.tokens.interleave.text_stream); defaults are Moshi's."""

    pad_id: int = 3
    epad_id: int = 0
    zero_id: int = -1
    bos_id: int | None = None
    eos_id: int | None = None
    delay_s: float = 0.0
    keep_and_shift: bool = False


@dataclass(frozen=True)
class TokenSpec:
    kind: str = "speech"  # "speech" or "text"
    codec: str = "random"
    device: str = "cpu"
    tokenizer: str | None = None  # SentencePiece path or hub id; None: the offline stand-in
    stream: StreamOptions = field(default_factory=StreamOptions)
    split: str | None = None
    max_batch_s: float = 600.0  # most audio seconds (both channels counted once) per Mimi forward pass


class TokenWorker:
    def __init__(self, spec: TokenSpec):
        from pipeline.tokens.text_tokenizer import load_text_tokenizer

        self.spec = spec
        self.tokenizer = load_text_tokenizer(spec.tokenizer)
        self.codec = None
        if spec.kind == "speech":
            from tts.codec import load_codec

            self.codec = load_codec(spec.codec, device=spec.device)

    def info(self) -> dict:
        return {"pid": os.getpid(), "tokenizer": self.tokenizer.info(),
                "codec": self.codec.info() if self.codec is not None else None}

    def codec_id(self) -> str:
        return f"{self.codec.name}#{self.codec.weights_sha256}" if self.codec is not None else ""

    def tokenizer_id(self) -> str:
        return f"{self.tokenizer.name}#{self.tokenizer.sha256}"

    def run(self, items: list[RowItem]) -> list[dict]:
        if self.spec.kind == "text":
            return [self._guard(it, self._text_row) for it in items]
        return self._speech_rows(items)

    def _guard(self, it: RowItem, fn) -> dict:
        try:
            return fn(it)
        except Exception as e:
            return self._failed(it, e)

    def _failed(self, it: RowItem, e: Exception) -> dict:
        r = self._base(it.row)
        r.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        return r

    def _base(self, row: dict) -> dict:
        r = carried(row, self.spec.split)
        r.update(kind=self.spec.kind, num_frames=0, frame_rate_hz=0.0, duration_s=0.0, text_tokens=[], audio_codes=[],
                 turn_start_frames=[], turn_roles=[], words=[], codec=self.codec_id(), tokenizer=self.tokenizer_id(),
                 dropped_text_tokens=0, provenance=json.dumps(self._provenance(row), sort_keys=True))
        return r

    def _provenance(self, row: dict) -> dict:
        p = {
            "dialogue": {k: row.get(k) for k in ("model_user", "model_assistant", "prompt_version", "seed")},
            "tokenizer": self.tokenizer.info(),
        }
        if self.spec.kind == "speech":
            p["codec"] = self.codec.info()
            p["text_stream"] = asdict(self.spec.stream)
            p["voices"] = {"assistant": row.get("voice_assistant"), "user": row.get("voice_user")}
            p["tts"] = json.loads(row.get("tts") or "{}")
        return p

    # --- text rows: the whole transcript as plain tokens, no padding ---
    def _text_row(self, it: RowItem) -> dict:
        row = it.row
        r = self._base(row)
        turns = row.get("turns") or []
        tokens: list[int] = []
        starts: list[int] = []
        for t in turns:
            starts.append(len(tokens))
            tokens += self.tokenizer.encode(t["text"])
        r.update(num_frames=len(tokens), text_tokens=tokens, turn_start_frames=starts, turn_roles=[t["role"] for t in turns])
        return r

    # --- speech rows: Mimi codes of both channels + the padded assistant text stream ---
    def _speech_rows(self, items: list[RowItem]) -> list[dict]:
        from tts.audio import from_flac

        out: dict[int, dict] = {}
        audios: list[tuple[int, object]] = []
        for k, it in enumerate(items):
            row = it.row
            try:
                if row.get("codes") and row.get("codes_codec") == self.codec.name:
                    import numpy as np

                    out[k] = self._speech_row(it, np.asarray(row["codes"], dtype=np.int16))
                    continue
                audio, sr = from_flac(row["audio_flac"])
                if sr != self.codec.sample_rate_hz:
                    from tts.audio import resample

                    audio = resample(audio, sr, self.codec.sample_rate_hz)
                audios.append((k, audio))
            except Exception as e:
                out[k] = self._failed(it, e)
        for batch in _batches(audios, self.spec.max_batch_s * self.codec.sample_rate_hz):
            def encode(batch=batch):
                for k, _ in batch:
                    faults.maybe_fail("tokens", items[k].row["id"])
                return self.codec.encode_many([a for _, a in batch])

            try:  # a transient failure (out of memory, a device error) is retried with backoff
                codes = faults.retry(encode, attempts=CODEC_ATTEMPTS, backoff_s=faults.RETRY_BACKOFF_S, what="codec encode")
            except Exception as e:
                for k, _ in batch:
                    out[k] = self._failed(items[k], e)
                continue
            for (k, _), c in zip(batch, codes):
                out[k] = self._guard(items[k], lambda it, c=c: self._speech_row(it, c))
        return [out[k] for k in range(len(items))]

    def _speech_row(self, it: RowItem, codes) -> dict:
        from pipeline.tokens.interleave import text_stream

        row = it.row
        r = self._base(row)
        fr = self.codec.frame_rate_hz
        num_frames = int(codes.shape[1])
        audio_frames = math.ceil(row["num_samples"] / self.codec.samples_per_frame) if row.get("num_samples") else num_frames
        words = [(w["word"], w["start_s"], w["end_s"], w["speaker"]) for w in row["words"]]
        so = self.spec.stream
        stats: Counter = Counter()
        text = text_stream(words, num_frames, fr, self.tokenizer.encode_word, pad_id=so.pad_id, epad_id=so.epad_id,
                           zero_id=so.zero_id, bos_id=so.bos_id, eos_id=so.eos_id, delay_s=so.delay_s,
                           keep_and_shift=so.keep_and_shift, audio_num_frames=audio_frames, stats=stats)
        turns = row.get("turns") or []
        r.update(
            num_frames=num_frames,
            frame_rate_hz=fr,
            duration_s=row.get("duration_s") or num_frames / fr,
            text_tokens=text,
            audio_codes=codes.tolist(),
            turn_start_frames=[int(t["start_s"] * fr) for t in turns],
            turn_roles=[t["role"] for t in turns],
            words=row["words"],
            dropped_text_tokens=int(stats.get("dropped_tokens", 0)),
        )
        return r


def _batches(audios: list, max_samples: float):
    """Group audios (sorted by length, so padding is small) into batches of bounded total samples."""
    batch, total = [], 0
    for k, a in sorted(audios, key=lambda x: x[1].shape[-1]):
        n = a.shape[-1] * 2
        if batch and total + n > max_samples:
            yield batch
            batch, total = [], 0
        batch.append((k, a))
        total += n
    if batch:
        yield batch
