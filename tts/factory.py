"""`create_backend(name, **options)`: a speech backend by name (piper, espeak, kyutai), imported on demand so
that a machine without one backend's packages can still use the others."""
from __future__ import annotations

from tts.backend import SpeechBackend


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
