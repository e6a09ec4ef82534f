"""The backbone half of the kyuteye export checked against Kyutai's own code: the exported Moshi weights, under
moshi's `LMModel` names (MoshiVis' names minus `llm.`, `audio_emb`->`emb`, `audio_linears`->`linears`), load
into the real `moshi` package's LMModel (0.2.13) with no key missing or unexpected, and its temporal and depth
transformers then give the logits of transformers' Moshi (rotary permutation, Q/K/V row blocks, per-codebook
depth weights all inverted right)."""
import pytest
import torch

from trainer.export_kyuteye import transformers_to_kyuteye
from trainer.model import AUDIO_VOCAB, ModelConfig, build_model

moshi_lm = pytest.importorskip("moshi.models.lm")


def _moshi_names(bundle):
    out = {}
    for k, v in bundle.items():
        k = k.removeprefix("llm.")
        if k.startswith("audio_emb."):
            k = "emb." + k[len("audio_emb."):]
        elif k.startswith("audio_linears."):
            k = "linears." + k[len("audio_linears."):]
        out[k] = v
    return out


def test_exported_backbone_runs_in_kyutai_s_moshi_with_the_same_logits():
    cfg = ModelConfig(image_size=64, audio_codebooks=8)
    model = build_model(cfg)
    with model.backbone_only() as tb:
        bundle = transformers_to_kyuteye(tb.state_dict(), tb.config)
    # the tiny config in moshi's terms: ffn 128 = 2 * (2 * 1.5 * 64 // 3); depth ffn 64 = 2 * (2 * 48 // 3)
    lm = moshi_lm.LMModel(
        delays=[0] * 17, n_q=16, dep_q=8, card=AUDIO_VOCAB, text_card=32000, dim=64, num_heads=4, num_layers=2,
        hidden_scale=1.5, norm="rms_norm_f32", positional_embedding="rope", gating="silu", causal=True,
        context=3000, max_period=10000, layer_scale=None, existing_text_padding_id=3,
        depformer_dim=32, depformer_dim_feedforward=48, depformer_num_heads=2, depformer_num_layers=1,
        depformer_multi_linear=True, depformer_weights_per_step=True, depformer_pos_emb="none",
        depformer_context=8, depformer_gating="silu", depformer_layer_scale=None, depformer_max_period=10000)
    missing, unexpected = lm.load_state_dict(_moshi_names(bundle), strict=False)
    assert missing == [] and unexpected == []
    lm.eval()
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 32000, (2, 9), generator=g)
    audio = torch.randint(0, AUDIO_VOCAB, (2, 16, 9), generator=g)
    with torch.no_grad():
        with model.backbone_only() as tb:
            ref = tb(input_ids=text, moshi_audio_codes=audio[:, :8], user_audio_codes=audio[:, 8:], use_cache=False)
        hidden, text_logits = lm.forward_text(torch.cat([text[:, None], audio], 1))[:2]
        torch.testing.assert_close(text_logits[:, 0], ref.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(hidden, ref.last_hidden_state, rtol=1e-4, atol=1e-4)
        theirs = lm.forward_depformer_training(torch.cat([text[:, None], audio], 1), hidden)  # [B, 8, T, card]
        ours = model.depth_logits(hidden.reshape(-1, 64), text.reshape(-1),
                                  audio[:, :8].transpose(1, 2).reshape(-1, 8))  # [B*T, 8, card]
        torch.testing.assert_close(ours.view(2, 9, 8, -1).transpose(1, 2), theirs, rtol=1e-4, atol=1e-4)
