"""Reading local input files (pipeline/sources/record_files.py) through the caption sources: a JSON array as a stream,
Parquet in batches, JSON lines in flat memory."""
from __future__ import annotations

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources.captions import open_source
from tests.pipeline.sources.test_captions import load


def test_json_array_file_is_read_as_a_stream(tmp_path):
    recs = [{"image_url": f"https://x/{i}.jpg", "caption": f"Caption number {i} of a JSON array file."}
            for i in range(50)]
    p = tmp_path / "arr.json"
    p.write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    _, (rows,) = load("pixmo", p)
    assert [c.text for c in rows] == [r["caption"] for r in recs]
    from pipeline.sources.record_files import json_array_records
    assert [r for _, r, _ in json_array_records(p, chunk=7)] == recs  # elements cut across chunks
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_url": "u1", "caption": "A fine first caption here."}, 3, {"image_url": "u2", "cap')
    _, (rows,) = load("pixmo", bad)
    assert [getattr(r, "reason", "ok") for r in rows] == ["ok", "row:malformed_json", "row:malformed_json"]
    assert f"{bad} element 2:" in rows[1].detail and "not an object" in rows[1].detail
    assert f"{bad} element 3:" in rows[2].detail and "elements after it were not read" in rows[2].detail
    assert "the rest of the file is read" in rows[1].detail


# ------------------------------------------------------------------ streaming
def test_parquet_is_streamed_in_batches(tmp_path, monkeypatch):
    path = tmp_path / "big.parquet"
    n = 5000
    pq.write_table(pa.table({"image_url": [f"https://x/{i}.jpg" for i in range(n)],
                             "caption": [f"Caption number {i} of a long stream of rows." for i in range(n)]}),
                   path, row_group_size=500)
    src = open_source("pixmo", str(path))

    def forbidden(*a, **k):
        raise AssertionError("whole-file read")

    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    monkeypatch.setattr(pq, "read_table", forbidden)
    it = src.iter_shard(0)
    first = next(it)
    assert first.row == 0 and first.text.startswith("Caption number 0")
    assert sum(1 for _ in it) == n - 1


def test_jsonl_memory_does_not_grow_with_file_size(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"image_url": "https://x/{}.jpg", "caption": "A caption. " * 80}) + "\n"
    with open(path, "w") as f:
        for i in range(20000):
            f.write(line.replace("{}", str(i)))
    size = path.stat().st_size
    src = open_source("pixmo", str(path))
    tracemalloc.start()
    count = sum(1 for _ in src.iter_shard(0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20000 and size > 15_000_000 and peak < 2_000_000


def test_a_jsonl_line_holding_an_array_is_one_rejection(tmp_path):
    """A JSON lines file is read line by line even when its first line is an array: that line is one counted
    rejection, and the lines after it are read (not the array's elements as rows, the rest of the file lost)."""
    good = {"image_url": "https://x/1.jpg", "caption": "A brown horse grazing in a green meadow."}
    for name in ("c.jsonl", "c.jsonlines"):
        p = tmp_path / name
        p.write_text("[1, 2, 3]\n" + json.dumps(good) + "\n")
        _, (rows,) = load("pixmo", p)
        assert [(r.row, getattr(r, "reason", "ok")) for r in rows] == [(0, "row:malformed_json"), (1, "ok")]
        assert f"{p} line 1:" in rows[0].detail and "list, not an object" in rows[0].detail
    arr = tmp_path / "c.json"  # a .json file opening with '[' is one array
    arr.write_text(json.dumps([good, 3]))
    _, (rows,) = load("pixmo", arr)
    assert [getattr(r, "reason", "ok") for r in rows] == ["ok", "row:malformed_json"]
