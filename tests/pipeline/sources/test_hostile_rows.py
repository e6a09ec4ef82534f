"""Hostile input files, what their rows hold (tests/pipeline/sources/hostile_inputs.py says what every test checks): text
encodings and line ends, duplicated ids, huge, control-character, non-text and template-syntax captions."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.captions import open_source
from pipeline.sources.sharded import first_records
from tests.pipeline.sources.hostile_inputs import CAP, docci, docvqa, jsonl, ocrvqa, pixelprose, pixmo, read, reasons, tallyqa


# ---------------------------------------------------------------- text encodings and line ends
def test_jsonl_line_that_is_not_json_is_a_counted_rejection(tmp_path):
    tail = b'{"image_id": "1", "questions": [\n' + json.dumps(ocrvqa(2)).encode() + b"\n"
    p = jsonl(tmp_path / "ocr.jsonl", [ocrvqa(0)], tail)
    recs = read("benchmark", "ocrvqa", p)
    assert reasons(recs) == ["ok", "row:malformed_json", "ok"]
    assert f"{p} line 2:" in recs[1].detail and "not valid JSON" in recs[1].detail and "Fix" in recs[1].detail


def test_invalid_utf8_in_jsonl_is_a_counted_rejection(tmp_path):
    bad = json.dumps(docci(1)).encode().replace(b"red", b"r\xffd")
    tail = bad + b"\n" + json.dumps(docci(2)).encode() + b"\n"
    p = jsonl(tmp_path / "docci_descriptions.jsonlines", [docci(0)], tail)
    recs = read("caption", "docci", p)
    assert reasons(recs) == ["ok", "row:malformed_json", "ok"]
    assert f"{p} line 2:" in recs[1].detail and "utf-8" in recs[1].detail.lower()


def test_invalid_utf8_in_csv_is_a_counted_rejection_naming_the_field(tmp_path):
    p = tmp_path / "pixmo.csv"
    p.write_bytes(b"image_url,caption\nhttps://example.org/0.jpg," + CAP.encode() + b"\n"
                  b"https://example.org/1.jpg,A caf\xe9 terrace under red umbrellas at dusk.\n"
                  b"https://example.org/2.jpg," + CAP.encode() + b"\n")
    recs = read("caption", "pixmo", p)
    assert reasons(recs) == ["ok", "row:malformed_csv", "ok"]
    assert f"{p} row 2 (line 3)" in recs[1].detail and "not UTF-8" in recs[1].detail and "'caption'" in recs[1].detail


@pytest.mark.parametrize("kind", ["jsonl", "csv", "json"])
def test_utf8_bom_is_read_as_text_not_as_part_of_the_first_column(tmp_path, kind):
    if kind == "jsonl":
        p = tmp_path / "d.jsonlines"
        p.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(docci(i)) + "\n" for i in range(2)).encode())
        recs = read("caption", "docci", p)
    elif kind == "csv":
        p = tmp_path / "p.csv"
        p.write_bytes(b"\xef\xbb\xbfimage_url,caption\r\nhttps://example.org/0.jpg," + CAP.encode() + b"\r\n")
        recs = read("caption", "pixmo", p)
    else:
        p = tmp_path / "train.json"
        p.write_bytes(b"\xef\xbb\xbf" + json.dumps([tallyqa(i) for i in range(2)]).encode())
        recs = read("benchmark", "tallyqa", p)
    assert reasons(recs) == ["ok"] * len(recs) and recs
    assert all("\ufeff" not in (getattr(r, "id", "") + getattr(r, "text", "")) for r in recs)


def test_crlf_csv_and_jsonl_read_without_carriage_returns(tmp_path):
    c = tmp_path / "p.csv"
    c.write_bytes(b"image_url,caption\r\n" + b"".join(
        f"https://example.org/{i}.jpg,\"{CAP} Line {i}.\"\r\n".encode() for i in range(3)))
    j = tmp_path / "pp.jsonl"
    j.write_bytes(b"".join(json.dumps(pixelprose(i)).encode() + b"\r\n" for i in range(3)))
    for recs in (read("caption", "pixmo", c), read("caption", "pixelprose", j)):
        assert reasons(recs) == ["ok"] * 3
        assert all("\r" not in r.text and "\r" not in r.id for r in recs)
    assert read("caption", "pixmo", c)[2].text == f"{CAP} Line 2."


def test_csv_with_an_unbalanced_quote_is_one_rejection_that_says_the_rest_was_swallowed(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("image_url,caption\n"
                 f"https://example.org/0.jpg,{CAP}\n"
                 f'https://example.org/1.jpg,"A caption whose quote never closes\n'
                 f"https://example.org/2.jpg,{CAP}\n"
                 f"https://example.org/3.jpg,{CAP}\n")
    recs = read("caption", "pixmo", p)
    assert reasons(recs) == ["ok", "row:malformed_csv"]
    d = recs[1].detail
    assert f"{p} row 2 (line 3)" in d and "never closed" in d and "line 3" in d and "rows after it were not read" in d


# ---------------------------------------------------------------- ids
def test_duplicated_ids_in_one_file_are_counted_rejections_naming_the_first(tmp_path):
    p = tmp_path / "pp.parquet"
    pq.write_table(pa.Table.from_pylist([pixelprose(0), pixelprose(1), pixelprose(0), pixelprose(2)]), p)
    recs = read("caption", "pixelprose", p)
    assert reasons(recs) == ["ok", "ok", "row:duplicate_id", "ok"]
    d = recs[2].detail
    assert f"{p} row 3" in d and f"{p} row 1" in d and f"{0:064x}"[:40] in d and "Fix" in d
    # the duplicate is named as its source names it (caption id, image), keyed by its place
    assert (recs[2].caption_id, recs[2].image) == (recs[0].id, recs[0].image) and recs[2].id != recs[0].id


def test_duplicated_ids_across_files_of_a_folder_are_counted_rejections(tmp_path):
    jsonl(tmp_path / "a.jsonl", [docci(0), docci(1)])
    jsonl(tmp_path / "b.jsonl", [docci(2), docci(1)])
    src = open_source("docci", str(tmp_path))
    recs = [(s, r) for s, r in first_records(src, None)]
    assert [(s, reasons([r])[0]) for s, r in recs] == [(0, "ok"), (0, "ok"), (1, "ok"), (1, "row:duplicate_id")]
    assert str(tmp_path / "a.jsonl") in recs[3][1].detail and "train_00001" in recs[3][1].detail


def test_duplicated_benchmark_keys_are_counted_rejections(tmp_path):
    p = jsonl(tmp_path / "docvqa.jsonl", [docvqa(7), docvqa(8), docvqa(7)])
    assert reasons(read("benchmark", "docvqa", p)) == ["ok", "ok", "row:duplicate_id"]


# ---------------------------------------------------------------- caption content
def test_5mb_caption_is_shortened_at_a_sentence_in_linear_time(tmp_path):
    p = jsonl(tmp_path / "p.jsonl", [pixmo(0, "A dog runs. " * 440_000), pixmo(1, "x" * 5_000_000), pixmo(2)])
    recs = read("caption", "pixmo", p)
    assert reasons(recs) == ["ok"] * 3
    assert recs[0].text.endswith("A dog runs.") and len(recs[0].text) <= 1000
    assert len(recs[1].text) == 1000 and recs[2].text == CAP


def test_5mb_pixelprose_caption_with_meta_trim_is_read(tmp_path):
    p = jsonl(tmp_path / "pp.jsonl", [pixelprose(0, "This image shows a dog. It runs. " * 150_000)])
    (rec,) = read("caption", "pixelprose", p)
    assert rec.text.startswith("A dog. It runs.") and len(rec.text) <= 1000


def test_nul_bytes_and_control_characters_become_spaces(tmp_path):
    nul = "A red\x00bicycle\x00\x00 leaning against a wall."
    ctrl = "\x1b[31mA red bicycle\x07 leaning\x08 against\x7f a\x9b wall.\x1b[0m"
    p = jsonl(tmp_path / "pp.jsonl", [pixelprose(0, nul), pixelprose(1, ctrl)])
    recs = read("caption", "pixelprose", p)
    assert [r.text for r in recs] == ["A red bicycle leaning against a wall.",
                                      "[31mA red bicycle leaning against a wall. [0m"]
    c = tmp_path / "p.csv"
    c.write_bytes(b"image_url,caption\nhttps://example.org/0.jpg,A red\x00bicycle leaning against a wall.\n")
    assert [r.text for r in read("caption", "pixmo", c)] == ["A red bicycle leaning against a wall."]


def test_whitespace_only_caption_is_a_counted_rejection(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [docci(0, " \t\n\u00a0\u2003 "), docci(1)])
    recs = read("caption", "docci", p)
    assert reasons(recs) == ["caption:empty", "ok"]
    assert f"{p} line 1" in recs[0].detail and "'description'" in recs[0].detail


def test_emoji_and_right_to_left_text_are_read_as_written(tmp_path):
    caps = ["A birthday cake 🎂 with candles 🕯️ and a smiling face 😀 on it.",
            "שלט ברחוב עם הכיתוב ״ברוכים הבאים״ ליד חנות קטנה.",
            "لافتة على باب المقهى مكتوب عليها مرحبا بكم في المدينة.",
            "A sign reading \u202eSIHT DAER\u202c above a door 👨‍👩‍👧."]
    p = jsonl(tmp_path / "p.jsonl", [pixmo(i, c) for i, c in enumerate(caps)])
    assert [r.text for r in read("caption", "pixmo", p)] == caps


@pytest.mark.parametrize("value, kind", [(12345, "int"), (["a", "list"], "list"), ({"an": "object"}, "dict")])
def test_caption_that_is_not_text_is_a_counted_rejection(tmp_path, value, kind):
    p = jsonl(tmp_path / "pp.jsonl", [pixelprose(0, value), pixelprose(1)])
    recs = read("caption", "pixelprose", p)
    assert reasons(recs) == ["caption:not_text", "ok"]
    assert f"{p} line 1" in recs[0].detail and f"'vlm_caption' is {kind}" in recs[0].detail


TEMPLATES = ["The sign says {{ caption }} and {{ 7*7 }} in large letters.",
             "A poster reading {% for x in range(3) %}{{ x }}{% endfor %} on a wall.",
             "A note with {# a jinja comment #} written across the top.",
             "A mug printed with {caption} and {0} and {__class__.__mro__} on it.",
             "A label reading %s and %(caption)s and %d percent off.",
             "A board reading $caption and ${HOME} and $$ in chalk.",
             "A banner {% raw %}{{ x }}{% endraw %} over a {{ '{{' }} gate."]


def test_template_syntax_of_every_kind_is_data_from_file_to_prompt(tmp_path):
    from prompts.render import render

    p = jsonl(tmp_path / "p.jsonl", [pixmo(i, c) for i, c in enumerate(TEMPLATES)])
    recs = read("caption", "pixmo", p)
    assert [r.text for r in recs] == TEMPLATES
    for r in recs:
        for role in ("user", "assistant"):
            system = render("PROP", role, caption=r.text).system
            assert r.text in system and "49" not in system.replace(r.text, "")
