"""eSpeak NG speech backend (CPU, formant synthesis) through the C library of `espeakng-loader`.

How spans are measured: the text is normalised (tts.normalize) and spoken by `espeak_Synth` in
synchronous mode with word and phoneme events. Each event carries its position in the input text
(characters, 1-based) and in the audio (ms), so every event maps back to the spoken token, and the
written word, it belongs to. A token starts at its word event; it ends where its last phoneme
ends, i.e. at the next event (a pause "_", or the next word's event), so pauses are not counted
in words.

eSpeak sometimes fuses words into one word event ("in the", "of the"): its phoneme events then all
point at the first word. Such a fused span is split among its words inside that span only: at
phoneme boundaries when the words' own phonemizations (`espeak_TextToPhonemes`) add up to the fused
phoneme count, else in proportion to those phoneme counts (character counts when unavailable).
Silent words ("—") are voiced as a comma and get that pause (tts.normalize.assemble_spans).

eSpeak has one global state per process: everything runs under a module lock. That state carries
over from call to call (static variables of its wave generator: flutter phase, echo buffer, Klatt
noise; `espeak_ng_SetRandSeed` and re-initialising do not reset them), so the same call gave slightly
different audio depending on what was spoken before; and voices with breath noise (the `+f` variants)
draw it from libc's `rand()`, which `espeak_Initialize` seeds with the time. Each `synthesize` therefore
reloads the library (`espeak_Terminate`, dlclose, dlopen, `espeak_Initialize`: about 1 ms) and seeds
`srand` and `espeak_ng_SetRandSeed` from its `seed` right before synthesis: a turn's audio is a pure
function of (text, voice, seed), whatever was spoken before it, and whenever.
"""
from __future__ import annotations

import bisect
import ctypes
import hashlib
import importlib.metadata
import threading
from pathlib import Path

import numpy as np

from pipeline.core.types import Utterance
from tts.backend import SpeechBackendUnavailable
from tts.normalize import assemble_spans, clause_mark, normalize_words

# The same pool as tts.voices.DEFAULT_USERS: eSpeak NG English voices with variants.
VOICES: tuple[str, ...] = (
    "en-us+m1", "en-us+m3", "en-us+m5", "en-us+m7", "en-us+f1", "en-us+f2", "en-us+f3", "en-us+f4",
    "en-gb+m2", "en-gb+f3", "en+m4", "en+f5",
)
# Language codes that are not eSpeak voice file names: "en" is the British English voice.
_ALIASES = {"en-gb": "en", "en-uk": "en"}

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_DEFAULT_RATE = 175  # words per minute, eSpeak's default
_PEAK = 0.95


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """The process-wide eSpeak library, initialised once; use only under `LOCK`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise SpeechBackendUnavailable("eSpeak NG is missing: pip install espeakng-loader") from e
        self.library = Path(espeakng_loader.get_library_path())
        self._sha256: str | None = None
        lib = ctypes.CDLL(str(self.library))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK_TYPE]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options)
        if rate <= 0:
            raise SpeechBackendUnavailable(f"espeak_Initialize failed ({rate}): reinstall espeakng-loader")
        self.lib = lib
        self.sample_rate_hz = int(rate)
        self.version = (lib.espeak_Info(None) or b"").decode()
        self.voice: str | None = None
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, str]] = []  # (type, text position, audio ms, phoneme)
        self._callback = _CALLBACK_TYPE(self._on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events) -> int:  # noqa: ANN001 - ctypes signature
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type in (_EVENT_WORD, _EVENT_PHONEME):
                name = bytes(e.id).split(b"\0", 1)[0].decode("utf-8", "replace") if e.type == _EVENT_PHONEME else ""
                self.events.append((e.type, e.text_position, e.audio_position, name))
            i += 1
        return 0

    def library_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.library.read_bytes()).hexdigest()
        return self._sha256

    def set_voice(self, voice: str) -> None:
        if voice != self.voice:
            base, plus, variant = voice.partition("+")
            name = _ALIASES.get(base.lower(), base) + plus + variant
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                self.voice = None
                raise ValueError(f"eSpeak NG has no voice {voice!r} (e.g. {', '.join(VOICES[:3])})")
            self.voice = voice

    def synth(self, text: str, rate: int | None, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
        self.chunks, self.events = [], []
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate or _DEFAULT_RATE), 0)
        # Voices with breath (the +f variants) add noise from libc's rand(), which espeak_Initialize seeds
        # with the time, and from eSpeak's own generator: both seeded from the turn's seed, right before.
        _LIBC.srand(seed & 0xFFFFFFFF)
        self.lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        return audio, self.events

    def phoneme_count(self, word: str) -> int:
        """Phonemes in eSpeak's own phonemization of `word` (current voice), pauses excluded."""
        ptr = ctypes.c_char_p(word.encode("utf-8"))
        count = 0
        while ptr.value:
            out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, ord("|") << 8)
            if out is None:
                break
            for piece in out.decode("utf-8", "replace").replace(" ", "|").split("|"):
                if piece and not piece.startswith("_"):
                    count += 1
        return count


LOCK = threading.RLock()
_LIBC = ctypes.CDLL(None)  # the process's C library: srand()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    with LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def _fresh_engine() -> _Engine:
    """The engine in a freshly loaded library (its static state as at start-up); call under LOCK."""
    global _ENGINE
    import _ctypes

    old, _ENGINE = _ENGINE, None
    if old is not None and old.lib is not None:
        old.lib.espeak_Terminate()
        handle, old.lib = old.lib._handle, None
        _ctypes.dlclose(handle)  # the last reference: the next dlopen starts from the file again
    return _engine()


class EspeakBackend:
    """eSpeak NG voices ("en-us+m3", "en-gb+f3", ...; any name `espeak_SetVoiceByName` accepts)."""

    name = "espeak"

    def __init__(self, rate: int | None = None) -> None:
        self.rate = rate  # words per minute; None: eSpeak's default (175)
        self.sample_rate_hz = self._engine.sample_rate_hz
        self._counts: dict[tuple[str, str], int] = {}

    @property
    def _engine(self) -> _Engine:
        return _engine()

    def voices(self) -> list[str]:
        return list(VOICES)

    def info(self) -> dict:
        return {
            "backend": self.name,
            "package": "espeakng-loader",
            "version": importlib.metadata.version("espeakng-loader"),
            "espeak_ng": self._engine.version,
            "model": self._engine.library.name,
            "model_sha256": self._engine.library_sha256(),
            "sample_rate_hz": self.sample_rate_hz,
            "rate_wpm": self.rate or _DEFAULT_RATE,
            "voices": self.voices(),
        }

    def synthesize(self, text: str, voice: str, seed: int = 0) -> Utterance:
        """`seed` seeds the breath noise of voices that have it: the same (text, voice, seed), the same audio."""
        pairs = normalize_words(text)
        written = [w for w, _ in pairs]
        marks = [clause_mark(w) for w in written]
        spoken_text, token_word, token_start, token_text = _layout(pairs, marks)

        with LOCK:
            engine = _fresh_engine()
            engine.set_voice(voice)
            audio16, events = engine.synth(spoken_text, self.rate, seed) if token_word else (np.zeros(0, np.int16), [])
            duration_s = len(audio16) / self.sample_rate_hz
            token_spans = _token_spans(events, token_start, token_text, duration_s, lambda t: self._count(voice, t))

        if audio16.size == 0:
            audio16 = np.zeros(int(0.2 * self.sample_rate_hz), dtype=np.int16)
        audio = audio16.astype(np.float32) / 32768.0
        peak = float(np.max(np.abs(audio)))
        if peak > 1e-8:
            audio *= _PEAK / peak
        measured: list[tuple[float, float] | None] = [None] * len(written)
        for k, span in enumerate(token_spans):
            if span is None:
                continue
            i = token_word[k]
            old = measured[i]
            measured[i] = span if old is None else (min(old[0], span[0]), max(old[1], span[1]))
        words = assemble_spans(written, measured, len(audio) / self.sample_rate_hz)
        return Utterance(audio=audio, sample_rate_hz=self.sample_rate_hz, words=words, voice=voice)

    def _count(self, voice: str, token: str) -> int:
        key = (voice.split("+")[0], token)
        got = self._counts.get(key)
        if got is None:
            got = self._engine.phoneme_count(token)  # called under LOCK, voice already set
            if len(self._counts) > 100_000:
                self._counts.clear()
            self._counts[key] = got
        return got


def _layout(pairs: list[tuple[str, str]], marks: list[str]) -> tuple[str, list[int], list[int], list[str]]:
    """The text given to eSpeak: spoken tokens separated by spaces, each word's clause mark after
    it (a silent word's mark goes after the previous word). Returns (text, written word of each
    token, 0-based character start of each token, token text)."""
    out = ""
    token_word: list[int] = []
    token_start: list[int] = []
    token_text: list[str] = []
    for i, ((_, spoken), mark) in enumerate(zip(pairs, marks)):
        tokens = spoken.split()
        if not tokens:
            if mark and out and out.rstrip()[-1:] not in ",.;:?!":
                out = out.rstrip() + mark + " "
            continue
        for tok in tokens:
            token_word.append(i)
            token_start.append(len(out))
            token_text.append(tok)
            out += tok + " "
        if mark:
            out = out.rstrip() + mark + " "
    return out.strip(), token_word, token_start, token_text


def _token_spans(
    events: list[tuple[int, int, int, str]],
    token_start: list[int],
    token_text: list[str],
    duration_s: float,
    count,  # noqa: ANN001 - token -> eSpeak phoneme count
) -> list[tuple[float, float] | None]:
    """(start_s, end_s) of each spoken token from eSpeak's word and phoneme events."""
    n = len(token_start)
    if not n:
        return []

    def token_of(pos: int) -> int:
        return max(bisect.bisect_right(token_start, pos - 1) - 1, 0)

    word_at: dict[int, float] = {}
    timed: list[tuple[int, float, float]] = []  # (token, start_s, end_s) of spoken phonemes
    # A phoneme lasts until the next event of either kind (the next phoneme, a pause "_", or the
    # next word's event, which eSpeak emits where that word starts) or the end of the audio.
    for idx, (kind, pos, ms, name) in enumerate(events):
        k, t = token_of(pos), ms / 1000.0
        if kind == _EVENT_WORD:
            word_at.setdefault(k, t)
        elif not name.startswith("_"):
            end = events[idx + 1][2] / 1000.0 if idx + 1 < len(events) else duration_s
            if end > t:
                timed.append((k, t, end))

    # Groups: a token with its own word event, plus the following tokens eSpeak fused into it.
    heads = sorted(word_at)
    if not heads:
        return [None] * n
    if heads[0] != 0:
        word_at[0] = word_at.pop(heads[0])
        heads[0] = 0
    spans: list[tuple[float, float] | None] = [None] * n
    for g, head in enumerate(heads):
        stop = heads[g + 1] if g + 1 < len(heads) else n
        members = list(range(head, stop))
        ph = [(t, e) for k, t, e in timed if head <= k < stop]
        next_start = word_at[heads[g + 1]] if g + 1 < len(heads) else duration_s
        start = min([word_at[head]] + [t for t, _ in ph[:1]])
        end = ph[-1][1] if ph else next_start
        if end <= start:
            end = min(start + 0.01, duration_s)
        if len(members) == 1:
            spans[head] = (start, end)
            continue
        counts = [count(token_text[k]) for k in members]
        if sum(counts) == len(ph) and all(counts):
            i = 0
            for k, c in zip(members, counts):
                spans[k] = (start if k == head else ph[i][0], ph[i + c - 1][1])
                i += c
        else:
            weights = counts if all(counts) else [len(token_text[k]) for k in members]
            total = sum(weights)
            acc = 0
            for k, w in zip(members, weights):
                a = start + (end - start) * acc / total
                acc += w
                spans[k] = (a, start + (end - start) * acc / total)
    return spans
