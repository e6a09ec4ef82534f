"""Kyutai DSM TTS speech backend (`kyutai/tts-1.6b-en_fr`, voices from `kyutai/tts-voices`).

Through the `moshi` package (`make install` installs it: `moshi==0.2.13 --no-deps`, see docs/speech.md).
It follows moshi's `TTSModel` API (moshi/models/tts.py): `CheckpointInfo.from_hf_repo` ->
`TTSModel.from_checkpoint_info` -> `prepare_script` -> `make_condition_attributes` -> `generate`,
decoded with the model's Mimi the way `TTSModel.simple_generate` does.

Devices: `cuda` (production) or `cpu` (same code path; slow with the real 1.6B model, fast with
`builtin:kyutai-tiny`, the random-weight miniature built by `tts.kyutai_tiny` for tests and
smoke runs). On the CPU, moshi's lazy `torch.compile` is switched off (`moshi.utils.compile.no_compile`):
compiling costs ~20 s per process and again per batch shape, more than a tiny model's whole run.

Models: a hub repository in moshi's format (`hf_repo`, default kyutai/tts-1.6b-en_fr, voices from
`voice_repo`, default kyutai/tts-voices), or `builtin:kyutai-tiny` (its own repository and voice
repository, in a local hub-layout cache that the unmodified hub code reads offline: the backend
points `huggingface_hub`'s cache at it and sets offline mode while it loads, as HF_HUB_CACHE and
HF_HUB_OFFLINE=1 would).

Voices: any voice of the voice repository, named as in `kyutai/tts-voices` (`vctk/p226_023.wav`,
`expresso/ex03-ex01_happy_001_channel1_334s.wav`, ...; the file read is that name plus the model's
suffix `.SIG@EPOCH.safetensors`), or a local `.safetensors` voice embedding. `check_setup` resolves
every voice file and checks `cfg_coef` against the model's config before any work, and the sha256 of
each voice file is in `info()` (the provenance of every row).

Same audio however it is batched: each turn is generated on its own, with its own seed (`seeds`:
the speech worker passes one per (dialogue seed, turn); without it, one from the text and voice), so a
turn's audio and codes do not depend on what it is batched with, on the chunk size, or on a retry.
moshi's batched generation is not batch-invariant (one global RNG draws for every row of a batch;
measured in docs/speech.md), so batching several turns in one `generate` call would tie each turn's
audio to its batch.

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
`codec_name` names that Mimi (`kyutai/mimi` for Kyutai's released Mimi weights, `builtin:kyutai-tiny`
for the miniature's), so that `ssvd tokens --codec` with the same name reuses these codes.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import threading

import numpy as np

from pipeline.core.types import Utterance, stable_int
from tts.kyutai_setup import DEFAULT_REPO, DEFAULT_VOICES, TINY, _require, check_setup, hub
from tts.normalize import assemble_spans, clause_mark, normalize_words

_TRIM_FRAMES = 2  # moshi's simple_generate drops the first 2 decoded frames (a click)
_CODEBOOKS = 8


class KyutaiBackend:
    """Kyutai's DSM TTS on one device; `synthesize_batch` speaks several turns, each on its own (see above)."""

    name = "kyutai"

    def __init__(
        self,
        hf_repo: str = DEFAULT_REPO,
        voice_repo: str | None = None,
        voices: tuple[str, ...] | list[str] = DEFAULT_VOICES,
        n_q: int = 32,
        temp: float = 0.6,
        cfg_coef: float = 2.0,
        padding_between: int = 1,
        device: str = "cuda",
        num_threads: int | None = None,
    ) -> None:
        _require(device)
        import torch
        from moshi.models.loaders import CheckpointInfo
        from moshi.models.tts import TTSModel

        self.setup = check_setup(hf_repo, voice_repo, voices, cfg_coef)
        source = self.setup.source
        self.hf_repo = source.name
        self.voice_repo = source.voice_repo
        self._voices = tuple(dict.fromkeys(voices))
        self.n_q = n_q
        self.temp = temp
        self.cfg_coef = float(cfg_coef)
        self.padding_between = padding_between
        self.device = device
        self._torch = torch
        if num_threads is None and device == "cpu" and source.name == TINY:
            num_threads = 1  # its matrices are too small to gain from threads; spinning threads only cost
        self.num_threads = num_threads
        with hub(source), self._compile_guard(), self._threads():
            checkpoint = CheckpointInfo.from_hf_repo(source.repo)
            self.model = TTSModel.from_checkpoint_info(
                checkpoint, n_q=n_q, temp=temp, voice_repo=source.voice_repo, device=torch.device(device)
            )
        self.sample_rate_hz = int(self.model.mimi.sample_rate)  # 24 kHz
        self.frame_rate = float(self.model.mimi.frame_rate)  # 12.5 Hz
        self._distilled_cfg = bool(self.model.valid_cfg_conditionings)
        if not self._distilled_cfg:
            self.model.cfg_coef = self.cfg_coef
        self.codec_name = self.setup.codec_name
        self._conditions: dict[str, object] = {}
        self._lock = threading.Lock()  # one generation at a time on the device

    # --- interface -------------------------------------------------------------------------------

    def voices(self) -> list[str]:
        return list(self._voices)

    def info(self) -> dict:
        try:
            version = importlib.metadata.version("moshi")
        except importlib.metadata.PackageNotFoundError:
            version = None
        src = self.setup.source
        return {
            "backend": self.name,
            "package": "moshi",
            "version": version,
            "model": self.hf_repo,
            "repo": src.repo,
            "fingerprint": src.fingerprint,
            "model_id": self.setup.config.get("model_id"),
            "voice_repo": self.voice_repo,
            "voices": dict(self.setup.voice_sha256),  # voice -> sha256 of its embedding file
            "n_q": self.n_q,
            "temp": self.temp,
            "cfg_coef": self.cfg_coef,
            "device": self.device,
            "codec": self.codec_name,
            "sample_rate_hz": self.sample_rate_hz,
            "frame_rate_hz": self.frame_rate,
            "seeding": "per turn",
        }

    def synthesize(self, text: str, voice: str, seed: int | None = None) -> Utterance:
        return self.synthesize_batch([text], [voice], None if seed is None else [seed])[0]

    def silence_codes(self) -> np.ndarray:
        """[8] Mimi codes of a silent frame (the last frame of 1 s of zeros), to fill the timeline's gaps."""
        if getattr(self, "_silence", None) is None:
            torch = self._torch
            with self._lock, torch.no_grad(), self._compile_guard(), self._threads():
                zeros = torch.zeros(1, 1, self.sample_rate_hz, device=self.device)
                self._silence = self.model.mimi.encode(zeros)[0, :_CODEBOOKS, -1].cpu().numpy().astype(np.int64)
        return self._silence

    def synthesize_batch(self, texts: list[str], voices: list[str], seeds: list[int] | None = None) -> list[Utterance]:
        """One Utterance per text; turn i is generated alone, seeded by `seeds[i]` (default: from its text and voice)."""
        if len(texts) != len(voices) or (seeds is not None and len(seeds) != len(texts)):
            raise ValueError(f"{len(texts)} texts, {len(voices)} voices, {len(seeds or texts)} seeds")
        for v in voices:
            if v not in self.setup.voice_files:
                raise ValueError(f"kyutai voice {v!r} was not declared at start-up; declared: {', '.join(self._voices)}")
        if seeds is None:
            seeds = [stable_int("kyutai", t, v) for t, v in zip(texts, voices)]
        return [self._one(t, v, s) for t, v, s in zip(texts, voices, seeds)]

    @contextlib.contextmanager
    def _threads(self):
        """torch's intra-op threads set to `num_threads` while this backend computes, then given back
        (torch's setting is process-wide: other models in the process keep theirs)."""
        if self.num_threads is None:
            yield
            return
        old = self._torch.get_num_threads()
        self._torch.set_num_threads(max(1, int(self.num_threads)))
        try:
            yield
        finally:
            self._torch.set_num_threads(old)

    def _compile_guard(self):
        """moshi's lazy torch.compile off on the CPU (see the module doc); on CUDA as moshi sets it."""
        if self.device == "cpu":
            from moshi.utils.compile import no_compile

            return no_compile()
        return contextlib.nullcontext()

    def _one(self, text: str, voice: str, seed: int) -> Utterance:
        torch = self._torch
        written, token_word, tokens, line = _script(text)
        entries = self.model.prepare_script([line], padding_between=self.padding_between) if tokens else []
        if len(entries) != len(tokens):
            raise RuntimeError(f"kyutai script has {len(entries)} entries for {len(tokens)} tokens: {text!r}")
        attributes = self._condition(voice)
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with self._lock, torch.no_grad(), self._compile_guard(), self._threads(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            result = self.model.generate([entries], [attributes])
            frames = torch.cat(result.frames[self.model.delay_steps :], dim=-1)  # [1, 1 + Q, T]
            pcm_frames = []
            with self.model.mimi.streaming(1):
                for t in range(frames.shape[-1]):
                    pcm_frames.append(torch.clip(self.model.mimi.decode(frames[:, 1:, t : t + 1]), -1, 1))
            pcm = torch.cat(pcm_frames, dim=-1)[0, 0].float().cpu().numpy()  # [samples]
            codes = frames[0, 1 : 1 + _CODEBOOKS].cpu().numpy()
        hop = pcm.shape[-1] // max(frames.shape[-1], 1)
        end_step = result.end_steps[0]
        if tokens and end_step is None:
            raise RuntimeError(f"kyutai TTS did not finish within max_gen_length: {text!r}")
        # Like simple_generate: decoded frames [2, end_step + 2) of the delay-corrected stream.
        stop = min(max(end_step or 0, 1) + _TRIM_FRAMES, frames.shape[-1])
        audio = pcm[_TRIM_FRAMES * hop : stop * hop].astype(np.float32)
        if audio.size == 0:  # nothing to say ("", "...")
            audio = np.zeros(int(0.2 * self.sample_rate_hz), dtype=np.float32)
        steps = [step for _, step in result.all_transcripts[0]]
        measured = self._spans(audio, steps, token_word, len(written), end_step or stop)
        words = assemble_spans(written, measured, len(audio) / self.sample_rate_hz)
        return Utterance(audio=audio, sample_rate_hz=self.sample_rate_hz, words=words, voice=voice,
                         codes=codes[:, _TRIM_FRAMES:stop].astype(np.int64))

    # --- internals -------------------------------------------------------------------------------

    def _condition(self, voice: str):  # noqa: ANN202 - moshi ConditionAttributes
        cached = self._conditions.get(voice)
        if cached is None:
            path = self.setup.voice_files[voice]  # resolved at start-up (check_setup)
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
