"""Injected faults (SSVD_FAULTS, pipeline/core/faults.py) on the real CLI: a vLLM CPU engine in a Ray worker whose
requests fail (raise, time out, return nothing), and TTS and codec calls that raise. At 10 % the run completes
with every row ok; when retries are exhausted the rows are `failed` with the error, and --retry-failed
completes them: every dialogue exactly once, nothing lost."""
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.core import faults
from tests.conftest import write_dialogue_fixture
from tests.integration.test_cli_dialogues import FIX, ROOT, TINY, _env

pytestmark = pytest.mark.engine
SMALL = ["--limit", 6, "--min-pairs", 2, "--max-pairs", 3, "--max-new-tokens", 24, "--seed", 3, "--workers", 1]


def run(*args, faults_spec: str | None = None, log=None, check=True):
    env = _env()
    env.pop(faults.ENV, None)
    if faults_spec:
        env[faults.ENV] = faults_spec
    if log:
        env[faults.LOG_ENV] = str(log)
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def rows(out, stage):
    return [r for f in sorted(out.glob(f"{stage}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def injected(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_parse_and_off_by_default(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.plan() is None and faults.draw("engine", "x") is None
    p = faults.parse("engine=0.1, tokens=1,kinds=raise/empty,seed=4")
    assert p.rate("engine") == 0.1 and p.rate("tokens") == 1 and p.rate("speech") == 0 and p.kinds == ("raise", "empty")
    for bad, says in [("engine=2", "within 0..1"), ("gpu=0.1", "unknown key"), ("kinds=crash", "kinds are"),
                      ("engine", "no '='")]:
        with pytest.raises(ValueError, match=says):
            faults.parse(bad)
    # which calls fail: a function of the seed, the call and how often it was made; about the asked fraction
    picked = [faults.draw("speech", k, faults.parse("speech=0.1,seed=1")) for k in range(2000)]
    assert 150 < sum(map(bool, picked)) < 250


def test_engine_faults_at_10_percent_are_retried_and_the_run_completes(tmp_path):
    log = tmp_path / "faults.log"
    out = tmp_path / "out"
    p = run("dialogues", "--source", "pixmo", "--instruction", "COMB", "--input", FIX / "pixmo", "--out", out,
            *SMALL, *TINY, faults_spec="engine=0.1,kinds=raise/timeout/empty,timeout_s=0.2,seed=5", log=log)
    kinds = {line.split()[1] for line in injected(log)}
    assert kinds == {"raise", "timeout", "empty"}, injected(log)  # every kind was injected ...
    rs = rows(out, "dialogues")
    assert len(rs) == 6 and len({r["id"] for r in rs}) == 6
    assert [r["error"] for r in rs if r["status"] == "failed"] == []  # ... and retried: none is lost
    assert json.loads(p.stdout.strip().splitlines()[-1])["status"].get("failed") is None


@pytest.mark.full  # minutes (make test-full); the 10 % engine-fault run is the CI size
def test_exhausted_engine_retries_fail_rows_and_retry_failed_completes_them(tmp_path):
    log = tmp_path / "faults.log"
    out = tmp_path / "out"
    run("dialogues", "--source", "pixmo", "--instruction", "COMB", "--input", FIX / "pixmo", "--out", out,
        *SMALL, *TINY, faults_spec="engine=0.7,seed=2", log=log)
    first = rows(out, "dialogues")
    failed = [r for r in first if r["status"] == "failed"]
    assert failed and all("InjectedFault" in r["error"] for r in failed)
    p = run("dialogues", "--source", "pixmo", "--instruction", "COMB", "--input", FIX / "pixmo", "--out", out,
            *SMALL, *TINY, "--retry-failed")
    after = rows(out, "dialogues")
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in first)  # each once, none lost
    assert all(r["status"] != "failed" for r in after), [r["error"] for r in after]
    kept = {r["id"]: r for r in first if r["status"] != "failed"}
    assert all(r == kept[r["id"]] for r in after if r["id"] in kept)  # finished rows are not redone
    assert json.loads(p.stdout.strip().splitlines()[-1])["status"].get("failed") is None


def _tokens_seed(ids) -> int:
    """A fault seed under which a codec fault is injected at 10 % among these dialogues, and every batch
    succeeds by its second try (a fault is decided per dialogue and try: pipeline/faults.picked)."""
    for s in range(10_000):
        p = faults.parse(f"tokens=0.1,seed={s}")
        if any(faults.picked(p, "tokens", i, 1) for i in ids) and not any(faults.picked(p, "tokens", i, 2) for i in ids):
            return s
    raise AssertionError("no seed")


@pytest.mark.full  # minutes (make test-full); the 10 % engine-fault run is the CI size
def test_speech_and_codec_faults(tmp_path):
    """TTS and codec calls that raise: at 10 % retried; at 90 % (or always) exhausted -> failed rows naming
    the fault; --retry-failed completes them, each dialogue once."""
    workers = 0
    dlg = write_dialogue_fixture(tmp_path / "dialogues", ((0, 1), (2,)))
    log = tmp_path / "faults.log"
    speech, tokens = tmp_path / "speech", tmp_path / "tokens"
    common = ["--workers", workers, "--no-progress"]
    run("speech", "--in", dlg, "--out", speech, *common, faults_spec="speech=0.1,seed=3", log=log)
    run("tokens", "--in", speech, "--out", tokens, "--codec", "random", *common, faults_spec=f"tokens=0.1,seed={_tokens_seed(['dlg000', 'dlg001', 'dlg002'])}", log=log)
    assert {"speech raise", "tokens raise"} <= set(injected(log))
    for stage, d in (("speech", speech), ("tokens", tokens)):
        rs = [r for r in rows(d, stage) if r["id"] != "dlg-rejected"]
        assert sorted(r["id"] for r in rs) == ["dlg000", "dlg001", "dlg002"] and {r["status"] for r in rs} == {"ok"}
    # exhausted: failed with the error, then completed by --retry-failed
    speech2, tokens2 = tmp_path / "speech2", tmp_path / "tokens2"
    run("speech", "--in", dlg, "--out", speech2, *common, faults_spec="speech=0.9,seed=3")
    failed = [r for r in rows(speech2, "speech") if r["status"] == "failed"]
    assert failed and all("InjectedFault" in r["error"] for r in failed)
    run("speech", "--in", dlg, "--out", speech2, *common, "--retry-failed")
    rs = rows(speech2, "speech")
    assert sorted(r["id"] for r in rs if r["status"] == "ok") == ["dlg000", "dlg001", "dlg002"]
    assert len({r["id"] for r in rs}) == len(rs)
    run("tokens", "--in", speech2, "--out", tokens2, "--codec", "random", *common, faults_spec="tokens=1")
    assert {r["status"] for r in rows(tokens2, "tokens") if r["id"] != "dlg-rejected"} == {"failed"}
    assert all("InjectedFault" in r["error"] for r in rows(tokens2, "tokens") if r["id"] != "dlg-rejected")
    run("tokens", "--in", speech2, "--out", tokens2, "--codec", "random", *common, "--retry-failed")
    rs = [r for r in rows(tokens2, "tokens") if r["id"] != "dlg-rejected"]
    assert sorted(r["id"] for r in rs) == ["dlg000", "dlg001", "dlg002"] and {r["status"] for r in rs} == {"ok"}
    # the same audio as the speech run without faults: speech is a pure function of (text, voice, seed)
    a = {r["id"]: r["audio_flac"] for r in rows(speech, "speech")}
    assert all(r["audio_flac"] == a[r["id"]] for r in rows(speech2, "speech"))
