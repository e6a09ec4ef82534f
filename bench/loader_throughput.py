"""Training-loader throughput (samples per second per core) and peak memory vs. the number of shards.

What is timed: `trainer.data.CorpusLoader` producing training batches (sampling by manifest
weights, shuffle buffers, augmentation on with `--p-concat 0.5`, cropping, Moshi's delays, padding,
weights and masks, images resized for the encoder — placeholders when the image files are absent,
as with the shipped fixtures —, tensors) in one process, after `--warmup` batches.

Per core: the loader is single-threaded (Parquet row groups decoded with `use_threads=False`, torch
set to 1 thread here), so `samples_per_s_per_core = samples / CPU seconds` of the process over the
timed batches (user + system time: not inflated when a shared machine deschedules the process);
`cores` reports `torch.get_num_threads()` (1) and the measured CPU/wall ratio is printed too, with
`samples_per_s` (wall clock).

Memory: the same run is repeated in fresh processes on the corpus as it is and on a copy listing
every shard `--scale` times (symlinks, distinct shard entries in manifest.json), and each prints its
peak RSS (`ru_maxrss`): a loader that streams row groups has the same peak whatever the number of
shards (`flat_memory`: the scaled peak is within 10% + 16 MiB of the other).

Input (`--corpus DIR`): default `demo-out/quickstart` when it exists (what `make demo` builds), else
token shards synthesised into a temp folder in the shape of Table 7 (4 speech splits, 7 text splits,
the generic set; one shard per split of `--rows` rows, speech rows of 600-1400 frames with random
codes and 4-8 turns, text rows of 50-400 tokens, row groups of 64 rows as the tokens stage writes).

The last line printed is one JSON object. Run: `python bench/loader_throughput.py --help`.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEECH = {"docci-prop": 5, "docci-loc": 5, "pixmo-lead1": 5, "pixmo-comb": 15}
TEXT = {"pixelprose-ts1": 15, "pixelprose-ts2": 15, "pixelprose-lead2": 15, "tallyqa": 1, "ocrvqa": 5,
        "renderedtext": 1, "docvqa": 2}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=None, help="corpus directory (default: see above)")
    p.add_argument("--batches", type=int, default=100, help="timed batches")
    p.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--p-concat", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--max-frames", type=int, default=3000)
    p.add_argument("--scale", type=int, default=10, help="shard multiplier of the memory comparison")
    p.add_argument("--rows", type=int, default=100, help="rows per synthesised shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="keep the synthesised / scaled corpora here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


# --- synthesised corpus ----------------------------------------------------------------------------

def _speech_rows(rng, split: str, n: int, shard: int) -> dict:
    import numpy as np
    import pyarrow as pa

    lens = rng.integers(600, 1401, n)
    text_off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    text = np.full(int(lens.sum()), 3, np.int32)
    words = rng.random(len(text)) < 0.2
    text[words] = rng.integers(4, 32000, int(words.sum()))
    text[np.flatnonzero(words[1:] & ~words[:-1])] = 0
    codes = rng.integers(0, 2048, 16 * int(lens.sum()), dtype=np.int16)
    inner_off = np.concatenate([[0], np.cumsum(np.repeat(lens, 16))]).astype(np.int32)
    outer_off = (np.arange(n + 1) * 16).astype(np.int32)
    audio = pa.ListArray.from_arrays(pa.array(outer_off), pa.ListArray.from_arrays(pa.array(inner_off), pa.array(codes)))
    tsf, roles = [], []
    for L in lens:
        k = int(rng.integers(4, 9))
        starts = np.sort(rng.choice(np.arange(4, int(L) - 8), k - 1, replace=False)).tolist()
        tsf.append([3] + starts)
        roles.append([("user", "assistant")[i % 2] for i in range(k)])
    return {"lens": lens, "text": pa.ListArray.from_arrays(pa.array(text_off), pa.array(text)), "audio": audio,
            "tsf": tsf, "roles": roles, "rate": 12.5}


def _text_rows(rng, split: str, n: int, shard: int) -> dict:
    import numpy as np
    import pyarrow as pa

    lens = rng.integers(50, 401, n)
    text_off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    text = rng.integers(4, 32000, int(lens.sum())).astype(np.int32)
    audio = pa.array([[] for _ in range(n)], pa.list_(pa.list_(pa.int16())))
    tsf = [[0, int(L) // 3, int(L) // 2, 2 * int(L) // 3] for L in lens]
    roles = [["user", "assistant", "user", "assistant"] for _ in lens]
    return {"lens": lens, "text": pa.ListArray.from_arrays(pa.array(text_off), pa.array(text)), "audio": audio,
            "tsf": tsf, "roles": roles, "rate": 0.0}


def synthesise(out: Path, rows: int, seed: int) -> Path:
    """A corpus directory of token shards with realistic sizes (see the module docstring)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core.types import TOKEN_SCHEMA

    rng = np.random.default_rng(seed)
    splits = [(n, "speech", w, "split") for n, w in SPEECH.items()] + [(n, "text", w, "split") for n, w in TEXT.items()]
    splits.append(("generic", "speech", None, "generic"))
    man_splits = []
    for name, kind, w, role in splits:
        d = (_speech_rows if kind == "speech" else _text_rows)(rng, name, rows, 0)
        n = rows
        ids = [f"{name}-{i:05d}" for i in range(n)]
        img = [{"url": None, "path": None, "sha256": None} if role == "generic" else
               {"url": None, "path": f"images/{name}/{i:05d}.jpg", "sha256": None} for i in range(n)]
        cols = {
            "id": ids, "dialogue_id": ids, "split": [name] * n, "source": [name.split("-")[0]] * n,
            "instruction": ["GENERIC" if role == "generic" else "X"] * n, "caption_id": ids, "image": img,
            "seed": list(range(n)), "status": ["ok"] * n, "reason": [""] * n, "error": [""] * n,
            "kind": [kind] * n, "num_frames": d["lens"].astype(np.int32), "frame_rate_hz": [d["rate"]] * n,
            "duration_s": (d["lens"] / 12.5 if kind == "speech" else np.zeros(n)).astype(float),
            "text_tokens": d["text"], "audio_codes": d["audio"], "turn_start_frames": d["tsf"],
            "turn_roles": d["roles"], "words": [[] for _ in range(n)], "codec": ["synthetic#0"] * n,
            "tokenizer": ["synthetic#0"] * n, "dropped_text_tokens": [0] * n, "provenance": ["{}"] * n,
            "model_user": [""] * n, "model_assistant": [""] * n, "prompt_version": [""] * n,
            "input_shard": [0] * n, "input_row": list(range(n)),
        }
        arrays = [pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array) else cols[f.name].cast(f.type)
                  for f in TOKEN_SCHEMA]
        table = pa.Table.from_arrays(arrays, schema=TOKEN_SCHEMA)
        rel = f"{name}/tokens/tokens-00000.parquet"
        (out / name / "tokens").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / rel, row_group_size=64, compression="zstd")
        man_splits.append({"name": name, "role": role, "kind": kind, "weight": w, "rows": n, "state": "complete",
                           "shards": [{"path": rel, "rows": n, "bytes": (out / rel).stat().st_size}]})
    tot = sum(s["weight"] for s in man_splits if s["weight"])
    man = {"format": "ssvd-corpus/1", "name": "synthetic-loader-bench", "state": "complete",
           "weights": {s["name"]: s["weight"] / tot for s in man_splits if s["weight"]}, "splits": man_splits}
    (out / "manifest.json").write_text(json.dumps(man, indent=1))
    return out


def scaled(corpus: Path, out: Path, scale: int) -> Path:
    """A copy of the corpus manifest listing every shard `scale` times (symlinks to the same files)."""
    man = json.loads((corpus / "manifest.json").read_text())
    for s in man["splits"]:
        new = []
        for j, sh in enumerate(s.get("shards") or []):
            for c in range(scale):
                rel = Path(sh["path"])
                dst = out / rel.parent / f"{rel.stem}-x{c:03d}{rel.suffix}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to((corpus / rel).resolve())
                new.append({**sh, "path": str(dst.relative_to(out))})
        s["shards"] = new
        if s.get("rows") is not None:
            s["rows"] = s["rows"] * scale
    (out / "manifest.json").write_text(json.dumps(man, indent=1))
    return out


def shard_count(corpus: Path) -> int:
    man = json.loads((corpus / "manifest.json").read_text())
    return sum(len(s.get("shards") or []) for s in man["splits"])


# --- the measurement (a fresh process per corpus) --------------------------------------------------

def child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    import pyarrow as pa

    pa.set_cpu_count(1)
    from trainer.config import DataConfig
    from trainer.data import CorpusLoader

    cfg = DataConfig(batch_size=a.batch_size, p_concat=a.p_concat, image_size=a.image_size, max_frames=a.max_frames,
                     seed=a.seed)
    loader = CorpusLoader(a.corpus, cfg)
    for _ in range(a.warmup):
        next(loader)
    s0, w0, c0 = loader.samples, time.perf_counter(), time.process_time()
    speech = 0
    for _ in range(a.batches):
        b = next(loader)
        speech += b["kind"] == "speech"
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = loader.samples - s0
    st = loader.stats
    print(json.dumps({"samples": n, "wall_s": wall, "cpu_s": cpu, "threads": torch.get_num_threads(),
                      "speech_batches": speech, "augmented": st["augmented"], "row_groups_read": st["row_groups_read"],
                      "images_missing": st["images_missing"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(a: argparse.Namespace, corpus: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--corpus", str(corpus),
           "--batches", str(a.batches), "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
           "--p-concat", str(a.p_concat), "--image-size", str(a.image_size), "--max-frames", str(a.max_frames),
           "--seed", str(a.seed)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"loader run on {corpus} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    a = parse()
    if a.child:
        return child(a)
    tmp = Path(tempfile.mkdtemp(prefix="ssvd-loader-bench-")) if a.keep is None else a.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if a.corpus is not None:
            corpus, source = a.corpus, str(a.corpus)
        elif (ROOT / "demo-out" / "quickstart" / "manifest.json").is_file():
            corpus, source = ROOT / "demo-out" / "quickstart", "demo-out/quickstart"
        else:
            t = time.perf_counter()
            corpus = synthesise(tmp / "synthetic", a.rows, a.seed)
            source = f"synthesised ({a.rows} rows per shard, {time.perf_counter() - t:.1f} s)"
        big = scaled(corpus, tmp / f"x{a.scale}", a.scale)
        n1, n10 = shard_count(corpus), shard_count(big)
        print(f"corpus: {source}; {n1} shards, scaled copy {n10} shards")
        r1 = run_child(a, corpus)
        r10 = run_child(a, big)
        for r, n in ((r1, n1), (r10, n10)):
            print(f"  {n:5d} shards: {r['samples']} samples in {r['wall_s']:.2f} s wall / {r['cpu_s']:.2f} s CPU "
                  f"({r['samples'] / r['cpu_s']:.0f} samples per CPU-second, {r['samples'] / r['wall_s']:.0f}/s wall), "
                  f"{r['speech_batches']}/{a.batches} speech batches, {r['augmented']} augmented, "
                  f"{r['row_groups_read']} row groups read, peak RSS {r['peak_rss_mib']:.0f} MiB")
        per_core = r1["samples"] / r1["cpu_s"]
        flat = r10["peak_rss_mib"] <= 1.10 * r1["peak_rss_mib"] + 16
        print(json.dumps({"samples_per_s_per_core": round(per_core, 1), "cores": r1["threads"],
                          "per_core_basis": "samples / process CPU seconds (single-threaded loader)",
                          "samples_per_s": round(r1["samples"] / r1["wall_s"], 1),
                          "cpu_wall_ratio": round(r1["cpu_s"] / r1["wall_s"], 2),
                          "batch_size": a.batch_size, "p_concat": a.p_concat, "image_size": a.image_size,
                          "corpus": source, "shards": {"1x": n1, f"{a.scale}x": n10},
                          "peak_rss_mib": {str(n1): round(r1["peak_rss_mib"], 1), str(n10): round(r10["peak_rss_mib"], 1)},
                          "flat_memory": bool(flat), "goal_met": bool(per_core >= 500 and flat)}))
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
