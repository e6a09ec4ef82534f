"""The dialogue plan and the role views (pure parts of the protocol)."""
import pytest

from pipeline.dialogue.protocol import DialogueConfig, dialogue_id, dialogue_seed, make_plan, role_view
from pipeline.core.types import DEFAULT_COMB_POOL, INSTRUCTIONS, Turn

CFG = DialogueConfig()


def test_plan_is_a_function_of_the_seed():
    a = make_plan("COMB", 1234, CFG)
    b = make_plan("COMB", 1234, CFG)
    assert a == b
    assert make_plan("COMB", 1235, CFG) != a


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_plan_pairs_and_instructions(instruction):
    counts = set()
    for seed in range(200):
        p = make_plan(instruction, seed, CFG)
        assert 8 <= p.num_pairs <= 16
        counts.add(p.num_pairs)
        assert len(p.request_seeds) == 2 * p.num_pairs
        assert len(set(p.request_seeds)) == len(p.request_seeds)
        if instruction == "COMB":
            assert p.instructions[0] == "COMB"
            assert set(p.instructions[1:]) <= set(DEFAULT_COMB_POOL)
            assert set(dict(p.options)) == {"p_length", "p_style", "p_tone", "p_view"}
        else:
            assert set(p.instructions) == {instruction}
            assert p.options == ()
    assert counts == set(range(8, 17))  # the whole 8..16 range is used


def test_comb_pool_is_configurable_and_all_used():
    cfg = DialogueConfig(comb_pool=("LOC", "NUM"))
    seen = set()
    for seed in range(50):
        seen |= set(make_plan("COMB", seed, cfg).instructions[1:])
    assert seen == {"LOC", "NUM"}
    seen = set()
    for seed in range(100):
        seen |= set(make_plan("COMB", seed, CFG).instructions[1:])
    assert seen == set(DEFAULT_COMB_POOL)


def test_seed_and_id_derive_from_their_parts():
    base = (0, "pixmo", "abc", "LOC", 0)
    assert dialogue_seed(*base) == dialogue_seed(*base)
    variants = [(1, "pixmo", "abc", "LOC", 0), (0, "docci", "abc", "LOC", 0), (0, "pixmo", "abd", "LOC", 0),
                (0, "pixmo", "abc", "NUM", 0), (0, "pixmo", "abc", "LOC", 1)]
    assert len({dialogue_seed(*v) for v in variants} | {dialogue_seed(*base)}) == 6
    assert len({dialogue_id(*v) for v in variants} | {dialogue_id(*base)}) == 6


def test_role_views():
    turns = [Turn("user", "Q1", "LOC"), Turn("assistant", "A1", "LOC"), Turn("user", "Q2", "LOC")]
    # the assistant answers Q2: it sees the dialogue as it is
    a = role_view("assistant", "SYS-A", "FS", turns)
    assert a == [{"role": "system", "content": "SYS-A"}, {"role": "user", "content": "Q1"},
                 {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    # the user asks Q3: forced start first, its own lines as assistant, the other's as user
    u = role_view("user", "SYS-U", "FS", turns[:2])
    assert u == [{"role": "system", "content": "SYS-U"}, {"role": "user", "content": "FS"},
                 {"role": "assistant", "content": "Q1"}, {"role": "user", "content": "A1"}]
    assert role_view("user", "S", "FS", []) == [{"role": "system", "content": "S"}, {"role": "user", "content": "FS"}]


# --- redraws: the protocol's answer to a bad message, driven by a scripted engine (pure protocol logic) ---
import asyncio  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from pipeline.dialogue.protocol import generate_dialogue  # noqa: E402
from pipeline.dialogue.engines import Completion  # noqa: E402
from pipeline.core.types import Caption, ImageRef, WorkItem, dialogue_from_row, dialogue_to_row  # noqa: E402


class ScriptedEngine:
    """Answers each request with `script(role, n_turns, seed)` -> (text, finish_reason); logs the seeds."""

    def __init__(self, script):
        self.model = SimpleNamespace(name="scripted")
        self.script, self.seeds = script, []

    async def chat(self, messages, sampling):
        role = "user" if messages[1]["role"] == "user" and messages[1]["content"] == FORCED else "assistant"
        n_turns = len(messages) - (2 if role == "user" else 1)
        self.seeds.append((role, n_turns, sampling.seed))
        text, finish = self.script(role, n_turns, sampling.seed)
        return Completion(text, finish, prompt_tokens=10, completion_tokens=sampling.max_tokens if finish == "length" else 7)


FORCED = "Start the conversation by asking a question about the image in any way you want!"
ITEM = WorkItem(id="d1", source="pixmo", instruction="LOC", seed=5, replica=0, input_shard=0, input_row=0,
                caption=Caption("c1", "pixmo", "A red kite over a sandy beach.", ImageRef(url="http://e/k.jpg")))
FIXED = DialogueConfig(min_pairs=8, max_pairs=8, min_accepted_pairs=8)


def _run(script, cfg=FIXED):
    eng = ScriptedEngine(script)
    d = asyncio.run(generate_dialogue(ITEM, {"user": eng, "assistant": eng}, cfg))
    return d, eng


def _fresh(role, n, seed):
    return (f"Where is thing {n}?" if role == "user" else f"Thing {n} is on the left."), "stop"


def test_forced_start_of_loc_is_the_one_the_scripted_engine_expects():
    import prompts

    assert prompts.render("LOC", "user", "x", {}).forced_start.strip() == FORCED.strip()


def test_a_repeated_message_is_redrawn_with_a_new_seed_and_listed_in_the_note():
    first_seed = {}

    def script(role, n, seed):
        first_seed.setdefault((role, n), seed)
        if role == "user" and n == 2 and seed == first_seed[(role, n)]:
            return "Where is thing 0?", "stop"  # the first question again
        return _fresh(role, n, seed)

    d, eng = _run(script)
    assert d.status == "ok" and d.num_pairs == 8 and not d.reason
    assert [t.text for t in d.turns[:3]] == ["Where is thing 0?", "Thing 1 is on the left.", "Where is thing 2?"]
    assert d.note == "redrawn: pair 2 user: repeated_message: 'Where is thing 0?'"
    seeds = [s for r, n, s in eng.seeds if (r, n) == ("user", 2)]
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    assert _run(script)[0].turns == d.turns  # redraw seeds derive from the plan: same dialogue again


def test_without_redraws_the_first_bad_message_rejects_the_dialogue():
    def script(role, n, seed):
        return ("Where is thing 0?", "stop") if role == "user" else _fresh(role, n, seed)

    d, _ = _run(script, DialogueConfig(min_pairs=8, max_pairs=8, min_accepted_pairs=8, redraws=0))
    assert d.status == "rejected" and d.reason == "repeated_message" and d.num_pairs == 1
    assert "redrawn" not in d.note and d.note.startswith("pair 2 user: repeated_message")
    # with the default redraws, a message that stays bad is tried 1 + 3 times, every try recorded
    d, eng = _run(script)
    assert d.status == "rejected" and d.reason == "repeated_message"
    assert d.note.count("\nredrawn: pair 2 user: repeated_message") == 3
    assert len([1 for r, n, _ in eng.seeds if (r, n) == ("user", 2)]) == 4


def test_generated_kept_and_wasted_tokens_count_every_request():
    """Each scripted message costs 7 tokens: a redraw, the turns cut when a dialogue ends early and every
    turn of a rejected dialogue are generated but wasted."""
    first_seed = {}

    def once_repeated(role, n, seed):
        first_seed.setdefault((role, n), seed)
        if role == "user" and n == 2 and seed == first_seed[(role, n)]:
            return "Where is thing 0?", "stop"
        return _fresh(role, n, seed)

    d, eng = _run(once_repeated)  # 16 kept messages + 1 redrawn
    assert d.status == "ok" and len(eng.seeds) == 17
    assert (d.generated_tokens, d.kept_tokens, d.wasted_tokens) == (17 * 7, 16 * 7, 7)

    def stuck(role, n, seed):  # pair 2's question repeats forever: 1 + 3 redraws, then rejected
        return ("Where is thing 0?", "stop") if role == "user" else _fresh(role, n, seed)

    d, eng = _run(stuck)
    assert d.status == "rejected" and d.num_pairs == 1 and len(eng.seeds) == 2 + 4
    assert (d.generated_tokens, d.kept_tokens, d.wasted_tokens) == (6 * 7, 0, 6 * 7)
    row = dialogue_to_row(d)
    assert (row["completion_tokens"], row["generated_tokens"], row["wasted_tokens"]) == (2 * 7, 6 * 7, 6 * 7)
    assert dialogue_from_row(row).generated_tokens == 6 * 7

    def late(role, n, seed):  # pair 9 of 10: the assistant repeats itself; 8 pairs are enough to keep
        if role == "assistant" and n == 17:
            return "Thing 1 is on the left.", "stop"
        return _fresh(role, n, seed)

    d, eng = _run(late, DialogueConfig(min_pairs=10, max_pairs=10, min_accepted_pairs=8, redraws=0))
    assert d.status == "ok" and d.num_pairs == 8 and len(eng.seeds) == 18
    assert (d.generated_tokens, d.kept_tokens, d.wasted_tokens) == (18 * 7, 16 * 7, 2 * 7)


def test_a_message_cut_by_the_limit_is_trimmed_by_default_or_redrawn_when_nothing_is_left():
    def script(role, n, seed):
        if role == "assistant" and n == 1:
            return "The kite is red. It flies over the", "length"
        if role == "assistant" and n == 3 and seed % 2:  # no full sentence: nothing to keep
            return "The kite flies over the sandy", "length"
        return _fresh(role, n, seed)

    d, _ = _run(script)
    assert d.turns[1].text == "The kite is red." and d.turns[1].finish_reason == "length-trimmed"
    assert d.status == "ok" and d.num_pairs == 8
    d, _ = _run(script, DialogueConfig(min_pairs=8, max_pairs=8, min_accepted_pairs=8, on_length="reject", redraws=0))
    assert d.status == "rejected" and d.reason == "message_over_token_limit"


def test_repetition_penalty_is_the_model_s_own_unless_configured():
    """`auto` (None) takes the model's default (SmolLM2: 1.1; others: 1.0, plain sampling); a configured value wins."""
    from dataclasses import replace

    from pipeline.dialogue.models import SMOLLM2_REPETITION_PENALTY

    seen = []

    class Recording(ScriptedEngine):
        async def chat(self, messages, sampling):
            seen.append(sampling.repetition_penalty)
            return await super().chat(messages, sampling)

    for model_rp, cfg_rp, want in ((SMOLLM2_REPETITION_PENALTY, None, 1.1), (1.0, None, 1.0), (1.1, 1.3, 1.3)):
        seen.clear()
        eng = Recording(_fresh)
        eng.model = SimpleNamespace(name="m", repetition_penalty=model_rp)
        d = asyncio.run(generate_dialogue(ITEM, {"user": eng, "assistant": eng}, replace(FIXED, repetition_penalty=cfg_rp)))
        assert d.status == "ok" and len(seen) == 16 and set(seen) == {want}


def test_a_sentence_said_twice_in_a_row_is_said_once():
    from pipeline.dialogue.filters import clean_message

    assert clean_message("You're stuck. You're stuck. you're STUCK! Let's go.") == "You're stuck. Let's go."
    assert clean_message("A dog. A cat. A dog.") == "A dog. A cat. A dog."  # not in a row: kept
