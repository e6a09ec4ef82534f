"""The openai engine against a local OpenAI-compatible server that misbehaves on chosen requests
(tests/fake_openai.py): transient faults are retried to the same answer, faults no retry fixes stop at once."""
import asyncio
import random
import secrets
import socket
import time

import pytest

from pipeline.core.types import Caption, ImageRef, WorkItem
from pipeline.dialogue.engine_api import EngineError, EngineOptions, EngineRefused, Sampling
from pipeline.dialogue.models import resolve_model
from pipeline.dialogue.openai_engine import OpenAIEngine, RetryPolicy, check_server, retry_after_s, shown_url
from pipeline.dialogue.protocol import DialogueConfig, generate_dialogue
from tests.fake_openai import FATAL, TRANSIENT, FakeServer

pytestmark = pytest.mark.server  # starts the fault-injecting OpenAI server (make test-quick leaves it out)

MODEL = "fake/tiny-chat"
KEY = "sk-ssvd-fake-" + secrets.token_hex(12)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeServer(KEY, {MODEL: "/weights/tiny-chat-v1"}, delay_s=1.5) as s:
        yield s


def engine(url: str, retry_s: float = 20.0, timeout_s: float = 1.0) -> OpenAIEngine:
    opts = EngineOptions(kind="openai", openai_base_url=url, openai_timeout_s=timeout_s, openai_retry_s=retry_s)
    return OpenAIEngine.create(resolve_model(MODEL, check_hub=False), opts)


def msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_every_transient_fault_is_retried_to_the_answer_a_fault_free_server_gives(server):
    eng = engine(server.url)

    async def ask_all():
        return await asyncio.gather(*(eng.chat(msgs(f"question {k}"), Sampling(seed=7 + i))
                                      for i, k in enumerate(TRANSIENT)))

    async def twice():
        clean = await ask_all()
        for k in TRANSIENT:  # each kind once, on the first try of its own request
            server.by_text.append([f"question {k}", k, 1])
        t = time.monotonic()
        return clean, await ask_all(), time.monotonic() - t

    clean, faulted, took = asyncio.run(twice())
    assert sorted(server.faulted) == sorted(TRANSIENT)
    assert [c.text for c in faulted] == [c.text for c in clean]
    assert faulted == clean  # tokens and finish reasons too
    for k in TRANSIENT:  # every try sent the same body: the same sampling seed
        sent = [b for b in server.bodies if b["messages"][-1]["content"] == f"question {k}"]
        assert len(sent) == 3 and all(b == sent[0] for b in sent), k
    assert took >= 1.0  # the 429s asked for 1 s (Retry-After)


def test_a_lasting_fault_gives_up_after_the_budget_with_the_status_and_the_servers_message(server):
    server.lasting = "503json"
    t = time.monotonic()
    with pytest.raises(EngineError) as e:
        asyncio.run(engine(server.url, retry_s=2.0).chat(msgs("hello"), Sampling(seed=1)))
    took = time.monotonic() - t
    assert "HTTP 503: " in str(e.value) and "the server is restarting" in str(e.value), e.value
    assert "retry budget of 2 s" in str(e.value) and server.chats >= 2
    assert took < 2.5


def test_retry_after_is_waited_in_both_forms(server):
    assert retry_after_s("3") == 3.0 and retry_after_s("0.5") == 0.5 and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2026 07:28:10 GMT", now=1792567680.0) == 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once
    for kind in ("429", "429date"):
        server.by_text.append(["patience", kind, 1])
        t = time.monotonic()
        asyncio.run(engine(server.url).chat(msgs("patience"), Sampling(seed=3)))
        assert time.monotonic() - t >= (0.95 if kind == "429" else 0.0), kind
    # a server asking for more than the budget left: given up at once, not slept through
    server.by_text.append(["patience", "429", 1])
    with pytest.raises(EngineError, match="HTTP 429"):
        asyncio.run(engine(server.url, retry_s=0.5).chat(msgs("patience"), Sampling(seed=3)))


def test_backoff_is_exponential_with_full_jitter_and_reproducible():
    p = RetryPolicy(budget_s=600, base_s=1.0, cap_s=60.0)
    a = [p.wait_s(k, random.Random(5), None) for k in range(10)]
    assert a == [p.wait_s(k, random.Random(5), None) for k in range(10)]
    assert all(0 <= w <= min(60, 2 ** k) for k, w in enumerate(a))
    draws = [p.wait_s(8, random.Random(s), None) for s in range(200)]
    assert max(draws) <= 60 and max(draws) > 45 and min(draws) < 15  # the whole range, capped at 60 s
    assert p.wait_s(0, random.Random(5), 7.0) == 7.0  # Retry-After wins


@pytest.mark.parametrize("kind", FATAL)
def test_a_fault_no_retry_fixes_stops_at_once_naming_the_fix(server, kind):
    server.lasting = kind
    with pytest.raises(EngineRefused) as e:
        asyncio.run(engine(server.url).chat(msgs("hello"), Sampling(seed=1)))
    assert server.chats == 1  # not tried again
    text = str(e.value)
    assert server.url in text and f"HTTP {kind}" in text and "run the same command again" in text, text
    assert KEY not in text  # the fake server echoes the key in its refusal
    fix = "OPENAI_API_KEY" if kind in ("401", "403") else "--openai-base-url"
    assert fix in text


def test_a_dialogue_lets_a_refusal_through(server):
    server.revoke_after = 3
    cap = Caption("c1", "pixmo", "A red kite above a beach.", ImageRef(url="http://example.com/k.jpg"))
    it = WorkItem(id="d0", source="pixmo", instruction="NUM", seed=11, replica=0, input_shard=0, input_row=0,
                  caption=cap)
    eng = engine(server.url)
    with pytest.raises(EngineRefused, match="HTTP 401"):
        asyncio.run(generate_dialogue(it, {"user": eng, "assistant": eng}, DialogueConfig(min_pairs=2, max_pairs=3)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_server_reports_the_model_and_refuses_what_cannot_work(server, monkeypatch):
    opts = EngineOptions(kind="openai", openai_base_url=server.url)
    assert check_server(opts, [MODEL]) == {MODEL: {"id": MODEL, "root": "/weights/tiny-chat-v1", "max_model_len": 4096}}
    with pytest.raises(EngineRefused, match=r"does not serve model 'other/model' .*fake/tiny-chat.*--model"):
        check_server(opts, [MODEL, "other/model"])
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(EngineRefused, match=f"{url}/models cannot be reached .*ConnectError.*--openai-base-url"):
        check_server(EngineOptions(kind="openai", openai_base_url=url), [MODEL])
    server.models_fault = "403"
    with pytest.raises(EngineRefused, match="HTTP 403.*Set \\$OPENAI_API_KEY"):
        check_server(opts, [MODEL])
    server.models_fault = None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-" + KEY[::-1])
    with pytest.raises(EngineRefused) as e:
        check_server(opts, [MODEL])
    assert "HTTP 401" in str(e.value) and KEY[::-1] not in str(e.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(EngineRefused, match=r"refuses no key \(\$OPENAI_API_KEY is not set\)"):
        check_server(opts, [MODEL])
    assert server.chats == 0


def test_urls_are_shown_without_credentials():
    assert shown_url("http://me:pw@host:8000/v1/") == "http://host:8000/v1"
