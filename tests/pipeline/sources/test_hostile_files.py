"""Hostile input files, what the file is (tests/pipeline/sources/hostile_inputs.py says what every test checks): broken
or mislabelled Parquet, empty files and folders, links, permissions, FIFOs, compressed or growing files, hub ids."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.benchmarks import open_benchmark
from pipeline.sources.captions import CaptionSchemaError, open_source
from pipeline.sources.hub_load import HubLoadError
from pipeline.sources.input_files import InputFileError
from pipeline.sources.sharded import first_records
from tests.pipeline.sources.hostile_inputs import (
    CAP,
    ROOT,
    clear,
    corrupt_past_footer,
    docvqa,
    jsonl,
    ocrvqa,
    pixelprose,
    pixmo,
    read,
    reasons,
    renderedtext,
    tallyqa,
)


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
from pipeline.sources.captions import open_source
from pipeline.sources.input_files import InputFileError
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
