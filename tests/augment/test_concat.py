"""augment/: prefix/suffix concatenation at turn boundaries, the streamed generic pool, numpy rows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from augment import GenericPool, augment_stream, concat_augment, turn_ends
from augment.rows import RowStream, iter_token_rows, read_row_group, write_token_shard
from tests.augment import speech_row, text_row

VISUAL = speech_row("vis", (5, 7, 4, 6, 3), tag=1)
GENERIC = [speech_row(f"gen{i}", (4 + i, 6, 3 + i), lead=2, tag=10 + i, image={"url": None, "path": None,
                                                                                   "sha256": None}) for i in range(5)]
BY_ID = {r["id"]: r for r in GENERIC + [VISUAL]}


def _augmented(seed=0, step=0, row=VISUAL, generic=GENERIC, **kw):
    out = concat_augment(row, generic, p_concat=1.0, seed=seed, step=step, **kw)
    assert out["augment"], "p_concat=1 always augments"
    return out, json.loads(out["augment"])


def test_boundaries_lengths_and_visual_frames():
    for step in range(40):
        out, info = _augmented(step=step)
        parts = [info["prefix"], info["visual"], info["suffix"]]
        assert info["visual"]["id"] == "vis" and out["id"] == "vis" and out["image"] == VISUAL["image"]
        assert info["prefix"]["id"] != info["suffix"]["id"], "two different generic dialogues"
        off = 0
        for p in parts:
            src = BY_ID[p["id"]]
            assert 1 <= p["turns"] <= p["of"] == len(src["turn_start_frames"])
            # a cut at a turn boundary: the start of the next turn, or the row's end after its last turn
            ends = list(src["turn_start_frames"][1:]) + [src["num_frames"]]
            assert p["frames"] == ends[p["turns"] - 1]
            # text and all 16 codebooks of both channels come from the same frames of the same row
            np.testing.assert_array_equal(out["text_tokens"][off:off + p["frames"]], src["text_tokens"][:p["frames"]])
            np.testing.assert_array_equal(out["audio_codes"][:, off:off + p["frames"]],
                                          src["audio_codes"][:, :p["frames"]])
            off += p["frames"]
        assert off == out["num_frames"] == len(out["text_tokens"]) == out["audio_codes"].shape[1]
        assert out["audio_codes"].shape[0] == 16 and out["duration_s"] == pytest.approx(off / 12.5)
        assert out["visual_start_frame"] == parts[0]["frames"]
        assert out["visual_end_frame"] == parts[0]["frames"] + parts[1]["frames"]
        # the visual frames are exactly the (trimmed) visual dialogue
        vs, ve = out["visual_start_frame"], out["visual_end_frame"]
        np.testing.assert_array_equal(out["text_tokens"][vs:ve] // 10000, 1)
        assert not np.any(out["text_tokens"][:vs] // 10000 == 1) and not np.any(out["text_tokens"][ve:] // 10000 == 1)
        # turns: the kept ones, on the new time line, the visual dialogue's starting at its own lead-in
        n_p, n_v = parts[0]["turns"], parts[1]["turns"]
        tsf = out["turn_start_frames"]
        assert len(tsf) == len(out["turn_roles"]) == n_p + n_v + parts[2]["turns"]
        assert tsf[n_p] == vs + VISUAL["turn_start_frames"][0]
        assert np.all(np.diff(tsf) > 0)
        assert out["turn_roles"][n_p:n_p + n_v] == VISUAL["turn_roles"][:n_v]


def test_trim_lengths_vary_and_cover_all_turn_counts():
    seen = {"prefix": set(), "visual": set(), "suffix": set()}
    for step in range(200):
        _, info = _augmented(step=step)
        for k in seen:
            seen[k].add(info[k]["turns"])
    assert seen["visual"] == {1, 2, 3, 4, 5}
    assert seen["prefix"] == seen["suffix"] == {1, 2, 3}


def test_deterministic_given_seed_step_and_id():
    a, _ = _augmented(seed=7, step=3)
    b, _ = _augmented(seed=7, step=3)
    assert a["augment"] == b["augment"]
    np.testing.assert_array_equal(a["audio_codes"], b["audio_codes"])
    others = {_augmented(seed=7, step=s)[0]["augment"] for s in range(10)} | {_augmented(seed=8, step=3)[0]["augment"]}
    assert len(others) > 1
    assert concat_augment(VISUAL, GENERIC, p_concat=1, seed=1, step=2)["augment"] == \
        concat_augment(dict(VISUAL), list(GENERIC), p_concat=1, seed=1, step=2)["augment"]


def test_p_concat_zero_one_and_half():
    for step in range(50):
        out = concat_augment(VISUAL, GENERIC, p_concat=0.0, seed=0, step=step)
        assert out["augment"] == "" and out["text_tokens"] is VISUAL["text_tokens"]
        assert (out["visual_start_frame"], out["visual_end_frame"]) == (0, VISUAL["num_frames"])
        assert concat_augment(VISUAL, GENERIC, p_concat=1.0, seed=0, step=step)["augment"]
    n = sum(bool(concat_augment(VISUAL, GENERIC, p_concat=0.5, seed=0, step=s)["augment"]) for s in range(400))
    assert 150 < n < 250


def test_without_generic_pool_or_for_text_rows_unchanged():
    for pool in (None, []):
        out = concat_augment(VISUAL, pool, p_concat=1.0, seed=0, step=0)
        assert out["augment"] == "" and out["audio_codes"] is VISUAL["audio_codes"]
        assert (out["visual_start_frame"], out["visual_end_frame"]) == (0, VISUAL["num_frames"])
    t = text_row("t0")
    out = concat_augment(t, GENERIC, p_concat=1.0, seed=0, step=0)
    assert out["augment"] == "" and out["text_tokens"] is t["text_tokens"] and out["visual_end_frame"] == 6
    assert "visual_start_frame" not in VISUAL, "the input row is not modified"


def test_pool_of_one_row_is_prefix_and_suffix():
    _, info = _augmented(generic=GENERIC[:1])
    assert info["prefix"]["id"] == info["suffix"]["id"] == "gen0"


def test_lists_as_from_pyarrow_give_the_same_result():
    as_lists = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in VISUAL.items()}
    a, _ = _augmented(step=5)
    b, _ = _augmented(step=5, row=as_lists)
    assert a["augment"] == b["augment"]
    np.testing.assert_array_equal(a["audio_codes"], b["audio_codes"])
    assert b["text_tokens"].dtype == np.int32 and b["audio_codes"].dtype == np.int16


def test_words_are_shifted_with_their_part():
    def with_words(r):
        return {**r, "words": [{"word": f"{r['id']}-{i}", "start_s": s / 12.5, "end_s": s / 12.5 + 0.1,
                                "speaker": "user"} for i, s in enumerate(r["turn_start_frames"])]}
    out = concat_augment(with_words(VISUAL), [with_words(g) for g in GENERIC], p_concat=1, seed=0, step=1)
    info = json.loads(out["augment"])
    first_visual = [w for w in out["words"] if w["word"] == "vis-0"][0]
    assert first_visual["start_s"] == pytest.approx((info["prefix"]["frames"] + VISUAL["turn_start_frames"][0]) / 12.5)
    assert len(out["words"]) == len(out["turn_start_frames"])


def test_max_frames_lowers_turn_counts_down_to_one_each():
    for step in range(30):
        out, info = _augmented(step=step, max_frames=40)
        assert out["num_frames"] <= 40 or all(info[k]["turns"] == 1 for k in ("prefix", "visual", "suffix"))
    out, info = _augmented(step=0, max_frames=1)
    assert all(info[k]["turns"] == 1 for k in ("prefix", "visual", "suffix"))


def test_turn_ends_of_a_row_without_turns_is_the_whole_row():
    r = {**VISUAL, "turn_start_frames": [], "turn_roles": []}
    assert turn_ends(r).tolist() == [VISUAL["num_frames"]]
    out, info = _augmented(row=r)
    assert info["visual"]["frames"] == VISUAL["num_frames"]


def test_mismatched_codes_are_reported_with_the_row_id():
    bad = {**VISUAL, "audio_codes": VISUAL["audio_codes"][:, :-1]}
    with pytest.raises(ValueError, match="'vis'"):
        _augmented(row=bad)


# --- numpy rows from Parquet, the stream, the generic pool -----------------------------------------

@pytest.fixture
def generic_shards(tmp_path):
    rows = [speech_row(f"g{i:02d}", (3, 4, 5), tag=20 + i) for i in range(10)]
    rows.insert(3, speech_row("g-rejected", (3,), status="rejected"))
    a = write_token_shard(tmp_path / "generic/tokens-00000.parquet", rows[:6], row_group_rows=4)
    b = write_token_shard(tmp_path / "generic/tokens-00001.parquet", rows[6:], row_group_rows=4)
    return [a, b]


def test_rows_read_back_as_numpy(generic_shards):
    rows = read_row_group(generic_shards[0], 0)
    assert rows[0]["id"] == "g00" and rows[0]["audio_codes"].shape == (16, 15)
    np.testing.assert_array_equal(rows[0]["audio_codes"], speech_row("g00", (3, 4, 5), tag=20)["audio_codes"])
    assert [r["id"] for r in iter_token_rows(generic_shards)] == [f"g{i:02d}" for i in range(10)]


def test_row_stream_epochs_are_permutations_and_resume(generic_shards):
    s = RowStream("generic", generic_shards, seed=1)
    epoch0 = [s.next()["id"] for _ in range(10)]
    assert sorted(epoch0) == [f"g{i:02d}" for i in range(10)] and epoch0 != sorted(epoch0)
    first = s.next()["id"]
    st = s.state_dict()
    rest = [s.next()["id"] for _ in range(12)]
    s2 = RowStream("generic", generic_shards, seed=1)
    s2.load_state_dict(json.loads(json.dumps(st)))
    assert [s2.next()["id"] for _ in range(12)] == rest
    assert sorted([first] + rest[:9]) == sorted(epoch0), "epoch 1 is a permutation too"


def test_generic_pool_window_advance_and_state(generic_shards):
    pool = GenericPool(generic_shards, capacity=4, seed=0)
    assert len(pool) == 4 and pool.stream.row_groups_read <= 2, "lazy, streamed"
    ids0 = pool.ids()
    pool.advance(2)
    assert pool.ids()[:2] == ids0[2:]
    st = json.loads(json.dumps(pool.state_dict()))
    seq = []
    for _ in range(8):
        pool.advance(2)
        seq.append(pool.ids())
    again = GenericPool(generic_shards, capacity=4, seed=0)
    again.load_state_dict(st)
    out = []
    for _ in range(8):
        again.advance(2)
        out.append(again.ids())
    assert out == seq
    assert all("rejected" not in i for ids in seq for i in ids)


def test_generic_pool_smaller_than_capacity_is_the_whole_set(generic_shards):
    pool = GenericPool(generic_shards, capacity=64)
    assert sorted(pool.ids()) == [f"g{i:02d}" for i in range(10)]
    pool.advance(2)
    assert len(pool) == 10 and sorted(pool.ids()) == [f"g{i:02d}" for i in range(10)]


def test_augment_stream_steps_and_advances(generic_shards):
    pool = GenericPool(generic_shards, capacity=4, seed=0)
    rows = [speech_row(f"v{i}", (4, 4), tag=2) for i in range(6)]
    ref_pool = GenericPool(generic_shards, capacity=4, seed=0)
    out = list(augment_stream(rows, pool, p_concat=1.0, seed=3, start_step=10))
    for i, (r, o) in enumerate(zip(rows, out)):
        expect = concat_augment(r, ref_pool, p_concat=1.0, seed=3, step=10 + i)
        assert o["augment"] == expect["augment"]
        ref_pool.advance(2)
