"""dialogues -> speech -> tokens -> export, in-process (workers=0), on real backends and real Parquet."""
import json
import math
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import audio_jobs
from pipeline.runner import RunOptions
from pipeline.runstate import ConfigMismatch
from pipeline.speech_worker import SpeechSpec
from pipeline.token_worker import TokenSpec
from tests.conftest import FIXTURE_TURNS

LOCAL = audio_jobs.PoolArgs(workers=0)
QUIET = RunOptions(progress=False)


def _rows(d, stage):
    return [r for f in sorted(d.glob(f"{stage}-*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def speech_dir(dialogue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("speech")
    audio_jobs.speech(dialogue_dir, out, SpeechSpec(), limit=None, pool_args=LOCAL, opts=QUIET)
    return out


@pytest.fixture(scope="module")
def tokens_dir(speech_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    audio_jobs.tokens(speech_dir, out, TokenSpec(kind="speech", codec="random"), limit=None, pool_args=LOCAL, opts=QUIET)
    return out


def test_speech_shard_per_dialogue_shard_only_accepted_dialogues(speech_dir):
    assert sorted(p.name for p in speech_dir.glob("speech-*.parquet")) == ["speech-00000.parquet", "speech-00001.parquet"]
    rows = _rows(speech_dir, "speech")
    assert sorted(r["id"] for r in rows) == ["dlg000", "dlg001", "dlg002"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    rec = json.loads((speech_dir / "_speech.run.json").read_text())
    assert rec["input"]["not_ok_rows"] == 1
    assert set(rec["config"]["tts"]) == {"piper", "espeak"}
    assert any("sha256" in k for k in json.dumps(rec["config"]["tts"]["piper"]).split('"'))


def test_every_written_word_has_a_span_inside_the_audio_on_its_speakers_channel(speech_dir):
    from tts.audio import from_flac

    for r in _rows(speech_dir, "speech"):
        audio, sr = from_flac(r["audio_flac"])
        assert sr == 24000 and audio.shape == (2, r["num_samples"])
        turns = FIXTURE_TURNS[int(r["id"][3:])]
        assert [(t["role"], t["text"]) for t in r["turns"]] == turns
        expected = [(w, role) for role, text in turns for w in text.split()]
        words = sorted(r["words"], key=lambda w: w["start_s"])
        assert [(w["word"], w["speaker"]) for w in words] == expected
        dur = r["num_samples"] / sr
        for w in words:
            assert 0 <= w["start_s"] < w["end_s"] <= dur + 1e-6
        for t in r["turns"]:  # the other channel is silent during a turn (no overlap by default)
            other = 1 if t["role"] == "assistant" else 0
            seg = audio[other, int(t["start_s"] * sr): int(t["end_s"] * sr)]
            assert np.abs(seg).max() == 0.0
            own = audio[1 - other, int(t["start_s"] * sr): int(t["end_s"] * sr)]
            assert np.sqrt(np.mean(own**2)) > 0.01


def test_voices_constant_assistant_user_drawn_from_seed(speech_dir):
    from tts.voices import VoiceConfig

    rows = _rows(speech_dir, "speech")
    assert {r["voice_assistant"] for r in rows} == {"piper:joe"}
    for r in rows:
        assert r["voice_user"] == VoiceConfig().user_voice(r["seed"])
        assert {t["voice"] for t in r["turns"] if t["role"] == "user"} == {r["voice_user"]}
        assert {t["voice"] for t in r["turns"] if t["role"] == "assistant"} == {"piper:joe"}
    assert len({r["voice_user"] for r in rows}) >= 1


def test_token_rows_codes_and_text_stream_are_frame_aligned(tokens_dir, speech_dir):
    from pipeline.text_tokenizer import load_text_tokenizer

    tok = load_text_tokenizer(None)
    speech = {r["id"]: r for r in _rows(speech_dir, "speech")}
    rows = _rows(tokens_dir, "tokens")
    assert sorted(r["id"] for r in rows) == ["dlg000", "dlg001", "dlg002"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["kind"] == "speech" and r["frame_rate_hz"] == 12.5
        n = math.ceil(speech[r["id"]]["num_samples"] / 1920)
        assert r["num_frames"] == n == len(r["text_tokens"])
        codes = np.array(r["audio_codes"])
        assert codes.shape == (16, n)
        assert len(np.unique(codes[:8])) > 10  # the random codec is not degenerate
        assert r["codec"].startswith("random") and "#" in r["codec"]
        assert r["tokenizer"].startswith("mistral-common")
        # the assistant's words, each tokenized alone, appear in order in the stream
        stream = [t for t in r["text_tokens"] if t not in (3, 0, -1)]
        assistant_words = [w["word"] for w in sorted(r["words"], key=lambda w: w["start_s"]) if w["speaker"] == "assistant"]
        expected = [t for w in assistant_words for t in tok.encode_word(w)]
        assert stream == expected or r["dropped_text_tokens"] > 0
        assert r["turn_roles"][:2] == ["user", "assistant"]
        assert r["turn_start_frames"] == sorted(r["turn_start_frames"])
        prov = json.loads(r["provenance"])
        assert prov["codec"]["weights_sha256"] in r["codec"] and prov["tokenizer"]["stand_in"] is True


def test_user_frames_hold_padding_only(tokens_dir):
    for r in _rows(tokens_dir, "tokens"):
        words = [w for w in r["words"] if w["speaker"] == "assistant"]
        first = min(w["start_s"] for w in words)
        before = r["text_tokens"][: int(first * 12.5) - 1]
        assert set(before) <= {3}


def test_token_shards_load_with_datasets(tokens_dir):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in tokens_dir.glob("tokens-*.parquet")),
                               split="train")
    assert len(ds) == 3 and len(ds[0]["audio_codes"]) == 16
    md = pq.ParquetFile(next(tokens_dir.glob("tokens-*.parquet"))).metadata
    assert md.row_group(0).num_rows <= 64


def test_text_rows_from_dialogues(dialogue_dir, tmp_path):
    from pipeline.text_tokenizer import load_text_tokenizer

    audio_jobs.tokens(dialogue_dir, tmp_path, TokenSpec(kind="text"), limit=None, pool_args=LOCAL, opts=QUIET)
    tok = load_text_tokenizer(None)
    rows = _rows(tmp_path, "tokens")
    assert len(rows) == 3
    for r in rows:
        turns = FIXTURE_TURNS[int(r["id"][3:])]
        assert r["kind"] == "text" and r["audio_codes"] == [] and r["codec"] == ""
        assert r["text_tokens"] == [t for _, text in turns for t in tok.encode(text)]
        assert 3 not in set(r["text_tokens"]) - set(t for _, text in turns for t in tok.encode(text))
        assert r["turn_roles"] == [role for role, _ in turns]
        assert r["turn_start_frames"][0] == 0 and r["turn_start_frames"][1] == len(tok.encode(turns[0][1]))


def test_speech_kind_needs_speech_input(dialogue_dir, tmp_path):
    from pipeline.stage_input import StageInputError

    with pytest.raises(StageInputError, match="run `ssvd speech"):
        audio_jobs.tokens(dialogue_dir, tmp_path, TokenSpec(kind="speech"), limit=None, pool_args=LOCAL, opts=QUIET)


def test_rerun_skips_done_shards_and_refuses_another_codec(speech_dir, tokens_dir):
    s = audio_jobs.tokens(speech_dir, tokens_dir, TokenSpec(kind="speech", codec="random"), limit=None,
                          pool_args=LOCAL, opts=QUIET)
    assert s.shards_skipped == 2 and s.items_run == 0
    with pytest.raises(ConfigMismatch, match="codec"):
        audio_jobs.tokens(speech_dir, tokens_dir, TokenSpec(kind="speech", codec="random:1"), limit=None,
                          pool_args=LOCAL, opts=QUIET)


def test_export_moshi_finetune_from_speech_and_from_tokens(speech_dir, tokens_dir, tmp_path):
    import soundfile as sf

    from pipeline.export import export_moshi_finetune

    for src, sub in ((speech_dir, "a"), (tokens_dir, "b")):
        out = tmp_path / sub
        assert export_moshi_finetune(src, out, progress=False) == 3
        index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
        assert len(index) == 3
        for e in index:
            wav = out / e["path"]
            data, sr = sf.read(wav)
            assert sr == 24000 and data.shape[1] == 2
            assert abs(len(data) / sr - e["duration"]) < 0.2
            al = json.loads(wav.with_suffix(".json").read_text())["alignments"]
            assert {a[2] for a in al} == {"SPEAKER_MAIN", "SPEAKER_OTHER"}
            starts = [a[1][0] for a in al]
            assert starts == sorted(starts)
