"""The real CLI through a local Ray cluster: speech -> tokens -> show -> export on fixture dialogues,
and a speech run killed mid-way then resumed (no duplicate, nothing lost)."""
import json
import math
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


def test_gap_s_sets_the_silence_between_turns_and_is_validated(chain, tmp_path):
    dlg, speech, _, _, _ = chain
    out = tmp_path / "gaps"
    ssvd("speech", "--in", dlg, "--out", out, "--gap-s", "1.0", "1.2", "--limit", 2, "--workers", 0, "--no-progress")
    assert json.loads((out / "_speech.run.json").read_text())["config"]["timeline"]["gap_s"] == [1.0, 1.2]

    def gaps(d):
        rows = _rows(d, "speech")
        return [b["start_s"] - a["end_s"] for r in rows for a, b in zip(r["turns"], r["turns"][1:])]

    wide, default = gaps(out), gaps(speech)
    assert len(wide) == 6 and all(1.0 - 1e-3 <= g <= 1.2 + 1e-3 for g in wide), wide
    assert all(0.2 - 1e-3 <= g <= 0.8 + 1e-3 for g in default), default  # the default range, for contrast
    for bad in (("0.8", "0.2"), ("-0.1", "0.5")):
        p = ssvd("speech", "--in", dlg, "--out", tmp_path / "bad", "--gap-s", *bad, "--workers", 0, check=False)
        assert p.returncode == 2 and f"--gap-s {float(bad[0])} {float(bad[1])}: give MIN MAX with 0 <= MIN <= MAX" in p.stderr
        assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("speech-*.parquet"))


def test_text_stream_options_reach_the_stored_stream(chain, tmp_path):
    """--delay-s, --bos-id, --eos-id and --keep-and-shift through `ssvd tokens`: the stored stream is the one
    pipeline.tokens.interleave.text_stream makes with those options from the row's own words and frames."""
    from collections import Counter

    from pipeline.tokens.interleave import text_stream
    from pipeline.tokens.text_tokenizer import load_text_tokenizer

    _, speech, tokens, _, _ = chain
    out = tmp_path / "tokens"
    ssvd("tokens", "--in", speech, "--out", out, "--codec", "random", "--workers", 0, "--no-progress",
         "--delay-s", "0.24", "--bos-id", "1", "--eos-id", "2", "--keep-and-shift")
    tok = load_text_tokenizer(None)
    default = {r["id"]: r for r in _rows(tokens, "tokens")}
    rows = _rows(out, "tokens")
    assert sorted(r["id"] for r in rows) == sorted(default)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert json.loads(r["provenance"])["text_stream"] == {"pad_id": 3, "epad_id": 0, "zero_id": -1, "bos_id": 1,
                                                              "eos_id": 2, "delay_s": 0.24, "keep_and_shift": True}
        words = [(w["word"], w["start_s"], w["end_s"], w["speaker"]) for w in r["words"]]
        stats = Counter()
        expected = text_stream(words, r["num_frames"], 12.5, tok.encode_word, bos_id=1, eos_id=2, delay_s=0.24,
                               keep_and_shift=True, audio_num_frames=r["num_frames"], stats=stats)
        assert r["text_tokens"] == expected
        assert r["text_tokens"] != default[r["id"]]["text_tokens"]
        assert r["audio_codes"] == default[r["id"]]["audio_codes"]  # the options touch the text only
        # one BOS per assistant turn, one EOS per assistant turn that a user turn follows
        roles = r["turn_roles"]
        assert r["text_tokens"].count(1) == roles.count("assistant")
        assert r["text_tokens"].count(2) == sum(a == "assistant" and b == "user" for a, b in zip(roles, roles[1:]))
        # the text runs 0.24 s (3 frames) ahead of the audio: the first assistant token moved 3 frames earlier
        first = min(w["start_s"] for w in r["words"] if w["speaker"] == "assistant")
        assert r["text_tokens"].index(1) == math.floor((first - 0.24) * 12.5)
        assert r["dropped_text_tokens"] == 0 == stats["dropped_tokens"]  # keep-and-shift keeps every token
