"""MoshiVis model (trainer/model.py, trainer/adapters.py) on tiny random configs: zero-gate equality with an
untouched Moshi, frozen set, parameter sharing, image K/V once per forward, training sanity, loading."""
from __future__ import annotations

import re

import torch
import pytest

from trainer.adapters import Gate, GatedDecoderLayer, VisionAdapters
from trainer.model import (AUDIO_VOCAB, TEXT_VOCAB, ModelConfig, build_model, load_backbone, load_image_encoder,
                           tiny_batch, tiny_configs)

CFG = ModelConfig(image_size=32, audio_codebooks=8)  # all 8 depth steps: compared with Moshi's own
B, T = 2, 10


def cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**CFG.__dict__, **kw})


@pytest.fixture(scope="module")
def model():
    return build_model(CFG)


@pytest.fixture(scope="module")
def ref():
    """An untouched MoshiForConditionalGeneration with the same (seeded) weights."""
    return load_backbone(CFG)


@pytest.fixture
def closed(model):
    model.set_gates_closed(True)
    yield model
    model.set_gates_closed(False)


def ref_embed(table, ids):
    return torch.where((ids < 0).unsqueeze(-1), 0.0, table(ids.clamp(min=0)))


def ref_speech(ref, text_in, audio_in, batch, use_ids):
    """Text logits, hidden states and depth logits of the untouched backbone."""
    if use_ids:  # transformers' own forward (no zero tokens in the inputs)
        out = ref(input_ids=text_in, moshi_audio_codes=audio_in[:, :8], user_audio_codes=audio_in[:, 8:],
                  use_cache=False)
    else:
        emb = sum(ref_embed(ref.embed_tokens[c], audio_in[:, c]) for c in range(16))
        out = ref(inputs_embeds=emb + ref_embed(ref.decoder.model.embed_tokens, text_in), use_cache=False)
    hidden = out.last_hidden_state.reshape(B * T, -1)
    ids = torch.cat([batch["text"].reshape(-1, 1), batch["audio"][:, :7].transpose(1, 2).reshape(B * T, 7)], 1)
    dd = ref.depth_decoder
    emb = torch.cat([ref_embed(dd.text_embed_tokens, ids[:, :1])]
                    + [ref_embed(dd.embed_tokens[i - 1], ids[:, i:i + 1]) for i in range(1, 8)], 1)
    depth = dd(input_ids=ids.clamp(min=0), inputs_embeds=emb, last_hidden_state=hidden[:, None],
               attention_mask=torch.ones_like(ids), use_cache=False).logits
    return out.logits, out.last_hidden_state, depth.view(B, T, 8, -1), ids


def test_tiny_backbone_is_the_reference(model, ref):
    mine, theirs = list(model.backbone.parameters()), list(ref.parameters())
    assert len(mine) == len(theirs) and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    mc, vc = tiny_configs(CFG)
    assert mc.vocab_size >= TEXT_VOCAB and mc.audio_vocab_size >= AUDIO_VOCAB and mc.num_codebooks == 8
    assert all(isinstance(layer, GatedDecoderLayer) and layer.adapters is model.adapters for layer in model.layers)


@pytest.mark.parametrize("full", [True, False])
def test_zero_gate_speech_equals_backbone(closed, ref, full):
    batch = tiny_batch("speech", B, T, CFG, full=full, seed=1)
    with torch.no_grad():
        out = closed.outputs(batch)
        text_in, audio_in = closed.speech_inputs(batch)
        assert full == bool((text_in >= 0).all() and (audio_in >= 0).all())
        r_text, r_hidden, r_audio, ids = ref_speech(ref, text_in, audio_in, batch, use_ids=full)
    assert torch.equal(out["text_logits"], r_text)
    assert torch.equal(out["hidden"], r_hidden)
    assert torch.equal(out["audio_logits"], r_audio)
    if full:  # the zero-token embedding path equals transformers' ids path where there are no zero tokens
        inner = ids.view(B, T, 8)[:, 1:T - 1].reshape(-1, 8)
        h = r_hidden[:, 1:T - 1].reshape(-1, 1, r_hidden.shape[-1])
        dd = ref.depth_decoder
        with torch.no_grad():
            a = dd(input_ids=inner, last_hidden_state=h, attention_mask=torch.ones_like(inner), use_cache=False)
            emb = torch.cat([ref_embed(dd.text_embed_tokens, inner[:, :1])]
                            + [ref_embed(dd.embed_tokens[i - 1], inner[:, i:i + 1]) for i in range(1, 8)], 1)
            b = dd(input_ids=inner, inputs_embeds=emb, last_hidden_state=h, attention_mask=torch.ones_like(inner),
                   use_cache=False)
        assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("full", [True, False])
def test_zero_gate_text_equals_backbone(closed, ref, full):
    batch = tiny_batch("text", B, T, CFG, full=full, seed=2)
    text_in = torch.cat([torch.full((B, 1), TEXT_VOCAB), batch["text"][:, :-1]], 1)
    with torch.no_grad():
        out = closed.outputs(batch)
        r = (ref.decoder(input_ids=text_in, use_cache=False) if full else
             ref.decoder(inputs_embeds=ref_embed(ref.decoder.model.embed_tokens, text_in), use_cache=False))
    assert torch.equal(out["text_logits"], r.logits)


@pytest.mark.parametrize("gating,sharing", [("per_layer", "kv"), ("shared", "qkvo"), ("shared", "kv"),
                                            ("none", "qkvo")])
def test_zero_gate_equality_every_variant(ref, gating, sharing):
    m = build_model(cfg(gating=gating, sharing=sharing))
    m.set_gates_closed()
    batch = tiny_batch("speech", B, T, CFG, full=True, seed=3)
    with torch.no_grad():
        text_in, audio_in = m.speech_inputs(batch)
        r = ref(input_ids=text_in, moshi_audio_codes=audio_in[:, :8], user_audio_codes=audio_in[:, 8:], use_cache=False)
        assert torch.equal(m.outputs(batch)["text_logits"], r.logits)


def test_backbone_only_is_untouched_and_restored(model, ref):
    batch = tiny_batch("speech", B, T, CFG, full=True, seed=4)
    text_in, audio_in = model.speech_inputs(batch)
    kw = dict(input_ids=text_in, moshi_audio_codes=audio_in[:, :8], user_audio_codes=audio_in[:, 8:], use_cache=False)
    wrapped = list(model.layers)
    with torch.no_grad(), model.backbone_only() as bb:
        assert not any(isinstance(layer, GatedDecoderLayer) for layer in bb.decoder.model.layers)
        assert torch.equal(bb(**kw).logits, ref(**kw).logits)
    assert all(a is b for a, b in zip(model.layers, wrapped))


def test_open_gates_change_the_output(model, ref):
    batch = tiny_batch("speech", B, T, CFG, full=True, seed=5)
    with torch.no_grad():
        out = model.outputs(batch)
        text_in, audio_in = model.speech_inputs(batch)
        r = ref(input_ids=text_in, moshi_audio_codes=audio_in[:, :8], user_audio_codes=audio_in[:, 8:], use_cache=False)
        assert not torch.equal(out["text_logits"], r.logits)
        other = dict(batch, image=-batch["image"])  # the image matters
        assert not torch.equal(model.outputs(other)["text_logits"], out["text_logits"])
        tb = tiny_batch("text", B, T, CFG, seed=5)
        assert not torch.equal(model.outputs(tb)["text_logits"], model.outputs(dict(tb, image=None))["text_logits"])


def test_frozen_set_and_optimizer(model):
    frozen = list(model.backbone.parameters()) + list(model.encoder.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    adapters = model.adapter_parameters()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in adapters} == {id(p) for p in model.adapters.parameters()}
    assert not {id(p) for p in frozen} & trainable
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=1e-3)
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in adapters]
    model.train()
    assert model.adapters.training and not model.backbone.training and not model.encoder.training
    assert set(model.adapter_state_dict()) == set(model.adapters.state_dict())
    assert not any(k.startswith(("backbone", "encoder")) for k in model.adapter_state_dict())


def _expected_params(d, layers, img, gating, sharing):
    n = img * d + d + d + 2 * d * d + layers * d  # image proj + its norm + K/V + per-layer norms
    n += 2 * d * d if sharing == "qkvo" else layers * 2 * d * d
    gate = 2 * d * (d // 8)
    n += {"per_layer": layers * gate, "shared": gate + (layers if sharing == "qkvo" else 0), "none": 0}[gating]
    return n


@pytest.mark.parametrize("gating", ["per_layer", "shared", "none"])
@pytest.mark.parametrize("sharing", ["qkvo", "kv"])
def test_sharing_and_gates(gating, sharing):
    d, layers = CFG.tiny_hidden, CFG.tiny_layers
    ad = VisionAdapters(d, CFG.tiny_heads, layers, 32, gating=gating, sharing=sharing)
    views = [ad.layer(i) for i in range(layers)]
    v0 = views[0]
    for v in views[1:]:
        assert v.k_proj is v0.k_proj and v.v_proj is v0.v_proj
        assert (v.q_proj is v0.q_proj) == (v.o_proj is v0.o_proj) == (sharing == "qkvo")
        assert v.norm is not v0.norm
        if gating == "per_layer":
            assert v.gate is not v0.gate
        elif gating == "shared":
            assert v.gate is v0.gate and (v.alpha is not None) == (sharing == "qkvo")
    if gating == "none":
        assert all(v.gate is None for v in views) and not any("gate" in k for k, _ in ad.named_parameters())
    else:
        assert v0.gate.fc1.out_features == d // 8 and v0.gate.fc2.in_features == d // 8
        y = torch.randn(3, 7, d) * 10
        assert all(float(v.gate(y).max().detach()) < 0.05 for v in views)
    assert sum(p.numel() for p in ad.parameters()) == _expected_params(d, layers, 32, gating, sharing)
    ptrs = [t.data_ptr() for t in ad.state_dict().values()]
    assert len(ptrs) == len(set(ptrs))  # no tensor twice: safetensors-savable


def test_initial_gate_metric_is_near_closed(model):
    _, metrics = model.loss(tiny_batch("speech", B, T, CFG))
    assert 0 < metrics["gate_mean"] < 0.05 and isinstance(Gate(64).init_bias, float)


def test_image_kv_computed_once_per_forward(model):
    calls = {"encoder": 0, "k": 0, "v": 0, "q": 0}
    hooks = [model.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1)),
             model.adapters.k_proj.register_forward_hook(lambda *a: calls.__setitem__("k", calls["k"] + 1)),
             model.adapters.v_proj.register_forward_hook(lambda *a: calls.__setitem__("v", calls["v"] + 1)),
             model.adapters.q_proj.register_forward_hook(lambda *a: calls.__setitem__("q", calls["q"] + 1))]
    try:
        for kind in ("speech", "text"):
            calls.update(encoder=0, k=0, v=0, q=0)
            model.loss(tiny_batch(kind, B, T, CFG))
            assert calls == {"encoder": 1, "k": 1, "v": 1, "q": CFG.tiny_layers}
    finally:
        for h in hooks:
            h.remove()


def test_losses_and_zero_token_labels(model):
    batch = tiny_batch("speech", B, T, CFG, seed=6)
    loss, m = model.loss(batch)
    assert torch.isfinite(loss) and set(m) >= {"text_loss", "audio_loss", "gate_mean"}
    assert loss.item() == pytest.approx(m["text_loss"] + m["audio_loss"], rel=1e-5)
    _, m2 = model.loss(dict(batch, audio_mask=torch.zeros_like(batch["audio_mask"])))
    assert m2["audio_loss"] == 0.0 and m2["text_loss"] == pytest.approx(m["text_loss"], rel=1e-6)
    # the user's codebooks are inputs only: their mask does not change the loss
    mask = batch["audio_mask"].clone()
    mask[:, 8:] = False
    assert model.loss(dict(batch, audio_mask=mask))[0].item() == pytest.approx(loss.item(), rel=1e-6)
    tl, tm = model.loss(tiny_batch("text", B, T, CFG, seed=6))
    assert torch.isfinite(tl) and set(tm) == {"text_loss", "gate_mean"}
    with pytest.raises(ValueError, match="kind"):
        model.loss(dict(batch, kind="video"))


def test_a_few_steps_reduce_the_loss():
    m = build_model(CFG)
    opt = torch.optim.AdamW(m.adapter_parameters(), lr=1e-2)
    batch = tiny_batch("speech", B, T, CFG, seed=7)
    text = tiny_batch("text", B, T, CFG, seed=7)
    first = [m.loss(batch)[0].item(), m.loss(text)[0].item()]
    m.train()
    for _ in range(10):
        for b in (batch, text):
            opt.zero_grad()
            loss, _ = m(b)
            loss.backward()
            opt.step()
    last = [m.loss(batch)[0].item(), m.loss(text)[0].item()]
    assert last[0] < first[0] - 0.05 and last[1] < first[1] - 0.05, (first, last)


def test_gradient_checkpointing_matches(model):
    ck = build_model(cfg(gradient_checkpointing=True))
    ck.load_adapter_state_dict(model.adapter_state_dict())
    batch = tiny_batch("speech", B, T, CFG, seed=8)
    grads, calls = [], []
    for m in (model, ck):
        m.train()
        for p in m.adapter_parameters():
            p.grad = None
        n = [0]
        hook = m.layers[0].layer.mlp.register_forward_pre_hook(lambda *a: n.__setitem__(0, n[0] + 1))
        loss, _ = m.loss(batch)
        loss.backward()
        hook.remove()
        grads.append((loss.detach(), [p.grad.clone() for p in m.adapter_parameters()]))
        calls.append(n[0])
        m.eval()
    assert calls == [1, 2]  # recomputed in backward
    assert torch.allclose(grads[0][0], grads[1][0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))


def test_adapter_checkpoint_roundtrip(tmp_path):
    from safetensors.torch import load_file, save_file

    model, other = build_model(CFG), build_model(CFG)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(torch.randn_like(p) * 0.05)  # trained adapters, not the fresh init
    save_file({k: v.contiguous() for k, v in model.adapter_state_dict().items()}, str(tmp_path / "a.safetensors"))
    batch = tiny_batch("speech", B, T, CFG, seed=9)
    with torch.no_grad():
        assert not torch.equal(other.outputs(batch)["text_logits"], model.outputs(batch)["text_logits"])
        other.load_adapter_state_dict(load_file(str(tmp_path / "a.safetensors")))
        assert torch.equal(other.outputs(batch)["text_logits"], model.outputs(batch)["text_logits"])
    with pytest.raises(RuntimeError, match=r"(?s)Missing key\(s\).*q_projs\.0\.weight.*Unexpected key\(s\).*q_proj\.weight"):
        build_model(cfg(sharing="kv")).load_adapter_state_dict(model.adapter_state_dict())


def test_load_by_local_path(tmp_path, ref):
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionModel

    ref.save_pretrained(tmp_path / "moshi")
    loaded = load_backbone(cfg(backbone=str(tmp_path / "moshi")))
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), ref.parameters()))
    vision = tiny_configs(CFG)[1]
    text = dict(model_type="gemma2", vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    vlm = PaliGemmaForConditionalGeneration(PaliGemmaConfig(vision_config=vision.to_dict(), text_config=text,
                                                            projection_dim=32))
    vlm.save_pretrained(tmp_path / "paligemma")
    enc = load_image_encoder(cfg(image_encoder=str(tmp_path / "paligemma")))
    assert isinstance(enc, SiglipVisionModel) and not any(p.requires_grad for p in enc.parameters())
    src = vlm.model.vision_tower.state_dict()
    assert set(enc.state_dict()) == set(src) and all(torch.equal(v, src[k]) for k, v in enc.state_dict().items())
    vlm.model.vision_tower.save_pretrained(tmp_path / "siglip")
    assert isinstance(load_image_encoder(cfg(image_encoder=str(tmp_path / "siglip"))), SiglipVisionModel)
    m = build_model(cfg(backbone=str(tmp_path / "moshi"), image_encoder=str(tmp_path / "paligemma")))
    assert torch.isfinite(m.loss(tiny_batch("speech", B, T, CFG))[0])


def test_config_validation():
    for bad, message in ((dict(gating="sometimes"), "gating='sometimes'; valid: per_layer, shared, none"),
                         (dict(sharing="q"), "sharing='q'; valid: qkvo, kv"),
                         (dict(dtype="int8"), "dtype='int8'; valid: auto, float32, bfloat16, float16"),
                         (dict(audio_codebooks=9), "audio_codebooks=9 must be in 1..8"),
                         (dict(image_size=0), "image_size=0 must be an integer >= 1")):
        with pytest.raises(ValueError, match=re.escape(message)):
            cfg(**bad)


def test_paper_defaults_two_codebooks_and_the_semantic_weight():
    import torch.nn.functional as F

    assert ModelConfig().audio_codebooks == 2 and ModelConfig().first_codebook_weight_multiplier == 1.0
    batch = tiny_batch("speech", B, T, cfg(), seed=4)
    base = build_model(ModelConfig(image_size=32))
    with torch.no_grad():
        out = base.outputs(batch)
        assert out["audio_logits"].shape[2] == 2  # two depth-decoder steps, not eight
        codes = batch["audio"][:, :2].transpose(1, 2)  # [B, T, 2]
        mask = batch["audio_mask"][:, :2].transpose(1, 2) & (codes >= 0)
        ce = F.cross_entropy(out["audio_logits"].reshape(-1, AUDIO_VOCAB), codes.clamp(min=0).reshape(-1),
                             reduction="none").view(B, T, 2)
        for mult in (1.0, 100.0):
            m = build_model(ModelConfig(image_size=32, first_codebook_weight_multiplier=mult))
            w = mask.float()
            w[..., 0] *= mult
            expected = (ce * w).sum() / w.sum()
            _, metrics = m.loss(batch)
            assert metrics["audio_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_no_weight_decay_on_norms_biases_and_gate_scalars():
    m = build_model(cfg(gating="shared"))  # shared gating with qkvo has the per-layer alphas
    decay, no_decay = m.adapter_param_groups(0.05)
    names = {id(p): n for n, p in m.adapters.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    assert nd == {"image_proj.bias", "image_norm.weight"} | {f"norms.{i}.weight" for i in range(2)} | {
        f"alphas.{i}" for i in range(2)}
    assert all(p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(m.adapter_parameters())


def test_a_batch_delayed_otherwise_is_refused(model):
    batch = tiny_batch("speech", B, T, CFG, seed=2)
    batch["delays"] = (0,) + (2,) * 16
    with pytest.raises(ValueError, match="data.delays"):
        model.loss(batch)
