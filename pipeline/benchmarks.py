"""Public benchmark splits of the paper's Table 7 as speechless QA dialogues.

TallyQA, OCR-VQA, RenderedText and DocVQA are used "in their original text form": each
question/answer becomes a user/assistant exchange (the user asks, the assistant answers), as
Appendix B does for COCO. A row with several QA pairs (OCR-VQA) gives one dialogue with all pairs
in order. Dialogues have status "ok", instruction "QA", seed 0, `caption_id` = the row key and a
deterministic id `stable_hash("benchmark", name, key)`; image bytes are never stored, only their
sha256 (plus the path / url the row gives).

`open_benchmark(name, input)` mirrors `pipeline.captions.open_source`: `input` is a local
Parquet / JSON-lines file or a folder of them (searched recursively, sorted; one shard per file),
or a hub id loaded with `datasets.load_dataset(id, streaming=True)` (`hub:ID` forces the hub,
`hf://datasets/ID` works too; `ID@split` picks a split, default below; one shard per dataset
shard). A bad row becomes a `CaptionRejection` (reason e.g. `qa:empty`, detail naming file, row
and field); a missing required column raises `BenchmarkSchemaError` (a `CaptionSchemaError`).

Column schemas (the real releases, checked against their cards and loaders: docs/sources.md, whose
tables `pipeline/source_schemas.py` mirrors; "a|b" = either column):

- tallyqa: either the `tallyqa` config of `HuggingFaceM4/the_cauldron` (the hub default): `images`
  (list of Image {bytes, path}), `texts` (list of {user, assistant, source}); one dialogue per row
  with every turn in order, key = a hash of the first image's sha256 and the first question. Or the
  original TallyQA release (`train.json`, one JSON array, read as a stream; or JSON lines /
  Parquet): `image` (COCO / Visual Genome relative path), `question`, `answer` (int count, written
  as digits), optional `question_id` (row key), `image_id`, `data_source`, `issimple`.
- ocrvqa (`howard-hou/OCR-VQA`): `image_id` (str, row key), `image` (Image {bytes, path}),
  `questions` (list[str]), `answers` (list[str], same length), optional `image_url`, `title`, ...
  One dialogue per row with every pair in order.
- renderedtext (`wendlerc/RenderedText`, webdataset shards): `png|image` (Image {bytes, path}),
  `json` (the webdataset sidecar; the text is `json.ocr_annotation.text`, a list of lines, joined
  with spaces) or a flat `text` column, optional `__key__` (row key; else a hash of the image sha256
  and text). There is no question: the user question is picked from `RENDERED_TEXT_QUESTIONS` by a
  seeded choice from the key.
- docvqa (`HuggingFaceM4/DocumentVQA` split train, the benchmark's training questions; also
  `lmms-lab/DocVQA` config "DocVQA", which has only validation/test): `questionId` (row key),
  `question` (str), `answers` (list[str]; the first is used; None on test splits, then rejected),
  `image` (Image {bytes, path}), optional `docId`, ...
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from pipeline.captions import (
    CaptionSchemaError,
    InputShard,
    _is_json_array,
    _json_array_records,
    _jsonl_records,
    _looks_like_path,
    _scan,
    file_columns,
)
from pipeline.hub_load import check_not_script, hub_rows, load_streaming
from pipeline.input_files import Fingerprint, guarded_rows, kind_of
from pipeline.types import CaptionRejection, Dialogue, ImageRef, Turn, stable_hash, stable_int

BENCHMARKS: tuple[str, ...] = ("tallyqa", "ocrvqa", "renderedtext", "docvqa")
INSTRUCTION = "QA"
SUFFIXES = (".parquet", ".jsonl", ".json")
# The schemas a benchmark accepts (any one will do); each is a list of required columns, each column
# given as its alternatives (any one of them will do).
REQUIRED: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "tallyqa": ((("images",), ("texts",)),                       # HuggingFaceM4/the_cauldron tallyqa
                (("image",), ("question",), ("answer",))),      # the original release
    "ocrvqa": ((("image_id",), ("image",), ("questions",), ("answers",)),),
    "renderedtext": ((("png", "image"), ("json", "text")),),
    "docvqa": ((("questionId",), ("question",), ("answers",), ("image",)),),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "tallyqa": ("question_id", "image_id", "image_url", "url"),
    "ocrvqa": ("image_url",),
    "renderedtext": ("__key__",),
    "docvqa": ("docId",),
}
HUB_IDS = {"tallyqa": "HuggingFaceM4/the_cauldron", "ocrvqa": "howard-hou/OCR-VQA",
           "renderedtext": "wendlerc/RenderedText", "docvqa": "HuggingFaceM4/DocumentVQA"}
# Configs of the hub ids that need one (applied when the id is given).
HUB_CONFIGS = {"HuggingFaceM4/the_cauldron": "tallyqa", "lmms-lab/DocVQA": "DocVQA"}
HUB_SPLIT = {"tallyqa": "train", "ocrvqa": "train", "renderedtext": "train", "docvqa": "train"}
RENDERED_TEXT_QUESTIONS: tuple[str, ...] = (
    "What does the text say?",
    "Can you read me what's written here?",
    "What is written in the image?",
    "Could you tell me what this note says?",
    "What does it say on there?",
)
_BATCH_ROWS = 256


class BenchmarkSchemaError(CaptionSchemaError):
    """A benchmark file (or hub dataset) lacks a column its dataset needs."""


def _columns_needed(name: str) -> list[str]:
    cols = [alt for schema in REQUIRED[name] for group in schema for alt in group] + list(OPTIONAL[name])
    return list(dict.fromkeys(cols))


def _fits(schema: tuple[tuple[str, ...], ...], found: list[str]) -> bool:
    return all(any(c in found for c in g) for g in schema)


def _check_columns(where: str, name: str, found: list[str]) -> None:
    if any(_fits(schema, found) for schema in REQUIRED[name]):
        return
    # name the first missing column of the schema that comes closest
    schema = max(REQUIRED[name], key=lambda sc: sum(any(c in found for c in g) for g in sc))
    group = next(g for g in schema if not any(c in found for c in g))
    fits = [b for b in BENCHMARKS if b != name and any(_fits(sc, found) for sc in REQUIRED[b])]
    hint = f" These columns fit benchmark {fits[0]!r}: did you mean that one?" if fits else ""
    need = " or ".join("[" + ", ".join(" or ".join(repr(c) for c in g) for g in sc) + "]"
                       for sc in REQUIRED[name])
    raise BenchmarkSchemaError(
        f"{where}: missing required column {' or '.join(map(repr, group))} for benchmark "
        f"{name!r}. Columns found: {sorted(found)}. Fix: {name} needs columns {need} (see "
        f"docs/sources.md; hub default {HUB_IDS[name]}); rename the column in the file, or pick "
        f"the benchmark the file was made for.{hint}"
    )


def check_file(path: Path, name: str) -> None:
    """Raise BenchmarkSchemaError if the file lacks a required column (reads only its head)."""
    try:
        cols = file_columns(path)
    except CaptionSchemaError as e:  # JSON array instead of JSON lines
        raise BenchmarkSchemaError(str(e)) from e
    if cols is not None:
        _check_columns(str(path), name, cols)


Row = tuple[str, "dict | None", "tuple[str, str] | None"]  # (where, record, (reason, message))


def _iter_local(path: Path, name: str) -> Iterator[Row]:
    """(where, record, error) per row; a file that cannot be read on raises InputFileError naming the row."""
    return guarded_rows(path, _iter_local_rows(path, name))


def _iter_local_rows(path: Path, name: str) -> Iterator[Row]:
    if path.suffix.lower() == ".parquet":
        pf = pq.ParquetFile(path)
        cols = [c for c in _columns_needed(name) if c in pf.schema_arrow.names]
        row = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
            for rec in batch.to_pylist():
                row += 1
                yield f"{path} row {row}", rec, None
    elif _is_json_array(path):  # e.g. TallyQA's train.json: one array, streamed
        for n, rec, err in _json_array_records(path):
            yield f"{path} element {n}", rec, err
    else:
        for lineno, rec, err in _jsonl_records(path):
            yield f"{path} line {lineno}", rec, err


# ---------------------------------------------------------------- field helpers
def _describe(value: Any) -> str:
    return "null (missing)" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


def _count(value: Any) -> str | None:
    """A TallyQA answer as written digits: 3, 3.0, "3" -> "3"; None when not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float):
        if math.isnan(value) or value != int(value):
            return None
        value = int(value)
    return str(value) if isinstance(value, int) and value >= 0 else None


def _image(value: Any, url: Any = None) -> ImageRef | None:
    """ImageRef from a path string or a {bytes, path} struct (sha256 of the bytes, never bytes)."""
    url = _text(url)
    if isinstance(value, str) and value.strip():
        v = value.strip()
        return ImageRef(url=v, path=None) if v.startswith(("http://", "https://")) else ImageRef(url=url, path=v)
    if isinstance(value, dict):
        data, path = value.get("bytes"), _text(value.get("path"))
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) and data else None
        if sha or path:
            return ImageRef(url=url, path=path, sha256=sha)
    if isinstance(value, (bytes, bytearray)) and value:  # webdataset png column, undecoded
        return ImageRef(url=url, sha256=hashlib.sha256(value).hexdigest())
    return ImageRef(url=url) if url else None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _need_text(rec: dict, field: str, what: str = "question") -> str:
    v = rec.get(field)
    t = v.strip() if isinstance(v, str) else None
    if not t:
        raise _Bad("qa:empty", f"field {field!r} is {_describe(v)}; expected a non-empty {what} "
                   "string. Fill it in or drop the row.")
    return t


def _need_image(rec: dict, field: str, url_field: str | None = None) -> ImageRef:
    img = _image(rec.get(field), rec.get(url_field) if url_field else None)
    if img is None:
        raise _Bad("image:missing", f"field {field!r} is {_describe(rec.get(field))}; expected a "
                   "path or {bytes, path}. Every QA row needs its image; fill it in or drop the row.")
    return img


# Each parser returns (key, image, [(question, answer), ...]) or raises _Bad.
Parsed = tuple[str, ImageRef, list[tuple[str, str]]]


def _parse_tallyqa(rec: dict) -> Parsed:
    if "texts" in rec or "images" in rec:
        return _parse_cauldron(rec)
    img = _need_image(rec, "image", "image_url" if rec.get("image_url") else "url")
    q = _need_text(rec, "question")
    a = _count(rec.get("answer"))
    if a is None:
        raise _Bad("qa:empty", f"field 'answer' is {_describe(rec.get('answer'))}; expected a "
                   "non-negative integer count. Fix the answer or drop the row.")
    key = _text(rec.get("question_id")) or stable_hash("tallyqa", img.path or img.url or img.sha256, q)
    return key, img, [(q, a)]


def _parse_cauldron(rec: dict) -> Parsed:
    """A the_cauldron row: `images` (list of Image structs), `texts` (list of {user, assistant, source})."""
    images, texts = rec.get("images"), rec.get("texts")
    if not isinstance(images, list) or not images:
        raise _Bad("image:missing", f"field 'images' is {_describe(images)}; expected a non-empty list of "
                   "images {bytes, path}. Every QA row needs its image; fill it in or drop the row.")
    img = _image(images[0])
    if img is None:
        raise _Bad("image:missing", f"field 'images'[0] is {_describe(images[0])}; expected an image "
                   "{bytes, path}. Fill it in or drop the row.")
    if not isinstance(texts, list) or not texts:
        raise _Bad("qa:empty", f"field 'texts' is {_describe(texts)}; expected a non-empty list of "
                   "{user, assistant} turns. Fill it in or drop the row.")
    pairs = []
    for j, turn in enumerate(texts):
        if not isinstance(turn, dict):
            raise _Bad("qa:empty", f"field 'texts'[{j}] is {_describe(turn)}; expected a {{user, assistant}} "
                       "object. Fix it or drop the row.")
        for role in ("user", "assistant"):
            v = turn.get(role)
            if not (isinstance(v, str) and v.strip()):
                raise _Bad("qa:empty", f"field 'texts'[{j}].{role} is {_describe(v)}; expected a non-empty "
                           "string. Fill it in or drop the row.")
        pairs.append((turn["user"].strip(), turn["assistant"].strip()))
    key = stable_hash("tallyqa", img.sha256 or img.path or img.url, pairs[0][0])
    return key, img, pairs


def _parse_ocrvqa(rec: dict) -> Parsed:
    key = _text(rec.get("image_id"))
    if key is None:
        raise _Bad("row:missing_id", f"field 'image_id' is {_describe(rec.get('image_id'))}; every "
                   "ocrvqa row needs a non-empty 'image_id'. Fill it in or drop the row.")
    img = _need_image(rec, "image", "image_url")
    qs, ans = rec.get("questions"), rec.get("answers")
    if not isinstance(qs, list) or not qs:
        raise _Bad("qa:empty", f"field 'questions' is {_describe(qs)}; expected a non-empty list of "
                   "strings. Fill it in or drop the row.")
    if not isinstance(ans, list) or len(ans) != len(qs):
        raise _Bad("qa:mismatch", f"field 'answers' is {_describe(ans)} but 'questions' has "
                   f"{len(qs)} item(s); expected one answer per question. Fix the lists or drop the row.")
    pairs = []
    for j, (q, a) in enumerate(zip(qs, ans)):
        for field, v in (("questions", q), ("answers", a)):
            if not (isinstance(v, str) and v.strip()):
                raise _Bad("qa:empty", f"field {field!r}[{j}] is {_describe(v)}; expected a non-empty "
                           "string. Fill it in or drop the pair.")
        pairs.append((q.strip(), a.strip()))
    return key, img, pairs


def _parse_renderedtext(rec: dict) -> Parsed:
    field = "png" if "png" in rec else "image"
    img = _need_image(rec, field)
    if "json" in rec:
        text = _rendered_lines(rec.get("json"))
    else:
        text = _need_text(rec, "text", "rendered text")
    key = _text(rec.get("__key__")) or stable_hash("renderedtext", img.sha256 or img.path, text)
    question = RENDERED_TEXT_QUESTIONS[stable_int("renderedtext", key) % len(RENDERED_TEXT_QUESTIONS)]
    return key, img, [(question, text)]


def _rendered_lines(side: Any) -> str:
    """The text of a RenderedText sidecar: `ocr_annotation.text`, a list of lines, joined with spaces."""
    if isinstance(side, (str, bytes)):  # the sidecar as raw JSON text (a webdataset .json member)
        try:
            side = json.loads(side)
        except ValueError as e:
            raise _Bad("qa:empty", f"field 'json' is not valid JSON ({e}); expected the webdataset sidecar "
                       "{ocr_annotation: {text: [lines]}}. Fix it or drop the row.") from None
    ann = side.get("ocr_annotation") if isinstance(side, dict) else None
    lines = ann.get("text") if isinstance(ann, dict) else None
    if isinstance(lines, str):
        lines = [lines]
    if not isinstance(lines, list):
        where = "field 'json'" if not isinstance(side, dict) else \
            "field 'json'.ocr_annotation" if not isinstance(ann, dict) else "field 'json'.ocr_annotation.text"
        value = side if not isinstance(side, dict) else ann if not isinstance(ann, dict) else lines
        raise _Bad("qa:empty", f"{where} is {_describe(value)}; expected the webdataset sidecar "
                   "{ocr_annotation: {text: [lines]}}. Fill it in or drop the row.")
    text = " ".join(" ".join(x.split()) for x in lines if isinstance(x, str) and x.strip())
    if not text:
        raise _Bad("qa:empty", f"field 'json'.ocr_annotation.text is {_describe(lines)}; expected at least "
                   "one non-empty line of rendered text. Fill it in or drop the row.")
    return text


def _parse_docvqa(rec: dict) -> Parsed:
    key = _text(rec.get("questionId"))
    if key is None:
        raise _Bad("row:missing_id", f"field 'questionId' is {_describe(rec.get('questionId'))}; "
                   "every docvqa row needs a 'questionId'. Fill it in or drop the row.")
    img = _need_image(rec, "image")
    q = _need_text(rec, "question")
    ans = rec.get("answers")
    first = ans[0] if isinstance(ans, list) and ans else None
    if not (isinstance(first, str) and first.strip()):
        raise _Bad("qa:empty", f"field 'answers' is {_describe(ans)}; expected a list whose first "
                   "item is a non-empty string (test splits have no answers: use train).")
    return key, img, [(q, first.strip())]


PARSERS: dict[str, Callable[[dict], Parsed]] = {
    "tallyqa": _parse_tallyqa, "ocrvqa": _parse_ocrvqa,
    "renderedtext": _parse_renderedtext, "docvqa": _parse_docvqa,
}


# ---------------------------------------------------------------- source
class BenchmarkSource:
    """The shards of one benchmark; `iter_shard` streams one shard's rows in order."""

    def __init__(self, name: str, input: str, kind: str, shards: list[InputShard],
                 files: list[Path] | None = None, dataset: Any = None):
        self.name, self.input, self.kind, self.shards = name, input, kind, shards
        self._files, self._dataset = files, dataset
        # each local file as it was when opened: a file that changes while it is read stops its shard
        self._prints = [Fingerprint.of(f) for f in files] if files is not None else None

    def describe(self) -> dict:
        return {"benchmark": self.name, "input": self.input, "kind": self.kind,
                "instruction": INSTRUCTION, "shards": [s.name for s in self.shards]}

    def iter_shard(self, index: int) -> Iterator[Dialogue | CaptionRejection]:
        if not 0 <= index < len(self.shards):
            raise IndexError(f"{self.input}: shard {index} out of range (0..{len(self.shards) - 1})")
        if self._files is not None:
            check_file(self._files[index], self.name)  # raise now, not at the first next()
            rows = _iter_local(self._files[index], self.name)
        else:
            rows = self._iter_hub(index)
        base = re.split(r"[\\/]", self.shards[index].name)[-1]
        return self._rows(index, base, rows)

    def _rows(self, index: int, base: str, rows: Iterator[Row]) -> Iterator[Dialogue | CaptionRejection]:
        row = -1
        for row, (where, rec, err) in enumerate(rows):
            yield self._convert(index, base, row, where, rec, err)
        if self._prints is not None:
            self._prints[index].check(self._files[index], row + 1)

    def raw_records(self, index: int) -> Iterator[dict]:
        """Shard `index`'s records as read (unparsed; unreadable rows left out): the images stage takes the
        embedded image bytes from them (pipeline/images/embedded.py)."""
        rows = _iter_local(self._files[index], self.name) if self._files is not None else self._iter_hub(index)
        for _, rec, _ in rows:
            if isinstance(rec, dict):
                yield rec

    def _iter_hub(self, index: int) -> Iterator[Row]:
        ds = self._dataset.shard(num_shards=len(self.shards), index=index)
        return hub_rows(ds, self.shards[index].name)

    def _convert(self, shard: int, base: str, row: int, where: str, rec: dict | None,
                 err: tuple[str, str] | None) -> Dialogue | CaptionRejection:
        name = self.name

        def reject(reason: str, detail: str) -> CaptionRejection:
            return CaptionRejection(stable_hash(name, base, row), name, row, reason, f"{where}: {detail}")

        if rec is None:
            reason, message = err or ("row:malformed", "unreadable")
            rest = ("the rest of the file is read" if "cannot be read" not in message
                    else "the elements after it were not read" if "element" in where
                    else "the rows after it were not read")
            return reject(reason, f"row is {message}. Fix or delete it; {rest}.")
        try:
            key, image, pairs = PARSERS[name](rec)
        except _Bad as bad:
            return reject(bad.reason, bad.detail)
        turns: list[Turn] = []
        for q, a in pairs:
            turns += [Turn("user", q, INSTRUCTION), Turn("assistant", a, INSTRUCTION)]
        return Dialogue(id=stable_hash("benchmark", name, key), caption_id=key, source=name,
                        instruction=INSTRUCTION, seed=0, turns=turns, status="ok", image=image,
                        input_shard=shard, input_row=row)


# ---------------------------------------------------------------- open
def _open_hub(name: str, input: str, hub_id: str) -> BenchmarkSource:
    import datasets

    hub_id, _, split = hub_id.partition("@")
    split = split or HUB_SPLIT[name]
    hint = (f"{input!r} is not an existing local path, so it was loaded with `datasets` as a hub "
            f"dataset id (e.g. {HUB_IDS[name]}; needs the network or the HF cache).")
    ds = load_streaming(hub_id, HUB_CONFIGS.get(hub_id), hint=hint)
    if isinstance(ds, dict) or hasattr(ds, "keys"):
        if split not in ds:
            raise ValueError(f"hub dataset {hub_id!r} has no split {split!r}; splits: {sorted(ds)}. "
                             f"Fix: pass {hub_id}@SPLIT.")
        ds = ds[split]
    cols = ds.column_names
    if cols is None:
        cols = list(next(iter(ds.take(1)), {}).keys())
    where = f"hub dataset {hub_id!r} split {split!r}"
    _check_columns(where, name, list(cols))
    ds = ds.select_columns([c for c in _columns_needed(name) if c in cols])
    feats = ds.features or {}
    if any(isinstance(feats.get(c), datasets.Image) for c in ("image", "png")) or "images" in feats:
        ds = ds.decode(False)  # {bytes, path}: never decode pixels
    shards = [InputShard(i, f"{hub_id}@{split}#shard{i}") for i in range(ds.num_shards)]
    return BenchmarkSource(name, input, "hub", shards, dataset=ds)


def open_benchmark(name: str, input: str) -> BenchmarkSource:
    """Resolve `input` (local file or directory, hub id[@split], `hf://datasets/ID`, `hub:ID`)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARKS)}")
    check_not_script(input)
    if input.startswith("hub:"):
        return _open_hub(name, input, input[4:])
    if input.startswith("hf://"):
        return _open_hub(name, input, input[5:].removeprefix("datasets/").strip("/"))
    p = Path(input).expanduser()
    kind = kind_of(p)  # a broken link, a link loop, a folder not allowed in: say so, not "no such file"
    if kind == "file":
        if p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{input}: unsupported benchmark file type {p.suffix!r}; "
                             f"use one of {', '.join(SUFFIXES)}")
        files = [p]
    elif kind == "dir":
        files = _scan(p, SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{input}: directory has no benchmark files "
                                    f"({', '.join('*' + s for s in SUFFIXES)}, searched recursively)")
    elif _looks_like_path(input.partition("@")[0]):
        raise FileNotFoundError(
            f"{input}: no such file or directory. Give an existing Parquet/JSONL file or directory, "
            f"or a hub dataset id such as {HUB_IDS[name]} (prefix hub: to force the hub loader)."
        )
    else:
        return _open_hub(name, input, input)
    for f in files:
        check_file(f, name)
    return BenchmarkSource(name, input, "local", [InputShard(i, str(f)) for i, f in enumerate(files)],
                           files=files)
