"""Voices: one assistant voice for the whole corpus (the paper keeps it constant), user voices
drawn per dialogue from a pool.

A voice is written `backend:voice`, e.g. `piper:joe` or `espeak:en-us+m3`. The offline default is
piper for the assistant and eSpeak NG variants for the users; production uses Kyutai's TTS voices.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_ASSISTANT = "piper:joe"
DEFAULT_USERS: tuple[str, ...] = (
    "espeak:en-us+m1", "espeak:en-us+m3", "espeak:en-us+m5", "espeak:en-us+m7",
    "espeak:en-us+f1", "espeak:en-us+f2", "espeak:en-us+f3", "espeak:en-us+f4",
    "espeak:en-gb+m2", "espeak:en-gb+f3", "espeak:en+m4", "espeak:en+f5",
)
BACKENDS = ("piper", "espeak", "kyutai")


def parse_voice(spec: str) -> tuple[str, str]:
    """`backend:voice` -> (backend, voice). The voice part may itself contain ':' (kyutai file paths)."""
    backend, sep, voice = spec.partition(":")
    if not sep or backend not in BACKENDS or not voice:
        raise ValueError(f"voice {spec!r}: write it as BACKEND:VOICE with BACKEND one of {', '.join(BACKENDS)} "
                         f"(e.g. piper:joe, espeak:en-us+m3)")
    return backend, voice


@dataclass(frozen=True)
class VoiceConfig:
    assistant: str = DEFAULT_ASSISTANT
    users: tuple[str, ...] = DEFAULT_USERS

    def __post_init__(self) -> None:
        parse_voice(self.assistant)
        if not self.users:
            raise ValueError("the user voice pool is empty: give at least one --user-voice")
        for v in self.users:
            parse_voice(v)

    def user_voice(self, dialogue_seed: int) -> str:
        """The user voice of a dialogue: a pure function of its seed."""
        return random.Random(f"{dialogue_seed}:user-voice").choice(self.users)

    def backends(self) -> list[str]:
        return sorted({parse_voice(v)[0] for v in (self.assistant, *self.users)})
