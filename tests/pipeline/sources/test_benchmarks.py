"""Benchmark QA loaders (TallyQA, OCR-VQA, RenderedText, DocVQA) on the committed fixtures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.benchmark_rows import RENDERED_TEXT_QUESTIONS
from pipeline.sources.benchmarks import (
    BENCHMARKS,
    BenchmarkSchemaError,
    open_benchmark,
)
from pipeline.sources.captions import CaptionSchemaError
from pipeline.core.types import (
    DIALOGUE_SCHEMA,
    CaptionRejection,
    Dialogue,
    ImageRef,
    dialogue_from_row,
    dialogue_to_row,
    stable_hash,
)

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"
FILE = "train-00000-of-00001.parquet"
# (ok dialogues, [(row, reason, field named in the detail)])
EXPECTED = {
    "tallyqa": (4, [(3, "qa:empty", "'texts'[1].assistant")]),
    "ocrvqa": (4, [(3, "qa:empty", "'answers'[1]")]),
    "renderedtext": (5, [(3, "qa:empty", "ocr_annotation.text")]),
    "docvqa": (5, [(3, "qa:empty", "'answers'")]),
}


def load(name: str, input=None):
    src = open_benchmark(name, str(input or FIX / name))
    return src, [r for s in src.shards for r in src.iter_shard(s.index)]


def oks(rows):
    return [r for r in rows if isinstance(r, Dialogue)]


def pairs(d: Dialogue):
    assert [t.role for t in d.turns] == ["user", "assistant"] * (len(d.turns) // 2)
    assert all(t.instruction == "QA" for t in d.turns)
    return [(d.turns[i].text, d.turns[i + 1].text) for i in range(0, len(d.turns), 2)]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_fixture_loads_with_rejections(name):
    src, rows = load(name)
    n_ok, bad = EXPECTED[name]
    assert len(src.shards) == 1 and src.describe() == {
        "benchmark": name, "input": str(FIX / name), "kind": "local", "instruction": "QA",
        "shards": [str(FIX / name / FILE)]}
    assert len(oks(rows)) == n_ok
    rej = [r for r in rows if isinstance(r, CaptionRejection)]
    assert [(r.row, r.reason) for r in rej] == [(row, reason) for row, reason, _ in bad]
    for r, (row, _, field) in zip(rej, bad):
        assert r.source == name
        assert FILE in r.detail and f"row {row + 1}" in r.detail and field in r.detail
    for i, r in enumerate(rows):
        if isinstance(r, Dialogue):
            assert (r.status, r.source, r.instruction, r.seed, r.replica) == ("ok", name, "QA", 0, 0)
            assert r.input_shard == 0 and r.input_row == i
            assert r.id == stable_hash("benchmark", name, r.caption_id)
            assert r.num_pairs >= 1 and all(t.text.strip() for t in r.turns)


def test_tallyqa_cauldron_rows_are_one_dialogue_with_every_turn():
    _, rows = load("tallyqa")
    d = oks(rows)[0]
    assert pairs(d) == [("How many giraffes are there?", "2"), ("How many trees are in the picture?", "4")]
    raw = pq.read_table(FIX / "tallyqa" / FILE).column("images")[0].as_py()[0]
    assert d.image == ImageRef(path="COCO_train2014_000000393267.jpg", sha256=hashlib.sha256(raw["bytes"]).hexdigest())
    assert d.caption_id == stable_hash("tallyqa", d.image.sha256, "How many giraffes are there?")
    assert [pairs(x)[0][1] for x in oks(rows)] == ["2", "1", "0", "6"]  # digits, zero kept


def test_tallyqa_release_json_array_is_streamed():
    src, rows = load("tallyqa", FIX / "tallyqa_release")
    assert src.shards[0].name.endswith("train.json")
    d = oks(rows)[0]
    assert d.caption_id == "393267"
    assert pairs(d) == [("How many giraffes are there?", "2")]
    assert d.image == ImageRef(path="train2014/COCO_train2014_000000393267.jpg")
    assert [pairs(x)[0][1] for x in oks(rows)] == ["2", "1", "0", "3", "6"]
    (bad,) = [r for r in rows if isinstance(r, CaptionRejection)]
    assert (bad.row, bad.reason) == (4, "qa:empty") and "train.json element 5:" in bad.detail
    assert "'question'" in bad.detail


def test_ocrvqa_all_pairs_in_order_and_image_sha():
    _, rows = load("ocrvqa")
    d = oks(rows)[0]
    assert d.caption_id == "1476758957" and d.num_pairs == 5
    assert pairs(d) == [
        ("Who wrote this book?", "Ana Ruiz"),
        ("What is the title of this book?", "The Hidden Garden"),
        ("What is the genre of this book?", "Children's Books"),
        ("Is this a kids book?", "Yes"),
        ("Is this a pharmaceutical book?", "No"),
    ]
    raw = pq.read_table(FIX / "ocrvqa" / FILE).column("image")[0].as_py()
    assert d.image == ImageRef(url="http://ecx.images-amazon.com/images/I/1476758957.jpg",
                               path="1476758957.jpg", sha256=hashlib.sha256(raw["bytes"]).hexdigest())


def test_renderedtext_question_is_seeded_choice():
    _, rows = load("renderedtext")
    ds = oks(rows)
    # json.ocr_annotation.text: the rendered lines, joined with spaces
    assert [pairs(d)[0][1] for d in ds] == [
        "Meet me at the old bridge at 7", "Grocery list: milk, eggs, bread", "Happy birthday, Grandma!",
        "The quick brown fox jumps over the lazy dog", "Do not feed the ducks"]
    for d in ds:
        assert pairs(d)[0][0] in RENDERED_TEXT_QUESTIONS
        assert d.image.sha256 and d.image.path == f"{d.caption_id}.jpg"
    _, again = load("renderedtext")
    assert [pairs(d)[0][0] for d in oks(again)] == [pairs(d)[0][0] for d in ds]


def test_renderedtext_flat_text_column(tmp_path):
    t = pa.table({"image": pa.array([{"bytes": b"x", "path": "a.png"}],
                                    pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                  "text": ["Hello there"]})
    pq.write_table(t, tmp_path / "rt.parquet")
    _, rows = load("renderedtext", tmp_path / "rt.parquet")
    (d,) = rows
    assert pairs(d)[0][1] == "Hello there" and pairs(d)[0][0] in RENDERED_TEXT_QUESTIONS


def test_docvqa_first_answer():
    _, rows = load("docvqa")
    d = oks(rows)[1]
    assert d.caption_id == "24580"
    assert pairs(d) == [("What is name of university?", "University of California")]
    assert d.image.sha256 and d.image.path == "nkbl0226_1.jpg" and d.image.url is None


@pytest.mark.parametrize("name", BENCHMARKS)
def test_ids_deterministic(name, tmp_path):
    _, a = load(name)
    _, b = load(name)
    assert [r.id for r in a] == [r.id for r in b]
    assert len({r.id for r in oks(a)}) == len(oks(a))
    # the dialogue id depends on the row key only: a renamed copy of the file gives the same ids
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other-name.parquet").write_bytes((FIX / name / FILE).read_bytes())
    _, c = load(name, tmp_path)
    assert [r.id for r in oks(c)] == [r.id for r in oks(a)]


def test_tallyqa_jsonl_same_ids_as_json_array(tmp_path):
    _, a = load("tallyqa", FIX / "tallyqa_release")
    with open(tmp_path / "x.jsonl", "w") as f:
        for rec in json.loads((FIX / "tallyqa_release" / "train.json").read_text()):
            f.write(json.dumps(rec) + "\n")
    _, c = load("tallyqa", tmp_path / "x.jsonl")
    assert [r.id for r in oks(c)] == [r.id for r in oks(a)]
    assert [pairs(d) for d in oks(c)] == [pairs(d) for d in oks(a)]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_rows_validate_against_dialogue_schema(name):
    _, rows = load(name)
    out = [dialogue_to_row(d) for d in oks(rows)]
    table = pa.Table.from_pylist(out, schema=DIALOGUE_SCHEMA)
    assert table.num_rows == len(out)
    back = [dialogue_from_row(r) for r in table.to_pylist()]
    assert [pairs(d) for d in back] == [pairs(d) for d in oks(rows)]


@pytest.mark.parametrize("name,drop", [("tallyqa", "texts"), ("ocrvqa", "questions"),
                                       ("renderedtext", "json"), ("docvqa", "questionId")])
def test_missing_column_clear_error(name, drop, tmp_path):
    table = pq.read_table(FIX / name / FILE)
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.drop_columns([drop]), bad)
    with pytest.raises(BenchmarkSchemaError) as e:
        open_benchmark(name, str(bad))
    msg = str(e.value)
    assert str(bad) in msg and repr(drop) in msg and "Columns found" in msg and "Fix:" in msg
    assert isinstance(e.value, CaptionSchemaError)


def test_wrong_benchmark_hints_the_right_one():
    with pytest.raises(BenchmarkSchemaError, match="did you mean that one"):
        open_benchmark("tallyqa", str(FIX / "docvqa"))


def test_renderedtext_sidecar_problems_are_counted_rejections(tmp_path):
    side = [{"ocr_annotation": {"text": ["ok line"]}}, {"ocr_annotation": None}, None, {"other": 1},
            {"ocr_annotation": {"text": "one string"}}]
    rows = [{"__key__": f"k{i}", "png": {"bytes": b"x%d" % i, "path": f"k{i}.png"}, "json": j}
            for i, j in enumerate(side)]
    p = tmp_path / "rt.jsonl"  # JSON lines: the sidecar need not have one Arrow type
    p.write_text("".join(json.dumps({**r, "png": {"bytes": None, "path": r["png"]["path"]}}) + "\n" for r in rows))
    _, got = load("renderedtext", p)
    assert [r.reason if isinstance(r, CaptionRejection) else "ok" for r in got] == [
        "ok", "qa:empty", "qa:empty", "qa:empty", "ok"]
    assert "field 'json'.ocr_annotation is null" in got[1].detail and "line 2" in got[1].detail
    assert "field 'json' is null" in got[2].detail and "Fill it in" in got[3].detail
    assert pairs(got[4])[0][1] == "one string"
    # the sidecar as raw JSON text, as a webdataset .json member holds it
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"__key__": "r", "png": {"bytes": None, "path": "r.png"},
                               "json": json.dumps({"ocr_annotation": {"text": ["a", "b"]}})}) + "\n"
                   + json.dumps({"__key__": "s", "png": {"bytes": None, "path": "s.png"}, "json": "{oops"}) + "\n")
    _, got = load("renderedtext", raw)
    assert pairs(got[0])[0][1] == "a b" and got[1].reason == "qa:empty" and "not valid JSON" in got[1].detail


def test_script_repo_benchmark_fails_at_once(tmp_path):
    from pipeline.sources.hub_load import ScriptDatasetError

    repo = tmp_path / "tally"
    repo.mkdir()
    (repo / "tally.py").write_text("raise SystemExit\n")
    with pytest.raises(ScriptDatasetError, match="loading-script repository"):
        open_benchmark("tallyqa", f"hub:{repo}")


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        open_benchmark("vqav2", str(FIX / "tallyqa"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_benchmark("tallyqa", str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        open_benchmark("tallyqa", str(tmp_path))
    src, _ = load("tallyqa")
    with pytest.raises(IndexError, match=r"shard 1 out of range \(0\.\.0\)"):
        src.iter_shard(1)


def test_jsonl_bad_line_is_a_rejection(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"questionId": "1", "question": "Q?", "answers": ["A"], "image": "a.png"})
                 + "\n{not json\n"
                 + json.dumps({"questionId": "2", "question": "", "answers": ["A"], "image": "b.png"}) + "\n")
    _, rows = load("docvqa", p)
    assert isinstance(rows[0], Dialogue) and rows[0].image == ImageRef(path="a.png")
    assert [(r.reason, "line" in r.detail) for r in rows[1:]] == [("row:malformed_json", True),
                                                                   ("qa:empty", True)]
