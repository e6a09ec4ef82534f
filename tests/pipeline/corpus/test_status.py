import json
import shutil

from pipeline.corpus.status import corpus_status, format_status
from tests.pipeline.corpus.conftest import ssvd


def test_a_complete_corpus_is_all_done(corpus_dir):
    st = corpus_status(corpus_dir)
    assert st["running"] is None
    rows = [(s["name"], r["stage"], r["state"], r["left"]) for s in st["splits"] for r in s["stages"]]
    assert len(rows) == 13 and all(state == "done" and left == 0 for _, _, state, left in rows)
    text = ssvd("status", corpus_dir).stdout
    assert "all done" in text and "tallyqa" in text and "docci-prop" in text
    assert json.loads(ssvd("status", corpus_dir, "--json").stdout)["name"] == "tiny"


def test_a_stage_that_died_midway_is_interrupted_with_its_rows_counted(corpus_copy):
    d = corpus_copy / "docci-prop" / "speech"
    rec_p = d / "_speech.run.json"
    rec = json.loads(rec_p.read_text())
    rec["state"] = "running"
    rec_p.write_text(json.dumps(rec))
    shard = d / "speech-00000.parquet"
    parts = d / ".parts" / "speech-00000"
    parts.mkdir(parents=True)
    shutil.move(shard, parts / "part-000000.parquet")  # as the runner leaves a shard in progress
    # the tokens stage after it has not run yet
    shutil.rmtree(corpus_copy / "docci-prop" / "tokens")
    st = corpus_status(corpus_copy)
    docci = next(s for s in st["splits"] if s["name"] == "docci-prop")
    speech, tokens = docci["stages"][2], docci["stages"][3]
    assert speech["state"] == "interrupted" and speech["shards"] == 0 and speech["shards_in_progress"] == 1
    assert speech["ok"] >= 1
    assert tokens["state"] == "pending" and tokens["left"] is None
    out = format_status(st)
    assert "not done: docci-prop/speech, docci-prop/tokens" in out
