"""MoshiVis = frozen Moshi (transformers `MoshiForConditionalGeneration`) + frozen SigLIP image encoder
(PaliGemma's vision tower) + the trainable adapters of `trainer/adapters.py`. See docs/trainer.md, "Model".

    model = build_model(ModelConfig(backbone="kmhf/hf-moshiko", image_encoder="google/paligemma2-3b-pt-448"), "cuda")
    loss, metrics = model.loss(batch)          # = model(batch); batches as in docs/trainer.md
    opt = torch.optim.AdamW(model.adapter_parameters())
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.collate import MOSHI_DELAYS
from trainer.adapters import GATINGS, SHARINGS, ImageKV, VisionAdapters, restore_decoder_layers, wrap_decoder_layers

TEXT_VOCAB, AUDIO_VOCAB, NUM_CODEBOOKS = 32000, 2048, 8  # the corpus' tokenizer and Mimi (per stream)
AUDIO_DELAYS = tuple(MOSHI_DELAYS[1:])  # rows 0-7 assistant, 8-15 user: the one table (trainer/collate.py)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    backbone: str = "tiny"  # "tiny" | hub id (kmhf/hf-moshiko) | local path of a MoshiForConditionalGeneration
    image_encoder: str = "tiny"  # "tiny" | PaliGemma id/path (vision tower taken) | SigLIP id/path
    image_size: int = 448  # pixels fed to the encoder (positions interpolated if not the encoder's own)
    gating: str = "per_layer"  # per_layer | shared | none
    sharing: str = "qkvo"  # qkvo (all shared) | kv (K/V shared, Q/O per layer)
    gate_hidden_div: int = 8  # gate MLP hidden size = dim / gate_hidden_div
    gate_init_bias: float = -4.0  # gate = sigmoid(mlp(y) + bias); starts at sigmoid(bias) (~0.018)
    dtype: str = "auto"  # frozen parts: auto (bfloat16 on CUDA, else float32) | float32 | bfloat16 | float16
    audio_codebooks: int = 2  # assistant codebooks supervised through the depth decoder (1..8); the paper's 2
    first_codebook_weight_multiplier: float = 1.0  # loss weight of codebook 0 (semantic), moshi-finetune's option
    gradient_checkpointing: bool = False  # recompute each temporal layer in backward
    seed: int = 0  # adapter init (and the tiny backbone / encoder)
    tiny_hidden: int = 64  # sizes of the "tiny" random backbone / encoder (tests, CPU smoke runs)
    tiny_layers: int = 2
    tiny_heads: int = 4

    def __post_init__(self):
        if self.gating not in GATINGS:
            raise ValueError(f"gating={self.gating!r}; valid: {', '.join(GATINGS)}")
        if self.sharing not in SHARINGS:
            raise ValueError(f"sharing={self.sharing!r}; valid: {', '.join(SHARINGS)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; valid: auto, {', '.join(DTYPES)}")
        if not float(self.first_codebook_weight_multiplier) > 0:
            raise ValueError(f"first_codebook_weight_multiplier={self.first_codebook_weight_multiplier!r} must be > 0")
        if not 1 <= int(self.audio_codebooks) <= NUM_CODEBOOKS:
            raise ValueError(f"audio_codebooks={self.audio_codebooks!r} must be in 1..{NUM_CODEBOOKS}")
        for k in ("image_size", "gate_hidden_div", "tiny_hidden", "tiny_layers", "tiny_heads"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"{k}={getattr(self, k)!r} must be an integer >= 1")


def tiny_configs(cfg: ModelConfig | None = None):
    """(MoshiConfig, SiglipVisionConfig) of the random "tiny" models: the corpus' vocabularies (32000 text,
    2048 audio, 8 codebooks per stream), a 1-layer depth decoder, a tiny Mimi, a SigLIP with 16 image tokens."""
    from transformers import MoshiConfig, SiglipVisionConfig

    cfg = cfg or ModelConfig()
    mimi = dict(model_type="mimi", hidden_size=16, num_filters=4, num_hidden_layers=1, intermediate_size=32,
                num_attention_heads=2, num_key_value_heads=2, codebook_dim=8, vector_quantization_hidden_dimension=8,
                num_quantizers=NUM_CODEBOOKS, upsample_groups=16, codebook_size=AUDIO_VOCAB)
    moshi = MoshiConfig(vocab_size=TEXT_VOCAB, hidden_size=cfg.tiny_hidden, num_hidden_layers=cfg.tiny_layers,
                        num_attention_heads=cfg.tiny_heads, ffn_dim=2 * cfg.tiny_hidden, audio_vocab_size=AUDIO_VOCAB,
                        num_codebooks=NUM_CODEBOOKS, audio_encoder_config=mimi,
                        # random weights this large let the adapters move the frozen model's logits
                        # (at 0.02 they stay within ~1 nat of uniform): over-fitting tests need that
                        initializer_range=0.3,
                        depth_decoder_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  ffn_dim=64))
    patch = max(1, cfg.image_size // 4)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=cfg.image_size, patch_size=patch, vision_use_head=False)
    return moshi, vision


def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return DTYPES[name]


def _frozen(m: nn.Module, device) -> nn.Module:
    return m.to(device).eval().requires_grad_(False)


def load_backbone(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """Moshi (`MoshiForConditionalGeneration`), frozen, in eval mode: random "tiny" (seeded) or by id/path."""
    from transformers import MoshiForConditionalGeneration
    from transformers.models.moshi.modeling_moshi import MoshiFlexibleLinear

    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.backbone == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = MoshiForConditionalGeneration._from_config(tiny_configs(cfg)[0], dtype=dtype)
            for mod in model.modules():  # transformers draws these N(0, 1): tame them for a usable tiny model
                if isinstance(mod, MoshiFlexibleLinear):
                    nn.init.normal_(mod.weight, std=model.config.initializer_range)
    else:
        model = MoshiForConditionalGeneration.from_pretrained(cfg.backbone, dtype=dtype)
    return _frozen(model, device)


def load_image_encoder(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """The frozen SigLIP vision model whose `last_hidden_state` are the image tokens. A PaliGemma id/path
    (google/paligemma2-3b-pt-448) loads the whole VLM on the CPU and keeps only its vision tower (the
    multi-modal projector, trained for Gemma, is dropped: the adapters learn their own projection)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, SiglipVisionModel

    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.image_encoder == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            return _frozen(SiglipVisionModel._from_config(tiny_configs(cfg)[1], dtype=dtype), device)
    conf = AutoConfig.from_pretrained(cfg.image_encoder)
    if conf.model_type in ("siglip", "siglip_vision_model"):
        return _frozen(SiglipVisionModel.from_pretrained(cfg.image_encoder, dtype=dtype), device)
    if not hasattr(conf, "vision_config"):
        raise ValueError(f"{cfg.image_encoder}: a {conf.model_type} model has no vision tower")
    vlm = AutoModelForImageTextToText.from_pretrained(cfg.image_encoder, dtype=dtype)
    inner = getattr(vlm, "model", vlm)
    tower = getattr(inner, "vision_tower", None) or getattr(vlm, "vision_tower")
    del vlm, inner
    return _frozen(tower, device)


def _embed(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Embedding with the zero token: ids == -1 give a zero vector (other rows are the table's exactly)."""
    return table(ids.clamp(min=0)).masked_fill((ids < 0).unsqueeze(-1), 0)


def _shift(x: torch.Tensor, initial: int) -> torch.Tensor:
    """[..., T] -> [initial, x_0 .. x_{T-2}]: the input at step t is the token of step t-1."""
    return torch.cat([torch.full_like(x[..., :1], initial), x[..., :-1]], dim=-1)


class MoshiVisModel(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: nn.Module, encoder: nn.Module, adapters: VisionAdapters):
        super().__init__()
        self.cfg, self.backbone, self.encoder, self.adapters = cfg, backbone, encoder, adapters
        wrap_decoder_layers(self.layers, adapters, cfg.gradient_checkpointing)
        mc = backbone.config
        self.text_vocab, self.audio_vocab, self.num_codebooks = mc.vocab_size, mc.audio_vocab_size, mc.num_codebooks
        self._interpolate = cfg.image_size != encoder.config.image_size

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.decoder.model.layers

    # ---- adapters: parameters, checkpoints, gates --------------------------------------------------
    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.adapters.parameters() if p.requires_grad]

    def adapter_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on the projection / attention / gate matrices only; none on norms,
        biases and the per-layer gate scalars (`alphas`)."""
        decay, no_decay = [], []
        for name, p in self.adapters.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name or name.startswith("alphas") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
                {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.adapters.state_dict().items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        return self.adapters.load_state_dict(state, strict=strict)

    def set_gates_closed(self, closed: bool = True) -> None:
        """Force every gate output to 0 (the model is then exactly the frozen backbone)."""
        self.adapters.closed = bool(closed)

    @contextlib.contextmanager
    def backbone_only(self):
        """Put Moshi's own decoder layers back for the duration: `self.backbone` is the untouched model."""
        wrapped = list(self.layers)
        restore_decoder_layers(self.layers)
        try:
            yield self.backbone
        finally:
            for i, layer in enumerate(wrapped):
                self.layers[i] = layer

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        self.encoder.eval()
        return self

    # ---- forward pieces ----------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> ImageKV:
        """[B, 3, H, W] pixels (SigLIP normalisation: [-1, 1]) -> the image keys/values, once per sample."""
        with torch.no_grad():
            p = next(self.encoder.parameters())
            tokens = self.encoder(pixel_values=pixels.to(p.device, p.dtype),
                                  interpolate_pos_encoding=self._interpolate).last_hidden_state
        return self.adapters.image_kv(tokens)

    def speech_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal-transformer inputs of a speech batch, as Moshi trains: step t sees the tokens of step
        t-1; step 0 and, on delayed codebooks, steps <= delay see the initial token (vocab size)."""
        text, audio = batch["text"], batch["audio"]
        if tuple(batch.get("delays", MOSHI_DELAYS)) != MOSHI_DELAYS:
            raise ValueError(f"the batch was delayed with {list(batch['delays'])} but the model undoes Moshi's "
                             f"{list(MOSHI_DELAYS)} (text + 16 codebooks): set data.delays to Moshi's")
        if audio.shape[1] != 2 * self.num_codebooks:
            raise ValueError(f"audio has {audio.shape[1]} codebooks, the backbone takes {2 * self.num_codebooks}")
        text_in, audio_in = _shift(text, self.text_vocab), _shift(audio, self.audio_vocab)
        for k, d in enumerate(AUDIO_DELAYS):
            if d:
                audio_in[:, k, : d + 1] = self.audio_vocab
        return text_in, audio_in

    def embed(self, text_in: torch.Tensor, audio_in: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the stream embeddings (Moshi's order: audio codebooks summed, then + text); -1 -> 0."""
        text_emb = _embed(self.backbone.decoder.model.embed_tokens, text_in)
        if audio_in is None:
            return text_emb
        audio_emb = sum(_embed(self.backbone.embed_tokens[c], audio_in[:, c]) for c in range(audio_in.shape[1]))
        return audio_emb + text_emb

    def temporal(self, embeds: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """Temporal transformer with the adapters -> final-norm hidden states [B, T, dim]."""
        self.adapters.gate_means = []
        self.adapters.kv = self.encode_image(image) if image is not None else None
        try:
            out = self.backbone.decoder.model(inputs_embeds=embeds, use_cache=False, return_dict=True)
        finally:
            self.adapters.kv = None
        return out.last_hidden_state

    def depth_logits(self, hidden: torch.Tensor, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Moshi's depth decoder, teacher-forced: hidden [N, dim], this step's text [N] and assistant codes
        [N, >=K-1] -> logits [N, K, audio_vocab] of the first K = cfg.audio_codebooks codebooks."""
        dd, k = self.backbone.depth_decoder, self.cfg.audio_codebooks
        ids = torch.cat([text[:, None], audio[:, : k - 1]], dim=1)
        embeds = torch.cat([_embed(dd.text_embed_tokens, ids[:, :1])]
                           + [_embed(dd.embed_tokens[i - 1], ids[:, i:i + 1]) for i in range(1, k)], dim=1)
        out = dd(input_ids=ids.clamp(min=0), inputs_embeds=embeds, last_hidden_state=hidden[:, None],
                 attention_mask=torch.ones_like(ids), use_cache=False, return_dict=True)
        return out.logits

    def outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All logits (for tests / inspection): text_logits [B, T, V]; speech: audio_logits [B, T, K, Va]."""
        if batch["kind"] == "text":
            hidden = self.temporal(self.embed(_shift(batch["text"], self.text_vocab)), batch.get("image"))
            return {"hidden": hidden, "text_logits": self.backbone.decoder.lm_head(hidden)}
        hidden = self.temporal(self.embed(*self.speech_inputs(batch)), batch.get("image"))
        b, t, d = hidden.shape
        audio = batch["audio"][:, : self.num_codebooks].transpose(1, 2).reshape(b * t, -1)
        audio_logits = self.depth_logits(hidden.reshape(b * t, d), batch["text"].reshape(-1), audio)
        return {"hidden": hidden, "text_logits": self.backbone.decoder.lm_head(hidden),
                "audio_logits": audio_logits.view(b, t, *audio_logits.shape[1:])}

    # ---- losses ------------------------------------------------------------------------------------
    def _text_loss(self, hidden: torch.Tensor, text: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.float() * (text >= 0)
        sel = w > 0
        if not sel.any():
            return hidden.sum() * 0.0
        logits = self.backbone.decoder.lm_head(hidden[sel]).float()
        ce = F.cross_entropy(logits, text[sel], reduction="none")
        return (ce * w[sel]).sum() / w[sel].sum()

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Speech batch: weighted text loss + audio loss (assistant codebooks where audio_mask); text batch:
        next-token loss of the text stream, audio inputs all zero tokens (Figure 3, speechless path)."""
        if batch["kind"] == "text":
            hidden = self.temporal(self.embed(_shift(batch["text"], self.text_vocab)), batch.get("image"))
            loss = self._text_loss(hidden, batch["text"], batch["text_weight"])
            metrics = {"text_loss": float(loss.detach())}
        elif batch["kind"] == "speech":
            hidden = self.temporal(self.embed(*self.speech_inputs(batch)), batch.get("image"))
            text_loss = self._text_loss(hidden, batch["text"], batch["text_weight"])
            k = self.cfg.audio_codebooks
            codes = batch["audio"][:, : self.num_codebooks].transpose(1, 2)  # [B, T, 8]
            mask = batch["audio_mask"][:, :k].transpose(1, 2) & (codes[..., :k] >= 0)
            rows = mask.any(-1)
            if rows.any():
                logits = self.depth_logits(hidden[rows], batch["text"][rows], codes[rows]).float()
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[rows][:, :k].clamp(min=0).reshape(-1),
                                     reduction="none").view(-1, k)
                w = mask[rows].float()
                w[:, 0] *= float(self.cfg.first_codebook_weight_multiplier)  # moshi-finetune's weighted mean
                audio_loss = (ce * w).sum() / w.sum()
            else:
                audio_loss = hidden.sum() * 0.0
            loss = text_loss + audio_loss
            metrics = {"text_loss": float(text_loss.detach()), "audio_loss": float(audio_loss.detach())}
        else:
            raise ValueError(f"unknown batch kind {batch['kind']!r}")
        if self.adapters.gate_means:
            metrics["gate_mean"] = float(torch.stack(self.adapters.gate_means[: len(self.layers)]).mean())
        return loss, metrics

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch)


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> MoshiVisModel:
    """Frozen backbone + frozen encoder + fresh adapters (float32, seeded) on `device`."""
    backbone = load_backbone(cfg, device)
    encoder = load_image_encoder(cfg, device)
    mc = backbone.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        adapters = VisionAdapters(mc.hidden_size, mc.num_attention_heads, mc.num_hidden_layers,
                                  encoder.config.hidden_size, gating=cfg.gating, sharing=cfg.sharing,
                                  gate_hidden_div=cfg.gate_hidden_div, gate_init_bias=cfg.gate_init_bias)
    return MoshiVisModel(cfg, backbone, encoder, adapters.to(device))


def tiny_batch(kind: str = "speech", B: int = 2, T: int = 12, cfg: ModelConfig | None = None, *, seed: int = 0,
               full: bool = False, pad_id: int = 3, pad_weight: float = 0.5) -> dict[str, Any]:
    """A random batch in the docs/trainer.md format. Speech: T frames, delayed codebooks shifted within them (the
    last frame of a delayed codebook falls off, as in Moshi's training; rows 1.. end earlier unless `full`);
    text: rows right-padded with the zero token (unless `full`)."""
    g = torch.Generator().manual_seed(seed)
    size = (cfg or ModelConfig()).image_size
    image = torch.rand(B, 3, size, size, generator=g) * 2 - 1
    meta = {"ids": [f"{kind}-{i}" for i in range(B)], "splits": ["tiny"] * B}
    if kind == "text":
        text = torch.randint(4, TEXT_VOCAB, (B, T), generator=g)
        for b in range(B):
            text[b, (T if full or b == 0 else max(2, T - 3 * b)):] = -1
        return {"kind": "text", "text": text, "text_weight": (text >= 0).float(), "image": image, **meta}
    n_max = T
    words = torch.randint(4, TEXT_VOCAB, (B, n_max), generator=g)
    words = torch.where(torch.rand(B, n_max, generator=g) < 0.4, pad_id, words)
    codes = torch.randint(0, AUDIO_VOCAB, (B, 2 * NUM_CODEBOOKS, n_max), generator=g)
    text = torch.full((B, T), -1)
    audio = torch.full((B, 2 * NUM_CODEBOOKS, T), -1)
    visual = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        n = n_max if full or b == 0 else max(2, n_max - 2 * b)
        text[b, :n], visual[b, :n] = words[b, :n], True
        for k, d in enumerate(AUDIO_DELAYS):
            audio[b, k, d:n] = codes[b, k, :n - d]
    weight = torch.where(text < 0, 0.0, torch.where(text == pad_id, pad_weight, 1.0))
    return {"kind": "speech", "text": text, "audio": audio, "text_weight": weight, "audio_mask": audio >= 0,
            "image": image, "visual": visual, "delays": MOSHI_DELAYS, **meta}
