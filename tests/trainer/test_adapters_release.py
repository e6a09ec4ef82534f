"""Each adapter function checked numerically against a small reference written here from the definitions of
Kyutai's release (kyutai-labs/moshivis at 8624f4e, paths under `kyuteye_pt/kyuteye/`; no Kyutai code is
imported), on inputs whose mean is far from zero (real hidden states' is), to 1e-6: the image projection and
its norm (`norm_xa`), K/V, the per-layer `norm_cross`, the cross-attention, the gate and the whole residual
update. Issue 27: `norm_cross` was trained as a variance-based RMSNorm while the release runs a mean-square
one; `test_the_variance_form_is_caught` shows that these checks fail on that form. The depth transformer's
norm is checked against the released Moshi's (kyutai-labs/moshi, `moshi/moshi/`, read at e6a55d2; the same
lines in the installed moshi 0.2.13)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.adapters import NORM_CROSS, NORM_XA, ImageKV, KyutaiRMSNorm, VisionAdapters
from trainer.export_kyuteye import XA, adapters_to_kyuteye

D, HEADS, LAYERS, IMG_DIM, N_IMG, T = 32, 4, 2, 24, 7, 5
MEAN = 40.0  # inputs ~ N(MEAN, 1): far from zero mean, where the two RMSNorm forms part
TOL = dict(rtol=1e-6, atol=1e-6)


# ---- the reference, from the release's code --------------------------------------------------------------
def ref_rms_norm(x, alpha, eps, use_var, dtype=None):
    """`modules/utils.py` `_rms_norm` (204-223): optional cast to `dtype`; `var = eps + x.var(dim=2)` with
    use_var, else `eps + mean(x**2, dim=2)`; `x * (alpha * rsqrt(var))`, cast back to the input dtype."""
    in_dtype = x.dtype
    if dtype is not None:
        x = x.to(dtype)
    var = eps + (x.var(dim=2, keepdim=True) if use_var else torch.mean(x ** 2, dim=2, keepdim=True))
    return (x * (alpha.to(var) * torch.rsqrt(var))).to(in_dtype)


def ref_norm_cross(x, alpha, use_var=False):
    """`norm_cross` (`modules/transformer.py` 129-131) is built with the temporal transformer's `norm`, which is
    Helium's default `real_rms_norm_f32` (`models/helium.py` 50-55; `MoshiVis` keeps its own `norm` argument,
    `models/moshivis.py` 26, for the depformer, 128, and does not pass it to `Helium`, 73-83):
    `RMSNorm(eps=1e-8, dtype=float32, use_var=False)` (`modules/utils.py` 278-285). `use_var=True` gives
    `rms_norm_f32` (288-295), the form ssvd trained before issue 27."""
    return ref_rms_norm(x, alpha, 1e-8, use_var, torch.float32)


def ref_image_projection(tokens, w, b, alpha):
    """`models/image_projection.py` `project_xa` (184-190): `proj_xa` (Linear with bias, 112) then `norm_xa`,
    yaml `norm_xa: rms_norm` (`configs/moshika-vis.yaml` 10) = `RMSNorm(dim, eps=1e-5)` (`modules/utils.py`
    287-288; `use_var=True` by default, 237; no dtype: computed in the input's dtype)."""
    return ref_rms_norm(F.linear(tokens, w, b), alpha, 1e-5, True)


def ref_kv(emb, in_proj):
    """`models/moshivis.py` `precompte_ca_kv` (380-396): `in_proj_weight` in 3 chunks, K = emb @ chunk 1,
    V = emb @ chunk 2 ([B, N, d]; split into heads in the attention, `modules/attention.py` 292-295)."""
    splits = torch.chunk(in_proj, 3)
    return F.linear(emb, splits[-2]), F.linear(emb, splits[-1])


def ref_cross_attention(x, k, v, in_proj, out_proj, heads):
    """`modules/attention.py` `MultiheadAttention.forward` with `cross_attention` and precomputed (k, v):
    Q = linear(query, in_proj_weight[:d]) (265-267), (k, v) = key (276), `b t (h d) -> b t h d` (292-295), no
    rope, `scaled_dot_product_attention(is_causal=False, attn_mask=None)` (320-323), `b t h d -> b t (h d)`,
    `out_proj` (327, 336)."""
    d = x.shape[-1]
    q = F.linear(x, in_proj[:d])
    q, k, v = [t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    y = F.scaled_dot_product_attention(q, k, v, is_causal=False, attn_mask=None).transpose(1, 2)
    return F.linear(y.reshape(y.shape[0], y.shape[1], d), out_proj)


def ref_gate(y, w0, w2):
    """`modules/cross_attention.py` `XAGate` with `conditional_gating` (40-47: Linear(d, d/8, bias=False), ReLU,
    Linear(d/8, d, bias=False)) and `sigmoid` (55-57: `sigmoid(x - 4)`): `y * act(alpha(y))` (66-67)."""
    return y * torch.sigmoid(F.linear(F.relu(F.linear(y, w0)), w2) - 4)


def ref_update(x, k, v, bundle, layer, heads, use_var=False):
    """The residual update of `TransformerLayer._maybe_cross_attend` (`modules/transformer.py` 172-180):
    `cross_attention(norm_cross(x), ...)` = `GatedCrossAttention.forward` (`modules/cross_attention.py` 327-332;
    moshika-vis.yaml: `xa_shared: true`, so layer 0's `mha` serves every layer, 84-87, 135; per-layer gate,
    `xa_gate_shared: false`, so no `per_layer_alpha`, 152-156; `xa_start: start`, `xa_end: end`: scope 1, 181-184)."""
    xa = XA.format(l=0)
    h = ref_norm_cross(x, bundle[f"llm.transformer.layers.{layer}.norm_cross.alpha"], use_var)
    y = ref_cross_attention(h, k, v, bundle[f"{xa}.mha.in_proj_weight"], bundle[f"{xa}.mha.out_proj.weight"], heads)
    g = XA.format(l=layer)
    return ref_gate(y, bundle[f"{g}.gate.alpha.0.weight"], bundle[f"{g}.gate.alpha.2.weight"])


# ---- ours, with every weight random (gates open, norms not 1) ---------------------------------------------
@pytest.fixture(scope="module")
def adapters():
    torch.manual_seed(0)
    a = VisionAdapters(D, HEADS, LAYERS, IMG_DIM)
    with torch.no_grad():
        for name, p in a.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return a.eval()


@pytest.fixture(scope="module")
def bundle(adapters):
    """Our weights under the release's names (the float32 values, not the bf16 export)."""
    return adapters_to_kyuteye({k: v.detach() for k, v in adapters.state_dict().items()}, LAYERS)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    image = MEAN + torch.randn(2, N_IMG, IMG_DIM, generator=g)
    hidden = MEAN + torch.randn(2, T, D, generator=g)
    return image, hidden


def test_the_norm_forms_are_the_release_s():
    assert NORM_CROSS == dict(eps=1e-8, use_var=False) and NORM_XA == dict(eps=1e-5, use_var=True)
    x = MEAN + torch.randn(2, T, D, dtype=torch.float64)
    alpha = 1 + torch.rand(D, dtype=torch.float64)
    for kw in (NORM_CROSS, NORM_XA):
        norm = KyutaiRMSNorm(D, **kw).double()
        norm.weight.data.copy_(alpha)
        torch.testing.assert_close(norm(x), ref_rms_norm(x, alpha.view(1, 1, D), kw["eps"], kw["use_var"]), **TOL)
    # computed in float32 and cast back, as real_rms_norm_f32 (dtype=float32)
    xb = x.to(torch.bfloat16)
    norm = KyutaiRMSNorm(D, **NORM_CROSS)
    norm.weight.data.copy_(alpha.float())
    assert norm(xb).dtype == torch.bfloat16
    assert torch.equal(norm(xb), ref_norm_cross(xb, alpha.float().view(1, 1, D)))


def test_image_projection_norm_and_kv(adapters, bundle):
    image, _ = inputs(1)
    with torch.no_grad():
        ours = adapters.image_norm(adapters.image_proj(image))
        theirs = ref_image_projection(image, bundle["image_prefix.proj_xa.weight"], bundle["image_prefix.proj_xa.bias"],
                                      bundle["image_prefix.norm_xa.alpha"])
        torch.testing.assert_close(ours, theirs, **TOL)
        kv = adapters.image_kv(image)
        k, v = ref_kv(theirs, bundle[f"{XA.format(l=0)}.mha.in_proj_weight"])
    for got, want in ((kv.k, k), (kv.v, v)):  # ours are [B, heads, N, head_dim]
        torch.testing.assert_close(got, want.view(2, N_IMG, HEADS, -1).transpose(1, 2), **TOL)


@pytest.mark.parametrize("layer", range(LAYERS))
def test_norm_cross_attention_gate_and_update(adapters, bundle, layer):
    image, hidden = inputs(2 + layer)
    m = adapters.layer(layer)
    alpha = bundle[f"llm.transformer.layers.{layer}.norm_cross.alpha"]
    xa = XA.format(l=0)
    with torch.no_grad():
        kv = adapters.image_kv(image)
        k, v = (t.transpose(1, 2).reshape(2, N_IMG, D) for t in kv)
        x = m.norm(hidden)
        torch.testing.assert_close(x, ref_norm_cross(hidden, alpha), **TOL)
        q = m.q_proj(x).view(2, T, HEADS, -1).transpose(1, 2)
        y = m.o_proj(F.scaled_dot_product_attention(q, kv.k, kv.v).transpose(1, 2).reshape(2, T, D))
        y_ref = ref_cross_attention(x, k, v, bundle[f"{xa}.mha.in_proj_weight"], bundle[f"{xa}.mha.out_proj.weight"],
                                    HEADS)
        torch.testing.assert_close(y, y_ref, **TOL)
        g = XA.format(l=layer)
        torch.testing.assert_close(y * m.gate(y), ref_gate(y, bundle[f"{g}.gate.alpha.0.weight"],
                                                           bundle[f"{g}.gate.alpha.2.weight"]), **TOL)
        update = adapters.update(layer, hidden, ImageKV(kv.k, kv.v))
        want = ref_update(hidden, k, v, bundle, layer, HEADS)
    torch.testing.assert_close(update, want, **TOL)
    assert want.abs().max() > 1e-2  # gates open: the update is not ~0, so the comparison means something


def test_the_variance_form_is_caught(adapters, bundle):
    """ssvd's norm_cross before issue 27 (variance-based) against the release's: far outside the tolerance on
    these inputs, so the checks above would have failed on it."""
    image, hidden = inputs(2)
    with torch.no_grad():
        kv = adapters.image_kv(image)
        k, v = (t.transpose(1, 2).reshape(2, N_IMG, D) for t in kv)
        alpha = bundle["llm.transformer.layers.0.norm_cross.alpha"]
        old = ref_norm_cross(hidden, alpha, use_var=True)
        assert (old - ref_norm_cross(hidden, alpha)).abs().max() > 1.0  # ~ MEAN / std: the norm's output itself
        old_update = ref_update(hidden, k, v, bundle, 0, HEADS, use_var=True)
        new_update = adapters.update(0, hidden, ImageKV(kv.k, kv.v))
    assert (old_update - new_update).abs().max() > 1e3 * TOL["atol"]
    with pytest.raises(AssertionError):
        torch.testing.assert_close(new_update, old_update, **TOL)


def test_depth_transformer_norms_are_the_released_moshi_s():
    """Item 2 of issue 27. The released Moshi (moshiko/moshika) runs with `_lm_kwargs["norm"] = "rms_norm_f32"`
    (`models/loaders.py` 105), used by its depformer too (`models/lm.py` 204-207: `norm=norm`); moshi's
    `rms_norm_f32` is `RMSNorm(eps=1e-8, dtype=float)` (`modules/transformer.py` 132-134) whose `_rms_norm` is the
    mean square (46-58). transformers' depth decoder (`MoshiDecoderLayer`, `MoshiRMSNorm`: `x * rsqrt(mean(x**2)
    + eps)` in float32, `rms_norm_eps` 1e-8) computes that: the trainer backpropagates through the released
    Moshi's depth transformer. (kyuteye_pt's depformer is built with `MoshiConfig.norm = "rms_norm_f32"`,
    `config/subconfigs.py` 103, which in kyuteye's `NormalizationLayer` is the variance form, `modules/utils.py`
    289-295: docs/trainer.md says how to serve it with the released form.)"""
    from trainer.model import ModelConfig, load_backbone

    dd = load_backbone(ModelConfig(image_size=32)).depth_decoder
    norms = [m for layer in dd.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
    assert norms and all(n.eps == 1e-8 for n in norms)
    x = MEAN + torch.randn(3, 4, dd.config.hidden_size)
    for n in norms:
        with torch.no_grad():
            n.weight.copy_(1 + 0.5 * torch.randn_like(n.weight))
            got = n(x)
        alpha = n.weight.detach().view(1, 1, -1)
        torch.testing.assert_close(got, ref_rms_norm(x, alpha, 1e-8, False, torch.float32), **TOL)
        assert (got - ref_rms_norm(x, alpha, 1e-8, True, torch.float32)).abs().max() > 1.0
