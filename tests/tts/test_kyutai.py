"""Kyutai DSM TTS backend through the real `moshi` code on the CPU, with builtin:kyutai-tiny (random
weights: the audio is noise, but every step of the production path runs: hub loading, script, state
machine, generation, Mimi decoding, spans, codes)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tts.kyutai_tiny import voice_suffix
from tests.tts.spans_check import check_utterance
from tts.backend import SpeechBackendUnavailable
from tts.factory import create_backend
from tts.kyutai_backend import (DEFAULT_VOICES, TINY, KyutaiBackend, _script, _trim_trailing_silence,
                                check_setup)

TEXT = "Hello, world. The park opens at 3 pm."


def test_a_cuda_device_without_a_gpu_names_the_cpu_alternative():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(SpeechBackendUnavailable, match="--device cpu"):
        create_backend("kyutai", hf_repo=TINY, device="cuda")
    with pytest.raises(SpeechBackendUnavailable, match="use cuda, cuda:N or cpu"):
        KyutaiBackend(TINY, device="tpu")


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


def test_synthesize_gives_audio_codes_and_spans(kyutai_backend):
    u = kyutai_backend.synthesize(TEXT, "vctk/p226_023.wav", seed=1)
    check_utterance(u, TEXT)
    assert u.sample_rate_hz == 24000 and u.voice == "vctk/p226_023.wav"
    assert u.codes.shape[0] == 8 and u.codes.dtype == np.int64
    assert u.codes.shape[1] * 1920 == len(u.audio)  # whole Mimi frames, one per 80 ms
    assert u.codes.min() >= 0 and u.codes.max() < 2048
    assert len(np.unique(u.codes[0])) > 1  # the LM's codes, not one constant
    assert float(np.abs(u.audio).max()) > 0.01  # decoded by the tiny Mimi: not silence


def test_same_seed_same_turn_whatever_it_is_batched_with(kyutai_backend):
    texts = ["Yes, it is.", TEXT, "Where is the cat?"]
    voices = ["vctk/p225_023.wav", "vctk/p226_023.wav", DEFAULT_VOICES[0]]
    batch = kyutai_backend.synthesize_batch(texts, voices, [11, 12, 13])
    assert [len(u.words) for u in batch] == [len(t.split()) for t in texts]
    alone = kyutai_backend.synthesize(texts[1], voices[1], seed=12)
    assert np.array_equal(alone.codes, batch[1].codes) and np.array_equal(alone.audio, batch[1].audio)
    pair = kyutai_backend.synthesize_batch(texts[1:], voices[1:], [12, 13])
    assert np.array_equal(pair[0].codes, batch[1].codes) and np.array_equal(pair[1].codes, batch[2].codes)
    other = kyutai_backend.synthesize(texts[1], voices[1], seed=99)
    assert other.codes.shape != batch[1].codes.shape or not np.array_equal(other.codes, batch[1].codes)


def test_silence_codes_are_the_mimi_codes_of_silence(kyutai_backend):
    from tts.codec import load_codec

    s = kyutai_backend.silence_codes()
    assert s.shape == (8,) and s.min() >= 0 and s.max() < 2048
    codec = load_codec(TINY)  # the same Mimi, loaded as the tokens stage's codec
    assert np.array_equal(codec.silence_codes().astype(np.int64), s)
    assert kyutai_backend.codec_name == codec.name == TINY


def test_empty_text_gives_a_short_silence(kyutai_backend):
    u = kyutai_backend.synthesize("...", DEFAULT_VOICES[0], seed=3)
    assert [w.word for w in u.words] == ["..."] and len(u.audio) > 0


def test_info_records_each_voice_file_hash(kyutai_backend, kyutai_tiny):
    info = kyutai_backend.info()
    assert info["backend"] == "kyutai" and info["model"] == TINY and info["version"] == "0.2.13"
    assert info["seeding"] == "per turn" and info["device"] == "cpu" and info["fingerprint"] == kyutai_tiny.fingerprint
    snap = next((kyutai_tiny.hub_dir / "models--ssvd-builtin--kyutai-tts-voices-tiny" / "snapshots").iterdir())
    want = hashlib.sha256((snap / ("vctk/p226_023.wav" + voice_suffix())).read_bytes()).hexdigest()
    assert info["voices"]["vctk/p226_023.wav"] == want
    assert len(set(info["voices"].values())) == len(info["voices"])  # one file per voice


def test_an_unknown_voice_is_refused_at_start_up_listing_the_valid_ones(kyutai_tiny):
    with pytest.raises(ValueError) as err:
        check_setup(TINY, voices=["vctk/p226_023.wav", "vctk/p999_023.wav"])
    msg = str(err.value)
    assert "vctk/p999_023.wav" in msg and "vctk/p226_023.wav" in msg and "tree/main" in msg


def test_a_bad_cfg_coef_is_refused_naming_the_valid_values(kyutai_tiny):
    with pytest.raises(ValueError, match=r"takes only 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0"):
        check_setup(TINY, voices=["vctk/p226_023.wav"], cfg_coef=2.2)
    assert check_setup(TINY, voices=["vctk/p226_023.wav"], cfg_coef=3.5).valid_cfg[-1] == 4.0


def test_a_local_safetensors_voice_is_accepted_and_hashed(kyutai_tiny, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "mine.safetensors"
    save_file({"speaker_wavs": torch.zeros(1, 512, 125)}, str(path))
    setup = check_setup(TINY, voices=[str(path)])
    assert setup.voice_sha256[str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()
