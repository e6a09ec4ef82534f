"""ssvd — synthetic spoken visual dialogues (MoshiVis corpus). Run `ssvd --help`."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Regenerate the MoshiVis synthetic spoken visual dialogue corpus: captions -> two-role LLM "
    "dialogues -> speech -> token shards, one stage per command, or a whole manifest (Table 7) with "
    "`ssvd run`; then status, verify, preview, report, and `ssvd train` for the adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prompts_app = typer.Typer(help="Inspect the Appendix F prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

PRODUCTION_MODEL = "mistralai/Mistral-Nemo-Instruct-2407"

Model = Annotated[str, typer.Option("--model", help="Model of both roles: a hub id, a local folder, or builtin:smollm2 / builtin:tiny-mistral / builtin:nemo-shape (offline; the last is 12B random weights for GPU benchmarks).")]
UserModel = Annotated[Optional[str], typer.Option("--user-model", help="Model of the questioning user role (default: --model).")]
AssistantModel = Annotated[Optional[str], typer.Option("--assistant-model", help="Model of the answering assistant role (default: --model).")]
Separate = Annotated[bool, typer.Option("--separate-engines", help="Give each role its own engine even when the models are equal.")]
EngineKind = Annotated[str, typer.Option("--engine", help="vllm (in-process AsyncLLM per worker) or openai (an OpenAI-compatible server).")]
BaseUrl = Annotated[str, typer.Option("--openai-base-url", help="Server of --engine openai; the key is read from $OPENAI_API_KEY.")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Ray dialogue workers (one engine each).")]
Inflight = Annotated[int, typer.Option("--max-inflight", min=1, help="Dialogues in flight per worker.")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Join an existing Ray cluster (default: start a local one).")]
Seed = Annotated[int, typer.Option("--seed", help="Run seed: every dialogue's randomness derives from it.")]
Out = Annotated[Path, typer.Option("--out", help="Output directory (shards, run record).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Discard what --out holds and start over.")]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="Run again the dialogues recorded as failed.")]
MinPairs = Annotated[int, typer.Option("--min-pairs", min=1, help="Fewest question/answer pairs a dialogue plans (paper: 8).")]
MaxPairs = Annotated[int, typer.Option("--max-pairs", min=1, help="Most question/answer pairs a dialogue plans (paper: 16).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Token limit of one message (the released generator's 150); see --on-length.")]
OnLength = Annotated[str, typer.Option("--on-length", help="A message cut by --max-new-tokens: 'trim' it to its last full sentence (default; Kyutai's released generator keeps such messages as cut) or 'reject' it (redrawn, see --redraws).")]
RepPenalty = Annotated[Optional[float], typer.Option("--repetition-penalty", min=0.01, help="vLLM repetition penalty for every message (1.0: none). Default: the model's own, 1.0 (plain sampling, as Kyutai's released generator) for every model but builtin:smollm2 (1.1: without it the 135M model loops and copies earlier turns). Recorded in the run's config.")]
Redraws = Annotated[int, typer.Option("--redraws", min=0, help="A message a filter rejects (empty, repeated, caption leak, over the token limit) is sampled again with a new seed up to N times; each redraw is listed in the row's note. 0: the first bad message ends the dialogue.")]
Temperature = Annotated[float, typer.Option("--temperature", help="Sampling temperature.")]
MaxLen = Annotated[int, typer.Option("--max-model-len", help="Engine context length (0: model default).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show engine and Ray logs.")]


def _setup(verbose: bool) -> None:
    from pipeline.jobs import default_env

    default_env()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _engine_args(model, user_model, assistant_model, separate, engine, base_url, workers, ray_address, max_len,
                 device, verbose):
    from pipeline.engines import EngineOptions
    from pipeline.jobs import EngineArgs

    return EngineArgs(
        user_model=user_model or model,
        assistant_model=assistant_model or model,
        separate_engines=separate,
        engine=EngineOptions(kind=engine, openai_base_url=base_url, max_model_len=max_len, device=device),
        workers=workers,
        ray_address=ray_address,
        verbose=verbose,
    )


def _finish(summary, out: Path) -> None:
    d = summary.to_dict()
    typer.echo(json.dumps(d, sort_keys=True))
    typer.echo(f"wrote {summary.shards_written} shard(s), skipped {summary.shards_skipped} complete; "
               f"ok={d['status'].get('ok', 0)} rejected={d['status'].get('rejected', 0)} "
               f"failed={d['status'].get('failed', 0)} -> {out}", err=True)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def dialogues(
    source: Annotated[str, typer.Option("--source", help="Caption source: pixmo, docci or pixelprose.")],
    instruction: Annotated[str, typer.Option("--instruction", help="COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2 (Appendix F).")],
    input: Annotated[str, typer.Option("--input", help="Hub dataset id[@split] (allenai/pixmo-cap, tomg-group-umd/pixelprose) or local Parquet/JSONL/JSON/CSV file or folder; DOCCI: its release file docci_descriptions.jsonlines (google/docci is a loading script and is refused).")],
    out: Out,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N captions.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Dialogues per caption (different seeds).")] = 1,
    seed: Seed = 0,
    model: Model = PRODUCTION_MODEL,
    user_model: UserModel = None,
    assistant_model: AssistantModel = None,
    separate_engines: Separate = False,
    engine: EngineKind = "vllm",
    openai_base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    workers: Workers = 1,
    max_inflight: Inflight = 256,
    ray_address: RayAddress = None,
    min_pairs: MinPairs = 8,
    max_pairs: MaxPairs = 16,
    comb_pool: Annotated[str, typer.Option("--comb-pool", help="Instructions COMB samples for pairs 2..n, comma-separated.")] = "LOC,PROP,NUM,LEAD1,TS1,TS2",
    split: Annotated[str, typer.Option("--split", help="Hub split to read; DOCCI release file: the `split` value whose rows are used (others are skipped and counted).")] = "train",
    image_root: Annotated[Optional[Path], typer.Option("--image-root", help="DOCCI release: folder the image_file column is relative to (default: images/ next to the file when present).")] = None,
    watermark_classes: Annotated[Optional[str], typer.Option("--watermark-classes", help="PixelProse: keep only these watermark_class_id values, comma-separated (0 watermark, 1 clean, 2 text overlay), e.g. 1. Default: keep all, as Kyutai's released generator.")] = None,
    max_toxicity: Annotated[Optional[float], typer.Option("--max-toxicity", min=0.0, max=1.0, help="PixelProse: reject rows whose highest Detoxify score is above this. Default: no filter, as Kyutai's released generator.")] = None,
    temperature: Temperature = 0.7,
    max_new_tokens: MaxNew = 150,
    on_length: OnLength = "trim",
    redraws: Redraws = 3,
    repetition_penalty: RepPenalty = None,
    max_model_len: MaxLen = 0,
    device: Device = "auto",
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Generate two-role text dialogues about image captions with one of the paper's instructions."""
    from pipeline import jobs
    from pipeline.types import INSTRUCTIONS, SOURCES

    _setup(verbose)
    instruction = instruction.upper()
    if instruction not in INSTRUCTIONS:
        _fail(ValueError(f"unknown --instruction {instruction!r}; valid: {' '.join(INSTRUCTIONS)}"))
    if source not in SOURCES:
        _fail(ValueError(f"unknown --source {source!r}; valid: {' '.join(SOURCES)}"))
    pool = tuple(p.strip().upper() for p in comb_pool.split(",") if p.strip())
    bad = [p for p in pool if p not in INSTRUCTIONS or p == "COMB"]
    if bad or not pool:
        _fail(ValueError(f"--comb-pool has {bad or 'nothing'}; choose from {' '.join(INSTRUCTIONS[1:])}"))
    copts = _caption_options(split, image_root, watermark_classes, max_toxicity)
    dcfg = _dialogue_config(min_pairs, max_pairs, temperature, max_new_tokens, pool, on_length, redraws, repetition_penalty)
    args = _engine_args(model, user_model, assistant_model, separate_engines, engine, openai_base_url, workers,
                        ray_address, max_model_len, device, verbose)
    try:
        summary = jobs.dialogues(source, instruction, input, out, limit=limit, replicas=replicas, seed=seed,
                                 args=args, dcfg=dcfg, opts=_run_options(overwrite, retry_failed, max_inflight, no_progress),
                                 caption_options=copts)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _finish(summary, out)


@app.command()
def generic(
    out: Out,
    topics: Annotated[Optional[Path], typer.Option("--topics", help="Text file, one topic per line (default: the shipped list).")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Number of dialogues.")] = 100,
    seed: Seed = 0,
    model: Model = PRODUCTION_MODEL,
    user_model: UserModel = None,
    assistant_model: AssistantModel = None,
    separate_engines: Separate = False,
    engine: EngineKind = "vllm",
    openai_base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    workers: Workers = 1,
    max_inflight: Inflight = 256,
    ray_address: RayAddress = None,
    min_pairs: MinPairs = 8,
    max_pairs: MaxPairs = 16,
    temperature: Temperature = 0.7,
    max_new_tokens: MaxNew = 150,
    on_length: OnLength = "trim",
    redraws: Redraws = 3,
    repetition_penalty: RepPenalty = None,
    max_model_len: MaxLen = 0,
    device: Device = "auto",
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Generate generic (no image) dialogues about everyday topics, for the concatenation augmentation."""
    from pipeline import jobs

    _setup(verbose)
    topic_list = None
    if topics is not None:
        if not topics.is_file():
            _fail(FileNotFoundError(f"--topics {topics}: no such file (one topic per line)"))
        topic_list = [t.strip() for t in topics.read_text().splitlines() if t.strip()]
        if not topic_list:
            _fail(ValueError(f"--topics {topics}: no topics in it (one topic per line)"))
    dcfg = _dialogue_config(min_pairs, max_pairs, temperature, max_new_tokens, None, on_length, redraws, repetition_penalty)
    args = _engine_args(model, user_model, assistant_model, separate_engines, engine, openai_base_url, workers,
                        ray_address, max_model_len, device, verbose)
    try:
        summary = jobs.generic(out, count=count, topics=topic_list, seed=seed, args=args, dcfg=dcfg,
                               opts=_run_options(overwrite, retry_failed, max_inflight, no_progress))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _finish(summary, out)


def _caption_options(split, image_root, watermark_classes, max_toxicity):
    from pipeline.captions import CaptionOptions

    classes = None
    if watermark_classes is not None:
        try:
            classes = tuple(sorted({int(x) for x in watermark_classes.split(",") if x.strip()}))
        except ValueError:
            _fail(ValueError(f"--watermark-classes {watermark_classes!r}: write class ids, comma-separated, "
                             "from 0 (watermark), 1 (clean), 2 (text overlay), e.g. 1"))
    try:
        return CaptionOptions(split=split, image_root=str(image_root) if image_root else None,
                              watermark_classes=classes, max_toxicity=max_toxicity)
    except ValueError as e:
        _fail(e)


def _dialogue_config(min_pairs, max_pairs, temperature, max_new_tokens, pool, on_length, redraws, repetition_penalty):
    from pipeline.dialogues import DialogueConfig

    if min_pairs > max_pairs:
        _fail(ValueError(f"--min-pairs {min_pairs} is above --max-pairs {max_pairs}"))
    if on_length not in ("trim", "reject"):
        _fail(ValueError(f"--on-length {on_length!r}: choose trim or reject"))
    kw = dict(min_pairs=min_pairs, max_pairs=max_pairs, min_accepted_pairs=min_pairs, temperature=temperature,
              max_new_tokens=max_new_tokens, on_length=on_length, redraws=redraws,
              repetition_penalty=repetition_penalty)
    if pool:
        kw["comb_pool"] = pool
    return DialogueConfig(**kw)


def _run_options(overwrite, retry_failed, max_inflight, no_progress, chunk_size=8, flush_rows=64):
    """Tuning from the environment: SSVD_CHUNK_SIZE (items per worker call), SSVD_FLUSH_ROWS (rows per part file)."""
    import os

    from pipeline.runner import RunOptions

    return RunOptions(overwrite=overwrite, retry_failed=retry_failed, max_inflight=max_inflight,
                      progress=not no_progress, chunk_size=int(os.environ.get("SSVD_CHUNK_SIZE", chunk_size)),
                      flush_rows=int(os.environ.get("SSVD_FLUSH_ROWS", flush_rows)))


StageIn = Annotated[Path, typer.Option("--in", help="Output directory of the previous stage.")]
StageWorkers = Annotated[int, typer.Option("--workers", min=0, help="Ray workers (one CPU each); 0 runs in-process without Ray.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N accepted input rows.")]
Split = Annotated[Optional[str], typer.Option("--split", help="Split name written in every row (default: SOURCE-INSTRUCTION, e.g. pixmo-comb).")]


def _pool_args(workers, ray_address, device, verbose):
    from pipeline.audio_jobs import pool_args

    return pool_args(workers, ray_address, device, verbose)


@app.command()
def speech(
    input: StageIn,
    out: Out,
    assistant_voice: Annotated[str, typer.Option("--assistant-voice", help="The one assistant voice of the corpus, BACKEND:VOICE (piper:joe offline; kyutai:VOICE, any voice of the kyutai voice repository, e.g. kyutai:vctk/p226_023.wav).")] = "piper:joe",
    user_voice: Annotated[Optional[list[str]], typer.Option("--user-voice", help="A user voice BACKEND:VOICE; repeat for a pool (default: 12 eSpeak NG variants). One is drawn per dialogue from its seed.")] = None,
    gap_s: Annotated[tuple[float, float], typer.Option("--gap-s", help="Range of the silence between turns, seconds.")] = (0.2, 0.8),
    overlap_prob: Annotated[float, typer.Option("--overlap-prob", min=0.0, max=1.0, help="Chance that a turn starts before the previous one ends.")] = 0.0,
    max_overlap_s: Annotated[float, typer.Option("--max-overlap-s", min=0.0, help="Longest such overlap, seconds.")] = 0.25,
    limit: Limit = None,
    split: Split = None,
    workers: StageWorkers = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (kyutai backend; cpu is slow with the real model).")] = "cpu",
    kyutai_model: Annotated[Optional[str], typer.Option("--kyutai-model", help="Kyutai TTS: hub repo (default kyutai/tts-1.6b-en_fr) or builtin:kyutai-tiny (random weights, offline, for tests and smoke runs).")] = None,
    kyutai_cfg_coef: Annotated[Optional[float], typer.Option("--kyutai-cfg-coef", help="Kyutai TTS CFG coefficient (default 2.0; kyutai/tts-1.6b-en_fr takes 1.0, 1.5, ..., 4.0).")] = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Speak accepted dialogues: TTS per turn, user on one channel and assistant on the other (24 kHz FLAC)."""
    from pipeline import audio_jobs
    from pipeline.speech_worker import SpeechSpec, TimelineConfig, kyutai_options
    from tts.voices import DEFAULT_USERS, VoiceConfig

    _setup(verbose)
    try:
        voices = VoiceConfig(assistant_voice, tuple(user_voice or DEFAULT_USERS))
        if gap_s[0] > gap_s[1] or gap_s[0] < 0:
            raise ValueError(f"--gap-s {gap_s[0]} {gap_s[1]}: give MIN MAX with 0 <= MIN <= MAX")
        if (kyutai_model or kyutai_cfg_coef is not None) and "kyutai" not in voices.backends():
            raise ValueError("--kyutai-model/--kyutai-cfg-coef: no voice is kyutai:...; give kyutai voices or drop them")
        backend_opts = kyutai_options(voices, device, kyutai_model, kyutai_cfg_coef)
        spec = SpeechSpec(voices, TimelineConfig(tuple(gap_s), overlap_prob, max_overlap_s), backend_opts, split)
        summary = audio_jobs.speech(input, out, spec, limit=limit, pool_args=_pool_args(workers, ray_address, device, verbose),
                                    opts=_run_options(overwrite, retry_failed, 8, no_progress, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _finish(summary, out)


@app.command()
def tokens(
    input: StageIn,
    out: Out,
    kind: Annotated[Optional[str], typer.Option("--kind", help="speech (Mimi codes + padded text stream; needs speech shards) or text (plain transcript tokens). Default: speech for speech input, text for dialogues.")] = None,
    codec: Annotated[str, typer.Option("--codec", help="Mimi weights: kyutai/mimi, a local transformers folder, random[:SEED] (offline, seeded random weights), or builtin:kyutai-tiny (the Mimi of the tiny Kyutai TTS). Speech rows whose TTS codes came from the same Mimi keep them.")] = "random",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Text SentencePiece model: a path (production: Moshi's tokenizer_spm_32k_3.model) or a hub repo holding it. Default: mistral-common's 32k model, recorded as a stand-in.")] = None,
    delay_s: Annotated[float, typer.Option("--delay-s", help="Put the text this many seconds ahead of the audio (moshi-finetune's audio_delay); negative zero-fills the first frames.")] = 0.0,
    bos_id: Annotated[Optional[int], typer.Option("--bos-id", help="Token marking the start of each assistant turn (default: none).")] = None,
    eos_id: Annotated[Optional[int], typer.Option("--eos-id", help="Token marking the end of each assistant turn (default: none).")] = None,
    keep_and_shift: Annotated[bool, typer.Option("--keep-and-shift", help="Keep a word's unfinished tokens when the next word starts, shifting it (default: replace them, as Moshi).")] = False,
    limit: Limit = None,
    split: Split = None,
    workers: StageWorkers = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda for the codec.")] = "cpu",
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Turn speech shards into Mimi-code + text-stream token shards (or dialogues into text-only rows)."""
    from pipeline import audio_jobs
    from pipeline.stage_input import open_stage_input
    from pipeline.token_worker import StreamOptions, TokenSpec

    _setup(verbose)
    try:
        if kind is None:
            kind = "speech" if open_stage_input(input, ("speech", "dialogues")).stage == "speech" else "text"
        stream = StreamOptions(bos_id=bos_id, eos_id=eos_id, delay_s=delay_s, keep_and_shift=keep_and_shift)
        spec = TokenSpec(kind=kind, codec=codec, device=device, tokenizer=tokenizer, stream=stream, split=split)
        summary = audio_jobs.tokens(input, out, spec, limit=limit, pool_args=_pool_args(workers, ray_address, device, verbose),
                                    opts=_run_options(overwrite, retry_failed, 8, no_progress, chunk_size=4, flush_rows=8))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _finish(summary, out)


# --- images (pipeline/images/cli.py holds the command) ---
from pipeline.images.cli import AllowAddress as _ImageAllow, Mirror as _ImageMirror  # noqa: E402
from pipeline.images.cli import images as _images_command  # noqa: E402

app.command("images")(_images_command)


@app.command()
def export(
    input: Annotated[Path, typer.Option("--in", help="A speech or tokens output directory.")],
    out: Out,
    format: Annotated[str, typer.Option("--format", help="moshi-finetune: stereo wav (left assistant, right user) + alignment json + jsonl index.")] = "moshi-finetune",
    codec: Annotated[Optional[str], typer.Option("--codec", help="For tokens input: the codec to decode with (default: the one recorded in the shards).")] = None,
    limit: Limit = None,
    no_progress: NoProgress = False,
) -> None:
    """Export speech (or decoded token) shards in another trainer's format."""
    from pipeline.export import export_moshi_finetune

    if format != "moshi-finetune":
        _fail(ValueError(f"--format {format!r}: only moshi-finetune is supported"))
    try:
        n = export_moshi_finetune(input, out, limit=limit, codec=codec, progress=not no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    typer.echo(json.dumps({"exported": n, "out": str(out), "index": str(Path(out) / "index.jsonl")}))


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="A dialogues, speech or tokens output directory (or a dialogue shard file).")],
    id: Annotated[Optional[str], typer.Option("--id", help="Show only this record.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only records with this status: ok, rejected, failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (0: all).")] = 5,
) -> None:
    """Print dialogues as readable transcripts; speech rows with turn times; token rows with their text stream."""
    from pipeline import sample_view
    from pipeline.shards import iter_rows
    from pipeline.stage_input import StageInputError, open_stage_input
    from pipeline.transcript import dialogue_files, format_dialogue

    rows, fmt = None, format_dialogue
    if path.is_dir():
        try:
            inp = open_stage_input(path, ("dialogues", "speech", "tokens"))
        except StageInputError as e:
            _fail(e)
        if inp.stage != "dialogues":
            rows = (r for _, f in inp.shards for r in iter_rows(f, batch_rows=8))
            fmt = sample_view.formatter(inp.stage)
    if rows is None:
        if not dialogue_files(path):
            _fail(FileNotFoundError(f"{path}: no dialogue shards there"))
        rows = (r for f in dialogue_files(path) for r in iter_rows(f))
    shown = 0
    for r in rows:
        if (id and r["id"] != id) or (status and r["status"] != status):
            continue
        typer.echo(fmt(r) + "\n")
        shown += 1
        if limit and shown >= limit and not id:
            break
    if id and not shown:
        _fail(KeyError(f"no record with id {id} in {path}"))


CorpusDir = Annotated[Path, typer.Argument(help="A corpus directory made by `ssvd run`.")]


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="Corpus manifest YAML (manifests/moshivis.yaml is Table 7; manifests/quickstart.yaml runs on CPU).")],
    out: Annotated[Path, typer.Option("--out", help="Corpus directory: one folder per split, manifest.json, README.md.")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this split (repeat for several; 'generic' for the generic set).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="At most N captions (benchmark rows, generic dialogues) per split; part of the corpus config.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Ray workers per stage (one engine each for dialogues); 0 runs speech/tokens in-process.")] = 1,
    ray_address: RayAddress = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (engines, TTS, codec).")] = "auto",
    allow_address: _ImageAllow = None,
    image_mirror: _ImageMirror = None,
    no_progress: NoProgress = False,
    verbose: Verbose = False,
) -> None:
    """Build every split of a manifest (dialogues -> images of caption splits -> speech -> tokens, or text rows), resumable, with manifest.json provenance."""
    from pipeline.corpus.run import CorpusBusy, CorpusMismatch, RunArgs, run_corpus
    from pipeline.disk_space import DiskFull
    from pipeline.manifest import ManifestError

    _setup(verbose)
    try:
        from pipeline.images.cli import options as image_options

        result = run_corpus(manifest, out, RunArgs(only=only, limit=limit, workers=workers, ray_address=ray_address,
                                                   device=device, progress=not no_progress, verbose=verbose,
                                                   images=image_options(allow=allow_address, mirror=image_mirror)))
    except (ManifestError, CorpusMismatch, CorpusBusy, DiskFull, ValueError, FileNotFoundError) as e:
        _fail(e)
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


@app.command()
def status(
    corpus: CorpusDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Per split and stage: done, running, interrupted or pending; rows ok/rejected/failed; left; the measured rate of its latest run and the ETA of what is left."""
    from pipeline.corpus.status import corpus_status, format_status

    try:
        st = corpus_status(corpus)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(json.dumps(st, indent=2) if as_json else format_status(st))


@app.command()
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
    from pipeline.manifest import ManifestError

    _setup(verbose)
    try:
        e = run_estimate(manifest, EstimateArgs(sample=sample, workers=workers, sample_workers=sample_workers, rows=rows,
                                                sample_dir=out, from_corpus=from_corpus, device=device,
                                                ray_address=ray_address, progress=not no_progress, verbose=verbose))
    except (ManifestError, CorpusMismatch, CorpusBusy, ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(err)
    typer.echo(format_estimate(e), err=True)
    typer.echo(json.dumps(e))


@app.command()
def verify(corpus: CorpusDir) -> None:
    """Recompute every shard's sha256 and row count and check its schema against manifest.json; exit 1 naming every bad shard. Also says whether the corpus is complete or partial (and which splits are not done)."""
    from pipeline.corpus.verify import completeness, verify_corpus

    try:
        problems, checked = verify_corpus(corpus)
        state, unfinished = completeness(corpus)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    for p in problems:
        typer.secho(f"BAD {p}", fg="red", err=True)
    if unfinished:
        typer.echo(f"the corpus is {state}: not complete: {', '.join(unfinished)} (the shards it lists were "
                   "checked; rerun `ssvd run` with the same manifest to finish it)", err=True)
    typer.echo(json.dumps({"shards_checked": checked, "bad": len(problems), "ok": not problems, "state": state}))
    if problems:
        raise typer.Exit(1)


@app.command()
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
        _fail(e)
    typer.echo(json.dumps(info, default=str))


@app.command()
def report(
    corpus: CorpusDir,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: CORPUS/report).")] = None,
) -> None:
    """Quality report (index.html + PNG plots): pairs, lengths, durations, rejections, instruction mix, voices, token shares vs weights."""
    from pipeline.corpus.report import write_report

    try:
        info = write_report(corpus, out)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(json.dumps(info["paths"], default=str))


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config YAML: model, data and train sections (manifests/train-quickstart.yaml runs on CPU).")],
    data: Annotated[Path, typer.Option("--data", help="A corpus directory made by `ssvd run` (reads DIR/<split>/tokens, weights from manifest.json).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: metrics.jsonl, config.json, checkpoints/ (adapters only + optimizer and loader state).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out (same config); with none there, start fresh.")] = False,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", min=1, help="Stop after this many steps in total, with a checkpoint (the schedule stays that of train.steps); --resume continues.")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Train the MoshiVis adapters (gated cross-attention on a frozen Moshi and SigLIP) on a corpus. Multi-GPU: torchrun --nproc-per-node N -m cli train ..."""
    from trainer.config import TrainConfigError, load_train_config
    from trainer.loop import train as run_training

    _setup(False)
    try:
        cfg = load_train_config(config)
        summary = run_training(cfg, data, out, resume=resume, progress=not no_progress, stop_after=stop_after)
    except (TrainConfigError, ValueError, FileNotFoundError) as e:
        _fail(e)
    if summary["rank"] == 0:  # under torchrun: one summary (rank 0's losses), not one per process
        typer.echo(json.dumps(summary, default=str))


@app.command("export-adapters")
def export_adapters(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `ssvd train` (its newest checkpoint is exported).")],
    out: Annotated[Path, typer.Option("--out", help="The .safetensors file to write (bf16, the full bundle).")],
    fmt: Annotated[str, typer.Option("--format", help="kyuteye: the layout Kyutai's PyTorch MoshiVis loads.")] = "kyuteye",
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="The Moshi the adapters go with: a transformers id/path (default: the run's model.backbone) or Kyutai's moshi model.safetensors.")] = None,
) -> None:
    """Export trained adapters with their backbone and SigLIP as one checkpoint Kyutai's MoshiVis loads (docs/trainer.md)."""
    from trainer.export_kyuteye import export_adapters as run_export

    _setup(False)
    try:
        typer.echo(json.dumps(run_export(run_dir, out, backbone=backbone, fmt=fmt), default=str))
    except (ValueError, FileNotFoundError, OSError) as e:
        _fail(e)


@prompts_app.command("show")
def prompts_show(
    instruction: Annotated[str, typer.Argument(help="COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2 or GENERIC.")],
    role: Annotated[str, typer.Option("--role", help="user or assistant.")] = "user",
    caption: Annotated[str, typer.Option("--caption", help="The image caption (data, never template source).")] = "",
    topic: Annotated[Optional[str], typer.Option("--topic", help="Topic of a GENERIC dialogue.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of COMB's random choices.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"system": ..., "forced_start": ...}.')] = False,
) -> None:
    """Render the system prompt (and forced start) one role sees."""
    import random

    import prompts

    try:
        options = prompts.sample_options(instruction.upper(), random.Random(seed))
        p = prompts.render(instruction.upper(), role, caption, options, topic=topic)
    except ValueError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps({"system": p.system, "forced_start": p.forced_start}, ensure_ascii=False))
    else:
        typer.echo(f"--- system ---\n{p.system}")
        if p.forced_start is not None:
            typer.echo(f"--- forced start ---\n{p.forced_start}")


if __name__ == "__main__":
    app()
