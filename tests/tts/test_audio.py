"""tts/audio.py: resampling, FLAC bytes, WAV files."""
import math

import numpy as np
import pytest
import soundfile as sf

from tts.audio import from_flac, resample, to_flac, to_wav_file


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.mark.parametrize(
    "from_hz,to_hz,n",
    [(22050, 24000, 22050), (22050, 24000, 12345), (16000, 24000, 1001), (48000, 24000, 4801), (24000, 24000, 500), (44100, 24000, 7)],
)
def test_resample_length(from_hz, to_hz, n):
    y = resample(np.zeros(n, dtype=np.float32), from_hz, to_hz)
    assert y.dtype == np.float32
    assert y.shape == (math.ceil(n * to_hz / from_hz),)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 7000.0])
def test_resample_keeps_a_sine(freq):
    sr_in, sr_out = 22050, 24000
    t = np.arange(sr_in) / sr_in
    y = resample(np.sin(2 * np.pi * freq * t).astype(np.float32), sr_in, sr_out)
    assert abs(_peak_hz(y, sr_out) - freq) <= 1.0
    # Aligned in time and amplitude with the ideal sine at the new rate (away from the edges).
    ref = np.sin(2 * np.pi * freq * np.arange(len(y)) / sr_out)
    assert np.max(np.abs(y - ref)[500:-500]) < 1e-3


def test_resample_removes_what_the_new_rate_cannot_hold():
    sr = 24000
    x = np.sin(2 * np.pi * 11000 * np.arange(sr) / sr).astype(np.float32)  # above 8 kHz
    y = resample(x, sr, 16000)
    assert np.max(np.abs(y[200:-200])) < 1e-3


def test_resample_channels_independent():
    sr = 16000
    t = np.arange(sr) / sr
    x = np.stack([np.sin(2 * np.pi * 300 * t), np.zeros_like(t)]).astype(np.float32)
    y = resample(x, sr, 24000)
    assert y.shape == (2, 24000)
    assert np.all(y[1] == 0)
    np.testing.assert_allclose(y[0], resample(x[0], sr, 24000), atol=1e-6)


def test_flac_round_trip_within_16_bit():
    rng = np.random.default_rng(0)
    audio = np.clip(0.3 * rng.standard_normal((2, 24000)), -1, 1).astype(np.float32)
    data = to_flac(audio, 24000)
    assert data[:4] == b"fLaC"
    back, sr = from_flac(data)
    assert sr == 24000
    assert back.shape == (2, 24000) and back.dtype == np.float32
    assert np.max(np.abs(back - audio)) <= 2.0**-15 + 1e-7


def test_flac_mono_and_clipping():
    audio = np.array([0.0, 0.5, 1.5, -2.0, -0.25], dtype=np.float32)
    back, sr = from_flac(to_flac(audio, 16000))
    assert sr == 16000 and back.shape == (1, 5)
    np.testing.assert_allclose(back[0], [0.0, 0.5, 1.0, -1.0, -0.25], atol=2.0**-15)


def test_wav_file(tmp_path):
    audio = np.stack([np.linspace(-0.5, 0.5, 100), np.zeros(100)]).astype(np.float32)
    path = to_wav_file(tmp_path / "sub" / "x.wav", audio, 24000)
    frames, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == 24000 and frames.shape == (100, 2)
    np.testing.assert_allclose(frames.T, audio, atol=2.0**-15)
