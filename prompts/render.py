"""Render the dialogue-generation prompts of MoshiVis Appendix F from their Jinja2 templates.

One template file per instruction (`templates/<INSTRUCTION>.j2`), each defining the macros
`template(role_specific_text, caption)`, `user_text(caption)`, `assistant_text(caption)` and
`forced_start(options)` (GENERIC takes `topic` instead of `caption`). Captions and topics are
data: they are passed as Jinja variables and are never parsed as template source.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TOPICS_FILE = Path(__file__).resolve().parent / "generic_topics.txt"

_IMAGE_INSTRUCTIONS: tuple[str, ...] = ("COMB", "LOC", "PROP", "NUM", "TS1", "TS2", "LEAD1", "LEAD2")
_GENERIC = "GENERIC"
_ROLES: tuple[str, ...] = ("user", "assistant")
# COMB's forced start draws these, in this order (Appendix F, Instruction 1).
COMB_OPTION_KEYS: tuple[str, ...] = ("p_length", "p_style", "p_tone", "p_view")


@dataclass(frozen=True, slots=True)
class RolePrompt:
    """What one role sees: its system prompt and, for the user role, the forced first message."""

    system: str
    forced_start: str | None  # None for the assistant role


def _prompt_version() -> str:
    h = hashlib.sha256()
    for path in sorted(TEMPLATES_DIR.glob("*.j2")):
        h.update(path.name.encode("utf-8"))
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return "appendixF-1+" + h.hexdigest()[:12]


PROMPT_VERSION: str = _prompt_version()


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _module(instruction: str):
    return _env().get_template(f"{instruction}.j2").module


def instructions() -> tuple[str, ...]:
    """The eight instructions of Appendix F, then GENERIC (non-image talk)."""
    return _IMAGE_INSTRUCTIONS + (_GENERIC,)


def _check_instruction(instruction: str) -> None:
    if instruction not in instructions():
        raise ValueError(
            f"unknown instruction {instruction!r}; valid instructions: {', '.join(instructions())}"
        )


def sample_options(instruction: str, rng: random.Random) -> dict:
    """The random choices of an instruction's forced start: COMB's four draws, {} for the others."""
    _check_instruction(instruction)
    if instruction != "COMB":
        return {}
    return {key: rng.random() for key in COMB_OPTION_KEYS}


def _comb_options(options: dict | None) -> dict:
    if options is None:
        return sample_options("COMB", random.Random(0))
    missing = [k for k in COMB_OPTION_KEYS if k not in options]
    if missing:
        raise ValueError(f"COMB options lack {', '.join(missing)}; expected keys: {', '.join(COMB_OPTION_KEYS)}")
    out = {}
    for key in COMB_OPTION_KEYS:
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"COMB option {key} must be a number in [0, 1], got {value!r}")
        out[key] = float(value)
    return out


def render(
    instruction: str,
    role: str,
    caption: str | None = None,
    options: dict | None = None,
    topic: str | None = None,
) -> RolePrompt:
    """The system prompt (and the user's forced start) of `role` for `instruction`.

    Image instructions need `caption`; GENERIC needs `topic`. COMB uses `options` (see
    `sample_options`), drawn from `random.Random(0)` when None; other instructions ignore them.
    """
    _check_instruction(instruction)
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(_ROLES)}")
    mod = _module(instruction)
    if instruction == _GENERIC:
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError("instruction GENERIC needs a non-empty topic")
        role_text = getattr(mod, f"{role}_text")(topic)
        system = str(mod.template(role_text, topic))
        forced = str(mod.forced_start({}, topic)) if role == "user" else None
        return RolePrompt(system=system, forced_start=forced)
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"instruction {instruction} needs a non-empty caption")
    opts = _comb_options(options) if instruction == "COMB" else {}
    role_text = getattr(mod, f"{role}_text")(caption)
    system = str(mod.template(role_text, caption))
    forced = str(mod.forced_start(opts)) if role == "user" else None
    return RolePrompt(system=system, forced_start=forced)


def load_topics(path: str | Path | None = None) -> list[str]:
    """The generic topics: stripped, non-empty lines of `generic_topics.txt` (or `path`)."""
    text = Path(path or TOPICS_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
