"""Pairing eSpeak's phoneme words with written tokens (tts/phoneme_align.py); on real eSpeak output: tests/tts/test_piper.py."""
from __future__ import annotations

from tts.phoneme_align import align, proportional_sizes, split_at_units


def test_split_helpers():
    assert split_at_units(["w", "ˈ", "ɪ", "ð", "ð", "ə"], [3, 2]) == [["w", "ˈ", "ɪ", "ð"], ["ð", "ə"]]
    assert split_at_units(["ɪ", "n", "ˈ", "ð", "ə"], [2, 2]) == [["ɪ", "n"], ["ˈ", "ð", "ə"]]
    assert proportional_sizes(5, [3, 1, 1]) == [3, 1, 1]
    assert proportional_sizes(3, [2, 2]) in ([2, 1], [1, 2])
    assert sum(proportional_sizes(7, [1, 5, 2])) == 7 and min(proportional_sizes(7, [1, 5, 2])) >= 1


def test_fused_phoneme_word_is_split_at_the_isolated_boundaries():
    iso = {"in": ["ɪ", "n"], "the": ["ð", "ə"], "park": ["p", "ˈ", "ɑː", "ɹ", "k"]}
    words = [["ɪ", "n", "ð", "ə"], ["p", "ˈ", "ɑː", "ɹ", "k"]]  # eSpeak fused "in the"
    assert align(words, ["in", "the", "park"], iso.__getitem__) == [["ɪ", "n"], ["ð", "ə"], ["p", "ˈ", "ɑː", "ɹ", "k"]]
    assert align(words, ["in the", "park"], iso.get) == words  # one to one: taken as they are
