"""`ssvd run`, `status`, `estimate`, `verify`, `preview` and `report`: the commands' options and bodies
(registered in cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.core.cli_options import (CorpusDir, GpuMemory, MaxSeqs, NoProgress, RayAddress, TensorParallel, Verbose,
                                       fail, setup)
from pipeline.images.cli import AllowAddress, Mirror, options as image_options


def run(
    manifest: Annotated[Path, typer.Argument(help="Corpus manifest YAML (manifests/moshivis.yaml is Table 7; manifests/quickstart.yaml runs on CPU).")],
    out: Annotated[Path, typer.Option("--out", help="Corpus directory: one folder per split, manifest.json, README.md.")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this split (repeat for several; 'generic' for the generic set).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="At most N captions (benchmark rows, generic dialogues) per split; part of the corpus config.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Ray workers per stage (one engine each for dialogues); 0 runs speech/tokens in-process.")] = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (engines, TTS, codec).")] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=1, help="Engine context length (default: the manifest's models.dialogue.max_model_len, else one full dialogue's: docs/gpu.md).")] = None,
    gpu_memory_utilization: GpuMemory = None,
    tensor_parallel_size: TensorParallel = None,
    max_num_seqs: MaxSeqs = None,
    allow_address: AllowAddress = None,
    image_mirror: Mirror = None,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Build every split of a manifest (dialogues -> images of caption splits -> speech -> tokens, or text rows), resumable, with manifest.json provenance."""
    from pipeline.corpus.run import CorpusBusy, CorpusMismatch, RunArgs, run_corpus
    from pipeline.core.disk_space import DiskFull
    from pipeline.core.ray_pool import WorkerStartError
    from pipeline.dialogue.engine_api import EngineRefused
    from pipeline.manifest.spec import ManifestError

    setup(verbose)
    try:
        result = run_corpus(manifest, out, RunArgs(only=only, limit=limit, workers=workers, ray_address=ray_address,
                                                   device=device, progress=not no_progress, verbose=verbose,
                                                   images=image_options(allow=allow_address, mirror=image_mirror),
                                                   max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                                                   tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs))
    except (ManifestError, CorpusMismatch, CorpusBusy, DiskFull, WorkerStartError, EngineRefused, ValueError, FileNotFoundError) as e:
        fail(e)
    for s in result.steps:
        d = s.get("summary") or {}
        st = d.get("status", {})
        line = f"{s['split']:<20} {s['stage']:<10} {s['outcome']:<8}"
        if s["outcome"] == "done":
            line += f" ok={st.get('ok', 0)} rejected={st.get('rejected', 0)} failed={st.get('failed', 0)}"
        else:
            line += f" {s.get('error', '')}"
        typer.echo(line, err=True)
    typer.echo(json.dumps({"out": str(out), "ok": result.ok, "manifest": str(out / "manifest.json"),
                           "steps": len(result.steps)}))
    if not result.ok:
        raise typer.Exit(1)


def plan(
    manifest: Annotated[Path, typer.Argument(help="Corpus manifest YAML (as for `ssvd run`).")],
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Described cluster: nodes.")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=0, help="Described cluster: GPUs per node (0: CPU only).")] = 0,
    gpu_memory_gib: Annotated[Optional[float], typer.Option("--gpu-memory-gib", min=0.0, help="Memory of one GPU in GiB (e.g. 80 for H100-80GB; 40 for A100-40GB); needed for --ray-address too.")] = None,
    cpus_per_node: Annotated[float, typer.Option("--cpus-per-node", min=1, help="Described cluster: CPUs per node.")] = 16,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Plan for this live Ray cluster instead (its alive nodes' CPUs and GPUs); starts no worker.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="As `ssvd run --workers`.")] = 1,
    device: Annotated[str, typer.Option("--device", help="As `ssvd run --device`: auto, cpu or cuda.")] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=1, help="As `ssvd run --max-model-len`.")] = None,
    gpu_memory_utilization: GpuMemory = None,
    tensor_parallel_size: TensorParallel = None,
    separate_engines: Annotated[bool, typer.Option("--separate-engines", help="Plan two engines per worker even for one model.")] = False,
    model_config: Annotated[Optional[list[str]], typer.Option("--model-config", help="MODEL=PATH: size MODEL's engine with this config.json (a hub model not in the local Hugging Face cache). Repeatable.")] = None,
) -> None:
    """Without starting anything: the pools `ssvd run` would start on a cluster (workers, GPUs/CPUs each, nodes, engines per GPU, max_model_len, KV-cache tokens and dialogues at once per engine, TTS and codec devices); exit 2 naming what cannot run."""
    from pipeline.corpus.pools import described, format_plan, live, plan as make_plan, read_model_configs
    from pipeline.manifest.load import load_manifest
    from pipeline.manifest.spec import ManifestError

    setup(False)
    if device not in ("auto", "cpu", "cuda"):
        fail(ValueError(f"--device {device!r}: choose auto, cpu or cuda"))
    try:
        m = load_manifest(manifest)
        cluster = live(ray_address, gpu_memory_gib) if ray_address else \
            described(nodes, gpus_per_node, gpu_memory_gib or 0.0, cpus_per_node)
        p = make_plan(m, cluster, workers=workers, device=device, separate_engines=separate_engines,
                      model_configs=read_model_configs(model_config),
                      sizing={"max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
                              "tensor_parallel_size": tensor_parallel_size})
    except (ManifestError, ValueError, FileNotFoundError, RuntimeError) as e:
        fail(e)
    typer.echo(format_plan(p), err=True)
    typer.echo(json.dumps(p))
    if not p["ok"]:
        raise typer.Exit(2)


def status(
    corpus: CorpusDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Per split and stage: done, running, interrupted or pending; rows ok/rejected/failed; left; the measured rate of its latest run and the ETA of what is left."""
    from pipeline.corpus.status import corpus_status, format_status

    try:
        st = corpus_status(corpus)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(json.dumps(st, indent=2) if as_json else format_status(st))


def estimate(
    manifest: Annotated[Path, typer.Argument(help="Corpus manifest YAML to estimate (as for `ssvd run`).")],
    sample: Annotated[int, typer.Option("--sample", min=1, help="Inputs per split to run and measure (`ssvd run --limit N`).")] = 4,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Workers per stage to estimate the wall time for (time scales as 1/K).")] = 1,
    sample_workers: Annotated[int, typer.Option("--sample-workers", min=0, help="Workers the sample runs with (as `ssvd run --workers`).")] = 1,
    rows: Annotated[Optional[int], typer.Option("--rows", min=1, help="Extrapolate to this many input rows per split (default: all the inputs, the manifest's limits applied).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Keep the sample corpus here (default: a temporary directory; an existing sample resumes).")] = None,
    from_corpus: Annotated[Optional[Path], typer.Option("--from", help="Run nothing: read this existing (partial) corpus of the manifest as the sample.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    ray_address: RayAddress = None,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Before a launch: dialogues, messages, tokens, audio hours, bytes and wall time per stage of the whole manifest, extrapolated from a measured sample (table on stderr, JSON on stdout)."""
    from pipeline.corpus.estimate import EstimateArgs, estimate as run_estimate, format_estimate
    from pipeline.corpus.run import CorpusBusy, CorpusMismatch
    from pipeline.manifest.spec import ManifestError

    setup(verbose)
    try:
        e = run_estimate(manifest, EstimateArgs(sample=sample, workers=workers, sample_workers=sample_workers, rows=rows,
                                                sample_dir=out, from_corpus=from_corpus, device=device,
                                                ray_address=ray_address, progress=not no_progress, verbose=verbose))
    except (ManifestError, CorpusMismatch, CorpusBusy, ValueError, FileNotFoundError, RuntimeError) as err:
        fail(err)
    typer.echo(format_estimate(e), err=True)
    typer.echo(json.dumps(e))


def verify(corpus: CorpusDir) -> None:
    """Recompute every shard's sha256 and row count and check its schema against manifest.json; exit 1 naming every bad shard. Also says whether the corpus is complete or partial (and which splits are not done)."""
    from pipeline.corpus.verify import completeness, verify_corpus

    try:
        problems, checked = verify_corpus(corpus)
        state, unfinished = completeness(corpus)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    for p in problems:
        typer.secho(f"BAD {p}", fg="red", err=True)
    if unfinished:
        typer.echo(f"the corpus is {state}: not complete: {', '.join(unfinished)} (the shards it lists were "
                   "checked; rerun `ssvd run` with the same manifest to finish it)", err=True)
    typer.echo(json.dumps({"shards_checked": checked, "bad": len(problems), "ok": not problems, "state": state}))
    if problems:
        raise typer.Exit(1)


def preview(
    corpus: CorpusDir,
    out: Annotated[Path, typer.Option("--out", help="The HTML page to write (self-contained: audio and images embedded).")],
    per_split: Annotated[int, typer.Option("--per-split", min=1, help="Samples per split.")] = 2,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Only this split (repeatable).")] = None,
) -> None:
    """One static page: per split the image, transcript with per-word timing following the audio, voices, text rows."""
    from pipeline.corpus.preview import write_preview

    try:
        info = write_preview(corpus, out, per_split=per_split, splits=only)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(json.dumps(info, default=str))


def report(
    corpus: CorpusDir,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: CORPUS/report).")] = None,
) -> None:
    """Quality report (index.html + PNG plots): pairs, lengths, durations, rejections, instruction mix, voices, token shares vs weights."""
    from pipeline.corpus.report import write_report

    try:
        info = write_report(corpus, out)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(json.dumps(info["paths"], default=str))
