"""The paper's dialogue protocol (Appendix E.1), driven against any `Engine`.

A dialogue's *plan* (number of pairs, instruction of each pair, COMB's random choices, the
sampling seed of every request) is a pure function of its seed, so the same command plans the
same dialogues whatever the worker count, order or resume.

Per request each role sees its own view of the conversation:
- user role:      [system(user text of the pair's instruction), user(forced start),
                   then the dialogue so far with its own lines as `assistant` and the other's as `user`]
- assistant role: [system(assistant text of the pair's instruction), the dialogue so far as is]
The forced start is the dialogue's opening prompt (COMB's for COMB dialogues); it is never part
of the stored turns.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import prompts
from pipeline.dialogue.engine_api import Completion, Engine, EngineDead, EngineError, EngineRefused, Sampling
from pipeline.dialogue.filters import FilterConfig, check_message, clean_message, trim_to_sentence
from pipeline.core.types import DEFAULT_COMB_POOL, Dialogue, Turn, WorkItem, stable_hash, stable_int


@dataclass(frozen=True, slots=True)
class DialogueConfig:
    min_pairs: int = 8  # the plan draws 8..16 question/answer pairs (paper, Sec. 3.3)
    max_pairs: int = 16
    min_accepted_pairs: int = 8  # a dialogue cut short by a bad message is kept if it has this many
    comb_pool: tuple[str, ...] = DEFAULT_COMB_POOL
    temperature: float = 0.7
    max_new_tokens: int = 150
    min_new_tokens: int = 1
    retries: int = 3
    retry_backoff_s: float = 0.5
    on_length: str = "trim"  # a message cut by the token limit: "trim" it to its last sentence, or "reject" it
    redraws: int = 3  # a message a filter rejects is sampled again (new seed from its own) up to this many times
    repetition_penalty: float | None = None  # None ("auto"): the model's own default (ResolvedModel), 1.0 but for smollm2
    ignore_eos: bool = False  # benchmarks only
    length_targets: tuple[int, int] | None = None  # benchmarks only: per-message token targets drawn from the seed

    def filters(self) -> FilterConfig:
        return FilterConfig(max_new_tokens=self.max_new_tokens, min_pairs=self.min_accepted_pairs)


@dataclass(frozen=True, slots=True)
class DialoguePlan:
    seed: int
    instructions: tuple[str, ...]  # one per pair
    options: tuple[tuple[str, float], ...]  # COMB's random choices (empty otherwise)
    request_seeds: tuple[int, ...]  # two per pair: user, assistant
    max_tokens: tuple[int, ...] = field(default=())  # per request; empty: cfg.max_new_tokens

    @property
    def num_pairs(self) -> int:
        return len(self.instructions)


def dialogue_seed(run_seed: int, source: str, caption_id: str | None, instruction: str, replica: int) -> int:
    return stable_int("seed", run_seed, source, caption_id, instruction, replica)


def dialogue_id(run_seed: int, source: str, caption_id: str | None, instruction: str, replica: int) -> str:
    return stable_hash("dialogue", run_seed, source, caption_id, instruction, replica)


def make_plan(instruction: str, seed: int, cfg: DialogueConfig) -> DialoguePlan:
    rng = random.Random(seed)
    num_pairs = rng.randint(cfg.min_pairs, cfg.max_pairs)
    options = prompts.sample_options(instruction, rng)
    if instruction == "COMB":
        instructions = ("COMB",) + tuple(rng.choice(cfg.comb_pool) for _ in range(num_pairs - 1))
    else:
        instructions = (instruction,) * num_pairs
    seeds = tuple(rng.getrandbits(31) for _ in range(2 * num_pairs))
    targets: tuple[int, ...] = ()
    if cfg.length_targets:
        lo, hi = cfg.length_targets
        targets = tuple(rng.randint(lo, hi) for _ in range(2 * num_pairs))
    return DialoguePlan(seed, instructions, tuple(sorted(options.items())), seeds, targets)


def role_view(role: str, system: str, forced_start: str, turns: list[Turn]) -> list[dict]:
    """The messages one role is shown: its system prompt and the dialogue from its perspective."""
    msgs = [{"role": "system", "content": system}]
    if role == "user":
        msgs.append({"role": "user", "content": forced_start})
        msgs += [{"role": "assistant" if t.role == "user" else "user", "content": t.text} for t in turns]
    else:
        msgs += [{"role": t.role, "content": t.text} for t in turns]
    return msgs


async def _chat(engine: Engine, msgs: list[dict], sampling: Sampling, cfg: DialogueConfig) -> Completion:
    """The engine's completion, its `EngineError`s tried again `cfg.retries` times; an engine with its own retry
    policy (`retries_itself`: the openai engine, pipeline/dialogue/openai_engine.py) is asked once."""
    retries = 0 if getattr(engine, "retries_itself", False) else cfg.retries
    for attempt in range(retries + 1):
        try:
            c = await engine.chat(msgs, sampling)
            if not c.text and not c.completion_tokens:  # no answer at all (min_tokens >= 1): the engine's fault
                raise EngineError(f"empty completion (finish reason {c.finish_reason!r})")
            return c
        except EngineError:
            if attempt == retries:
                raise
            await asyncio.sleep(cfg.retry_backoff_s * 2**attempt)
    raise AssertionError("unreachable")


async def generate_dialogue(
    item: WorkItem, engines: dict[str, Engine], cfg: DialogueConfig, plan: DialoguePlan | None = None
) -> Dialogue:
    """Run one dialogue to its end; never raises except `EngineDead` (the worker must restart) and
    `EngineRefused` (the server refuses every request: the run stops)."""
    plan = plan or make_plan(item.instruction, item.seed, cfg)
    caption = item.caption.text if item.caption else None
    options = dict(plan.options)
    d = Dialogue(
        id=item.id,
        caption_id=item.caption.id if item.caption else None,
        source=item.source,
        instruction=item.instruction,
        seed=item.seed,
        replica=item.replica,
        model_user=engines["user"].model.name,
        model_assistant=engines["assistant"].model.name,
        prompt_version=prompts.PROMPT_VERSION,
        caption=caption if caption is not None else (item.topic or ""),
        input_shard=item.input_shard,
        input_row=item.input_row,
    )
    if item.caption:
        d.image = item.caption.image
    systems: dict[tuple[str, str], prompts.RolePrompt] = {}

    def prompt_for(instr: str, role: str) -> prompts.RolePrompt:
        if (instr, role) not in systems:
            systems[(instr, role)] = prompts.render(instr, role, caption, options, topic=item.topic)
        return systems[(instr, role)]

    d.forced_start = prompt_for(plan.instructions[0], "user").forced_start or ""
    fcfg = cfg.filters()
    said: dict[str, list[str]] = {"user": [], "assistant": []}
    redrawn: list[str] = []  # every message a filter rejected and that was sampled again
    try:
        for k, instr in enumerate(plan.instructions):
            for j, role in enumerate(("user", "assistant")):
                msgs = role_view(role, prompt_for(instr, role).system, d.forced_start, d.turns)
                n = 2 * k + j
                base = plan.max_tokens[n] if plan.max_tokens else cfg.max_new_tokens
                redraws = 0 if cfg.ignore_eos else cfg.redraws
                for attempt in range(redraws + 1):
                    seed = plan.request_seeds[n] if attempt == 0 else stable_int("redraw", plan.request_seeds[n], attempt)
                    sampling = Sampling(temperature=cfg.temperature, max_tokens=base, seed=seed,
                                        min_tokens=cfg.min_new_tokens, ignore_eos=cfg.ignore_eos, tag=(item.id, n),
                                        repetition_penalty=repetition_penalty(cfg, engines[role].model))
                    c = await _chat(engines[role], msgs, sampling, cfg)
                    d.generated_tokens += c.completion_tokens
                    text, finish, used = _finished_text(c, cfg)
                    bad = None if cfg.ignore_eos else check_message(text, role, finish, used, said[role], fcfg)
                    if not bad:
                        break
                    what = f"pair {k + 1} {role}: {bad}: {c.text[:300]!r}"
                    if attempt < redraws:
                        redrawn.append(what)
                if bad:
                    return _end_early(d, k, bad, cfg, what, redrawn)
                said[role].append(text)
                d.turns.append(Turn(role, text, instr, c.completion_tokens, c.prompt_tokens, finish))
    except (EngineDead, EngineRefused):
        raise
    except Exception as e:  # retries exhausted, or a request the engine refuses
        d.status, d.error = "failed", f"{type(e).__name__}: {e}"[:2000]
    d.note = _with_redraws(d.note, redrawn)
    return d


def repetition_penalty(cfg: DialogueConfig, model) -> float:
    """The penalty a role's requests use: the configured one, or (None, "auto") the model's own default."""
    return cfg.repetition_penalty if cfg.repetition_penalty is not None else getattr(model, "repetition_penalty", 1.0)


def _finished_text(c: Completion, cfg: DialogueConfig) -> tuple[str, str, int]:
    """(cleaned text, finish reason, tokens counted against the limit) of one completion; a message cut
    by the limit is trimmed to its last complete sentence when `on_length` is "trim"."""
    text, finish, used = clean_message(c.text), c.finish_reason, c.completion_tokens
    if finish == "length" and cfg.on_length == "trim" and not cfg.ignore_eos:
        trimmed = trim_to_sentence(text)
        if trimmed:  # within the limit once trimmed; nothing left: rejected as over the limit
            text, finish, used = trimmed, "length-trimmed", 0
    return text, finish, used


REDRAWN = "redrawn: "


def _with_redraws(note: str, redrawn: list[str]) -> str:
    """The note, followed by every message sampled again and why (one line each)."""
    if not redrawn:
        return note
    return "\n".join([note] * bool(note) + [f"{REDRAWN}{w}" for w in redrawn])


def _end_early(d: Dialogue, pair: int, reason: str, cfg: DialogueConfig, what: str, redrawn: list[str]) -> Dialogue:
    """A bad message ends the dialogue: keep its complete pairs if there are enough.

    The note keeps the offending message, so every rejection can be read and explained."""
    d.turns = d.turns[: 2 * pair]
    if pair >= cfg.min_accepted_pairs:
        d.note = f"ended early at {what}"
    else:
        d.status, d.reason, d.note = "rejected", reason, what
    d.note = _with_redraws(d.note, redrawn)
    return d
