"""Cleanup rules and rejection reasons of pipeline/dialogue/filters.py."""
from __future__ import annotations

import pytest

from pipeline.dialogue.filters import (
    CAPTION_LEAK,
    EMPTY_MESSAGE,
    OVER_TOKEN_LIMIT,
    REPEATED_MESSAGE,
    TOO_FEW_PAIRS,
    FilterConfig,
    check_dialogue,
    check_message,
    clean_message,
    load_rules,
    normalise,
)

CFG = FilterConfig()


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("User: What is on the table?", "What is on the table?"),
        ("Assistant: There is a red vase.", "There is a red vase."),
        ("**User:** What color is the car?", "What color is the car?"),
        ("**Assistant**: It is blue.", "It is blue."),
        ("Student: Teacher: Is there a dog?", "Is there a dog?"),
        ("Speaker 1: Hello there.", "Hello there."),
        ("Question: How many birds are there?", "How many birds are there?"),
        ("Answer: Three birds.", "Three birds."),
        ("Teacher: Answer: Two cups.", "Two cups."),
        ('"What is in the image?"', "What is in the image?"),
        ("“A small boat on a lake.”", "A small boat on a lake."),
        ('Assistant: "The sky is grey."', "The sky is grey."),
        ('"User: where is the cat?"', "Where is the cat?"),
        ("  The cat\n\nis   sleeping.\t ", "The cat is sleeping."),
        ("The cat\nis\tsleeping.", "The cat is sleeping."),
        ("The cat is *very* **big** and ***fluffy***.", "The cat is very big and fluffy."),
        ("According to the description, the wall is white.", "The wall is white."),
        ("The wall, according to the description, is white.", "The wall is white."),
        ("The wall is white, based on the image description.", "The wall is white."),
        ("It is mentioned in the description.", "It is mentioned in the image."),
        ("In the description there is a tree.", "In the image there is a tree."),
        ("The description shows two chairs.", "The image shows two chairs."),
        ("I think the description mentions a lamp.", "I think the image mentions a lamp."),
        ('He said "hi" and "bye".', 'He said "hi" and "bye".'),
        ("Is the user happy?", "Is the user happy?"),
        ("The teacher: a tall man, stands there.", "The teacher: a tall man, stands there."),
    ],
)
def test_clean_message(raw, clean):
    assert clean_message(raw) == clean


@pytest.mark.parametrize(
    "raw",
    ['""User: hi""', "Answer: User: Question: ok", "**Teacher:** *\"according to the description, yes\"*"],
)
def test_clean_message_is_idempotent(raw):
    once = clean_message(raw)
    assert clean_message(once) == once
    assert "User" not in once and "Answer" not in once and "*" not in once


def test_rules_file_loads_in_order_and_is_cached():
    rules = load_rules()
    names = [r.name for r in rules]
    assert len(rules) >= 8
    assert names.index("role_label") < names.index("wrapping_quotes")
    assert names.index("collapse_whitespace") == 0
    assert load_rules() is rules


def test_custom_rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: shout\n    pattern: 'cat'\n    replace: 'dog'\n    flags: [IGNORECASE]\n")
    rules = load_rules(str(path))
    assert clean_message("a CAT", rules=rules) == "A dog"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    pattern: '('\n")
    with pytest.raises(ValueError, match="bad.yaml.*rule 0"):
        load_rules(str(bad))
    bad.write_text("rules:\n  - name: x\n    pattern: 'a'\n    flags: [LOUD]\n")
    with pytest.raises(ValueError, match="unknown flag"):
        load_rules(str(bad) + "")


def check(text, role="assistant", finish_reason="stop", completion_tokens=20, previous=(), cfg=CFG):
    return check_message(text, role, finish_reason, completion_tokens, list(previous), cfg)


def test_clean_message_passes():
    assert check("There are two red apples on the wooden table.") is None
    assert check("User: Where is the lamp?", role="user", previous=["What color is the sofa?"]) is None


@pytest.mark.parametrize("text", ["", "   \n ", "User:", '""', "**  **", "Answer: "])
def test_empty_message(text):
    assert check(text) == EMPTY_MESSAGE


def test_over_token_limit():
    assert check("A long answer that was cut", finish_reason="length") == OVER_TOKEN_LIMIT
    assert check("A long answer", completion_tokens=150) == OVER_TOKEN_LIMIT
    assert check("A long answer", completion_tokens=149) is None
    assert check("A long answer", completion_tokens=60, cfg=FilterConfig(max_new_tokens=50)) == OVER_TOKEN_LIMIT


def test_repeated_message():
    previous = ["What is on the table?", "Where is the dog?"]
    assert check("what is on the table", role="user", previous=previous) == REPEATED_MESSAGE
    assert check("User: What  is on the TABLE?!", role="user", previous=previous) == REPEATED_MESSAGE
    assert check("What is under the table?", role="user", previous=previous) is None
    assert normalise("Hello, World!") == normalise("hello world") == "helloworld"


@pytest.mark.parametrize(
    "text",
    [
        "I was told there is a cat.",
        "Based on what I read, it is red.",
        "The caption says it is a beach.",
        "This description mentions a dog.",
        "My description says there are three cups.",
        "I was given a description of the scene.",
        "From my secret description, I know the answer.",
    ],
)
def test_caption_leak(text):
    assert check(text) == CAPTION_LEAK


def test_repaired_mentions_are_not_leaks():
    # cleanup rewrites these before the leak check sees them
    assert check("According to the description, the cat is black.") is None
    assert check("The description shows a bridge.") is None
    assert check("Could you give me a description of what you see?", role="user") is None


def test_custom_leak_patterns():
    cfg = FilterConfig(leak_patterns=(r"\bbanana\b",))
    assert check("A BANANA on the desk.", cfg=cfg) == CAPTION_LEAK
    assert check("I was told so.", cfg=cfg) is None


def test_reason_order_and_role_validation():
    assert check("", finish_reason="length") == EMPTY_MESSAGE
    assert check("Same.", finish_reason="length", previous=["Same."]) == OVER_TOKEN_LIMIT
    assert check("The caption.", previous=["the caption"]) == REPEATED_MESSAGE
    with pytest.raises(ValueError, match="role"):
        check("Hi", role="narrator")


def test_check_dialogue():
    assert check_dialogue(7, CFG) == TOO_FEW_PAIRS
    assert check_dialogue(8, CFG) is None
    assert check_dialogue(16, CFG) is None
    assert check_dialogue(2, FilterConfig(min_pairs=1)) is None
