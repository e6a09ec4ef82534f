"""dialogues -> speech -> tokens -> export, in-process (workers=0), on real backends and real Parquet."""
import hashlib
import json
import math
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core.stage_jobs import PoolArgs
from pipeline.speech.jobs import speech as speech_job
from pipeline.speech.worker import SpeechSpec
from pipeline.tokens.jobs import tokens as tokens_job
from pipeline.core.runner import RunOptions
from pipeline.core.runstate import ConfigMismatch
from pipeline.tokens.worker import TokenSpec
from tests.conftest import FIXTURE_TURNS

LOCAL = PoolArgs(workers=0)
QUIET = RunOptions(progress=False)


def _rows(d, stage):
    return [r for f in sorted(d.glob(f"{stage}-*.parquet")) for r in pq.read_table(f).to_pylist()]


# speech_dir and tokens_dir: session fixtures of tests/conftest.py (piper slowed down: nothing is dropped).


def test_speech_shard_per_dialogue_shard_only_accepted_dialogues(speech_dir):
    assert sorted(p.name for p in speech_dir.glob("speech-*.parquet")) == ["speech-00000.parquet", "speech-00001.parquet"]
    rows = _rows(speech_dir, "speech")
    assert sorted(r["id"] for r in rows) == ["dlg000", "dlg001", "dlg002"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    rec = json.loads((speech_dir / "_speech.run.json").read_text())
    assert rec["input"]["not_ok_rows"] == 1
    assert set(rec["config"]["tts"]) == {"piper", "espeak"}
    from tts.piper_backend import default_model_path

    piper = rec["config"]["tts"]["piper"]
    model = default_model_path()
    assert piper["model"] == model.name
    assert piper["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()  # the voice model spoken with


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
    # the three fixture seeds draw different voices from the pool: the draw depends on the seed
    assert len({VoiceConfig().user_voice(r["seed"]) for r in rows}) > 1


def test_token_rows_codes_and_text_stream_are_frame_aligned(tokens_dir, speech_dir):
    from pipeline.tokens.text_tokenizer import load_text_tokenizer

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
        assert r["dropped_text_tokens"] == 0  # the fixture's words all fit their frames ...
        assert stream == expected  # ... so every token of every assistant word is in the stream, in order
        assert r["turn_roles"][:2] == ["user", "assistant"]
        assert r["turn_start_frames"] == sorted(r["turn_start_frames"])
        prov = json.loads(r["provenance"])
        assert prov["codec"]["weights_sha256"] in r["codec"] and prov["tokenizer"]["stand_in"] is True


def test_user_frames_hold_padding_only(tokens_dir):
    """Every frame inside every user turn is padding (3): the text stream is the assistant's alone."""
    for r in _rows(tokens_dir, "tokens"):
        words = [w for w in r["words"] if w["speaker"] == "assistant"]
        first = min(w["start_s"] for w in words)
        assert set(r["text_tokens"][: int(first * 12.5) - 1]) == {3}
        user_turns = [t for t in r["words"] if t["speaker"] == "user"]
        assert user_turns
        frames = [t for w in user_turns for t in range(math.ceil(w["start_s"] * 12.5), math.floor(w["end_s"] * 12.5))]
        assert len(frames) > 10
        assert {r["text_tokens"][t] for t in frames} == {3}, r["id"]


def test_dropped_tokens_are_counted_and_the_rest_kept(speech_dir, tokens_dir):
    """Two assistant words starting in the same frame: the first word's tokens are replaced (Moshi's rule),
    counted in `dropped_text_tokens`, and every other token stays in order."""
    from pipeline.core.stage_input import RowItem
    from pipeline.tokens.text_tokenizer import load_text_tokenizer
    from pipeline.tokens.worker import TokenWorker

    tok = load_text_tokenizer(None)
    row = dict(next(r for r in _rows(speech_dir, "speech") if r["id"] == "dlg000"))
    words = sorted(row["words"], key=lambda w: w["start_s"])
    k = next(i for i, w in enumerate(words) if w["speaker"] == "assistant")  # the first assistant word
    squeezed = dict(words[k + 1], start_s=words[k]["start_s"])  # the next one starts with it
    row["words"] = words[: k + 1] + [squeezed] + words[k + 2:]
    out = TokenWorker(TokenSpec(kind="speech", codec="random")).run([RowItem(row["id"], 0, 0, row)])[0]
    assert out["status"] == "ok", out["error"]
    lost = tok.encode_word(words[k]["word"])
    assert lost and out["dropped_text_tokens"] == len(lost)
    kept = [w["word"] for w in row["words"] if w["speaker"] == "assistant"][1:]
    assert [t for t in out["text_tokens"] if t not in (3, 0, -1)] == [t for w in kept for t in tok.encode_word(w)]
    untouched = next(r for r in _rows(tokens_dir, "tokens") if r["id"] == "dlg000")
    assert out["audio_codes"] == untouched["audio_codes"]  # same audio, same codes: only the words moved


def test_token_shards_load_with_datasets(tokens_dir):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in tokens_dir.glob("tokens-*.parquet")),
                               split="train")
    assert len(ds) == 3 and len(ds[0]["audio_codes"]) == 16
    md = pq.ParquetFile(next(tokens_dir.glob("tokens-*.parquet"))).metadata
    assert md.row_group(0).num_rows <= 64


def test_text_rows_from_dialogues(dialogue_dir, tmp_path):
    from pipeline.tokens.text_tokenizer import load_text_tokenizer

    tokens_job(dialogue_dir, tmp_path, TokenSpec(kind="text"), limit=None, pool_args=LOCAL, opts=QUIET)
    tok = load_text_tokenizer(None)
    rows = _rows(tmp_path, "tokens")
    assert len(rows) == 3
    for r in rows:
        turns = FIXTURE_TURNS[int(r["id"][3:])]
        assert r["kind"] == "text" and r["audio_codes"] == [] and r["codec"] == ""
        assert r["text_tokens"] == [t for _, text in turns for t in tok.encode(text)]  # no padding in text rows
        assert r["turn_roles"] == [role for role, _ in turns]
        starts = [sum(len(tok.encode(text)) for _, text in turns[:k]) for k in range(len(turns))]
        assert r["turn_start_frames"] == starts and r["num_frames"] == len(r["text_tokens"])
        for k, (_, text) in enumerate(turns):  # each turn's slice decodes back to its text
            end = starts[k + 1] if k + 1 < len(turns) else len(r["text_tokens"])
            assert tok.decode(r["text_tokens"][starts[k]:end]) == text


def test_speech_kind_needs_speech_input(dialogue_dir, tmp_path):
    from pipeline.core.stage_input import StageInputError

    with pytest.raises(StageInputError, match="run `ssvd speech"):
        tokens_job(dialogue_dir, tmp_path, TokenSpec(kind="speech"), limit=None, pool_args=LOCAL, opts=QUIET)


def test_rerun_skips_done_shards_and_refuses_another_codec(speech_dir, tokens_dir):
    s = tokens_job(speech_dir, tokens_dir, TokenSpec(kind="speech", codec="random"), limit=None,
                          pool_args=LOCAL, opts=QUIET)
    assert s.shards_skipped == 2 and s.items_run == 0
    with pytest.raises(ConfigMismatch, match="codec"):
        tokens_job(speech_dir, tokens_dir, TokenSpec(kind="speech", codec="random:1"), limit=None,
                          pool_args=LOCAL, opts=QUIET)


def test_export_moshi_finetune_from_speech_and_from_tokens(moshi_finetune_exports):
    import soundfile as sf

    for out in moshi_finetune_exports.values():
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


def test_worker_start_is_counted_in_startup_and_elapsed(dialogue_dir, tmp_path, monkeypatch):
    """TTS and codec loading happen before the stage runs (the stage config needs the workers' facts): their
    time is the run's `startup_s`, inside `elapsed_s`, as the dialogue engine's start is (`ssvd estimate`)."""
    import time

    from pipeline.core import stage_jobs

    real, slow_s = stage_jobs.start_pool, 0.6

    def slow_start(*a, **k):
        time.sleep(slow_s)  # a model that takes this long to load
        return real(*a, **k)

    monkeypatch.setattr(stage_jobs, "start_pool", slow_start)
    runs = {}
    speech_job(dialogue_dir, tmp_path / "s", SpeechSpec(), limit=1, pool_args=LOCAL, opts=QUIET)
    tokens_job(dialogue_dir, tmp_path / "t", TokenSpec(kind="text"), limit=None, pool_args=LOCAL, opts=QUIET)
    for stage, d in (("speech", tmp_path / "s"), ("tokens", tmp_path / "t")):
        runs[stage] = json.loads((d / f"_{stage}.run.json").read_text())["summary"]["run"]
    for stage, run in runs.items():
        assert run["startup_s"] >= slow_s, (stage, run)
        assert run["elapsed_s"] >= run["startup_s"] + 0.001, (stage, run)  # the work is inside elapsed too
        assert run["rows"] >= 1
