"""The stage runner: input shard i -> output shard i, streamed through a worker pool, resumable.

A stage yields, per input shard, either work items (sent to the pool) or ready rows (e.g. a
counted rejection of a bad caption). Results are appended to the shard's part files as they
come in; a shard whose items are all done is finalised atomically. Killed at any moment, a
rerun skips completed shards and the completed records of partial ones: no duplicate, no loss.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.progress import Meter
from pipeline.core.shards import ShardStore
from pipeline.core.runstate import RunState


class Stage(Protocol):
    name: str
    schema: pa.Schema

    def entries(self) -> Iterator[tuple[int, Any]]:
        """(shard index, WorkItem | ready row dict | None), shard by shard in order, the limit applied.

        (index, None) only says that shard `index` exists: a shard named this way but given no row is
        written empty, so shard i in -> shard i out holds even when every input row was rejected."""

    def total_hint(self) -> int | None: ...

    def config(self) -> dict: ...

    # Optional: `done_shard`, set by the runner before `total_hint` and `entries`. done_shard(i) is the
    # completed output shard of input shard i when the runner will skip it (else None): a stage that has
    # the attribute yields (i, None) for such a shard without opening it (resume in O(shards)).


class Pool(Protocol):
    size: int

    def submit(self, items: list) -> Any: ...

    def wait(self, timeout_s: float) -> list[tuple[Any, list[dict]]]:
        """Finished submissions: (handle, rows)."""

    def inflight(self) -> int: ...


@dataclass
class RunOptions:
    overwrite: bool = False
    retry_failed: bool = False
    max_inflight: int = 256  # items in flight per worker
    chunk_size: int = 8  # items per pool call
    flush_rows: int = 64
    flush_interval_s: float = 15.0
    progress: bool = True


@dataclass
class Summary:
    stage: str
    out_dir: str
    shards_written: int = 0
    shards_skipped: int = 0
    items_run: int = 0
    items_skipped: int = 0
    status: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    completion_tokens: int = 0  # of the stored turns, whatever the row's status
    prompt_tokens: int = 0
    # Token accounting of the work: all completion tokens generated, those in accepted dialogues'
    # stored turns, and the rest (rejected messages, redraws, rejected or failed dialogues).
    generated_tokens: int = 0
    kept_tokens: int = 0
    wasted_tokens: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    run: dict = field(default_factory=dict)  # this run's own measures (pipeline/core/progress.py)
    noop: bool = False  # a rerun of a finished stage: nothing was read but the run record (not in to_dict)

    def add(self, row: dict) -> None:
        status = row.get("status", "ok")
        self.status[status] += 1
        if status == "rejected":
            self.reasons[row.get("reason", "")] += 1
        completion = int(row.get("completion_tokens") or 0)
        self.completion_tokens += completion
        self.prompt_tokens += int(row.get("prompt_tokens") or 0)
        gen = row.get("generated_tokens")  # absent in rows written before it was recorded
        gen = completion if gen is None else int(gen)
        kept = completion if status == "ok" else 0
        self.generated_tokens += gen
        self.kept_tokens += kept
        self.wasted_tokens += max(gen - kept, 0)
        self.audio_s += float(row.get("duration_s") or 0.0)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "out_dir": self.out_dir,
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "items_run": self.items_run,
            "items_skipped": self.items_skipped,
            "status": dict(self.status),
            "rejected_by_reason": dict(self.reasons),
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "kept_tokens": self.kept_tokens,
            "wasted_tokens": self.wasted_tokens,
            "audio_s": round(self.audio_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "run": self.run,
        }


def _progress(total: int | None, enabled: bool, desc: str):
    from tqdm import tqdm

    # tqdm's own rate and ETA would count rows skipped on resume: ours (Meter) count this run's work
    fmt = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]" if total else \
        "{desc}: {n_fmt} rows [{elapsed}{postfix}]"
    return tqdm(total=total, disable=not enabled, desc=desc, unit="row", dynamic_ncols=True, bar_format=fmt)


def run_stage(stage: Stage, out_dir: Path, pool_factory, opts: RunOptions, startup_s: float = 0.0) -> Summary:
    """Run `stage` into `out_dir`. `pool_factory()` is called only if there is work to do. `startup_s`: seconds
    already spent starting workers before this call (a pool started up front), counted as startup and elapsed."""
    out_dir = Path(out_dir)
    t0 = time.monotonic() - startup_s
    store = ShardStore(out_dir, stage.name, stage.schema, getattr(stage, "row_group_rows", 256))
    state = RunState(out_dir, stage.name)
    if opts.overwrite:
        store.remove_all()
        state.clear()
    before = state.load()
    state.begin(stage.config())  # refuses a different config in the same directory
    store.clean_tmp()
    summary = Summary(stage.name, str(out_dir))
    noop = _noop(stage, store, before, opts)
    if noop is not None:  # finished before: no input row read, no worker started
        noop.elapsed_s = time.monotonic() - t0
        state.finish(noop.to_dict(), output_shards=before["output_shards"])
        return noop

    done_ids: dict[int, set[str]] = {}
    open_items: Counter = Counter()
    buffers: dict[int, list[dict]] = defaultdict(list)
    exhausted: set[int] = set()
    finished: set[int] = set()
    last_flush = time.monotonic()
    pool = None

    def advance(n: int) -> None:
        bar.update(n)
        meter.done += n

    def start_pool():
        nonlocal pool
        if pool is None:
            bar.set_postfix_str("starting workers", refresh=True)
            t = time.monotonic()
            pool = pool_factory()
            meter.startup_s += time.monotonic() - t
            meter.workers = getattr(pool, "size", 0)
        return pool

    def shard_state(i: int) -> set[str] | None:
        """None if the shard is complete (skip), else the ids already done."""
        if i not in done_ids:
            if store.is_complete(i) and opts.retry_failed and _has_failed(store.final_path(i)):
                store.reopen(i)
            if store.is_complete(i):
                store.drop_parts(i)  # left over if a run died between finalising and cleaning up
                done_ids[i] = None  # type: ignore[assignment]
                summary.shards_skipped += 1
                _count_existing(store.final_path(i), summary)
            else:
                done_ids[i] = store.done_ids(i, redo_failed=opts.retry_failed)
                for p in store.part_paths(i):
                    _count_existing(p, summary)
        return done_ids[i]

    if hasattr(stage, "done_shard"):  # the stage skips complete input shards without opening them
        stage.done_shard = lambda i: store.final_path(i) if shard_state(i) is None else None
    total = stage.total_hint()
    meter = Meter(stage.name, total=total, t0=t0, startup_s=startup_s)
    bar = _progress(total, opts.progress, stage.name)

    def flush(force_shard: int | None = None) -> None:
        nonlocal last_flush
        for i, rows in list(buffers.items()):
            if rows and (force_shard is None or force_shard == i):
                store.write_part(i, rows)
                buffers[i] = []
        last_flush = time.monotonic()
        state.progress(meter.snapshot())

    def maybe_finalize(i: int) -> None:
        if i in exhausted and open_items[i] == 0 and i not in finished and done_ids.get(i) is not None:
            flush(i)
            store.finalize(i)
            finished.add(i)
            summary.shards_written += 1

    def collect(timeout_s: float) -> None:
        for _, rows in pool.wait(timeout_s):
            for r in rows:
                i = r["input_shard"]
                buffers[i].append(r)
                open_items[i] -= 1
                summary.add(r)
                meter.add(r)
            advance(len(rows))
            bar.set_postfix_str(f"ok={summary.status['ok']} rej={summary.status['rejected']} "
                                f"fail={summary.status['failed']}, {meter.postfix()}", refresh=False)
        if sum(len(b) for b in buffers.values()) >= opts.flush_rows or time.monotonic() - last_flush > opts.flush_interval_s:
            flush()
        for i in list(open_items):
            maybe_finalize(i)

    chunk: list = []
    current = -1
    try:
        for i, entry in stage.entries():
            if i != current:
                if current >= 0:
                    exhausted.add(current)
                    maybe_finalize(current)
                current = i
            done = shard_state(i)
            if done is None or entry is None:
                continue
            if isinstance(entry, dict):  # a ready row (counted rejection)
                if entry["id"] in done:
                    continue
                buffers[i].append(entry)
                summary.add(entry)
                meter.add(entry)  # written by this run too (no worker: a benchmark row, a counted rejection)
                advance(1)
                continue
            if entry.id in done:
                summary.items_skipped += 1
                advance(1)
                continue
            chunk.append(entry)
            open_items[i] += 1
            summary.items_run += 1
            if len(chunk) >= opts.chunk_size:
                start_pool()
                while pool.inflight() >= pool.size * opts.max_inflight:
                    collect(0.5)
                pool.submit(chunk)
                chunk = []
                collect(0)  # take in what has finished meanwhile, so it is saved early
        if current >= 0:
            exhausted.add(current)
        if chunk:
            start_pool()
            pool.submit(chunk)
            chunk = []
        while pool is not None and pool.inflight():
            collect(1.0)
        for i in sorted(done_ids):
            exhausted.add(i)
            maybe_finalize(i)
    finally:
        flush()  # keep everything finished so far, whatever happens
        bar.close()
        if hasattr(stage, "done_shard"):
            stage.done_shard = None
    summary.elapsed_s = time.monotonic() - t0
    summary.run = meter.snapshot()
    # The outcome is counted from the files themselves, so it is exact across resumes.
    summary.status, summary.reasons = Counter(), Counter()
    summary.completion_tokens = summary.prompt_tokens = 0
    summary.generated_tokens = summary.kept_tokens = summary.wasted_tokens = 0
    summary.audio_s = 0.0
    for i in sorted(done_ids):
        for p in [store.final_path(i)] if store.is_complete(i) else store.part_paths(i):
            _count_existing(p, summary)
    state.finish(summary.to_dict(), output_shards=sorted(done_ids))
    return summary


def _noop(stage: Any, store: ShardStore, rec: dict | None, opts: RunOptions) -> Summary | None:
    """The summary of a rerun that would only skip, or None. A rerun only skips when the last run into this
    directory completed with this config (RunState.begin refused any other), every output shard it recorded is
    still there and complete, no shard is in progress, and the stage says its input is what it read then
    (`stage.unchanged_since(rec)`; a stage without that method is never a no-op). Reads the run record and
    lists the directory only: no input row, no output row, whatever the size of the split."""
    if opts.overwrite or opts.retry_failed or not rec or rec.get("state") != "complete":
        return None
    shards = rec.get("output_shards")  # recorded since the no-op rerun was made O(shards)
    if shards is None or not all(store.is_complete(i) for i in shards) or store.has_parts():
        return None
    unchanged = getattr(stage, "unchanged_since", None)  # a stage without it is always run through
    if unchanged is None or not unchanged(rec):
        return None
    old = rec.get("summary") or {}
    s = Summary(stage.name, str(store.dir), shards_skipped=len(shards), noop=True)
    s.status, s.reasons = Counter(old.get("status") or {}), Counter(old.get("rejected_by_reason") or {})
    for k in ("completion_tokens", "prompt_tokens", "generated_tokens", "kept_tokens", "wasted_tokens"):
        setattr(s, k, int(old.get(k) or 0))
    s.audio_s = float(old.get("audio_s") or 0.0)
    s.run = Meter(stage.name, total=0).snapshot()
    return s


def finished_before(stage: Any, out_dir: Path, opts: RunOptions, rec: dict | None) -> bool:
    """True when running `stage` (over an earlier stage's rows) into `out_dir` would only skip: its last
    run there (`rec`, its run record) completed with the same config over the same, finished input
    shards, and neither --overwrite nor --retry-failed is asked. No worker is needed to know."""
    from pipeline.core.runstate import config_hash, portable

    if opts.overwrite or opts.retry_failed:
        return False
    if not rec or rec.get("state") != "complete":
        return False
    if rec.get("config_hash") != config_hash(portable(stage.config(), out_dir)):
        return False
    return stage.input.unchanged_since(rec)


def _has_failed(path: Path) -> bool:
    return "failed" in pq.read_table(path, columns=["status"]).column("status").to_pylist()


def _count_existing(path: Path, summary: Summary) -> None:
    cols = ["status", "reason", "completion_tokens", "prompt_tokens", "generated_tokens", "duration_s"]
    names = set(pq.read_schema(path).names)
    for r in pq.read_table(path, columns=[c for c in cols if c in names]).to_pylist():
        summary.add(r)
