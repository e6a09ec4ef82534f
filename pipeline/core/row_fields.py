"""Reading and describing the fields of an input row (captions, benchmarks), for their checks and for the
rejection details that name what was found."""
from __future__ import annotations

import math
from typing import Any


def describe(value: Any) -> str:
    return "null (missing)" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def text(value: Any) -> str | None:
    """A stripped non-empty string from a str (or int id), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


def number(value: Any) -> float | None:
    """A float from a number or numeric string (CSV/JSON); None when absent or not a number."""
    try:
        x = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ValueError:
        return None
    return None if x is None or math.isnan(x) else x


def unreadable_row(where: str, err: tuple[str, str] | None) -> tuple[str, str]:
    """(reason, detail) of a row that could not be read (a record reader's error), saying what was read after it."""
    reason, message = err or ("row:malformed", "unreadable")
    rest = ("the rest of the file is read" if "cannot be read" not in message
            else "the elements after it were not read" if "element" in where
            else "the rows after it were not read")
    return reason, f"row is {message}. Fix or delete it; {rest}."
