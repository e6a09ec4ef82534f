"""The real CLI on Ray + vLLM CPU: --retry-failed, --overwrite, --separate-engines, and a user and an assistant
on two different models. Three runs into one directory, shared by the tests below:

1. tiny-mistral, --separate-engines, --max-model-len 420: the engine refuses the requests whose prompt is
   longer than its context, so some dialogues are recorded `failed` with the engine's error (a real
   failure, not an injected one; the context length is an engine option, not part of the run's config);
2. the same command with --retry-failed and the model's own context: only the failed dialogues run again;
3. --overwrite with another seed, tiny-mistral asking and SmolLM2 answering: the first run's rows are gone.
"""
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.dialogue.protocol import DialogueConfig, make_plan, role_view
from pipeline.core.types import Turn
from tests.integration.test_cli_dialogues import FIX, rows, ssvd

pytestmark = pytest.mark.engine

# No redraws and no trimming: tiny-mistral's random messages end most dialogues at once (over the token limit),
# so only some of them live long enough to overflow the small context of run 1.
ARGS = ["dialogues", "--source", "pixmo", "--instruction", "NUM", "--input", FIX / "pixmo", "--limit", 8,
        "--min-pairs", 1, "--max-pairs", 2, "--on-length", "reject", "--redraws", 0, "--no-progress"]
TINY, SMOL = "builtin:tiny-mistral", "builtin:smollm2"


def _ready(p):
    return [json.loads(line.split("worker ready: ", 1)[1]) for line in p.stderr.splitlines() if "worker ready: " in line]


def _summary(p):
    """The run's JSON summary: its last stdout line, though with --verbose Ray's worker logs may follow it."""
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{") and '"items_run"' in line:
            return json.loads(line)
    raise AssertionError(f"no summary line in:\n{p.stdout[-2000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("options")
    first = ssvd(*ARGS, "--out", out, "--seed", 7, "--model", TINY, "--max-model-len", 420, "--separate-engines",
                 "--verbose")
    rows1 = rows(out)
    retried = ssvd(*ARGS, "--out", out, "--seed", 7, "--model", TINY, "--retry-failed")
    rows2 = rows(out)
    fresh = ssvd(*ARGS, "--out", out, "--seed", 8, "--user-model", TINY, "--assistant-model", SMOL, "--overwrite",
                 "--on-length", "trim", "--verbose")
    return {"out": out, "first": (first, rows1), "retried": (retried, rows2), "fresh": (fresh, rows(out))}


def test_context_overflow_is_a_failed_row_with_the_engines_error(runs):
    p, rs = runs["first"]
    failed = [r for r in rs if r["status"] == "failed"]
    assert failed and len(failed) < len(rs), [(r["status"], r["error"]) for r in rs]
    for r in failed:
        assert r["error"].startswith("EngineError: VLLMValidationError") and "context length is 420" in r["error"], r["error"]
    assert _summary(p)["status"]["failed"] == len(failed)


def test_retry_failed_reruns_only_the_failed_dialogues(runs):
    _, before = runs["first"]
    p, after = runs["retried"]
    failed = {r["id"] for r in before if r["status"] == "failed"}
    assert _summary(p)["items_run"] == len(failed)  # nothing else was sent to the engine
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in before)  # no row lost or duplicated
    old = {r["id"]: r for r in before}
    for r in after:
        if r["id"] in failed:
            assert r["status"] in ("ok", "rejected") and not r["error"], r["error"]
        else:  # kept as they were, word for word
            assert r == old[r["id"]]
    assert sorted(p.name for p in runs["out"].glob("dialogues-*.parquet")) == ["dialogues-00000.parquet",
                                                                             "dialogues-00001.parquet"]


def test_separate_engines_give_each_role_its_own_engine(runs):
    p, rs = runs["first"]
    (info,) = _ready(p)
    assert info["shared_engine"] is False
    assert info["user"]["model"] == info["assistant"]["model"] == TINY
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:  # the two engines compute on their own halves of the cores
        assert not set(info["user"]["cpu_cores"].split(",")) & set(info["assistant"]["cpu_cores"].split(","))
    assert {(r["model_user"], r["model_assistant"]) for r in rs} == {(TINY, TINY)}


def test_overwrite_discards_the_earlier_run(runs):
    _, before = runs["retried"]
    p, rs = runs["fresh"]
    assert len(rs) == 8 and not {r["id"] for r in rs} & {r["id"] for r in before}
    assert not {r["seed"] for r in rs} & {r["seed"] for r in before}
    assert _summary(p)["items_run"] == 8 and _summary(p)["shards_skipped"] == 0
    run = json.loads((runs["out"] / "_dialogues.run.json").read_text())
    assert run["config"]["seed"] == 8 and run["config"]["models"]["assistant"]["name"] == SMOL
    assert not list(runs["out"].rglob("*.tmp")) and not list((runs["out"] / ".parts").rglob("*.parquet"))


def test_two_models_each_role_answered_by_its_own(runs):
    from transformers import AutoTokenizer

    import prompts
    from pipeline.dialogue.models import resolve_model

    p, rs = runs["fresh"]
    (info,) = _ready(p)
    assert (info["user"]["model"], info["assistant"]["model"], info["shared_engine"]) == (TINY, SMOL, False)
    assert {(r["model_user"], r["model_assistant"]) for r in rs} == {(TINY, SMOL)}
    run = json.loads((runs["out"] / "_dialogues.run.json").read_text())
    models = run["config"]["models"]
    assert models["user"]["fingerprint"] != models["assistant"]["fingerprint"]
    # Each prompt was counted by the tokenizer of the engine that served it: the assistant's prompt is exactly
    # SmolLM2's chat template over the assistant's view, which the tiny model's tekken tokenizer does not give.
    smol = AutoTokenizer.from_pretrained(resolve_model(SMOL).path)
    spoken = [r for r in rs if len(r["turns"]) >= 2]
    assert spoken, [(r["status"], r["reason"], r["error"]) for r in rs]
    cfg = DialogueConfig(min_pairs=1, max_pairs=2)
    for r in spoken:
        plan = make_plan(r["instruction"], r["seed"], cfg)
        system = prompts.render(r["instruction"], "assistant", r["caption"], dict(plan.options)).system
        user_turn = Turn("user", r["turns"][0]["text"], r["instruction"])
        view = role_view("assistant", system, r["forced_start"], [user_turn])
        ids = smol.apply_chat_template(view, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert r["turns"][1]["prompt_tokens"] == len(ids)
        user_view = role_view("user", prompts.render(r["instruction"], "user", r["caption"], dict(plan.options)).system,
                              r["forced_start"], [])
        smol_user = smol.apply_chat_template(user_view, add_generation_prompt=True, tokenize=True)
        smol_user = smol_user["input_ids"] if hasattr(smol_user, "keys") else smol_user
        assert r["turns"][0]["prompt_tokens"] != len(smol_user)  # the user's prompt went through tekken
