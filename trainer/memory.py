"""Memory per GPU of a training config, estimated from the model's shapes before the first step.

`estimate(cfg, world)` counts the parameters of the frozen backbone, the frozen image encoder and the
adapters by building them on PyTorch's meta device (no memory, no weights read: the backbone's and encoder's
configs only), and adds the activations of one micro-batch (`data.batch_size` rows per process) of the
longest row (`max(data.max_frames, data.max_text_tokens)` time steps):

- frozen parts: parameters x the frozen dtype's bytes (bf16 on CUDA);
- adapters: parameters x 16 bytes (float32 weights, gradients, AdamW's two moments);
- activations kept for backward, per row: every temporal layer is on the gradient's path (each layer's
  adapter feeds the next), so without checkpointing each layer keeps per token about
  `ACT_PER_TOKEN_LAYER(hidden, ffn) = 2 B x (16 x hidden + 2 x ffn_dim)` (norms, Q/K/V, attention output, O,
  the gated MLP's inputs and products, the adapter's cross-attention and gate): Moshi (4096, 22528) 221 KiB;
  with `gradient_checkpointing` each layer keeps only its input (2 B x hidden) and one layer is recomputed at
  a time; plus the text logits (float32, with their gradient) and the depth decoder's audio logits;
- `RESERVE_BYTES` for the CUDA context, allocator fragmentation and the image encoder's forward.

It is an estimate (not a measurement: `make gpu-check` measures one step); `check(est, device)` refuses a
config whose estimate is above the device's memory, naming the parts and the fixes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1 << 30
RESERVE_BYTES = 2 * GIB
ACT_BYTES = 2  # bf16 under autocast on CUDA


def act_per_token_layer(hidden: int, ffn_dim: int, act_bytes: int = ACT_BYTES) -> int:
    return act_bytes * (16 * hidden + 2 * ffn_dim)


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    backbone_params: int
    encoder_params: int
    adapter_params: int
    frozen_bytes_per_param: int
    rows_per_gpu: int
    tokens_per_row: int
    layers: int
    hidden: int
    activation_bytes_per_row: int
    logits_bytes_per_row: int
    gradient_checkpointing: bool

    @property
    def frozen_bytes(self) -> int:
        return (self.backbone_params + self.encoder_params) * self.frozen_bytes_per_param

    @property
    def adapter_bytes(self) -> int:
        return self.adapter_params * 16

    @property
    def activation_bytes(self) -> int:
        return self.rows_per_gpu * (self.activation_bytes_per_row + self.logits_bytes_per_row)

    @property
    def total_bytes(self) -> int:
        return self.frozen_bytes + self.adapter_bytes + self.activation_bytes + RESERVE_BYTES

    def to_dict(self) -> dict[str, Any]:
        g = lambda b: round(b / GIB, 2)  # noqa: E731
        return {"backbone_params": self.backbone_params, "encoder_params": self.encoder_params,
                "adapter_params": self.adapter_params, "frozen_gib": g(self.frozen_bytes),
                "adapters_with_grads_and_adamw_gib": g(self.adapter_bytes), "rows_per_gpu": self.rows_per_gpu,
                "tokens_per_row": self.tokens_per_row, "gradient_checkpointing": self.gradient_checkpointing,
                "activations_gib": g(self.activation_bytes), "reserve_gib": g(RESERVE_BYTES),
                "total_gib": g(self.total_bytes)}

    def line(self) -> str:
        d = self.to_dict()
        return (f"memory per GPU (estimate): {d['total_gib']} GiB = frozen backbone + encoder {d['frozen_gib']} "
                f"({(self.backbone_params + self.encoder_params) / 1e9:.2f} B params) + adapters with gradients and "
                f"AdamW {d['adapters_with_grads_and_adamw_gib']} ({self.adapter_params / 1e6:.0f} M params) + "
                f"activations {d['activations_gib']} ({self.rows_per_gpu} rows x {self.tokens_per_row} steps, "
                f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}) + reserve {d['reserve_gib']}")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _backbone_config(cfg) -> Any:
    """The backbone's config: tiny, else read (local cache or hub); unreadable here (offline, gated): Moshi's
    shapes, which are transformers' MoshiConfig defaults ("kmhf/hf-moshiko style configuration",
    transformers/models/moshi/configuration_moshi.py)."""
    from transformers import AutoConfig, MoshiConfig

    from trainer.model import tiny_configs

    if cfg.backbone == "tiny":
        return tiny_configs(cfg)[0]
    try:
        return AutoConfig.from_pretrained(cfg.backbone, local_files_only=True)  # never the network for an estimate
    except Exception:
        return MoshiConfig()


def paligemma2_448_vision() -> Any:
    """PaliGemma 2's vision tower at 448 px: SigLIP So400m/14 (27 layers, 1152 dims, MLP 4304, 16 heads)."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                              patch_size=14, image_size=448, vision_use_head=False)


def _encoder_config(cfg) -> Any:
    from transformers import AutoConfig, SiglipVisionConfig

    from trainer.model import tiny_configs

    if cfg.image_encoder == "tiny":
        return tiny_configs(cfg)[1]
    try:
        c = AutoConfig.from_pretrained(cfg.image_encoder, local_files_only=True)
    except Exception:  # offline, or gated (PaliGemma): its vision tower's published shape
        return paligemma2_448_vision()
    c = getattr(c, "vision_config", c)
    return c if isinstance(c, SiglipVisionConfig) else SiglipVisionConfig(**c.to_dict())


def estimate(cfg, world: int = 1, device: str = "cuda", backbone_config: Any = None,
             encoder_config: Any = None) -> MemoryEstimate:
    """The per-GPU estimate of `cfg` (a TrainConfig). The configs of the backbone and encoder are read with
    transformers' AutoConfig (the local cache, or the hub) unless given."""
    import torch
    from transformers import MoshiForConditionalGeneration, SiglipVisionModel

    from trainer.adapters import VisionAdapters
    from trainer.model import resolve_dtype

    m, d = cfg.model, cfg.data
    mc = backbone_config if backbone_config is not None else _backbone_config(m)
    vc = encoder_config if encoder_config is not None else _encoder_config(m)
    with torch.device("meta"):
        backbone = _count(MoshiForConditionalGeneration._from_config(mc))
        encoder = _count(SiglipVisionModel._from_config(vc))
        adapters = _count(VisionAdapters(mc.hidden_size, mc.num_attention_heads, mc.num_hidden_layers, vc.hidden_size,
                                         gating=m.gating, sharing=m.sharing, gate_hidden_div=m.gate_hidden_div))
    frozen = torch.empty((), dtype=resolve_dtype(m.dtype, device)).element_size()
    tokens = max(d.max_frames, d.max_text_tokens)
    per_layer = act_per_token_layer(mc.hidden_size, mc.ffn_dim)
    layers = mc.num_hidden_layers
    if m.gradient_checkpointing:
        acts = tokens * (layers * ACT_BYTES * mc.hidden_size + per_layer)
    else:
        acts = tokens * layers * per_layer
    logits = tokens * 4 * 2 * (mc.vocab_size + m.audio_codebooks * mc.audio_vocab_size)
    return MemoryEstimate(backbone, encoder, adapters, frozen, d.batch_size, tokens, layers, mc.hidden_size,
                          acts, logits, bool(m.gradient_checkpointing))


class TrainMemoryError(ValueError):
    """The estimate is above the device's memory."""


def check(est: MemoryEstimate, device_bytes: int, device_name: str = "GPU") -> None:
    if est.total_bytes <= device_bytes:
        return
    fixes = []
    if not est.gradient_checkpointing:
        fixes.append("model.gradient_checkpointing: true")
    fixes += ["a smaller data.batch_size with train.grad_accum keeping the batch (e.g. half the rows, "
              "grad_accum x 2)", "a smaller data.max_frames", "more GPUs (torchrun --nproc-per-node)"]
    raise TrainMemoryError(f"this training config does not fit the {device_name} ({device_bytes / GIB:.1f} GiB): "
                           f"{est.line()}. Fix: {'; or '.join(fixes)}.")


def check_before_training(cfg, world: int, device) -> MemoryEstimate:
    """What `ssvd train` does before the first step: estimate, print (rank 0), and on a CUDA device refuse a
    config whose estimate is above the GPU's memory. On the CPU the estimate is printed, not checked."""
    import torch

    est = estimate(cfg, world, str(device))
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        check(est, int(props.total_memory), props.name)
    return est
