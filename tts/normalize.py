"""Text normalisation before synthesis, and the word-span assembly shared by the speech backends.

`normalize_words(text)` pairs every written word (`text.split()`, punctuation attached, e.g. "$5,")
with the plain words a TTS engine should say for it: digits, currency, percentages, ordinals, times,
decades and common abbreviations are spelled out ("$5," -> "five dollars", "Dr." -> "doctor",
"1990s" -> "nineteen nineties"), symbols become words ("&" -> "and"), and punctuation is dropped from
the spoken form (it stays in the written word; `clause_mark` gives the pause mark a backend should
voice after it). Spoken forms hold only letters, spaces and word-internal apostrophes.

A written word with nothing to say ("—", "...", "*", an emoji) gets the empty spoken form: it is
"silent". It still gets a span, from `assemble_spans`: the pause it stands for, i.e. the time
between the end of the previous spoken word and the start of the next one (backends voice its
`clause_mark`, usually ",", so that pause is real and measured). When there is no pause of at least
`MIN_SPAN_S` there, the silent word is attached to the previous word: it gets that word's last
`MIN_SPAN_S` (the next word's first `MIN_SPAN_S` when it opens the text). Consecutive silent words
share one span.
"""
from __future__ import annotations

import re
import unicodedata

from pipeline.core.types import WordSpan
from tts.number_words import (ONES, plural_number, digits_to_words, number_to_words,
                               ordinal_to_words, year_to_words)

MIN_SPAN_S = 0.01  # shortest span a word may get (10 ms)

_SCALE_WORDS = {"hundred", "thousand", "million", "billion", "trillion"}

_ABBREVIATIONS = {
    "dr.": "doctor", "mr.": "mister", "mrs.": "missus", "ms.": "miz", "prof.": "professor",
    "jr.": "junior", "sr.": "senior", "mt.": "mount", "ft.": "fort", "vs.": "versus", "vs": "versus",
    "etc.": "et cetera", "etc": "et cetera", "e.g.": "for example", "e.g": "for example",
    "eg.": "for example", "i.e.": "that is", "i.e": "that is", "ie.": "that is",
    "approx.": "approximately", "est.": "established", "inc.": "incorporated", "ltd.": "limited",
    "co.": "company", "corp.": "corporation", "ave.": "avenue", "blvd.": "boulevard", "rd.": "road",
    "dept.": "department", "govt.": "government", "misc.": "miscellaneous", "fig.": "figure",
    "a.m.": "a m", "p.m.": "p m", "w/": "with", "w/o": "without", "min.": "minutes",
    "sec.": "seconds", "hrs.": "hours", "hr.": "hour", "no.": "number", "st.": "street",
}
# Units written right after a number ("5km") or as the next word ("5 km"): (singular, plural).
_UNITS = {
    "km": ("kilometer", "kilometers"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "ml": ("milliliter", "milliliters"), "mph": ("mile per hour", "miles per hour"),
    "kmh": ("kilometer per hour", "kilometers per hour"), "ft": ("foot", "feet"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "mi": ("mile", "miles"), "hr": ("hour", "hours"), "hrs": ("hour", "hours"),
    "min": ("minute", "minutes"), "mins": ("minute", "minutes"), "sec": ("second", "seconds"),
    "kb": ("kilobyte", "kilobytes"), "mb": ("megabyte", "megabytes"), "gb": ("gigabyte", "gigabytes"),
    "tb": ("terabyte", "terabytes"), "ghz": ("gigahertz", "gigahertz"), "mhz": ("megahertz", "megahertz"),
    "hz": ("hertz", "hertz"), "kw": ("kilowatt", "kilowatts"), "w": ("watt", "watts"),
    "v": ("volt", "volts"), "l": ("liter", "liters"), "m": ("meter", "meters"),
    "x": ("times", "times"), "k": ("thousand", "thousand"), "bn": ("billion", "billion"),
    "am": ("a m", "a m"), "pm": ("p m", "p m"),
}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "sen", "sen")}
_CURRENCY_SCALES = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion",
                    "t": "trillion", "thousand": "thousand", "million": "million",
                    "billion": "billion", "trillion": "trillion"}
_SYMBOLS = {
    "&": "and", "+": "plus", "=": "equals", "@": "at", "%": "percent", "#": "number",
    "×": "times", "<": "less than", ">": "greater than", "~": "about", "°": "degrees",
    "$": "dollars", "€": "euros", "£": "pounds", "/": "slash", "→": "to", "±": "plus or minus",
}
_FRACTIONS = {(1, 2): "one half", (1, 3): "one third", (2, 3): "two thirds", (1, 4): "one quarter",
              (3, 4): "three quarters"}

_LEAD = "\"'([{“‘«¿¡*_`"
_TRAIL = "\"')]}”’».,;:!?*_`…"
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"^([-+−]?)({_NUM})$")
_ORDINAL_RE = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th)$", re.I)
_DECADE_RE = re.compile(r"^'?(\d{2}|\d{4})'?s$")
_PERCENT_RE = re.compile(rf"^([-+−]?)({_NUM})%$")
_CURRENCY_RE = re.compile(rf"^([-−]?)([$€£¥])({_NUM})([a-zA-Z]*)$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?:\s*([ap])\.?m\.?)?$", re.I)
_RANGE_RE = re.compile(rf"^({_NUM})[-–—]({_NUM})$")
_FRACTION_RE = re.compile(r"^(\d+)/(\d+)$")
_DEGREE_RE = re.compile(rf"^([-+−]?)({_NUM})°([CFcf]?)$")
_NUM_UNIT_RE = re.compile(rf"^({_NUM})([a-zA-Z]+)$")
_DOTTED_RE = re.compile(r"^(?:[A-Za-z]\.){2,}$")
_RUN_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+|\S", re.UNICODE)
_CLAUSE_MARKS = ",.;:?!"


# --- numbers -------------------------------------------------------------------------------------

def _number_string(s: str) -> tuple[str, float]:
    """A written number ("1,200", "3.5", ".5") -> (words, value)."""
    s = s.replace(",", "")
    whole, _, frac = s.partition(".")
    if len(whole) > 1 and whole.startswith("0"):
        words = digits_to_words(whole)
    elif whole:
        words = number_to_words(int(whole)) if len(whole) <= 15 else digits_to_words(whole)
    else:
        words = ""
    if frac:
        words = f"{words} point {digits_to_words(frac)}".strip()
    return words, float(s) if s.strip(".") else 0.0


def _is_plain_year(s: str) -> bool:
    return len(s) == 4 and s.isdigit() and 1100 <= int(s) <= 2099


# --- one written word ----------------------------------------------------------------------------

def _split_punct(word: str) -> tuple[str, str, str]:
    i, j = 0, len(word)
    while i < j and word[i] in _LEAD:
        i += 1
    while j > i and word[j - 1] in _TRAIL:
        j -= 1
    return word[:i], word[i:j], word[j:]


def clause_mark(written: str) -> str:
    """The pause mark to voice after a written word: "", ",", ".", "?", "!", ";" or ":".

    Taken from the word's trailing punctuation ("world," -> ","; 'it?"' -> "?"). A word without
    letters or digits ("—", "...") stands for a pause: "," (or "?" / "!" when it holds one).
    Abbreviation periods ("Dr.", "e.g.", "etc.") are not sentence ends.
    """
    _, core, trail = _split_punct(written)
    if not any(c.isalnum() for c in written) and core not in _SYMBOLS:
        for mark in "?!":
            if mark in written:
                return mark
        return "." if written.strip() == "." else ","
    trail = trail.replace("...", "…")
    key = (core + trail).lower().rstrip(",;:!?\"')]}”’»…")
    if key in _ABBREVIATIONS or _DOTTED_RE.match(core + trail.rstrip(",;:!?\"')]}”’»…")):
        trail = trail.lstrip(".")
    marks = [c for c in trail if c in _CLAUSE_MARKS]
    if not marks:
        return "," if "…" in trail else ""
    for mark in "?!.;:,":  # keep the strongest mark: 'it?!' -> "?"
        if mark in marks:
            return mark
    return ""


def _clean(spoken: str) -> str:
    """Letters, spaces and word-internal apostrophes only."""
    spoken = spoken.replace("’", "'")
    out = []
    for run in _RUN_RE.findall(spoken):
        if run[0].isalpha():
            out.append(run)
    return " ".join(out)


def _unit(name: str, value: float) -> str | None:
    forms = _UNITS.get(name.lower())
    if forms is None or (len(name) == 1 and name.isupper() and name != "L"):  # "4K", "5G", "3D"
        return None
    return forms[0] if value == 1 else forms[1]


def _currency(sign: str, symbol: str, number: str, suffix: str, next_word: str | None) -> tuple[str, bool]:
    """"$5" -> "five dollars". Returns (spoken, whether the next word is a scale that takes the unit)."""
    one, many, sub_one, sub_many = _CURRENCY[symbol]
    minus = "minus " if sign else ""
    words, value = _number_string(number)
    scale = _CURRENCY_SCALES.get(suffix.lower()) if suffix else None
    if suffix and scale is None:
        return "", False  # unknown suffix: let the generic path read it
    if scale:
        return f"{minus}{words} {scale} {many}", False
    nxt = _split_punct(next_word)[1].lower() if next_word else ""
    if nxt in _SCALE_WORDS:
        return f"{minus}{words}", True  # "$2 million" -> "two" + "million dollars"
    whole, _, frac = number.replace(",", "").partition(".")
    if frac and len(frac) == 2:
        units = int(whole or 0)
        cents = int(frac)
        parts = []
        if units:
            parts.append(f"{number_to_words(units)} {one if units == 1 else many}")
        if cents or not units:
            parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
        return minus + " and ".join(parts), False
    return f"{minus}{words} {one if value == 1 else many}", False


def _generic(core: str) -> str:
    """Letters kept, digit runs read as numbers, known symbols as words, the rest dropped."""
    parts = []
    for run in _RUN_RE.findall(core.replace("’", "'")):
        if run.isdigit():
            if _is_plain_year(run) and run == core:
                parts.append(year_to_words(int(run)))
            elif run.startswith("0") and len(run) > 1 or len(run) > 15:
                parts.append(digits_to_words(run))
            else:
                parts.append(number_to_words(int(run)))
        elif run[0].isalpha():
            parts.append(run)
        elif run in _SYMBOLS and run != "/":
            parts.append(_SYMBOLS[run])
    return " ".join(parts)


def _speak_core(core: str, trail: str, prev: str | None, next_word: str | None) -> tuple[str, bool]:
    """Spoken form of a word's core (punctuation stripped). Returns (spoken, next takes currency)."""
    lower = core.lower()
    abbr = (core + trail).lower().rstrip(",;:!?\"')]}”’»")
    nxt_core = _split_punct(next_word)[1] if next_word else ""
    if abbr in ("st.", "st") and nxt_core[:1].isupper():
        return "saint", False
    if abbr == "no." and not nxt_core[:1].isdigit():
        return "no", False
    if abbr in _ABBREVIATIONS:
        return _ABBREVIATIONS[abbr], False
    if lower in ("w/", "w/o"):
        return _ABBREVIATIONS[lower], False
    dotted = core + trail.rstrip(",;:!?\"')]}”’»")
    if _DOTTED_RE.match(dotted):
        return " ".join(c for c in dotted if c.isalpha()), False
    if core in _SYMBOLS:
        return _SYMBOLS[core], False
    if m := _CURRENCY_RE.match(core):
        spoken, carry = _currency(m.group(1), m.group(2), m.group(3), m.group(4), next_word)
        if spoken:
            return spoken, carry
    if m := _PERCENT_RE.match(core):
        words, _ = _number_string(m.group(2))
        return ("minus " if m.group(1) else "") + words + " percent", False
    if m := _DEGREE_RE.match(core):
        words, value = _number_string(m.group(2))
        scale = {"c": " Celsius", "f": " Fahrenheit"}.get(m.group(3).lower(), "")
        unit = "degree" if value == 1 else "degrees"
        return f"{'minus ' if m.group(1) else ''}{words} {unit}{scale}", False
    if m := _ORDINAL_RE.match(core):
        return ordinal_to_words(int(m.group(1).replace(",", ""))), False
    if m := _DECADE_RE.match(core):
        digits = m.group(1)
        if len(digits) == 2:
            return plural_number(number_to_words(int(digits)) if digits != "00" else "two thousand"), False
        return plural_number(year_to_words(int(digits))), False
    if m := _TIME_RE.match(core):
        hours, minutes = int(m.group(1)), int(m.group(2))
        if minutes == 0:
            words = f"{number_to_words(hours)}" + ("" if m.group(3) else " o'clock")
        elif minutes < 10:
            words = f"{number_to_words(hours)} oh {ONES[minutes]}"
        else:
            words = f"{number_to_words(hours)} {number_to_words(minutes)}"
        if m.group(3):
            words += f" {m.group(3).lower()} m"
        return words, False
    if m := _FRACTION_RE.match(core):
        a, b = int(m.group(1)), int(m.group(2))
        if (a, b) in _FRACTIONS:
            return _FRACTIONS[(a, b)], False
        if b != 0 and b <= 10 and a < b:
            denominator = ordinal_to_words(b)
            return f"{number_to_words(a)} {plural_number(denominator) if a > 1 else denominator}", False
        return f"{number_to_words(a)} {number_to_words(b)}", False  # "24/7" -> "twenty four seven"
    if m := _RANGE_RE.match(core):
        a, _ = _number_string(m.group(1))
        b, _ = _number_string(m.group(2))
        if _is_plain_year(m.group(1)) and _is_plain_year(m.group(2)):
            a, b = year_to_words(int(m.group(1))), year_to_words(int(m.group(2)))
        return f"{a} to {b}", False
    if m := _NUMBER_RE.match(core):
        sign = "minus " if m.group(1) in ("-", "−") else ""
        if _is_plain_year(m.group(2)) and not sign:
            return year_to_words(int(m.group(2))), False
        return sign + _number_string(m.group(2))[0], False
    if m := _NUM_UNIT_RE.match(core):
        words, value = _number_string(m.group(1))
        unit = _unit(m.group(2), value)
        if unit is not None:
            return f"{words} {unit}", False
    if prev is not None and lower in _UNITS and _NUMBER_RE.match(_split_punct(prev)[1]):
        return _unit(lower, _number_string(_split_punct(prev)[1].lstrip("-+−"))[1]) or "", False
    return _generic(core), False


def normalize_words(text: str) -> list[tuple[str, str]]:
    """[(written word, spoken form)] for each word of `text.split()`, in order.

    The spoken form is plain words (letters, spaces, inner apostrophes), or "" for a word with
    nothing to say (see the module docstring for how such a word still gets a span).
    """
    written = text.split()
    out: list[tuple[str, str]] = []
    carry_currency: str | None = None  # "$2 million": the unit moves to the scale word
    for i, word in enumerate(written):
        prev = written[i - 1] if i else None
        nxt = written[i + 1] if i + 1 < len(written) else None
        _, core, trail = _split_punct(unicodedata.normalize("NFC", word))
        spoken, carry = _speak_core(core, trail, prev, nxt) if core else ("", False)
        if carry_currency and _split_punct(word)[1].lower() in _SCALE_WORDS:
            spoken = f"{spoken} {carry_currency}"
            carry_currency = None
        if carry:
            m = _CURRENCY_RE.match(core)
            carry_currency = _CURRENCY[m.group(2)][1] if m else None
        out.append((word, _clean(spoken)))
    return out


# --- spans ---------------------------------------------------------------------------------------

def assemble_spans(
    words: list[str],
    measured: list[tuple[float, float] | None],
    duration_s: float,
    speaker: str = "assistant",
) -> list[WordSpan]:
    """One WordSpan per written word from the backend's measured (start_s, end_s) of each spoken
    word (None for silent words), following the rules in the module docstring.

    Also makes the result valid whatever rounding did: every span inside [0, duration_s], at
    least `MIN_SPAN_S` long (or the whole audio when it is shorter), starts non-decreasing.
    """
    if len(words) != len(measured):
        raise ValueError(f"{len(words)} words but {len(measured)} measured spans")
    dur = max(float(duration_s), 0.0)
    min_len = min(MIN_SPAN_S, dur)
    spans: list[tuple[float, float] | None] = list(measured)
    n = len(spans)
    i = 0
    while i < n:
        if spans[i] is not None:
            i += 1
            continue
        j = i
        while j < n and spans[j] is None:
            j += 1
        prev = spans[i - 1] if i > 0 else None
        nxt = spans[j] if j < n else None
        gap_start = prev[1] if prev else 0.0
        gap_end = nxt[0] if nxt else dur
        if gap_end - gap_start >= min_len:
            span = (gap_start, gap_end)
        elif prev:
            span = (max(prev[0], prev[1] - min_len), prev[1])
        elif nxt:
            span = (nxt[0], min(nxt[1], nxt[0] + min_len))
        else:
            span = (0.0, dur)
        for k in range(i, j):
            spans[k] = span
        i = j
    out: list[WordSpan] = []
    last_start = 0.0
    for word, span in zip(words, spans):
        assert span is not None
        start = min(max(span[0], last_start, 0.0), max(dur - min_len, 0.0))
        end = min(max(span[1], start + min_len), dur)
        out.append(WordSpan(word=word, start_s=start, end_s=end, speaker=speaker))  # type: ignore[arg-type]
        last_start = start
    return out
