"""Text normalisation: every written word kept, its spoken form plain words; span assembly."""
from __future__ import annotations

import re

import pytest

from tts.normalize import MIN_SPAN_S, assemble_spans, clause_mark, normalize_words
from tts.number_words import number_to_words, ordinal_to_words, year_to_words

PLAIN = re.compile(r"^([^\W\d_]+('[^\W\d_]+)*( [^\W\d_]+('[^\W\d_]+)*)*)?$")


def spoken(text: str) -> list[str]:
    return [s for _, s in normalize_words(text)]


def one(word: str) -> str:
    (pair,) = normalize_words(word)
    return pair[1]


@pytest.mark.parametrize(
    "written, expected",
    [
        ("3", "three"),
        ("0", "zero"),
        ("13", "thirteen"),
        ("42", "forty two"),
        ("1,200", "one thousand two hundred"),
        ("1,000,000", "one million"),
        ("3.5", "three point five"),
        ("0.25", "zero point two five"),
        ("-5", "minus five"),
        ("007", "zero zero seven"),
        ("1st", "first"),
        ("2nd", "second"),
        ("3rd", "third"),
        ("12th", "twelfth"),
        ("21st", "twenty first"),
        ("100th", "one hundredth"),
        ("1990s", "nineteen nineties"),
        ("'80s", "eighties"),
        ("1990", "nineteen ninety"),
        ("2024", "twenty twenty four"),
        ("2005", "two thousand five"),
        ("50%", "fifty percent"),
        ("3.5%", "three point five percent"),
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$5.50", "five dollars and fifty cents"),
        ("$0.99", "ninety nine cents"),
        ("$1.5M", "one point five million dollars"),
        ("€20", "twenty euros"),
        ("3:30", "three thirty"),
        ("3:05pm", "three oh five p m"),
        ("5km", "five kilometers"),
        ("25°C", "twenty five degrees Celsius"),
        ("1/2", "one half"),
        ("10-20", "ten to twenty"),
        ("COVID-19", "COVID nineteen"),
    ],
)
def test_numbers(written, expected):
    assert one(written) == expected


def test_number_words():
    assert number_to_words(101) == "one hundred one"
    assert number_to_words(1001) == "one thousand one"
    assert number_to_words(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"
    assert number_to_words(2_000_000_017) == "two billion seventeen"
    assert ordinal_to_words(40) == "fortieth"
    assert year_to_words(1905) == "nineteen oh five" and year_to_words(1900) == "nineteen hundred"


def test_currency_scale_word_takes_the_unit():
    assert normalize_words("$2 million") == [("$2", "two"), ("million", "million dollars")]


def test_context_words():
    assert spoken("5 km and 1 km") == ["five", "kilometers", "and", "one", "kilometer"]
    assert spoken("St. Louis is on Main St.") == ["saint", "Louis", "is", "on", "Main", "street"]
    assert spoken("No. 7, no.") == ["number", "seven", "no"]


@pytest.mark.parametrize(
    "written, expected",
    [
        ("Dr.", "doctor"),
        ("Mr.", "mister"),
        ("Mrs.", "missus"),
        ("e.g.", "for example"),
        ("e.g.,", "for example"),
        ("i.e.", "that is"),
        ("etc.", "et cetera"),
        ("vs.", "versus"),
        ("U.S.", "U S"),
        ("&", "and"),
        ("+", "plus"),
        ("=", "equals"),
        ("@", "at"),
        ("%", "percent"),
        ("A&B", "A and B"),
        ("and/or", "and or"),
        ("#1", "number one"),
    ],
)
def test_abbreviations_and_symbols(written, expected):
    assert one(written) == expected


def test_punctuation_is_stripped_from_the_spoken_form_only():
    pairs = normalize_words('"Hello," she said (quietly). It\'s well-known — isn\'t it?!')
    assert pairs == [
        ('"Hello,"', "Hello"),
        ("she", "she"),
        ("said", "said"),
        ("(quietly).", "quietly"),
        ("It's", "It's"),
        ("well-known", "well known"),
        ("—", ""),
        ("isn't", "isn't"),
        ("it?!", "it"),
    ]


@pytest.mark.parametrize("word", ["—", "–", "-", "...", "…", "?", "*", "😀", "|"])
def test_punctuation_only_words_are_silent_and_stand_for_a_pause(word):
    assert normalize_words(f"wait {word} now") == [("wait", "wait"), (word, ""), ("now", "now")]
    assert clause_mark(word) in {",", "?"}


def test_clause_marks():
    assert [clause_mark(w) for w in ["world,", "it?!", "end.", "Dr.", "e.g.,", "so;", "wait...", "plain"]] == [
        ",", "?", ".", "", ",", ";", ",", "",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith paid $5, then $2 million — about 1,200 people (3.5%) in the 1990s... e.g. 1st & 2nd.",
        "  spaces   and\ttabs\nnewlines  ",
        "The café's naïve résumé costs €3.50 at 10am; 24/7, 4K, MP3, x86, 3x, #hashtag @user ~5 °",
        "... — ?! ** 😀",
        "",
    ],
)
def test_every_written_word_is_kept_and_spoken_forms_are_plain(text):
    pairs = normalize_words(text)
    assert [w for w, _ in pairs] == text.split()
    for w, s in pairs:
        assert PLAIN.match(s), (w, s)
        assert not any(c.isdigit() for c in s)


def test_assemble_spans_silent_word_in_a_pause_gets_the_pause():
    spans = assemble_spans(["a", "—", "b"], [(0.1, 0.4), None, (0.6, 0.9)], 1.0)
    assert [(s.start_s, s.end_s) for s in spans] == [(0.1, 0.4), (0.4, 0.6), (0.6, 0.9)]


def test_assemble_spans_silent_word_without_pause_is_attached_to_the_previous_word():
    spans = assemble_spans(["a", "—", "—", "b"], [(0.1, 0.4), None, None, (0.4, 0.9)], 1.0)
    assert (spans[1].start_s, spans[1].end_s) == pytest.approx((0.4 - MIN_SPAN_S, 0.4))
    assert (spans[2].start_s, spans[2].end_s) == (spans[1].start_s, spans[1].end_s)
    assert spans[3].start_s == 0.4


def test_assemble_spans_edges():
    first = assemble_spans(["—", "b"], [None, (0.0, 0.5)], 0.6)
    assert first[0].start_s == 0.0 and first[0].end_s == pytest.approx(MIN_SPAN_S)
    last = assemble_spans(["a", "..."], [(0.0, 0.5), None], 0.8)
    assert (last[1].start_s, last[1].end_s) == (0.5, 0.8)
    alone = assemble_spans(["..."], [None], 0.2)
    assert (alone[0].start_s, alone[0].end_s) == (0.0, 0.2)
    clamped = assemble_spans(["a", "b"], [(0.2, 0.2), (0.1, 0.3)], 0.25)
    assert all(s.start_s < s.end_s <= 0.25 for s in clamped) and clamped[1].start_s >= clamped[0].start_s
    with pytest.raises(ValueError, match="1 words but 0 measured spans"):
        assemble_spans(["a"], [], 1.0)
