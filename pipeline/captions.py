"""Caption sources (PixMo-Cap, DOCCI, PixelProse) from the Hugging Face hub or local files.

`open_source(source, input)` resolves `input` to shards: one per local file (*.parquet,
*.jsonl / *.jsonlines, *.json as JSON lines or one JSON array read as a stream, *.csv; a
directory is searched recursively, sorted by path), or one per shard of a streaming `datasets`
dataset (a hub id[@split], `hf://datasets/ID`, or `hub:PATH_OR_ID` to force `datasets` even for
a local repo directory; a loading-script repository such as `google/docci` is refused before any
work, see `pipeline.hub_load`). `iter_shard(i)` streams the rows of one shard in order as
`Caption`s or `CaptionRejection`s; a bad row never raises, a missing required column raises
`CaptionSchemaError`.

DOCCI is read as released (`docci_descriptions.jsonlines`: example_id, split, image_file,
description, every split in one file; rows of other splits than `CaptionOptions.split`, default
"train", are skipped and counted in `skipped`) with `image_file` resolved against the image
root (`CaptionOptions.image_root`, default the `images/` folder next to the file when it exists);
or as a Parquet mirror with the hub schema (example_id, description, image {bytes, path}).

PixelProse: by default no content filter, as Kyutai's released generator (it keeps every row);
`CaptionOptions.watermark_classes` keeps only the given `watermark_class_id`s (0 watermark,
1 clean, 2 text overlay) and `max_toxicity` rejects rows over a Detoxify score; each rejection
has its own reason. Captions get the released generator's clean-up
(`caption_text.trim_meta_sentences`). Column facts and where they were checked: docs/sources.md.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.caption_text import normalize_caption
from pipeline.hub_load import check_not_script, hub_rows, load_streaming
from pipeline.input_files import Fingerprint, guarded_rows, kind_of, sniff, unreadable, walk_files
from pipeline.types import SOURCES, Caption, CaptionRejection, ImageRef, stable_hash

log = logging.getLogger("ssvd")
SUFFIXES = (".parquet", ".jsonl", ".jsonlines", ".json", ".csv")
ID_FIELD = {"pixmo": "image_url", "docci": "example_id", "pixelprose": "uid"}
TEXT_FIELD = {"pixmo": "caption", "docci": "description", "pixelprose": "vlm_caption"}
REQUIRED = {
    "pixmo": ("image_url", "caption"),
    "docci": ("example_id", "description"),
    "pixelprose": ("uid", "url", "vlm_caption", "status"),
}
# At least one of these columns holds the image (DOCCI: the release's image_file, or the mirror's image).
IMAGE_ANY = {"pixmo": ("image_url",), "docci": ("image_file", "image"), "pixelprose": ("url",)}
TOXICITY_COLUMNS = ("toxicity", "severe_toxicity", "obscene", "identity_attack", "insult",
                    "threat", "sexual_explicit")
OPTIONAL = {"pixmo": (), "docci": ("split", "image_file", "image"),
            "pixelprose": ("sha256", "watermark_class_id", "error_message") + TOXICITY_COLUMNS}
# PixelProse watermark_class_id values (docs/sources.md) and the rejection reason of each.
WATERMARK_CLASSES = {0: "watermark", 1: "clean", 2: "text_overlay"}
_BATCH_ROWS = 256
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
csv.field_size_limit(2**31 - 1)


class CaptionSchemaError(ValueError):
    """A caption file (or hub dataset) lacks a column its source needs."""



@dataclass(frozen=True, slots=True)
class InputShard:
    index: int
    name: str  # file path, or f"{hub_id}#shard{i}"


@dataclass(frozen=True, slots=True)
class CaptionOptions:
    """How captions are read. The filters default to none, as Kyutai's released generator."""

    max_chars: int = 1000
    min_chars: int = 20
    max_toxicity: float | None = None  # PixelProse: reject a row whose highest Detoxify score is above
    watermark_classes: tuple[int, ...] | None = None  # PixelProse: keep only these watermark_class_ids
    split: str = "train"  # hub split to load; DOCCI release rows with another `split` are skipped
    image_root: str | None = None  # DOCCI release: folder that image_file is relative to

    def __post_init__(self) -> None:
        if not 0 <= self.min_chars <= self.max_chars or self.max_chars < 2:
            raise ValueError(f"need 0 <= min_chars <= max_chars and max_chars >= 2, got {self}")
        if self.max_toxicity is not None and not 0 <= self.max_toxicity <= 1:
            raise ValueError(f"max_toxicity must be in [0, 1] (Detoxify scores), got {self.max_toxicity}")
        if self.watermark_classes is not None:
            bad = [c for c in self.watermark_classes if c not in WATERMARK_CLASSES]
            if bad or not self.watermark_classes:
                raise ValueError(f"watermark_classes {self.watermark_classes!r}: choose from "
                                 f"{', '.join(f'{k} ({v})' for k, v in WATERMARK_CLASSES.items())}")
        if not self.split.strip():
            raise ValueError("split must be a non-empty split name, e.g. train")


def _schema_error(where: str, source: str, missing: str, found: list[str]) -> CaptionSchemaError:
    fits = [s for s in SOURCES if s != source and set(REQUIRED[s]) <= set(found)]
    hint = f" These columns fit source {fits[0]!r}: did you mean --source {fits[0]}?" if fits else ""
    return CaptionSchemaError(
        f"{where}: missing required column {missing!r} for source {source!r}. Columns found: "
        f"{sorted(found)}. Fix: {source} needs columns {list(REQUIRED[source])}; rename the "
        f"column in the file, or pick the source the file was made for.{hint}"
    )


def _check_columns(where: str, source: str, found: list[str]) -> None:
    for col in REQUIRED[source]:
        if col not in found:
            raise _schema_error(where, source, col, found)
    if not any(c in found for c in IMAGE_ANY[source]):
        raise _schema_error(where, source, " or ".join(IMAGE_ANY[source]), found)


# ---------------------------------------------------------------- local files: schema + rows
def _jsonl_records(path: Path) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
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


def _json_array_records(path: Path, chunk: int = 1 << 16) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
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


def _is_json_array(path: Path) -> bool:
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
    records = _json_array_records(path) if _is_json_array(path) else _jsonl_records(path)
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


def _check_types(path: Path, source: str) -> None:
    """A Parquet file whose id or caption column has the wrong type: one error up front, not a rejection a row."""
    schema = pq.read_schema(path)
    for col, ids in ((ID_FIELD[source], True), (TEXT_FIELD[source], False)):
        if col not in schema.names:
            continue
        t = schema.field(col).type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or (
                ids and pa.types.is_integer(t)):
            continue
        raise CaptionSchemaError(
            f"{path}: column {col!r} has type {t}, expected string{' (or integer)' if ids else ''} for source "
            f"{source!r}. Fix: write the {'ids' if ids else 'captions'} as text (e.g. "
            f"table.set_column(..., pa.array(values, pa.string()))), or pick the column that holds them.")


def check_file(path: Path, source: str) -> None:
    """Raise CaptionSchemaError if the file lacks a required column (reads only its head), InputFileError if
    it cannot be read as what its name says."""
    cols = file_columns(path)
    if cols is not None:
        _check_columns(str(path), source, cols)
        if path.suffix.lower() == ".parquet":
            _check_types(path, source)


Row = tuple[str, "dict | None", "tuple[str, str] | None"]  # (where, record, (reason, message))


def _iter_local(path: Path, source: str) -> Iterator[Row]:
    """(where, record, error) per row of one local file, streamed (schema checked by caller); a file that
    cannot be read on raises InputFileError naming the row reached."""
    return guarded_rows(path, _iter_local_rows(path, source))


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


def _iter_local_rows(path: Path, source: str) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        wanted = REQUIRED[source] + OPTIONAL[source]
        cols = [c for c in wanted if c in pf.schema_arrow.names]
        row = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
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
    elif _is_json_array(path):
        for n, rec, err in _json_array_records(path):
            yield f"{path} element {n}", rec, err
    else:
        for lineno, rec, err in _jsonl_records(path):
            yield f"{path} line {lineno}", rec, err


def _scan(p: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    """Input files under p, recursively, sorted by path; hidden files and folders skipped (see walk_files)."""
    return walk_files(p, suffixes)


def _looks_like_path(s: str) -> bool:
    """Not "name" or "owner/name": "./x", "/x", "a/b/c", "x.parquet", "C:\\x"."""
    return not _HUB_ID.match(s) or s.startswith(".") or s.lower().endswith(SUFFIXES)


# ---------------------------------------------------------------- row -> Caption
def _describe(value: Any) -> str:
    return "null (missing)" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _number(value: Any) -> float | None:
    """A float from a number or numeric string (CSV/JSON); None when absent or not a number."""
    try:
        x = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ValueError:
        return None
    return None if x is None or math.isnan(x) else x


def _text(value: Any) -> str | None:
    """A stripped non-empty string from a str (or int id), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


class CaptionSource:
    """The shards of one caption source; `iter_shard` streams one shard's rows in order.

    `skipped[i]`: rows of shard i left out because they belong to another split (DOCCI release
    file), counted as they are read."""

    def __init__(self, source: str, input: str, kind: str, shards: list[InputShard],
                 options: CaptionOptions, files: list[Path] | None = None, dataset: Any = None,
                 image_roots: list[Path | None] | None = None):
        self.source, self.input, self.kind = source, input, kind
        self.shards, self.options = shards, options
        self._files, self._dataset = files, dataset
        self._roots = image_roots or [None] * len(shards)
        self.skipped = [0] * len(shards)
        # each local file as it was when opened: a file that changes while it is read stops its shard
        self._prints = [Fingerprint.of(f) for f in files] if files is not None else None

    def describe(self) -> dict:
        d = {"source": self.source, "input": self.input, "kind": self.kind,
             "shards": [s.name for s in self.shards]}
        if any(self._roots):
            d["image_roots"] = [str(r) if r else None for r in self._roots]
        # reading options that change the rows (absent when default, so default configs are unchanged)
        opts = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(CaptionOptions)
                if f.name != "image_root" and getattr(self.options, f.name) != f.default}
        if opts:
            d["options"] = opts
        return d

    def iter_shard(self, index: int) -> Iterator[Caption | CaptionRejection]:
        if not 0 <= index < len(self.shards):
            raise IndexError(f"{self.input}: shard {index} out of range (0..{len(self.shards) - 1})")
        shard = self.shards[index]
        if self._files is not None:
            check_file(self._files[index], self.source)  # raise now, not at the first next()
            rows = _iter_local(self._files[index], self.source)
        else:
            rows = self._iter_hub(index)
        base = re.split(r"[\\/]", shard.name)[-1]
        self.skipped[index] = 0
        return self._rows(index, base, rows)

    def _rows(self, index: int, base: str, rows: Iterator[Row]) -> Iterator[Caption | CaptionRejection]:
        want = self.options.split
        row = -1
        for row, (where, rec, err) in enumerate(rows):
            if self.source == "docci" and rec is not None and isinstance(rec.get("split"), str) \
                    and rec["split"].strip() != want:
                self.skipped[index] += 1  # another split of the release file: not this input
                continue
            yield self._convert(index, base, row, where, rec, err)
        if self._prints is not None:
            self._prints[index].check(self._files[index], row + 1)
        if self.skipped[index]:
            log.info("%s: %d row(s) of other splits than %r skipped (DOCCI release file)",
                     self.shards[index].name, self.skipped[index], want)

    def _iter_hub(self, index: int) -> Iterator[Row]:
        ds = self._dataset.shard(num_shards=len(self.shards), index=index)
        return hub_rows(ds, self.shards[index].name)

    def _convert(self, index: int, base: str, row: int, where: str, rec: dict | None,
                 err: tuple[str, str] | None) -> Caption | CaptionRejection:
        src, opt = self.source, self.options

        def reject(reason: str, detail: str) -> CaptionRejection:
            return CaptionRejection(stable_hash(src, base, row), src, row, reason, f"{where}: {detail}")

        if rec is None:
            reason, message = err or ("row:malformed", "unreadable")
            rest = ("the rest of the file is read" if "cannot be read" not in message
                    else "the elements after it were not read" if "element" in where
                    else "the rows after it were not read")
            return reject(reason, f"row is {message}. Fix or delete it; {rest}.")
        id_field, text_field = ID_FIELD[src], TEXT_FIELD[src]
        raw_id = _text(rec.get(id_field))
        if raw_id is None:
            return reject("row:missing_id", f"field {id_field!r} is {_describe(rec.get(id_field))}; "
                          f"every {src} row needs a non-empty {id_field!r}. Fill it in or drop the row.")
        image, reason, problem = self._image(rec, self._roots[index])
        if image is None:
            return reject(reason, problem)
        if src == "pixelprose":
            bad = self._pixelprose_filter(rec)
            if bad:
                return reject(*bad)
        raw_text = rec.get(text_field)
        if raw_text is not None and not isinstance(raw_text, str):
            return reject("caption:not_text", f"field {text_field!r} is {_describe(raw_text)}; expected a "
                          "string. Write the caption as text or drop the row.")
        if not isinstance(raw_text, str) or not raw_text.strip():
            return reject("caption:empty", f"field {text_field!r} is {_describe(raw_text)}; expected a "
                          "non-empty string. Fill in the caption or drop the row.")
        pp = src == "pixelprose"
        text = normalize_caption(raw_text, boilerplate=pp, meta_trim=pp, max_chars=opt.max_chars)
        if len(text) < opt.min_chars:
            return reject("caption:too_short" if text else "caption:empty",
                          f"field {text_field!r} is {text!r} after normalisation, shorter than "
                          f"min_chars={opt.min_chars}. Write a real caption or lower min_chars.")
        # PixMo: the full sha256 hex of image_url, as Kyutai's released generator names its rows.
        cid = hashlib.sha256(raw_id.encode()).hexdigest() if src == "pixmo" else raw_id
        return Caption(id=cid, source=src, text=text, image=image, row=row)

    def _pixelprose_filter(self, rec: dict) -> tuple[str, str] | None:
        """(reason, detail) when a PixelProse row is left out, else None."""
        opt = self.options
        status = rec.get("status")
        if not (isinstance(status, str) and status.strip() == "success"):
            return ("pixelprose:status", f"status is {status!r} (error_message: "
                    f"{rec.get('error_message')!r}); only 'success' rows have a usable image.")
        if opt.watermark_classes is not None:
            raw = rec.get("watermark_class_id")
            cls = _number(raw)
            if cls is None or cls != int(cls) or int(cls) not in WATERMARK_CLASSES:
                return ("pixelprose:watermark_unknown", f"watermark_class_id is {_describe(raw)}; expected "
                        f"0 (watermark), 1 (clean) or 2 (text overlay) to apply watermark_classes="
                        f"{list(opt.watermark_classes)}. Fix the value, or drop the watermark filter.")
            if int(cls) not in opt.watermark_classes:
                name = WATERMARK_CLASSES[int(cls)]
                return (f"pixelprose:{name}", f"watermark_class_id={int(cls)} ({name}) is not in "
                        f"watermark_classes={list(opt.watermark_classes)}; add {int(cls)} to keep such rows.")
        if opt.max_toxicity is not None:
            scores = {c: _number(rec.get(c)) for c in TOXICITY_COLUMNS}
            scores = {c: v for c, v in scores.items() if v is not None}
            if scores and max(scores.values()) > opt.max_toxicity:
                col = max(scores, key=scores.__getitem__)
                return ("pixelprose:toxicity", f"{col}={scores[col]:.3f} > max_toxicity={opt.max_toxicity} "
                        "(raise max_toxicity, or drop it, to keep the row).")
        return None

    def _image(self, rec: dict, root: Path | None) -> tuple[ImageRef | None, str, str]:
        """(image, reason, detail): image None with the rejection reason and detail when unusable."""
        fill = " Every caption needs its image; fill it in or drop the row."
        if self.source == "pixmo":
            return ImageRef(url=_text(rec.get("image_url"))), "", ""
        if self.source == "pixelprose":
            url = _text(rec.get("url"))
            if url is None:
                return None, "image:missing", f"field 'url' is {_describe(rec.get('url'))}.{fill}"
            sha = rec.get("sha256")
            return ImageRef(url=url, sha256=sha.strip() if isinstance(sha, str) and sha.strip() else None), "", ""
        if "image_file" in rec and rec.get("image") is None:  # docci release: relative to the image root
            name = _text(rec.get("image_file"))
            if name is None:
                return None, "image:missing", f"field 'image_file' is {_describe(rec.get('image_file'))}.{fill}"
            if root is None:
                return ImageRef(path=name), "", ""
            path = root / name
            if not path.is_file():
                return None, "image:not_found", (
                    f"image_file {name!r} is not in the image root {str(root)!r} (looked for {str(path)!r}). "
                    "Fix: extract docci_images.tar.gz there or pass the folder that holds the images "
                    "(--image-root / image_root), or drop the row.")
            return ImageRef(path=str(path)), "", ""
        img = rec.get("image")  # docci mirror: {bytes, path} (Parquet / datasets) or a path string
        if isinstance(img, str) and img.strip():
            return ImageRef(path=img.strip()), "", ""
        if isinstance(img, dict):
            data, path = img.get("bytes"), _text(img.get("path"))
            sha = hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) and data else None
            if sha or path:
                return ImageRef(path=path, sha256=sha), "", ""
        return None, "image:missing", (f"field 'image' is {_describe(img)}; expected a path or "
                                       f"{{bytes, path}}.{fill}")


# ---------------------------------------------------------------- open
def _open_hub(source: str, input: str, hub_id: str, options: CaptionOptions) -> CaptionSource:
    import datasets

    hub_id, _, at = hub_id.partition("@")
    split = at or options.split
    hint = (f"{input!r} is not an existing local path, so it was loaded with `datasets` as a hub "
            "dataset id (e.g. allenai/pixmo-cap; needs the network or the HF cache).")
    dd = load_streaming(hub_id, hint=hint)
    if split not in dd:
        raise ValueError(f"hub dataset {hub_id!r} has no split {split!r}; splits: {sorted(dd)}. "
                         f"Fix: pass {hub_id}@SPLIT (or --split SPLIT).")
    ds = dd[split]
    cols = ds.column_names
    if cols is None:  # features unknown until read: peek at the first example
        cols = list(next(iter(ds.take(1)), {}).keys())
    _check_columns(f"hub dataset {hub_id!r}", source, list(cols))
    ds = ds.select_columns([c for c in REQUIRED[source] + OPTIONAL[source] if c in cols])
    if isinstance((ds.features or {}).get("image"), datasets.Image):
        ds = ds.decode(False)  # {bytes, path} like the Parquet files; never decode pixels
    shards = [InputShard(i, f"{hub_id}#shard{i}") for i in range(ds.num_shards)]
    return CaptionSource(source, input, "hub", shards, options, dataset=ds)


def first_records(source: Any, limit: int | None) -> Iterator[tuple[int, Any]]:
    """(shard index, record) of a source's first `limit` records (None: all), in shard order.

    Works on any source with `shards` and `iter_shard` (captions, benchmarks); a rejection counts as a
    record, since it stands for an input row. A record whose id (a caption's id, a benchmark row's key) was
    already read becomes a `row:duplicate_id` rejection naming the first one: two rows with one id would give
    two dialogues with one id, of which a shard keeps only the last. A shard none of whose rows is read
    (an empty file) is still named, as (index, None), so it gets its (empty) output shard."""
    seen = 0
    first: dict[int, int] = {}  # 64-bit hash of the id -> shard << 40 | row of its first row (~100 B an id)
    for shard in source.shards:
        named = False
        for rec in source.iter_shard(shard.index):
            if limit is not None and seen >= limit:
                return
            seen += 1
            named = True
            yield shard.index, _first_of_id(source, shard, rec, first)
        if not named and (limit is None or seen < limit):
            yield shard.index, None


def _first_of_id(source: Any, shard: InputShard, rec: Any, first: dict[int, int]) -> Any:
    if isinstance(rec, CaptionRejection):
        return rec
    key = getattr(rec, "caption_id", None) or rec.id  # a benchmark Dialogue's key, or a Caption's id
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    row = rec.row if isinstance(rec, Caption) else rec.input_row
    if h not in first:
        first[h] = shard.index << 40 | row
        return rec
    k, r = first[h] >> 40, first[h] & ((1 << 40) - 1)
    base = re.split(r"[\\/]", shard.name)[-1]
    return CaptionRejection(
        stable_hash(rec.source, base, row), rec.source, row, "row:duplicate_id",
        f"{shard.name} row {row + 1}: id {key[:80]!r} was already read at {source.shards[k].name} row {r + 1}; "
        "a second row with the same id would make a dialogue with the same id. The first one is used. Fix: "
        "remove the duplicate row, or give it its own id.")


def _image_roots(source: str, files: list[Path], options: CaptionOptions) -> list[Path | None]:
    """DOCCI release files: the image root of each file (explicit, else images/ beside it if present)."""
    if options.image_root is not None:
        root = Path(options.image_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"image root {options.image_root!r} is not a folder. Fix: extract docci_images.tar.gz "
                "and pass the folder holding the images (--image-root / image_root).")
        if source != "docci":
            raise ValueError(f"an image root is only used by --source docci (the release's image_file "
                             f"column); {source} rows name their images by URL. Drop --image-root.")
        return [root] * len(files)
    if source != "docci":
        return [None] * len(files)
    return [f.parent / "images" if (f.parent / "images").is_dir() else None for f in files]


def open_source(source: str, input: str, options: CaptionOptions = CaptionOptions()) -> CaptionSource:
    """Resolve `input` (local file or directory, hub id[@split], `hf://datasets/ID`, `hub:PATH_OR_ID`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown caption source {source!r}; valid sources: {', '.join(SOURCES)}")
    check_not_script(input)  # google/docci and the like: before any work
    if input.startswith("hub:"):
        return _open_hub(source, input, input[4:], options)
    if input.startswith("hf://"):
        hub_id = input[5:].removeprefix("datasets/").strip("/")
        return _open_hub(source, input, hub_id, options)
    p = Path(input).expanduser()
    kind = kind_of(p)  # a broken link, a link loop, a folder not allowed in: say so, not "no such file"
    if kind == "file":
        if p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{input}: unsupported caption file type {p.suffix!r}; "
                             f"use one of {', '.join(SUFFIXES)}")
        files = [p]
    elif kind == "dir":
        files = _scan(p)
        if not files:
            raise FileNotFoundError(f"{input}: directory has no caption files "
                                    f"({', '.join('*' + s for s in SUFFIXES)}, searched recursively)")
    elif _looks_like_path(input.partition("@")[0]):
        raise FileNotFoundError(
            f"{input}: no such file or directory. Give an existing caption file or directory, or a "
            f"hub dataset id such as allenai/pixmo-cap (prefix hub: to force the hub loader)."
        )
    else:
        return _open_hub(source, input, input, options)
    for f in files:  # cheap up-front check: footers, headers, first JSON lines
        check_file(f, source)
    roots = _image_roots(source, files, options)
    shards = [InputShard(i, str(f)) for i, f in enumerate(files)]
    return CaptionSource(source, input, "local", shards, options, files=files, image_roots=roots)
