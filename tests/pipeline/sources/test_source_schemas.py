"""The fixtures are in the real schemas: each fixture file matches, column for column, the schema that
docs/sources.md records for its source, and pipeline/sources/source_schemas.py holds the same schemas."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.source_schemas import (
    SCHEMAS,
    parse_doc_blocks,
    schema_of_records,
    schema_of_table,
    type_of_arrow,
)

ROOT = Path(__file__).resolve().parents[3]
FIX = ROOT / "tests" / "fixtures"
DOC = ROOT / "docs" / "sources.md"

# every fixture file of tests/fixtures/{captions,benchmarks} and the schema it is in
FIXTURES = {
    "captions/pixmo/train-00000-of-00002.parquet": "pixmo",
    "captions/pixmo/train-00001-of-00002.parquet": "pixmo",
    "captions/pixmo/extra.jsonl": "pixmo",
    "captions/docci/docci_descriptions.jsonlines": "docci-release",
    "captions/docci_mirror/train-00000-of-00001.parquet": "docci-mirror",
    "captions/pixelprose/train-00000-of-00001.parquet": "pixelprose",
    "captions/pixelprose/redcaps.jsonl": "pixelprose",
    "benchmarks/tallyqa/train-00000-of-00001.parquet": "tallyqa-cauldron",
    "benchmarks/tallyqa_release/train.json": "tallyqa-release",
    "benchmarks/ocrvqa/train-00000-of-00001.parquet": "ocrvqa",
    "benchmarks/renderedtext/train-00000-of-00001.parquet": "renderedtext",
    "benchmarks/docvqa/train-00000-of-00001.parquet": "docvqa",
}
DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonlines", ".json", ".csv")


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the fixtures' deliberately broken lines are not part of the schema
        if isinstance(rec, dict):
            out.append(rec)
    return out


def test_docs_and_module_record_the_same_schemas():
    blocks = parse_doc_blocks(DOC.read_text(encoding="utf-8"))
    assert blocks == SCHEMAS
    for name, cols in SCHEMAS.items():  # the blocks list columns in the same order as the module
        assert list(blocks[name]) == list(cols), name


def test_every_fixture_file_is_listed_and_every_schema_has_a_fixture():
    found = sorted(p.relative_to(FIX).as_posix() for sub in ("captions", "benchmarks")
                   for p in (FIX / sub).rglob("*") if p.suffix in DATA_SUFFIXES)
    assert found == sorted(FIXTURES)
    assert set(FIXTURES.values()) == set(SCHEMAS)


@pytest.mark.parametrize("rel, name", sorted(FIXTURES.items()))
def test_fixture_matches_the_recorded_schema(rel, name):
    path = FIX / rel
    want = SCHEMAS[name]
    if path.suffix == ".parquet":
        got = schema_of_table(pq.read_schema(path))
        assert got == want  # names and types, exactly
        assert list(got) == list(want)  # and the column order of the release
    else:
        recs = _records(path)
        assert recs, rel
        got = schema_of_records(recs)
        assert set(got) == set(want), rel
        for col, ty in got.items():  # a column null in every fixture row says nothing of its type
            assert ty is None or ty == want[col], (rel, col, ty, want[col])


def test_real_shapes_of_key_fields():
    pp = pq.read_table(FIX / "captions/pixelprose/train-00000-of-00001.parquet").to_pylist()
    assert all(len(r["uid"]) == 64 and set(r["uid"]) <= set("0123456789abcdef") for r in pp)
    assert {r["watermark_class_id"] for r in pp} == {0.0, 1.0, 2.0}
    docci = _records(FIX / "captions/docci/docci_descriptions.jsonlines")
    assert {r["split"] for r in docci} == {"train", "test", "qual_dev", "qual_test"}
    for r in docci:
        assert r["example_id"].startswith(r["split"]) and r["image_file"] == r["example_id"] + ".jpg"
    images = FIX / "captions/docci/images"
    assert all((images / r["image_file"]).read_bytes()[:2] == b"\xff\xd8" for r in docci
               if r["split"] == "train" and r["example_id"] != "train_00013")
    rt = pq.read_table(FIX / "benchmarks/renderedtext/train-00000-of-00001.parquet").to_pylist()
    assert all(isinstance(r["json"]["ocr_annotation"]["text"], list) for r in rt)
    cauldron = pq.read_table(FIX / "benchmarks/tallyqa/train-00000-of-00001.parquet").to_pylist()
    assert all(set(t) == {"user", "assistant", "source"} for r in cauldron for t in r["texts"])


def test_type_notation():
    img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert type_of_arrow(img) == "image"
    assert type_of_arrow(pa.list_(img)) == "list<image>"
    assert type_of_arrow(pa.struct([("a", pa.int32()), ("b", pa.list_(pa.float32()))])) == \
        "struct<a: int64, b: list<float64>>"
    assert schema_of_records([{"a": None, "b": [1.5]}, {"a": "x", "b": []}]) == {"a": "string", "b": "list<float64>"}
