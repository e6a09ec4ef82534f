"""Golden tests of the Moshi text stream on hand-made spans; expected streams written by hand.

Ids: pad 3, epad 0, zero -1, BOS 1, EOS 2. Most tests run at 10 Hz, where frame t covers
[0.1 t, 0.1 (t + 1)) s and a word starting at s gets frame floor(10 s); starts are kept off
frame boundaries unless the boundary itself is what is tested.
"""
from __future__ import annotations

import random
from collections import Counter

import pytest

from pipeline.tokens.interleave import text_stream
from pipeline.core.types import WordSpan

TOK = {"a": [11], "bb": [21, 22], "ccc": [31, 32, 33], "dddd": [41, 42, 43, 44], "x": [51], "y": [61]}
A = "assistant"
U = "user"


def tok(word: str) -> list[int]:
    return TOK[word]


def main_only_tok(word: str) -> list[int]:
    if word in ("x", "y"):
        raise AssertionError("other speakers' words must not be tokenized")
    return TOK[word]


def stream(words, num_frames, frame_rate_hz=10.0, **kw):
    return text_stream(words, num_frames, frame_rate_hz, tok, **kw)


# --- end-of-padding and frame rounding ---------------------------------------------------------


def test_epad_before_each_word_after_padding():
    words = [("bb", 0.35, 0.6, A), ("a", 0.85, 0.9, A)]
    assert stream(words, 10) == [3, 3, 0, 21, 22, 3, 3, 0, 11, 3]


def test_no_epad_at_frame_zero_nor_right_after_tokens():
    assert stream([("a", 0.0, 0.1, A)], 4) == [11, 3, 3, 3]
    # "a" starts (frame 2) right after the last token of "bb" (frame 1): no padding to end.
    assert stream([("bb", 0.0, 0.2, A), ("a", 0.25, 0.3, A)], 5) == [21, 22, 11, 3, 3]


def test_start_frame_is_first_frame_whose_end_passes_the_start():
    # 12.5 Hz: 0.08 s is exactly the end of frame 0, so the word starts in frame 1;
    # 0.079 s is inside frame 0; 0.239 s = 2.99 frames -> frame 2.
    assert text_stream([("a", 0.08, 0.1, A)], 3, 12.5, tok) == [0, 11, 3]
    assert text_stream([("a", 0.079, 0.1, A)], 3, 12.5, tok) == [11, 3, 3]
    assert text_stream([("a", 0.239, 0.3, A)], 4, 12.5, tok) == [3, 0, 11, 3]
    # A start before 0 s maps to frame 0.
    assert stream([("a", -0.05, 0.1, A)], 2) == [11, 3]


# --- tokens vs. spans --------------------------------------------------------------------------


def test_tokens_continue_past_end_until_next_word():
    # "dddd" spans 0.15-0.2 s (frame 1) but its 4 tokens run to frame 4.
    words = [("dddd", 0.15, 0.2, A), ("a", 0.75, 0.8, A)]
    assert stream(words, 10) == [0, 41, 42, 43, 44, 3, 0, 11, 3, 3]


def test_next_word_replaces_unfinished_tokens():
    stats: dict[str, int] = {}
    words = [("dddd", 0.15, 0.2, A), ("a", 0.35, 0.4, A)]
    assert stream(words, 6, stats=stats) == [0, 41, 42, 11, 3, 3]
    assert stats == {"dropped_tokens": 2, "truncated_tokens": 0, "dropped_words": 0}


def test_keep_and_shift_keeps_unfinished_tokens():
    stats: dict[str, int] = {}
    words = [("dddd", 0.15, 0.2, A), ("a", 0.35, 0.4, A)]
    assert stream(words, 7, keep_and_shift=True, stats=stats) == [0, 41, 42, 43, 44, 11, 3]
    assert stats["dropped_tokens"] == 0


def test_two_words_in_one_frame():
    words = [("bb", 0.20, 0.24, A), ("ccc", 0.25, 0.5, A)]  # both start in frame 2
    stats: Counter[str] = Counter()
    assert stream(words, 7, stats=stats) == [3, 0, 31, 32, 33, 3, 3]
    assert stats["dropped_tokens"] == 2
    assert stream(words, 7, keep_and_shift=True) == [3, 0, 21, 22, 31, 32, 33]


def test_words_are_sorted_by_start():
    words = [("a", 0.55, 0.6, A), ("bb", 0.15, 0.3, A)]
    assert stream(words, 7) == [0, 21, 22, 3, 0, 11, 3]


def test_zero_duration_words_are_dropped():
    stats: dict[str, int] = {}
    assert stream([("bb", 0.15, 0.15, A), ("a", 0.35, 0.3, A)], 5, stats=stats) == [3] * 5
    assert stats["dropped_words"] == 2


# --- length and zero padding -------------------------------------------------------------------


def test_zero_padding_past_the_audio():
    stats: dict[str, int] = {}
    # "a" starts in frame 5, past the 5 frames of audio: never emitted, and frame 4 stays padding.
    words = [("bb", 0.15, 0.3, A), ("a", 0.55, 0.6, A)]
    assert stream(words, 8, audio_num_frames=5, stats=stats) == [0, 21, 22, 3, 3, -1, -1, -1]
    assert stats == {"dropped_tokens": 0, "truncated_tokens": 0, "dropped_words": 1}


def test_tokens_cut_at_the_end_of_the_audio():
    stats: dict[str, int] = {}
    assert stream([("ccc", 0.35, 0.4, A)], 6, audio_num_frames=4, stats=stats) == [3, 3, 0, 31, -1, -1]
    assert stats["truncated_tokens"] == 2


def test_words_beyond_num_frames_are_dropped():
    stats: dict[str, int] = {}
    assert stream([("a", 0.15, 0.2, A), ("bb", 1.25, 1.3, A)], 10, stats=stats) == [0, 11] + [3] * 8
    assert stats["dropped_words"] == 1


@pytest.mark.parametrize(
    ("num_frames", "audio_num_frames", "expected"),
    [
        (0, None, []),
        (3, None, [3, 3, 3]),
        (3, 10, [3, 3, 3]),
        (3, 0, [-1, -1, -1]),
        (4, 2, [3, 3, -1, -1]),
    ],
)
def test_length_is_always_num_frames_without_words(num_frames, audio_num_frames, expected):
    assert stream([], num_frames, audio_num_frames=audio_num_frames) == expected


# --- BOS / EOS ---------------------------------------------------------------------------------


def test_bos_eos_mark_main_turns():
    words = [
        ("x", 0.0, 0.2, U),  # the user speaks first: no EOS
        ("a", 0.35, 0.4, A),  # main turn starts: BOS prepended -> [1, 11]
        ("bb", 0.55, 0.6, A),
        ("y", 0.95, 1.0, U),  # another speaker after the main one: a lone EOS at frame 9
        ("a", 1.25, 1.3, A),  # BOS again
    ]
    out = text_stream(words, 15, 10.0, main_only_tok, bos_id=1, eos_id=2)
    assert out == [3, 3, 0, 1, 11, 21, 22, 3, 0, 2, 3, 0, 1, 11, 3]


def test_main_speaker_first_and_last_gets_bos_and_no_eos():
    words = [("a", 0.0, 0.1, A), ("bb", 0.25, 0.3, A)]
    assert stream(words, 5, bos_id=1, eos_id=2) == [1, 11, 21, 22, 3]


def test_bos_or_eos_alone():
    words = [("a", 0.05, 0.1, A), ("x", 0.25, 0.3, U)]
    assert stream(words, 5, eos_id=2) == [11, 0, 2, 3, 3]
    assert stream(words, 5, bos_id=1) == [1, 11, 3, 3, 3]


def test_eos_replaces_unfinished_main_tokens():
    words = [("dddd", 0.05, 0.1, A), ("x", 0.25, 0.3, U)]
    assert stream(words, 5, bos_id=1, eos_id=2) == [1, 41, 2, 3, 3]


# --- delay -------------------------------------------------------------------------------------


def test_positive_delay_puts_text_earlier_and_drops_words_ending_before_it():
    words = [("a", 0.0, 0.2, A), ("bb", 0.15, 0.3, A), ("ccc", 0.55, 0.7, A)]
    assert stream(words, 8) == [11, 21, 22, 3, 0, 31, 32, 33]
    stats: dict[str, int] = {}
    # delay 0.2 s: "a" ends at 0.2 s <= 0.2 s -> dropped; "bb" -> -0.05 s (frame 0); "ccc" -> 0.35 s.
    assert stream(words, 8, delay_s=0.2, stats=stats) == [21, 22, 0, 31, 32, 33, 3, 3]
    assert stats["dropped_words"] == 1


def test_negative_delay_zero_fills_the_first_frames():
    # -0.25 s: int(2.5) = 2 frames of zeros; "bb" moves from 0.1 s to 0.35 s (frame 3).
    assert stream([("bb", 0.1, 0.2, A)], 7, delay_s=-0.25) == [-1, -1, 0, 21, 22, 3, 3]
    # -0.35 s: 3 frames of zeros, which cover the end-of-padding of a word moved to frame 3.
    assert stream([("bb", 0.0, 0.2, A)], 6, delay_s=-0.35) == [-1, -1, -1, 21, 22, 3]
    # More zero frames than frames: still num_frames long.
    assert stream([("bb", 0.0, 0.2, A)], 2, delay_s=-0.5) == [-1, -1]


# --- speakers and inputs -----------------------------------------------------------------------


def test_other_speakers_words_are_ignored():
    words = [("x", 0.0, 0.3, U), ("a", 0.15, 0.2, A), ("y", 0.25, 0.4, U)]
    assert text_stream(words, 4, 10.0, main_only_tok) == [0, 11, 3, 3]
    assert stream(words, 4, main_speaker=U) == [51, 0, 61, 3]


def test_wordspans_and_moshi_finetune_alignments_are_accepted():
    spans = [WordSpan("bb", 0.35, 0.6, A), WordSpan("x", 0.5, 0.6, U)]
    moshi = [("bb", (0.35, 0.6), A), ("x", (0.5, 0.6), U)]
    assert stream(spans, 6) == stream(moshi, 6) == [3, 3, 0, 21, 22, 3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="frame_rate_hz"):
        stream([], 3, frame_rate_hz=0)
    with pytest.raises(ValueError, match="num_frames"):
        stream([], -1)


# --- random alignments -------------------------------------------------------------------------


def _random_case(rng: random.Random, frame_rate_hz: float):
    """Main words with distinct start frames (so none is replaced before its first token),
    interleaved with other-speaker words; tokens >= 10, never a special id."""
    words, tokens = [], {}
    t_s = rng.uniform(0, 0.5)
    for k in range(rng.randrange(0, 15)):
        t_s += rng.uniform(1.05, 6.0) / frame_rate_hz  # > 1 frame after the previous start
        word = f"w{k}"
        tokens[word] = [rng.randrange(10, 32000) for _ in range(rng.randrange(1, 5))]
        words.append((word, t_s, t_s + rng.uniform(0.01, 0.6), A))
        if rng.random() < 0.3:
            words.append(("other", t_s + 0.01, t_s + 0.3, U))
    return words, tokens


@pytest.mark.parametrize("keep_and_shift", [False, True])
def test_random_alignments_invariants(keep_and_shift):
    rng = random.Random(1234)
    for _ in range(300):
        frame_rate_hz = rng.choice([12.5, 10.0, 25.0])
        words, tokens = _random_case(rng, frame_rate_hz)
        num_frames = rng.randrange(0, 120)
        audio_num_frames = rng.choice([None, rng.randrange(0, 130)])
        text_num_frames = num_frames if audio_num_frames is None else min(num_frames, audio_num_frames)
        stats: Counter[str] = Counter()
        rng.shuffle(words)
        out = text_stream(
            words, num_frames, frame_rate_hz, lambda w: tokens[w], main_speaker=A,
            keep_and_shift=keep_and_shift, audio_num_frames=audio_num_frames, stats=stats,
        )
        assert len(out) == num_frames
        assert out[text_num_frames:] == [-1] * (num_frames - text_num_frames)
        assert -1 not in out[:text_num_frames]

        main = sorted((w for w in words if w[3] == A), key=lambda w: w[1])
        starts = {int(w[1] * frame_rate_hz): tokens[w[0]] for w in main}
        emitted = [x for x in out if x >= 10]
        # Every token is emitted, cut by the next word, or cut by the end of the text.
        started = [tokens[w[0]] for w in main if int(w[1] * frame_rate_hz) < text_num_frames]
        assert len(emitted) + stats["dropped_tokens"] + stats["truncated_tokens"] == sum(map(len, started))
        assert stats["dropped_words"] == len(main) - len(started)
        if keep_and_shift:
            # Nothing is dropped: the emitted tokens are the words' tokens in order, cut at the end.
            assert stats["dropped_tokens"] == 0
            assert emitted == [x for toks in started for x in toks][: len(emitted)]
        else:
            # Each started word's first token is emitted in its start frame, so in order.
            for frame, toks in starts.items():
                if frame < text_num_frames:
                    assert out[frame] == toks[0]
            firsts = [toks[0] for toks in started]
            it = iter(emitted)
            assert all(any(x == f for x in it) for f in firsts)
        # End-of-padding only right before a frame that starts emitting after padding.
        for t, x in enumerate(out[:text_num_frames]):
            if x == 0:
                assert t + 1 < text_num_frames and out[t + 1] >= 10
                assert keep_and_shift or t + 1 in starts
        for frame in starts:
            if 0 < frame < text_num_frames:
                assert out[frame - 1] != 3
