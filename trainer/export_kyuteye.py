"""`ssvd export-adapters RUN_DIR --format kyuteye`: a trained run as the checkpoint Kyutai's PyTorch
MoshiVis (kyutai-labs/moshivis, `kyuteye_pt`) loads. Where each name and shape was checked: docs/trainer.md,
"Export for Kyutai's MoshiVis", which also has the serving recipe (the file is named `*_pt.safetensors`, the name
Kyutai's server loads: `check_served_name`).

The release's loaders (`kyuteye/models/loaders.py` `get_moshi_vis`) split one safetensors file into
`image_prefix.*` (the `ImageProjection`) and the rest (`MoshiVis`), load both with `strict=False` and
assert that no key is missing (except the shared cross-attention of layers > 0), so the file is the
whole bundle, in bf16:

    llm.text_emb / llm.out_norm.alpha [1,1,d] / llm.text_linear          Moshi's text stream (Helium)
    llm.transformer.layers.{l}.self_attn.in_proj_weight (rows Q, K, V), .out_proj, norm1/norm2.alpha, gating.linear_in/out
    llm.transformer.layers.{l}.norm_cross.alpha [1,1,d]                   adapter: per-layer norm
    llm.transformer.layers.{l}.cross_attention.gate.alpha.0 / .alpha.2    adapter: per-layer gate MLP
    llm.transformer.layers.0.cross_attention.mha.in_proj_weight / .out_proj   adapter: shared Q/K/V/O
    audio_emb.{i}, depformer_in.{k}, depformer_emb.{k}, depformer_text_emb, depformer.layers.*, audio_linears.{k}
    image_prefix.enc.model.*                                              SigLIP (frozen)
    image_prefix.proj_xa.weight/bias, image_prefix.norm_xa.alpha [1,1,d] adapter: image projection

Backbone: a transformers `MoshiForConditionalGeneration` (id, path or "tiny") is mapped back to Kyutai's
names by inverting transformers' `convert_moshi_transformers.py` (rename table, split in_proj, rotary
permutation of Q/K, stacked depth-decoder weights, squeezed norm alphas); a `.safetensors` file in Kyutai's
moshi layout (`kyutai/moshiko-pytorch-bf16` `model.safetensors`) is renamed into MoshiVis' layout.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch

RELEASE = "kyutai-labs/moshivis kyuteye_pt (configs/moshika-vis.yaml)"
XA = "llm.transformer.layers.{l}.cross_attention"


class ExportError(ValueError):
    pass


# ---- which of our variants the release loads ----------------------------------------------------------
def check_release_compatible(cfg) -> None:
    """Refuse ModelConfig variants that moshika-vis.yaml's architecture (xa_shared: true, xa_gate_shared: false,
    xa_conditional_gating: true, xa_gating: sigmoid) cannot load, naming the setting and the fix."""
    errors = []
    if cfg.sharing != "qkvo":
        errors.append(f"model.sharing: {cfg.sharing!r}: the release has one cross-attention shared by all layers "
                      "(xa_shared: true, SharedCrossAttention: only layer 0's Q/K/V/O are stored); per-layer Q/O "
                      "(sharing: kv) has no place there: train with sharing: qkvo")
    if cfg.gating == "shared":
        errors.append("model.gating: 'shared': one gate for all layers (the release's xa_gate_shared + "
                      "per_layer_alpha) is not what moshika-vis.yaml builds, and Kyutai's Rust/MLX servers "
                      "load per-layer gates only: train with gating: per_layer")
    elif cfg.gating != "per_layer":
        errors.append(f"model.gating: {cfg.gating!r}: the release gates every layer's cross-attention "
                      "(xa_gating: sigmoid, xa_conditional_gating: true): train with gating: per_layer")
    if float(cfg.gate_init_bias) != -4.0:
        errors.append(f"model.gate_init_bias: {cfg.gate_init_bias}: the release's gate is sigmoid(mlp(y) - 4), "
                      "the shift is fixed in its code (XAGate): train with gate_init_bias: -4")
    if int(cfg.gate_hidden_div) != 8:
        errors.append(f"model.gate_hidden_div: {cfg.gate_hidden_div}: the release's gate MLP is d -> d/8 -> d "
                      "(hidden_dims_factor 0.125, not configurable from its yaml): train with gate_hidden_div: 8")
    if errors:
        raise ExportError("this run cannot be exported for Kyutai's MoshiVis (kyuteye):\n  " + "\n  ".join(errors))


# ---- adapters ------------------------------------------------------------------------------------------
def _alpha(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(1, 1, -1)


def adapters_to_kyuteye(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Our `adapter_state_dict()` (sharing qkvo, gating per_layer) -> the release's names."""
    out = {
        "image_prefix.proj_xa.weight": sd["image_proj.weight"],
        "image_prefix.proj_xa.bias": sd["image_proj.bias"],
        "image_prefix.norm_xa.alpha": _alpha(sd["image_norm.weight"]),
        f"{XA.format(l=0)}.mha.in_proj_weight": torch.cat([sd["q_proj.weight"], sd["k_proj.weight"],
                                                           sd["v_proj.weight"]], dim=0),
        f"{XA.format(l=0)}.mha.out_proj.weight": sd["o_proj.weight"],
    }
    for i in range(num_layers):
        out[f"llm.transformer.layers.{i}.norm_cross.alpha"] = _alpha(sd[f"norms.{i}.weight"])
        out[f"{XA.format(l=i)}.gate.alpha.0.weight"] = sd[f"gates.{i}.fc1.weight"]
        out[f"{XA.format(l=i)}.gate.alpha.2.weight"] = sd[f"gates.{i}.fc2.weight"]
    return out


def kyuteye_to_adapters(bundle: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `adapters_to_kyuteye` (for a round trip, or to start from Kyutai's released adapters)."""
    qkv = bundle[f"{XA.format(l=0)}.mha.in_proj_weight"]
    d = qkv.shape[1]
    if qkv.shape[0] != 3 * d:
        raise ExportError(f"{XA.format(l=0)}.mha.in_proj_weight has shape {tuple(qkv.shape)}, expected [3*{d}, {d}]")
    sd = {"image_proj.weight": bundle["image_prefix.proj_xa.weight"],
          "image_proj.bias": bundle["image_prefix.proj_xa.bias"],
          "image_norm.weight": bundle["image_prefix.norm_xa.alpha"].reshape(-1),
          "q_proj.weight": qkv[:d], "k_proj.weight": qkv[d:2 * d], "v_proj.weight": qkv[2 * d:],
          "o_proj.weight": bundle[f"{XA.format(l=0)}.mha.out_proj.weight"]}
    layers = sorted({int(m.group(1)) for k in bundle if (m := re.match(r"llm\.transformer\.layers\.(\d+)\.norm_cross", k))})
    for i in layers:
        sd[f"norms.{i}.weight"] = bundle[f"llm.transformer.layers.{i}.norm_cross.alpha"].reshape(-1)
        sd[f"gates.{i}.fc1.weight"] = bundle[f"{XA.format(l=i)}.gate.alpha.0.weight"]
        sd[f"gates.{i}.fc2.weight"] = bundle[f"{XA.format(l=i)}.gate.alpha.2.weight"]
    return sd


# ---- backbone: transformers Moshi <-> Kyutai's names -----------------------------------------------------
def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of convert_moshi_transformers.py's `permute` (interleaved -> sliced rotary halves)."""
    d1, d2 = w.shape
    return w.view(n_heads, 2, d1 // n_heads // 2, d2).transpose(1, 2).reshape(d1, d2)


def _permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    d1, d2 = w.shape
    return w.view(n_heads, d1 // n_heads // 2, 2, d2).transpose(1, 2).reshape(d1, d2)


_TEMPORAL_LAYER = {"self_attn.o_proj.linear.weight": "self_attn.out_proj.weight",
                   "mlp.fc1.weight": "gating.linear_in.weight", "mlp.fc2.weight": "gating.linear_out.weight",
                   "input_layernorm.weight": "norm1.alpha", "post_attention_layernorm.weight": "norm2.alpha"}


def transformers_to_kyuteye(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """`MoshiForConditionalGeneration.state_dict()` -> MoshiVis' backbone keys (Mimi, `audio_encoder.*`, is a
    separate file in the release and is left out). Every other key must be mapped: an unknown one is an error."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    out: dict[str, torch.Tensor] = {}
    left = dict(sd)
    for k in [k for k in left if k.startswith("audio_encoder.")]:
        left.pop(k)

    def take(k):
        return left.pop(k)

    for k in [k for k in left if re.fullmatch(r"embed_tokens\.\d+\.weight", k)]:
        out["audio_" + k.replace("embed_tokens", "emb")] = take(k)
    out["llm.text_emb.weight"] = take("decoder.model.embed_tokens.weight")
    out["llm.out_norm.alpha"] = _alpha(take("decoder.model.norm.weight"))
    out["llm.text_linear.weight"] = take("decoder.lm_head.weight")
    for i in range(config.num_hidden_layers):
        src, dst = f"decoder.model.layers.{i}.", f"llm.transformer.layers.{i}."
        q = _unpermute(take(src + "self_attn.q_proj.linear.weight"), heads)
        kk = _unpermute(take(src + "self_attn.k_proj.linear.weight"), kv_heads)
        out[dst + "self_attn.in_proj_weight"] = torch.cat([q, kk, take(src + "self_attn.v_proj.linear.weight")])
        for a, b in _TEMPORAL_LAYER.items():
            v = take(src + a)
            out[dst + b] = _alpha(v) if b.endswith("alpha") else v
    # depth decoder: per-codebook weights stacked on dim 0 in transformers, separate (or row blocks) in Kyutai's
    out["depformer_text_emb.weight"] = take("depth_decoder.text_embed_tokens.weight")
    for k in [k for k in left if re.fullmatch(r"depth_decoder\.embed_tokens\.\d+\.weight", k)]:
        out[k.replace("depth_decoder.embed_tokens", "depformer_emb")] = take(k)
    for c, w in enumerate(take("depth_decoder.input_projections.weight")):
        out[f"depformer_in.{c}.weight"] = w
    for c, w in enumerate(take("depth_decoder.lm_heads.weight")):
        out[f"audio_linears.{c}.weight"] = w
    n_depth = config.depth_decoder_config.num_hidden_layers
    for i in range(n_depth):
        src, dst = f"depth_decoder.layers.{i}.", f"depformer.layers.{i}."
        q, kk, v = (take(src + f"self_attn.{p}_proj.linear.weight") for p in "qkv")  # [K, dd, dd] each
        out[dst + "self_attn.in_proj_weight"] = torch.cat([q, kk, v], dim=1).reshape(-1, q.shape[-1])
        o = take(src + "self_attn.o_proj.linear.weight")
        out[dst + "self_attn.out_proj.weight"] = o.reshape(-1, o.shape[-1])
        for c, w in enumerate(take(src + "mlp.fc1.weight")):
            out[dst + f"gating.{c}.linear_in.weight"] = w
        for c, w in enumerate(take(src + "mlp.fc2.weight")):
            out[dst + f"gating.{c}.linear_out.weight"] = w
        out[dst + "norm1.alpha"] = _alpha(take(src + "input_layernorm.weight"))
        out[dst + "norm2.alpha"] = _alpha(take(src + "post_attention_layernorm.weight"))
    if left:
        raise ExportError(f"backbone keys with no Kyutai name (a Moshi variant this exporter does not know): "
                          f"{sorted(left)[:8]}{' ...' if len(left) > 8 else ''}")
    return out


def kyuteye_to_transformers(bundle: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """The inverse of `transformers_to_kyuteye` (backbone keys only; for tests and round trips)."""
    heads, kv_heads, d = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
    k_cb = config.num_codebooks
    out = {}
    for k, v in bundle.items():
        if m := re.fullmatch(r"audio_emb\.(\d+)\.weight", k):
            out[f"embed_tokens.{m.group(1)}.weight"] = v
        elif m := re.fullmatch(r"depformer_emb\.(\d+)\.weight", k):
            out[f"depth_decoder.embed_tokens.{m.group(1)}.weight"] = v
    out["decoder.model.embed_tokens.weight"] = bundle["llm.text_emb.weight"]
    out["decoder.model.norm.weight"] = bundle["llm.out_norm.alpha"].reshape(-1)
    out["decoder.lm_head.weight"] = bundle["llm.text_linear.weight"]
    kv_dim = kv_heads * (d // heads)
    for i in range(config.num_hidden_layers):
        src, dst = f"llm.transformer.layers.{i}.", f"decoder.model.layers.{i}."
        qkv = bundle[src + "self_attn.in_proj_weight"]
        out[dst + "self_attn.q_proj.linear.weight"] = _permute(qkv[:d], heads)
        out[dst + "self_attn.k_proj.linear.weight"] = _permute(qkv[d:d + kv_dim], kv_heads)
        out[dst + "self_attn.v_proj.linear.weight"] = qkv[d + kv_dim:]
        for a, b in _TEMPORAL_LAYER.items():
            v = bundle[src + b]
            out[dst + a] = v.reshape(-1) if b.endswith("alpha") else v
    out["depth_decoder.text_embed_tokens.weight"] = bundle["depformer_text_emb.weight"]
    out["depth_decoder.input_projections.weight"] = torch.stack([bundle[f"depformer_in.{c}.weight"] for c in range(k_cb)])
    out["depth_decoder.lm_heads.weight"] = torch.stack([bundle[f"audio_linears.{c}.weight"] for c in range(k_cb)])
    for i in range(config.depth_decoder_config.num_hidden_layers):
        src, dst = f"depformer.layers.{i}.", f"depth_decoder.layers.{i}."
        w = bundle[src + "self_attn.in_proj_weight"]
        w = w.reshape(k_cb, 3, -1, w.shape[-1])
        for j, p in enumerate("qkv"):
            out[dst + f"self_attn.{p}_proj.linear.weight"] = w[:, j]
        o = bundle[src + "self_attn.out_proj.weight"]
        out[dst + "self_attn.o_proj.linear.weight"] = o.reshape(k_cb, -1, o.shape[-1])
        out[dst + "mlp.fc1.weight"] = torch.stack([bundle[src + f"gating.{c}.linear_in.weight"] for c in range(k_cb)])
        out[dst + "mlp.fc2.weight"] = torch.stack([bundle[src + f"gating.{c}.linear_out.weight"] for c in range(k_cb)])
        out[dst + "input_layernorm.weight"] = bundle[src + "norm1.alpha"].reshape(-1)
        out[dst + "post_attention_layernorm.weight"] = bundle[src + "norm2.alpha"].reshape(-1)
    return out


_MOSHI_TO_VIS = [(r"emb\.", "audio_emb."), (r"linears\.", "audio_linears."), (r"text_emb\.", "llm.text_emb."),
                 (r"transformer\.", "llm.transformer."), (r"out_norm\.", "llm.out_norm."),
                 (r"text_linear\.", "llm.text_linear.")]


def moshi_to_kyuteye(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kyutai's moshi `LMModel` checkpoint (kyutai/moshiko-pytorch-bf16 `model.safetensors`: emb, text_emb,
    transformer, out_norm, text_linear, depformer*, linears) -> MoshiVis' names (`llm.*`, `audio_emb.*`,
    `audio_linears.*`; depformer keys unchanged). A MoshiVis checkpoint's backbone keys pass through."""
    out = {}
    for k, v in sd.items():
        if k.startswith("image_prefix.") or ".cross_attention." in k or ".norm_cross." in k:
            continue  # a MoshiVis checkpoint given as backbone: its own adapters are not ours
        for pat, rep in _MOSHI_TO_VIS:
            if re.match(pat, k):
                k = rep + k[re.match(pat, k).end():]
                break
        out[k] = v
    return out


def encoder_to_kyuteye(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SigLIP vision model -> `image_prefix.enc.model.*` (the release wraps `SiglipVisionModel(...).vision_model`
    in `TrimmedFlexiViTWrapper.model`); the pooling head (not in the release's encoder) is left out."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("vision_model.")
        if not k.startswith("head."):
            out["image_prefix.enc.model." + k] = v
    return out


# ---- the command --------------------------------------------------------------------------------------
def check_served_name(out: Path) -> None:
    """Kyutai's server, given a local file (`hf_repo: null`, yaml `model: X.safetensors`), asserts that X exists
    and then loads `X_pt.safetensors` instead unless the name already ends so (kyuteye_pt `server.py` 371-377):
    only a file named `*_pt.safetensors` is both the one checked and the one loaded."""
    if not out.name.endswith("_pt.safetensors"):
        stem = out.name.removesuffix(".safetensors")
        raise ExportError(f"--out {out}: name it {out.with_name(stem + '_pt.safetensors')}: Kyutai's server "
                          "(kyuteye_pt server.py, hf_repo: null) loads X_pt.safetensors when its yaml says "
                          "model: X.safetensors, so only a *_pt.safetensors file is served as named")


def _run_model_config(run_dir: Path):
    from trainer.model import ModelConfig

    p = run_dir / "config.json"
    if not p.is_file():
        raise ExportError(f"{run_dir}: no config.json: not a run directory of `ssvd train`")
    raw = json.loads(p.read_text())["config"]["model"]
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names})


def build_bundle(run_dir: Path, backbone: str | None = None, checkpoint_dir: Path | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The full kyuteye bundle (bf16) of a run's newest checkpoint (or `checkpoint_dir`), and its metadata."""
    from safetensors.torch import load_file

    from trainer import checkpoint
    from trainer.adapters import VisionAdapters
    from trainer.model import load_backbone, load_image_encoder

    run_dir = Path(run_dir)
    cfg = _run_model_config(run_dir)
    check_release_compatible(cfg)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else checkpoint.latest(run_dir)
    if ckpt is None or not (ckpt / "adapters.safetensors").is_file():
        raise ExportError(f"{run_dir}: no complete checkpoint (checkpoints/latest); train first")
    adapters = checkpoint.read_adapters(ckpt)  # refuses adapters of an older format (their norm_cross differs)
    backbone = backbone or cfg.backbone
    dtype = "float32" if backbone == "tiny" else "bfloat16"  # the tiny model is rebuilt as it was trained
    bcfg = dataclasses.replace(cfg, backbone=backbone, dtype=dtype)
    if backbone.endswith(".safetensors") and Path(backbone).is_file():
        llm = moshi_to_kyuteye(load_file(backbone))
        dim = llm["llm.text_emb.weight"].shape[1]
        layers = len({k.split(".")[3] for k in llm if k.startswith("llm.transformer.layers.")})
    else:
        model = load_backbone(bcfg)
        llm = transformers_to_kyuteye(model.state_dict(), model.config)
        dim, layers = model.config.hidden_size, model.config.num_hidden_layers
        del model
    encoder = load_image_encoder(dataclasses.replace(  # the tiny one rebuilt as trained, a real one in bf16
        cfg, dtype="float32" if cfg.image_encoder == "tiny" else "bfloat16"))
    # our adapters must fit this backbone and encoder: load them into a module of that shape (strict)
    check = VisionAdapters(dim, 1, layers, encoder.config.hidden_size, gating=cfg.gating, sharing=cfg.sharing,
                           gate_hidden_div=cfg.gate_hidden_div, gate_init_bias=cfg.gate_init_bias)
    try:
        check.load_state_dict(adapters, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{ckpt}: the adapters do not fit backbone {backbone!r} (dim {dim}, {layers} layers) and "
                          f"encoder {cfg.image_encoder!r}: {e}") from None
    bundle = {**llm, **encoder_to_kyuteye(encoder.state_dict()), **adapters_to_kyuteye(adapters, layers)}
    bundle = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in bundle.items()}
    meta = {"format": "kyuteye", "release": RELEASE, "run_dir": str(run_dir.resolve()), "checkpoint": ckpt.name,
            "backbone": backbone, "image_encoder": cfg.image_encoder, "image_size": str(cfg.image_size),
            checkpoint.FORMAT_KEY: str(checkpoint.ADAPTERS_FORMAT)}
    return bundle, meta


def export_adapters(run_dir: Path, out: Path, *, backbone: str | None = None, fmt: str = "kyuteye",
                    checkpoint_dir: Path | None = None) -> dict[str, Any]:
    from safetensors.torch import save_file

    if fmt != "kyuteye":
        raise ExportError(f"--format {fmt!r}: only 'kyuteye' (Kyutai's PyTorch MoshiVis) is supported")
    check_served_name(Path(out))
    bundle, meta = build_bundle(Path(run_dir), backbone, checkpoint_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(bundle, str(tmp), metadata=meta)
    tmp.replace(out)
    n_adapt = sum(v.numel() for k, v in bundle.items()
                  if ".cross_attention." in k or ".norm_cross." in k or k.startswith("image_prefix.proj_xa")
                  or k.startswith("image_prefix.norm_xa"))
    return {"out": str(out), "keys": len(bundle), "adapter_params": n_adapt,
            "params": sum(v.numel() for v in bundle.values()), **meta}
