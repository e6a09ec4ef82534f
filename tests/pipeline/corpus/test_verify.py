import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.corpus.verify import verify_corpus
from tests.pipeline.corpus.conftest import ssvd


def _shards(d):
    prov = json.loads((d / "manifest.json").read_text())
    return [sh for s in prov["splits"] for st in s["stages"] for sh in st["shards"]]


def test_a_fresh_corpus_verifies(corpus_dir):
    p = ssvd("verify", corpus_dir)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"shards_checked": len(_shards(corpus_dir)), "bad": 0, "ok": True, "state": "complete"}


def test_one_flipped_byte_fails_naming_the_shard(corpus_copy):
    victim = next(sh for sh in _shards(corpus_copy) if "/tokens/" in sh["path"])
    f = corpus_copy / victim["path"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    p = ssvd("verify", corpus_copy, check=False)
    assert p.returncode == 1
    bad = [ln for ln in p.stderr.splitlines() if ln.startswith("BAD ")]
    assert bad and all(victim["path"] in ln for ln in bad)
    assert any("sha256" in ln for ln in bad)


def test_every_bad_shard_is_named(corpus_copy):
    shards = _shards(corpus_copy)
    gone = corpus_copy / shards[0]["path"]
    gone.unlink()
    # a shard replaced by a valid Parquet file of another schema and row count
    other = next(sh for sh in shards if "/speech/" in sh["path"])
    n = other["rows"] + 2
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(n)]}), corpus_copy / other["path"])
    problems, checked = verify_corpus(corpus_copy, progress=False)
    assert checked == len(shards)
    text = "\n".join(problems)
    assert f"{shards[0]['path']}: missing" in text
    assert f"{other['path']}: {n} rows, manifest.json says {other['rows']}" in text
    assert f"{other['path']}: schema is not the speech schema" in text


def test_an_unlisted_shard_is_reported(corpus_copy):
    sh = next(sh for sh in _shards(corpus_copy) if "/dialogues/" in sh["path"])
    extra = (corpus_copy / sh["path"]).with_name("dialogues-00099.parquet")
    extra.write_bytes((corpus_copy / sh["path"]).read_bytes())
    problems, _ = verify_corpus(corpus_copy, progress=False)
    assert len(problems) == 1 and "dialogues-00099.parquet: not listed in manifest.json" in problems[0]
