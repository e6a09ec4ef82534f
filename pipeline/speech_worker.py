"""Speech workers: dialogue rows -> two-channel speech rows (TTS per turn, timeline, FLAC).

Used as Ray actors by `ssvd speech` (see pipeline.ray_pool) or directly in-process. Each worker
loads its speech backends once; a turn that cannot be spoken makes its dialogue `failed` with the
error, never a crash of the run.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from pipeline.stage_input import RowItem
from pipeline.types import SpeechSample, dialogue_from_row
from tts.voices import VoiceConfig, parse_voice


@dataclass(frozen=True)
class TimelineConfig:
    gap_s: tuple[float, float] = (0.2, 0.8)  # silence between turns, drawn per turn from the dialogue seed
    overlap_prob: float = 0.0  # chance that a turn starts before the previous one ends
    max_overlap_s: float = 0.25
    sample_rate_hz: int = 24000


@dataclass(frozen=True)
class SpeechSpec:
    voices: VoiceConfig = field(default_factory=VoiceConfig)
    timeline: TimelineConfig = field(default_factory=TimelineConfig)
    backend_options: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # backend -> kwargs
    split: str | None = None

    def options_for(self, backend: str) -> dict:
        return dict(dict(self.backend_options).get(backend, ()))


class SpeechWorker:
    def __init__(self, spec: SpeechSpec):
        from tts.backend import create_backend

        self.spec = spec
        self.backends = {b: create_backend(b, **spec.options_for(b)) for b in spec.voices.backends()}
        for v in (spec.voices.assistant, *spec.voices.users):
            b, name = parse_voice(v)
            if name not in self.backends[b].voices():
                raise ValueError(f"voice {v!r}: {b} has no voice {name!r}; it has: {', '.join(self.backends[b].voices())}")

    def info(self) -> dict:
        return {"pid": os.getpid(), "backends": {b: be.info() for b, be in self.backends.items()}}

    def tts_provenance(self) -> str:
        return json.dumps({b: be.info() for b, be in self.backends.items()}, sort_keys=True)

    def run(self, items: list[RowItem]) -> list[dict]:
        prov = self.tts_provenance()
        out = []
        for it in items:
            try:
                out.append(self._speak(it, prov))
            except Exception as e:  # one bad dialogue never stops the run: recorded as failed
                out.append(speech_row(it.row, None, self.spec, status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                                      tts=prov, voice_user=""))
        return out

    def _speak(self, it: RowItem, prov: str) -> dict:
        from tts.timeline import layout

        d = dialogue_from_row(it.row)
        voices = {"assistant": self.spec.voices.assistant, "user": self.spec.voices.user_voice(d.seed)}
        turns = []
        for t in d.turns:
            backend, name = parse_voice(voices[t.role])
            turns.append((t.role, t.text, self.backends[backend].synthesize(t.text, name)))
        tl = self.spec.timeline
        sample = layout(d.id, turns, seed=d.seed, gap_s=tl.gap_s, overlap_prob=tl.overlap_prob,
                        max_overlap_s=tl.max_overlap_s, sample_rate_hz=tl.sample_rate_hz)
        return speech_row(it.row, sample, self.spec, tts=prov, voice_user=voices["user"])


def split_name(row: dict, split: str | None) -> str:
    return split or f"{row['source']}-{row['instruction']}".lower()


def carried(row: dict, split: str | None) -> dict:
    """The columns a speech or token row carries over from its dialogue (or speech) row."""
    return {
        "id": row["id"],
        "dialogue_id": row.get("dialogue_id") or row["id"],
        "split": row.get("split") or split_name(row, split),
        "source": row["source"],
        "instruction": row["instruction"],
        "caption_id": row.get("caption_id"),
        "image": row.get("image"),
        "seed": row["seed"],
        "status": "ok",
        "reason": "",
        "error": "",
        "model_user": row.get("model_user", ""),
        "model_assistant": row.get("model_assistant", ""),
        "prompt_version": row.get("prompt_version", ""),
        "input_shard": row["input_shard"],
        "input_row": row["input_row"],
    }


def speech_row(row: dict, sample: SpeechSample | None, spec: SpeechSpec, *, status: str = "ok", error: str = "",
               tts: str = "", voice_user: str = "") -> dict:
    from tts.audio import to_flac

    r = carried(row, spec.split)
    r.update(status=status, error=error, tts=tts, voice_assistant=spec.voices.assistant, voice_user=voice_user)
    if sample is None:
        r.update(sample_rate_hz=0, num_samples=0, duration_s=0.0, audio_flac=b"", words=[], turns=[], codes=None,
                 codes_codec="")
        return r
    r.update(
        sample_rate_hz=sample.sample_rate_hz,
        num_samples=int(sample.audio.shape[1]),
        duration_s=sample.duration_s,
        audio_flac=to_flac(sample.audio, sample.sample_rate_hz),
        words=[{"word": w.word, "start_s": w.start_s, "end_s": w.end_s, "speaker": w.speaker} for w in sample.words],
        turns=[asdict(t) for t in sample.turns],
        codes=sample.codes.tolist() if sample.codes is not None else None,
        codes_codec="kyutai/mimi" if sample.codes is not None else "",
    )
    return r
