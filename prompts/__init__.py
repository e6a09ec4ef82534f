"""Prompts of the dialogue generator: Appendix F's instructions as Jinja2 templates, plus GENERIC."""
from prompts.render import (
    COMB_OPTION_KEYS,
    PROMPT_VERSION,
    RolePrompt,
    instructions,
    load_topics,
    render,
    sample_options,
)

__all__ = [
    "COMB_OPTION_KEYS",
    "PROMPT_VERSION",
    "RolePrompt",
    "instructions",
    "load_topics",
    "render",
    "sample_options",
]
