"""`ssvd plan`: the pools of each phase on described clusters (8xH100-80GB, 2x8xA100-40GB, CPU only) with the real
Mistral-Nemo and Kyutai TTS configs (tests/fixtures/configs); what cannot run exits 2. Nothing starts here."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.corpus.pools import MIMI_PARAMS, TTS_PARAMS, described, plan
from pipeline.manifest.load import load_manifest

REPO = Path(__file__).resolve().parents[3]
NEMO_CONFIG = REPO / "tests/fixtures/configs/mistral-nemo-instruct-2407.config.json"
NEMO = "mistralai/Mistral-Nemo-Instruct-2407"
CONFIGS = {NEMO: json.loads(NEMO_CONFIG.read_text())}


def _plan(cluster, workers, **kw):
    return plan(load_manifest(REPO / "manifests/moshivis.yaml"), cluster, workers=workers, model_configs=CONFIGS, **kw)


def test_8xh100_runs_every_phase_on_gpu():
    p = _plan(described(1, 8, 80, 96), 8)
    assert p["ok"], p["problems"]
    d = p["phases"]["dialogues"]
    assert (d["device"], d["gpus_per_worker"], d["engines_per_gpu"], d["nodes"]) == ("cuda", 1, 1, [8])
    [engine] = d["engines"]
    assert (engine["max_model_len"], engine["kv_bytes_per_token"]) == (6144, 160 * 1024)
    assert engine["dialogues_at_once"] == 50 and engine["kv_tokens"] > 300_000
    assert p["phases"]["speech"]["device"] == "cuda" and p["phases"]["speech"]["tts_weights_gib"] == 3.42
    assert p["phases"]["tokens"]["codec_weights_gib"] == 0.3


def test_2x8xa100_40gb_places_16_workers_and_fits_fewer_dialogues():
    p = _plan(described(2, 8, 40, 64), 16)
    assert p["ok"], p["problems"]
    d = p["phases"]["dialogues"]
    assert d["nodes"] == [8, 8] and 5 < d["engines"][0]["dialogues_at_once"] < 50
    # two engines per GPU (different models per role) do not fit a 40 GB GPU: refused with the numbers
    bad = _plan(described(2, 8, 40, 64), 16, separate_engines=True)
    assert not bad["ok"] and "shared by 2 engines" in bad["problems"][0]
    # split over two GPUs each, they fit again: 8 workers of 2 GPUs
    tp = _plan(described(2, 8, 40, 64), 8, sizing={"tensor_parallel_size": 2})
    assert tp["ok"], tp["problems"]
    assert tp["phases"]["dialogues"]["gpus_per_worker"] == 2 and tp["phases"]["dialogues"]["nodes"] == [4, 4]


def test_cpu_only_cluster_and_what_cannot_run():
    p = _plan(described(1, 0, 0, 16), 2)
    assert p["ok"] and p["phases"]["dialogues"]["device"] == "cpu" and p["phases"]["speech"]["device"] == "cpu"
    assert "cuda" in _plan(described(1, 0, 0, 16), 1, device="cuda")["problems"][0]
    over = _plan(described(1, 8, 80, 96), 9)
    assert any("9 workers x 1 GPU(s) need 9 GPUs" in x for x in over["problems"])
    assert any("above the GPUs of any one node" in x for x in
               _plan(described(2, 8, 80, 96), 1, sizing={"tensor_parallel_size": 16})["problems"])
    small = _plan(described(1, 1, 24, 16), 1)
    assert "cannot hold one full dialogue" in small["problems"][0] and "Fix:" in small["problems"][0]


def test_cli_exit_codes_and_json():
    runner = CliRunner()
    base = ["plan", str(REPO / "manifests/moshivis.yaml"), "--model-config", f"{NEMO}={NEMO_CONFIG}"]
    ok = runner.invoke(app, base + ["--gpus-per-node", "8", "--gpu-memory-gib", "80", "--workers", "8"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.strip().splitlines()[-1])["phases"]["dialogues"]["engines"][0]["dialogues_at_once"] == 50
    refused = runner.invoke(app, base + ["--gpus-per-node", "8", "--gpu-memory-gib", "80", "--workers", "9"])
    assert refused.exit_code == 2 and "REFUSED: dialogues: 9 workers" in refused.output
    unknown = runner.invoke(app, ["plan", str(REPO / "manifests/moshivis.yaml"), "--gpus-per-node", "8",
                                  "--gpu-memory-gib", "80"])
    assert unknown.exit_code == 0 and "give --model-config" in unknown.output  # not in the HF cache here


def test_builtin_model_is_sized_from_its_built_config(tmp_path, tiny_mistral):
    text = (REPO / "manifests/quickstart.yaml").read_text().replace("builtin:smollm2", "builtin:tiny-mistral")
    (tmp_path / "m.yaml").write_text(text)
    p = plan(load_manifest(tmp_path / "m.yaml"), described(1, 0, 0, 2), workers=1)
    assert p["ok"], p["problems"]
    engine = p["phases"]["dialogues"]["engines"][0]
    assert (engine["model"], engine["max_model_len"], engine["kv_bytes_per_token"]) == ("builtin:tiny-mistral", 8192, 512)


def test_speech_model_sizes_are_recounted_from_the_real_configs():
    """The TTS and Mimi parameter counts ssvd plans with, made by moshi's own constructors on the meta device."""
    import torch
    from moshi.models import loaders

    from tts.kyutai_tiny import _NOT_LM_KWARGS

    fixture = json.loads((REPO / "tests/fixtures/configs/kyutai-tts-1.6b-en_fr.config.json").read_text())
    from tts.kyutai_tiny import REAL_CONFIG

    assert fixture == json.loads(json.dumps(REAL_CONFIG))
    cfg = {k: v for k, v in copy.deepcopy(fixture).items() if k not in _NOT_LM_KWARGS}
    with torch.device("meta"):
        lm = loaders.get_moshi_lm(None, lm_kwargs=cfg, device="meta", dtype=torch.bfloat16)
        mimi = loaders.get_mimi(None, device="meta")
    assert sum(p.numel() for p in lm.parameters()) == TTS_PARAMS
    assert sum(p.numel() for p in mimi.parameters()) == MIMI_PARAMS
