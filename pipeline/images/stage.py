"""The `images` stage: dialogue shard i -> image shard i, each image of the split stored once.

Entries: the ok dialogue rows of each input shard, in order; each image reference becomes an item
the first time its image id is seen (later rows count as `refs_repeated`); rows with no image
reference are counted (`no_image_reference`). An image already stored (ok) by another split of
the same corpus (`reuse`: their image directories) is copied from there instead of fetched again.
The runner makes it resumable: killed at any point, a rerun skips every image whose row was saved.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq

from pipeline.images.schema import IMAGES_SCHEMA, ImageOptions, ref_id
from pipeline.images.worker import ImageItem, ImageWorker
from pipeline.core.stage_input import StageInput, open_stage_input

log = logging.getLogger("ssvd")


@dataclass
class ImageStage:
    input: StageInput
    opts: ImageOptions
    limit: int | None = None
    reuse: tuple[Path, ...] = ()
    embedded: Any = None  # a benchmark source (pipeline.sources.benchmarks.BenchmarkSource): its embedded image bytes
    name: str = "images"
    schema: Any = IMAGES_SCHEMA
    row_group_rows: int = 64  # rows hold a 448 px JPEG each: small row groups for the trainer's lookups
    input_stats: Counter = field(default_factory=Counter)

    def config(self) -> dict:
        return {"stage": self.name, "input": self.input.describe(), "limit": self.limit,
                "options": self.opts.content(),
                **({"embedded": self.embedded.describe()} if self.embedded is not None else {})}

    def total_hint(self) -> int | None:
        return None

    def unchanged_since(self, rec: dict) -> bool:
        return self.input.unchanged_since(rec)

    def _reusable(self) -> dict[str, tuple[Path, int, int]]:
        """id -> (shard, row group, row) of the ok images stored by the other splits."""
        out: dict[str, tuple[Path, int, int]] = {}
        for d in self.reuse:
            for f in sorted(Path(d).glob("images-*.parquet")):
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    t = pf.read_row_group(g, columns=["id", "status"])
                    for i, (iid, st) in enumerate(zip(t.column("id").to_pylist(), t.column("status").to_pylist())):
                        if st == "ok":
                            out.setdefault(iid, (f, g, i))
        return out

    def entries(self) -> Iterator[tuple[int, ImageItem | dict | None]]:
        seen: set[str] = set()
        reuse = self._reusable() if self.reuse else {}
        paths = dict(self.input.shards)
        blobs: dict[str, bytes] = {}
        for index, item in self.input.ok_items(self.limit, self.input_stats, shard_markers=True):
            if item is None:
                if self.embedded is not None:  # this shard's embedded images, read from its source shard
                    from pipeline.images.embedded import shard_images

                    want = {(r.get("image") or {}).get("sha256") for r in
                            pq.read_table(paths[index], columns=["image", "status"]).to_pylist() if r["status"] == "ok"}
                    blobs = shard_images(self.embedded, index, {w for w in want if w})
                yield index, None
                continue
            img = item.row.get("image") or {}
            iid = ref_id(img)
            if iid is None:
                self.input_stats["no_image_reference"] += 1
                continue
            if iid in seen:
                self.input_stats["refs_repeated"] += 1
                continue
            seen.add(iid)
            it = ImageItem(iid, index, item.input_row, img.get("url"), img.get("path"), img.get("sha256"),
                           blobs.get(img.get("sha256") or ""))
            if iid in reuse:
                f, g, i = reuse[iid]
                row = pq.ParquetFile(f).read_row_group(g).slice(i, 1).to_pylist()[0]
                row.update(input_shard=index, input_row=item.input_row)
                self.input_stats["reused_from_other_splits"] += 1
                yield index, row
                continue
            yield index, it


def _pool(opts: ImageOptions, workers: int, ray_address: str | None, verbose: bool):
    from pipeline.core.ray_pool import LocalPool, RayPool, init_ray

    if workers == 0:
        return LocalPool(ImageWorker(opts))
    init_ray(ray_address, verbose=verbose)
    # I/O-bound: each actor runs img2dataset's thread pool; Ray spreads the actors over the nodes
    return RayPool(opts, workers, 0.0, max_concurrency=1, worker_cls=ImageWorker, cpus_per_worker=1.0)


def run_options(opts: ImageOptions, **kw):
    """The runner's options for the images stage: a chunk is twice as many images as a worker has download threads.

    In-process (LocalPool) one chunk runs at a time, and a Ray actor runs its chunks one after the other, so
    a chunk smaller than `threads` leaves threads idle, and each chunk is one img2dataset `Downloader` call
    (a thread pool, a Parquet round trip): measured with bench/images_throughput.py, chunks of 16 with 32
    threads fetched 400 images in 10.8-12.6 s, chunks of 64 in 6.8 s (docs/images.md). A kill refetches at
    most one chunk per worker."""
    from pipeline.core.runner import RunOptions

    return RunOptions(max_inflight=4, chunk_size=2 * opts.threads, flush_rows=2 * opts.threads, **kw)


def images(input_dir: Path, out: Path, opts: ImageOptions, *, workers: int = 1, ray_address: str | None = None,
           verbose: bool = False, run_opts=None, limit: int | None = None, reuse: tuple[Path, ...] = (),
           kept=None, embedded=None):
    """`ssvd images` and the `images` step of `ssvd run`: returns the runner's Summary."""
    from pipeline.core.runner import RunOptions, run_stage
    from pipeline.core.runstate import RunState, write_json_atomic

    errs = opts.errors()
    if errs:
        raise ValueError("invalid image options: " + "; ".join(errs))
    inp = open_stage_input(input_dir, ("dialogues",))
    stage = ImageStage(inp, opts, limit, tuple(Path(r) for r in reuse if Path(r).resolve() != Path(out).resolve()),
                       embedded)
    run_opts = run_opts or run_options(opts)
    pool_box: list = []

    def factory():
        if kept is not None:
            p = kept.get(("images", opts, opts.allow, opts.mirrors, workers, ray_address), lambda: _pool(opts, workers, ray_address, verbose))
        else:
            p = _pool(opts, workers, ray_address, verbose)
        pool_box.append(p)
        return p

    try:
        summary = run_stage(stage, Path(out), factory, run_opts)
    finally:
        if kept is None:
            for p in pool_box:
                p.shutdown()
    if inp.unfinished:
        log.warning("input shards still in progress upstream were left for a later run: %s", inp.unfinished)
    if summary.noop:  # finished before: nothing was read, the recorded input stats and counts stand
        return summary
    state = RunState(Path(out), "images")
    rec = state.load() or {}
    rec["input"] = {"not_ok_rows": int(stage.input_stats.get("input_not_ok", 0)),
                    "no_image_reference": int(stage.input_stats.get("no_image_reference", 0)),
                    "refs_repeated": int(stage.input_stats.get("refs_repeated", 0)),
                    "reused_from_other_splits": int(stage.input_stats.get("reused_from_other_splits", 0)),
                    "unfinished_input_shards": inp.unfinished, "input_shards": [i for i, _ in inp.shards]}
    rec["images"] = reason_counts(Path(out))
    from pipeline.images.worker import versions

    rec["software"] = versions()
    write_json_atomic(state.path, rec)
    return summary


def reason_counts(d: Path) -> dict[str, Any]:
    """Images of a stage directory by status and by reason (finished shards and parts in progress)."""
    status: Counter = Counter()
    reasons: Counter = Counter()
    files = sorted(Path(d).glob("images-*.parquet"))
    done = {f.stem for f in files}
    parts = [p for pd in sorted((Path(d) / ".parts").glob("images-*")) if pd.name not in done
             for p in sorted(pd.glob("part-*.parquet"))] if (Path(d) / ".parts").is_dir() else []
    for f in files + parts:
        t = pq.read_table(f, columns=["status", "reason"])
        for st, r in zip(t.column("status").to_pylist(), t.column("reason").to_pylist()):
            status[st] += 1
            if st != "ok":
                reasons[r] += 1
    return {"total": sum(status.values()), "status": dict(status), "by_reason": dict(sorted(reasons.items()))}
