"""Caption clean-up (pipeline/sources/caption_text.py): meta sentences, shortening at a sentence, boilerplate openings."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.sources.caption_text import (
    collapse_whitespace,
    sentence_ends,
    shorten,
    strip_boilerplate,
    trim_meta_sentences,
)
from tests.pipeline.sources.test_captions import FIX, load


@pytest.mark.parametrize("raw, expected", [
    ("A dog. It runs. The image is blurry. More text.", "A dog. It runs."),
    ("A dog. The image is blurry. It runs.", "A dog. The image is blurry. It runs."),  # first two stay
    ("A dog. It runs. A cat. The font is bold. The end.", "A dog. It runs. A cat."),
    ("A dog. It runs. This is a photograph of a dog.", "A dog. It runs."),
    ("A dog. It runs. the image is lower case.", "A dog. It runs. the image is lower case."),
    ("Dr. Who waves. It runs. The text is in red.", "Dr. Who waves. It runs."),
    ("One sentence only.", "One sentence only."),
])
def test_trim_meta_sentences(raw, expected):
    assert trim_meta_sentences(raw) == expected


# ------------------------------------------------------------------ text normalisation
def test_long_fixture_captions_are_shortened_at_a_sentence_boundary():
    for source, file, row in [("pixmo", "pixmo/extra.jsonl", 5),
                              ("docci", "docci_mirror/train-00000-of-00001.parquet", 11),
                              ("pixelprose", "pixelprose/train-00000-of-00001.parquet", 15)]:
        _, (rows,) = load(source, FIX / file)
        text = rows[row].text
        if file.endswith(".parquet"):
            raw = pq.read_table(FIX / file).to_pylist()[row]
        else:
            raw = [json.loads(x) for x in (FIX / file).read_text().splitlines()][row]
        full = collapse_whitespace(raw["caption" if source == "pixmo" else
                                       "description" if source == "docci" else "vlm_caption"])
        if source == "pixelprose":
            full = trim_meta_sentences(strip_boilerplate(full))
        assert len(full) > 1000 and 800 < len(text) <= 1000
        assert full.startswith(text) and text.endswith(".")
        assert full[len(text)] == " "  # the next sentence starts after the cut
        assert len(text) in sentence_ends(full)
        # the longest prefix of whole sentences that fits
        assert not [e for e in sentence_ends(full) if len(text) < e <= 1000]


def test_shorten_rules():
    sentences = ["The quick brown fox jumps over the lazy dog near the river bank."] * 30
    text = " ".join(sentences)
    out = shorten(text, 1000)
    assert len(out) <= 1000 and out.endswith("dog near the river bank.")
    assert len(out) == 15 * 65 - 1  # 15 whole sentences of 64 chars + spaces
    assert shorten("Short caption. Fits.", 1000) == "Short caption. Fits."
    # first sentence alone too long: cut at the last word boundary and end with "."
    long_first = "A very long winding sentence " + "with many more words, " * 60 + "ending here. Next."
    cut = shorten(long_first, 1000)
    assert len(cut) <= 1000 and cut.endswith(".") and not cut.endswith(",.")
    assert long_first.startswith(cut[:-1].rstrip(",")) and long_first[len(cut[:-1].rstrip(","))] in " ,"
    assert shorten("word " * 10 + "extraordinarily", 20) == "word word word word."
    # abbreviations and initials do not end sentences; closing quotes stay with theirs
    text = 'Dr. Smith and J. R. Doe stand by St. Mary\'s. A sign says "Open." ' + "Tail words. " * 200
    assert sentence_ends(text)[:2] == [text.index("Mary's.") + 7, text.index('"Open."') + 7]
    assert shorten(text, 70) == 'Dr. Smith and J. R. Doe stand by St. Mary\'s. A sign says "Open."'


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("This image displays: a red barn in a field.", "A red barn in a field."),
        ("THIS IMAGE SHOWS two dogs playing.", "Two dogs playing."),
        ("The image depicts a quiet street.", "A quiet street."),
        ("In this image, we see a lake at dawn.", "We see a lake at dawn."),
        ("This is an image of a bowl of soup.", "A bowl of soup."),
        ("This image displays:\n\n  In this image, a kite.", "A kite."),
        ("The imagery here is dark and moody.", "The imagery here is dark and moody."),
        ("A dog. This image shows a cat.", "A dog. This image shows a cat."),
    ],
)
def test_boilerplate_openings_are_stripped(raw, expected):
    assert strip_boilerplate(collapse_whitespace(raw)) == expected
