"""Records of local input files, for the caption and benchmark readers: Parquet (read in batches, only the
wanted columns), CSV, JSON lines, and a file holding one JSON array (read as a stream).

`read_rows(path, columns)` yields `Row`s (where, record, error): a record is a dict, or None with
(reason, message) when that row cannot be read; a file that cannot be read on raises InputFileError
naming the row reached. `file_columns(path)` reads only a file's head.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources.input_files import guarded_rows, sniff, unreadable

BATCH_ROWS = 256
csv.field_size_limit(2**31 - 1)

Row = tuple[str, "dict | None", "tuple[str, str] | None"]  # (where, record, (reason, message))


def jsonl_records(path: Path) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    """(1-based line, record, error) for each non-blank line; the file is read line by line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8").lstrip("\ufeff"))
            except (UnicodeDecodeError, ValueError) as e:
                yield lineno, None, ("row:malformed_json", f"not valid JSON ({e})")
                continue
            if not isinstance(rec, dict):
                yield lineno, None, ("row:malformed_json", f"a JSON {type(rec).__name__}, not an object")
                continue
            yield lineno, rec, None


def json_array_records(path: Path, chunk: int = 1 << 16) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    """(1-based element, record, error) for each element of a file holding one JSON array.

    Read as a stream (a chunk at a time), so a release file of any size (TallyQA's train.json)
    never sits in memory whole. An element that cannot be parsed ends the file with one error:
    past it there is no telling where the next element starts."""
    dec = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as f:
        buf, pos, eof, n, opened, need_comma = "", 0, False, 0, False, False

        def fill() -> None:
            nonlocal buf, pos, eof
            more = f.read(chunk)
            eof = not more
            buf, pos = buf[pos:] + more, 0

        try:
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos >= len(buf):
                    if eof:
                        yield n + 1, None, ("row:malformed_json", "the file ends inside the JSON array "
                                            "(no closing ']')")
                        return
                    fill()
                    continue
                c = buf[pos]
                if not opened:
                    if c != "[":
                        yield 1, None, ("row:malformed_json", f"not a JSON array (starts with {c!r})")
                        return
                    opened, pos = True, pos + 1
                    continue
                if c == "]":
                    return
                if need_comma:
                    if c != ",":
                        yield n + 1, None, ("row:malformed_json", f"expected ',' or ']' after element {n}, "
                                            f"found {c!r}; the rest cannot be read")
                        return
                    need_comma, pos = False, pos + 1
                    continue
                try:
                    rec, end = dec.raw_decode(buf, pos)
                    complete = end < len(buf) or eof
                except ValueError as e:
                    if not eof:
                        fill()
                        continue
                    n += 1
                    yield n, None, ("row:malformed_json", f"not valid JSON ({e}); the rest of the array "
                                    "cannot be read")
                    return
                if not complete:  # a number or literal may go on in the next chunk
                    fill()
                    continue
                n += 1
                pos, need_comma = end, True
                if isinstance(rec, dict):
                    yield n, rec, None
                else:
                    yield n, None, ("row:malformed_json", f"a JSON {type(rec).__name__}, not an object")
        except UnicodeDecodeError as e:
            yield n + 1, None, ("row:malformed_json", f"not UTF-8 text ({e}); the rest cannot be read")


JSON_LINES_SUFFIXES = (".jsonl", ".jsonlines")


def is_json_array(path: Path) -> bool:
    """A `.json` file that opens with `[`: one JSON array. A JSON lines file is read line by line whatever its
    first line holds (a line `[1, 2, 3]` is one malformed row, not the file's rows)."""
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return False
    with open(path, "rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _file_columns(path: Path) -> list[str] | None:
    """Column names from the Parquet footer / CSV header / first JSON records (None: unknown)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return list(pq.read_schema(path).names)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), [])
        return header if any(h.strip() for h in header) else None  # an empty file: no rows, no columns
    records = json_array_records(path) if is_json_array(path) else jsonl_records(path)
    cols: set[str] = set()
    seen = 0
    for lineno, rec, _ in records:
        if rec is not None:  # union of the first few objects: one odd row is a row problem
            cols.update(rec)
            seen += 1
        if seen == 5 or lineno >= 50:
            break
    return sorted(cols) if seen else None


def file_columns(path: Path) -> list[str] | None:
    """`_file_columns` with every way of failing (compressed, truncated, unreadable) as an InputFileError."""
    sniff(path)
    try:
        return _file_columns(path)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise unreadable(path, e) from None


def read_rows(path: Path, columns: list[str] | tuple[str, ...]) -> Iterator[Row]:
    """(where, record, error) per row of one local file, streamed (Parquet: only `columns`, those it has);
    a file that cannot be read on raises InputFileError naming the row reached."""
    return guarded_rows(path, _rows(path, columns))


def _surrogates(rec: dict) -> str | None:
    """The first field holding bytes that are not UTF-8 (read with surrogateescape), else None."""
    for k, v in rec.items():
        for x in (k, v):
            if isinstance(x, str):
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError:
                    return k if isinstance(k, str) else "?"
    return None


def _rows(path: Path, columns: list[str] | tuple[str, ...]) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        cols = [c for c in columns if c in pf.schema_arrow.names]
        row = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
            for rec in batch.to_pylist():
                row += 1
                yield f"{path} row {row}", rec, None
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader, n = csv.DictReader(f, strict=True), 0
            while True:
                line = reader.line_num + 1
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    rec, bad = None, f"not valid CSV ({e})"
                    if "unexpected end of data" in str(e):
                        bad = (f"a quoted field opened on line {line} that is never closed: every line after "
                               "it, to the end of the file, was read into it, so the rows after it cannot be "
                               "read (an unbalanced \" quote)")
                else:
                    bad = "a different number of fields than the header" if (
                        None in rec or None in rec.values()) else None
                    field = None if bad else _surrogates(rec)
                    if field is not None:
                        bad = f"not UTF-8 text (field {field!r} holds bytes that are not UTF-8)"
                n += 1
                where = f"{path} row {n} (line {line})"
                if bad or rec is None:
                    yield where, None, ("row:malformed_csv", bad or "unreadable")
                else:
                    yield where, {k: (v if v != "" else None) for k, v in rec.items()}, None
    elif is_json_array(path):
        for n, rec, err in json_array_records(path):
            yield f"{path} element {n}", rec, err
    else:
        for lineno, rec, err in jsonl_records(path):
            yield f"{path} line {lineno}", rec, err
