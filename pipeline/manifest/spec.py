"""Corpus manifests: one YAML file declares a whole corpus (`manifests/moshivis.yaml` is Table 7).

Format (every key shown; `defaults`, `generic`, `seed`, `description` are optional)::

    name: moshivis                     # [a-z0-9][a-z0-9._-]*, used in paths
    description: free text
    seed: 0                            # run seed; every split derives its randomness from it
    models:
      dialogue:
        engine: vllm                   # vllm | openai
        model: mistralai/Mistral-Nemo-Instruct-2407   # or builtin:smollm2, builtin:tiny-mistral
        user_model: null               # optional: one role on another model
        assistant_model: null
        openai_base_url: null          # engine openai only (docs/openai.md), and its three settings:
        openai_timeout_s: 300          #   longest wait for one answer
        openai_retry_s: 600            #   total retry time of one request (transient faults)
        openai_max_concurrency: 64     #   requests in flight per worker
        # engine sizing (vllm; how the engines run, not what they make: not part of the corpus config hash)
        max_model_len: null            # context per engine; null: one full dialogue's (docs/gpu.md: 6144 for 16 x 150)
        gpu_memory_utilization: 0.9    # of each GPU, shared by the engines on it (two models: 0.45 each)
        tensor_parallel_size: 1        # GPUs per engine (one worker takes that many)
        max_num_seqs: null             # sequences an engine batches at once; null: vLLM's default
      speech:
        backend: kyutai                # optional; when set, every voice must use it
        assistant_voice: kyutai:expresso/ex03-ex01_happy_001_channel1_334s.wav   # BACKEND:VOICE
        user_voices: [kyutai:vctk/p225_023.wav, ...]                            # pool, >= 1
        model: null                    # kyutai only: hub repo (default kyutai/tts-1.6b-en_fr) or builtin:kyutai-tiny
        cfg_coef: null                 # kyutai only: default 2.0; the model's config says which values it takes
      codec: kyutai/mimi               # or random[:SEED], or a local transformers folder
      tokenizer: kyutai/moshiko-pytorch-bf16   # SentencePiece file or hub repo; null: stand-in
    defaults:                          # settings of every split unless the split overrides them
      min_pairs: 8
      max_pairs: 16
      temperature: 0.7
      max_new_tokens: 150
      on_length: trim                  # trim (to the last full sentence) | reject
      redraws: 3                       # a message a filter rejects is sampled again up to this many times
      # repetition_penalty: 1.0        # default: the model's own (1.0; 1.1 for builtin:smollm2)
      replicas: 1
      limit: null                      # captions per split (null: all)
    generic:                           # non-image dialogues, only for the concatenation augmentation
      count: 20000
      kind: speech                     # speech | text
      weight: null                     # null: not sampled directly; a number adds it to weights()
      topics: null                     # optional topics file (default: the shipped list)
      # + optional overrides: min_pairs max_pairs temperature max_new_tokens on_length redraws repetition_penalty
    splits:
      - name: docci-prop               # caption split: generated dialogues
        kind: speech                   # speech | text (speechless: text tokens only)
        weight: 5                      # relative sampling weight, > 0
        source: docci                  # pixmo | docci | pixelprose
        instruction: PROP              # COMB LOC PROP NUM TS1 TS2 LEAD1 LEAD2
        input: data/docci/docci_descriptions.jsonlines   # hub id[@split], or a local file/folder
        image_root: data/docci/images  # optional, DOCCI release: the folder image_file is relative to
        input_split: train             # optional: the hub split / DOCCI release split to read (train)
        # optional PixelProse filters (default none, as Kyutai's released generator):
        #   watermark_classes: [1]     # keep only these watermark_class_ids (0 watermark, 1 clean, 2 text)
        #   max_toxicity: 0.5          # reject rows whose highest Detoxify score is above
        # + optional overrides of any `defaults` key
      - name: tallyqa                  # benchmark split: question/answer -> one short exchange
        kind: text
        weight: 1
        benchmark: tallyqa             # tallyqa | ocrvqa | renderedtext | docvqa
        input: HuggingFaceM4/the_cauldron   # its tallyqa config; or TallyQA's train.json
        limit: null                    # the only override a benchmark split takes

`input` (and `image_root`) are kept as written: a hub id, or a local path, which the stages resolve
against the current directory (run from the repository root for the shipped manifests). A
loading-script hub repository (e.g. google/docci) is a manifest error: see pipeline.sources.hub_load.

`pipeline.manifest.load.load_manifest` reads a file into these types; it checks everything and raises
one `ManifestError` listing every mistake, one a line, each as `FILE: LOCATION: message` with the
offending value and the valid choices.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Union

KINDS: tuple[str, ...] = ("speech", "text")
BENCHMARKS: tuple[str, ...] = ("tallyqa", "ocrvqa", "renderedtext", "docvqa")
ENGINES: tuple[str, ...] = ("vllm", "openai")
ON_LENGTH: tuple[str, ...] = ("reject", "trim")
GENERIC_NAME = "generic"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ManifestError(ValueError):
    """Every mistake of one manifest file; `errors` holds them, the message lists them one a line."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = list(errors)
        n = len(self.errors)
        head = f"{path}: {n} error{'s' if n != 1 else ''} in the manifest"
        super().__init__("\n".join([head, *(f"{path}: {e}" for e in self.errors)]))


@dataclass(slots=True, frozen=True)
class Defaults:
    """Settings of a split's dialogues; `Manifest.resolved` gives them per split, overrides merged."""

    min_pairs: int = 8
    max_pairs: int = 16
    temperature: float = 0.7
    max_new_tokens: int = 150
    on_length: str = "trim"
    redraws: int = 3
    repetition_penalty: float | None = None  # None: the model's own default (1.0; 1.1 for builtin:smollm2)
    replicas: int = 1
    limit: int | None = None


@dataclass(slots=True, frozen=True)
class DialogueModels:
    model: str
    engine: str = "vllm"
    user_model: str | None = None
    assistant_model: str | None = None
    openai_base_url: str | None = None
    openai_timeout_s: float = 300.0
    openai_retry_s: float = 600.0
    openai_max_concurrency: int = 64
    max_model_len: int | None = None  # None: one full dialogue's context (pipeline.dialogue.sizing.dialogue_tokens)
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None  # None: vLLM's default

    def identity(self) -> dict[str, Any]:
        """What the dialogues are made with (hashed). Left out: the engine sizing keys, so that a corpus can be
        resumed on other GPUs, and where and how the openai engine's server is reached (DEPLOYMENT_KEYS)."""
        out = {k: getattr(self, k) for k in ("model", "engine", "user_model", "assistant_model")}
        out["openai_base_url"] = None
        return out

    def sizing(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SIZING_KEYS}


SIZING_KEYS: tuple[str, ...] = ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs")

# Where and how the openai engine's server is reached: deployment details, like --ray-address. They are not
# part of the corpus config (another server serving the same model resumes a corpus; the model it serves is
# in each dialogue stage's config, docs/openai.md). `openai_base_url` stays in the dict, null, so the config
# hashes of corpora made before it was left out are unchanged.
DEPLOYMENT_KEYS = ("openai_base_url", "openai_timeout_s", "openai_retry_s", "openai_max_concurrency")


@dataclass(slots=True, frozen=True)
class SpeechModels:
    assistant_voice: str
    user_voices: tuple[str, ...]
    backend: str | None = None
    model: str | None = None  # kyutai model (hub repo or builtin:kyutai-tiny); None: the backend's default
    cfg_coef: float | None = None  # kyutai CFG coefficient; None: the backend's default


@dataclass(slots=True, frozen=True)
class ModelsConfig:
    dialogue: DialogueModels
    speech: SpeechModels
    codec: str
    tokenizer: str | None = None


@dataclass(slots=True, frozen=True)
class SplitSpec:
    """A caption split (source, instruction, input) or a benchmark split (benchmark, input)."""

    name: str
    kind: str
    weight: float
    input: str
    source: str | None = None
    instruction: str | None = None
    benchmark: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # (Defaults field, value), in file order
    # how a caption split's input is read: (key, value) of input_split, image_root, watermark_classes,
    # max_toxicity, in that order (pipeline.sources.caption_rows.CaptionOptions)
    source_options: tuple[tuple[str, Any], ...] = ()

    @property
    def is_benchmark(self) -> bool:
        return self.benchmark is not None

    def caption_options(self) -> Any:
        """The `CaptionOptions` this split's input is read with."""
        from pipeline.sources.caption_rows import CaptionOptions

        o = dict(self.source_options)
        wm = o.get("watermark_classes")
        return CaptionOptions(split=o.get("input_split", "train"), image_root=o.get("image_root"),
                              watermark_classes=tuple(wm) if wm is not None else None,
                              max_toxicity=o.get("max_toxicity"))


@dataclass(slots=True, frozen=True)
class GenericSpec:
    count: int
    kind: str
    weight: float | None = None
    topics: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(slots=True, frozen=True)
class Manifest:
    name: str
    models: ModelsConfig
    splits: tuple[SplitSpec, ...]
    description: str = ""
    seed: int = 0
    defaults: Defaults = Defaults()
    generic: GenericSpec | None = None
    path: str | None = dataclasses.field(default=None, compare=False)  # where it was loaded from

    def split(self, name: str) -> SplitSpec:
        for s in self.splits:
            if s.name == name:
                return s
        raise KeyError(f"no split {name!r} in manifest {self.name!r}; splits: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [s.name for s in self.splits]

    def resolved(self, split: Union[SplitSpec, GenericSpec, str]) -> Defaults:
        """The effective settings of a split (or of `generic`): defaults with its overrides."""
        if isinstance(split, str):
            split = self.generic if split == GENERIC_NAME and self.generic else self.split(split)
        return dataclasses.replace(self.defaults, **dict(split.overrides))

    def weights(self) -> dict[str, float]:
        """Sampling probabilities p_i = w_i / sum_j w_j, in split order (+ `generic` if weighted)."""
        raw = {s.name: s.weight for s in self.splits}
        if self.generic is not None and self.generic.weight is not None:
            raw[GENERIC_NAME] = self.generic.weight
        total = sum(raw.values())
        return {k: w / total for k, w in raw.items()}

    def to_dict(self) -> dict[str, Any]:
        """The manifest in its YAML shape, every default explicit (for hashing and provenance)."""
        def split_dict(s: SplitSpec) -> dict[str, Any]:
            d: dict[str, Any] = {"name": s.name, "kind": s.kind, "weight": s.weight}
            if s.is_benchmark:
                d["benchmark"] = s.benchmark
            else:
                d.update(source=s.source, instruction=s.instruction)
            d["input"] = s.input
            d.update(s.source_options)  # absent keys stay absent: older config hashes are unchanged
            d.update(s.overrides)
            return d

        m = self.models
        generic = None
        if self.generic is not None:
            g = self.generic
            generic = {"count": g.count, "kind": g.kind, "weight": g.weight, "topics": g.topics, **dict(g.overrides)}
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "models": {
                "dialogue": m.dialogue.identity(),
                "speech": {"backend": m.speech.backend, "assistant_voice": m.speech.assistant_voice,
                           "user_voices": list(m.speech.user_voices),
                           **{k: getattr(m.speech, k) for k in ("model", "cfg_coef") if getattr(m.speech, k) is not None}},
                "codec": m.codec,
                "tokenizer": m.tokenizer,
            },
            "defaults": dataclasses.asdict(self.defaults),
            "generic": generic,
            "splits": [split_dict(s) for s in self.splits],
        }

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
