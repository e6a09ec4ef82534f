"""Hostile input files across the three caption sources and the four benchmarks (issue 14, item 5): the row
builders and checks that tests/pipeline/sources/test_hostile_files.py (what the file is: Parquet, folders, links,
permissions, hub ids) and tests/pipeline/sources/test_hostile_rows.py (what the rows hold: encodings, ids, content) share.

Each broken input has exactly one right outcome: a clear error before any work that names the file (and
the row or line), what is wrong and the fix; or a counted rejection whose detail says the same; or, for
input that is odd but valid (a BOM, CRLF, emoji, template syntax), the text read as written. Never a
traceback of a library, a hang, or a row silently gone. These tests read the sources directly (no engine);
tests/integration/test_cli_hostile_inputs.py takes a few of them through the CLI.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources.benchmarks import open_benchmark
from pipeline.sources.captions import open_source
from pipeline.sources.sharded import first_records
from pipeline.core.types import Caption, Dialogue

ROOT = Path(__file__).resolve().parents[3]
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
