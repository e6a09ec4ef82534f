"""`ssvd export --format moshi-finetune` gives moshi-finetune the text stream our token rows hold, frame for frame.

moshi-finetune builds the text stream itself, from the exported word times. `mf_text_stream` is its data path
re-implemented here from a reading of its code (kyutai-labs/moshi-finetune at 2acc879, 2025-07-07), for the
`Interleaver` its train.py builds (train.py:155-162: the model's ids, text padding 3, end-of-text padding 0,
zero padding -1, and `keep_main_only=True`; `in_word_padding`, `use_bos_eos`, `keep_and_shift` and `audio_delay`
left at their defaults), fed as its `InterleavedTokenizer` feeds it (finetune/data/interleaver.py:247-286).
Words are tokenized with our text tokenizer on both sides: the rows were built with it (the offline stand-in,
whose ids are not Moshi's), and what is compared is where each word's tokens and each padding land.
"""
from __future__ import annotations

import bisect
import json
import math
import random
import shutil
from collections import deque

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.tokens.interleave import text_stream
from pipeline.tokens.text_tokenizer import load_text_tokenizer
from pipeline.views.export import alignments

FRAME_RATE_HZ = 12.5  # Mimi's, as moshi-finetune reads it (mimi.frame_rate, train.py:157)
SAMPLES_PER_FRAME = 1920  # 24 kHz / 12.5 Hz
TEXT_PADDING, END_OF_TEXT_PADDING, ZERO_PADDING = 3, 0, -1
MAIN = "SPEAKER_MAIN"


def mf_text_stream(al: list, start_sec: float, duration_sec: float, this_num_audio_frames: int, tokenize) -> list[int]:
    """The text stream moshi-finetune builds for the segment `[start_sec, start_sec + duration_sec)` of a wav whose
    segment Mimi encodes into `this_num_audio_frames` frames, from the wav's alignments `al` (as in its json).
    Checked once against moshi-finetune's own `Interleaver` (at 2acc879, built as train.py builds it, on the CPU):
    equal on 500 dialogues drawn by `_random_words`."""
    num_audio_frames = math.ceil(duration_sec * FRAME_RATE_HZ)  # interleaver.py:252
    # interleaver.py:272-277 (`dicho` is a lower-bound binary search on the starts, :235-244): the words starting
    # inside the segment, times made relative to its start.
    starts = [a[1][0] for a in al]
    lo, hi = bisect.bisect_left(starts, start_sec), bisect.bisect_left(starts, start_sec + duration_sec)
    seg = [(w, (s - start_sec, e - start_sec), spk) for w, (s, e), spk in al[lo:hi]]
    # prepare_item, interleaver.py:222-229: sorted by start (stably), each stripped word tokenized alone (no BOS,
    # :119-125), the main speaker's only (:127-130), then words without duration dropped (:132-136).
    seg = sorted(seg, key=lambda a: a[1][0])
    words = [(tokenize(w.strip()), ts) for w, ts, spk in seg if spk == MAIN]
    words = [(toks, ts) for toks, ts in words if ts[0] < ts[1]]
    # interleaver.py:279-281 passes the number of frames where prepare_item takes seconds: build_token_stream makes
    # ceil(frames * 12.5) frames of text (:177).
    T = math.ceil(this_num_audio_frames * FRAME_RATE_HZ)
    out = [TEXT_PADDING] * T  # :181
    i, stack, last_word_end = 0, deque(), -1
    for t in range(T):  # :185-206
        while i < len(words) and words[i][1][0] * FRAME_RATE_HZ < t + 1:
            stack = deque(words[i][0])  # a new word replaces what is left of the previous one
            last_word_end = int(words[i][1][1] * FRAME_RATE_HZ)
            i += 1
        if stack:
            if t > 0 and out[t - 1] == TEXT_PADDING:  # `in [text_padding, in_word_padding]`, both 3 here
                out[t - 1] = END_OF_TEXT_PADDING
            out[t] = stack.popleft()
        elif t <= last_word_end:
            out[t] = TEXT_PADDING  # in_word_padding defaults to text_padding
    # interleaver.py:282-286: torch's pad to the segment's frames cuts what is longer, fills what is shorter with -1.
    return out[:num_audio_frames] + [ZERO_PADDING] * (num_audio_frames - T)


@pytest.fixture(scope="module")
def rows(tokens_dir):
    """The token rows of the session's small corpus (tests/conftest.py: 3 fixture dialogues, piper assistant,
    espeak users, random codec, stand-in tokenizer), exported by the session fixture `moshi_finetune_exports`."""
    rows = [r for f in sorted(tokens_dir.glob("tokens-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 3 and all(r["status"] == "ok" and r["kind"] == "speech" for r in rows)
    return rows


def _tokenize():
    return load_text_tokenizer(None).encode  # what the rows were built with (TokenSpec.tokenizer None)


def mismatches(export_dir, rows) -> dict[str, list[int]]:
    """Per dialogue: the frames where moshi-finetune's text stream, built from the export as one segment holding
    the whole dialogue, differs from the stream stored in its token row (empty lists: equal on every frame)."""
    tokenize = _tokenize()
    index = {e["path"]: e for e in map(json.loads, (export_dir / "index.jsonl").read_text().splitlines())}
    out = {}
    for r in rows:
        path = f"audio/{r['split']}-{r['id']}.wav"
        wav = export_dir / path
        n = r["num_frames"]
        this_num_audio_frames = math.ceil(sf.info(wav).frames / SAMPLES_PER_FRAME)  # what Mimi encodes of the wav
        assert this_num_audio_frames == n, (path, this_num_audio_frames, n)
        duration_sec = math.ceil(index[path]["duration"]) + 1.0  # a segment longer than the dialogue
        al = json.loads(wav.with_suffix(".json").read_text())["alignments"]
        mf = mf_text_stream(al, 0.0, duration_sec, this_num_audio_frames, tokenize)
        # past the encoded audio: text padding (after what is left of the last word's tokens), not -1
        assert ZERO_PADDING not in mf[n:] and mf[-1] == TEXT_PADDING
        stored = r["text_tokens"]
        assert len(stored) == n
        out[r["id"]] = [t for t in range(n) if mf[t] != stored[t]]
    return out


@pytest.mark.parametrize("stage", ["tokens", "speech"])
def test_moshi_finetune_rebuilds_the_stored_text_stream_frame_for_frame(moshi_finetune_exports, rows, stage):
    assert mismatches(moshi_finetune_exports[stage], rows) == {r["id"]: [] for r in rows}
    for r in rows:  # the streams compared hold the assistant's words, not padding only
        words = sum(1 for w in r["words"] if w["speaker"] == "assistant")
        assert words >= 10 and sum(1 for t in r["text_tokens"] if t not in (TEXT_PADDING, END_OF_TEXT_PADDING)) >= words
        assert r["text_tokens"].count(END_OF_TEXT_PADDING) >= 2


def test_exported_word_times_are_the_token_rows_times(moshi_finetune_exports, rows):
    for r in rows:
        f = moshi_finetune_exports["tokens"] / "audio" / f"{r['split']}-{r['id']}.json"
        al = json.loads(f.read_text())["alignments"]
        speaker = {"assistant": MAIN, "user": "SPEAKER_OTHER"}
        want = sorted(([w["word"], [w["start_s"], w["end_s"]], speaker[w["speaker"]]] for w in r["words"]),
                      key=lambda a: a[1][0])
        assert al == want  # floats compared exactly


def _shift(al: list, k: int | None, by_s: float) -> list:
    """`al` with word k's times (every word's if k is None) moved by `by_s` seconds."""
    return [[w, [s + by_s, e + by_s] if k in (None, j) else [s, e], spk] for j, (w, (s, e), spk) in enumerate(al)]


def test_times_moved_by_one_frame_are_caught(moshi_finetune_exports, rows, tmp_path):
    mutated = tmp_path / "export"
    shutil.copytree(moshi_finetune_exports["tokens"], mutated)
    frame_s = 1 / FRAME_RATE_HZ
    for j, r in enumerate(rows):
        f = mutated / "audio" / f"{r['split']}-{r['id']}.json"
        al = json.loads(f.read_text())["alignments"]
        main = [k for k, a in enumerate(al) if a[2] == MAIN]
        if j == 0:  # every word one frame later
            al = _shift(al, None, frame_s)
        else:  # one word of the main speaker, in the middle, one frame earlier or later
            al = _shift(al, main[len(main) // 2], frame_s if j == 1 else -frame_s)
        f.write_text(json.dumps({"alignments": sorted(al, key=lambda a: a[1][0])}))
    bad = mismatches(mutated, rows)
    assert all(bad[r["id"]] for r in rows), bad


def test_times_near_a_frame_boundary_keep_their_frame():
    """Rounded to milliseconds, 0.0799 s (frame 0) would become 0.08 s (frame 1) and 0.2398 s (frame 2) 0.24 s
    (frame 3); exported as they are, they stay where `text_stream` puts them."""
    tokenize = _tokenize()
    words = [{"word": "hello", "start_s": 0.0799, "end_s": 0.15, "speaker": "assistant"},
             {"word": "there", "start_s": 0.2398, "end_s": 0.3, "speaker": "assistant"},
             {"word": "friend", "start_s": 0.4799, "end_s": 0.6, "speaker": "user"}]
    al = json.loads(json.dumps(alignments(words)))["alignments"]
    assert [a[1] for a in al] == [[0.0799, 0.15], [0.2398, 0.3], [0.4799, 0.6]]
    ours = text_stream([(w["word"], w["start_s"], w["end_s"], w["speaker"]) for w in words], 10, FRAME_RATE_HZ,
                       load_text_tokenizer(None).encode_word)
    assert mf_text_stream(al, 0.0, 0.8, 10, tokenize) == ours
    rounded = [[w, [round(s, 3), round(e, 3)], spk] for w, (s, e), spk in al]
    assert mf_text_stream(rounded, 0.0, 0.8, 10, tokenize) != ours


VOCAB = ("a", "the", "dog", "is", "catching", "frisbee", "50%", "extraordinarily", "Main", "St.", "e.g.", "bright")


def _random_words(rng: random.Random) -> list[dict]:
    """A dialogue's words as a row holds them: both speakers, dense (so words replace unfinished ones), some
    starting in one frame or at one time, some without duration, many within a millisecond of a frame boundary."""
    words, t = [], rng.uniform(0, 0.3)
    for _ in range(rng.randrange(1, 40)):
        t += rng.choice([0.0, rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.4)])
        start = round(t * FRAME_RATE_HZ) / FRAME_RATE_HZ + rng.uniform(-0.001, 0.001) if rng.random() < 0.4 else t
        end = start if rng.random() < 0.1 else start + rng.uniform(0.01, 0.5)
        words.append({"word": rng.choice(VOCAB), "start_s": max(0.0, start), "end_s": max(0.0, end),
                      "speaker": rng.choice(["assistant", "assistant", "user"])})
    return words


def test_random_dialogues_export_to_the_stream_text_stream_builds():
    """What the token worker builds from a row's words (`text_stream`) is what moshi-finetune builds from the
    export of those words, on dialogues denser and nearer the frame boundaries than the fixture's; rounded to
    milliseconds, the export would move words."""
    rng = random.Random(31)
    tokenize, encode_word = _tokenize(), load_text_tokenizer(None).encode_word
    moved_by_rounding = 0
    for _ in range(300):
        words = _random_words(rng)
        n = math.ceil(max(w["end_s"] for w in words) * FRAME_RATE_HZ) + rng.randrange(0, 5)
        ours = text_stream([(w["word"], w["start_s"], w["end_s"], w["speaker"]) for w in words], n, FRAME_RATE_HZ,
                           encode_word)
        al = json.loads(json.dumps(alignments(words)))["alignments"]
        assert mf_text_stream(al, 0.0, n / FRAME_RATE_HZ + 1, n, tokenize)[:n] == ours, words
        rounded = [[w, [round(s, 3), round(e, 3)], spk] for w, (s, e), spk in al]
        moved_by_rounding += mf_text_stream(rounded, 0.0, n / FRAME_RATE_HZ + 1, n, tokenize)[:n] != ours
    assert moved_by_rounding >= 10, moved_by_rounding
