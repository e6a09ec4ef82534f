"""`ssvd generic`, and the `openai` engine against a real vLLM OpenAI-compatible server."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_cli_dialogues import FIX, ROOT, _env, rows, ssvd

pytestmark = pytest.mark.engine


def test_generic_dialogues_have_topics_and_no_image(tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("baking bread at home\nlearning to swim\n")
    p = ssvd("generic", "--out", tmp_path / "g", "--count", 4, "--topics", topics, "--min-pairs", 2,
             "--max-pairs", 3, "--model", "builtin:tiny-mistral", "--no-progress")
    rs = rows(tmp_path / "g")
    assert len(rs) == 4 and len({r["id"] for r in rs}) == 4
    assert {r["source"] for r in rs} == {"generic"} and {r["instruction"] for r in rs} == {"GENERIC"}
    assert {r["caption"] for r in rs} <= {"baking bread at home", "learning to swim"}
    assert all(r["caption_id"] is None for r in rs)
    assert all(r["forced_start"].startswith("Start the conversation by asking a question about") for r in rs)
    assert json.loads(p.stdout.strip().splitlines()[-1])["shards_written"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A made-up key for the local server (never a real one): the server refuses requests without it.
API_KEY = "sk-ssvd-test-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def openai_server(tiny_mistral):
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_mistral.path,
           "--tokenizer-mode", "mistral", "--enforce-eager", "--max-model-len", "8192",
           "--no-enable-chunked-prefill", "--dtype", "bfloat16", "--host", "127.0.0.1", "--port", str(port),
           "--api-key", API_KEY]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 480  # a loaded 2-core machine takes minutes to start it
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("vLLM server exited early")
            time.sleep(1)
    else:
        os.killpg(proc.pid, 9)
        raise RuntimeError("vLLM server did not start")
    yield url + "/v1", tiny_mistral.path
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)


def _openai_run(base_url, model_path, out, key, limit, pairs, ok=True):
    args = ["dialogues", "--source", "pixmo", "--instruction", "NUM", "--input", FIX / "pixmo", "--out", out,
            "--limit", limit, "--min-pairs", pairs[0], "--max-pairs", pairs[1], "--engine", "openai",
            "--openai-base-url", base_url, "--model", model_path, "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**_env(), "OPENAI_API_KEY": key})
    assert (p.returncode == 0) == ok, p.stderr[-4000:]
    return p


def _nowhere(key: str, p, out: Path) -> None:
    """The key is neither printed nor stored in any output file, nor in the logs of the run's Ray cluster
    (Ray writes its runtime_env, where ssvd forwards variables to the workers, to runtime_env_agent.log)."""
    assert key not in p.stdout and key not in p.stderr
    files = [f for f in out.rglob("*") if f.is_file()]
    assert files and not [f for f in files if key.encode() in f.read_bytes()]
    logs = [f for f in Path("/tmp/ray").glob("session_*/logs/*") if f.is_file()]
    assert logs, "the run's Ray logs were not found"
    assert not [f for f in logs if key.encode() in f.read_bytes()]


def test_openai_engine_runs_dialogues_against_a_server(openai_server, tmp_path):
    base_url, model_path = openai_server
    # the server answers only requests bearing the key, so every answered request carried $OPENAI_API_KEY
    p = _openai_run(base_url, model_path, tmp_path, API_KEY, 3, (2, 3))
    _nowhere(API_KEY, p, tmp_path)
    rs = rows(tmp_path)
    assert len(rs) == 3
    assert {r["status"] for r in rs} <= {"ok", "rejected"}, [r["error"] for r in rs]
    turns = [t for r in rs for t in r["turns"]]
    assert turns and all(t["prompt_tokens"] > 0 and t["completion_tokens"] > 0 for t in turns)
    assert {t["instruction"] for t in turns} == {"NUM"}
    run = json.loads((tmp_path / "_dialogues.run.json").read_text())
    assert run["config"]["models"]["engine"] == "openai"
    # what vLLM's server reports for the model is in the config; its URL is recorded beside it
    assert run["config"]["models"]["user"]["served"] == {"id": model_path, "root": model_path, "max_model_len": 8192}
    assert run["openai_base_url"] == base_url


def test_openai_engine_with_a_wrong_key_stops_before_any_row(openai_server, tmp_path):
    base_url, model_path = openai_server
    wrong = "sk-ssvd-wrong-" + secrets.token_hex(12)
    p = _openai_run(base_url, model_path, tmp_path, wrong, 1, (1, 1), ok=False)
    assert f"error: the OpenAI-compatible server at {base_url}/models refuses its key (HTTP 401" in p.stderr, p.stderr
    assert not rows(tmp_path) and not (tmp_path / "_dialogues.run.json").exists()
    assert wrong not in p.stdout + p.stderr and API_KEY not in p.stdout + p.stderr
