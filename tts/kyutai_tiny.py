"""`builtin:kyutai-tiny`: a tiny, random-weight Kyutai DSM TTS, laid out as a local Hugging Face hub cache.

Kyutai's TTS (`kyutai/tts-1.6b-en_fr`, voices in `kyutai/tts-voices`) needs a GPU and 4 GB of weights.
This builds a model of the same *kind* small enough for CI on a CPU: the published `config.json`
(`REAL_CONFIG`: 32 codebooks, delays, per-step depformer schedule, second text stream, the
`speaker_wavs`/`cfg`/`control` conditioners and their fuser, `tts_config`) with only the sizes made
tiny (`TINY_SIZES`: dim 64, 2 layers, depformer 64 x 2 layers), a tiny Mimi (same 24 kHz / 12.5 Hz
framing, 32 codebooks of 2048 entries, small convolutions and transformer), a SentencePiece model
trained on the spot, and random `speaker_wavs` voice embeddings (shape [1, 512, 125], as the
published voice files have).

Everything is written with and for `moshi`'s own loaders, so Kyutai's *unmodified* loading code reads
it: the LM is made by `moshi.models.loaders.get_moshi_lm(None, config)` and its state dict saved as
safetensors, Mimi by `get_mimi(None, mimi_config)` likewise, and the files go into a folder laid out
like the Hugging Face cache (`HUB_DIR/models--ORG--NAME/snapshots/REV/...` and `refs/main`), so that
`CheckpointInfo.from_hf_repo(TINY_REPO)` and `TTSModel.get_voice_path(voice)` resolve them with
`HF_HUB_CACHE=<folder>/hub` (or `HF_HOME=<folder>`) and `HF_HUB_OFFLINE=1`, exactly as they resolve
the real repositories from a populated cache.

The published config was read (not downloaded) from two independent public checks of it: a model
inspector that asserts every key of `kyutai/tts-1.6b-en_fr`'s config.json at hub revision
f65439609986c392cb12df63938abcc550c3fb15, and a Rust port's test of its config preset; see
docs/speech.md. Built once into the ssvd cache (`pipeline.core.model_cache.ensure_built`: atomic
rename under a file lock), deterministic (seeded), a few seconds on 2 cores.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.model_cache import cache_dir, ensure_built
from pipeline.core.shards import sha256_file

NAME = "builtin:kyutai-tiny"
TINY_DIR = "kyutai-tts-tiny-v3"
TINY_REPO = "ssvd-builtin/kyutai-tts-tiny"
TINY_VOICE_REPO = "ssvd-builtin/kyutai-tts-voices-tiny"
TINY_REVISION = "0" * 39 + "1"  # a commit-hash-shaped snapshot name, as the hub cache uses
TINY_SEED = 20250702
SPEAKER_SHAPE = (1, 512, 125)  # [1, dim, frames] of a published voice embedding (speaker_wavs)

# kyutai/tts-1.6b-en_fr config.json as published (hub revision f65439609986c392cb12df63938abcc550c3fb15).
REAL_CONFIG: dict = {
    "card": 2048, "n_q": 32, "dep_q": 32, "delays": [0, 0] + [2] * 31, "dim": 2048, "text_card": 8000,
    "existing_text_padding_id": 3, "num_heads": 16, "num_layers": 16, "hidden_scale": 4.125, "causal": True,
    "layer_scale": None, "context": 500, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 4,
    "depformer_dim_feedforward": 3072, "depformer_multi_linear": True, "depformer_pos_emb": "none",
    "depformer_weights_per_step": True, "depformer_low_rank_embeddings": 128, "demux_second_stream": True,
    "text_card_out": None, "cross_attention": True,
    "conditioners": {
        "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}},
        "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                       "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]}},
        "control": {"type": "lut", "lut": {"dim": 2048, "n_bins": 1, "tokenizer": "noop", "possible_values": ["ok"]}},
    },
    "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1, "sum": ["control", "cfg"],
              "prepend": [], "cross": ["speaker_wavs"]},
    "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
    "model_id": {"sig": "1e68beda", "epoch": 240},
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8,
    "model_type": "tts",
    "lm_gen_config": {"temp": 0.6, "text_temp": 0.6},
    "tokenizer_name": "tokenizer_spm_8k_en_fr_audio.model",
    "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
    "moshi_name": "dsm_tts_1e68beda@240.safetensors",
}
# What the tiny model changes: sizes, the file names, and its own signature (voice files are named after it).
TINY_SIZES: dict = {
    "dim": 64, "num_heads": 4, "num_layers": 2, "depformer_dim": 64, "depformer_num_heads": 4,
    "depformer_num_layers": 2, "depformer_dim_feedforward": 128, "depformer_low_rank_embeddings": 16,
    "bias_proj": True,  # output biases: lets the text head ask for the next word at a speaking pace (below)
}
# A random text head almost never samples the new-word token (id 0 of 8000), so every word would last
# the state machine's max padding (8 steps, 0.64 s). A bias on that logit makes the model ask for the next
# word soon after the current one's tokens are fed: about 3 steps a word, a speaking pace.
TINY_NEW_WORD_BIAS = 6.0
TINY_FILES = {"tokenizer_name": "tokenizer_spm_tiny.model", "mimi_name": "mimi-tiny.safetensors",
              "moshi_name": "dsm_tts_tiny.safetensors", "mimi_config_name": "mimi_config.json"}
TINY_MODEL_ID = {"sig": "55d0717e", "epoch": 1}
TINY_MIMI_CONFIG: dict = {  # moshi's Mimi layout (24 kHz, ratios 8-6-5-4, 12.5 Hz, 32 x 2048 codebooks), small
    "sample_rate": 24000, "channels": 1, "frame_rate": 12.5,
    "seanet": {"channels": 1, "dimension": 32, "causal": True, "n_filters": 4, "n_residual_layers": 1,
               "activation": "ELU", "compress": 2, "dilation_base": 2, "disable_norm_outer_blocks": 0,
               "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 3, "norm": "none",
               "pad_mode": "constant", "ratios": [8, 6, 5, 4], "true_skip": True},
    "quantizer": {"dimension": 16, "n_q": 32, "bins": 2048, "input_dimension": 32, "output_dimension": 32},
    "transformer": {"d_model": 32, "num_heads": 2, "num_layers": 1, "causal": True, "layer_scale": 0.01,
                    "context": 250, "conv_layout": True, "max_period": 10000, "gating": "none",
                    "norm": "layer_norm", "positional_embedding": "rope", "dim_feedforward": 64,
                    "input_dimension": 32, "output_dimensions": [32]},
}
# Voices of the tiny voice repository: the backend's defaults (names from kyutai/tts-voices) and a few more.
TINY_VOICES: tuple[str, ...] = (
    "expresso/ex03-ex01_happy_001_channel1_334s.wav",
    "expresso/ex01-ex02_default_001_channel2_198s.wav",
    "expresso/ex04-ex03_default_002_channel2_239s.wav",
    "vctk/p225_023.wav", "vctk/p226_023.wav", "vctk/p227_023.wav", "vctk/p244_023.wav",
    "vctk/p262_023.wav", "vctk/p303_023.wav",
)
_SPM_VOCAB = 1000
_WORDS = (
    "a about after again all also an and any are as at back be because been before being between both but by "
    "can come could day did do does down each even every first for from get give go good great had has have he "
    "her here him his how i if in into is it its just know like little long look made make man many may me more "
    "most much must my never new no not now of off old on one only or other our out over own people picture "
    "place right said same say see she should show side small so some still such take than that the their them "
    "then there these they thing think this those three through time to too two under up us use very want was "
    "way we well were what when where which while who why will with word work would year yes you your "
    "dog cat park city sky sign red blue green black white bright clear window plant bench hat frisbee catching "
    "watching written open until sunny sits next color mostly paws hello world zero five six seven eight nine "
    "ten eleven twelve hundred thousand percent dollars example really fine okay going happened"
).split()


@dataclass(frozen=True)
class KyutaiTiny:
    """Where the built tiny model lies: set `hub_dir` as the hub cache (HF_HUB_CACHE) to load `repo`."""

    hub_dir: Path
    repo: str
    voice_repo: str
    fingerprint: str


def tiny_config() -> dict:
    cfg = copy.deepcopy(REAL_CONFIG)
    cfg.update(TINY_SIZES)
    cfg.update(TINY_FILES)
    cfg["model_id"] = dict(TINY_MODEL_ID)
    cfg["conditioners"]["control"]["lut"]["dim"] = TINY_SIZES["dim"]  # the real one is the model's dim
    return cfg


def voice_suffix() -> str:
    """What `TTSModel.get_voice_path` appends to a voice name for this model: `.SIG@EPOCH.safetensors`."""
    return f".{TINY_MODEL_ID['sig']}@{TINY_MODEL_ID['epoch']}.safetensors"


def resolve_kyutai_tiny() -> KyutaiTiny:
    """The built tiny model (built on first use into the ssvd cache)."""
    folder, marker = ensure_built(cache_dir() / "models", TINY_DIR, build_kyutai_tiny)
    return KyutaiTiny(folder / "hub", TINY_REPO, TINY_VOICE_REPO, marker["fingerprint"])


def _snapshot(hub: Path, repo: str) -> Path:
    base = hub / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(TINY_REVISION)
    snap = base / "snapshots" / TINY_REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _train_tokenizer(path: Path) -> None:
    """A small SentencePiece model (ids 0-3: unk, bos, eos, pad, as Moshi's text tokenizers; byte fallback,
    so every character maps to pieces, never to unk = the DSM TTS's new-word token)."""
    import io

    import sentencepiece as spm

    rng = random.Random(TINY_SEED)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) for _ in range(3000)]
    lines += [w.capitalize() + p for w in _WORDS for p in (",", ".", "?", "!", "'s")]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=_SPM_VOCAB, model_type="unigram",
        character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        num_threads=1, seed_sentencepiece_size=100000, shuffle_input_sentence=False, hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(buf.getvalue())


def _randomize_mimi(mimi, gen) -> None:
    """Give every codebook of a fresh Mimi random entries spread like what it quantizes (a fresh one has
    all-zero codebooks: one code, silent audio): the latents of a seeded calibration signal (noise and
    chirps at two levels), level by level through each residual quantizer. Codes then vary with the audio,
    and decoded audio varies with the codes."""
    import torch

    t = torch.arange(2 * 24000) / 24000
    rows = []
    for level in (0.02, 0.2):
        rows.append(level * torch.randn(t.shape, generator=gen))
        f0 = 80.0 + 2900.0 * float(torch.rand(1, generator=gen))
        rows.append(level * torch.sin(2 * torch.pi * (f0 + 300.0 * t) * t))
    calib = torch.stack(rows)[:, None]
    q = mimi.quantizer
    with torch.no_grad():
        emb = mimi._encode_to_unquantized_latent(calib)  # [B, D, T]
        for rvq in (q.rvq_first, q.rvq_rest):
            x = rvq.input_proj(emb)
            residual = x.permute(0, 2, 1).reshape(-1, x.shape[1])
            for layer in rvq.vq.layers:
                book = layer._codebook
                mean, std = residual.mean(0), residual.std(0).clamp(min=1e-4)
                book.embedding_sum.copy_(mean + std * torch.randn(book.embedding_sum.shape, generator=gen))
                book.cluster_usage.fill_(1.0)
                book._initialized.fill_(1.0)
                book.register_buffer("_embedding", None, persistent=False)
                residual = residual - book.decode(book.encode(residual))


def build_kyutai_tiny(dest: Path) -> None:
    import torch
    from moshi.models import loaders

    cfg = tiny_config()
    hub = dest / "hub"
    snap = _snapshot(hub, TINY_REPO)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        lm_kwargs = {k: v for k, v in cfg.items() if k not in _NOT_LM_KWARGS}
        lm = loaders.get_moshi_lm(None, lm_kwargs=copy.deepcopy(lm_kwargs), device="cpu", dtype=torch.float32)
        with torch.no_grad():
            for lin in (lm.text_linear, *lm.linears):
                lin.bias.zero_()
            lm.text_linear.bias[0] = TINY_NEW_WORD_BIAS
        state = {k: v.detach().contiguous() for k, v in lm.state_dict().items()}
        _save(state, snap / TINY_FILES["moshi_name"])
        torch.manual_seed(TINY_SEED + 1)
        mimi = loaders.get_mimi(None, copy.deepcopy(TINY_MIMI_CONFIG), device="cpu")
        _randomize_mimi(mimi, torch.Generator().manual_seed(TINY_SEED + 2))
        mstate = {k: v.detach().contiguous() for k, v in mimi.state_dict().items()}
        _save(mstate, snap / TINY_FILES["mimi_name"])
    (snap / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (snap / TINY_FILES["mimi_config_name"]).write_text(json.dumps(TINY_MIMI_CONFIG, indent=1) + "\n")
    _train_tokenizer(snap / TINY_FILES["tokenizer_name"])
    (snap / "README.md").write_text(
        "# ssvd builtin:kyutai-tiny\n\nRandom weights in the shape of kyutai/tts-1.6b-en_fr's config (sizes made "
        "tiny), for tests and smoke runs on the CPU. Its speech is noise.\n")
    vsnap = _snapshot(hub, TINY_VOICE_REPO)
    suffix = voice_suffix()
    meta = {k: str(v) for k, v in TINY_MODEL_ID.items()}
    for voice in TINY_VOICES:
        seed = int.from_bytes(hashlib.sha256(f"{TINY_SEED}:{voice}".encode()).digest()[:8], "little")
        emb = torch.randn(SPEAKER_SHAPE, generator=torch.Generator().manual_seed(seed))
        path = vsnap / (voice + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save({"speaker_wavs": emb.contiguous()}, path, metadata=meta)
    for p in sorted(dest.rglob("*")):  # the cache may be shared: readable by all
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    # the folder's fingerprint (`fingerprint_dir`) covers top-level files only: list every file's hash there
    files = {str(p.relative_to(dest)): sha256_file(p) for p in sorted(hub.rglob("*")) if p.is_file()}
    (dest / "files.json").write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")


def _save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors file with its JSON header's keys sorted: safetensors writes metadata in hash-map order,
    which changes from process to process, and the build must give the same bytes every time."""
    from safetensors.torch import save

    blob = save(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data keeps 8-byte alignment; offsets are relative to it
    path.write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + n :])


# config.json keys that `CheckpointInfo.from_hf_repo` pops before it builds the LM
_NOT_LM_KWARGS = {"model_type", "lm_gen_config", "tts_config", "stt_config", "model_id", "moshi_name", "mimi_name",
                  "tokenizer_name", "mimi_config_name", "lora_name"}
