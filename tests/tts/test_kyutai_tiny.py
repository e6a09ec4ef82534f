"""builtin:kyutai-tiny: the published config in miniature, hub-cache layout read by moshi's unmodified
loaders from the environment alone, and a deterministic build."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tts.kyutai_tiny import (REAL_CONFIG, TINY_FILES, TINY_SIZES, TINY_VOICE_REPO, TINY_VOICES,
                                     build_kyutai_tiny, tiny_config)

ROOT = Path(__file__).resolve().parents[2]


def test_config_is_the_published_one_with_only_sizes_names_and_id_changed(kyutai_tiny):
    snap = next((kyutai_tiny.hub_dir / "models--ssvd-builtin--kyutai-tts-tiny" / "snapshots").iterdir())
    cfg = json.loads((snap / "config.json").read_text())
    assert cfg == tiny_config()
    changed = {k for k in cfg if cfg[k] != REAL_CONFIG.get(k)}
    assert changed == set(TINY_SIZES) | set(TINY_FILES) | {"model_id", "conditioners"}
    for key in ("n_q", "dep_q", "delays", "card", "text_card", "depformer_weights_per_step_schedule", "tts_config",
                "fuser", "demux_second_stream", "cross_attention"):
        assert cfg[key] == REAL_CONFIG[key], key
    assert cfg["conditioners"]["cfg"] == REAL_CONFIG["conditioners"]["cfg"]
    assert cfg["conditioners"]["speaker_wavs"] == REAL_CONFIG["conditioners"]["speaker_wavs"]


def test_unmodified_moshi_loads_it_from_the_environment_offline(kyutai_tiny):
    """HF_HUB_CACHE + HF_HUB_OFFLINE=1 and Kyutai's own calls, in a fresh process: no ssvd code involved."""
    code = f"""
import torch
from moshi.models.loaders import CheckpointInfo
from moshi.models.tts import TTSModel
ci = CheckpointInfo.from_hf_repo("ssvd-builtin/kyutai-tts-tiny")
m = TTSModel.from_checkpoint_info(ci, n_q=32, voice_repo="{TINY_VOICE_REPO}", device="cpu", dtype=torch.float32)
p = m.get_voice_path("vctk/p226_023.wav")
print(ci.tts_config, m.lm.n_q, m.lm.dep_q, m.delay_steps, sorted(m.valid_cfg_conditionings), m.multi_speaker, p.name)
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(kyutai_tiny.hub_dir), "HF_HUB_OFFLINE": "1",
           "NO_TORCH_COMPILE": "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout.strip()
    assert "{'audio_delay': 1.28, 'second_stream_ahead': 2} 32 32 16" in out
    assert "[1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0] True p226_023.wav.55d0717e@1.safetensors" in out


def test_a_second_build_gives_the_same_files(kyutai_tiny, tmp_path):
    build_kyutai_tiny(tmp_path)
    first = json.loads((kyutai_tiny.hub_dir.parent / "files.json").read_text())
    assert json.loads((tmp_path / "files.json").read_text()) == first
    voices = [k for k in first if "voices-tiny" in k and k.endswith(".safetensors")]
    assert len(voices) == len(TINY_VOICES)
