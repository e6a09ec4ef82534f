"""`ssvd dialogues --engine openai` against a local OpenAI-compatible server that misbehaves on chosen requests
(tests/fake_openai.py): the corpus after transient faults is the fault-free corpus word for word, a lasting
fault is recorded, a key refused mid-run stops the run resumably, `--retry-failed` heals both, faults found
before the run stop it with no row, and the key is in no output."""
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.runstate import ConfigMismatch
from pipeline.dialogue.engine_api import EngineRefused
from tests.fake_openai import TRANSIENT, FakeServer
from tests.integration.test_cli_dialogues import FIX, ROOT, _env, rows
from tests.integration.test_cli_generic_openai import _nowhere

MODEL = "fake/tiny-chat"
KEY = "sk-ssvd-fake-" + secrets.token_hex(12)
LIMIT = 8
LASTING = "well-worn hiking boots"  # in the 4th caption: its dialogue meets a lasting 503


@pytest.fixture(scope="module")
def server():
    with FakeServer(KEY, {MODEL: "/weights/tiny-chat-v1"}, delay_s=1.5) as s:
        yield s


def run(server, out: Path, *extra, key: str = KEY, model: str = MODEL, ok: bool = True, retry_s: float = 3):
    args = ["dialogues", "--source", "pixmo", "--instruction", "NUM", "--input", FIX / "pixmo", "--out", out,
            "--limit", LIMIT, "--min-pairs", 2, "--max-pairs", 3, "--engine", "openai", "--openai-base-url",
            server.url, "--model", model, "--openai-timeout-s", 1, "--openai-retry-s", retry_s, "--no-progress", *extra]
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**_env(), "OPENAI_API_KEY": key})
    assert (p.returncode == 0) == ok, p.stderr[-4000:]
    assert key not in p.stdout and key not in p.stderr
    return p


def words(out: Path, parts: bool = False) -> dict:
    """Each dialogue's outcome and words, by id; `parts`: those of unfinished shards too (the runner's part
    files: what a resume keeps)."""
    found = rows(out) + ([r for p in sorted(out.glob(".parts/*/part-*.parquet")) for r in pq.read_table(p).to_pylist()]
                         if parts else [])
    return {r["id"]: (r["status"], r["reason"], r["note"], [(t["role"], t["text"]) for t in r["turns"]])
            for r in found}


@pytest.fixture(scope="module")
def clean(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    run(server, out)
    w = words(out)
    assert len(w) == LIMIT and {s for s, *_ in w.values()} == {"ok"}
    return out, w


def test_faults_give_the_fault_free_corpus_a_revoked_key_stops_the_run_and_retry_failed_heals(server, clean, tmp_path):
    # 1. every transient kind once, and a lasting 503 for one dialogue
    start = server.chats
    server.by_count.update({start + 2 + 2 * i: kind for i, kind in enumerate(TRANSIENT)})
    server.by_text.append([LASTING, "503json", -1])
    p = run(server, tmp_path, retry_s=10)  # one request may meet several faults in a row: 429s wait 1 s each
    assert not server.by_count, f"faults never met: {server.by_count}"
    got = words(tmp_path)
    failed = {i: r for i, r in got.items() if r[0] == "failed"}
    assert len(failed) == 1, [r["error"] for r in rows(tmp_path)]
    (fid,) = failed
    (err,) = [r["error"] for r in rows(tmp_path) if r["id"] == fid]
    assert err.startswith("EngineError: HTTP 503: ") and "the server is restarting" in err and "--openai-retry-s" in err
    assert {i: r for i, r in got.items() if i != fid} == {i: r for i, r in clean[1].items() if i != fid}
    _nowhere(KEY, p, tmp_path)

    # 2. the key is revoked while the run is going: it stops at once, resumable, every row kept as it was
    server.heal()
    server.revoke_after = server.chats
    p = run(server, tmp_path, "--retry-failed", ok=False)
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: the OpenAI-compatible server at {server.url} refuses its key (HTTP 401"), p.stderr[-3000:]
    assert "Set $OPENAI_API_KEY" in err and "The run stopped" in err and "Traceback" not in p.stderr
    assert server.chats == server.revoke_after + 1  # one refusal, not one per dialogue or per retry
    assert words(tmp_path, parts=True) == got

    # 3. the server healed: --retry-failed gives the fault-free corpus
    server.heal()
    p = run(server, tmp_path, "--retry-failed")
    assert words(tmp_path) == clean[1]
    _nowhere(KEY, p, tmp_path)


def test_a_model_the_server_does_not_list_stops_the_run_before_any_row(server, tmp_path):
    before = server.chats
    p = run(server, tmp_path, model="other/model", ok=False)
    assert f"{server.url}/models does not serve model 'other/model'" in p.stderr and MODEL in p.stderr
    assert "--model" in p.stderr and server.chats == before
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]


def test_an_unreachable_server_or_a_refused_key_stops_the_run_before_any_row(server, tmp_path, monkeypatch):
    from pipeline.core.runner import RunOptions
    from pipeline.dialogue import jobs
    from pipeline.dialogue.engine_api import EngineOptions
    from pipeline.dialogue.protocol import DialogueConfig

    def dialogues(url: str) -> None:
        args = jobs.EngineArgs(MODEL, MODEL, engine=EngineOptions(kind="openai", openai_base_url=url))
        jobs.dialogues("pixmo", "NUM", str(FIX / "pixmo"), tmp_path, limit=2, replicas=1, seed=0, args=args,
                       dcfg=DialogueConfig(min_pairs=2, max_pairs=3), opts=RunOptions(progress=False))

    with FakeServer(None, {}) as gone:
        url = gone.url
    with pytest.raises(EngineRefused, match=f"{url}/models cannot be reached"):
        dialogues(url)
    wrong = "sk-wrong-" + secrets.token_hex(8)
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with pytest.raises(EngineRefused, match=r"refuses its key \(HTTP 401") as e:
        dialogues(server.url)
    assert wrong not in str(e.value)
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]


def test_a_resume_must_be_served_the_same_model_from_any_url(server, clean, monkeypatch):
    from pipeline.core.runner import RunOptions
    from pipeline.dialogue import jobs
    from pipeline.dialogue.engine_api import EngineOptions
    from pipeline.dialogue.protocol import DialogueConfig

    out, words_before = clean
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    record = out / "_dialogues.run.json"
    rec = json.loads(record.read_text())
    assert rec["config"]["models"]["user"]["served"] == {"id": MODEL, "root": "/weights/tiny-chat-v1",
                                                         "max_model_len": 4096}
    assert rec["openai_base_url"] == server.url and "openai_base_url" not in json.dumps(rec["config"])

    def resume(url: str, retry_failed: bool = True):  # --retry-failed: the server is asked even for a finished run
        args = jobs.EngineArgs(MODEL, MODEL, engine=EngineOptions(kind="openai", openai_base_url=url))
        return jobs.dialogues("pixmo", "NUM", str(FIX / "pixmo"), out, limit=LIMIT, replicas=1, seed=0, args=args,
                              dcfg=DialogueConfig(min_pairs=2, max_pairs=3, min_accepted_pairs=2),
                              opts=RunOptions(progress=False, retry_failed=retry_failed))

    with FakeServer(KEY, {MODEL: "/weights/tiny-chat-v2"}) as other:
        with pytest.raises(ConfigMismatch, match="tiny-chat-v1.*now serves '/weights/tiny-chat-v2'"):
            resume(other.url)
    with FakeServer(KEY, {MODEL: "/weights/tiny-chat-v1"}) as replica:
        s = resume(replica.url)
        assert s.items_run == 0 and s.status["ok"] == LIMIT
        rec = json.loads(record.read_text())
        assert rec["openai_base_urls"] == [server.url, replica.url] and rec["openai_base_url"] == replica.url
    # finished, nothing to redo: the server is not asked again (`ssvd run` goes on to speech with it gone)
    assert resume(replica.url, retry_failed=False).status["ok"] == LIMIT
    assert words(out) == words_before
