"""Fault injection for tests: `SSVD_FAULTS` makes a chosen fraction of engine, TTS and codec calls fail.

Off unless the variable is set. Syntax (comma-separated, every key optional):

    SSVD_FAULTS="engine=0.1,speech=0.1,tokens=0.1,kinds=raise/timeout/empty,timeout_s=0.5,seed=0"

- `engine`: fraction of LLM requests (`Engine.chat`) that fail, each in one of `kinds`: `raise` (an
  `EngineError`, as a dropped connection or an HTTP 5xx gives), `timeout` (no answer for `timeout_s`,
  then an `EngineError` saying it timed out), `empty` (an answer with no text and no tokens).
- `speech`: fraction of TTS calls that raise; `tokens`: fraction of dialogues whose codec (Mimi) encode
  call raises (the whole batch call fails, as a real codec error would).
- `SSVD_FAULTS_LOG=PATH` (optional): every injected fault appends a line `where kind` to PATH.
- `seed`: which calls fail is a function of (seed, the call's content, how often that same call was made
  in this process), so a retried call can succeed and a test can be repeated.

The variable reaches Ray workers like every `SSVD_*` variable (pipeline.core.ray_pool). Every stage retries
a failed call with backoff (`retry`, dialogues: `DialogueConfig.retries`); a call still failing after
its retries makes its row `failed` with the error, and `--retry-failed` runs it again (docs/faults.md).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pipeline.core.types import stable_int

ENV = "SSVD_FAULTS"
LOG_ENV = "SSVD_FAULTS_LOG"
KINDS = ("raise", "timeout", "empty")
WHERE = ("engine", "speech", "tokens")
T = TypeVar("T")
RETRY_BACKOFF_S = 0.5  # the first wait before a retried TTS or codec call (then doubled)
log = logging.getLogger("ssvd")


class InjectedFault(RuntimeError):
    """A failure made on purpose by SSVD_FAULTS."""


@dataclass(frozen=True)
class FaultPlan:
    rates: tuple[tuple[str, float], ...] = ()
    kinds: tuple[str, ...] = ("raise",)
    timeout_s: float = 0.5
    seed: int = 0

    def rate(self, where: str) -> float:
        return dict(self.rates).get(where, 0.0)


def parse(text: str) -> FaultPlan:
    """The plan of an SSVD_FAULTS value; ValueError naming the bad part and the syntax."""
    rates: dict[str, float] = {}
    kinds, timeout_s, seed = ("raise",), 0.5, 0
    syntax = f"{ENV} syntax: engine=0.1,speech=0.1,tokens=0.1,kinds=raise/timeout/empty,timeout_s=0.5,seed=0"
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        try:
            if not eq:
                raise ValueError("no '='")
            if key in WHERE:
                rates[key] = float(value)
                if not 0.0 <= rates[key] <= 1.0:
                    raise ValueError("a fraction must be within 0..1")
            elif key == "kinds":
                kinds = tuple(k.strip() for k in value.split("/") if k.strip())
                if not kinds or set(kinds) - set(KINDS):
                    raise ValueError(f"kinds are {'/'.join(KINDS)}")
            elif key == "timeout_s":
                timeout_s = float(value)
            elif key == "seed":
                seed = int(value)
            else:
                raise ValueError(f"unknown key (keys: {', '.join(WHERE)}, kinds, timeout_s, seed)")
        except ValueError as e:
            raise ValueError(f"{ENV}={text!r}: {part!r}: {e}. {syntax}") from None
    return FaultPlan(tuple(sorted(rates.items())), kinds, timeout_s, seed)


_lock = threading.Lock()
_calls: Counter = Counter()


def plan() -> FaultPlan | None:
    """The plan from the environment; None when fault injection is off (the default)."""
    text = os.environ.get(ENV, "").strip()
    return parse(text) if text else None


def picked(p: FaultPlan, where: str, key: Any, n: int) -> str | None:
    """The fault (None: none) of the n-th call (from 1) with this key: a pure function of its arguments."""
    h = stable_int("fault", p.seed, where, repr(key), n)
    if (h % 1_000_000) >= p.rate(where) * 1_000_000:
        return None
    return p.kinds[(h // 1_000_000) % len(p.kinds)] if where == "engine" else "raise"


def draw(where: str, key: Any, p: FaultPlan | None = None) -> str | None:
    """The kind of fault this call gets (None: it runs normally). `key` identifies the call's content."""
    p = p if p is not None else plan()
    if p is None or p.rate(where) <= 0:
        return None
    with _lock:
        _calls[(where, key)] += 1
        n = _calls[(where, key)]
    kind = picked(p, where, key, n)
    if kind and os.environ.get(LOG_ENV):
        with open(os.environ[LOG_ENV], "a", encoding="utf-8") as f:
            f.write(f"{where} {kind}\n")
    return kind


def maybe_fail(where: str, key: Any) -> None:
    """Raise `InjectedFault` when SSVD_FAULTS picks this call (speech and tokens calls)."""
    if draw(where, key):
        raise InjectedFault(f"injected {where} fault ({ENV})")


def is_transient(e: BaseException) -> bool:
    """Worth retrying: not an error of the input itself (ValueError, TypeError, KeyError: the same each time)."""
    return not isinstance(e, (ValueError, TypeError, KeyError, IndexError))


def retry(fn: Callable[[], T], *, attempts: int = 3, backoff_s: float = 0.5, what: str = "call") -> T:
    """fn(), run again after backoff_s, 2*backoff_s, ... while it fails with a transient error."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:
            if attempt == attempts - 1 or not is_transient(e):
                raise
            log.warning("%s failed (%s: %s); retry %d of %d", what, type(e).__name__, e, attempt + 1, attempts - 1)
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")
