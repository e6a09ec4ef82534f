"""Speech workers: dialogue rows -> two-channel speech rows (TTS per turn, timeline, FLAC).

Used as Ray actors by `ssvd speech` (see pipeline.core.ray_pool) or directly in-process. Each worker
loads its speech backends once; a turn that cannot be spoken makes its dialogue `failed` with the
error, never a crash of the run. `check_speech_spec` checks the backends' settings (kyutai: model,
cfg_coef, every voice file) in the driver before any worker starts or any dialogue is read.

Each turn gets its own seed, `turn_seed(dialogue seed, turn index)`, which a backend that samples
(kyutai, piper) uses alone for that turn: a turn's audio does not depend on the chunk it was spoken in.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from pipeline.core import faults
from pipeline.core.stage_input import RowItem, carried
from pipeline.core.types import SpeechSample, dialogue_from_row, stable_int
from tts.voices import VoiceConfig, parse_voice

TTS_ATTEMPTS = 3  # a TTS call that fails (not for its input) is tried this many times in all, with backoff
KYUTAI_SETUP_KEYS = ("hf_repo", "voice_repo", "cfg_coef")  # kyutai options that check_setup checks


def turn_seed(dialogue_seed: int, turn: int) -> int:
    """The sampling seed of one turn: a function of its dialogue's seed and its index only."""
    return stable_int("tts-turn", dialogue_seed, turn)


def kyutai_options(voices: VoiceConfig, device: str, model: str | None = None, cfg_coef: float | None = None,
                   **more) -> tuple:
    """`SpeechSpec.backend_options` for the kyutai backend (empty when no voice uses it)."""
    if "kyutai" not in voices.backends():
        return ()
    kw = {"device": device, **({"hf_repo": model} if model else {}),
          **({"cfg_coef": cfg_coef} if cfg_coef is not None else {}), **more}
    return (("kyutai", tuple(sorted(kw.items()))),)


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
        """The backend's constructor options; kyutai also gets the voices the spec uses (checked at start-up)."""
        opts = dict(dict(self.backend_options).get(backend, ()))
        if backend == "kyutai":
            opts["voices"] = tuple(dict.fromkeys(name for b, name in map(parse_voice, self.all_voices()) if b == backend))
        return opts

    def all_voices(self) -> tuple[str, ...]:
        return (self.voices.assistant, *self.voices.users)


def check_speech_spec(spec: SpeechSpec) -> None:
    """Check, before any work, what can be checked without loading a model: kyutai's model config,
    cfg_coef and voice files (ValueError naming the valid values)."""
    if "kyutai" in spec.voices.backends():
        from tts.kyutai_setup import check_setup

        opts = spec.options_for("kyutai")
        check_setup(voices=opts["voices"], **{k: v for k, v in opts.items() if k in KYUTAI_SETUP_KEYS})


class SpeechWorker:
    def __init__(self, spec: SpeechSpec):
        from tts.factory import create_backend

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
        """Speak every turn of every dialogue of the chunk, one batch per backend where it batches (kyutai)."""
        prov = self.tts_provenance()
        dialogues, voices, failed = {}, {}, {}
        requests: dict[str, list[tuple[int, int, str, str, int]]] = {}  # backend -> (item, turn, text, voice, seed)
        for k, it in enumerate(items):
            try:
                d = dialogues[k] = dialogue_from_row(it.row)
                voices[k] = {"assistant": self.spec.voices.assistant, "user": self.spec.voices.user_voice(d.seed)}
                for n, t in enumerate(d.turns):
                    backend, name = parse_voice(voices[k][t.role])
                    requests.setdefault(backend, []).append((k, n, t.text, name, turn_seed(d.seed, n)))
            except Exception as e:
                failed[k] = e
        utterances: dict[tuple[int, int], object] = {}
        for backend, reqs in requests.items():
            for (k, n, *_), u in zip(reqs, self._synthesize(backend, reqs)):
                if isinstance(u, Exception):
                    failed.setdefault(k, u)
                else:
                    utterances[(k, n)] = u
        out = []
        for k, it in enumerate(items):
            try:
                if k in failed:
                    raise failed[k]
                out.append(self._lay_out(it, dialogues[k], voices[k], utterances, k, prov))
            except Exception as e:  # one bad dialogue never stops the run: recorded as failed
                out.append(speech_row(it.row, None, self.spec, status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                                      tts=prov, voice_user=voices.get(k, {}).get("user", "")))
        return out

    def _synthesize(self, backend: str, reqs: list) -> list:
        """Utterances in request order; a request that fails gives its exception instead."""
        be = self.backends[backend]
        batched = hasattr(be, "synthesize_batch")  # kyutai: takes each turn's seed
        if batched:
            try:
                faults.maybe_fail("speech", tuple(r[2:] for r in reqs))
                return be.synthesize_batch([r[2] for r in reqs], [r[3] for r in reqs], [r[4] for r in reqs])
            except Exception:
                pass  # find the culprit one request at a time (each turn still with its own seed)

        def one(text: str, voice: str, seed: int):
            faults.maybe_fail("speech", (text, voice, seed))
            return be.synthesize_batch([text], [voice], [seed])[0] if batched else be.synthesize(text, voice, seed=seed)

        out = []
        for _, _, text, voice, seed in reqs:
            try:  # a transient failure (not an error of the text itself) is retried with backoff
                out.append(faults.retry(lambda: one(text, voice, seed), attempts=TTS_ATTEMPTS,
                                        backoff_s=faults.RETRY_BACKOFF_S, what=f"{backend} TTS"))
            except Exception as e:
                out.append(e)
        return out

    def _lay_out(self, it: RowItem, d, voices: dict, utterances: dict, k: int, prov: str) -> dict:
        from tts.timeline import layout

        turns = [(t.role, t.text, utterances[(k, n)]) for n, t in enumerate(d.turns)]
        silence, codec = None, ""
        if turns and all(u.codes is not None for _, _, u in turns):
            be = self.backends[parse_voice(voices["assistant"])[0]]
            silence, codec = be.silence_codes(), getattr(be, "codec_name", "kyutai/mimi")
        tl = self.spec.timeline
        sample = layout(d.id, turns, seed=d.seed, gap_s=tl.gap_s, overlap_prob=tl.overlap_prob,
                        max_overlap_s=tl.max_overlap_s, sample_rate_hz=tl.sample_rate_hz, silence_codes=silence)
        for t in sample.turns:
            t.voice = voices[t.role]  # the full BACKEND:VOICE spec
        return speech_row(it.row, sample, self.spec, tts=prov, voice_user=voices["user"], codes_codec=codec)


def speech_row(row: dict, sample: SpeechSample | None, spec: SpeechSpec, *, status: str = "ok", error: str = "",
               tts: str = "", voice_user: str = "", codes_codec: str = "kyutai/mimi") -> dict:
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
        codes_codec=codes_codec if sample.codes is not None else "",
    )
    return r
