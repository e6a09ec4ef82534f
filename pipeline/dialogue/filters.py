"""Cleanup and quality filters for generated dialogue messages.

`clean_message` applies the regex rules of `prompts/cleanup.yaml` (role labels, "Question:" /
"Answer:" prefixes, wrapping quotes, markdown emphasis, mentions of "the description",
whitespace collapsed for speech). `check_message` and `check_dialogue` return a rejection
reason (a fixed string) or None; rejected dialogues are kept with their reason by the caller.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

EMPTY_MESSAGE = "empty_message"
OVER_TOKEN_LIMIT = "message_over_token_limit"
REPEATED_MESSAGE = "repeated_message"
CAPTION_LEAK = "caption_leak"
TOO_FEW_PAIRS = "too_few_pairs"
REASONS: tuple[str, ...] = (EMPTY_MESSAGE, OVER_TOKEN_LIMIT, REPEATED_MESSAGE, CAPTION_LEAK, TOO_FEW_PAIRS)

# Phrases that reveal a hidden caption. "a description" alone is allowed: the COMB user is told to
# "obtain a description of the image" and may legitimately ask for one.
DEFAULT_LEAK_PATTERNS: tuple[str, ...] = (
    r"\b(the|this|my|your) (image )?descriptions?\b",
    r"\b(given|provided with|read) (a|the) (detailed )?description\b",
    r"\bcaptions?\b",
    r"\bI was told\b",
    r"\bbased on what I read\b",
    r"\bsecret(ly)? (provided )?description\b",
)
_FLAG_NAMES = {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL}
_MAX_PASSES = 4  # rules are re-applied until nothing changes, so cleaning is idempotent


@dataclass(frozen=True, slots=True)
class CleanupRule:
    name: str
    pattern: re.Pattern
    replace: str


@dataclass(frozen=True, slots=True)
class FilterConfig:
    max_new_tokens: int = 150
    min_pairs: int = 8
    leak_patterns: tuple[str, ...] = DEFAULT_LEAK_PATTERNS  # case-insensitive regexes


def _parse_rules(data: object, source: str) -> tuple[CleanupRule, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ValueError(f"{source}: expected a mapping with a 'rules' list")
    rules = []
    for i, item in enumerate(data["rules"]):
        where = f"{source}: rule {i}"
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str):
            raise ValueError(f"{where}: each rule needs a string 'pattern'")
        name = str(item.get("name") or f"rule{i}")
        replace = item.get("replace", "")
        if not isinstance(replace, str):
            raise ValueError(f"{where} ({name}): 'replace' must be a string")
        flags = 0
        for flag in item.get("flags") or []:
            if flag not in _FLAG_NAMES:
                raise ValueError(f"{where} ({name}): unknown flag {flag!r}; valid: {', '.join(_FLAG_NAMES)}")
            flags |= _FLAG_NAMES[flag]
        try:
            pattern = re.compile(item["pattern"], flags)
        except re.error as e:
            raise ValueError(f"{where} ({name}): bad pattern: {e}") from e
        rules.append(CleanupRule(name=name, pattern=pattern, replace=replace))
    return tuple(rules)


@lru_cache(maxsize=8)
def load_rules(path: str | None = None) -> tuple[CleanupRule, ...]:
    """The cleanup rules, in order: from `path`, or the packaged `prompts/cleanup.yaml`. Cached."""
    if path is None:
        text = resources.files("prompts").joinpath("cleanup.yaml").read_text(encoding="utf-8")
        source = "prompts/cleanup.yaml"
    else:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    return _parse_rules(yaml.safe_load(text), source)


def _apply(text: str, rules: tuple[CleanupRule, ...]) -> str:
    for rule in rules:
        text = rule.pattern.sub(rule.replace, text)
    return text


def clean_message(text: str, rules: tuple[CleanupRule, ...] | None = None) -> str:
    """The message as it will be spoken: cleanup rules applied until stable, first letter capitalised."""
    rules = load_rules() if rules is None else rules
    for _ in range(_MAX_PASSES):
        new = _apply(text, rules)
        if new == text:
            break
        text = new
    text = collapse_repeats(text)
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def collapse_repeats(text: str) -> str:
    """A sentence said again right after itself is said once ("You're stuck. You're stuck." -> "You're
    stuck."): small models loop inside a message; nobody speaks like that."""
    out, last, start = [], None, 0
    for m in list(_SENTENCE_END.finditer(text)) + [None]:
        end = m.end() if m else len(text)
        sentence = text[start:end]
        key = normalise(sentence)
        if key and key == last:
            start = end
            continue
        out.append(sentence)
        last = key or last
        start = end
    return "".join(out).strip() if len(out) else text


def normalise(text: str) -> str:
    """Lowercase, without punctuation or whitespace: the key for repeated-message detection."""
    return re.sub(r"[\W_]+", "", text.lower())


@lru_cache(maxsize=32)
def _leak_regexes(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def check_message(
    text: str,
    role: str,
    finish_reason: str,
    completion_tokens: int,
    previous_same_role: list[str],
    cfg: FilterConfig,
) -> str | None:
    """Why this message is rejected, or None. `text` may be raw or cleaned (cleaning is idempotent).

    `previous_same_role` are the earlier messages of the same `role` in the dialogue.
    """
    if role not in ("user", "assistant"):
        raise ValueError(f"unknown role {role!r}; valid roles: user, assistant")
    cleaned = clean_message(text)
    if not cleaned:
        return EMPTY_MESSAGE
    if finish_reason == "length" or completion_tokens >= cfg.max_new_tokens:
        return OVER_TOKEN_LIMIT
    key = normalise(cleaned)
    if key and any(normalise(clean_message(p)) == key for p in previous_same_role):
        return REPEATED_MESSAGE
    if any(r.search(cleaned) for r in _leak_regexes(tuple(cfg.leak_patterns))):
        return CAPTION_LEAK
    return None


def check_dialogue(num_pairs: int, cfg: FilterConfig) -> str | None:
    """Why the whole dialogue is rejected, or None."""
    if num_pairs < cfg.min_pairs:
        return TOO_FEW_PAIRS
    return None


_SENTENCE_END = re.compile(r"[.!?](?=[\"')\]]*(\s|$))")


def trim_to_sentence(text: str) -> str:
    """A message cut by the token limit, trimmed back to its last complete sentence ("" if none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""
