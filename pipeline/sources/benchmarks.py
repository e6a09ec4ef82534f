"""Public benchmark splits of the paper's Table 7 as speechless QA dialogues.

TallyQA, OCR-VQA, RenderedText and DocVQA are used "in their original text form": each
question/answer becomes a user/assistant exchange (the user asks, the assistant answers), as
Appendix B does for COCO. A row with several QA pairs (OCR-VQA) gives one dialogue with all pairs
in order. Dialogues have status "ok", instruction "QA", seed 0, `caption_id` = the row key and a
deterministic id `stable_hash("benchmark", name, key)`; image bytes are never stored, only their
sha256 (plus the path / url the row gives).

`open_benchmark(name, input)` mirrors `pipeline.sources.captions.open_source`: `input` is a local
Parquet / JSON-lines file or a folder of them (searched recursively, sorted; one shard per file),
or a hub id loaded with `datasets.load_dataset(id, streaming=True)` (`hub:ID` forces the hub,
`hf://datasets/ID` works too; `ID@split` picks a split, default below; one shard per dataset
shard). A bad row becomes a `CaptionRejection` (reason e.g. `qa:empty`, detail naming file, row
and field); a missing required column raises `BenchmarkSchemaError` (a `CaptionSchemaError`).

Column schemas (the real releases, checked against their cards and loaders: docs/sources.md, whose
tables `pipeline/sources/source_schemas.py` mirrors; "a|b" = either column):

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
  and text). There is no question: the user question is picked from `RENDERED_TEXT_QUESTIONS`
  (pipeline/sources/benchmark_rows.py, with the row parsers) by a seeded choice from the key.
- docvqa (`HuggingFaceM4/DocumentVQA` split train, the benchmark's training questions; also
  `lmms-lab/DocVQA` config "DocVQA", which has only validation/test): `questionId` (row key),
  `question` (str), `answers` (list[str]; the first is used; None on test splits, then rejected),
  `image` (Image {bytes, path}), optional `docId`, ...
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pipeline.sources.benchmark_rows import PARSERS, BadRow
from pipeline.sources.captions import CaptionSchemaError
from pipeline.sources.hub_load import load_streaming
from pipeline.sources.record_files import Row, file_columns
from pipeline.core.row_fields import unreadable_row
from pipeline.sources.sharded import ShardedSource, base_name, resolve_input
from pipeline.core.types import CaptionRejection, Dialogue, InputShard, Turn, stable_hash

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
    cols = file_columns(path)
    if cols is not None:
        _check_columns(str(path), name, cols)


class BenchmarkSource(ShardedSource):
    """The shards of one benchmark; `iter_shard` streams one shard's rows in order."""

    def __init__(self, name: str, input: str, kind: str, shards: list[InputShard],
                 files: list[Path] | None = None, dataset: Any = None):
        super().__init__(input, kind, shards, files, dataset)
        self.name = name
        self.columns = tuple(_columns_needed(name))

    def check_file(self, path: Path) -> None:
        check_file(path, self.name)

    def describe(self) -> dict:
        return {"benchmark": self.name, "input": self.input, "kind": self.kind,
                "instruction": INSTRUCTION, "shards": [s.name for s in self.shards]}

    def iter_shard(self, index: int) -> Iterator[Dialogue | CaptionRejection]:
        rows = self._shard_rows(index)
        return self._rows(index, base_name(self.shards[index].name), rows)

    def _rows(self, index: int, base: str, rows: Iterator[Row]) -> Iterator[Dialogue | CaptionRejection]:
        row = -1
        for row, (where, rec, err) in enumerate(rows):
            yield self._convert(index, base, row, where, rec, err)
        self._check_unchanged(index, row + 1)

    def raw_records(self, index: int) -> Iterator[dict]:
        """Shard `index`'s records as read (unparsed; unreadable rows left out): the images stage takes the
        embedded image bytes from them (pipeline/images/embedded.py)."""
        for _, rec, _ in self._raw_rows(index):
            if isinstance(rec, dict):
                yield rec

    def _convert(self, shard: int, base: str, row: int, where: str, rec: dict | None,
                 err: tuple[str, str] | None) -> Dialogue | CaptionRejection:
        name = self.name

        def reject(reason: str, detail: str) -> CaptionRejection:
            return CaptionRejection(stable_hash(name, base, row), name, row, reason, f"{where}: {detail}")

        if rec is None:
            return reject(*unreadable_row(where, err))
        try:
            key, image, pairs = PARSERS[name](rec)
        except BadRow as bad:
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
    hub_id, files = resolve_input(input, SUFFIXES, "benchmark", "Parquet/JSONL file or directory", HUB_IDS[name])
    if hub_id is not None:
        return _open_hub(name, input, hub_id)
    for f in files:
        check_file(f, name)
    return BenchmarkSource(name, input, "local", [InputShard(i, str(f)) for i, f in enumerate(files)],
                           files=files)
