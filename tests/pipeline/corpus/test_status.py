import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.corpus.status import corpus_status, format_status
from tests.pipeline.corpus.conftest import ssvd


def test_a_complete_corpus_is_all_done(corpus_dir):
    st = corpus_status(corpus_dir)
    assert st["running"] is None
    rows = [(s["name"], r["stage"], r["state"], r["left"]) for s in st["splits"] for r in s["stages"]]
    assert len(rows) == 13 and all(state == "done" and left == 0 for _, _, state, left in rows)
    text = ssvd("status", corpus_dir).stdout
    assert "all done" in text and "tallyqa" in text and "docci-prop" in text
    assert "rows/s" in text and "ETA" in text
    # every stage that ran work has the rates its run record measured; nothing is left: ETA 0
    for s in st["splits"]:
        for r in s["stages"]:
            assert r["eta_s"] == 0.0
            m = r["rate"]
            assert m is not None and m["rows"] > 0 and m["rows_per_s"] > 0 and m["workers"] >= 0, (s["name"], r)
            work = m["elapsed_s"] - m["startup_s"]
            if work > 1:  # figures are rounded to 1 ms
                assert m["rows_per_s"] == pytest.approx(m["rows"] / work, rel=0.01)
            if r["stage"] == "dialogues" and s["name"] != "tallyqa":
                assert m["tokens_per_s"] > 0 and m["generated_tokens"] > 0
            if r["stage"] == "speech":
                assert m["audio_s_per_s"] > 0 and m["audio_s"] > 0
    assert json.loads(ssvd("status", corpus_dir, "--json").stdout)["name"] == "tiny"


def test_a_stage_that_died_midway_is_interrupted_with_its_rows_counted(corpus_copy):
    d = corpus_copy / "docci-prop" / "speech"
    rec_p = d / "_speech.run.json"
    rec = json.loads(rec_p.read_text())
    rec["state"] = "running"
    rec_p.write_text(json.dumps(rec))
    rec["measured"]["rows_per_s"] = 0.25  # as if the run had measured this rate before it died
    rec_p.write_text(json.dumps(rec))
    shard = d / "speech-00000.parquet"
    parts = d / ".parts" / "speech-00000"
    parts.mkdir(parents=True)
    t = pq.read_table(shard)
    pq.write_table(t.slice(0, 0), parts / "part-000000.parquet")  # as the runner leaves a shard in progress
    shard.unlink()
    # the tokens stage after it has not run yet
    shutil.rmtree(corpus_copy / "docci-prop" / "tokens")
    st = corpus_status(corpus_copy)
    docci = next(s for s in st["splits"] if s["name"] == "docci-prop")
    speech, tokens = docci["stages"][2], docci["stages"][3]
    assert speech["state"] == "interrupted" and speech["shards"] == 0 and speech["shards_in_progress"] == 1
    done = speech["ok"] + speech["rejected"] + speech["failed"]
    assert speech["left"] == docci["stages"][0]["ok"] - done == t.num_rows >= 1
    assert speech["rate"]["rows_per_s"] == 0.25 and speech["eta_s"] == pytest.approx(speech["left"] / 0.25)
    assert tokens["state"] == "pending" and tokens["left"] is None and tokens["eta_s"] is None
    out = format_status(st)
    assert "not done: docci-prop/speech, docci-prop/tokens" in out
    assert f"ETA of what is left, stage after stage at the measured rates: 0:{4 * speech['left']:02d}" in out
    assert "+ 1 stage(s) not measured yet" in out
