"""Kyutai DSM TTS speech backend (`kyutai/tts-1.6b-en_fr`, voices from `kyutai/tts-voices`).

GPU only, through the `moshi` package (optional extra: `pip install -e '.[kyutai]'` on a GPU
machine; moshi pins its own torch, so it is not installed on CPU-only setups). UNTESTED HERE: the
CPU machines this project is developed on cannot run it; tests/gpu/test_kyutai.py runs it where
CUDA and moshi are present. It follows moshi's `TTSModel` API (moshi/models/tts.py):
`CheckpointInfo.from_hf_repo` -> `TTSModel.from_checkpoint_info` -> `prepare_script` ->
`make_condition_attributes` -> `generate`, decoded with the model's Mimi the way
`TTSModel.simple_generate` does.

How spans are measured: the DSM TTS writes text and audio as two time-aligned streams at Mimi's
12.5 Hz frame rate. Its state machine records, for every word it consumes, the step at which the
model itself asked for that word (`TTSResult.all_transcripts[b] = [(word, step), ...]`, the
`transcript` of its `State`); the word's audio starts at that step (the audio stream is delayed by
`delay_steps`, which the decoding below removes). We feed the normalised spoken tokens
(tts.normalize) one entry per token, so transcript entry k is token k: a token starts at its step
and ends at the next token's step (the last at `end_step`, where the model asked for a word past
the end), then trailing low-energy frames are trimmed off each span. Resolution is one frame, 80 ms.

`codes` in the Utterance are the first 8 Mimi codebooks of the frames that make the returned audio
([8, frames], the RVQ levels MoshiVis uses); the audio itself is decoded from all `n_q` levels.
"""
from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path

import numpy as np

from pipeline.types import Utterance, stable_int
from tts.backend import SpeechBackendUnavailable
from tts.normalize import assemble_spans, clause_mark, normalize_words

DEFAULT_REPO = "kyutai/tts-1.6b-en_fr"
DEFAULT_VOICE_REPO = "kyutai/tts-voices"
# Examples from kyutai/tts-voices; any file of that repository (or a local .safetensors) works.
DEFAULT_VOICES: tuple[str, ...] = (
    "expresso/ex03-ex01_happy_001_channel1_334s.wav",
    "expresso/ex01-ex02_default_001_channel2_198s.wav",
    "expresso/ex04-ex03_default_002_channel2_239s.wav",
    "vctk/p225_023.wav",
    "vctk/p244_023.wav",
    "vctk/p262_023.wav",
    "vctk/p303_023.wav",
)
FIX = "on a machine with an NVIDIA GPU, run: pip install -e '.[kyutai]' (installs moshi and its torch)"
_TRIM_FRAMES = 2  # moshi's simple_generate drops the first 2 decoded frames (a click)
_CODEBOOKS = 8


def _require(device: str) -> None:
    """Raise SpeechBackendUnavailable, naming the fix, when moshi or CUDA is missing."""
    problems = []
    try:
        import moshi.models.tts  # noqa: F401
    except ImportError as e:
        problems.append(f"the moshi package is not importable ({e})")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not device.startswith("cuda"):
        problems.append(f"device {device!r} is not a CUDA device (this backend is GPU only)")
    elif not cuda:
        problems.append("no CUDA GPU is visible")
    if problems:
        raise SpeechBackendUnavailable(f"kyutai speech backend unavailable: {'; '.join(problems)}. Fix: {FIX}")


class KyutaiBackend:
    """Kyutai's DSM TTS on one GPU; `synthesize_batch` generates several turns in one pass."""

    name = "kyutai"

    def __init__(
        self,
        hf_repo: str = DEFAULT_REPO,
        voice_repo: str = DEFAULT_VOICE_REPO,
        voices: tuple[str, ...] | list[str] = DEFAULT_VOICES,
        n_q: int = 32,
        temp: float = 0.6,
        cfg_coef: float = 2.0,
        padding_between: int = 1,
        device: str = "cuda",
        seed_from_text: bool = True,
    ) -> None:
        _require(device)
        import torch
        from moshi.models.loaders import CheckpointInfo
        from moshi.models.tts import TTSModel

        self.hf_repo = hf_repo
        self.voice_repo = voice_repo
        self._voices = tuple(voices)
        self.n_q = n_q
        self.cfg_coef = cfg_coef
        self.padding_between = padding_between
        self.device = device
        self.seed_from_text = seed_from_text
        self._torch = torch
        checkpoint = CheckpointInfo.from_hf_repo(hf_repo)
        self.model = TTSModel.from_checkpoint_info(
            checkpoint, n_q=n_q, temp=temp, voice_repo=voice_repo, device=torch.device(device)
        )
        self.sample_rate_hz = int(self.model.mimi.sample_rate)  # 24 kHz
        self.frame_rate = float(self.model.mimi.frame_rate)  # 12.5 Hz
        self._distilled_cfg = bool(self.model.valid_cfg_conditionings)
        if not self._distilled_cfg:
            self.model.cfg_coef = cfg_coef
        self._conditions: dict[str, object] = {}
        self._lock = threading.Lock()  # one generation at a time on the GPU

    # --- interface -------------------------------------------------------------------------------

    def voices(self) -> list[str]:
        return list(self._voices)

    def info(self) -> dict:
        try:
            version = importlib.metadata.version("moshi")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {
            "backend": self.name,
            "package": "moshi",
            "version": version,
            "model": self.hf_repo,
            "voice_repo": self.voice_repo,
            "n_q": self.n_q,
            "cfg_coef": self.cfg_coef,
            "sample_rate_hz": self.sample_rate_hz,
            "frame_rate_hz": self.frame_rate,
        }

    def synthesize(self, text: str, voice: str) -> Utterance:
        return self.synthesize_batch([text], [voice])[0]

    def silence_codes(self) -> np.ndarray:
        """[8] Mimi codes of a silent frame (the last frame of 1 s of zeros), to fill the timeline's gaps."""
        if getattr(self, "_silence", None) is None:
            torch = self._torch
            with self._lock, torch.no_grad():
                zeros = torch.zeros(1, 1, self.sample_rate_hz, device=self.device)
                self._silence = self.model.mimi.encode(zeros)[0, :_CODEBOOKS, -1].cpu().numpy().astype(np.int64)
        return self._silence

    def synthesize_batch(self, texts: list[str], voices: list[str]) -> list[Utterance]:
        if len(texts) != len(voices):
            raise ValueError(f"{len(texts)} texts but {len(voices)} voices")
        torch = self._torch
        prepared = [_script(t) for t in texts]
        entries = []
        for (_, _, tokens, line), text in zip(prepared, texts):
            got = self.model.prepare_script([line], padding_between=self.padding_between) if tokens else []
            if len(got) != len(tokens):
                raise RuntimeError(f"kyutai script has {len(got)} entries for {len(tokens)} tokens: {text!r}")
            entries.append(got)
        attributes = [self._condition(v) for v in voices]
        with self._lock, torch.no_grad():
            if self.seed_from_text:
                torch.manual_seed(stable_int("kyutai", tuple(texts), tuple(voices)))
            result = self.model.generate(entries, attributes)
            frames = torch.cat(result.frames[self.model.delay_steps :], dim=-1)  # [B, 1 + Q, T]
            pcm_frames = []
            with self.model.mimi.streaming(len(texts)):
                for t in range(frames.shape[-1]):
                    pcm_frames.append(torch.clip(self.model.mimi.decode(frames[:, 1:, t : t + 1]), -1, 1))
            pcm = torch.cat(pcm_frames, dim=-1)[:, 0].float().cpu().numpy()  # [B, samples]
            codes = frames[:, 1 : 1 + _CODEBOOKS].cpu().numpy()
        hop = pcm.shape[-1] // max(frames.shape[-1], 1)
        out = []
        for b, ((written, token_word, tokens, _), voice) in enumerate(zip(prepared, voices)):
            end_step = result.end_steps[b]
            if tokens and end_step is None:
                raise RuntimeError(f"kyutai TTS did not finish within max_gen_length: {texts[b]!r}")
            # Like simple_generate: decoded frames [2, end_step + 2) of the delay-corrected stream.
            stop = min(max(end_step or 0, 1) + _TRIM_FRAMES, frames.shape[-1])
            audio = pcm[b, _TRIM_FRAMES * hop : stop * hop].astype(np.float32)
            if audio.size == 0:  # nothing to say ("", "...")
                audio = np.zeros(int(0.2 * self.sample_rate_hz), dtype=np.float32)
            steps = [step for _, step in result.all_transcripts[b]]
            measured = self._spans(audio, steps, token_word, len(written), end_step or stop)
            words = assemble_spans(written, measured, len(audio) / self.sample_rate_hz)
            out.append(
                Utterance(
                    audio=audio,
                    sample_rate_hz=self.sample_rate_hz,
                    words=words,
                    voice=voice,
                    codes=codes[b, :, _TRIM_FRAMES:stop].astype(np.int64),
                )
            )
        return out

    # --- internals -------------------------------------------------------------------------------

    def _condition(self, voice: str):  # noqa: ANN202 - moshi ConditionAttributes
        cached = self._conditions.get(voice)
        if cached is None:
            path = Path(voice) if voice.endswith(".safetensors") else self.model.get_voice_path(voice)
            cfg = self.cfg_coef if self._distilled_cfg else None
            cached = self.model.make_condition_attributes([path], cfg_coef=cfg)
            self._conditions[voice] = cached
        return cached

    def _spans(
        self, audio: np.ndarray, steps: list[int], token_word: list[int], num_words: int, last_step: int
    ) -> list[tuple[float, float] | None]:
        """Per written word, (start_s, end_s) from the steps at which the model took its tokens."""
        fr = self.frame_rate
        dur = len(audio) / self.sample_rate_hz
        measured: list[tuple[float, float] | None] = [None] * num_words
        for k, step in enumerate(steps[: len(token_word)]):
            nxt = steps[k + 1] if k + 1 < len(steps) else last_step
            start = min(max((step - _TRIM_FRAMES) / fr, 0.0), dur)
            end = min(max((nxt - _TRIM_FRAMES) / fr, start), dur)
            end = _trim_trailing_silence(audio, self.sample_rate_hz, start, end)
            i = token_word[k]
            old = measured[i]
            measured[i] = (start, end) if old is None else (old[0], max(old[1], end))
        return measured


def _script(text: str) -> tuple[list[str], list[int], list[str], str]:
    """(written words, written word of each token, tokens, script line) for `prepare_script`:
    one whitespace-free token per spoken word, clause marks attached to the word they follow
    (":" becomes "," since `prepare_script` drops colons)."""
    pairs = normalize_words(text)
    written = [w for w, _ in pairs]
    token_word: list[int] = []
    tokens: list[str] = []
    for i, (w, spoken) in enumerate(pairs):
        mark = clause_mark(w).replace(":", ",")
        parts = spoken.split()
        if not parts:
            if mark and tokens and tokens[-1][-1:] not in ",.;?!":
                tokens[-1] += mark
            continue
        for part in parts:
            token_word.append(i)
            tokens.append(part)
        tokens[-1] += mark
    return written, token_word, tokens, " ".join(tokens)


def _trim_trailing_silence(audio: np.ndarray, sr: int, start: float, end: float, window_s: float = 0.01) -> float:
    """Move `end` back over trailing windows quieter than 5% of the span's loudest window."""
    a, b = int(start * sr), int(end * sr)
    n = max(int(window_s * sr), 1)
    if b - a < 2 * n:
        return end
    seg = audio[a:b]
    usable = (len(seg) // n) * n
    rms = np.sqrt(np.mean(seg[:usable].reshape(-1, n) ** 2, axis=1))
    loud = np.nonzero(rms > 0.05 * float(rms.max()))[0] if rms.size and rms.max() > 0 else []
    if len(loud) == 0:
        return end
    return min(end, start + (int(loud[-1]) + 1) * n / sr)
