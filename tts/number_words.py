"""Numbers as they are said, in plain words (spaces, no hyphens): cardinals, digit strings, years,
ordinals and plurals ("1990s" -> "nineteen nineties"). Used by tts.normalize."""
from __future__ import annotations

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion")
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(ONES[ones])
    elif rest or not words:
        words.append(ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """Cardinal: 1200 -> "one thousand two hundred", -3 -> "minus three" (spaces, no hyphens)."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 1000 ** len(_SCALES):
        return digits_to_words(str(n))
    if n < 1000:
        return " ".join(_under_thousand(n))
    groups: list[str] = []
    scale = 0
    while n:
        n, chunk = divmod(n, 1000)
        if chunk:
            groups.insert(0, " ".join(_under_thousand(chunk) + ([_SCALES[scale]] if scale else [])))
        scale += 1
    return " ".join(groups)


def digits_to_words(digits: str) -> str:
    """Digit by digit: "007" -> "zero zero seven"."""
    return " ".join(ONES[int(d)] for d in digits if d.isdigit())


def year_to_words(n: int) -> str:
    """A year the way it is said: 1990 -> "nineteen ninety", 1905 -> "nineteen oh five",
    2005 -> "two thousand five", 2024 -> "twenty twenty four"."""
    if 2000 <= n <= 2009 or not 1100 <= n <= 2099:
        return number_to_words(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{number_to_words(hi)} hundred"
    if lo < 10:
        return f"{number_to_words(hi)} oh {ONES[lo]}"
    return f"{number_to_words(hi)} {number_to_words(lo)}"


def ordinal_to_words(n: int) -> str:
    """1 -> "first", 21 -> "twenty first", 100 -> "one hundredth"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def plural_number(words: str) -> str:
    """"nineteen ninety" -> "nineteen nineties", "eighty" -> "eighties", "six" -> "sixes"."""
    parts = words.split()
    last = parts[-1]
    if last.endswith("y"):
        parts[-1] = last[:-1] + "ies"
    elif last.endswith(("x", "s")):
        parts[-1] = last + "es"
    else:
        parts[-1] = last + "s"
    return " ".join(parts)
