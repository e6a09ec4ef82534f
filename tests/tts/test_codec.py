"""tts/codec.py with a random Mimi (kyutai/mimi's architecture, seeded weights): no hub needed."""
import math

import numpy as np
import pytest
import torch

from tts.codec import load_codec
from tts.codec_model import Codec, resolve_dtype

SR = 24000


@pytest.fixture(scope="module")
def codec():
    return load_codec("random", seed=0)


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise and a gliding tone under a syllable-rate envelope, float32 [samples]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) ** 2
    f0 = rng.uniform(100, 250)
    tone = np.sin(2 * np.pi * (f0 + 30 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (0.15 * env * (tone + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


def test_properties_and_info(codec):
    assert codec.sample_rate_hz == 24000 and codec.frame_rate_hz == 12.5
    assert codec.samples_per_frame == 1920 and codec.num_codebooks == 8
    info = codec.info()
    assert info["name"] == "random:0" and info["random"] is True
    assert info["weights_sha256"] == codec.weights_sha256 and len(codec.weights_sha256) == 64
    assert {"num_codebooks", "frame_rate_hz", "sample_rate_hz", "transformers"} <= set(info)


@pytest.mark.parametrize("n", [1, 1919, 1920, 1921, 24000, 3 * 1920 + 5])
def test_encode_shape(codec, n):
    codes = codec.encode(speechlike(n / SR + 1e-9, 1)[None, :n])
    assert codes.shape == (1, 8, math.ceil(n / 1920))
    assert codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < 2048


def test_encode_batch_and_chunks_match_single(codec):
    a = np.stack([speechlike(2.5, 2), speechlike(2.5, 3)])
    both = codec.encode(a)
    assert both.shape == (2, 8, math.ceil(2.5 * SR / 1920))
    assert np.array_equal(both[1], codec.encode(a[1:])[0])
    # Streaming in 0.4 s chunks gives the codes of one pass over the whole audio.
    chunked = Codec(codec.model, "random:0", weights_sha256=codec.weights_sha256, random=True, chunk_s=0.4)
    assert chunked.chunk_frames == 5
    assert np.array_equal(chunked.encode(a), both)


def test_encode_many_different_lengths(codec):
    lengths = [SR + 17, 1920 * 5, 700]
    dialogues = [np.stack([speechlike(n / SR + 1e-9, i)[:n], speechlike(n / SR + 1e-9, 10 + i)[:n]]) for i, n in enumerate(lengths)]
    out = codec.encode_many(dialogues)
    assert [o.shape for o in out] == [(16, math.ceil(n / 1920)) for n in lengths]
    for d, o in zip(dialogues, out):
        alone = codec.encode(d)  # [2, 8, frames]: channel 0 (assistant), channel 1 (user)
        assert np.array_equal(o[:8], alone[0]) and np.array_equal(o[8:], alone[1])


def test_codes_vary(codec):
    a, b = codec.encode(np.stack([speechlike(3.0, 4), speechlike(3.0, 5)]))
    for k in range(8):
        assert len(np.unique(a[k])) >= 20, f"codebook {k} uses {len(np.unique(a[k]))} codes over {a.shape[1]} frames"
    assert (a != b).mean() > 0.5


def test_silence_codes(codec):
    s = codec.silence_codes()
    assert s.shape == (8,) and s.dtype == np.int16
    zeros = codec.encode(np.zeros((1, 2 * SR), dtype=np.float32))[0]
    assert np.all(zeros[:, 5:] == s[:, None])


def test_decode_stereo(codec):
    codes = codec.encode_many([np.stack([speechlike(1.0, 8), speechlike(1.0, 9)])])[0]
    audio = codec.decode_stereo(codes.tolist())
    assert audio.shape == (2, codes.shape[1] * 1920) and audio.dtype == np.float32
    assert np.all(np.isfinite(audio))


def test_deterministic_in_seed(codec):
    a = speechlike(1.0, 6)[None]
    same = load_codec("random:0")
    assert same.weights_sha256 == codec.weights_sha256
    assert np.array_equal(same.encode(a), codec.encode(a))
    other = load_codec("random", seed=1)
    assert other.name == "random:1" and other.weights_sha256 != codec.weights_sha256


def test_local_directory_round_trip(codec, tmp_path):
    codec.model.save_pretrained(tmp_path / "mimi")
    loaded = load_codec(str(tmp_path / "mimi"))
    assert loaded.random is False and loaded.name == str(tmp_path / "mimi")
    assert loaded.weights_sha256 == codec.weights_sha256
    a = speechlike(1.0, 7)[None]
    assert np.array_equal(loaded.encode(a), codec.encode(a))


def test_unsupported_specs(tmp_path):
    ckpt = tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="transformers-format"):
        load_codec(str(ckpt))
    with pytest.raises(ValueError, match="config.json"):
        load_codec(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist"):
        load_codec(str(tmp_path / "missing.safetensors"))


def test_dtypes():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int8': use float32 or bfloat16"):
        resolve_dtype("int8")
