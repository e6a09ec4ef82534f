"""Moshi's text stream: one text token per audio frame, from word-level alignments.

A pure function reproducing the token stream of moshi-finetune's `Interleaver`
(`finetune/data/interleaver.py`: `text_padding=3`, `end_of_text_padding=0`, `zero_padding=-1`,
`in_word_padding` left at `text_padding`, `keep_main_only=True`), with the same conventions:

Frames. Frame `t` (0-based) covers `[t / frame_rate_hz, (t + 1) / frame_rate_hz)` seconds. A word
starting at `start_s` gets `start_frame = max(0, floor(start_s * frame_rate_hz))`: the first frame
whose *end* `(t + 1) / frame_rate_hz` is strictly greater than `start_s` (moshi-finetune's
`start * frame_rate < t + 1`). So a word starting exactly on a frame boundary `k / frame_rate_hz`
starts at frame `k`, and a start of 0.119 s at 12.5 Hz (1.49 frames) starts at frame 1.

Words. Words are sorted by `start_s` (stable). Only `main_speaker`'s words are emitted; each is
stripped and tokenized alone (`tokenize(word)`, no BOS/EOS). Words with `end_s <= start_s` are
dropped (moshi-finetune's `_keep_those_with_duration`).

Tokens. From `start_frame` on, a word's tokens are emitted one per frame, even past its `end_s`,
until they run out or the next word starts. A new word *replaces* the unfinished tokens of the
previous one (those are counted as `dropped_tokens`); with `keep_and_shift=True` they are kept and
the new word's tokens are queued after them (shifted later). If several words start in the same
frame, the last one wins (or, with `keep_and_shift`, all are queued in order).

Padding. Every frame without a token is `pad_id`. The frame just before a frame that emits a token
becomes `epad_id` if it held padding: in practice the frame before a word's first token, unless
that word starts in frame 0 or right after the previous word's last token. (moshi-finetune tests
the *value* of the previous frame; here a flag is kept, which differs only if a real word token
equals `pad_id`.)

BOS/EOS (moshi-finetune's symmetric `_insert_bos_eos`, computed on all speakers' words before the
other speakers are dropped). Walking the sorted words and comparing each speaker with the previous
word's speaker: when the main speaker speaks first or after another speaker, `bos_id` is prepended
to the tokens of that first word; when another speaker speaks right after the main speaker, a lone
`eos_id` is emitted as if it were a word with that other speaker's word times. Thus EOS lands at
the start frame of the next other-speaker word, *not* at the end of the main turn, and a main turn
that nothing follows gets no EOS. `bos_id=None` / `eos_id=None` disable either.

Delay (`delay_s`, moshi-finetune's `audio_delay`; text ahead of audio when > 0). If `delay_s != 0`,
words with `end_s <= delay_s` are dropped and the others shifted by `-delay_s` seconds; a start
that becomes negative maps to frame 0. If `delay_s < 0`, the first
`int(-delay_s * frame_rate_hz)` frames (truncated) are then set to `zero_id`.

Length. The text is built over `text_num_frames = min(num_frames, audio_num_frames)` frames
(`audio_num_frames` defaults to `num_frames`) and frames `text_num_frames..num_frames-1` hold
`zero_id`. The result always has exactly `num_frames` ids. The token worker passes the frames of a
row's codes as `num_frames` and the frames of its audio, `ceil(num_samples / 1920)`, as
`audio_num_frames`; a row's codes are its whole audio encoded, so the two are equal (checked in
tests/pipeline/tokens/test_speech_tokens_chain.py) and a row's stream holds no `zero_id`.

moshi-finetune does not fill the text past the encoded audio with the zero id. Its
`InterleavedTokenizer.__call__` (kyutai-labs/moshi-finetune at 2acc879,
finetune/data/interleaver.py:279-281) passes `this_num_audio_frames`, the number of frames Mimi
encoded from the segment's audio (:257-259), where `Interleaver.prepare_item` expects the segment's
duration in seconds (:212-215). `build_token_stream` therefore builds `ceil(frames * 12.5)` frames
of text (:177), 12.5 times too many, text padding (3) after the last word's tokens (:181), and
`torch.nn.functional.pad` to the segment's `num_audio_frames` (:252), with a negative width, cuts
them (:282-286). So in a segment whose audio ends early (the last one of a wav), the frames past
the audio hold what is left of the last word's tokens, then text padding 3, while the audio codes
there are `zero_padding` -1 (:260-264); only when `ceil(12.5 * frames)` falls short of the segment
(audio shorter than a 12.5th of it) is the rest -1. Over the encoded audio it builds the stream this
function builds: tests/pipeline/views/test_export_moshi_finetune.py re-implements its data path and
compares, frame by frame, the stream it builds from our export with the one stored in our rows.

Our rows follow the zero-id convention: a frame without audio gets `zero_id` in the text as its
audio codes do. moshi's `LMModel.forward` leaves frames whose code is `zero_token_id` out of the
loss, text and audio alike (moshi 0.2.13, moshi/models/lm.py:374-376), whereas text padding there
trains the text head to predict padding over frames that have no audio; our trainer pads past a
row's end with -1 too (docs/trainer.md). No row has such frames (above), so on our rows the two
conventions give the same stream.

Stats (added to `stats`, a dict or Counter, when given): `dropped_tokens` (tokens of a started
word cut because the next word started), `truncated_tokens` (tokens of a started word still
unemitted when the text ran out of frames), `dropped_words` (words, including EOS marks, dropped
for having no duration, by the delay, or starting at or after `text_num_frames`).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

Word = tuple[str, float, float, str]


def _as_tuple(w: Any) -> Word:
    """`(word, start_s, end_s, speaker)`, from such a tuple, a `WordSpan`, or moshi-finetune's
    `(word, (start_s, end_s), speaker)`."""
    if isinstance(w, (tuple, list)):
        if len(w) == 3:
            word, (start_s, end_s), speaker = w
            return str(word), float(start_s), float(end_s), str(speaker)
        word, start_s, end_s, speaker = w
        return str(word), float(start_s), float(end_s), str(speaker)
    return str(w.word), float(w.start_s), float(w.end_s), str(w.speaker)


def _count(stats: MutableMapping[str, int] | None, key: str, n: int) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


def text_stream(
    words: Iterable[Any],
    num_frames: int,
    frame_rate_hz: float,
    tokenize: Callable[[str], list[int]],
    *,
    pad_id: int = 3,
    epad_id: int = 0,
    zero_id: int = -1,
    bos_id: int | None = None,
    eos_id: int | None = None,
    delay_s: float = 0.0,
    main_speaker: str = "assistant",
    keep_and_shift: bool = False,
    audio_num_frames: int | None = None,
    stats: MutableMapping[str, int] | None = None,
) -> list[int]:
    """The main speaker's text stream: `num_frames` token ids, one per audio frame.

    `words`: `(word, start_s, end_s, speaker)` tuples or `WordSpan`s, times in seconds from the
    first frame. `tokenize(word) -> list[int]`: one word's tokens. See the module docstring for
    every convention (frame rounding, padding, BOS/EOS, delay, zero padding).
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not frame_rate_hz > 0:
        raise ValueError(f"frame_rate_hz must be > 0, got {frame_rate_hz}")
    if audio_num_frames is not None and audio_num_frames < 0:
        raise ValueError(f"audio_num_frames must be >= 0, got {audio_num_frames}")
    for key in ("dropped_tokens", "truncated_tokens", "dropped_words"):
        _count(stats, key, 0)

    spans = sorted((_as_tuple(w) for w in words), key=lambda w: w[1])

    # (tokens, start_s, end_s) of what the stream emits: main words, and EOS marks.
    items: list[tuple[list[int], float, float]] = []
    last_speaker: str | None = None
    for word, start_s, end_s, speaker in spans:
        if speaker == main_speaker:
            tokens = list(tokenize(word.strip()))
            if speaker != last_speaker and bos_id is not None:
                tokens.insert(0, bos_id)
            items.append((tokens, start_s, end_s))
        elif last_speaker == main_speaker and eos_id is not None:
            items.append(([eos_id], start_s, end_s))
        last_speaker = speaker

    kept = [it for it in items if it[1] < it[2]]
    if delay_s != 0:
        kept = [(toks, s - delay_s, e - delay_s) for toks, s, e in kept if e > delay_s]
    _count(stats, "dropped_words", len(items) - len(kept))

    text_num_frames = num_frames if audio_num_frames is None else min(num_frames, audio_num_frames)
    start_frames = [max(0, math.floor(s * frame_rate_hz)) for _, s, _ in kept]

    out = [pad_id] * text_num_frames
    is_pad = [True] * text_num_frames
    queue: deque[int] = deque()
    i = 0
    for t in range(text_num_frames):
        while i < len(kept) and start_frames[i] <= t:
            if keep_and_shift:
                queue.extend(kept[i][0])
            else:
                _count(stats, "dropped_tokens", len(queue))
                queue = deque(kept[i][0])
            i += 1
        if queue:
            if t > 0 and is_pad[t - 1]:
                out[t - 1] = epad_id
                is_pad[t - 1] = False
            out[t] = queue.popleft()
            is_pad[t] = False
    _count(stats, "truncated_tokens", len(queue))
    _count(stats, "dropped_words", len(kept) - i)

    if delay_s < 0:
        prefix_num_frames = min(int(-delay_s * frame_rate_hz), text_num_frames)
        out[:prefix_num_frames] = [zero_id] * prefix_num_frames
    return out + [zero_id] * (num_frames - text_num_frames)
