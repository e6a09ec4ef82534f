"""`ssvd estimate MANIFEST --sample N`: how long, how much disk and how many tokens a whole corpus takes.

It runs the first N inputs of every split of the manifest (`ssvd run --limit N` into a sample
directory; or reads an existing corpus with `--from`), reads what the sample measured (rows, tokens,
audio, shard bytes from the files; rates from each stage's run record), and scales it to the
manifest's full inputs:

- input rows per split: counted in the local files (Parquet footers; other formats read through),
  or the hub dataset's metadata (its card's `dataset_info.splits`) when reachable; the manifest's
  `limit` and `replicas` (and `--rows`) applied. Where they say it is recorded in `input_rows_from`.
- every additive quantity (dialogue rows, accepted dialogues, messages, tokens, audio, bytes) scales
  with the number of dialogues the split will run: total = sample x (full dialogues / sample dialogues);
  a shard file's fixed part (schema, footer) is counted once per file, as many as the sample's;
- wall time per stage = the start the sample measured (engines, codecs; once per phase, as `ssvd run`
  keeps its pools across splits) + the sample's work time x that factor x sample workers / K
  (linear in workers: each worker its own engine or codec on its own share of the machine).
- spread: one standard error of each total, from the per-row values of the sample (none below 2 rows).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.corpus.layout import stage_dir
from pipeline.corpus.plan import Unit, units
from pipeline.manifest.load import load_manifest
from pipeline.core.progress import fmt_duration


@dataclass
class EstimateArgs:
    sample: int = 4
    workers: int = 1  # workers per stage the estimate's wall time is for
    sample_workers: int = 1  # workers the sample runs with
    rows: int | None = None  # extrapolate to this many input rows per split instead of the full inputs
    sample_dir: Path | None = None  # where the sample corpus goes (default: a temporary directory)
    from_corpus: Path | None = None  # read this existing (partial) corpus instead of running a sample
    device: str = "auto"
    ray_address: str | None = None
    progress: bool = True
    verbose: bool = False
    hub_timeout_s: float = 10.0


# ----------------------------------------------------------------------------- input rows
def _local_rows(files: list[Path], source) -> int:
    n = 0
    for i, f in enumerate(files):
        if f.suffix.lower() == ".parquet":
            n += pq.ParquetFile(f).metadata.num_rows
        else:  # JSONL / JSON / CSV, DOCCI's release file (rows of other splits skipped): read through
            n += sum(1 for _ in source.iter_shard(i))
    return n


def _hub_rows(repo: str, split: str, timeout_s: float) -> tuple[int | None, str]:
    try:
        from huggingface_hub import HfApi

        info = HfApi().dataset_info(repo, timeout=timeout_s)
        card = (info.card_data or {}) if isinstance(info.card_data, dict) else (info.card_data.to_dict() if info.card_data else {})
        infos = card.get("dataset_info") or []
        for cfg in infos if isinstance(infos, list) else [infos]:
            for s in cfg.get("splits") or []:
                if s.get("name") == split and s.get("num_examples") is not None:
                    return int(s["num_examples"]), f"hub metadata ({repo} card, split {split})"
        return None, f"unknown: {repo}'s card lists no num_examples for split {split!r}"
    except Exception as e:  # offline, no such repo, rate limited: say so, never guess
        return None, f"unknown: hub metadata of {repo} unreachable ({type(e).__name__})"


def input_rows(u: Unit, timeout_s: float = 10.0) -> tuple[int | None, str]:
    """(rows of the split's input, where that figure comes from)."""
    if u.role == "generic":
        return u.spec.count, "manifest (generic count)"
    spec = u.spec
    if _looks_hub(spec.input):  # the card's metadata, never the rows themselves
        return _hub_rows(*_repo_split(spec), timeout_s)
    try:
        if spec.is_benchmark:
            from pipeline.sources.benchmarks import open_benchmark

            src = open_benchmark(spec.benchmark, spec.input)
        else:
            from pipeline.sources.captions import open_source

            src = open_source(spec.source, spec.input, spec.caption_options())
    except Exception as e:
        return None, f"unknown: {type(e).__name__}: {str(e)[:200]}"
    files = getattr(src, "_files", None)
    if files is not None:
        return _local_rows(files, src), "local files"
    return _hub_rows(*_repo_split(spec), timeout_s)


def _repo_split(spec) -> tuple[str, str]:
    repo, _, split = spec.input.removeprefix("hub:").removeprefix("hf://datasets/").partition("@")
    if not split:
        split = "train" if spec.is_benchmark else spec.caption_options().split
    return repo.strip("/"), split


def _looks_hub(s: str) -> bool:
    s = s.removeprefix("hub:").removeprefix("hf://datasets/").partition("@")[0].strip("/")
    return not Path(s).expanduser().exists() and s.count("/") == 1 and not s.startswith((".", "~"))


def planned_dialogues(u: Unit, rows: int | None, override: int | None) -> int | None:
    """Dialogue rows a run makes from `rows` input rows: the manifest's limit and replicas applied;
    `override` (--rows) stands for the input rows and the limit."""
    if override is not None:
        rows = override
    elif rows is not None and u.settings.limit is not None:
        rows = min(rows, u.settings.limit)
    if rows is None:
        return None
    replicas = 1 if (u.role == "generic" or u.is_benchmark) else u.settings.replicas
    return rows * replicas


# ----------------------------------------------------------------------------- what the sample holds
def _stage_files(d: Path, stage: str) -> list[Path]:
    files = sorted(d.glob(f"{stage}-*.parquet")) if d.is_dir() else []
    done = {f.stem for f in files}
    parts = [p for pd in sorted((d / ".parts").glob(f"{stage}-*")) if (d / ".parts").is_dir() and pd.name not in done
             for p in sorted(pd.glob("part-*.parquet"))]
    return files + parts


def measure_stage(d: Path, stage: str) -> dict[str, Any] | None:
    """Rows, per-row values and bytes of one stage directory of the sample, and its run record's rates."""
    files = _stage_files(d, stage)
    rec_p = d / f"_{stage}.run.json"
    rec = json.loads(rec_p.read_text()) if rec_p.is_file() else {}
    if not files:
        return None
    want = {"status", "num_pairs", "generated_tokens", "completion_tokens", "duration_s", "turns"}
    per: dict[str, list] = {}
    for f in files:
        names = set(pq.read_schema(f).names)
        t = pq.read_table(f, columns=[c for c in want if c in names and c != "turns"])
        for c in t.column_names:
            per.setdefault(c, []).extend(t.column(c).to_pylist())
    status = per.get("status", [])
    ok = [s == "ok" for s in status]
    gen = [g if g is not None else c for g, c in zip(per.get("generated_tokens", [None] * len(status)),
                                                       per.get("completion_tokens", [0] * len(status)))]
    size = sum(f.stat().st_size for f in files)
    # a shard file costs a fixed footer/schema besides its rows (a tiny sample is mostly that): it is
    # counted once per file (as many files as the sample: one per input shard), the rest per row
    fixed = len(files) * _empty_shard_bytes(stage)
    out = {"rows": len(status), "ok": sum(ok), "bytes": size, "fixed_bytes": min(fixed, size),
           "measured": rec.get("measured")}
    per_row = max(size - fixed, 0) / max(len(status), 1)
    vals: dict[str, list[float]] = {"rows": [1.0] * len(status), "ok": [float(x) for x in ok],
                                    "bytes": [per_row] * len(status)}
    if stage == "dialogues":
        pairs = per.get("num_pairs", [0] * len(status))
        comp = per.get("completion_tokens", [0] * len(status))
        vals["messages"] = [2.0 * (p or 0) * k for p, k in zip(pairs, ok)]
        vals["generated_tokens"] = [float(g or 0) for g in gen]
        vals["kept_tokens"] = [float(c or 0) * k for c, k in zip(comp, ok)]
        vals["wasted_tokens"] = [max(float(g or 0) - kc, 0.0) for g, kc in zip(gen, vals["kept_tokens"])]
    if "duration_s" in per:
        vals["audio_s"] = [float(x or 0.0) * k for x, k in zip(per["duration_s"], ok)]
    out["values"] = vals
    return out


def _empty_shard_bytes(stage: str) -> int:
    """Bytes of a shard file of `stage` with no row (schema, footer), written as the ShardStore writes."""
    import io

    import pyarrow as pa

    from pipeline.corpus.verify import SCHEMAS

    buf = io.BytesIO()
    with pq.ParquetWriter(buf, SCHEMAS[stage], compression="zstd") as w:
        w.write_table(pa.Table.from_pylist([], schema=SCHEMAS[stage]))
    return len(buf.getvalue())


def _sum_and_se(values: list[float], factor: float) -> tuple[float, float | None]:
    """The scaled total and its standard error (None below two rows)."""
    n = len(values)
    total = sum(values) * factor
    if n < 2:
        return total, None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return total, math.sqrt(var / n) * n * factor


# ----------------------------------------------------------------------------- the estimate
def estimate(manifest_path: Path, args: EstimateArgs) -> dict[str, Any]:
    m = load_manifest(manifest_path)
    every = units(m)
    ran = args.from_corpus is None
    tmp = None
    if ran:
        from pipeline.corpus.run import RunArgs, run_corpus

        root = args.sample_dir
        if root is None:
            tmp = tempfile.TemporaryDirectory(prefix="ssvd-estimate-")
            root = Path(tmp.name) / "sample"
        res = run_corpus(manifest_path, root, RunArgs(limit=args.sample, workers=args.sample_workers,
                                                      ray_address=args.ray_address, device=args.device,
                                                      progress=args.progress, verbose=args.verbose))
        failed = [f"{s['split']}/{s['stage']}: {s.get('error', '')}" for s in res.steps if s["outcome"] == "failed"]
        if failed:
            raise RuntimeError("the sample run failed, so nothing can be estimated: " + "; ".join(failed))
    else:
        root = Path(args.from_corpus)
        prov = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else None
        if prov is None:
            raise FileNotFoundError(f"--from {root}: no manifest.json, so not a corpus made by `ssvd run`")
        if prov.get("name") != m.name:
            raise ValueError(f"--from {root}: a corpus of manifest {prov.get('name')!r}, not of {m.name!r} "
                             f"({manifest_path}); give the manifest it was made with")
    try:
        return _extrapolate(m, every, root, args, ran)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _extrapolate(m, every: list[Unit], root: Path, args: EstimateArgs, ran: bool) -> dict[str, Any]:
    splits, started = [], set()
    totals: dict[str, Any] = {"dialogues": 0.0, "messages": 0.0, "generated_tokens": 0.0, "kept_tokens": 0.0,
                              "wasted_tokens": 0.0, "audio_h": 0.0, "bytes": {}, "wall_s": {}}
    var: dict[str, float] = {}
    unknown = []
    for u in every:
        n_in, origin = input_rows(u, args.hub_timeout_s)
        full = planned_dialogues(u, n_in, args.rows)
        first = measure_stage(stage_dir(root, u.name, "dialogues"), "dialogues")
        sample_n = first["rows"] if first else 0
        entry: dict[str, Any] = {"name": u.name, "kind": u.kind, "input_rows": n_in, "input_rows_from": origin,
                                 "dialogues_planned": full, "sample_dialogues": sample_n, "stages": []}
        splits.append(entry)
        if full is None or not sample_n:
            entry["note"] = "no estimate: " + ("input rows unknown" if full is None else "the sample holds no row")
            unknown.append(u.name)
            continue
        f = full / sample_n
        entry["factor"] = round(f, 4)
        for stage in u.stages:
            ms = first if stage == "dialogues" else measure_stage(stage_dir(root, u.name, stage), stage)
            if ms is None:
                entry["stages"].append({"stage": stage, "note": "not in the sample"})
                unknown.append(f"{u.name}/{stage}")
                continue
            row: dict[str, Any] = {"stage": stage, "sample_rows": ms["rows"]}
            for k, vals in ms["values"].items():
                tot, se = _sum_and_se(vals, f)
                if k == "audio_s":
                    k, tot, se = "audio_h", tot / 3600, None if se is None else se / 3600
                row[k] = round(tot, 3)
                row[f"{k}_se"] = None if se is None else round(se, 3)
            row["bytes"] = round(row["bytes"] + ms["fixed_bytes"], 3)
            # `ssvd run` keeps one pool per stage across splits; the token stage one per kind (get_pool)
            pool = f"tokens/{u.kind}" if stage == "tokens" else stage
            row["wall_s"], row["rate"] = _wall(ms.get("measured"), f, args, started, pool)
            entry["stages"].append(row)
            totals["bytes"][stage] = totals["bytes"].get(stage, 0) + row["bytes"]
            if row["wall_s"] is not None:
                totals["wall_s"][stage] = totals["wall_s"].get(stage, 0.0) + row["wall_s"]
            if stage == "dialogues":
                for k in ("messages", "generated_tokens", "kept_tokens", "wasted_tokens"):
                    totals[k] += row.get(k, 0.0)
                    var[k] = var.get(k, 0.0) + (row.get(f"{k}_se") or 0.0) ** 2
                totals["dialogues"] += row["ok"]
                var["dialogues"] = var.get("dialogues", 0.0) + (row.get("ok_se") or 0.0) ** 2
            if stage == "speech":
                totals["audio_h"] += row.get("audio_h", 0.0)
                var["audio_h"] = var.get("audio_h", 0.0) + (row.get("audio_h_se") or 0.0) ** 2
    totals["wall_s"]["total"] = sum(totals["wall_s"].values())
    totals["bytes"]["total"] = sum(totals["bytes"].values())
    totals["se"] = {k: round(math.sqrt(v), 3) for k, v in var.items()}
    return {
        "manifest": m.name,
        "sample": {"dir": str(root), "ran": ran, "per_split": args.sample if ran else None,
                   "workers": args.sample_workers if ran else None},
        "workers": args.workers,
        "rows_override": args.rows,
        "splits": splits,
        "totals": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in totals.items()},
        "not_estimated": unknown,
        "method": "totals = sample x (planned dialogues / sample dialogues); wall = measured start + work x factor "
                  "x sample workers / workers; *_se: one standard error from the sample's rows",
    }


def _wall(measured: dict | None, factor: float, args: EstimateArgs, started: set, pool: str):
    """(wall seconds of this split's stage at args.workers, the rate it rests on); None when not measured.
    The workers' start is counted for the first split that uses `pool` (later splits share it)."""
    if not measured or not measured.get("rows"):
        return None, None
    work = max(measured["elapsed_s"] - measured.get("startup_s", 0.0), 0.0)
    w = measured.get("workers") or 1
    start = measured.get("startup_s", 0.0) if pool not in started else 0.0
    started.add(pool)
    k = max(args.workers, 1)
    wall = start + work * factor * max(w, 1) / k
    rate = {x: measured.get(x) for x in ("rows", "rows_per_s", "tokens_per_s", "audio_s_per_s", "startup_s",
                                         "workers")}
    return round(wall, 1), rate


def format_estimate(e: dict[str, Any]) -> str:
    def num(x, se=None, fmt="{:,.0f}"):
        if x is None:
            return "?"
        s = fmt.format(x)
        return s + (f" ±{fmt.format(se)}" if se else "")

    lines = [f"estimate of corpus {e['manifest']} at {e['workers']} worker(s) per stage "
             f"(sample: {'ran ' + str(e['sample']['per_split']) + ' per split' if e['sample']['ran'] else 'read'} "
             f"in {e['sample']['dir']})",
             f"{'split':<20}{'stage':<11}{'input rows':>12} {'from':<14}{'rows':>10}{'accepted':>14}{'messages':>14}"
             f"{'gen tokens':>18}{'audio h':>12}{'MB':>10}{'wall':>10}"]
    for s in e["splits"]:
        src = s["input_rows_from"].split(" (")[0][:13]
        if not s["stages"]:
            lines.append(f"{s['name']:<20}{'-':<11}{num(s['input_rows']):>12} {src:<14}  {s.get('note', '')}")
        for r in s["stages"]:
            if "rows" not in r:
                lines.append(f"{s['name']:<20}{r['stage']:<11}{'':>12} {'':<14}  {r.get('note', '')}")
                continue
            lines.append(
                f"{s['name']:<20}{r['stage']:<11}{num(s['input_rows']):>12} {src:<14}{num(r['rows']):>10}"
                f"{num(r['ok'], r.get('ok_se')):>14}{num(r.get('messages'), r.get('messages_se')) if 'messages' in r else '':>14}"
                f"{num(r.get('generated_tokens'), r.get('generated_tokens_se')) if 'generated_tokens' in r else '':>18}"
                f"{num(r.get('audio_h'), r.get('audio_h_se'), '{:,.2f}') if 'audio_h' in r else '':>12}"
                f"{num(r['bytes'] / 1e6, None, '{:,.1f}'):>10}{fmt_duration(r['wall_s']):>10}")
    t = e["totals"]
    se = t.get("se", {})
    lines.append(f"total: {num(t['dialogues'], se.get('dialogues'))} accepted dialogues, "
                 f"{num(t['messages'], se.get('messages'))} messages, tokens generated "
                 f"{num(t['generated_tokens'], se.get('generated_tokens'))} (kept {num(t['kept_tokens'])}, wasted "
                 f"{num(t['wasted_tokens'])}), {num(t['audio_h'], se.get('audio_h'), '{:,.2f}')} audio hours")
    lines.append("disk: " + ", ".join(f"{k} {v / 1e9:,.3f} GB" for k, v in t["bytes"].items()))
    lines.append("wall: " + ", ".join(f"{k} {fmt_duration(v)}" for k, v in t["wall_s"].items())
                 + " (stages one after another, as `ssvd run`)")
    if e["not_estimated"]:
        lines.append(f"not estimated (left out of the totals): {', '.join(e['not_estimated'])}")
    lines.append("± one standard error from the sample's rows; none below 2 rows. " + e["method"])
    return "\n".join(lines)
