"""Shared fixtures: the offline models, and one real vLLM CPU engine per test session."""
import asyncio
import os

import pytest

from tests import suite_classes
from tests.real_corpus import corpus_build, corpus_copy, corpus_dir, web_server  # noqa: F401  (one build per session)

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_mistral():
    from pipeline.dialogue.models import resolve_model

    return resolve_model("builtin:tiny-mistral")


@pytest.fixture(scope="session")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="session")
def tiny_engine(tiny_mistral, loop):
    """A real vLLM AsyncLLM on the CPU with the tiny Mistral (tekken tokenizer), started once."""
    from pipeline.dialogue.engines import EngineOptions, VllmEngine

    async def make():
        return VllmEngine.create(tiny_mistral, EngineOptions(device="cpu", max_model_len=8192, cpu_kvcache_gib=1))

    engine = loop.run_until_complete(make())
    yield engine
    engine.close()


# --- fixture dialogues for the speech and tokens stages (written in the real dialogues shard format) ---
FIXTURE_TURNS = [
    [("user", "Hey, what's going on in this picture?"),
     ("assistant", "A dog is catching a red frisbee in the park."),
     ("user", "How many people are watching?"),
     ("assistant", "There are 3 people on the bench, e.g. a man in a hat.")],
    [("user", "What's written on the sign?"),
     ("assistant", "It says 50% off, open until 9 p.m. on Main St."),
     ("user", "Is it sunny?"),
     ("assistant", "Yes, the sky is clear and bright.")],
    [("user", "Where is the cat?"),
     ("assistant", "The cat sits in the window, next to a plant."),
     ("user", "What color is it?"),
     ("assistant", "It's mostly black, with white paws.")],
]


def write_dialogue_fixture(out_dir, shards=((0, 1), (2,)), rejected_in_first=True):
    """Dialogue shards as `ssvd dialogues` writes them: shard k holds FIXTURE_TURNS[i] for i in shards[k]."""
    from pipeline.core.types import Dialogue, ImageRef, Turn, dialogue_to_row

    all_rows = []
    for k, idxs in enumerate(shards):
        rows = []
        for i in idxs:
            d = Dialogue(id=f"dlg{i:03d}", caption_id=f"cap{i}", source="pixmo", instruction="COMB", seed=1000 + i,
                         turns=[Turn(role, text, "COMB") for role, text in FIXTURE_TURNS[i]],
                         model_user="builtin:tiny-mistral", model_assistant="builtin:tiny-mistral",
                         prompt_version="test", image=ImageRef(url=f"https://example.com/{i}.jpg"), input_shard=k, input_row=i)
            rows.append(dialogue_to_row(d))
        if k == 0 and rejected_in_first:
            d = Dialogue(id="dlg-rejected", caption_id="capx", source="pixmo", instruction="COMB", seed=7,
                         status="rejected", reason="caption:empty", input_shard=k)
            rows.append(dialogue_to_row(d))
        all_rows.append(rows)
    return write_dialogue_shards(out_dir, all_rows)


def write_dialogue_shards(out_dir, shards: list[list[dict]]):
    """Dialogue rows as `ssvd dialogues` writes them: shard k holds shards[k], and a finished run record."""
    from pipeline.core.runstate import RunState
    from pipeline.core.shards import ShardStore
    from pipeline.core.types import DIALOGUE_SCHEMA

    store = ShardStore(out_dir, "dialogues", DIALOGUE_SCHEMA)
    for k, rows in enumerate(shards):
        store.write_part(k, rows)
        store.finalize(k)
    st = RunState(out_dir, "dialogues")
    st.begin({"stage": "dialogues", "fixture": True})
    st.finish({})
    return out_dir


@pytest.fixture(scope="session")
def dialogue_dir(tmp_path_factory):
    return write_dialogue_fixture(tmp_path_factory.mktemp("dialogues"))


# --- speech and token shards of the fixture dialogues, and their moshi-finetune exports (each built once) ---
# The assistant (piper) speaks slowly and without duration noise: every token of its shortest word gets a
# frame of its own (measured: >= 0.089 s per token, frames are 0.08 s), so the text stream drops nothing
# and must hold every token of every word (tests/pipeline/tokens/test_speech_tokens_chain.py).
SLOW_PIPER = (("piper", (("length_scale", 3.0), ("noise_w_scale", 0.0))),)


@pytest.fixture(scope="session")
def speech_dir(dialogue_dir, tmp_path_factory):
    """`ssvd speech` (in-process) of `dialogue_dir`: piper assistant (SLOW_PIPER), espeak users. Do not modify."""
    from pipeline.core.runner import RunOptions
    from pipeline.core.stage_jobs import PoolArgs
    from pipeline.speech.jobs import speech as speech_job
    from pipeline.speech.worker import SpeechSpec

    out = tmp_path_factory.mktemp("speech")
    speech_job(dialogue_dir, out, SpeechSpec(backend_options=SLOW_PIPER), limit=None, pool_args=PoolArgs(workers=0),
               opts=RunOptions(progress=False))
    return out


@pytest.fixture(scope="session")
def tokens_dir(speech_dir, tmp_path_factory):
    """`ssvd tokens --kind speech` (in-process, random codec, stand-in tokenizer) of `speech_dir`. Do not modify."""
    from pipeline.core.runner import RunOptions
    from pipeline.core.stage_jobs import PoolArgs
    from pipeline.tokens.jobs import tokens as tokens_job
    from pipeline.tokens.worker import TokenSpec

    out = tmp_path_factory.mktemp("tokens")
    tokens_job(speech_dir, out, TokenSpec(kind="speech", codec="random"), limit=None, pool_args=PoolArgs(workers=0),
               opts=RunOptions(progress=False))
    return out


@pytest.fixture(scope="session")
def moshi_finetune_exports(speech_dir, tokens_dir, tmp_path_factory):
    """`ssvd export --format moshi-finetune` of `speech_dir` and of `tokens_dir`: {"speech": dir, "tokens": dir}."""
    from pipeline.views.export import export_moshi_finetune

    root = tmp_path_factory.mktemp("moshi-finetune")
    out = {stage: root / stage for stage in ("speech", "tokens")}
    counts = {stage: export_moshi_finetune(src, out[stage], progress=False)
              for stage, src in (("speech", speech_dir), ("tokens", tokens_dir))}
    assert counts == {"speech": 3, "tokens": 3}, counts
    return out


# --- the Kyutai DSM TTS on the CPU: builtin:kyutai-tiny (random weights), built and loaded once ---
@pytest.fixture(scope="session")
def kyutai_tiny():
    from tts.kyutai_tiny import resolve_kyutai_tiny

    return resolve_kyutai_tiny()


@pytest.fixture(scope="session")
def kyutai_backend(kyutai_tiny):
    from tts.kyutai_tiny import TINY_VOICES
    from tts.kyutai_backend import KyutaiBackend

    return KyutaiBackend("builtin:kyutai-tiny", device="cpu", voices=TINY_VOICES)


_quick_patch = None


def pytest_configure(config):
    """`make test-quick` (SSVD_TEST_QUICK=1): a quick test that starts an engine, a cluster, a server or the CLI
    fails and names the marker to add (tests/suite_classes.py)."""
    global _quick_patch
    if suite_classes.QUICK and _quick_patch is None:
        _quick_patch = pytest.MonkeyPatch()
        suite_classes.install_guard(_quick_patch)


def pytest_unconfigure(config):
    if _quick_patch is not None:
        _quick_patch.undo()


def pytest_itemcollected(item):
    """`pytest -n 2 --dist loadgroup`: each expensive session fixture and each heavy module on one worker
    (tests/suite_classes.py). Marked as each test is collected, before xdist's collection hook reads the marks."""
    suite_classes.add_xdist_groups([item])


def pytest_collection_modifyitems(config, items):
    """Tests marked `full` (the full-size fault tests) run with SSVD_TEST_FULL=1 (`make test-full`); `make test`
    (CI, 30 minutes with install on 2 cores) runs their short sizes only. `make test-quick` (SSVD_TEST_QUICK=1)
    keeps only the tests that start nothing heavy (tests/suite_classes.py, docs/testing.md)."""
    if suite_classes.QUICK:
        suite_classes.select_quick(config, items)
    if os.environ.get("SSVD_TEST_FULL") == "1":
        return
    skip = pytest.mark.skip(reason="full size: run with SSVD_TEST_FULL=1 (make test-full)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)
