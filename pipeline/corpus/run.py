"""`ssvd run MANIFEST --out DIR`: every split of a manifest through its stages, into one directory.

Phase by phase across splits (all dialogues, then the images of every split, then speech, then
tokens), so a worker pool starts once for all the splits that share it (one LLM engine per set of dialogue
settings, one TTS pool, one token pool per kind) and the engine is gone before the speech workers start. Each step is the resumable stage runner of the single-stage commands: killed anywhere, the same command continues.
Before any work every split's input is opened (local files: existence, type, columns; hub ids: resolved),
so a wrong path, a broken file or a hub id that does not exist (or is a loading script) stops the run at
once, naming every such split. A step that fails later (a file that turns out corrupt past its header)
is recorded and the other splits go on; the splits downstream of it are reported as blocked.
manifest.json is rewritten after every step.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.corpus import provenance
from pipeline.corpus.layout import LOCK, MANIFEST_JSON, stage_dir
from pipeline.corpus.plan import Unit, config_hash, corpus_config, units
from pipeline.core.disk_space import DiskFull
from pipeline.core.ray_pool import NotEnoughGpus, WorkerStartError
from pipeline.dialogue.engine_api import EngineRefused
from pipeline.manifest.load import load_manifest
from pipeline.core.runstate import ConfigMismatch, _flatten, diff_keys, write_json_atomic

log = logging.getLogger("ssvd")
PHASES = ("dialogues", "images", "speech", "tokens")


class CorpusMismatch(RuntimeError):
    """The directory holds a corpus made with another config."""


class CorpusBusy(RuntimeError):
    """Another `ssvd run` is writing the directory."""


class CorpusInputError(ValueError):
    """Inputs of one or more splits cannot be read; found before any work."""


@dataclass
class RunArgs:
    only: list[str] | None = None
    limit: int | None = None
    workers: int = 1  # dialogue workers (one engine each) and speech/token workers; 0: in-process
    ray_address: str | None = None
    device: str = "auto"
    progress: bool = True
    verbose: bool = False
    images: Any = None  # pipeline.images.schema.ImageOptions (allow-list, mirrors); None: the defaults
    # engine sizing flags (None: the manifest's models.dialogue value)
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    max_num_seqs: int | None = None


@dataclass
class CorpusResult:
    out: str
    steps: list[dict[str, Any]] = field(default_factory=list)  # split, stage, outcome, summary or error

    @property
    def ok(self) -> bool:
        return all(s["outcome"] in ("done", "skipped") for s in self.steps)


def check_config(out: Path, config: dict, h: str) -> None:
    p = out / MANIFEST_JSON
    if not p.is_file():
        return
    old = json.loads(p.read_text())
    if old.get("config_hash") == h:
        return
    keys = diff_keys(old.get("config", {}), config)
    fo, fn = _flatten(old.get("config", {})), _flatten(config)
    shown = "\n".join(f"  {k}: {fo.get(k, '<absent>')!r} -> {fn.get(k, '<absent>')!r}" for k in keys[:20])
    more = f"\n  ... and {len(keys) - 20} more" if len(keys) > 20 else ""
    raise CorpusMismatch(
        f"{out} holds a corpus made with another config (hash {old.get('config_hash')}, this run "
        f"{h}); the keys that differ:\n{shown}{more}\nResume with the manifest (and --limit) it was "
        f"made with, or give another --out.")


class _Lock:
    """One live `ssvd run` per directory: an flock on DIR/_corpus.lock, held while the run lives and
    released by the kernel however it ends (SIGKILL included), so a lock left by a killed run never
    blocks the next one, and two runs starting at once cannot both take it. The file also says who
    holds it (pid, host, start) for the message and `ssvd status`."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self._fd: int | None = None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = holder(self.path) or {}
            os.close(fd)
            raise CorpusBusy(f"{self.path.parent}: another `ssvd run` (pid {info.get('pid', '?')} on "
                             f"{info.get('host', '?')}, started {info.get('started', '?')}) is writing it; "
                             "wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": provenance.now()}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        # The file stays (unlinking it would let a waiting run lock the old inode while a new run locks
        # a new file); emptied, it says nobody holds it.
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None


def holder(path: Path) -> dict | None:
    """Who holds the corpus lock at `path` (its recorded pid, host, start), or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a live run
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def run_corpus(manifest_path: Path | str, out: Path, args: RunArgs) -> CorpusResult:
    from pipeline.corpus.steps import Steps

    m = load_manifest(manifest_path)
    todo = units(m, args.limit, args.only)
    every = units(m, args.limit)
    config = corpus_config(m, args.limit)
    h = config_hash(config)
    out = Path(out)
    check_config(out, config, h)
    preflight(todo)
    steps = Steps(m, out, args)
    if any("speech" in u.stages for u in todo):
        steps.check()  # kyutai model, cfg_coef, voices: before any dialogue is made or read
    steps.check_engines(todo)  # engines that cannot hold one full dialogue: before any engine starts
    out.mkdir(parents=True, exist_ok=True)
    result = CorpusResult(str(out))
    with _Lock(out):
        provenance.write(out, m, config, h, every)
        bar = _bar(sum(len(u.stages) for u in todo), args.progress)
        failed: set[str] = set()
        stopped = True
        try:
            for phase in PHASES:
                for u in todo:
                    if phase not in u.stages:
                        continue
                    bar.set_description(f"{u.name}/{phase}")
                    result.steps.append(_step(steps, u, phase, failed, out))
                    provenance.write(out, m, config, h, every)
                    bar.update(1)
                steps.close_pools()
            stopped = False
        finally:
            steps.close_pools()
            bar.close()
            try:  # manifest.json says what is there, also after a stop (the partial file's space is given back)
                provenance.write(out, m, config, h, every)
            except DiskFull as e:
                if not stopped:
                    raise
                log.error("manifest.json could not be rewritten either: %s", e)
        _card(out)
    return result


def preflight(todo: list[Unit]) -> None:
    """Open the input of every split to run (local: files, types, columns; hub: resolve the id), all before
    any work; raise CorpusInputError naming every split that cannot be read, with each one's own error."""
    from pipeline.sources.benchmarks import open_benchmark
    from pipeline.sources.captions import open_source

    bad = []
    for u in todo:
        if u.role != "split" or "dialogues" not in u.stages:
            continue
        try:
            if u.is_benchmark:
                open_benchmark(u.spec.benchmark, u.spec.input)
            else:
                open_source(u.spec.source, u.spec.input, u.spec.caption_options())
        except (ValueError, FileNotFoundError) as e:  # every input error of captions/benchmarks/hub_load
            bad.append(f"  {u.name}: {e}")
    if bad:
        raise CorpusInputError(f"{len(bad)} split(s) cannot read their input; nothing was run:\n" + "\n".join(bad))


def _step(steps, u: Unit, phase: str, failed: set[str], out: Path) -> dict[str, Any]:
    if u.name in failed:
        return {"split": u.name, "stage": phase, "outcome": "blocked",
                "error": f"an earlier stage of {u.name} failed"}
    try:
        summary = steps.run(u, phase)
    except (DiskFull, EngineRefused, WorkerStartError, NotEnoughGpus):
        raise  # the volume, the LLM server or the engines' settings, not this split: every other step would fail the same way
    except (ValueError, FileNotFoundError, RuntimeError, ConfigMismatch) as e:
        if phase != "images":  # nothing downstream reads the images: speech and tokens go on
            failed.add(u.name)
        log.error("%s/%s failed: %s", u.name, phase, e)
        return {"split": u.name, "stage": phase, "outcome": "failed", "error": str(e)}
    d = summary.to_dict()
    d["out_dir"] = stage_dir(out, u.name, phase).relative_to(out).as_posix()
    return {"split": u.name, "stage": phase, "outcome": "done", "summary": d}


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc="corpus", unit="step", position=0, dynamic_ncols=True)


def _card(out: Path) -> None:
    try:
        from pipeline.corpus.card import write_card
    except ImportError:  # pragma: no cover
        return
    write_card(out)

