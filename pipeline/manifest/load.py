"""Reading a corpus manifest: YAML to `pipeline.manifest.spec` types, with every mistake reported at once.

`load_manifest(path)` parses the file and checks every key; it raises one `ManifestError` listing every
mistake, one a line, each as `FILE: LOCATION: message` with the offending value and the valid choices
(and the nearest valid key for a misspelt one). The format is documented in `pipeline.manifest.spec`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any

import yaml

from pipeline.manifest.spec import (BENCHMARKS, ENGINES, GENERIC_NAME, KINDS, ON_LENGTH, NAME_RE, Defaults,
                               DialogueModels, GenericSpec, Manifest, ManifestError, ModelsConfig, SIZING_KEYS,
                               SpeechModels, SplitSpec)
from pipeline.sources.hub_load import script_repo_problem
from pipeline.core.types import INSTRUCTIONS, SOURCES
from tts.voices import BACKENDS as TTS_BACKENDS


_TOP_KEYS = ("name", "description", "seed", "models", "defaults", "generic", "splits")
_MODELS_KEYS = ("dialogue", "speech", "codec", "tokenizer")
_DIALOGUE_KEYS = ("engine", "model", "user_model", "assistant_model", "openai_base_url", "openai_timeout_s",
                  "openai_retry_s", "openai_max_concurrency", *SIZING_KEYS)
_SPEECH_KEYS = ("backend", "assistant_voice", "user_voices", "model", "cfg_coef")
_DEFAULT_KEYS = tuple(f.name for f in dataclasses.fields(Defaults))
# How a caption split's input is read (pipeline.sources.caption_rows.CaptionOptions): see pipeline.manifest.spec.
_SOURCE_OPTION_KEYS = ("input_split", "image_root", "watermark_classes", "max_toxicity")
_CAPTION_SPLIT_KEYS = ("name", "kind", "weight", "source", "instruction", "input", *_SOURCE_OPTION_KEYS,
                       *_DEFAULT_KEYS)
_BENCHMARK_SPLIT_KEYS = ("name", "kind", "weight", "benchmark", "input", "limit")
_GENERIC_KEYS = ("count", "kind", "weight", "topics", "min_pairs", "max_pairs", "temperature",
                 "max_new_tokens", "on_length", "redraws", "repetition_penalty")
_MISSING = object()


class _Checker:
    """Collects errors while reading plain YAML data; `get` returns None for a bad value."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, loc: str, msg: str) -> None:
        self.errors.append(f"{loc}: {msg}")

    def mapping(self, value: Any, loc: str, valid: tuple[str, ...], required: tuple[str, ...] = (),
                context: str = "") -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.err(loc, f"expected a mapping of {', '.join(valid)}; got {value!r}")
            return None
        for key in value:
            if key not in valid:
                near = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.err(_at(loc, key), f"unknown key {key!r}{context}{hint}; valid keys: {', '.join(valid)}")
        for key in required:
            if key not in value:
                self.err(_at(loc, key), f"missing required key {key!r}{context}")
        return value

    def choice(self, value: Any, loc: str, what: str, choices: tuple[str, ...], context: str = "") -> str | None:
        if value not in choices:
            self.err(loc, f"unknown {what} {value!r}{context}; valid: {', '.join(choices)}")
            return None
        return value

    def text(self, value: Any, loc: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.err(loc, f"expected a non-empty string{' or null' if optional else ''}; got {value!r}")
            return None
        return value

    def integer(self, value: Any, loc: str, minimum: int, optional: bool = False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.err(loc, f"expected an integer >= {minimum}{' or null' if optional else ''}; got {value!r}")
            return None
        return value

    def positive(self, value: Any, loc: str, optional: bool = False) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            self.err(loc, f"expected a positive number{' or null' if optional else ''}; got {value!r}")
            return None
        return value

    def voice(self, value: Any, loc: str, backend: str | None) -> str | None:
        if not isinstance(value, str) or value.partition(":")[0] not in TTS_BACKENDS or not value.partition(":")[2]:
            self.err(loc, f"voice {value!r}: write it as BACKEND:VOICE with BACKEND one of {', '.join(TTS_BACKENDS)}")
            return None
        if backend is not None and value.partition(":")[0] != backend:
            self.err(loc, f"voice {value!r} is not on backend {backend!r} (models.speech.backend); "
                          f"write {backend}:VOICE or remove the backend key")
            return None
        return value


def _at(loc: str, key: Any) -> str:
    return f"{loc}.{key}" if loc else str(key)


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest file; raise one `ManifestError` listing all its mistakes."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ManifestError(shown, [f"cannot read the file: {e.strerror or e}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e)
        raise ManifestError(shown, [f"{where}: YAML syntax error: {problem}"]) from None
    if data is None:
        raise ManifestError(shown, ["the file is empty; a manifest needs name, models and splits"])
    c = _Checker()
    manifest = _parse(data, c)
    if c.errors or manifest is None:
        raise ManifestError(shown, c.errors or ["not a valid manifest"])
    return dataclasses.replace(manifest, path=shown)


def _parse(data: Any, c: _Checker) -> Manifest | None:
    top = c.mapping(data, "", _TOP_KEYS, required=("name", "models", "splits"))
    if top is None:
        return None
    name = top.get("name")
    if name is not None and not (isinstance(name, str) and NAME_RE.match(name)):
        c.err("name", f"expected a name matching {NAME_RE.pattern}; got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        c.err("description", f"expected a string; got {description!r}")
    seed = c.integer(top.get("seed", 0), "seed", minimum=0)
    models = _parse_models(top["models"], c) if "models" in top else None
    defaults = _parse_defaults(top.get("defaults", {}) or {}, c)
    generic = _parse_generic(top["generic"], c, defaults) if top.get("generic") is not None else None
    splits = _parse_splits(top["splits"], c, defaults) if "splits" in top else ()
    if c.errors or models is None:
        return None
    return Manifest(name=name, description=description, seed=seed, models=models, defaults=defaults,
                    generic=generic, splits=splits)


def _parse_models(value: Any, c: _Checker) -> ModelsConfig | None:
    m = c.mapping(value, "models", _MODELS_KEYS, required=("dialogue", "speech", "codec"))
    if m is None:
        return None
    dialogue = speech = None
    d = c.mapping(m.get("dialogue", {}), "models.dialogue", _DIALOGUE_KEYS, required=("model",)) \
        if "dialogue" in m else None
    if d is not None:
        engine = c.choice(d.get("engine", "vllm"), "models.dialogue.engine", "engine", ENGINES)
        model = c.text(d.get("model"), "models.dialogue.model") if "model" in d else None
        opt = {k: c.text(d.get(k), f"models.dialogue.{k}", optional=True)
               for k in ("user_model", "assistant_model", "openai_base_url")}
        if d.get("openai_timeout_s") is not None:
            opt["openai_timeout_s"] = c.positive(d["openai_timeout_s"], "models.dialogue.openai_timeout_s")
        if d.get("openai_retry_s") is not None:
            retry = d["openai_retry_s"]
            opt["openai_retry_s"] = c.positive(retry, "models.dialogue.openai_retry_s") if retry != 0 else 0.0
        if d.get("openai_max_concurrency") is not None:
            opt["openai_max_concurrency"] = c.integer(d["openai_max_concurrency"],
                                                      "models.dialogue.openai_max_concurrency", minimum=1)
        if engine == "openai" and opt["openai_base_url"] is None:
            c.err("models.dialogue.openai_base_url", "engine 'openai' needs openai_base_url (e.g. http://127.0.0.1:8000/v1)")
        sizing = _parse_sizing(d, engine, c)
        if engine and model and sizing is not None:
            dialogue = DialogueModels(model=model, engine=engine, **opt, **sizing)
    s = c.mapping(m.get("speech", {}), "models.speech", _SPEECH_KEYS, required=("assistant_voice", "user_voices")) \
        if "speech" in m else None
    if s is not None:
        backend = s.get("backend")
        if backend is not None:
            backend = c.choice(backend, "models.speech.backend", "speech backend", TTS_BACKENDS)
        assistant = c.voice(s["assistant_voice"], "models.speech.assistant_voice", backend) \
            if "assistant_voice" in s else None
        users_raw = s.get("user_voices", _MISSING)
        users: list[str | None] = []
        if users_raw is not _MISSING:
            if not isinstance(users_raw, list) or not users_raw:
                c.err("models.speech.user_voices", f"expected a non-empty list of BACKEND:VOICE; got {users_raw!r}")
            else:
                users = [c.voice(v, f"models.speech.user_voices[{i}]", backend) for i, v in enumerate(users_raw)]
        model = c.text(s.get("model"), "models.speech.model", optional=True)
        cfg_coef = c.positive(s.get("cfg_coef"), "models.speech.cfg_coef", optional=True)
        on_kyutai = any(str(v).startswith("kyutai:") for v in [assistant, *users] if v)
        for key, value in (("model", model), ("cfg_coef", cfg_coef)):
            if value is not None and assistant and users and all(users) and not on_kyutai:
                c.err(f"models.speech.{key}", "only for the kyutai backend: no voice here is kyutai:...; remove it")
        if assistant and users and all(users):
            speech = SpeechModels(assistant_voice=assistant, user_voices=tuple(users), backend=backend,  # type: ignore[arg-type]
                                  model=model, cfg_coef=cfg_coef)
    codec = c.text(m.get("codec"), "models.codec") if "codec" in m else None
    tokenizer = c.text(m.get("tokenizer"), "models.tokenizer", optional=True)
    if dialogue is None or speech is None or codec is None:
        return None
    return ModelsConfig(dialogue=dialogue, speech=speech, codec=codec, tokenizer=tokenizer)


def _parse_sizing(d: dict[str, Any], engine: str | None, c: _Checker) -> dict[str, Any] | None:
    """The engine sizing keys of models.dialogue (vllm only), checked; None when one is bad."""
    n = len(c.errors)
    out: dict[str, Any] = {}
    for key in ("max_model_len", "max_num_seqs"):
        if key in d:
            out[key] = c.integer(d[key], f"models.dialogue.{key}", minimum=1, optional=True)
    if "tensor_parallel_size" in d:
        out["tensor_parallel_size"] = c.integer(d["tensor_parallel_size"], "models.dialogue.tensor_parallel_size", minimum=1)
    if "gpu_memory_utilization" in d:
        v = d["gpu_memory_utilization"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            c.err("models.dialogue.gpu_memory_utilization", f"expected a fraction of each GPU's memory in (0, 1], "
                                                             f"e.g. 0.9; got {v!r}")
        else:
            out["gpu_memory_utilization"] = float(v)
    if engine == "openai":
        for key in out:
            c.err(f"models.dialogue.{key}", "sizes a vllm engine; engine 'openai' is sized by its server: remove it")
    return out if len(c.errors) == n else None


def _check_setting(key: str, value: Any, loc: str, c: _Checker) -> bool:
    """One `defaults` key (or an override of it): True when the value is valid."""
    n = len(c.errors)
    if key in ("min_pairs", "max_pairs", "max_new_tokens", "replicas"):
        c.integer(value, loc, minimum=1)
    elif key == "redraws":
        c.integer(value, loc, minimum=0)
    elif key == "limit":
        c.integer(value, loc, minimum=1, optional=True)
    elif key == "temperature":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            c.err(loc, f"expected a number >= 0; got {value!r}")
    elif key == "repetition_penalty":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            c.err(loc, f"expected a number > 0 (1.0: no penalty) or null (the model's own default); got {value!r}")
    elif key == "on_length":
        c.choice(value, loc, "on_length", ON_LENGTH)
    return len(c.errors) == n


def _parse_defaults(value: Any, c: _Checker) -> Defaults:
    d = c.mapping(value, "defaults", _DEFAULT_KEYS)
    if d is None:
        return Defaults()
    good = {k: v for k, v in d.items() if k in _DEFAULT_KEYS and _check_setting(k, v, f"defaults.{k}", c)}
    if isinstance(good.get("temperature"), int):
        good["temperature"] = float(good["temperature"])
    out = dataclasses.replace(Defaults(), **good)
    if out.min_pairs > out.max_pairs:
        c.err("defaults.min_pairs", f"min_pairs {out.min_pairs} is above max_pairs {out.max_pairs}")
    return out


def _overrides(raw: dict[str, Any], loc: str, keys: tuple[str, ...], defaults: Defaults, c: _Checker,
               label: str) -> tuple[tuple[str, Any], ...]:
    pairs = [(k, raw[k]) for k in raw if k in keys and k in _DEFAULT_KEYS]
    good = tuple((k, float(v) if k == "temperature" and isinstance(v, int) and not isinstance(v, bool) else v)
                 for k, v in pairs if _check_setting(k, v, _at(loc, k), c))
    eff = dataclasses.replace(defaults, **dict(good))
    overridden = any(k in ("min_pairs", "max_pairs") for k, _ in good)
    if overridden and eff.min_pairs > eff.max_pairs:  # defaults alone are checked at `defaults`
        key = "min_pairs" if "min_pairs" in raw else "max_pairs"
        c.err(_at(loc, key), f"min_pairs {eff.min_pairs} is above max_pairs {eff.max_pairs}{label}")
    return good


def _parse_generic(value: Any, c: _Checker, defaults: Defaults) -> GenericSpec | None:
    g = c.mapping(value, "generic", _GENERIC_KEYS, required=("count", "kind"))
    if g is None:
        return None
    count = c.integer(g["count"], "generic.count", minimum=1) if "count" in g else None
    kind = c.choice(g["kind"], "generic.kind", "kind", KINDS) if "kind" in g else None
    weight = c.positive(g.get("weight"), "generic.weight", optional=True)
    topics = c.text(g.get("topics"), "generic.topics", optional=True)
    overrides = _overrides(g, "generic", _GENERIC_KEYS, defaults, c, "")
    if count is None or kind is None:
        return None
    return GenericSpec(count=count, kind=kind, weight=weight, topics=topics, overrides=overrides)


def _parse_splits(value: Any, c: _Checker, defaults: Defaults) -> tuple[SplitSpec, ...]:
    if not isinstance(value, list) or not value:
        c.err("splits", f"expected a non-empty list of splits; got {value!r}")
        return ()
    out: list[SplitSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(value):
        loc = f"splits[{i}]"
        if not isinstance(raw, dict):
            c.err(loc, f"expected a mapping (name, kind, weight, ...); got {raw!r}")
            continue
        name = raw.get("name")
        label = f" (split {name!r})" if isinstance(name, str) else ""
        n = len(c.errors)
        checked = raw
        if "benchmark" in raw:
            keys, required = _BENCHMARK_SPLIT_KEYS, ("name", "kind", "weight", "benchmark", "input")
            misplaced = [k for k in raw if k in _CAPTION_SPLIT_KEYS and k not in keys]
            for k in misplaced:
                c.err(_at(loc, k), f"a benchmark split takes no {k} (got {raw[k]!r}){label}: benchmarks are used "
                                   f"in their original text form; valid keys: {', '.join(keys)}")
            checked = {k: v for k, v in raw.items() if k not in misplaced}
        elif "source" in raw or "instruction" in raw:
            keys, required = _CAPTION_SPLIT_KEYS, ("name", "kind", "weight", "source", "instruction", "input")
        else:
            c.err(loc, f"neither a caption split (source, instruction, input) nor a benchmark split "
                       f"(benchmark, input){label}; got keys {', '.join(map(str, raw)) or 'none'}")
            keys, required = _CAPTION_SPLIT_KEYS, ("name", "kind", "weight", "input")
        c.mapping(checked, loc, keys, required=required, context=label)
        if isinstance(name, str):
            if not NAME_RE.match(name):
                c.err(f"{loc}.name", f"expected a name matching {NAME_RE.pattern}; got {name!r}")
            elif name == GENERIC_NAME:
                c.err(f"{loc}.name", f"{name!r} is reserved for the generic set (top-level `generic`)")
            elif name in seen:
                c.err(f"{loc}.name", f"duplicate split name {name!r} (also splits[{seen[name]}])")
            else:
                seen[name] = i
        elif "name" in raw:
            c.err(f"{loc}.name", f"expected a name matching {NAME_RE.pattern}; got {name!r}")
        kind = c.choice(raw["kind"], f"{loc}.kind", "kind", KINDS, label) if "kind" in raw else None
        weight = c.positive(raw["weight"], f"{loc}.weight") if "weight" in raw else None
        inp = c.text(raw["input"], f"{loc}.input") if "input" in raw else None
        if inp is not None and (problem := script_repo_problem(inp)):  # fail before any work
            c.err(f"{loc}.input", problem)
        source = instruction = benchmark = None
        if "benchmark" in raw:
            benchmark = c.choice(raw["benchmark"], f"{loc}.benchmark", "benchmark", BENCHMARKS, label)
        else:
            if "source" in raw:
                source = c.choice(raw["source"], f"{loc}.source", "source", SOURCES, label)
            if "instruction" in raw:
                instruction = c.choice(raw["instruction"], f"{loc}.instruction", "instruction", INSTRUCTIONS, label)
        overrides = _overrides(raw, loc, keys, defaults, c, label)
        options = _source_options(raw, loc, source, c, label) if "benchmark" not in raw else ()
        if len(c.errors) == n:
            out.append(SplitSpec(name=name, kind=kind, weight=weight, input=inp, source=source,  # type: ignore[arg-type]
                                 instruction=instruction, benchmark=benchmark, overrides=overrides,
                                 source_options=options))
    return tuple(out)


def _source_options(raw: dict[str, Any], loc: str, source: str | None, c: _Checker,
                    label: str) -> tuple[tuple[str, Any], ...]:
    """The caption-reading keys of a split (input_split, image_root, watermark_classes, max_toxicity)."""
    out: list[tuple[str, Any]] = []
    for key in _SOURCE_OPTION_KEYS:
        if key not in raw:
            continue
        value, at = raw[key], _at(loc, key)
        if key in ("input_split", "image_root"):
            if c.text(value, at) is None:
                continue
            if key == "image_root" and source is not None and source != "docci":
                c.err(at, f"image_root is only used by source docci (the release's image_file column){label}; "
                          f"{source} rows name their images by URL")
                continue
        elif key == "watermark_classes":
            if source is not None and source != "pixelprose":
                c.err(at, f"watermark_classes is a PixelProse filter{label}; source is {source}")
                continue
            if not isinstance(value, list) or not value or any(
                    isinstance(v, bool) or v not in (0, 1, 2) for v in value):
                c.err(at, f"expected a non-empty list of PixelProse watermark_class_id values to keep, from 0 "
                          f"(watermark), 1 (clean), 2 (text overlay), e.g. [1]; got {value!r}")
                continue
            value = sorted(set(value))
        elif key == "max_toxicity":
            if source is not None and source != "pixelprose":
                c.err(at, f"max_toxicity is a PixelProse filter{label}; source is {source}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                c.err(at, f"expected a Detoxify score threshold in [0, 1]; got {value!r}")
                continue
            value = float(value)
        out.append((key, value))
    return tuple(out)
