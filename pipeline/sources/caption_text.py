"""Caption text normalisation: whitespace, PixelProse boilerplate openings and meta sentences, shortening.

Pure functions of their input. Template syntax (`{{ ... }}`, `{caption}`, `{% raw %}`) is text
like any other: nothing here interprets or escapes it. Control characters (NUL, escape sequences' ESC,
BEL, the C1 range) are not text: they become spaces, like whitespace. Every function is linear in the
length of its input, so a 5 MB caption costs milliseconds, not minutes.
"""
from __future__ import annotations

import re

# Openings PixelProse's VLM puts before almost every caption ("This image displays: ...").
_BOILERPLATE = re.compile(
    r"""^(?:
        (?:this|it)\s+is\s+an?\s+(?:image|picture|photo(?:graph)?|screenshot)\s+
            (?:of|showing|depicting|that\s+shows)\b
      | in\s+(?:this|the)\s+(?:image|picture|photo(?:graph)?|screenshot)\b
      | (?:this|the)\s+(?:image|picture|photo(?:graph)?|screenshot)\s+
            (?:displays|shows|depicts|features|captures|presents|portrays|illustrates
               |showcases|contains|is\s+of)\b
    )\s*[:,;\-\u2013\u2014]?\s*""",
    re.IGNORECASE | re.VERBOSE,
)

# A sentence ends with . ! ? or an ellipsis, possibly followed by closing quotes/brackets,
# then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"(?:[.!?]+|\u2026)[\"'\u201d\u2019)\]]*(?=\s|$)")
# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof mt vs etc e.g i.e approx no fig ft lt col gen sgt".split()
)
_TRAILING_JUNK = " ,;:\u2013\u2014-"
# C0 and C1 control characters and DEL (tab, newline and carriage return are whitespace anyway).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Openings of the sentences about the picture itself (style, font, background) that PixelProse's VLM
# appends to its captions; Kyutai's released generator cuts a caption at the first one after the
# second sentence (ssvd/utils.py of kyutai-labs/moshivis, PIXELPROSE_TRIM_CANDIDATES).
META_OPENINGS: tuple[str, ...] = (
    "The image is", "This image is", "The background is", "The text is in", "The font is",
    "The style of the image is", "This is a photograph",
)


def collapse_whitespace(text: str) -> str:
    """Strip and turn every run of whitespace (newlines, tabs, NBSP...) and control characters into one space."""
    return " ".join(_CONTROL.sub(" ", text).split())


def strip_boilerplate(text: str) -> str:
    """Remove openings such as "This image displays:" and capitalise what remains."""
    for _ in range(2):  # "This image shows: In this image, ..." happens
        m = _BOILERPLATE.match(text)
        if not m or m.end() == 0:
            break
        text = text[m.end():].lstrip()
    return text[:1].upper() + text[1:]


def sentence_ends(text: str) -> list[int]:
    """Offsets just past each sentence end (after closing quotes), in increasing order."""
    ends = []
    for m in _SENTENCE_END.finditer(text):
        if text[m.start()] == "." and m.end() - m.start() == 1:
            word = text[text.rfind(" ", 0, m.start()) + 1: m.start()]  # the word before the period
            # "Dr." / "e.g." / a middle initial "J." do not end a sentence.
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue
        ends.append(m.end())
    return ends


def trim_meta_sentences(text: str, keep: int = 2) -> str:
    """Cut `text` before its first sentence, from the third on, that opens with a META_OPENINGS phrase.

    The first `keep` sentences always stay. Sentences are found with `sentence_ends` (abbreviations and
    initials do not end one), and the match is on the sentence's own opening, case as written, as the
    released generator does."""
    starts = [0] + sentence_ends(text)
    for i, start in enumerate(starts[:-1] if starts[-1] >= len(text) else starts):
        if i < keep:
            continue
        j = start
        while j < len(text) and text[j].isspace():
            j += 1
        if text.startswith(META_OPENINGS, j):  # at the position: no copy of the rest (linear overall)
            return text[:start].rstrip()
    return text


def shorten(text: str, max_chars: int = 1000) -> str:
    """At most `max_chars` characters, cut at a sentence boundary, never mid-word.

    Whole sentences are kept while the total fits. If the first sentence alone is too long,
    it is cut at the last word boundary that leaves room for a final ".". Only a text with no
    space at all in its first `max_chars` characters is cut inside a word (there is no other
    choice).
    """
    if len(text) <= max_chars:
        return text
    best = 0
    for end in sentence_ends(text[: max_chars + 1]):  # an end at max_chars is seen through the next char
        if end > max_chars:
            break
        best = end
    if best:
        return text[:best].rstrip()
    cut = text.rfind(" ", 0, max_chars)  # text[:cut] + "." has at most max_chars chars
    piece = text[:cut] if cut > 0 else text[: max_chars - 1]
    piece = piece.rstrip(_TRAILING_JUNK)
    if piece.endswith((".", "!", "?")):
        return piece
    return piece + "."


def normalize_caption(text: str, *, boilerplate: bool = False, meta_trim: bool = False,
                      max_chars: int = 1000) -> str:
    """Collapse whitespace, optionally strip boilerplate openings and trailing meta sentences, then shorten."""
    text = collapse_whitespace(text)
    if boilerplate:
        text = strip_boilerplate(text)
    if meta_trim:
        text = trim_meta_sentences(text)
    return shorten(text, max_chars)
