"""tts/timeline.py on synthetic utterances: sine bursts with known word spans."""
import math

import numpy as np
import pytest

from pipeline.core.types import Utterance, WordSpan
from tts.timeline import layout

SR = 24000
FRAME = 1920


def make_utt(n_words: int, sr: int = SR, *, word_s: float = 0.25, pause_s: float = 0.1, freq: float = 440.0,
             voice: str = "v", codes_value: int | None = None) -> tuple[str, Utterance]:
    """`n_words` sine bursts of `word_s` separated by `pause_s`, with their spans as the words."""
    text = " ".join(f"w{i}" for i in range(n_words))
    pieces, words, t = [], [], 0.0
    for i in range(n_words):
        n = int(round(word_s * sr))
        pieces.append(0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr))
        words.append(WordSpan(f"w{i}", t, t + n / sr, "user"))
        t += n / sr
        if i < n_words - 1:
            p = int(round(pause_s * sr))
            pieces.append(np.zeros(p))
            t += p / sr
    audio = np.concatenate(pieces).astype(np.float32)
    codes = None
    if codes_value is not None:
        frames = math.ceil(len(audio) * SR / sr / FRAME)
        codes = np.full((8, frames), codes_value, dtype=np.int16)
        codes[:, 0] = codes_value + 1  # mark the first frame
    return text, Utterance(audio, sr, words, voice, codes)


def dialogue(lengths, *, sr=SR, codes=False):
    turns = []
    for i, n in enumerate(lengths):
        role = "user" if i % 2 == 0 else "assistant"
        text, utt = make_utt(n, sr, freq=300.0 + 100 * i, voice=f"voice-{role}",
                             codes_value=100 * (i + 1) if codes else None)
        turns.append((role, text, utt))
    return turns


def test_layout_without_overlap():
    turns = dialogue([3, 5, 2, 4, 1], sr=22050)
    s = layout("d1", turns, seed=7)
    assert s.dialogue_id == "d1" and s.sample_rate_hz == SR
    assert s.audio.dtype == np.float32 and s.audio.shape[0] == 2
    assert [t.role for t in s.turns] == ["user", "assistant", "user", "assistant", "user"]
    assert [t.text for t in s.turns] == [t[1] for t in turns]
    assert s.turns[0].voice == "voice-user" and s.turns[1].voice == "voice-assistant"
    assert s.turns[0].start_s == pytest.approx(0.3, abs=1 / SR)
    for a, b in zip(s.turns, s.turns[1:]):
        assert 0.2 - 1 / SR <= b.start_s - a.end_s <= 0.8 + 1 / SR
    assert s.duration_s - s.turns[-1].end_s == pytest.approx(0.3, abs=1 / SR)
    # Each turn's duration is its utterance's, resampled to 24 kHz.
    for t, (_, _, u) in zip(s.turns, turns):
        assert t.end_s - t.start_s == pytest.approx(len(u.audio) / u.sample_rate_hz, abs=1 / SR)

    # While one side speaks the other channel is exactly silent; outside all turns both are.
    speaking = np.zeros((2, s.audio.shape[1]), dtype=bool)
    for t in s.turns:
        ch = 0 if t.role == "assistant" else 1
        speaking[ch, round(t.start_s * SR) : round(t.end_s * SR)] = True
        assert np.all(s.audio[1 - ch, round(t.start_s * SR) : round(t.end_s * SR)] == 0)
    assert np.all(s.audio[~speaking] == 0)
    assert np.max(np.abs(s.audio[1])) > 0.4 and np.max(np.abs(s.audio[0])) > 0.4


def test_words_shifted_sorted_and_inside():
    turns = dialogue([3, 4, 2, 3])
    s = layout("d", turns, seed=1)
    assert len(s.words) == sum(len(u.words) for _, _, u in turns)
    starts = [w.start_s for w in s.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start_s < w.end_s <= s.duration_s for w in s.words)
    for t, (role, _, u) in zip(s.turns, turns):
        mine = [w for w in s.words if t.start_s <= w.start_s < t.end_s]
        assert [w.word for w in mine] == [w.word for w in u.words]
        assert all(w.speaker == role for w in mine)
        for g, local in zip(mine, u.words):
            assert g.start_s == pytest.approx(t.start_s + local.start_s, abs=1e-9)
            assert g.end_s == pytest.approx(t.start_s + local.end_s, abs=1e-9)
        # A word span covers its burst in the audio.
        ch = 0 if role == "assistant" else 1
        w = mine[0]
        mid = round((w.start_s + w.end_s) / 2 * SR)
        assert np.max(np.abs(s.audio[ch, mid - 100 : mid + 100])) > 0.3


def test_deterministic_in_seed():
    turns = dialogue([2, 3, 2, 3])
    a, b = layout("d", turns, seed=3), layout("d", turns, seed=3)
    assert np.array_equal(a.audio, b.audio) and a.turns == b.turns and a.words == b.words
    c = layout("d", turns, seed=4)
    assert [t.start_s for t in c.turns] != [t.start_s for t in a.turns]


@pytest.mark.parametrize("seed", range(12))
def test_overlaps_respect_limits(seed):
    # Short assistant turns, long user turns: the channel constraint has to bind sometimes.
    turns = []
    for i, n in enumerate([4, 1, 3, 1, 4, 1, 2]):
        role = "user" if i % 2 == 0 else "assistant"
        text, utt = make_utt(n, 22050 if role == "user" else SR, word_s=0.25 if role == "user" else 0.05)
        turns.append((role, text, utt))
    s = layout("d", turns, seed=seed, overlap_prob=0.7, max_overlap_s=0.25)
    eps = 1 / SR
    for i in range(1, len(s.turns)):
        prev, cur = s.turns[i - 1], s.turns[i]
        same_channel_end = max((t.end_s for t in s.turns[:i] if t.role == cur.role), default=0.0)
        # Never two turns at once on one channel.
        assert cur.start_s >= same_channel_end - eps
        assert cur.start_s >= prev.start_s - eps
        if cur.start_s < prev.end_s:  # an overlap
            assert prev.end_s - cur.start_s <= 0.25 + eps
        elif abs(cur.start_s - same_channel_end) > eps:  # not pushed back by its own channel
            assert cur.start_s - prev.end_s >= 0.2 - eps
    # Channel content is still exactly one turn at a time.
    for t in s.turns:
        assert np.max(np.abs(s.audio[0 if t.role == "assistant" else 1, round(t.start_s * SR) : round(t.end_s * SR)])) > 0


def test_overlap_happens_and_only_across_channels():
    turns = dialogue([3, 3, 3, 3, 3, 3])
    s = layout("d", turns, seed=0, overlap_prob=1.0, max_overlap_s=0.25)
    overlaps = [p.end_s - c.start_s for p, c in zip(s.turns, s.turns[1:])]
    assert all(0 <= o <= 0.25 + 1 / SR for o in overlaps)
    assert sum(o > 0.01 for o in overlaps) >= 3
    # Same role twice in a row: a gap, never an overlap.
    same = [("user", "a b", make_utt(2)[1]), ("user", "c d", make_utt(2)[1])]
    s2 = layout("d", same, seed=0, overlap_prob=1.0)
    assert s2.turns[1].start_s >= s2.turns[0].end_s + 0.2 - 1 / SR


def test_codes_assembled_on_frames():
    turns = dialogue([3, 4, 2, 3], codes=True)
    silence = np.arange(8, dtype=np.int16) + 2000
    s = layout("d", turns, seed=5, silence_codes=silence, overlap_prob=0.5)
    assert s.codes is not None and s.codes.dtype == np.int16
    assert s.audio.shape[1] % FRAME == 0
    assert s.codes.shape == (16, s.audio.shape[1] // FRAME)
    covered = np.zeros((2, s.codes.shape[1]), dtype=bool)
    for t, (role, _, u) in zip(s.turns, turns):
        start = round(t.start_s * SR)
        assert start % FRAME == 0
        f0, n = start // FRAME, u.codes.shape[1]
        rows = slice(0, 8) if role == "assistant" else slice(8, 16)
        assert np.array_equal(s.codes[rows, f0 : f0 + n], u.codes)
        covered[0 if role == "assistant" else 1, f0 : f0 + n] = True
    for ch in (0, 1):
        gap = s.codes[8 * ch : 8 * ch + 8][:, ~covered[ch]]
        assert gap.shape[1] > 0 and np.all(gap == silence[:, None])
    for a, b in zip(s.turns, s.turns[1:]):
        if b.start_s >= a.end_s:
            assert 0.2 - 1e-9 <= b.start_s - a.end_s <= 0.8 + 1e-9
        else:
            assert a.end_s - b.start_s <= 0.25 + 1e-9 and b.start_s >= a.start_s


def test_codes_need_silence_and_all_utterances():
    turns = dialogue([2, 2], codes=True)
    with pytest.raises(ValueError, match="silence_codes"):
        layout("d", turns, seed=0)
    mixed = [turns[0], dialogue([2, 2])[1]]
    s = layout("d", mixed, seed=0, silence_codes=np.zeros(8, dtype=np.int16))
    assert s.codes is None


def test_bad_input():
    with pytest.raises(ValueError, match="dialogue d: no turns to lay out"):
        layout("d", [], seed=0)
    with pytest.raises(ValueError, match="dialogue d: unknown role 'narrator': use 'user' or 'assistant'"):
        layout("d", [("narrator", "a", make_utt(1)[1])], seed=0)
