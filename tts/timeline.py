"""Lay the spoken turns of one dialogue out on two channels: ch0 assistant, ch1 user.

`layout` is pure and deterministic given `seed`. Times are in seconds, positions in samples at
`sample_rate_hz` (24 kHz, Mimi's rate); every utterance is resampled to that rate first.

Placement: the first turn starts at `lead_s`. Each later turn starts after the previous turn's
end plus a gap drawn uniformly in `gap_s`; or, with probability `overlap_prob` and only when the
two turns are on different channels, up to `max_overlap_s` before the previous turn's end
(an overlap drawn uniformly in [0, max_overlap_s]), but never before the previous turn's start,
and never before the end of the last turn on its own channel (no overlap within a channel).
The audio ends `tail_s` after the last speech. A turn's channel follows its role, whatever the
order (dialogues alternate user, assistant, ...). Each later turn takes three draws from
`random.Random(seed)` in a fixed order (overlap?, gap, overlap length), so changing
`overlap_prob` does not shift the other draws.

Mimi codes: when every `Utterance` has `codes` (`[8, frames]` at 12.5 Hz, made by the kyutai
backend itself), turn starts are rounded to whole Mimi frames (1920 samples at 24 kHz, 80 ms),
so each turn's codes can be copied at its frame offset, and `SpeechSample.codes` is assembled as
`[16, frames]`: rows 0-7 the assistant channel, rows 8-15 the user channel, with `silence_codes`
(`[8]`, the codes of a silent frame: `Codec.silence_codes()`) in every frame where a channel has
no turn. A turn occupies `codes.shape[1]` frames from its start frame; the audio is padded to a
whole number of frames. A start is the frame nearest the drawn time, clamped so that gaps stay
in `gap_s` (when the range is at least one frame wide) and overlaps within `max_overlap_s`; the
other constraints (never before the previous start, no overlap within a channel) are enforced on
the frames the turns' codes occupy. When some utterances have codes and others do not, no codes
are assembled and starts are not rounded.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from pipeline.core.types import Role, SpeechSample, TurnSpan, Utterance, WordSpan
from tts.audio import resample

CHANNEL: dict[str, int] = {"assistant": 0, "user": 1}
MIMI_SAMPLES_PER_FRAME = 1920  # at 24 kHz: 12.5 frames per second
MIMI_NUM_CODEBOOKS = 8


def layout(
    dialogue_id: str,
    turns: Sequence[tuple[Role, str, Utterance]],
    *,
    seed: int,
    gap_s: tuple[float, float] = (0.2, 0.8),
    overlap_prob: float = 0.0,
    max_overlap_s: float = 0.25,
    sample_rate_hz: int = 24000,
    lead_s: float = 0.3,
    tail_s: float = 0.3,
    silence_codes: np.ndarray | None = None,
    samples_per_frame: int = MIMI_SAMPLES_PER_FRAME,
) -> SpeechSample:
    """Place `turns` (role, text, utterance), in order, on a two-channel timeline.

    Returns a `SpeechSample` with float32 audio `[2, samples]` at `sample_rate_hz`, the words of
    both speakers in global seconds sorted by start (speaker = the turn's role), one `TurnSpan`
    per turn, and `codes` `[16, frames]` when every utterance has codes (see the module doc;
    `silence_codes` is then required).
    """
    if not turns:
        raise ValueError(f"dialogue {dialogue_id}: no turns to lay out")
    lo, hi = float(gap_s[0]), float(gap_s[1])
    if not 0.0 <= lo <= hi:
        raise ValueError(f"gap_s must be 0 <= low <= high, got {gap_s}")
    if not 0.0 <= overlap_prob <= 1.0 or max_overlap_s < 0:
        raise ValueError(f"overlap_prob must be in [0, 1] and max_overlap_s >= 0, got {overlap_prob}, {max_overlap_s}")
    for role, _, _ in turns:
        if role not in CHANNEL:
            raise ValueError(f"dialogue {dialogue_id}: unknown role {role!r}: use 'user' or 'assistant'")

    with_codes = all(u.codes is not None for _, _, u in turns)
    if with_codes:
        if silence_codes is None:
            raise ValueError(
                f"dialogue {dialogue_id}: the utterances have Mimi codes; pass silence_codes "
                "(Codec.silence_codes()) to fill the frames between turns"
            )
        silence = np.asarray(silence_codes).reshape(-1)
        if silence.shape != (MIMI_NUM_CODEBOOKS,):
            raise ValueError(f"silence_codes must have shape [8], got {np.shape(silence_codes)}")
    # Quantum of a start position in samples: a Mimi frame with codes, else one sample.
    step = samples_per_frame if with_codes else 1

    for _, _, u in turns:
        if np.ndim(u.audio) != 1:
            raise ValueError(f"dialogue {dialogue_id}: utterance audio must be mono [samples], got {np.shape(u.audio)}")
        if with_codes and (np.ndim(u.codes) != 2 or np.shape(u.codes)[0] != MIMI_NUM_CODEBOOKS):
            raise ValueError(f"dialogue {dialogue_id}: utterance codes must be [8, frames], got {np.shape(u.codes)}")
    waves = [resample(u.audio, u.sample_rate_hz, sample_rate_hz) for _, _, u in turns]
    # Samples each turn holds its channel for: its audio, or its codes' frames if longer.
    spans = [
        max(len(w), u.codes.shape[1] * samples_per_frame) if with_codes else len(w)
        for w, (_, _, u) in zip(waves, turns)
    ]

    rng = random.Random(seed)
    starts: list[int] = []
    channel_free = [0, 0]  # first sample at which each channel is free again
    for i, ((role, _, _), wave) in enumerate(zip(turns, waves)):
        ch = CHANNEL[role]
        if i == 0:
            start = _quantize(lead_s * sample_rate_hz, step)
        else:
            prev_start, prev_end = starts[-1], starts[-1] + len(waves[i - 1])
            overlap = rng.random() < overlap_prob
            gap = rng.uniform(lo, hi)
            back = rng.uniform(0.0, max_overlap_s)
            if overlap and CHANNEL[turns[i - 1][0]] != ch:
                # Clamp to [prev_end - max_overlap_s, prev_end] and never before prev_start.
                earliest = max(prev_start, _ceil_to(prev_end - max_overlap_s * sample_rate_hz, step))
                latest = max(earliest, _floor_to(prev_end, step))
                start = min(max(_quantize(prev_end - back * sample_rate_hz, step), earliest), latest)
            else:
                # Clamp to [prev_end + low, prev_end + high] when a whole step fits there.
                earliest = _ceil_to(prev_end + lo * sample_rate_hz, step)
                latest = max(earliest, _floor_to(prev_end + hi * sample_rate_hz, step))
                start = min(max(_quantize(prev_end + gap * sample_rate_hz, step), earliest), latest)
        start = max(start, _ceil_to(channel_free[ch], step))
        starts.append(start)
        channel_free[ch] = start + spans[i]

    speech_end = max(s + len(w) for s, w in zip(starts, waves))
    total = speech_end + int(round(tail_s * sample_rate_hz))
    total = max(total, max(s + n for s, n in zip(starts, spans)))
    total = _ceil_to(total, step)

    audio = np.zeros((2, total), dtype=np.float32)
    words: list[WordSpan] = []
    spans_out: list[TurnSpan] = []
    for (role, text, utt), wave, start in zip(turns, waves, starts):
        ch = CHANNEL[role]
        audio[ch, start : start + len(wave)] = wave
        t0 = start / sample_rate_hz
        for w in utt.words:
            words.append(WordSpan(w.word, t0 + w.start_s, t0 + w.end_s, role))
        spans_out.append(TurnSpan(role, t0, t0 + len(wave) / sample_rate_hz, text, utt.voice))
    words.sort(key=lambda w: (w.start_s, w.end_s))

    codes = None
    if with_codes:
        frames = total // samples_per_frame
        codes = np.empty((2 * MIMI_NUM_CODEBOOKS, frames), dtype=np.int16)
        codes[:MIMI_NUM_CODEBOOKS] = silence.astype(np.int16)[:, None]
        codes[MIMI_NUM_CODEBOOKS:] = silence.astype(np.int16)[:, None]
        for (role, _, utt), start in zip(turns, starts):
            row = CHANNEL[role] * MIMI_NUM_CODEBOOKS
            f0 = start // samples_per_frame
            c = np.asarray(utt.codes)
            codes[row : row + MIMI_NUM_CODEBOOKS, f0 : f0 + c.shape[1]] = c
    return SpeechSample(dialogue_id, audio, sample_rate_hz, words, spans_out, codes)


def _quantize(samples: float, step: int) -> int:
    """Round a position in samples to the nearest multiple of `step` (not below 0)."""
    return max(0, int(round(samples / step)) * step)


def _ceil_to(samples: float, step: int) -> int:
    """The smallest multiple of `step` at or after `samples`."""
    return int(math.ceil(samples / step - 1e-9)) * step


def _floor_to(samples: float, step: int) -> int:
    """The largest multiple of `step` at or before `samples`."""
    return int(math.floor(samples / step + 1e-9)) * step
