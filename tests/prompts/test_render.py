"""The rendered prompts say, word for word, what Appendix F of the MoshiVis paper says.

Expected texts are parsed from tests/fixtures/appendix_f.txt (a copy of the paper's Appendix F),
never copied from the templates, so a "corrected" typo in a template fails here.
"""
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
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "appendix_f.txt"
IMAGE_INSTRUCTIONS = ("COMB", "LOC", "PROP", "NUM", "TS1", "TS2", "LEAD1", "LEAD2")
ROLES = ("user", "assistant")
CAPTION = "A red bicycle leans against a brick wall. Two pigeons sit on the saddle."
HEAD_TEMPLATE = "Instruction Template"
HEAD_USER = "Role-speficic text (User):"
HEAD_ASSISTANT = "Role-speficic text (Assistant):"
HEAD_FORCED = "Forced start of the conversation:"
HEADINGS = (HEAD_TEMPLATE, HEAD_USER, HEAD_ASSISTANT, HEAD_FORCED)
LATEX_DEBRIS = re.compile(r"\$\{.*?\}\$|</pre>")
CAPTION_LINE = re.compile(r"^Instruction (\d) ([A-Z0-9]+)\. ", re.MULTILINE)


def norm(text: str) -> str:
    """Whitespace collapsed, PDF/LaTeX debris removed: how the paper side is compared."""
    return " ".join(LATEX_DEBRIS.sub(" ", text).split())


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+", norm(text)) if s]


def parse_appendix() -> dict[str, dict[str, str]]:
    """{instruction: {heading: raw text}}; each box precedes its caption "Instruction N NAME."."""
    text = FIXTURE.read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    start = 0
    for m in CAPTION_LINE.finditer(text):
        parts: dict[str, list[str]] = {}
        current = None
        for line in text[start : m.start()].splitlines():
            if line.strip() in HEADINGS:
                current = line.strip()
                parts[current] = []
            elif current is not None and line.strip() != "```":
                parts[current].append(line)
        out[m.group(2)] = {k: "\n".join(v).strip() for k, v in parts.items()}
        start = m.end()
    return out


PAPER = parse_appendix()


def parse_comb_forced_start() -> dict:
    """COMB's forced start: opening, the quoted choices of the pseudo-code, thresholds, closing."""
    lines = PAPER["COMB"][HEAD_FORCED].splitlines()
    first_code = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#"))
    code = "\n".join(lines[first_code:-1])
    choices = [norm(re.sub(r"\\n\s*$", "", s)) for s in re.findall(r'"(.*?)"', code, re.DOTALL)]
    thresholds = [float(x) for x in re.findall(r"<\s*([0-9.]+)", code)]
    return {
        "opening": norm(" ".join(lines[:first_code])),
        "length": choices[0:3],
        "style": choices[3:5],
        "tone": choices[5:7],
        "view": choices[7:9],
        "n_choices": len(choices),
        "thresholds": thresholds,
        "closing": lines[-1].strip(),
    }


COMB_FS = parse_comb_forced_start()


def expected_comb_forced_start(o: dict) -> str:
    t = COMB_FS["thresholds"]
    length = 0 if o["p_length"] < t[0] else (1 if o["p_length"] < t[1] else 2)
    return "\n".join(
        [
            COMB_FS["opening"],
            COMB_FS["length"][length],
            COMB_FS["style"][0 if o["p_style"] < t[2] else 1],
            COMB_FS["tone"][0 if o["p_tone"] < t[3] else 1],
            COMB_FS["view"][0 if o["p_view"] < t[4] else 1],
            COMB_FS["closing"],
        ]
    )


def paper_system(instruction: str, role: str, caption: str = CAPTION) -> str:
    paper = PAPER[instruction]
    role_text = paper[HEAD_USER if role == "user" else HEAD_ASSISTANT]
    return norm(paper[HEAD_TEMPLATE].replace("{ROLE_SPECIFIC_TEXT}", role_text).replace("{caption}", caption))


# --- the fixture parser itself -------------------------------------------------------------


def test_fixture_parses_into_eight_instructions_with_four_parts():
    assert tuple(PAPER) == IMAGE_INSTRUCTIONS
    for name, parts in PAPER.items():
        assert set(parts) == set(HEADINGS), name
        assert all(parts.values()), name
    assert COMB_FS["n_choices"] == 9
    assert COMB_FS["thresholds"] == [0.5, 0.75, 0.5, 0.75, 0.5]


# --- every sentence of the paper, rendered -----------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("instruction", IMAGE_INSTRUCTIONS)
def test_every_paper_sentence_of_system_prompt_is_rendered(instruction, role):
    rendered = norm(render(instruction, role, caption=CAPTION).system)
    missing = [s for s in sentences(paper_system(instruction, role)) if s not in rendered]
    assert not missing


@pytest.mark.parametrize("instruction", [i for i in IMAGE_INSTRUCTIONS if i != "COMB"])
def test_forced_start_equals_paper(instruction):
    prompt = render(instruction, "user", caption=CAPTION)
    assert prompt.forced_start == norm(PAPER[instruction][HEAD_FORCED])


P_VALUES = (0.0, 0.1, 0.5, 0.6, 0.75, 0.9)


@pytest.mark.parametrize("p_length,p_style,p_tone,p_view", list(itertools.product(P_VALUES, repeat=4)))
def test_comb_forced_start_follows_paper_pseudo_code(p_length, p_style, p_tone, p_view):
    options = {"p_length": p_length, "p_style": p_style, "p_tone": p_tone, "p_view": p_view}
    assert render("COMB", "user", caption=CAPTION, options=options).forced_start == expected_comb_forced_start(options)


def paper_paragraphs(raw: str) -> str:
    """Blank-line separated paragraphs and bullets joined by single newlines; a page break inside a sentence
    (a paragraph ending without punctuation followed by one starting in lower case) is rejoined."""
    paras: list[str] = []
    for block in re.split(r"\n\s*\n", raw):
        for piece in re.split(r"\n(?=- )", block):  # bullets are lines of their own
            piece = norm(piece)
            if paras and piece[:1].islower() and paras[-1][-1:] not in ".!?:;\"'":
                paras[-1] += " " + piece
            elif piece:
                paras.append(piece)
    return "\n".join(paras)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("instruction", [i for i in IMAGE_INSTRUCTIONS if i != "COMB"])
def test_system_prompt_layout_follows_paper(instruction, role):
    """Role texts: one paragraph or bullet per line; templates: the paper's own line layout."""
    paper = PAPER[instruction]
    role_text = paper_paragraphs(paper[HEAD_USER if role == "user" else HEAD_ASSISTANT])
    template = LATEX_DEBRIS.sub("", paper[HEAD_TEMPLATE])
    expected = template.replace("{ROLE_SPECIFIC_TEXT}", role_text).replace("{caption}", CAPTION)
    assert render(instruction, role, caption=CAPTION).system == expected


COMB_USER = (
    "You take part in a casual discussion about an image.\n"
    "You want to learn more about the image you and the other speaker are looking at. "
    "Your aim is to obtain a description of the image."
)
COMB_ASSISTANT = (
    "You take part in a casual discussion about an image.\n"
    "The image is described in detail by the following description:\n" + CAPTION + "\n"
    "You are a friendly and factual conversational assistant. Your task is to give a SHORT SUMMARY what you "
    "see in the image in A FEW sentences . You NEVER SAY HELLO NOR HI"
)


def test_comb_system_prompts_exact():
    assert render("COMB", "user", caption=CAPTION).system == COMB_USER
    assert render("COMB", "assistant", caption=CAPTION).system == COMB_ASSISTANT


# --- exact renderings ------------------------------------------------------------------------

LOC_USER = (
    'Image description:\n"""' + CAPTION + '"""\n'
    "You are engaging in a conversation about an image with another person. Your goal is to ask detailed "
    "questions about everything that is visible in the image, starting from the most salient features (main "
    "objects and their relationships) to finer details (the overall setting, background features, time of "
    "day, season, etc). To guide your questions, you have been secretly provided with a detailed description "
    "of the image (see above); this fact should not be revealed however!\n"
    "You will use this secret description to only ask questions that can be answered based on this description.\n"
    "YOU SHOULD AVOID EASY YES/NO QUESTIONS!You do not ask leading questions that already contain or give a hint "
    "at the answer; i.e., avoid ending your question in 'isn't it'/'does it'/'doesn't it' etc.\n"
    "In your questions, you emphasize the spatial relations / locations of what is in the image. You only ask "
    "about spatial relations explicitly known from the image description. If possible, ask spatial questions "
    "about different aspects of the image."
)

TS1_ASSISTANT = (
    "IMAGE DESCRIPTION START\n" + CAPTION + "\n\nIMAGE DESCRIPTION END\n\n"
    "You are an *external observer* having a casual dialogue about the image described above. You pretend that "
    "you see the image itself, **under no circumstances** mention that you got the information from a "
    "description!!\n\n"
    "You are the strict teacher!! Your anwers should be complete and detailed, but NOT TOO LONG. Do not EVER "
    "mention the description. You are nice but firm and DO NOT HESITATE TO CORRECT THE STUDENT. You never "
    "mention any facts that are not explicitly described about the image!!! NEVER mention the athmosphere of "
    "the image, only its CONTENT\n\n"
    "You sound confident and assertive and most importantly, you always stick to the facts described!!\n\n"
    "Again, DO NOT ADD FACTS, DO NOT MENTION THE DESCRIPTION, DO NOT MENTION THE OTHER SPEAKER'S NAME"
)

COMB_OPENING = (
    "Start the conversation by ASKING A SINGLE question about what can be seen in the IMAGE. "
    "You use DIVERSE YET REALISTIC ways to ask your question;\n"
)
COMB_CLOSING = "\n!ALWAYS ASK A SINGLE QUESION!"


def test_loc_user_exact():
    assert render("LOC", "user", caption=CAPTION) == RolePrompt(
        system=LOC_USER,
        forced_start="Start the conversation by asking a question about the image in any way you want!",
    )


def test_ts1_assistant_exact():
    assert render("TS1", "assistant", caption=CAPTION) == RolePrompt(system=TS1_ASSISTANT, forced_start=None)


def test_ts2_has_no_blank_line_before_end_and_lead2_caption_on_start_line():
    ts2 = render("TS2", "user", caption=CAPTION).system
    assert ts2.startswith("IMAGE DESCRIPTION START\n" + CAPTION + "\nIMAGE DESCRIPTION END\n\n")
    lead2 = render("LEAD2", "user", caption=CAPTION).system
    assert lead2.startswith("IMAGE DESCRIPTION START " + CAPTION + "\nIMAGE DESCRIPTION END\n\n")


COMB_LOW = ["VERY IMPORTANT: your question should be LESS THAN 8 words",
            "You ask the question in a direct style; For instance: 'What do YOU see in the image ?'",
            "You speak in a confident assertive tone.", "You ask what the user SEE in the image."]
COMB_HIGH = ["VERY IMPORTANT: your question should be LESS THAN 26 words",
             "You ask the question from your own point of view; For instance: 'What am I looking at ?'",
             "You speak in a hesitant, hard to follow, manner.", "You ask what's visible in the image"]


@pytest.mark.parametrize("p,lines", [(0.1, COMB_LOW), (0.9, COMB_HIGH)])
def test_comb_forced_start_exact(p, lines):
    options = dict.fromkeys(("p_length", "p_style", "p_tone", "p_view"), p)
    expected = COMB_OPENING + "\n".join(lines) + COMB_CLOSING
    assert render("COMB", "user", caption=CAPTION, options=options).forced_start == expected


def test_comb_forced_start_elif_branch():
    options = {"p_length": 0.6, "p_style": 0.1, "p_tone": 0.8, "p_view": 0.7}
    expected = (
        COMB_OPENING + "VERY IMPORTANT: your question should be LESS THAN 14 words\n"
        "You ask the question in a direct style; For instance: 'What do YOU see in the image ?'\n"
        "You speak in a hesitant, hard to follow, manner.\n"
        "You ask what's visible in the image" + COMB_CLOSING
    )
    assert render("COMB", "user", caption=CAPTION, options=options).forced_start == expected


# --- the paper's typos are kept --------------------------------------------------------------

TYPOS = [  # (instruction, role, text as misspelt in the paper)
    *[(i, "assistant", "Your anwers should") for i in ("TS1", "TS2")],
    *[(i, "assistant", "NEVER mention the athmosphere of the image") for i in ("TS1", "TS2")],
    *[(i, "user", "QUESTIONS!You do not") for i in ("LOC", "PROP", "NUM", "LEAD1")],
    ("LEAD2", "assistant", "mentioning an obejct from the image"),
    ("LEAD1", "assistant", "the other speaker means.also MAKE SURE"),
    ("NUM", "user", 'different objects categories in the image"'),
    ("COMB", "assistant", "in A FEW sentences . You NEVER SAY HELLO NOR HI"),
    ("PROP", "user", "the COLOR of object, their SHAPE"),
    ("TS2", "user", "Your questions should also details about"),
]


@pytest.mark.parametrize("instruction,role,typo", TYPOS)
def test_paper_typos_are_kept(instruction, role, typo):
    assert typo in render(instruction, role, caption=CAPTION).system


def test_comb_forced_start_typos_are_kept():
    fs = render("COMB", "user", caption=CAPTION, options=dict.fromkeys(("p_length", "p_style", "p_tone", "p_view"), 0.1))
    assert fs.forced_start.endswith("!ALWAYS ASK A SINGLE QUESION!")
    assert "You ask what the user SEE in the image." in fs.forced_start


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("instruction", instructions())
def test_no_headings_or_debris_in_output(instruction, role):
    p = render(instruction, role, caption=CAPTION, topic="tea")
    for text in (p.system, p.forced_start or ""):
        for bad in ("Role-speficic", "Instruction Template", "</pre>", "\\hspace", "${", "{caption}",
                    "{ROLE_SPECIFIC_TEXT}", "random.random", "\\n", "# "):
            assert bad not in text
        assert text == text.strip()
        assert "  " not in text and " \n" not in text and "\n " not in text
