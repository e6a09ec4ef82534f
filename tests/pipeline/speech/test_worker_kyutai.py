"""SpeechWorker with every voice on the Kyutai DSM TTS (builtin:kyutai-tiny on the CPU, the real moshi
code): the timeline of its own Mimi codes, and the same audio whatever the chunking."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.speech.worker import SpeechSpec, SpeechWorker, kyutai_options, turn_seed
from pipeline.core.stage_input import RowItem
from pipeline.core.types import Dialogue, ImageRef, Turn, dialogue_to_row
from tests.tts.spans_check import check_row_words
from tts.audio import from_flac
from tts.kyutai_backend import TINY
from tts.voices import VoiceConfig

TURNS = [
    [("user", "What is that?"), ("assistant", "A red dog, e.g. a setter.")],
    [("user", "Is it sunny?"), ("assistant", "Yes, very.")],
    [("user", "How many cats?"), ("assistant", "There are 3 cats.")],
    [("user", "Where?"), ("assistant", "In the park.")],
]
VOICES = VoiceConfig("kyutai:expresso/ex03-ex01_happy_001_channel1_334s.wav",
                     ("kyutai:vctk/p226_023.wav", "kyutai:vctk/p227_023.wav"))  # not among the backend's defaults


def _items() -> list[RowItem]:
    items = []
    for i, turns in enumerate(TURNS):
        d = Dialogue(id=f"k{i}", caption_id=f"c{i}", source="pixmo", instruction="COMB", seed=500 + i,
                     turns=[Turn(r, t, "COMB") for r, t in turns], model_user="m", model_assistant="m",
                     prompt_version="t", image=ImageRef(url=f"https://example.com/{i}.jpg"), input_shard=0, input_row=i)
        items.append(RowItem(d.id, 0, i, dialogue_to_row(d)))
    return items


@pytest.fixture(scope="module")
def worker(kyutai_tiny):
    return SpeechWorker(SpeechSpec(VOICES, backend_options=kyutai_options(VOICES, "cpu", TINY, n_q=8)))


@pytest.fixture(scope="module")
def by_chunking(worker):
    """{chunk size: {id: row}} for the same dialogues spoken in chunks of 1, 2 and 4."""
    items = _items()
    out = {}
    for size in (1, 2, 4):
        rows = [r for k in range(0, len(items), size) for r in worker.run(items[k : k + size])]
        out[size] = {r["id"]: r for r in rows}
    return out


def test_same_codes_and_audio_whatever_the_chunk_size(by_chunking):
    one = by_chunking[1]
    assert sorted(one) == ["k0", "k1", "k2", "k3"] and all(r["status"] == "ok" for r in one.values())
    for size in (2, 4):
        for i, r in by_chunking[size].items():
            assert r["codes"] == one[i]["codes"], f"{i}: codes differ between chunk sizes 1 and {size}"
            assert r["audio_flac"] == one[i]["audio_flac"] and r["words"] == one[i]["words"]


def test_rows_lay_the_tts_codes_out_on_whole_frames(by_chunking, worker):
    silence = worker.backends["kyutai"].silence_codes()
    for r in by_chunking[4].values():
        codes = np.asarray(r["codes"])
        frames = codes.shape[1]
        assert codes.shape[0] == 16 and codes.min() >= 0 and codes.max() < 2048
        assert r["num_samples"] == frames * 1920 and r["codes_codec"] == TINY
        audio, sr = from_flac(r["audio_flac"])
        assert sr == 24000 and audio.shape == (2, r["num_samples"])
        check_row_words(r)
        for t in r["turns"]:
            assert abs(t["start_s"] * 12.5 - round(t["start_s"] * 12.5)) < 1e-6  # whole Mimi frames
        assert np.array_equal(codes[:8, 0], silence) and np.array_equal(codes[8:, -1], silence)  # lead and tail
        assert {t["voice"] for t in r["turns"] if t["role"] == "assistant"} == {VOICES.assistant}


def test_a_turns_codes_are_its_own_tts_codes_at_its_start_frame(by_chunking, worker):
    r = by_chunking[2]["k1"]
    turn = next(t for t in r["turns"] if t["role"] == "assistant")
    u = worker.backends["kyutai"].synthesize(turn["text"], VOICES.assistant.partition(":")[2],
                                             seed=turn_seed(501, 1))
    start = round(turn["start_s"] * 12.5)
    codes = np.asarray(r["codes"])
    assert np.array_equal(codes[:8, start : start + u.codes.shape[1]], u.codes)


def test_provenance_names_the_voice_files_by_hash(by_chunking):
    import json

    tts = json.loads(by_chunking[1]["k0"]["tts"])["kyutai"]
    assert set(tts["voices"]) == {"expresso/ex03-ex01_happy_001_channel1_334s.wav", "vctk/p226_023.wav",
                                  "vctk/p227_023.wav"}
    assert all(len(h) == 64 for h in tts["voices"].values()) and tts["seeding"] == "per turn"
