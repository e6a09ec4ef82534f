"""How big an engine must be, and whether it fits, computed from the model's own config.json before any engine starts.

- `dialogue_tokens(max_pairs, max_new_tokens)`: the context one full dialogue needs, the default
  `max_model_len` (docs/gpu.md shows the sum for the paper's dialogues: 6144 tokens).
- `ModelShape.from_config(config)`: layers, KV heads, head size, dtype, parameters of a decoder-only LLM.
- `size_engine(...)`: the memory one engine has (GPU memory x its share of `gpu_memory_utilization`,
  less the weights and a reserve for activations), its KV-cache tokens, and how many full dialogues fit
  at once; `check()` raises `EngineSizeError` with the numbers and the fix when one dialogue does not fit.

vLLM 0.32's meaning of the settings (vllm/config/cache.py, `CacheConfig.gpu_memory_utilization`): "the
fraction of GPU memory to be used for the model executor ... a per-instance limit ... if you have two vLLM
instances running on the same GPU, you can set the GPU memory utilization to 0.5 for each instance". So
two engines in one worker (two models, or --separate-engines) each get half of the setting.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Chat-format tokens around one message: Mistral's v3 tekken format wraps a user message in [INST] ... [/INST]
# and ends an assistant message with </s> (3 tokens at most); 4 leaves room for other templates' role tags.
MESSAGE_OVERHEAD_TOKENS = 4
# System prompt + caption of the longest role prompt: measured with Nemo's tekken tokenizer on every
# instruction x role with a 1000-character caption (the released generator's caption limit): 618 tokens at most
# (LEAD1 assistant); 1024 leaves room for captions cut a little past 1000 characters and wordier tokens.
PROMPT_BUDGET_TOKENS = 1024
ROUND_TO = 256
# Memory an engine needs beside its weights and KV cache: the CUDA context, activations of a batch, CUDA
# graphs, the sampler's logits. An estimate: vLLM measures its own peak when it starts (profile run).
RESERVE_BYTES = 2 << 30
GIB = 1 << 30
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}


class EngineSizeError(ValueError):
    """An engine cannot hold one full dialogue (or its settings are impossible): a configuration error."""


def dialogue_tokens(max_pairs: int = 16, max_new_tokens: int = 150) -> int:
    """The context the longest request of a dialogue needs: both roles' messages of every pair (the last
    answer being generated), the chat format around each, the system prompt and the caption; rounded up
    to a multiple of 256. The paper's dialogues (16 pairs of 150 tokens): 16 x 2 x (150 + 4) + 1024 = 5952 -> 6144."""
    need = max_pairs * 2 * (max_new_tokens + MESSAGE_OVERHEAD_TOKENS) + PROMPT_BUDGET_TOKENS
    return int(math.ceil(need / ROUND_TO) * ROUND_TO)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What sizing needs of a decoder-only transformer (Llama/Mistral family config.json, or Mistral's params.json)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    dtype: str
    max_position: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelShape":
        c = config.get("text_config") or config  # multimodal configs keep the LLM's under text_config
        try:
            if "num_hidden_layers" in c:  # Hugging Face config.json
                layers, hidden, heads = int(c["num_hidden_layers"]), int(c["hidden_size"]), int(c["num_attention_heads"])
                kv = int(c.get("num_key_value_heads") or heads)
                head_dim = int(c.get("head_dim") or hidden // heads)
                inter, vocab = int(c.get("intermediate_size") or 4 * hidden), int(c["vocab_size"])
                tied = bool(c.get("tie_word_embeddings", False))
                dtype = str(c.get("torch_dtype") or c.get("dtype") or "bfloat16")
                max_pos = int(c.get("max_position_embeddings") or 0)
            else:  # Mistral's params.json
                layers, hidden, heads = int(c["n_layers"]), int(c["dim"]), int(c["n_heads"])
                kv = int(c.get("n_kv_heads") or heads)
                head_dim = int(c.get("head_dim") or hidden // heads)
                inter, vocab = int(c["hidden_dim"]), int(c["vocab_size"])
                tied, dtype, max_pos = bool(c.get("tied_embeddings", False)), "bfloat16", int(c.get("max_seq_len") or 0)
        except (KeyError, TypeError, ValueError) as e:
            raise EngineSizeError(f"the model's config has no usable {e} (need layers, hidden size, heads, vocabulary)") from None
        return cls(layers, hidden, heads, kv, head_dim, inter, vocab, tied, dtype.replace("torch.", ""), max_pos)

    def dtype_bytes(self, dtype: str = "auto") -> int:
        name = self.dtype if dtype in ("auto", "", None) else dtype
        return _DTYPE_BYTES.get(name, 2)

    def kv_bytes_per_token(self, dtype: str = "auto", tensor_parallel: int = 1) -> int:
        """layers x 2 (K and V) x KV heads x head size x dtype bytes; each of `tensor_parallel` GPUs keeps its
        share of the KV heads (at least one: vLLM replicates KV heads when there are fewer than GPUs)."""
        per_gpu_heads = max(1, math.ceil(self.kv_heads / tensor_parallel))
        return self.layers * 2 * per_gpu_heads * self.head_dim * self.dtype_bytes(dtype)

    def parameters(self) -> int:
        """Parameters of a Llama/Mistral-style model: embeddings, attention, gated MLP, norms, the LM head."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        per_layer = attn + 3 * self.hidden * self.intermediate + 2 * self.hidden
        embed = self.vocab * self.hidden
        return self.layers * per_layer + embed * (1 if self.tied_embeddings else 2) + self.hidden

    def weight_bytes(self, dtype: str = "auto") -> int:
        return self.parameters() * self.dtype_bytes(dtype)


def read_config(path: str, revision: str | None = None) -> dict[str, Any] | None:
    """config.json (else params.json) of a local model folder, or of a hub id from the local Hugging Face
    cache (`resolve_model` has fetched it); None when neither is there."""
    folder = Path(path)
    if folder.is_dir():
        for name in ("config.json", "params.json"):
            if (folder / name).is_file():
                return json.loads((folder / name).read_text())
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        return None
    for name in ("config.json", "params.json"):
        try:
            return json.loads(Path(hf_hub_download(path, name, revision=revision, local_files_only=True)).read_text())
        except Exception:
            continue
    return None


@dataclass(frozen=True, slots=True)
class EngineSize:
    """One engine on one device: what it is given and what it can hold."""

    model: str
    device: str  # cuda | cpu
    device_bytes: int  # one GPU's memory (cuda) or the KV-cache space (cpu)
    utilization: float  # this engine's share of gpu_memory_utilization
    engines_per_gpu: int
    tensor_parallel: int
    max_model_len: int
    weight_bytes: int  # per GPU (weights / tensor_parallel)
    kv_bytes_per_token: int  # per GPU
    kv_bytes: int  # per GPU, for the KV cache

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_bytes) // self.kv_bytes_per_token

    @property
    def dialogues_at_once(self) -> int:
        """Full-length dialogues whose whole context fits in the KV cache at once (shorter ones: more)."""
        return self.kv_tokens // self.max_model_len

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "engines_per_gpu": self.engines_per_gpu,
                "tensor_parallel_size": self.tensor_parallel, "gpu_memory_utilization": round(self.utilization, 4),
                "max_model_len": self.max_model_len, "weights_gib": round(self.weight_bytes / GIB, 2),
                "kv_bytes_per_token": self.kv_bytes_per_token, "kv_cache_gib": round(max(0, self.kv_bytes) / GIB, 2),
                "kv_tokens": self.kv_tokens, "dialogues_at_once": self.dialogues_at_once}

    def check(self) -> "EngineSize":
        """Raise EngineSizeError, with the numbers and the fix, when one full dialogue does not fit."""
        if self.dialogues_at_once >= 1:
            return self
        need = self.max_model_len * self.kv_bytes_per_token
        if self.device == "cpu":
            where = (f"on CPU, {self.device_bytes / GIB:.1f} GiB of KV-cache space (VLLM_CPU_KVCACHE_SPACE) hold "
                     f"{self.kv_tokens} tokens at {self.kv_bytes_per_token / 1024:.0f} KiB per token")
            fix = "raise VLLM_CPU_KVCACHE_SPACE (GiB) or lower max_model_len"
        else:
            share = f" (shared by {self.engines_per_gpu} engines on one GPU)" if self.engines_per_gpu > 1 else ""
            where = (f"a GPU of {self.device_bytes / GIB:.1f} GiB at gpu_memory_utilization {self.utilization:.3g}{share} "
                     f"gives {self.device_bytes * self.utilization / GIB:.1f} GiB; the weights take "
                     f"{self.weight_bytes / GIB:.1f} GiB{' per GPU' if self.tensor_parallel > 1 else ''} and "
                     f"{RESERVE_BYTES / GIB:.0f} GiB are kept for activations, leaving {max(0, self.kv_bytes) / GIB:.2f} GiB "
                     f"= {self.kv_tokens} tokens of KV cache at {self.kv_bytes_per_token / 1024:.0f} KiB per token")
            one = (" use one engine per GPU (the same model for both roles, no --separate-engines),"
                   if self.engines_per_gpu > 1 else "")
            fix = (f"raise gpu_memory_utilization (manifest models.dialogue, or --gpu-memory-utilization),{one} raise "
                   "tensor_parallel_size (--tensor-parallel-size) to split the model over GPUs, use GPUs with more "
                   "memory, or lower max_model_len")
        raise EngineSizeError(
            f"engine for {self.model} cannot hold one full dialogue: max_model_len {self.max_model_len} tokens need "
            f"{need / GIB:.2f} GiB of KV cache, but {where}. Fix: {fix}.")


def size_engine(model: str, shape: ModelShape, *, device: str, device_bytes: int, gpu_memory_utilization: float,
                engines_per_gpu: int, tensor_parallel: int, max_model_len: int, dtype: str = "auto",
                weight_bytes: int | None = None) -> EngineSize:
    """The size of one engine; `device_bytes`: one GPU's total memory, or on CPU the KV-cache space."""
    if max_model_len < 1:
        raise EngineSizeError(f"max_model_len must be >= 1; got {max_model_len}")
    if shape.max_position and max_model_len > shape.max_position:
        raise EngineSizeError(f"max_model_len {max_model_len} is above the model's own maximum "
                              f"(max_position_embeddings {shape.max_position}) for {model}: lower it")
    if not 0 < gpu_memory_utilization <= 1:
        raise EngineSizeError(f"gpu_memory_utilization must be in (0, 1]; got {gpu_memory_utilization}")
    kv_tok = shape.kv_bytes_per_token(dtype, tensor_parallel)
    weights = (weight_bytes if weight_bytes is not None else shape.weight_bytes(dtype)) // tensor_parallel
    share = gpu_memory_utilization / engines_per_gpu
    if device == "cpu":  # vLLM's CPU backend: the KV cache is its own space, weights live in host memory
        kv = device_bytes
    else:
        kv = int(device_bytes * share) - weights - RESERVE_BYTES
    return EngineSize(model, device, device_bytes, share, engines_per_gpu, tensor_parallel, max_model_len,
                      weights, kv_tok, kv)


def local_weight_bytes(path: str) -> int | None:
    """Bytes of a local folder's safetensors files (what vLLM will load), or None."""
    folder = Path(path)
    files = list(folder.glob("*.safetensors")) if folder.is_dir() else []
    return sum(f.stat().st_size for f in files) if files else None


def engines_in_worker(user: Any, assistant: Any, separate: bool) -> int:
    """1 when both roles share one engine (same model, no --separate-engines), else 2 on the worker's GPU."""
    return 1 if user == assistant and not separate else 2


def context_length(options: Any, models: tuple[Any, ...], max_pairs: int, max_new_tokens: int) -> int:
    """The max_model_len engines get: the one asked for (manifest, --max-model-len), else what one full
    dialogue needs, or a built-in model's own larger setting."""
    if options.max_model_len:
        return int(options.max_model_len)
    return max([dialogue_tokens(max_pairs, max_new_tokens), *(int(m.max_model_len or 0) for m in models)])


def device_bytes(device: str, cpu_kvcache_gib: float) -> int:
    """One GPU's total memory (cuda: this process's first visible GPU), or on CPU vLLM's KV-cache space
    ($VLLM_CPU_KVCACHE_SPACE GiB, which the engine sets from `cpu_kvcache_gib` when unset)."""
    import os

    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return int(float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or cpu_kvcache_gib) * GIB)


def size_model(model: Any, options: Any, *, device: str, memory: int, engines_per_gpu: int,
               config: dict[str, Any] | None = None) -> EngineSize | None:
    """The size of `model`'s engine (a `ResolvedModel`) under `options` (EngineOptions, max_model_len resolved);
    None when its config cannot be read here (a hub model not in the local cache)."""
    config = config if config is not None else read_config(model.path, getattr(model, "revision", None))
    if config is None:
        return None
    shape = ModelShape.from_config(config)
    weights = None if getattr(model, "load_format", "auto") == "dummy" else local_weight_bytes(model.path)
    dtype = options.dtype if options.dtype != "auto" else ("bfloat16" if device == "cpu" else "auto")
    return size_engine(model.name, shape, device=device, device_bytes=memory,
                       gpu_memory_utilization=options.gpu_memory_utilization, engines_per_gpu=engines_per_gpu,
                       tensor_parallel=options.tensor_parallel_size,
                       max_model_len=options.max_model_len or model.max_model_len or dialogue_tokens(),
                       dtype=dtype, weight_bytes=weights)


def check_worker(user: Any, assistant: Any, options: Any, separate: bool, device: str) -> list[EngineSize]:
    """Before a dialogue worker starts its engine(s): size each on this worker's device; EngineSizeError if
    one cannot hold a full dialogue. Engines whose config is not readable here are not checked (vLLM's own
    check then speaks)."""
    n = engines_in_worker(user, assistant, separate)
    memory = device_bytes(device, options.cpu_kvcache_gib)
    models = [user] if n == 1 else [user, assistant]
    sizes = [size_model(m, options, device=device, memory=memory, engines_per_gpu=n) for m in models]
    return [s.check() for s in sizes if s is not None]
