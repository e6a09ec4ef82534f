"""The prompt API: captions and topics are data, options, errors, versions, topics."""
from __future__ import annotations

import importlib
import itertools
import random
import re
import shutil
from pathlib import Path

import pytest

import prompts
from prompts.render import PROMPT_VERSION, RolePrompt, instructions, load_topics, render, sample_options

# `prompts.render` is the re-exported function; the module is reached through importlib.
render_mod = importlib.import_module("prompts.render")

IMAGE_INSTRUCTIONS = ("COMB", "LOC", "PROP", "NUM", "TS1", "TS2", "LEAD1", "LEAD2")
ROLES = ("user", "assistant")
CAPTION = "A red bicycle leans against a brick wall. Two pigeons sit on the saddle."


# --- captions and topics are data ------------------------------------------------------------

NASTY = ["{{ 7*7 }}", "{caption}", "{% raw %}", "{% endraw %}", "{ROLE_SPECIFIC_TEXT}", "{# x",
         "a {{ caption }} b {% if true %}c{% endif %} {# d #} }}"]


@pytest.mark.parametrize("nasty", NASTY)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("instruction", IMAGE_INSTRUCTIONS)
def test_template_syntax_in_caption_is_verbatim(instruction, role, nasty):
    plain = render(instruction, role, caption="PLACEHOLDER-CAPTION").system
    got = render(instruction, role, caption=nasty).system
    assert got == plain.replace("PLACEHOLDER-CAPTION", nasty)
    if (instruction, role) == ("COMB", "user"):
        assert nasty not in got and "PLACEHOLDER-CAPTION" not in plain
    else:
        assert nasty in got


@pytest.mark.parametrize("nasty", NASTY)
def test_template_syntax_in_topic_is_verbatim(nasty):
    user = render("GENERIC", "user", topic=nasty)
    assert nasty in user.system and nasty in user.forced_start
    assert nasty in render("GENERIC", "assistant", topic=nasty).system


def test_comb_user_does_not_see_the_caption():
    assert CAPTION not in render("COMB", "user", caption=CAPTION).system
    assert CAPTION in render("COMB", "assistant", caption=CAPTION).system


@pytest.mark.parametrize("instruction", instructions())
def test_assistant_has_no_forced_start_user_has_one(instruction):
    assert render(instruction, "assistant", caption=CAPTION, topic="tea").forced_start is None
    assert render(instruction, "user", caption=CAPTION, topic="tea").forced_start


# --- errors ----------------------------------------------------------------------------------


def test_unknown_instruction_lists_valid_names():
    with pytest.raises(ValueError) as e:
        render("SPATIAL", "user", caption=CAPTION)
    for name in instructions():
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown instruction 'nope'; valid instructions: COMB, LOC"):
        sample_options("nope", random.Random(0))


def test_unknown_role_lists_valid_roles():
    with pytest.raises(ValueError, match="user, assistant"):
        render("LOC", "teacher", caption=CAPTION)


@pytest.mark.parametrize("instruction", IMAGE_INSTRUCTIONS)
@pytest.mark.parametrize("caption", [None, "", "   "])
def test_image_instruction_needs_caption(instruction, caption):
    with pytest.raises(ValueError, match="caption"):
        render(instruction, "user", caption=caption)


def test_generic_needs_topic():
    with pytest.raises(ValueError, match="topic"):
        render("GENERIC", "user", caption=CAPTION)


@pytest.mark.parametrize("options", [{"p_length": 0.1}, {"p_length": "x", "p_style": 0, "p_tone": 0, "p_view": 0},
                                     {"p_length": 1.5, "p_style": 0, "p_tone": 0, "p_view": 0}])
def test_bad_comb_options(options):
    with pytest.raises(ValueError, match="p_"):
        render("COMB", "user", caption=CAPTION, options=options)


# --- options, version, topics ------------------------------------------------------------------


def test_instructions_are_the_eight_plus_generic():
    assert instructions() == IMAGE_INSTRUCTIONS + ("GENERIC",)
    files = sorted(p.stem for p in render_mod.TEMPLATES_DIR.glob("*.j2"))
    assert files == sorted(instructions())


def test_sample_options_deterministic_and_in_paper_order():
    a = sample_options("COMB", random.Random(123))
    assert a == sample_options("COMB", random.Random(123))
    assert a != sample_options("COMB", random.Random(124))
    rng = random.Random(123)
    assert list(a.items()) == [(k, rng.random()) for k in ("p_length", "p_style", "p_tone", "p_view")]
    for name in instructions():
        if name != "COMB":
            assert sample_options(name, random.Random(0)) == {}


def test_comb_without_options_draws_from_seed_zero():
    expected = render("COMB", "user", caption=CAPTION, options=sample_options("COMB", random.Random(0)))
    assert render("COMB", "user", caption=CAPTION) == expected


def test_sampled_comb_forced_starts_vary():
    rng = random.Random(7)
    starts = {render("COMB", "user", caption=CAPTION, options=sample_options("COMB", rng)).forced_start for _ in range(200)}
    assert len(starts) == 24  # 3 lengths x 2 styles x 2 tones x 2 points of view


def test_prompt_version_format_and_sensitivity(tmp_path, monkeypatch):
    assert re.fullmatch(r"appendixF-1\+[0-9a-f]{12}", PROMPT_VERSION)
    assert prompts.PROMPT_VERSION == PROMPT_VERSION
    copy = tmp_path / "templates"
    shutil.copytree(render_mod.TEMPLATES_DIR, copy)
    monkeypatch.setattr(render_mod, "TEMPLATES_DIR", copy)
    assert render_mod._prompt_version() == PROMPT_VERSION
    ts1 = copy / "TS1.j2"
    ts1.write_text(ts1.read_text().replace("anwers", "answers"))
    assert render_mod._prompt_version() != PROMPT_VERSION


def test_load_topics():
    topics = load_topics()
    assert len(topics) >= 90
    assert len(set(topics)) == len(topics)
    assert all(t == t.strip() and t for t in topics)
    assert prompts.load_topics() == topics
    prompt = render("GENERIC", "user", topic=topics[0])
    assert topics[0] in prompt.system and topics[0] in prompt.forced_start
    assert "HELLO" in render("GENERIC", "assistant", topic=topics[0]).system


def test_public_api_reexported():
    for name in ("RolePrompt", "PROMPT_VERSION", "instructions", "sample_options", "render", "load_topics"):
        assert hasattr(prompts, name)
