"""The real CLI through a local Ray cluster: speech -> tokens -> show -> export on fixture dialogues,
and a speech run killed mid-way then resumed (no duplicate, nothing lost)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_dialogue_fixture
from tests.integration.test_cli_dialogues import ROOT, _env, ssvd

FIXTURE_SHARDS = ((0, 1), (2,))


def _rows(d: Path, stage: str):
    return [r for f in sorted(d.glob(f"{stage}-*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("chain")
    dlg = write_dialogue_fixture(base / "dialogues", FIXTURE_SHARDS)
    speech = base / "speech"
    tokens = base / "tokens"
    ps = ssvd("speech", "--in", dlg, "--out", speech, "--workers", 2, "--no-progress")
    pt = ssvd("tokens", "--in", speech, "--out", tokens, "--codec", "random", "--workers", 1, "--no-progress")
    return dlg, speech, tokens, ps, pt


def test_chain_through_ray_writes_speech_and_token_shards(chain):
    dlg, speech, tokens, ps, pt = chain
    assert json.loads(ps.stdout.strip().splitlines()[-1])["status"] == {"ok": 3}
    assert json.loads(pt.stdout.strip().splitlines()[-1])["status"] == {"ok": 3}
    assert sorted(p.name for p in tokens.glob("tokens-*.parquet")) == ["tokens-00000.parquet", "tokens-00001.parquet"]
    by_id = {r["id"]: r for r in _rows(tokens, "tokens")}
    assert sorted(by_id) == ["dlg000", "dlg001", "dlg002"]
    assert all(len(r["audio_codes"]) == 16 and len(r["text_tokens"]) == r["num_frames"] for r in by_id.values())


def test_show_prints_speech_turns_and_the_text_stream(chain):
    _, speech, tokens, _, _ = chain
    s = ssvd("show", speech, "--limit", 1).stdout
    assert "voices: assistant=piper:joe" in s and "assistant:" in s
    t = ssvd("show", tokens, "--limit", 1).stdout
    assert "text stream" in t and "audio_codes=16x" in t and "|" in t


def test_export_cli(chain, tmp_path):
    _, speech, _, _, _ = chain
    p = ssvd("export", "--format", "moshi-finetune", "--in", speech, "--out", tmp_path, "--no-progress")
    assert json.loads(p.stdout.strip().splitlines()[-1])["exported"] == 3
    assert len((tmp_path / "index.jsonl").read_text().splitlines()) == 3


def test_bad_input_is_a_clear_error(tmp_path):
    p = ssvd("tokens", "--in", tmp_path / "nope", "--out", tmp_path / "o", check=False)
    assert p.returncode == 2 and "no such directory" in p.stderr


def test_speech_killed_then_resumed_has_every_dialogue_once(tmp_path):
    # one shard of 3 dialogues, flushed after every chunk: kill as soon as the first part file lands
    dlg = write_dialogue_fixture(tmp_path / "dialogues", ((0, 1, 2),))
    out = tmp_path / "speech"
    cmd = [sys.executable, "-m", "cli", "speech", "--in", str(dlg), "--out", str(out), "--workers", "0", "--no-progress"]
    env = dict(_env(), SSVD_CHUNK_SIZE="1", SSVD_FLUSH_ROWS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / ".parts").glob("speech-00000/part-*.parquet")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "speech-00000.parquet").exists()
    assert list((out / ".parts").glob("speech-00000/part-*.parquet"))
    p = ssvd("speech", "--in", dlg, "--out", out, "--workers", "0", "--no-progress")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["items_skipped"] >= 1 and summary["status"] == {"ok": 3}
    ids = [r["id"] for r in _rows(out, "speech")]
    assert sorted(ids) == ["dlg000", "dlg001", "dlg002"]
