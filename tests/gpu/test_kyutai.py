"""Kyutai DSM TTS backend. The synthesis test needs CUDA and the `moshi` package (the kyutai
extra); on CPU-only machines it is skipped and only the error path and the script mapping run."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tts.backend import SpeechBackendUnavailable, create_backend
from tts.kyutai_backend import FIX, KyutaiBackend, _script, _trim_trailing_silence


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAVE_MOSHI = importlib.util.find_spec("moshi") is not None
RUNNABLE = HAVE_MOSHI and _cuda()


@pytest.mark.skipif(RUNNABLE, reason="moshi and CUDA are present: the backend can run here")
def test_unavailable_here_names_the_fix():
    with pytest.raises(SpeechBackendUnavailable) as err:
        KyutaiBackend()
    assert "pip install -e '.[kyutai]'" in str(err.value) and FIX in str(err.value)
    with pytest.raises(SpeechBackendUnavailable, match="GPU"):
        create_backend("kyutai")


def test_cpu_device_is_refused():
    with pytest.raises(SpeechBackendUnavailable, match="GPU only"):
        KyutaiBackend(device="cpu")


def test_script_has_one_entry_per_spoken_token():
    written, token_word, tokens, line = _script("Hi: it's $5 — e.g. (really) fine...")
    assert written == "Hi: it's $5 — e.g. (really) fine...".split()
    assert tokens == ["Hi,", "it's", "five", "dollars,", "for", "example", "really", "fine,"]
    assert token_word == [0, 1, 2, 2, 4, 4, 5, 6]
    assert line.split() == tokens and not any(c in line for c in ":()")


def test_trim_trailing_silence():
    sr = 24000
    audio = np.zeros(sr, dtype=np.float32)
    audio[: sr // 2] = 0.5 * np.sin(np.arange(sr // 2) * 0.1)
    assert _trim_trailing_silence(audio, sr, 0.0, 1.0) == pytest.approx(0.5, abs=0.011)
    assert _trim_trailing_silence(audio, sr, 0.6, 0.9) == 0.9  # all quiet: unchanged


@pytest.mark.gpu
@pytest.mark.skipif(not RUNNABLE, reason="needs CUDA and the moshi package: pip install -e '.[kyutai]'")
def test_kyutai_synthesizes_with_codes_and_spans():
    backend = KyutaiBackend()
    text = "Hello, world. The park is in the city, and it opens at 3 pm."
    u = backend.synthesize(text, backend.voices()[0])
    assert u.sample_rate_hz == 24000 and u.audio.dtype == np.float32
    assert u.codes is not None and u.codes.shape[0] == 8
    assert abs(u.codes.shape[1] * 1920 - len(u.audio)) <= 1920
    dur = len(u.audio) / u.sample_rate_hz
    assert [w.word for w in u.words] == text.split()
    last = 0.0
    for w in u.words:
        assert 0.0 <= w.start_s < w.end_s <= dur and w.start_s >= last
        last = w.start_s
    assert 0.15 <= dur / len(u.words) <= 1.0
    batch = backend.synthesize_batch([text, "Short one."], backend.voices()[:2])
    assert [len(b.words) for b in batch] == [len(text.split()), 2]
    assert backend.info()["backend"] == "kyutai"
