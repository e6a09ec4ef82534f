"""Hostile input files across the three caption sources and the four benchmarks (issue 14, item 5).

Each broken input has exactly one right outcome: a clear error before any work that names the file (and
the row or line), what is wrong and the fix; or a counted rejection whose detail says the same; or, for
input that is odd but valid (a BOM, CRLF, emoji, template syntax), the text read as written. Never a
traceback of a library, a hang, or a row silently gone. These tests read the sources directly (no engine);
tests/integration/test_cli_hostile_inputs.py takes a few of them through the CLI.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.benchmarks import open_benchmark
from pipeline.captions import CaptionSchemaError, open_source
from pipeline.hub_load import HubLoadError
from pipeline.input_files import InputFileError
from pipeline.sources import first_records
from pipeline.types import Caption, Dialogue

ROOT = Path(__file__).resolve().parents[2]
CAP = "A red bicycle leaning against a white wall in the sun."


# ---------------------------------------------------------------- rows in each source's real schema
def pixmo(i: int, cap=CAP) -> dict:
    return {"image_url": f"https://example.org/{i}.jpg", "caption": cap}


def docci(i: int, cap=CAP, split="train") -> dict:
    return {"example_id": f"{split}_{i:05d}", "split": split, "image_file": f"{split}_{i:05d}.jpg", "description": cap}


def pixelprose(i: int, cap=CAP) -> dict:
    return {"uid": f"{i:064x}", "url": f"https://example.org/{i}.jpg", "vlm_caption": cap, "status": "success"}


def tallyqa(i: int) -> dict:
    return {"image": f"VG_100K/{i}.jpg", "question": "How many dogs are there?", "answer": i % 4, "question_id": i}


def ocrvqa(i: int) -> dict:
    return {"image_id": str(i), "image": f"ocr/{i}.jpg", "questions": ["Who wrote this book?"], "answers": ["Ann Lee"]}


def docvqa(i: int) -> dict:
    return {"questionId": str(i), "question": "What is the date?", "answers": ["1 May 1990"], "image": f"doc/{i}.png"}


def renderedtext(i: int) -> dict:
    return {"__key__": str(i), "image": f"rt/{i}.png", "text": "Meet me at noon"}


def jsonl(path: Path, rows: list, raw: bytes = b"") -> Path:
    path.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode() + raw)
    return path


def read(kind: str, name: str, path: Path | str) -> list:
    """Every record of a caption source (kind 'caption') or a benchmark, as `ssvd` reads them."""
    src = open_source(name, str(path)) if kind == "caption" else open_benchmark(name, str(path))
    return [rec for _, rec in first_records(src, None)]


def reasons(recs: list) -> list[str]:
    return ["ok" if isinstance(r, (Caption, Dialogue)) else r.reason for r in recs if r is not None]


def clear(e: BaseException, path: Path | str, *words: str) -> str:
    """The error names the file and the fix and says what is wrong; it is one of the errors the CLI reports."""
    msg = str(e)
    assert isinstance(e, (ValueError, FileNotFoundError)), type(e)
    assert str(path) in msg and "Fix" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---------------------------------------------------------------- Parquet
def test_truncated_parquet_is_an_error_naming_the_file(tmp_path):
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pylist([pixelprose(i) for i in range(20)]), whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputFileError) as e:
        open_source("pixelprose", str(cut))
    clear(e.value, cut, "not a readable Parquet file", "copy or download it again")


def test_csv_named_parquet_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "captions.parquet"
    p.write_text("image_url,caption\nhttps://example.org/1.jpg,A caption.\n")
    with pytest.raises(InputFileError) as e:
        open_source("pixmo", str(p))
    clear(e.value, p, "not a Parquet file", ".csv")


def test_empty_parquet_file_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "train-00000.parquet"
    p.touch()
    with pytest.raises(InputFileError) as e:
        open_benchmark("docvqa", str(p))
    clear(e.value, p, "empty (0 bytes)")


def corrupt_past_footer(path: Path, rows: list[dict], column: int = 0) -> Path:
    """A Parquet file of `rows` whose footer reads (the check at the start passes) but whose second row
    group does not (bytes in the middle of one of its column chunks flipped)."""
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=len(rows) // 2)
    col = pq.ParquetFile(path).metadata.row_group(1).column(column)
    start = (col.dictionary_page_offset or col.data_page_offset) + col.total_compressed_size // 2
    b = bytearray(path.read_bytes())
    for k in range(start, start + 24):
        b[k] ^= 0x5A
    path.write_bytes(bytes(b))
    return path


def test_parquet_corrupt_past_its_footer_stops_with_the_file_and_row(tmp_path):
    """The footer reads (so the up-front check passes); a page does not: one error naming file and place."""
    p = corrupt_past_footer(tmp_path / "c.parquet", [pixmo(i, f"{CAP} Number {i}.") for i in range(50)], column=1)
    src = open_source("pixmo", str(p))
    with pytest.raises(InputFileError) as e:
        list(first_records(src, None))
    clear(e.value, p, "not a readable Parquet file", "row")


@pytest.mark.parametrize("bad, shown", [(pa.array(list(range(3)), pa.int64()), "int64"),
                                        (pa.array([["a", "b"]] * 3, pa.list_(pa.string())), "list<")],
                         ids=["int", "list"])
def test_parquet_caption_column_of_the_wrong_type_is_an_error_up_front(tmp_path, bad, shown):
    p = tmp_path / "pp.parquet"
    t = pa.Table.from_pylist([pixelprose(i) for i in range(3)])
    pq.write_table(t.set_column(t.schema.get_field_index("vlm_caption"), "vlm_caption", bad), p)
    with pytest.raises(CaptionSchemaError) as e:
        open_source("pixelprose", str(p))
    clear(e.value, p, "'vlm_caption'", f"has type {shown}", "expected string")


def test_benchmark_parquet_column_of_the_wrong_type_is_a_counted_rejection_per_row(tmp_path):
    p = tmp_path / "docvqa.parquet"
    rows = [dict(docvqa(i), question=i) for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), p)
    recs = read("benchmark", "docvqa", p)
    assert reasons(recs) == ["qa:empty"] * 3
    assert all(f"{p} row {k + 1}" in r.detail and "'question' is int" in r.detail for k, r in enumerate(recs))


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


# ---------------------------------------------------------------- files and folders
@pytest.mark.parametrize("name, kind, source", [
    ("a.jsonl", "caption", "pixmo"), ("a.csv", "caption", "pixmo"), ("a.json", "caption", "docci"),
    ("a.jsonl", "benchmark", "renderedtext"), ("blank.jsonl", "caption", "pixelprose"),
    ("header.csv", "caption", "pixmo")])
def test_empty_file_is_an_empty_shard(tmp_path, name, kind, source):
    p = tmp_path / name
    p.write_text({"blank.jsonl": "\n  \n\t\n", "header.csv": "image_url,caption\n"}.get(name, ""))
    src = open_source(source, str(p)) if kind == "caption" else open_benchmark(source, str(p))
    assert list(first_records(src, None)) == [(0, None)]  # named, so its output shard is written (empty)


def test_folder_with_no_data_files_is_an_error(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        open_source("docci", str(tmp_path))
    assert str(tmp_path) in str(e.value) and "no caption files" in str(e.value)
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        open_benchmark("ocrvqa", str(tmp_path))


def test_symlink_loop_as_input_and_inside_a_folder_is_an_error_naming_it(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(InputFileError) as e:
        open_source("pixmo", str(a))
    clear(e.value, a, "symlink loop")
    folder = tmp_path / "captions"
    folder.mkdir()
    jsonl(folder / "good.jsonl", [pixmo(0)])
    (folder / "self.jsonl").symlink_to(folder / "self.jsonl")
    with pytest.raises(InputFileError) as e:
        open_source("pixmo", str(folder))
    clear(e.value, folder / "self.jsonl", "symlink loop")


def test_folder_symlinked_into_itself_is_scanned_once(tmp_path):
    jsonl(tmp_path / "a.jsonl", [pixmo(0)])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)
    src = open_source("pixmo", str(tmp_path))
    assert [s.name for s in src.shards] == [str(tmp_path / "a.jsonl")]


READ = """
import sys
from pipeline.captions import open_source
from pipeline.input_files import InputFileError
try:
    open_source("pixmo", sys.argv[1])
except InputFileError as e:
    print("ERROR", e)
else:
    print("READ")
"""


def without_dac(*cmd: str) -> subprocess.CompletedProcess:
    """Run `cmd` as root without the capabilities that let root read any file (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH): file permissions then stop it, as they stop any user. Tests run as root, whom a
    plain chmod 000 does not stop."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def needs_dac_drop() -> None:
    if os.geteuid() != 0:
        return
    if not shutil.which("setpriv") or without_dac("true").returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: root reads any file")


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    needs_dac_drop()
    p = jsonl(tmp_path / "p.jsonl", [pixmo(0)])
    p.chmod(0o000)
    out = without_dac(sys.executable, "-c", READ, str(p))
    assert out.stdout.startswith("ERROR"), out.stdout + out.stderr
    assert str(p) in out.stdout and "permission denied" in out.stdout and "chmod a+r" in out.stdout
    p.chmod(0o644)
    assert without_dac(sys.executable, "-c", READ, str(p)).stdout.strip() == "READ"  # readable once allowed


def test_folder_that_cannot_be_entered_is_an_error_naming_it(tmp_path):
    needs_dac_drop()
    inner = tmp_path / "captions" / "locked"
    inner.mkdir(parents=True)
    jsonl(tmp_path / "captions" / "a.jsonl", [pixmo(0)])
    jsonl(inner / "b.jsonl", [pixmo(1)])
    inner.chmod(0o000)
    try:
        for target, named in ((tmp_path / "captions", inner), (inner / "b.jsonl", inner / "b.jsonl")):
            out = without_dac(sys.executable, "-c", READ, str(target))
            assert out.stdout.startswith("ERROR"), out.stdout + out.stderr  # not a file silently left out
            assert str(named) in out.stdout and "permission denied" in out.stdout
    finally:
        inner.chmod(0o755)


def test_fifo_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "captions.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError) as e:
        open_source("pixmo", str(fifo))
    clear(e.value, fifo, "not a regular file")
    with pytest.raises(InputFileError, match="not a regular file"):
        open_benchmark("tallyqa", str(tmp_path))


def test_gzip_file_named_jsonl_is_an_error_saying_to_decompress(tmp_path):
    p = tmp_path / "captions.jsonl"
    p.write_bytes(gzip.compress("".join(json.dumps(pixmo(i)) + "\n" for i in range(3)).encode()))
    with pytest.raises(InputFileError) as e:
        open_source("pixmo", str(p))
    clear(e.value, p, "gzip-compressed", "gzip -dc")
    t = tmp_path / "train.json"
    t.write_bytes(gzip.compress(json.dumps([tallyqa(0)]).encode()))
    with pytest.raises(InputFileError, match="gzip-compressed"):
        open_benchmark("tallyqa", str(t))


def test_parquet_file_named_jsonl_is_an_error_saying_to_rename(tmp_path):
    p = tmp_path / "rt.jsonl"
    pq.write_table(pa.Table.from_pylist([renderedtext(0)]), p)
    with pytest.raises(InputFileError) as e:
        open_benchmark("renderedtext", str(p))
    clear(e.value, p, "is Parquet", "rt.parquet")


def test_file_that_grows_while_read_stops_its_shard_with_a_clear_error(tmp_path):
    p = jsonl(tmp_path / "p.jsonl", [pixmo(i) for i in range(3)])
    src = open_source("pixmo", str(p))
    it = first_records(src, None)
    assert reasons([next(it)[1]]) == ["ok"]
    with open(p, "a") as f:  # a writer still appending
        f.write(json.dumps(pixmo(3)) + "\n")
    with pytest.raises(InputFileError) as e:
        list(it)
    clear(e.value, p, "changed while it was being read", "rows already done are kept")
    b = jsonl(tmp_path / "ocr.jsonl", [ocrvqa(i) for i in range(2)])
    src = open_benchmark("ocrvqa", str(b))
    it = first_records(src, None)
    next(it)
    jsonl(b, [ocrvqa(i) for i in range(5)])
    with pytest.raises(InputFileError, match="changed while it was being read"):
        list(it)


# ---------------------------------------------------------------- hub ids
def test_hub_id_that_does_not_exist_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(HubLoadError) as e:
        open_source("pixmo", "nobody-ssvd/no-such-captions")
    msg = str(e.value)
    assert "'nobody-ssvd/no-such-captions' could not be loaded" in msg and "HF_HUB_OFFLINE" in msg and "Fix" in msg
    with pytest.raises(HubLoadError, match="nobody-ssvd/no-such-vqa"):
        open_benchmark("docvqa", "hub:nobody-ssvd/no-such-vqa")


def test_hub_dataset_with_a_corrupt_data_file_stops_with_a_clear_error(tmp_path, monkeypatch):
    """A local repository read through `datasets` (the hub path): its second data file is corrupt past its
    footer, so loading works and streaming it fails; one error names the shard and the last row read."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "repo" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([pixmo(i) for i in range(4)]), data / "train-00000-of-00002.parquet")
    corrupt_past_footer(data / "train-00001-of-00002.parquet", [pixmo(i, f"{CAP} {i}.") for i in range(4, 44)], 1)
    src = open_source("pixmo", f"hub:{tmp_path / 'repo'}")
    assert len(src.shards) == 2
    assert reasons(list(src.iter_shard(0))) == ["ok"] * 4
    with pytest.raises(HubLoadError) as e:
        list(src.iter_shard(1))
    msg = str(e.value)
    assert f"{tmp_path / 'repo'}#shard1: reading stopped after row" in msg and "Fix" in msg
