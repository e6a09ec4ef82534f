"""MoshiVis adaptation modules (paper §3.1, Figure 2): gated cross-attention from the speech tokens
to the image tokens, inserted in every layer of Moshi's temporal transformer between the
self-attention and the feed-forward block:

    h = h + self_attn(input_layernorm(h))                    # Moshi, unchanged
    h = h + alpha_l * gate_l(y) * y,   y = XA_l(norm_l(h), K, V)   # added here
    h = h + mlp(post_attention_layernorm(h))                 # Moshi, unchanged

* the image tokens (frozen encoder output) go through a trainable Linear + RMSNorm to the model
  dimension, then through the K/V projections: once per sample and forward, shared by every layer;
* Q/K/V/O are one set shared by all layers (`sharing="qkvo"`, the paper's choice) or only K/V are
  shared and every layer has its own Q/O (`sharing="kv"`);
* every layer has its own input RMSNorm `norm_l` (the release's `norm_cross`: mean-square, eps 1e-8, float32);
  the image projection's norm is the release's `norm_xa` (variance-based, eps 1e-5): `KyutaiRMSNorm`;
* the gate is a self-gate on the cross-attention output, as in Kyutai's release: a 2-layer MLP
  dim -> dim/8 -> dim (no biases, ReLU) and a sigmoid shifted by `gate_init_bias` (-4: ~0.018),
  whose last layer starts at zero so every gate starts at exactly sigmoid(gate_init_bias);
  `gating="per_layer"` (one per layer), `"shared"` (one module for all layers; with `qkvo` a
  per-layer scalar `alpha_l` initialised to 1 keeps some per-layer freedom, as in the release),
  `"none"` (output not multiplied).

`VisionAdapters.closed = True` forces every gate output to 0 (also with `gating="none"`): the
update is then `0 * y`, adding it leaves `h` bit-for-bit unchanged, and since every other operation
of the wrapped layer is Moshi's own, in the same order, the logits equal the frozen backbone's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

GATINGS = ("per_layer", "shared", "none")
SHARINGS = ("qkvo", "kv")


class KyutaiRMSNorm(nn.Module):
    """Kyutai's RMSNorm (kyutai-labs/moshivis at 8624f4e, paths under `kyuteye_pt/kyuteye/`; `modules/utils.py`
    `_rms_norm`, lines 204-223): over the last dim,
    `x * (weight * rsqrt(eps + m))` computed in float32 and cast back, where `m` is the mean square
    `mean(x**2)` (`use_var=False`, "real" RMSNorm) or torch's unbiased variance `var(x)` (`use_var=True`).
    The weight is the release's `alpha` ([1, 1, d] there). The adapters use two of its forms:

    * `norm_cross` (`NORM_CROSS`: mean square, eps 1e-8, float32): `TransformerLayer` builds it with the
      temporal transformer's norm (`modules/transformer.py` 129-131), which is Helium's default
      `real_rms_norm_f32` (`models/helium.py` 50-55), since `MoshiVis` keeps its own `norm` argument
      (`models/moshivis.py` 26) for the depformer (128) and never passes it to `Helium` (73-83);
      `real_rms_norm_f32` = `RMSNorm(eps=1e-8, dtype=float32, use_var=False)` (`modules/utils.py` 278-285);
    * `norm_xa` (`NORM_XA`: variance, eps 1e-5): yaml `norm_xa: rms_norm` (`configs/moshika-vis.yaml` 10,
      `models/image_projection.py` 72, 126-132) = `RMSNorm(eps=1e-5)`, `use_var=True` by default
      (`modules/utils.py` 236-237, 287-288). The release computes this one in the input's dtype (bf16 when
      served); here it is float32 (the adapters' dtype in training): a rounding difference only.
    """

    def __init__(self, dim: int, eps: float, use_var: bool):
        super().__init__()
        self.eps, self.use_var = eps, use_var
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        m = xf.var(dim=-1, keepdim=True) if self.use_var else torch.mean(xf ** 2, dim=-1, keepdim=True)
        return (xf * (self.weight.float() * torch.rsqrt(self.eps + m))).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, use_var={self.use_var}"


NORM_CROSS = dict(eps=1e-8, use_var=False)  # the release's real_rms_norm_f32 (Helium's default)
NORM_XA = dict(eps=1e-5, use_var=True)  # the release's rms_norm (yaml norm_xa)

# What the adapters' weights mean, stored in every checkpoint (trainer/checkpoint.py): 2 = norm_cross is the
# mean-square RMSNorm the release runs (issue 27). Format 1 (no mark) trained norms.{l} as a variance-based
# RMSNorm; the two differ by each token's mean, which no change of weights absorbs, so format-1 checkpoints
# are refused (resume, export) rather than converted.
ADAPTERS_FORMAT = 2


class ImageKV(NamedTuple):
    """Keys and values of the image tokens, [B, heads, N, head_dim] each."""
    k: torch.Tensor
    v: torch.Tensor


class Gate(nn.Module):
    """sigmoid(fc2(relu(fc1(y))) + bias): per token and channel, in (0, 1). The release's `XAGate` with
    `xa_conditional_gating` (`modules/cross_attention.py` 40-47, 55-57, 66-67): `y * sigmoid(alpha(y) - 4)`."""

    def __init__(self, dim: int, hidden_div: int = 8, init_bias: float = -4.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // hidden_div, bias=False)
        self.fc2 = nn.Linear(dim // hidden_div, dim, bias=False)
        nn.init.zeros_(self.fc2.weight)  # starts at sigmoid(init_bias) everywhere: near closed
        self.init_bias = float(init_bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(y))) + self.init_bias)


@dataclass
class LayerView:
    """The modules one layer's cross-attention uses (shared ones are the same objects)."""
    norm: nn.Module
    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    o_proj: nn.Module
    gate: nn.Module | None
    alpha: nn.Parameter | None


class VisionAdapters(nn.Module):
    """All trainable parameters of MoshiVis: image projection, cross-attention, norms, gates."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, image_dim: int, *, gating: str = "per_layer",
                 sharing: str = "qkvo", gate_hidden_div: int = 8, gate_init_bias: float = -4.0):
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"gating={gating!r}; valid: {', '.join(GATINGS)}")
        if sharing not in SHARINGS:
            raise ValueError(f"sharing={sharing!r}; valid: {', '.join(SHARINGS)}")
        if dim % num_heads or dim % gate_hidden_div:
            raise ValueError(f"dim {dim} must be divisible by heads {num_heads} and gate_hidden_div {gate_hidden_div}")
        self.dim, self.num_heads, self.num_layers = dim, num_heads, num_layers
        self.head_dim = dim // num_heads
        self.gating, self.sharing = gating, sharing
        self.image_proj = nn.Linear(image_dim, dim)
        self.image_norm = KyutaiRMSNorm(dim, **NORM_XA)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        if sharing == "qkvo":
            self.q_proj = nn.Linear(dim, dim, bias=False)
            self.o_proj = nn.Linear(dim, dim, bias=False)
        else:
            self.q_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_layers))
            self.o_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_layers))
        self.norms = nn.ModuleList(KyutaiRMSNorm(dim, **NORM_CROSS) for _ in range(num_layers))
        if gating == "per_layer":
            self.gates = nn.ModuleList(Gate(dim, gate_hidden_div, gate_init_bias) for _ in range(num_layers))
        elif gating == "shared":
            self.gate = Gate(dim, gate_hidden_div, gate_init_bias)
            if sharing == "qkvo":
                self.alphas = nn.ParameterList(nn.Parameter(torch.ones(())) for _ in range(num_layers))
        # forward-time state (not parameters): the current image K/V, the closed switch, gate stats
        self.kv: ImageKV | None = None
        self.closed = False
        self.gate_means: list[torch.Tensor] = []

    def layer(self, i: int) -> LayerView:
        qkvo = self.sharing == "qkvo"
        return LayerView(
            norm=self.norms[i], q_proj=self.q_proj if qkvo else self.q_projs[i], k_proj=self.k_proj,
            v_proj=self.v_proj, o_proj=self.o_proj if qkvo else self.o_projs[i],
            gate=self.gates[i] if self.gating == "per_layer" else getattr(self, "gate", None),
            alpha=self.alphas[i] if hasattr(self, "alphas") else None)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.k_proj.weight.dtype

    def image_kv(self, image_tokens: torch.Tensor) -> ImageKV:
        """[B, N, image_dim] encoder output -> shared keys/values, computed once per sample."""
        x = self.image_norm(self.image_proj(image_tokens.to(self.param_dtype)))
        b, n, _ = x.shape
        k = self.k_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        return ImageKV(k, v)

    def update(self, i: int, h: torch.Tensor, kv: ImageKV) -> torch.Tensor:
        """Layer i's residual update alpha * gate(y) * y (in h's dtype), y = XA(norm_i(h), K, V)."""
        m = self.layer(i)
        x = m.norm(h.to(self.param_dtype))
        b, t, _ = x.shape
        q = m.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kv.k.to(q.dtype), kv.v.to(q.dtype))
        y = m.o_proj(y.transpose(1, 2).reshape(b, t, self.dim))
        if self.closed:
            y = y * torch.zeros_like(y)
        elif m.gate is not None:
            g = m.gate(y)
            self.gate_means.append(g.detach().float().mean())
            y = y * g
            if m.alpha is not None:
                y = y * m.alpha
        return y.to(h.dtype)


class GatedDecoderLayer(nn.Module):
    """Wraps one `MoshiDecoderLayer` of the temporal transformer; its forward is Moshi's (transformers
    5.x `MoshiDecoderLayer.forward`) with the gated cross-attention between attention and MLP. The
    wrapped layer stays a child (`.layer`); the adapters are referenced, not owned (no duplicate
    parameters). Without image K/V (`adapters.kv is None`) the layer is exactly Moshi's."""

    def __init__(self, layer: nn.Module, adapters: VisionAdapters, index: int, gradient_checkpointing: bool = False):
        super().__init__()
        self.layer = layer
        self._adapters = [adapters]  # a list: not registered as a submodule
        self.index = index
        self.gradient_checkpointing = gradient_checkpointing

    @property
    def adapters(self) -> VisionAdapters:
        return self._adapters[0]

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                output_attentions=False, use_cache=False, codebook_idx=None, **kwargs):
        kv = self.adapters.kv
        args = (hidden_states, attention_mask, position_ids, kv.k if kv is not None else None,
                kv.v if kv is not None else None)
        extra = dict(past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
                     codebook_idx=codebook_idx, **kwargs)
        if self.gradient_checkpointing and torch.is_grad_enabled() and past_key_values is None:
            return checkpoint(self._forward, *args, use_reentrant=False, **extra)
        return self._forward(*args, **extra)

    def _forward(self, hidden_states, attention_mask, position_ids, k, v, *, past_key_values=None,
                 output_attentions=False, use_cache=False, codebook_idx=None, **kwargs):
        layer = self.layer
        residual = hidden_states
        hidden_states = layer.input_layernorm(hidden_states)
        hidden_states, self_attn_weights = layer.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
            codebook_idx=codebook_idx, **kwargs)
        hidden_states = residual + hidden_states
        if k is not None:
            hidden_states = hidden_states + self.adapters.update(self.index, hidden_states, ImageKV(k, v))
        residual = hidden_states
        hidden_states = layer.post_attention_layernorm(hidden_states)
        hidden_states = layer.mlp(hidden_states) if not layer.use_flexible_linear else layer.mlp(hidden_states,
                                                                                                  codebook_idx)
        hidden_states = residual + hidden_states
        outputs = (hidden_states,)
        if output_attentions:
            outputs += (self_attn_weights,)
        return outputs


def wrap_decoder_layers(layers: nn.ModuleList, adapters: VisionAdapters,
                        gradient_checkpointing: bool = False) -> list[nn.Module]:
    """Replace every layer of `layers` (Moshi's temporal `decoder.model.layers`) by a `GatedDecoderLayer`
    in place; returns the original layers (see `restore_decoder_layers`)."""
    if len(layers) != adapters.num_layers:
        raise ValueError(f"{len(layers)} decoder layers but adapters for {adapters.num_layers}")
    originals = list(layers)
    for i, layer in enumerate(originals):
        if isinstance(layer, GatedDecoderLayer):
            raise ValueError("decoder layers are already wrapped")
        layers[i] = GatedDecoderLayer(layer, adapters, i, gradient_checkpointing)
    return originals


def restore_decoder_layers(layers: nn.ModuleList) -> None:
    for i, layer in enumerate(list(layers)):
        if isinstance(layer, GatedDecoderLayer):
            layers[i] = layer.layer
