"""Where a Kyutai DSM TTS model and its voices come from, checked before any model is loaded.

`resolve_source` names the hub repositories (or `builtin:kyutai-tiny`'s local hub-layout cache, read
offline through `hub`); `check_setup` reads the model's config.json, checks `cfg_coef` against the values
the model was trained with and resolves every voice to its embedding file (the lookup of moshi's
`TTSModel.get_voice_path`: a voice of the voice repository named as in `kyutai/tts-voices`, an
`hf://` path, or a local `.safetensors`), with each file's sha256 for the provenance. The backend
itself (loading, generation, spans) is tts.kyutai_backend.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.shards import sha256_file
from tts.backend import SpeechBackendUnavailable

DEFAULT_REPO = "kyutai/tts-1.6b-en_fr"
DEFAULT_VOICE_REPO = "kyutai/tts-voices"
TINY = "builtin:kyutai-tiny"
# Examples from kyutai/tts-voices; any voice of that repository (or a local .safetensors) works.
DEFAULT_VOICES: tuple[str, ...] = (
    "expresso/ex03-ex01_happy_001_channel1_334s.wav",
    "expresso/ex01-ex02_default_001_channel2_198s.wav",
    "expresso/ex04-ex03_default_002_channel2_239s.wav",
    "vctk/p225_023.wav",
    "vctk/p244_023.wav",
    "vctk/p262_023.wav",
    "vctk/p303_023.wav",
)
FIX = "run `make install` (installs moshi==0.2.13 with --no-deps and sphn), or: pip install --no-deps moshi==0.2.13 sphn"
KYUTAI_MIMI = "kyutai/mimi"  # transformers' name of the Mimi weights Kyutai's models ship (MIMI_NAME below)
_KYUTAI_MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
_HUB_LOCK = threading.RLock()


def _require(device: str) -> None:
    """Raise SpeechBackendUnavailable, naming the fix, when moshi is missing or the device cannot run."""
    problems = []
    try:
        import moshi.models.tts  # noqa: F401
    except ImportError as e:
        problems.append(f"the moshi package is not importable ({e}); fix: {FIX}")
    if device.startswith("cuda"):
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
        if not cuda:
            problems.append(f"device {device!r}: no CUDA GPU is visible; use --device cpu (slow with the real "
                            f"model; fast with {TINY})")
    elif device != "cpu":
        problems.append(f"device {device!r}: use cuda, cuda:N or cpu")
    if problems:
        raise SpeechBackendUnavailable(f"kyutai speech backend unavailable: {'; '.join(problems)}")


@dataclass(frozen=True)
class KyutaiSource:
    """Where a model and its voices come from: hub repositories, read from `hub_dir` (offline) when set."""

    name: str  # as given: a hub repo or builtin:kyutai-tiny
    repo: str
    voice_repo: str
    hub_dir: Path | None = None
    fingerprint: str | None = None  # of a builtin model folder


def resolve_source(hf_repo: str = DEFAULT_REPO, voice_repo: str | None = None) -> KyutaiSource:
    if hf_repo == TINY:
        from tts.kyutai_tiny import resolve_kyutai_tiny

        tiny = resolve_kyutai_tiny()
        if voice_repo not in (None, tiny.voice_repo):
            raise ValueError(f"{TINY} has its own voice repository ({tiny.voice_repo}); do not set voice_repo")
        return KyutaiSource(TINY, tiny.repo, tiny.voice_repo, tiny.hub_dir, tiny.fingerprint)
    if hf_repo.startswith("builtin:"):
        raise ValueError(f"kyutai model {hf_repo!r}: the only builtin is {TINY}")
    return KyutaiSource(hf_repo, hf_repo, voice_repo or DEFAULT_VOICE_REPO)


@contextlib.contextmanager
def hub(source: KyutaiSource):
    """Run the hub code against `source.hub_dir`, offline, like HF_HUB_CACHE=<hub_dir> HF_HUB_OFFLINE=1."""
    if source.hub_dir is None:
        yield
        return
    from huggingface_hub import constants

    with _HUB_LOCK:
        old = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(source.hub_dir), True
        try:
            yield
        finally:
            constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = old


@dataclass(frozen=True)
class KyutaiSetup:
    """What `check_setup` found: the model's config, the accepted cfg values, each voice's file and hash."""

    source: KyutaiSource
    config: dict
    valid_cfg: tuple[float, ...]  # empty: the model takes a direct CFG coefficient (any value >= 1)
    voice_files: dict[str, Path]
    voice_sha256: dict[str, str]

    @property
    def codec_name(self) -> str:
        if self.source.name == TINY:
            return TINY
        return KYUTAI_MIMI if self.config.get("mimi_name", _KYUTAI_MIMI_FILE) == _KYUTAI_MIMI_FILE \
            else f"moshi:{self.source.repo}"


def check_setup(hf_repo: str = DEFAULT_REPO, voice_repo: str | None = None,
                voices: tuple[str, ...] | list[str] = DEFAULT_VOICES, cfg_coef: float = 2.0) -> KyutaiSetup:
    """Check, without loading the model, that `cfg_coef` is one the model takes and that every voice file
    exists (fetched into the hub cache when online); ValueError naming the valid values otherwise."""
    from huggingface_hub import hf_hub_download

    source = resolve_source(hf_repo, voice_repo)
    with hub(source):
        try:
            config = json.loads(Path(hf_hub_download(source.repo, "config.json")).read_text())
        except Exception as e:
            raise ValueError(f"kyutai model {hf_repo!r}: cannot read config.json of {source.repo} "
                             f"({type(e).__name__}: {str(e)[:300]}); offline, use {TINY}") from e
        cfg_cond = (config.get("conditioners") or {}).get("cfg")
        valid = tuple(sorted(float(v) for v in cfg_cond["lut"]["possible_values"])) if cfg_cond else ()
        if not isinstance(cfg_coef, (int, float)) or isinstance(cfg_coef, bool):
            raise ValueError(f"kyutai cfg_coef {cfg_coef!r}: give a number")
        if valid and float(cfg_coef) not in valid:
            raise ValueError(f"kyutai cfg_coef {cfg_coef}: {hf_repo} was trained with CFG distillation and takes "
                             f"only {', '.join(str(v) for v in valid)}")
        if not valid and cfg_coef < 1.0:
            raise ValueError(f"kyutai cfg_coef {cfg_coef}: give a value >= 1.0 (1.0 disables CFG)")
        model_id = config.get("model_id") or {}
        suffix = f".{model_id['sig']}@{model_id['epoch']}.safetensors" if "sig" in model_id else ".safetensors"
        files: dict[str, Path] = {}
        for v in dict.fromkeys(voices):
            files[v] = _voice_file(source, v, suffix)
    return KyutaiSetup(source, config, valid, files, {v: sha256_file(p) for v, p in files.items()})


def _voice_file(source: KyutaiSource, voice: str, suffix: str) -> Path:
    """The embedding file of `voice` (the lookup of `TTSModel.get_voice_path`), or ValueError saying how to find names."""
    from huggingface_hub import hf_hub_download

    if voice.endswith(".safetensors"):
        p = Path(voice).expanduser()
        if not p.is_file():
            raise ValueError(f"kyutai voice {voice!r}: no such local voice embedding file")
        return p
    if voice.startswith("hf://"):
        from moshi.models.loaders import hf_get

        try:
            return Path(hf_get(voice + suffix))
        except Exception as e:
            raise ValueError(f"kyutai voice {voice!r}: {voice + suffix} not found ({type(e).__name__})") from e
    try:
        return Path(hf_hub_download(source.voice_repo, voice + suffix))
    except Exception as e:
        local = list_cached_voices(source, suffix)
        known = (f" Voices in the local copy of {source.voice_repo}: {', '.join(local[:40])}"
                 f"{' ...' if len(local) > 40 else ''}." if local else "")
        raise ValueError(
            f"kyutai voice {voice!r}: no file {voice + suffix} in the voice repository {source.voice_repo} "
            f"({type(e).__name__}). A voice is the path of a .wav of that repository, e.g. vctk/p226_023.wav or "
            f"expresso/ex03-ex01_happy_001_channel1_334s.wav: see https://huggingface.co/{source.voice_repo}/tree/main "
            f"(its files NAME{suffix}), or give a local .safetensors voice embedding.{known}") from e


def list_cached_voices(source: KyutaiSource, suffix: str) -> list[str]:
    """Voice names of `source.voice_repo` present in the local hub cache (all of them for the builtin)."""
    from huggingface_hub import constants

    root = source.hub_dir if source.hub_dir is not None else Path(constants.HF_HUB_CACHE)
    base = Path(root) / ("models--" + source.voice_repo.replace("/", "--")) / "snapshots"
    names = set()
    for snap in base.glob("*") if base.is_dir() else ():
        for f in snap.rglob(f"*{suffix}"):
            names.add(str(f.relative_to(snap))[: -len(suffix)])
    return sorted(names)
