"""A loaded Mimi codec (`Codec`): streaming batched encode, decode, silence codes and provenance.

Made by `tts.codec.load_codec` (transformers' `MimiModel`) and `tts.moshi_codec` (the Mimi inside a
Kyutai TTS checkpoint, same interface). Units: see `tts.codec`.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


class Codec:
    """A loaded Mimi model; see the module doc for units.

    `chunk_s` is the length, in seconds, of each streaming step (memory grows with
    rows x chunk_s: about 30 MB per second of audio per row in float32); `max_batch_rows` bounds
    the rows (channels) that `encode_many` puts in one batch.
    """

    def __init__(
        self,
        model,
        name: str,
        *,
        weights_sha256: str,
        random: bool,
        num_codebooks: int = 8,
        chunk_s: float = 10.0,
        max_batch_rows: int = 8,
    ) -> None:
        cfg = model.config
        if not cfg.num_semantic_quantizers <= num_codebooks <= cfg.num_quantizers:
            raise ValueError(
                f"num_codebooks must be in [{cfg.num_semantic_quantizers}, {cfg.num_quantizers}], got {num_codebooks}"
            )
        self.model = model.eval()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.random = random
        self.num_codebooks = int(num_codebooks)
        self.sample_rate_hz = int(cfg.sampling_rate)
        self.frame_rate_hz = float(cfg.frame_rate)
        self.samples_per_frame = int(round(self.sample_rate_hz / self.frame_rate_hz))
        self.chunk_frames = max(1, int(round(chunk_s * self.frame_rate_hz)))
        self.max_batch_rows = max(1, int(max_batch_rows))
        self._silence: np.ndarray | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def num_frames(self, num_samples: int) -> int:
        """Frames for `num_samples` samples at 24 kHz: ceil(num_samples / 1920)."""
        return -(-int(num_samples) // self.samples_per_frame)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Codes of float audio `[B, samples]` at 24 kHz: int16 `[B, num_codebooks, ceil(samples / 1920)]`.

        The rows are zero-padded to a whole number of frames and encoded together, chunk by
        chunk (see the module doc), under `torch.inference_mode()`.
        """
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"audio must be [batch, samples], got shape {x.shape}")
        batch, n = x.shape
        frames = self.num_frames(n)
        out = np.zeros((batch, self.num_codebooks, frames), dtype=np.int16)
        if batch == 0 or frames == 0:
            return out
        spf = self.samples_per_frame
        padded = np.zeros((batch, frames * spf), dtype=np.float32)
        padded[:, :n] = x
        wave = torch.from_numpy(padded)[:, None]  # [B, 1, samples]
        step = self.chunk_frames * spf
        past = cache = None
        done = 0
        with torch.inference_mode():
            for s in range(0, frames * spf, step):
                chunk = wave[..., s : s + step].to(device=self.device, dtype=self.dtype)
                res = self.model.encode(
                    chunk,
                    num_quantizers=self.num_codebooks,
                    encoder_past_key_values=past,
                    padding_cache=cache,
                    use_streaming=True,
                    return_dict=True,
                )
                past, cache = res.encoder_past_key_values, res.padding_cache
                codes = res.audio_codes.to("cpu", torch.int16).numpy()  # [B, K, chunk frames]
                want = chunk.shape[-1] // spf
                take = min(want, codes.shape[-1])  # transformers gives exactly `want`; guard anyway
                out[:, :, done : done + take] = codes[:, :, :take]
                if take < want:  # never seen: repeat the last frame rather than leave zeros
                    out[:, :, done + take : done + want] = codes[:, :, take - 1 : take]
                done += want
        return out

    def encode_many(self, dialogues: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes of several two-channel dialogues (each `[2, samples]` at 24 kHz).

        Returns one int16 `[2 * num_codebooks, ceil(samples / 1920)]` per dialogue, in order:
        rows 0-7 channel 0 (assistant), rows 8-15 channel 1 (user). Dialogues of similar length
        are batched together (up to `max_batch_rows` channels), padded to the longest with
        zeros (encoding is causal, so padding does not change earlier frames), and each is cut
        back to its own frames.
        """
        arrays = [np.asarray(d, dtype=np.float32) for d in dialogues]
        for i, a in enumerate(arrays):
            if a.ndim != 2 or a.shape[0] != 2:
                raise ValueError(f"dialogue {i}: audio must be [2, samples], got shape {a.shape}")
        results: list[np.ndarray | None] = [None] * len(arrays)
        order = sorted(range(len(arrays)), key=lambda i: arrays[i].shape[1])
        per_batch = max(1, self.max_batch_rows // 2)
        for b in range(0, len(order), per_batch):
            idx = order[b : b + per_batch]
            longest = max(arrays[i].shape[1] for i in idx)
            batch = np.zeros((2 * len(idx), longest), dtype=np.float32)
            for j, i in enumerate(idx):
                batch[2 * j : 2 * j + 2, : arrays[i].shape[1]] = arrays[i]
            codes = self.encode(batch)
            for j, i in enumerate(idx):
                frames = self.num_frames(arrays[i].shape[1])
                results[i] = codes[2 * j : 2 * j + 2, :, :frames].reshape(2 * self.num_codebooks, frames)
        return results  # type: ignore[return-value]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Audio of codes `[B, K, frames]` (K <= the model's codebooks): float32 `[B, frames * 1920]` at 24 kHz.

        One pass over the whole sequence (the decoder has no streaming padding cache in
        transformers), so memory grows with the length; for listening and export, not training.
        """
        c = np.asarray(codes)
        if c.ndim != 3:
            raise ValueError(f"codes must be [batch, codebooks, frames], got shape {c.shape}")
        if c.shape[-1] == 0:
            return np.zeros((c.shape[0], 0), dtype=np.float32)
        with torch.inference_mode():
            t = torch.as_tensor(c.astype(np.int64), device=self.device)
            audio = self.model.decode(t, return_dict=True).audio_values  # [B, 1, samples]
            return audio[:, 0].float().cpu().numpy()

    def decode_stereo(self, codes) -> np.ndarray:
        """Audio `[2, frames * 1920]` of a dialogue's codes `[2 * K, frames]` (as `encode_many` makes:
        rows 0..K-1 channel 0, assistant; rows K..2K-1 channel 1, user)."""
        c = np.asarray(codes)
        if c.ndim != 2 or c.shape[0] % 2:
            raise ValueError(f"codes must be [2 * codebooks, frames], got shape {c.shape}")
        k = c.shape[0] // 2
        return self.decode(np.stack([c[:k], c[k:]]))

    def silence_codes(self) -> np.ndarray:
        """Codes `[num_codebooks]` (int16) of a silent frame, for `tts.timeline.layout`.

        The last frame of the codes of 1 s of zeros: the first frames differ (the convolutions see
        their zero left padding rather than the steady response to silence); from the fourth on
        the frames of silence are all equal. Computed once.
        """
        if self._silence is None:
            codes = self.encode(np.zeros((1, self.sample_rate_hz), dtype=np.float32))
            self._silence = codes[0, :, -1].copy()
        return self._silence.copy()

    def info(self) -> dict:
        """Provenance, written next to the codes."""
        import transformers

        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "random": self.random,
            "num_codebooks": self.num_codebooks,
            "frame_rate_hz": self.frame_rate_hz,
            "sample_rate_hz": self.sample_rate_hz,
            "samples_per_frame": self.samples_per_frame,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }


def weights_sha256(model) -> str:
    """sha256 over the state dict: for each key in sorted order its name, dtype, shape and bytes."""
    h = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use float32 or bfloat16") from None


def configure_threads(num_threads: int | None) -> None:
    """Set torch's intra-op threads to `num_threads`; None keeps the caller's setting unless it
    exceeds the CPUs this process may use (affinity), which only oversubscribes."""
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
        return
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)
