"""`ssvd verify DIR`: every shard that manifest.json lists is there, unchanged and readable.

Per shard: the file exists; its size and sha256 equal the recorded ones; it opens as Parquet with
the recorded number of rows; its schema is its stage's schema (pipeline/core/types.py); every row group
decodes. Shard files in the stage folders that manifest.json does not list are reported too. A partial corpus (a run
stopped, e.g. by a full volume) verifies when what it lists is intact; `completeness` says which splits are
not complete.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.corpus.layout import load_provenance
from pipeline.core.shards import sha256_file
from pipeline.images.schema import IMAGES_SCHEMA
from pipeline.core.types import DIALOGUE_SCHEMA, SPEECH_SCHEMA, TOKEN_SCHEMA

SCHEMAS: dict[str, pa.Schema] = {"dialogues": DIALOGUE_SCHEMA, "images": IMAGES_SCHEMA, "speech": SPEECH_SCHEMA,
                                 "tokens": TOKEN_SCHEMA}
# Columns added since a stage's schema version 1: a shard written before them is still valid.
ADDED: dict[str, tuple[str, ...]] = {"dialogues": ("generated_tokens", "wasted_tokens")}


def _schema_ok(stage: str, got: pa.Schema) -> bool:
    want = SCHEMAS[stage].remove_metadata()
    got = got.remove_metadata()
    if got.equals(want):
        return True
    old = pa.schema([f for f in want if f.name not in ADDED.get(stage, ())])
    return got.equals(old)


def check_shard(root: Path, stage: str, shard: dict) -> list[str]:
    """What is wrong with one listed shard (empty: nothing)."""
    rel = shard["path"]
    path = root / rel
    if not path.is_file():
        return [f"{rel}: missing (manifest.json lists it with {shard['rows']} rows)"]
    bad = []
    size = path.stat().st_size
    if size != shard["bytes"]:
        bad.append(f"{rel}: size {size} bytes, manifest.json says {shard['bytes']}")
    sha = sha256_file(path)
    if sha != shard["sha256"]:
        bad.append(f"{rel}: sha256 {sha[:16]}..., manifest.json says {shard['sha256'][:16]}... (the file changed)")
    try:
        f = pq.ParquetFile(path)
        if f.metadata.num_rows != shard["rows"]:
            bad.append(f"{rel}: {f.metadata.num_rows} rows, manifest.json says {shard['rows']}")
        want = SCHEMAS[stage]
        got = f.schema_arrow
        if not _schema_ok(stage, got):
            diff = sorted(set(map(str, want)) ^ set(map(str, got)))
            bad.append(f"{rel}: schema is not the {stage} schema (differs in: {'; '.join(diff[:6])})")
        kind = (got.metadata or {}).get(b"ssvd.kind", b"").decode()
        if kind != stage:
            bad.append(f"{rel}: schema metadata ssvd.kind={kind!r}, expected {stage!r}")
        for g in range(f.num_row_groups):
            f.read_row_group(g)
    except (OSError, pa.ArrowException) as e:
        bad.append(f"{rel}: unreadable as Parquet: {e}")
    return bad


def completeness(root: Path) -> tuple[str, list[str]]:
    """(the corpus state manifest.json records, the splits not complete): what verify says besides the shards."""
    prov = load_provenance(Path(root))
    return prov.get("state", "?"), [s["name"] for s in prov["splits"] if s.get("state") != "complete"]


def verify_corpus(root: Path, progress: bool = True) -> tuple[list[str], int]:
    """(problems, shards checked). Problems name the shard file and what is wrong with it."""
    root = Path(root)
    prov = load_provenance(root)
    listed = [(st["stage"], sh) for sp in prov["splits"] for st in sp["stages"] for sh in st["shards"]]
    problems: list[str] = []
    for stage, sh in tqdm(listed, desc="verify", unit="shard", disable=not progress):
        problems += check_shard(root, stage, sh)
    known = {sh["path"] for _, sh in listed}
    for sp in prov["splits"]:
        for st in sp["stages"]:
            d = root / st["dir"]
            for f in sorted(d.glob(f"{st['stage']}-*.parquet")) if d.is_dir() else []:
                rel = f.relative_to(root).as_posix()
                if rel not in known:
                    problems.append(f"{rel}: not listed in manifest.json (written after it, or copied in); "
                                    "rerun `ssvd run` with the same manifest to record it")
    return problems, len(listed)
