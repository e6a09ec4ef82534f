"""The Mimi inside a Kyutai TTS checkpoint (moshi's format), with the `tts.codec.Codec` interface.

`load_codec("builtin:kyutai-tiny")` (the tiny TTS's Mimi) or `load_codec("moshi:REPO")` (the Mimi of a
hub repository in moshi's format, `CheckpointInfo.from_hf_repo(REPO).get_mimi()`): the same weights the
kyutai speech backend decodes with, so `ssvd tokens` names the codec of the TTS's own codes and keeps
them, and encodes (other backends' audio) or decodes (export) with the same model. Kyutai's production
Mimi is also transformers' `kyutai/mimi` (`tts.codec`), the name the backend gives its codes then.

Encoding is one causal pass over the whole (zero-padded to whole frames) audio: int16 codes, 8 codebooks.
"""
from __future__ import annotations

import numpy as np
import torch

from tts.codec_model import Codec, configure_threads, weights_sha256


class MoshiCodec(Codec):
    def __init__(self, mimi, name: str, *, weights_sha256: str, random: bool, num_codebooks: int = 8,
                 max_batch_rows: int = 8) -> None:  # noqa: D107 - no transformers config to read
        self.model = mimi.eval()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.random = random
        self.num_codebooks = int(num_codebooks)
        self.sample_rate_hz = int(mimi.sample_rate)
        self.frame_rate_hz = float(mimi.frame_rate)
        self.samples_per_frame = int(round(self.sample_rate_hz / self.frame_rate_hz))
        self.max_batch_rows = max(1, int(max_batch_rows))
        self._silence = None

    def _guard(self):
        from moshi.utils.compile import no_compile

        return no_compile() if self.device.type == "cpu" else torch.no_grad()

    def encode(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"audio must be [batch, samples], got shape {x.shape}")
        batch, n = x.shape
        frames = self.num_frames(n)
        if batch == 0 or frames == 0:
            return np.zeros((batch, self.num_codebooks, frames), dtype=np.int16)
        padded = np.zeros((batch, frames * self.samples_per_frame), dtype=np.float32)
        padded[:, :n] = x
        with torch.no_grad(), self._guard():
            codes = self.model.encode(torch.from_numpy(padded)[:, None].to(self.device))
        return codes[:, : self.num_codebooks, :frames].to("cpu", torch.int16).numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 3:
            raise ValueError(f"codes must be [batch, codebooks, frames], got shape {c.shape}")
        if c.shape[-1] == 0:
            return np.zeros((c.shape[0], 0), dtype=np.float32)
        with torch.no_grad(), self._guard():
            audio = self.model.decode(torch.as_tensor(c.astype(np.int64), device=self.device))
        return audio[:, 0].float().cpu().numpy()

    def info(self) -> dict:
        import importlib.metadata

        return {
            "name": self.name, "weights_sha256": self.weights_sha256, "random": self.random,
            "num_codebooks": self.num_codebooks, "frame_rate_hz": self.frame_rate_hz,
            "sample_rate_hz": self.sample_rate_hz, "samples_per_frame": self.samples_per_frame,
            "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
            "moshi": importlib.metadata.version("moshi"), "torch": torch.__version__,
        }


def load_moshi_codec(spec: str, *, device: str = "cpu", num_codebooks: int = 8, num_threads: int | None = None,
                     max_batch_rows: int = 8) -> MoshiCodec:
    """`builtin:kyutai-tiny` or `moshi:REPO` (see the module doc)."""
    from moshi.models.loaders import CheckpointInfo

    from tts.kyutai_setup import TINY, hub, resolve_source

    configure_threads(num_threads)
    source = resolve_source(spec if spec == TINY else spec.removeprefix("moshi:"))
    with hub(source):
        mimi = CheckpointInfo.from_hf_repo(source.repo).get_mimi(device=device)
    mimi.set_num_codebooks(max(num_codebooks, 8))
    return MoshiCodec(mimi, spec, weights_sha256=weights_sha256(mimi), random=spec == TINY,
                      num_codebooks=num_codebooks, max_batch_rows=max_batch_rows)
