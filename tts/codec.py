"""Mimi, Kyutai's neural audio codec, through transformers' `MimiModel`: audio -> discrete codes.

Units: audio is float32 at 24 kHz (`sample_rate_hz`); codes are int16 in [0, 2048) at 12.5 frames
per second (`frame_rate_hz`), one frame per 1920 samples (`samples_per_frame`); `num_codebooks`
(8, as Moshi uses) codes per frame: codebook 0 semantic, 1-7 acoustic.

`load_codec(spec)`:
  - a hub id ("kyutai/mimi") or a local directory in transformers' format (config.json +
    model.safetensors, as `save_pretrained` writes): the real, trained codec. Kyutai's original
    single-file checkpoint (`tokenizer-e351c8d8-checkpoint125.safetensors`, the `moshi` package's
    format) has other tensor names and is not supported: use "kyutai/mimi", or its directory.
  - "builtin:kyutai-tiny" or "moshi:REPO": the Mimi inside a Kyutai TTS checkpoint, loaded with
    moshi (`tts.moshi_codec`): the codec of the kyutai speech backend's own codes.
  - "random" or "random:SEED": kyutai/mimi's architecture (`MimiConfig()`) with seeded random
    weights, for tests and offline dry runs. Its codebooks are filled with random vectors spread
    like the quantizer's inputs (see `_fill_codebooks`), so codes vary with the audio and use
    many distinct values, as the real codec's do; the codes mean nothing.

Encoding is causal and runs in streaming chunks (transformers' `use_streaming` with its padding
and sliding-window KV caches), which gives the same codes as one pass over the whole audio
while bounding memory; every chunk is one batched forward pass over all rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tts.codec_model import Codec, configure_threads, resolve_dtype, weights_sha256


def load_codec(
    spec: str = "random",
    *,
    device: str = "cpu",
    num_codebooks: int = 8,
    seed: int = 0,
    dtype: str | torch.dtype | None = None,
    num_threads: int | None = None,
    chunk_s: float = 10.0,
    max_batch_rows: int = 8,
) -> Codec:
    """Load Mimi from `spec` (see the module doc) onto `device` in `dtype`.

    `dtype` None is float32, the reference: on a 2-core AVX-512 CPU bfloat16 encodes about 2x
    faster (2 x 60 s: ~6 s against ~13.5 s) but changes 4-15% of the codes (random weights;
    more in the later codebooks), so it is opt-in (`dtype="bfloat16"`). "random" uses `seed` and "random:SEED" its own seed; the
    codec's name is then "random:SEED". `weights_sha256` is taken over the weights as loaded,
    before any dtype cast. `num_threads` sets torch's intra-op threads; None leaves the caller's
    setting, only lowering it to the CPUs this process may run on when torch asks for more.
    """
    if spec == "builtin:kyutai-tiny" or spec.startswith("moshi:"):  # the Mimi of a Kyutai TTS checkpoint
        from tts.moshi_codec import load_moshi_codec

        return load_moshi_codec(spec, device=device, num_codebooks=num_codebooks, num_threads=num_threads,
                                max_batch_rows=max_batch_rows)
    from transformers import MimiConfig, MimiModel

    configure_threads(num_threads)
    random = spec == "random" or spec.startswith("random:")
    if random:
        if spec.startswith("random:"):
            seed = int(spec.split(":", 1)[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MimiModel(MimiConfig()).eval()
        _fill_codebooks(model, seed)
        name = f"random:{seed}"
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"{path} is not a transformers Mimi directory (no config.json): use one written by "
                    "MimiModel.save_pretrained, or the hub id kyutai/mimi"
                )
            model = MimiModel.from_pretrained(str(path))
        elif path.exists():
            raise ValueError(
                f"{path} is a file: only transformers-format directories (config.json + model.safetensors) "
                "or hub ids are supported; Kyutai's original checkpoint "
                "(tokenizer-e351c8d8-checkpoint125.safetensors) has other tensor names: use kyutai/mimi"
            )
        elif spec.startswith(("/", "./", "../", "~")) or spec.endswith((".safetensors", ".bin", ".pt")):
            raise FileNotFoundError(f"codec path {spec} does not exist")
        else:
            try:
                model = MimiModel.from_pretrained(spec)
            except OSError as e:
                raise OSError(
                    f"cannot load Mimi {spec!r} from the hub ({e}); offline, pass a local transformers-format "
                    "directory (MimiModel.save_pretrained), or 'random' for a dry run"
                ) from e
        name = spec
    sha = weights_sha256(model)
    resolved = resolve_dtype(dtype)
    model.to(device=device, dtype=resolved)
    _reset_codebook_caches(model)
    return Codec(model, name, weights_sha256=sha, random=random, num_codebooks=num_codebooks,
                 chunk_s=chunk_s, max_batch_rows=max_batch_rows)


def _fill_codebooks(model, seed: int) -> None:
    """Give a random Mimi usable codebooks.

    A fresh `MimiEuclideanCodebook` has `embed_sum` all zeros (and `cluster_usage` ones), so every
    frame gets code 0. Here each codebook gets 2048 Gaussian vectors with the per-dimension mean
    and std of what it quantizes: the quantizer inputs of a seeded calibration signal (noise and
    chirps at several levels), level by level through each residual quantizer. Deterministic in
    `seed`.
    """
    rng = np.random.default_rng(seed)
    sr = int(model.config.sampling_rate)
    t = np.arange(2 * sr) / sr  # 4 rows x 2 s: 100 frames, enough for a mean and std per dimension
    rows = []
    for level in (0.02, 0.2):
        rows.append(level * rng.standard_normal(t.size))
        f0 = rng.uniform(80.0, 3000.0)
        rows.append(level * np.sin(2 * np.pi * (f0 + rng.uniform(-50, 400) * t) * t))
    calib = torch.tensor(np.stack(rows), dtype=torch.float32)[:, None]

    quantizer = model.quantizer
    captured: list[torch.Tensor] = []
    original = quantizer.encode

    def capture(embeddings, num_quantizers=None):
        captured.append(embeddings.detach().clone())
        return original(embeddings, num_quantizers)

    quantizer.encode = capture
    try:
        with torch.no_grad():
            model.encode(calib, num_quantizers=model.config.num_semantic_quantizers, return_dict=True)
    finally:
        del quantizer.encode  # back to the class's method
    embeddings = captured[0]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for rvq in (quantizer.semantic_residual_vector_quantizer, quantizer.acoustic_residual_vector_quantizer):
            x = rvq.input_proj(embeddings) if rvq.input_proj is not None else embeddings
            residual = x.permute(0, 2, 1).reshape(-1, x.shape[1])
            for layer in rvq.layers:
                book = layer.codebook
                mean, std = residual.mean(0), residual.std(0).clamp(min=1e-4)
                vectors = mean + std * torch.randn(book.codebook_size, residual.shape[1], generator=gen)
                book.embed_sum.copy_(vectors)
                book.cluster_usage.fill_(1.0)
                book.initialized.fill_(1.0)
                book._embed = None
                residual = residual - book.embed[book.quantize(residual)]


def _reset_codebook_caches(model) -> None:
    """Drop each codebook's cached `_embed` (a plain attribute that `.to()` does not move or cast)."""
    for module in model.modules():
        if hasattr(module, "embed_sum") and hasattr(module, "_embed"):
            module._embed = None


__all__ = ["Codec", "load_codec", "weights_sha256"]
