"""Audio helpers: resampling, FLAC bytes and WAV files.

Arrays are float32 with samples in [-1, 1]; sample rates are in Hz. Multi-channel audio is laid out
`[channels, samples]` (the layout of `SpeechSample.audio`), never `[samples, channels]`.

`resample` is a windowed-sinc (Kaiser) polyphase resampler written with `torch.nn.functional.conv1d`
(the algorithm of torchaudio's `resample`, which is not installed here): it needs no dependency
beyond torch, and its stop band is about -90 dB with the default 64 zero crossings, on a par with
scipy's `resample_poly` or soxr's "HQ".
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

# torchaudio's "kaiser_best" parameters: 64 zero crossings, cut-off at 94.76% of the lower Nyquist.
_ZERO_CROSSINGS = 64
_ROLLOFF = 0.9475937167399596
_KAISER_BETA = 14.769656459379492


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """Polyphase filter bank `[new, 1, 2 * width + orig]` for the reduced ratio orig -> new.

    Phase `j` of the bank computes output sample `j` of every block of `new` outputs from the
    input block of `orig` samples (plus `width` samples of context on either side).
    """
    base = min(orig, new) * _ROLLOFF
    width = math.ceil(_ZERO_CROSSINGS * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-_ZERO_CROSSINGS, _ZERO_CROSSINGS)
    window = torch.i0(_KAISER_BETA * torch.sqrt(1 - (t / _ZERO_CROSSINGS) ** 2)) / torch.i0(
        torch.tensor(_KAISER_BETA, dtype=torch.float64)
    )
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * window * (base / orig)
    return kernel.to(torch.float32), width


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample `audio` (float, `[samples]` or `[channels, samples]`) from `from_hz` to `to_hz`.

    The output has `ceil(samples * to_hz / from_hz)` samples per channel, is float32, and is
    aligned with the input: output sample `k` is at time `k / to_hz` seconds, as input sample
    `n` is at `n / from_hz`. Equal rates return a float32 copy.
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {x.shape}")
    if from_hz == to_hz:
        return x.copy()
    g = math.gcd(int(from_hz), int(to_hz))
    orig, new = int(from_hz) // g, int(to_hz) // g
    n = x.shape[-1]
    out_len = math.ceil(n * new / orig)
    flat = x.reshape(-1, n)
    if n == 0:
        return np.zeros((*x.shape[:-1], 0), dtype=np.float32)
    kernel, width = _sinc_kernel(orig, new)
    with torch.inference_mode():
        wave = torch.from_numpy(np.ascontiguousarray(flat))
        wave = torch.nn.functional.pad(wave, (width, width + orig))
        y = torch.nn.functional.conv1d(wave[:, None], kernel, stride=orig)  # [C, new, blocks]
        y = y.transpose(1, 2).reshape(flat.shape[0], -1)[:, :out_len]
        out = y.numpy().astype(np.float32, copy=False)
    return out.reshape(*x.shape[:-1], out_len)


def _as_frames(audio: np.ndarray) -> np.ndarray:
    """`[channels, samples]` (or mono `[samples]`) -> soundfile's `[samples, channels]`, clipped."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {a.shape}")
    return np.clip(a, -1.0, 1.0).T


def to_flac(audio: np.ndarray, sample_rate_hz: int) -> bytes:
    """Encode float audio `[channels, samples]` (or `[samples]`) as 16-bit PCM FLAC bytes.

    Samples are clipped to [-1, 1]; the round trip error is at most one 16-bit step (2**-15).
    """
    buf = io.BytesIO()
    sf.write(buf, _as_frames(audio), int(sample_rate_hz), format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def from_flac(data: bytes) -> tuple[np.ndarray, int]:
    """Decode FLAC bytes to (float32 audio `[channels, samples]`, sample rate in Hz)."""
    frames, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(frames.T), int(sr)


def to_wav_file(path: str | Path, audio: np.ndarray, sample_rate_hz: int, *, subtype: str = "PCM_16") -> Path:
    """Write `audio` (`[channels, samples]` or `[samples]`, float in [-1, 1]) to a WAV file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), _as_frames(audio), int(sample_rate_hz), format="WAV", subtype=subtype)
    return p
