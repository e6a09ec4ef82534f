"""Caption sources (PixMo-Cap, DOCCI, PixelProse) from the Hugging Face hub or local files.

`open_source(source, input)` resolves `input` to shards: one per local file (*.parquet,
*.jsonl / *.jsonlines, *.json as JSON lines or one JSON array read as a stream, *.csv; a
directory is searched recursively, sorted by path), or one per shard of a streaming `datasets`
dataset (a hub id[@split], `hf://datasets/ID`, or `hub:PATH_OR_ID` to force `datasets` even for
a local repo directory; a loading-script repository such as `google/docci` is refused before any
work, see `pipeline.sources.hub_load`). `iter_shard(i)` streams the rows of one shard in order as
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

Where the parts are: one row's checks in `pipeline/sources/caption_rows.py`; reading local files in
`pipeline/sources/record_files.py`; resolving the input and the shards' rows (shared with the benchmarks) in
`pipeline/sources/sharded.py`.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources.caption_rows import ID_FIELD, TEXT_FIELD, TOXICITY_COLUMNS, CaptionOptions, caption_of
from pipeline.sources.hub_load import load_streaming
from pipeline.sources.record_files import Row, file_columns
from pipeline.sources.sharded import ShardedSource, base_name, resolve_input
from pipeline.core.types import SOURCES, Caption, CaptionRejection, InputShard

log = logging.getLogger("ssvd")
SUFFIXES = (".parquet", ".jsonl", ".jsonlines", ".json", ".csv")
REQUIRED = {
    "pixmo": ("image_url", "caption"),
    "docci": ("example_id", "description"),
    "pixelprose": ("uid", "url", "vlm_caption", "status"),
}
# At least one of these columns holds the image (DOCCI: the release's image_file, or the mirror's image).
IMAGE_ANY = {"pixmo": ("image_url",), "docci": ("image_file", "image"), "pixelprose": ("url",)}
OPTIONAL = {"pixmo": (), "docci": ("split", "image_file", "image"),
            "pixelprose": ("sha256", "watermark_class_id", "error_message") + TOXICITY_COLUMNS}


class CaptionSchemaError(ValueError):
    """A caption file (or hub dataset) lacks a column its source needs."""


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


class CaptionSource(ShardedSource):
    """The shards of one caption source; `iter_shard` streams one shard's rows in order.

    `skipped[i]`: rows of shard i left out because they belong to another split (DOCCI release
    file), counted as they are read."""

    def __init__(self, source: str, input: str, kind: str, shards: list[InputShard],
                 options: CaptionOptions, files: list[Path] | None = None, dataset: Any = None,
                 image_roots: list[Path | None] | None = None):
        super().__init__(input, kind, shards, files, dataset)
        self.source, self.options = source, options
        self.columns = REQUIRED[source] + OPTIONAL[source]
        self._roots = image_roots or [None] * len(shards)
        self.skipped = [0] * len(shards)

    def check_file(self, path: Path) -> None:
        check_file(path, self.source)

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
        rows = self._shard_rows(index)
        self.skipped[index] = 0
        return self._rows(index, base_name(self.shards[index].name), rows)

    def _rows(self, index: int, base: str, rows: Iterator[Row]) -> Iterator[Caption | CaptionRejection]:
        want = self.options.split
        row = -1
        for row, (where, rec, err) in enumerate(rows):
            if self.source == "docci" and rec is not None and isinstance(rec.get("split"), str) \
                    and rec["split"].strip() != want:
                self.skipped[index] += 1  # another split of the release file: not this input
                continue
            yield caption_of(self.source, self.options, self._roots[index], base, row, where, rec, err)
        self._check_unchanged(index, row + 1)
        if self.skipped[index]:
            log.info("%s: %d row(s) of other splits than %r skipped (DOCCI release file)",
                     self.shards[index].name, self.skipped[index], want)


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
    hub_id, files = resolve_input(input, SUFFIXES, "caption", "caption file or directory", "allenai/pixmo-cap")
    if hub_id is not None:
        return _open_hub(source, input, hub_id, options)
    for f in files:  # cheap up-front check: footers, headers, first JSON lines
        check_file(f, source)
    roots = _image_roots(source, files, options)
    shards = [InputShard(i, str(f)) for i, f in enumerate(files)]
    return CaptionSource(source, input, "local", shards, options, files=files, image_roots=roots)
