"""Checks shared by the speech backend tests: span validity, and spans against the sound itself."""
from __future__ import annotations

import numpy as np

from pipeline.core.types import Utterance


def check_utterance(u: Utterance, text: str) -> None:
    """One span per written word, in order, valid, inside the audio."""
    assert u.audio.dtype == np.float32 and u.audio.ndim == 1 and u.audio.size > 0
    assert float(np.max(np.abs(u.audio))) <= 1.0
    dur = len(u.audio) / u.sample_rate_hz
    assert [w.word for w in u.words] == text.split()
    last = 0.0
    for w in u.words:
        assert 0.0 <= w.start_s < w.end_s <= dur + 1e-9, w
        assert w.start_s >= last - 1e-9, f"starts go back at {w}"
        assert w.speaker == "assistant"
        last = w.start_s


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def inside_outside_rms(u: Utterance, skip: set[int] = frozenset()) -> tuple[float, float]:
    """RMS of the audio inside the word spans (words in `skip` left out) and outside every span."""
    sr = u.sample_rate_hz
    inside = np.zeros(len(u.audio), dtype=bool)
    covered = np.zeros(len(u.audio), dtype=bool)
    for i, w in enumerate(u.words):
        a, b = int(w.start_s * sr), int(w.end_s * sr)
        covered[a:b] = True
        if i not in skip:
            inside[a:b] = True
    return rms(u.audio[inside]), rms(u.audio[~covered])


def speech_regions(u: Utterance, window_s: float = 0.01, rel: float = 0.05, min_gap_s: float = 0.06):
    """(start_s, end_s) of the stretches where the sound is on: 10 ms windows louder than `rel`
    of the loudest one, with gaps shorter than `min_gap_s` bridged."""
    sr = u.sample_rate_hz
    n = int(window_s * sr)
    usable = (len(u.audio) // n) * n
    level = np.sqrt(np.mean(u.audio[:usable].reshape(-1, n).astype(np.float64) ** 2, axis=1))
    on = np.nonzero(level > rel * level.max())[0]
    regions: list[list[float]] = []
    for k in on:
        t0, t1 = k * window_s, (k + 1) * window_s
        if regions and t0 - regions[-1][1] < min_gap_s:
            regions[-1][1] = t1
        else:
            regions.append([t0, t1])
    return [tuple(r) for r in regions]


def check_row_words(row: dict) -> None:
    """A speech row's word spans: inside its audio, starts monotonic per speaker."""
    dur = row["num_samples"] / row["sample_rate_hz"]
    last: dict[str, float] = {}
    for w in row["words"]:
        assert 0.0 <= w["start_s"] < w["end_s"] <= dur + 1e-9, w
        assert w["start_s"] >= last.get(w["speaker"], 0.0) - 1e-9, f"starts go back at {w}"
        last[w["speaker"]] = w["start_s"]


def check_span_lines_up_with_the_sound(backend, voice: str, tolerance_s: float) -> None:
    """"Hello, world.": "Hello" ends where "Hello" said alone ends and where the sound before the comma's pause
    ends, "world" starts where the sound after it starts (within `tolerance_s`); spreading the words evenly
    over the characters would miss by more than that."""
    u = backend.synthesize("Hello, world.", voice)
    lone = backend.synthesize("Hello", voice)
    hello, world = u.words
    lone_end = speech_regions(lone)[-1][1]
    assert abs(hello.end_s - lone_end) < 0.1
    first, second = speech_regions(u)[:2]  # the comma makes a pause
    assert abs(hello.end_s - first[1]) < tolerance_s and abs(world.start_s - second[0]) < tolerance_s
    even_end = len(u.audio) / u.sample_rate_hz * len("Hello,") / len("Hello,world.")
    assert abs(even_end - lone_end) > 0.1
