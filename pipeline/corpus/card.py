"""DIR/README.md: the Hugging Face dataset card of a corpus made by `ssvd run` (docs/corpus.md).

Everything on the card comes from DIR/manifest.json. The YAML front matter is written with
`yaml.safe_dump` (so no string of the manifest can break it) and declares one config per split
whose data files are the split's token shards (`<split>/tokens/*.parquet`, relative to the
dataset root as the hub expects). The text is plain Markdown; only table cells are made safe
(a newline or `|` in a value would end the row).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.corpus.layout import CARD, FINAL_STAGE, load_provenance, stages_for
from pipeline.core.disk_space import writing
from pipeline.core.types import TOKEN_SCHEMA

PAPER = ("Amélie Royer, Moritz Böhle, Gabriel de Marmiesse, Laurent Mazaré, Neil Zeghidour, Alexandre Défossez, "
         "Patrick Pérez. *Vision-Speech Models: Teaching Speech Models to Converse about Images* (MoshiVis). "
         "arXiv:2503.15633, 2025. <https://arxiv.org/abs/2503.15633>")
# source or benchmark -> (dataset, hub id, licence); "verify" marks what was not checked against the source.
LICENCES: dict[str, tuple[str, str, str]] = {
    "pixmo": ("PixMo-cap", "allenai/pixmo-cap", "ODC-BY 1.0"),
    "docci": ("DOCCI", "google/docci", "CC BY 4.0"),
    "pixelprose": ("PixelProse", "tomg-group-umd/pixelprose", "CC BY 4.0"),
    "tallyqa": ("TallyQA", "HuggingFaceM4/the_cauldron", "see the source dataset (verify)"),
    "ocrvqa": ("OCR-VQA", "howard-hou/OCR-VQA", "see the source dataset (verify)"),
    "renderedtext": ("RenderedText", "wendlerc/RenderedText", "see the source dataset (verify)"),
    "docvqa": ("DocVQA", "HuggingFaceM4/DocumentVQA", "see the source dataset (verify)"),
}
COLUMNS: dict[str, str] = {
    "id": "row id (the dialogue id)", "dialogue_id": "id of the dialogue row it was made from",
    "split": "split of the row", "source": "caption source or benchmark", "instruction": "instruction (Table 7)",
    "caption_id": "id of the caption / benchmark row", "image": "the image: url, local path, sha256 (not the pixels)",
    "seed": "the dialogue's seed", "status": "ok | rejected | failed: train on `ok` rows only",
    "reason": "why a row was rejected", "error": "what failed",
    "kind": "`speech` (audio codes + aligned text stream) or `text` (speechless)",
    "num_frames": "speech: Mimi frames at `frame_rate_hz`; text: number of text tokens",
    "frame_rate_hz": "12.5 for speech rows, 0 for text rows", "duration_s": "audio duration (0 for text rows)",
    "text_tokens": "speech: the padded text stream, one token per frame; text: the plain transcript tokens",
    "audio_codes": "speech: [16][num_frames] Mimi codes, rows 0-7 assistant, 8-15 user, undelayed",
    "turn_start_frames": "text rows: token offset of each turn", "turn_roles": "role of each turn",
    "words": "word-level timing (word, start_s, end_s, speaker)", "codec": "`<codec>#<weights sha256>`",
    "tokenizer": "`<tokenizer>#<model sha256>`", "dropped_text_tokens": "text tokens that did not fit the stream",
    "provenance": "JSON: models, prompt version, voices, TTS, text stream options",
    "model_user": "dialogue model of the user", "model_assistant": "dialogue model of the assistant",
    "prompt_version": "version of the dialogue prompts", "input_shard": "input shard", "input_row": "input row",
}
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def size_category(rows: int) -> str:
    return next((label for limit, label in _SIZES if rows < limit), "n>1B")


def _cell(value: Any) -> str:
    """A value as one Markdown table cell."""
    if value is None or value == "":
        return "–"
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def quality_labels(prov: dict[str, Any]) -> dict[str, str]:
    """role -> quality of the dialogue models that are not production quality."""
    d = (prov.get("models") or {}).get("dialogue") or {}
    return {r: str(d[r].get("quality")) for r in ("user", "assistant")
            if isinstance(d.get(r), dict) and d[r].get("quality") not in (None, "production")}


def front_matter(prov: dict[str, Any]) -> dict[str, Any]:
    splits = prov.get("splits") or []
    labels = quality_labels(prov)
    tags = ["synthetic", "spoken-dialogue", "visual-dialogue", "speech", "moshi", "moshivis", "mimi", "ssvd"]
    if labels:
        tags += sorted(set(labels.values()))
    sources = sorted({LICENCES[k][1] for s in splits for k in (s.get("source"), s.get("benchmark"))
                      if k in LICENCES and LICENCES[k][1]} |
                     {s["input"] for s in splits if isinstance(s.get("input"), str) and _HUB_ID.match(s["input"])})
    quality = f" [{', '.join(sorted(set(labels.values())))} quality]" if labels else ""
    fm: dict[str, Any] = {
        "pretty_name": f"ssvd {prov.get('name')}: synthetic spoken visual dialogues{quality}",
        "license": "other",
        "license_name": "mixed-sources",
        "language": ["en"],
        "task_categories": ["visual-question-answering", "image-text-to-text", "audio-to-audio"],
        "tags": tags,
        "size_categories": [size_category(sum(int(s.get("rows") or 0) for s in splits))],
    }
    if sources:
        fm["source_datasets"] = sources
    fm["configs"] = [{"config_name": s["name"],
                      "data_files": [{"split": "train", "path": f"{s['name']}/{FINAL_STAGE}/*.parquet"}]}
                     for s in splits if s.get("shards")]
    return fm


def _warnings(prov: dict[str, Any]) -> list[str]:
    from pipeline.corpus.provenance import caveats

    return [f"> **{title}:** {text}." for title, text in caveats(prov)]


def _models(prov: dict[str, Any]) -> str:
    m = prov.get("models") or {}
    d = m.get("dialogue") or {}
    parts = ["### Dialogues (two LLM roles)", "", f"Engine: `{d.get('engine', 'not recorded')}`", ""]
    parts.append(_table(["role", "model", "fingerprint", "quality"],
                        [[r, (d.get(r) or {}).get("name"), (d.get(r) or {}).get("fingerprint"),
                          (d.get(r) or {}).get("quality")] for r in ("user", "assistant")]))
    tts = m.get("tts") or {}
    parts += ["", "### Speech (TTS)", "", _table(["backend", "package", "version", "model", "model sha256"], [
        [b, (i or {}).get("package"), (i or {}).get("version"), (i or {}).get("model"), (i or {}).get("model_sha256")]
        for b, i in tts.items()]) if tts else "No speech stage ran (or none recorded)."]
    v = m.get("voices") or {}
    users = v.get("user_voices") or v.get("users") or []
    parts += ["", f"Assistant voice: `{v.get('assistant_voice') or v.get('assistant') or 'not recorded'}`; "
                  f"user voices (one drawn per dialogue): {', '.join(f'`{u}`' for u in users) or 'not recorded'}."]
    c, t = m.get("codec") or {}, m.get("tokenizer") or {}
    parts += ["", "### Codec and text tokenizer", "", _table(["", "name", "sha256", "note"], [
        ["codec", c.get("name"), c.get("weights_sha256"),
         "seeded random-weight stand-in for Mimi" if c.get("random") else "Mimi" if c else "no speech tokens"],
        ["tokenizer", t.get("name"), t.get("sha256"), "stand-in" if t.get("stand_in") else "Moshi's" if t else ""],
    ])]
    return "\n".join(parts)


def _splits(prov: dict[str, Any]) -> str:
    rows = []
    for s in prov.get("splits") or []:
        tot = s.get("totals") or {}
        src = s.get("source") or s.get("benchmark")
        if src is None and s.get("role") == "generic":
            src = "generic topics, no image"
        rows.append([s.get("name"), s.get("kind"), s.get("weight"), src,
                     s.get("instruction"), s.get("rows"), len(s.get("shards") or []),
                     f"{float(tot.get('audio_s') or 0) / 3600:.3f}", tot.get("text_tokens"), s.get("state")])
    return _table(["split", "kind", "weight", "source / benchmark", "instruction", "rows", "shards",
                   "audio hours", "text tokens", "state"], rows)


def _images(prov: dict[str, Any]) -> str:
    """Per split: its images stored, and every image not had with its reason (docs/images.md)."""
    rows = []
    for s in prov.get("splits") or []:
        st = next((x for x in s.get("stages") or [] if x.get("stage") == "images"), None)
        if st is None:
            continue
        im = (st.get("stats") or {}).get("images") or {}
        status = im.get("status") or {}
        reasons = ", ".join(f"{k.removeprefix('image:')} {v}" for k, v in (im.get("by_reason") or {}).items())
        rows.append([s.get("name"), im.get("total", 0), status.get("ok", 0),
                     status.get("rejected", 0) + status.get("failed", 0), reasons, st.get("state")])
    if not rows:
        return "No images stage ran: rows point to their images in the source datasets."
    opts = ((prov.get("models") or {}).get("images") or {}).get("options") or {}
    how = (f"Fetched with img2dataset, resized with its `{opts.get('resize_mode')}` mode (shorter side at most "
           f"{opts.get('image_size')} px) and stored as {opts.get('encode_format')}, one row per image id in "
           "`<split>/images/images-*.parquet`. ") if opts else ""
    return (how + "A dialogue whose image could not be had stays in the corpus (its token rows are there) and "
            "is skipped by `ssvd train`.\n\n" +
            _table(["split", "images", "ok", "not had", "by reason", "state"], rows))


def _sources(prov: dict[str, Any]) -> str:
    used = []
    for s in prov.get("splits") or []:
        for key in (s.get("source"), s.get("benchmark")):
            if key in LICENCES and key not in used:
                used.append(key)
    rows = [[LICENCES[k][0], LICENCES[k][1], LICENCES[k][2],
             ", ".join(s["name"] for s in prov["splits"] if k in (s.get("source"), s.get("benchmark")))] for k in used]
    return _table(["dataset", "hub id", "licence", "splits"], rows)


def render_card(prov: dict[str, Any]) -> str:
    """README.md's text for the provenance `prov` (DIR/manifest.json's content)."""
    fm = yaml.safe_dump(front_matter(prov), sort_keys=False, allow_unicode=True, width=1000)
    name, cfg = prov.get("name"), prov.get("config") or {}
    limit = cfg.get("limit")
    cmd = f"ssvd run {prov.get('manifest_file') or 'MANIFEST.yaml'} --out DIR" + (f" --limit {limit}" if limit else "")
    first = next((s["name"] for s in prov.get("splits") or [] if s.get("shards")), "SPLIT")
    schema = _table(["column", "type", "meaning"], [[f"`{f.name}`", f"`{f.type}`", COLUMNS.get(f.name, "")]
                                                      for f in TOKEN_SCHEMA])
    soft = _table(["package", "version"], [[k, v] for k, v in (prov.get("software") or {}).items()])
    body = [
        f"# {name}: synthetic spoken visual dialogues (MoshiVis recipe)", "", "\n>\n".join(_warnings(prov)), "",
        "## What it is", "",
        str(prov.get("description") or ""), "",
        "Synthetic multi-turn dialogues about images, regenerated with ssvd "
        "following the MoshiVis paper (§3.2-3.3, Table 7): two LLM roles, a curious *user* and a knowledgeable "
        "*assistant*, are both shown a detailed image caption and talk about the image under one of the paper's "
        "instructions; speech splits are then voiced (two channels: assistant, user) and encoded to Mimi codes with "
        "an aligned text stream, speechless splits and the public benchmarks become plain text tokens. Each row "
        "points to its image (url / path / sha256) in the source dataset; the images the rows reference are "
        "stored with the corpus in `<split>/images/` (see Images below), under their sources' terms.", "",
        f"Paper: {PAPER} Kyutai's MoshiVis code: <https://github.com/kyutai-labs/moshivis>.", "",
        "## Sources and licences", "",
        "The corpus mixes sources, hence `license: other`: each split is under the terms of its source dataset "
        "(captions and images), and the generated text and speech also follow the terms of the models listed "
        "below.", "",
        _sources(prov), "",
        "## Models", "", _models(prov), "",
        "## Splits", "",
        "Weights are the relative sampling weights of the training mixture (p_i = w_i / sum_j w_j); the generic "
        "set is used by the prefix/suffix concatenation augmentation only, unless it has a weight.", "",
        _splits(prov), "",
        "## Images", "", _images(prov), "",
        "## How it was made", "",
        "Stages per split: caption split, kind `speech`: " + " → ".join(stages_for("speech")) +
        " (and `images`, after `dialogues`, for every split but the generic set)" +
        "; caption split, kind `text`, and benchmark splits: " + " → ".join(stages_for("text")) +
        ". Every stage is resumable; all dialogues are made first, then all speech, then all tokens.", "",
        f"```\n{cmd}\n```", "",
        f"config_hash `{prov.get('config_hash')}` · created {prov.get('created')} · updated {prov.get('updated')} · "
        f"state `{prov.get('state')}`. The resolved config, every shard's sha256 and the stage statistics are in "
        f"`manifest.json`.", "",
        soft, "",
        "## Row schema (token rows)", "",
        f"`<split>/{FINAL_STAGE}/*.parquet`: what trainers read.", "", schema, "",
        "## How to load", "",
        "```python\nfrom datasets import load_dataset\n\n# from a local copy of the corpus directory\n"
        f"ds = load_dataset(\"parquet\", data_files=\"DIR/{first}/{FINAL_STAGE}/*.parquet\", split=\"train\")\n"
        f"# from the hub, by config name (one config per split)\n"
        f"ds = load_dataset(\"OWNER/REPO\", \"{first}\", split=\"train\")\n"
        "ds = ds.filter(lambda r: r[\"status\"] == \"ok\")\n```", "",
    ]
    return f"---\n{fm}---\n\n" + "\n".join(body)


def write_card(root: Path) -> Path:
    """Write DIR/README.md from DIR/manifest.json; return its path."""
    root = Path(root)
    path = root / CARD
    tmp = path.with_name(path.name + ".tmp")
    text = render_card(load_provenance(root))
    with writing(tmp, len(text.encode())):
        tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
