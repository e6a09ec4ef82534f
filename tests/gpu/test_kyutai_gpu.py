"""Kyutai DSM TTS on CUDA (moshi's CUDA graphs and torch.compile path): what the CPU tests cannot show.
Everything else about the backend runs on the CPU in tests/tts/test_kyutai.py."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_model_on_cuda_gives_codes_spans_and_per_turn_determinism(kyutai_tiny):
    from tts.kyutai_backend import TINY, KyutaiBackend

    b = KyutaiBackend(TINY, device="cuda", voices=["vctk/p226_023.wav"])
    text = "Hello, world. The park opens at 3 pm."
    u = b.synthesize(text, "vctk/p226_023.wav", seed=4)
    assert u.codes.shape[0] == 8 and u.codes.shape[1] * 1920 == len(u.audio)
    assert [w.word for w in u.words] == text.split()
    again = b.synthesize_batch(["Yes.", text], ["vctk/p226_023.wav"] * 2, [1, 4])[1]
    assert np.array_equal(again.codes, u.codes)  # a turn's codes do not depend on its batch, on CUDA too
