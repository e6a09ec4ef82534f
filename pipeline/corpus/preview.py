"""`ssvd preview DIR --out PAGE.html`: one self-contained static page to look at a corpus.

Per split: the first `per_split` ok samples with their image, voices, per-turn instructions and
transcript. Speech samples embed their stereo FLAC (ch0 assistant, ch1 user) as a `data:` URI and
show every word as `<span class="w" data-start data-end>` (seconds), highlighted while the audio
plays; clicking a word seeks there. Text samples show the dialogue transcript.

The page needs nothing but itself: CSS and JS are inline, audio and images are embedded (the ones
the images stage stored in DIR/<split>/images, else readable local files), and other remote images
are shown as their URL only (nothing is ever fetched here). Everything taken from the
corpus (captions, model output, voice names, ids) is data, HTML-escaped by jinja2's autoescape.
Rows are streamed: only the first `per_split` ok rows of each split (and their dialogue rows) are read.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Iterator

import jinja2

from pipeline.corpus.layout import load_provenance, stage_dir
from pipeline.core.shards import iter_rows

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "preview.html.j2"
MAX_IMAGE_BYTES = 8 << 20  # larger local images are shown as their path, not embedded
_BATCH_ROWS = 4  # speech rows hold audio: read a few at a time
_SPEECH_COLUMNS = ["id", "dialogue_id", "status", "split", "source", "instruction", "caption_id", "image",
                   "sample_rate_hz", "duration_s", "audio_flac", "words", "turns", "voice_assistant",
                   "voice_user", "input_shard"]
_DIALOGUE_COLUMNS = ["id", "status", "source", "instruction", "caption_id", "caption", "image", "turns",
                     "input_shard", "model_user", "model_assistant", "note"]
_IMAGE_MAGIC = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
                (b"GIF89a", "image/gif"), (b"BM", "image/bmp")]


def write_preview(root: Path, out: Path, *, per_split: int = 2, splits: list[str] | None = None) -> dict:
    """Write the preview page of the corpus in `root` to `out`; returns {"out", "splits", "samples", "bytes"}."""
    root, out = Path(root), Path(out)
    if per_split < 0:
        raise ValueError(f"per_split must be >= 0, got {per_split}")
    prov = load_provenance(root)
    entries = prov.get("splits") or []
    if splits is not None:
        known = [s.get("name") for s in entries]
        unknown = [s for s in splits if s not in known]
        if unknown:
            raise ValueError(f"{root}: no split {', '.join(map(repr, unknown))} in manifest.json "
                             f"(splits: {', '.join(map(str, known)) or 'none'})")
        entries = [s for s in entries if s.get("name") in splits]
    views = [_split_view(root, s, per_split) for s in entries]
    html = _env().get_template(TEMPLATE).render(
        corpus=_corpus_view(prov), splits=views, per_split=per_split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return {"out": str(out), "splits": len(views), "samples": sum(len(v["samples"]) for v in views),
            "bytes": out.stat().st_size}


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _corpus_view(prov: dict) -> dict:
    models = prov.get("models") or {}
    return {
        "name": prov.get("name") or "(unnamed corpus)",
        "description": prov.get("description") or "",
        "config_hash": prov.get("config_hash") or "",
        "state": prov.get("state") or "",
        "created": prov.get("created") or "", "updated": prov.get("updated") or "",
        "manifest_file": prov.get("manifest_file") or "",
        "models": [(k, _summary(v), json.dumps(v, indent=1, sort_keys=True, default=str)) for k, v in models.items()],
        "software": ", ".join(f"{k} {v}" for k, v in (prov.get("software") or {}).items()),
    }


def _summary(v: Any) -> str:
    """A one-line hint of a models entry: the names it records (no hashes, paths or fingerprints)."""
    if not isinstance(v, dict):
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)
    if "name" in v:
        return str(v["name"])
    parts = []
    for k, x in v.items():
        if any(h in k for h in ("sha", "path", "fingerprint")):
            continue
        if isinstance(x, dict):
            name = x.get("name") or x.get("model") or x.get("backend")
            parts.append(f"{k}: {name}" if name else str(k))
        elif isinstance(x, list) and all(isinstance(i, str) for i in x):
            parts.append(f"{k}: {', '.join(x)}")
        elif isinstance(x, str) and len(x) <= 64:
            parts.append(f"{k}: {x}")
    return "; ".join(parts)


def _stage_paths(root: Path, split: dict, stage: str) -> list[Path]:
    """The completed shards of a stage of a split, in order (`<stage>-NNNNN.parquet`; parts ignored)."""
    rel = next((s.get("dir") for s in split.get("stages") or [] if s.get("stage") == stage), None)
    d = root / rel if rel else stage_dir(root, split["name"], stage)
    return sorted(d.glob(f"{stage}-*.parquet")) if d.is_dir() else []


def _first_ok(paths: list[Path], n: int, columns: list[str]) -> Iterator[dict]:
    """The first `n` ok rows of the shards, streamed; nothing is read past the n-th."""
    if n <= 0:
        return
    for p in paths:
        for r in iter_rows(p, columns=columns, batch_rows=_BATCH_ROWS):
            if r.get("status") == "ok":
                yield r
                n -= 1
                if n == 0:
                    return


def _split_view(root: Path, split: dict, per_split: int) -> dict:
    view = {k: split.get(k) for k in ("name", "role", "kind", "weight", "source", "instruction", "benchmark",
                                      "state", "rows")}
    view["samples"], view["note"] = [], ""
    inp = Path(split["input"]) if split.get("input") else None
    bases = [b for b in (Path.cwd(), root, inp, inp.parent if inp else None) if b is not None]  # image paths
    from pipeline.images.store import ImageStore

    store = ImageStore([root / st["dir"] for st in split.get("stages") or [] if st.get("stage") == "images"])
    dialogue_paths = _stage_paths(root, split, "dialogues")
    speech_paths = _stage_paths(root, split, "speech") if split.get("kind") == "speech" else []
    if speech_paths:
        rows = list(_first_ok(speech_paths, per_split, _SPEECH_COLUMNS))
        dialogues = _find_dialogues(dialogue_paths, rows)
        view["samples"] = [_speech_sample(bases, r, dialogues.get(r["dialogue_id"]), store) for r in rows]
    elif dialogue_paths:
        if split.get("kind") == "speech":
            view["note"] = "no speech shard written yet: showing the dialogue text"
        view["samples"] = [_text_sample(bases, d, store)
                           for d in _first_ok(dialogue_paths, per_split, _DIALOGUE_COLUMNS)]
    if per_split and not view["samples"] and not view["note"]:
        view["note"] = "no ok rows written yet"
    return view


def _find_dialogues(paths: list[Path], speech_rows: list[dict]) -> dict[str, dict]:
    """The dialogue rows of these speech rows (by id), reading their own input shard first; stops when all are found."""
    want = {r["dialogue_id"] for r in speech_rows}
    first = {f"dialogues-{int(r['input_shard'] or 0):05d}.parquet" for r in speech_rows}
    found: dict[str, dict] = {}
    for p in sorted(paths, key=lambda p: p.name not in first):
        if not want - found.keys():
            break
        for r in iter_rows(p, columns=_DIALOGUE_COLUMNS):
            if r["id"] in want:
                found[r["id"]] = r
                if not want - found.keys():
                    break
    return found


def _speech_sample(bases: list[Path], r: dict, d: dict | None, store=None) -> dict:
    spans = r.get("turns") or []
    dturns = (d or {}).get("turns") or []
    instructions = [t.get("instruction") or "" for t in dturns] if len(dturns) == len(spans) else [""] * len(spans)
    turns = [{"role": t["role"], "voice": t.get("voice") or "", "instruction": ins, "text": t.get("text") or "",
              "start": t["start_s"], "end": t["end_s"], "words": []} for t, ins in zip(spans, instructions)]
    loose: list[dict] = []
    for w in r.get("words") or []:
        word = {"word": w["word"], "speaker": w.get("speaker") or "", "start": repr(float(w["start_s"])),
                "end": repr(float(w["end_s"]))}
        k = _turn_of(w, spans)
        (turns[k]["words"] if k is not None else loose).append(word)
    return {
        "id": r["id"], "kind": "speech", "dialogue_id": r["dialogue_id"],
        "instruction": r.get("instruction") or "", "source": r.get("source") or "",
        "caption": (d or {}).get("caption") or "", "note": (d or {}).get("note") or "",
        "image": _image(bases, r.get("image") or (d or {}).get("image"), store),
        "duration_s": r.get("duration_s") or 0.0, "sample_rate_hz": r.get("sample_rate_hz"),
        "audio": "data:audio/flac;base64," + base64.b64encode(r["audio_flac"] or b"").decode("ascii"),
        "voice_assistant": r.get("voice_assistant") or "", "voice_user": r.get("voice_user") or "",
        "turns": turns, "loose_words": loose, "missing_dialogue": d is None,
    }


def _turn_of(w: dict, spans: list[dict]) -> int | None:
    """The turn a word was spoken in: same speaker, its midpoint in the turn (else the nearest such turn)."""
    mid = (w["start_s"] + w["end_s"]) / 2
    best, dist = None, float("inf")
    for k, t in enumerate(spans):
        if t["role"] != w.get("speaker"):
            continue
        d = 0.0 if t["start_s"] <= mid <= t["end_s"] else min(abs(mid - t["start_s"]), abs(mid - t["end_s"]))
        if d < dist:
            best, dist = k, d
    return best


def _text_sample(bases: list[Path], d: dict, store=None) -> dict:
    return {
        "id": d["id"], "kind": "text", "dialogue_id": d["id"], "instruction": d.get("instruction") or "",
        "source": d.get("source") or "", "caption": d.get("caption") or "", "note": d.get("note") or "",
        "image": _image(bases, d.get("image"), store),
        "turns": [{"role": t.get("role") or "", "text": t.get("text") or "", "instruction": t.get("instruction") or ""}
                  for t in d.get("turns") or []],
    }


def _image(bases: list[Path], img: dict | None, store=None) -> dict | None:
    """An image as a data: URI: the one the images stage stored, else a readable local raster image at its
    path; else its URL/path as text (and why the images stage could not get it).

    A relative path is looked up from the CWD, the corpus and the split's input (file or directory)."""
    img = img or {}
    url, path = img.get("url") or "", img.get("path") or ""
    if not url and not path:
        return None
    view = {"src": None, "url": url, "path": path, "unavailable": None,
            "link": url if url.lower().startswith(("http://", "https://")) else None}
    if store:  # the split's images stage (pipeline.images.store.ImageStore)
        data = store.get(img)
        mime = _image_mime(data) if data else None
        if mime:
            view["src"] = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
            return view
        view["unavailable"] = store.unavailable(img)  # the reason the images stage could not get it
    if path:
        for p in dict.fromkeys(b / path for b in bases):  # an absolute path stays itself
            try:
                if p.is_file() and p.stat().st_size <= MAX_IMAGE_BYTES:
                    data = p.read_bytes()
                    mime = _image_mime(data)
                    if mime:
                        view["src"] = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
                        break
            except OSError:
                continue
    return view


def _image_mime(data: bytes) -> str | None:
    """The MIME type of a raster image from its first bytes (never SVG or anything scriptable)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((m for magic, m in _IMAGE_MAGIC if data.startswith(magic)), None)
