"""The run record of one stage in its output directory: the resolved config, its hash, the outcome.

A rerun into the same directory must use the same config (otherwise the shards would mix two
different corpora); a different config is refused with the keys that differ, unless --overwrite.
The input directory is recorded relative to the output directory, so a moved corpus resumes.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path


class ConfigMismatch(RuntimeError):
    pass


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def portable(config: dict, out_dir: Path) -> dict:
    """The config as recorded: JSON-normalised, with an absolute input directory made relative to the
    output directory, so that a corpus moved or copied whole still resumes."""
    config = json.loads(json.dumps(config, default=str))
    inp = config.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("dir"), str) and os.path.isabs(inp["dir"]):
        inp["dir"] = os.path.relpath(inp["dir"], Path(out_dir).resolve())
    return config


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def diff_keys(a: dict, b: dict) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, "<absent>") != fb.get(k, "<absent>"))


def write_json_atomic(path: Path, obj: dict) -> None:
    from pipeline.core.disk_space import writing

    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    with writing(tmp, len(text.encode())):  # a full volume: DiskFull, the partial tmp removed
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunState:
    def __init__(self, out_dir: Path, stage: str):
        self.path = Path(out_dir) / f"_{stage}.run.json"
        self.stage = stage

    def load(self) -> dict | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def begin(self, config: dict) -> None:
        config = portable(config, self.path.parent)  # normalise tuples etc., relative input dir
        h = config_hash(config)
        old = self.load()
        if old and old.get("config_hash") != h and config_hash(portable(old.get("config", {}), self.path.parent)) == h:
            old.update(config=config, config_hash=h)  # recorded before input dirs were relative: the same run
        if old and old.get("config_hash") != h:
            keys = diff_keys(old.get("config", {}), config)
            shown = ", ".join(
                f"{k}: {_flatten(old.get('config', {})).get(k, '<absent>')!r} -> {_flatten(config).get(k, '<absent>')!r}"
                for k in keys[:8]
            )
            raise ConfigMismatch(
                f"{self.path.parent} already holds a {self.stage} run made with a different config "
                f"(differs in {shown}). Resume with the same options, pick another --out, "
                f"or pass --overwrite to discard the earlier run."
            )
        rec = old or {"stage": self.stage, "config": config, "config_hash": h, "created": _now()}
        rec["last_started"] = _now()
        rec["state"] = "running"
        rec.pop("progress", None)  # the measures of an earlier run
        write_json_atomic(self.path, rec)

    def progress(self, measures: dict) -> None:
        """This run's measures so far (pipeline/core/progress.py), for `ssvd status` while it runs or after it died."""
        rec = self.load() or {}
        rec["progress"] = {**measures, "updated": _now()}
        if measures.get("rows"):
            rec["measured"] = rec["progress"]
        write_json_atomic(self.path, rec)

    def note(self, **fields) -> None:
        """Add facts about the run (not its config: they do not decide whether a resume may continue)."""
        rec = self.load() or {}
        rec.update(fields)
        write_json_atomic(self.path, rec)

    def finish(self, summary: dict, **fields) -> None:
        """The run's outcome; `fields`: facts the next run reads (e.g. `output_shards`, see runner._noop)."""
        rec = self.load() or {}
        rec.update(state="complete", finished=_now(), summary=summary, **fields)
        if (summary.get("run") or {}).get("rows"):  # the latest run that did work: its rates stay
            rec["measured"] = {**summary["run"], "updated": rec["finished"]}
        write_json_atomic(self.path, rec)
