"""The Kyutai DSM TTS through the real CLI on the CPU (builtin:kyutai-tiny): `ssvd speech` -> `ssvd tokens`
keeping the TTS's own Mimi codes, settings refused before any work, and `ssvd run` on a manifest whose
speech backend is kyutai."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import write_dialogue_fixture
from tests.integration.test_cli_dialogues import ssvd
from tests.tts.spans_check import check_row_words
from tts.kyutai_backend import TINY

ASSISTANT = "kyutai:expresso/ex03-ex01_happy_001_channel1_334s.wav"
USERS = ("kyutai:vctk/p226_023.wav", "kyutai:vctk/p303_023.wav")


def _rows(d: Path, stage: str) -> list[dict]:
    return [r for f in sorted(d.glob(f"{stage}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def _speech_args(dlg, out, *more):
    users = [a for u in USERS for a in ("--user-voice", u)]
    return ("speech", "--in", dlg, "--out", out, "--assistant-voice", ASSISTANT, *users, "--kyutai-model", TINY,
            "--workers", 0, "--no-progress", *more)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, kyutai_tiny):
    base = tmp_path_factory.mktemp("kyutai")
    dlg = write_dialogue_fixture(base / "dialogues", ((0,), (2,)), rejected_in_first=False)
    speech, tokens = base / "speech", base / "tokens"
    ps = ssvd(*_speech_args(dlg, speech))
    pt = ssvd("tokens", "--in", speech, "--out", tokens, "--codec", TINY, "--workers", 0, "--no-progress")
    return dlg, speech, tokens, ps, pt


def check_token_rows(speech_rows: list[dict], token_rows: list[dict]) -> None:
    """Token rows keep the speech rows' (the TTS's) codes and are well-formed."""
    sp = {r["id"]: r for r in speech_rows}
    assert sorted(sp) == sorted(r["id"] for r in token_rows)
    for t in token_rows:
        s = sp[t["id"]]
        assert t["status"] == "ok" and s["codes_codec"] == TINY and t["codec"].startswith(TINY + "#")
        codes = np.asarray(t["audio_codes"])
        assert codes.shape == (16, t["num_frames"]) and codes.min() >= 0 and codes.max() < 2048
        assert t["audio_codes"] == s["codes"]  # the TTS's own codes, not re-encoded
        assert t["num_frames"] * 1920 == s["num_samples"]
        assert len(t["text_tokens"]) == t["num_frames"] and t["frame_rate_hz"] == 12.5
        assert t["turn_roles"] == [x["role"] for x in s["turns"]]
        assert all(0 <= f < t["num_frames"] for f in t["turn_start_frames"])
        check_row_words(s)
        prov = json.loads(t["provenance"])
        assert prov["tts"]["kyutai"]["model"] == TINY and prov["voices"]["assistant"] == ASSISTANT


def test_speech_then_tokens_keep_the_tts_codes(chain):
    _, speech, tokens, ps, pt = chain
    assert json.loads(ps.stdout.strip().splitlines()[-1])["status"] == {"ok": 2}
    assert json.loads(pt.stdout.strip().splitlines()[-1])["status"] == {"ok": 2}
    check_token_rows(_rows(speech, "speech"), _rows(tokens, "tokens"))


def test_a_bad_cfg_coef_fails_before_any_work(chain, tmp_path):
    dlg = chain[0]
    p = ssvd(*_speech_args(dlg, tmp_path / "out", "--kyutai-cfg-coef", "2.2"), check=False)
    assert p.returncode != 0
    assert "cfg_coef 2.2" in p.stderr and "1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0" in p.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_voice_fails_before_any_work_naming_valid_ones(chain, tmp_path):
    dlg = chain[0]
    p = ssvd("speech", "--in", dlg, "--out", tmp_path / "out", "--assistant-voice", "kyutai:vctk/p999_001.wav",
             "--user-voice", USERS[0], "--kyutai-model", TINY, "--workers", 0, "--no-progress", check=False)
    assert p.returncode != 0
    assert "vctk/p999_001.wav" in p.stderr and "vctk/p226_023.wav" in p.stderr
    assert not (tmp_path / "out").exists()


def test_ssvd_run_with_a_kyutai_manifest(tmp_path, kyutai_tiny):
    manifest = {
        "name": "kyutai-tiny", "seed": 3,  # as tests/fixtures/manifests/tiny.yaml: an accepted docci dialogue
        "models": {"dialogue": {"engine": "vllm", "model": "builtin:smollm2"},
                   "speech": {"backend": "kyutai", "model": TINY, "cfg_coef": 2.0,
                              "assistant_voice": ASSISTANT, "user_voices": list(USERS)},
                   "codec": TINY, "tokenizer": None},
        "defaults": {"min_pairs": 1, "max_pairs": 1, "max_new_tokens": 48, "on_length": "trim", "limit": 1},
        "splits": [{"name": "docci-prop", "kind": "speech", "weight": 1, "source": "docci", "instruction": "PROP",
                    "input": "tests/fixtures/captions/docci"}],
    }
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "corpus"
    ssvd("run", m, "--out", out, "--workers", 0, "--device", "cpu", "--no-progress", timeout=900)
    speech, tokens = _rows(out / "docci-prop" / "speech", "speech"), _rows(out / "docci-prop" / "tokens", "tokens")
    assert len(speech) == 1 and speech[0]["status"] == "ok"
    check_token_rows(speech, tokens)
    assert json.loads(speech[0]["tts"])["kyutai"]["cfg_coef"] == 2.0
