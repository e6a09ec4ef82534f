"""The dialogue plan and the role views (pure parts of the protocol)."""
import pytest

from pipeline.dialogues import DialogueConfig, dialogue_id, dialogue_seed, make_plan, role_view
from pipeline.types import DEFAULT_COMB_POOL, INSTRUCTIONS, Turn

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
