"""The training config: one YAML file with `model`, `data` and `train` sections.

    model:  trainer.model.ModelConfig fields (backbone, image_encoder, gating, sharing, ...)
    data:   DataConfig fields below (batch_size, p_concat, text_pad_weight, ...)
    train:  TrainOptions fields below (steps, lr, warmup_steps, ...)

Unknown keys are errors naming the key, its section and the valid keys; all errors are listed at once.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.collate import MOSHI_DELAYS


@dataclass
class DataConfig:
    """The `data:` section of the trainer config."""

    batch_size: int = 8
    p_concat: float = 0.5  # probability of the generic prefix + suffix around a visual speech sample
    text_pad_weight: float = 0.5  # text loss weight of padding tokens in the text stream (moshi-finetune's)
    text_pad_ids: tuple[int, ...] = (3, 0)  # the text stream's pad and end-of-padding ids (both weighted so)
    max_frames: int = 3000  # most time steps of a speech batch (Moshi's context)
    max_text_tokens: int = 2048  # most tokens of a text row
    image_size: int = 448  # PaliGemma 2 SigLIP at 448 px, as MoshiVis
    image_root: str | list[str] | None = None
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # SigLIP
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    missing_images: str = "auto"  # auto (train: error with a real encoder, placeholder with "tiny") | placeholder | error
    seed: int = 0
    eval_rows: int = 8  # first N ok rows of each split's first shard held out (all but one at most)
    shuffle_buffer: int = 16  # rows per split
    splits: dict[str, float] | None = None  # weights replacing manifest.json's (unlisted splits: 0)
    generic_pool: int = 64  # generic rows in the augmentation window
    row_group_cache_mib: int = 16  # decoded row groups kept (LRU): small shards are decoded once
    delays: tuple[int, ...] = MOSHI_DELAYS  # text stream + 16 codebooks

    def __post_init__(self):
        for f in ("text_pad_ids", "image_mean", "image_std", "delays"):
            v = getattr(self, f)
            if isinstance(v, list):
                setattr(self, f, tuple(v))
        if isinstance(self.image_mean, (int, float)):
            self.image_mean = (float(self.image_mean),) * 3
        if isinstance(self.image_std, (int, float)):
            self.image_std = (float(self.image_std),) * 3

    def errors(self) -> list[str]:
        e = []
        if self.batch_size < 1:
            e.append(f"data.batch_size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.p_concat <= 1.0:
            e.append(f"data.p_concat: must be in [0, 1], got {self.p_concat}")
        if self.text_pad_weight < 0:
            e.append(f"data.text_pad_weight: must be >= 0, got {self.text_pad_weight}")
        if len(self.delays) < 2 or min(self.delays) < 0:
            e.append(f"data.delays: text stream + one per codebook, all >= 0, got {list(self.delays)}")
        elif self.max_frames <= max(self.delays):
            e.append(f"data.max_frames: must be > the largest delay ({max(self.delays)}), got {self.max_frames}")
        if self.max_text_tokens < 1:
            e.append(f"data.max_text_tokens: must be >= 1, got {self.max_text_tokens}")
        if self.image_size < 1:
            e.append(f"data.image_size: must be >= 1, got {self.image_size}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            e.append("data.image_mean / data.image_std: three numbers each, std > 0")
        if self.missing_images not in ("auto", "placeholder", "error"):
            e.append(f"data.missing_images: 'auto', 'placeholder' or 'error', got {self.missing_images!r}")
        if self.eval_rows < 0 or self.shuffle_buffer < 0 or self.generic_pool < 1 or self.row_group_cache_mib < 0:
            e.append("data.eval_rows, data.shuffle_buffer, data.row_group_cache_mib: must be >= 0; "
                     "data.generic_pool: >= 1")
        if self.splits is not None and (not isinstance(self.splits, dict)
                                        or any(not isinstance(w, (int, float)) or w < 0 for w in self.splits.values())):
            e.append(f"data.splits: a mapping split name -> weight >= 0, got {self.splits!r}")
        return e

    def validate(self) -> DataConfig:
        errs = self.errors()
        if errs:
            raise ValueError("invalid data config:\n  " + "\n  ".join(errs))
        return self

    @classmethod
    def from_dict(cls, d: dict | None) -> DataConfig:
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"data: unknown keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d).validate()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


@dataclass
class TrainOptions:
    steps: int = 100  # optimizer steps
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: str = "auto"  # auto (bf16 autocast on CUDA with bf16, else fp32) | bf16 | fp32
    log_every: int = 1
    eval_every: int = 50  # 0: never (except at the end)
    eval_batches: int = 4
    ckpt_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 2
    seed: int = 0


@dataclass
class TrainConfig:
    model: Any
    data: Any
    train: TrainOptions = field(default_factory=TrainOptions)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train)}


class TrainConfigError(ValueError):
    def __init__(self, path: str, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join([f"{path}: {len(errors)} error(s) in the training config",
                                    *(f"{path}: {e}" for e in errors)]))


def _section(cls, raw: Any, name: str, errors: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a mapping of settings, got {type(raw).__name__}")
        return None
    valid = [f.name for f in dataclasses.fields(cls) if f.name != "path"]
    kwargs = {}
    for k, v in raw.items():
        if k not in valid:
            near = difflib.get_close_matches(str(k), valid, n=1)
            errors.append(f"{name}.{k}: unknown key{f' (did you mean {near[0]!r}?)' if near else ''}; "
                          f"valid keys: {', '.join(valid)}")
            continue
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        errors.append(f"{name}: {e}")
        return None


def _moshi_delays() -> tuple[int, ...]:
    from trainer.collate import MOSHI_DELAYS

    return tuple(MOSHI_DELAYS)


def resolve_missing_images(cfg: TrainConfig) -> str:
    """`data.missing_images: auto` -> "error" with a real image encoder (a wrong image_root must fail at the
    first batch, not train on flat colours), "placeholder" with the tiny test encoder."""
    m = cfg.data.missing_images
    if m == "auto":
        return "placeholder" if cfg.model.image_encoder == "tiny" else "error"
    return m


def load_train_config(path: str | Path) -> TrainConfig:
    from trainer.model import ModelConfig

    path = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such training config (see manifests/train-quickstart.yaml)") from None
    except yaml.YAMLError as e:
        raise TrainConfigError(path, [f"not valid YAML: {e}"]) from None
    errors: list[str] = []
    if not isinstance(data, dict):
        raise TrainConfigError(path, ["expected a mapping with model, data and train sections"])
    for k in data:
        if k not in ("model", "data", "train"):
            errors.append(f"{k}: unknown section; valid sections: model, data, train")
    model = _section(ModelConfig, data.get("model"), "model", errors)
    dcfg = _section(DataConfig, data.get("data"), "data", errors)
    train = _section(TrainOptions, data.get("train"), "train", errors)
    if train is not None:
        for k in ("steps", "grad_accum", "eval_batches"):
            if not isinstance(getattr(train, k), int) or getattr(train, k) < 1:
                errors.append(f"train.{k}: {getattr(train, k)!r} must be an integer >= 1")
        if train.precision not in ("auto", "bf16", "fp32"):
            errors.append(f"train.precision: {train.precision!r}; valid: auto, bf16, fp32")
    for sec in (dcfg, model):
        if sec is not None and hasattr(sec, "errors"):
            errors += sec.errors()
    if dcfg is not None and tuple(dcfg.delays) != _moshi_delays():
        errors.append(f"data.delays {list(dcfg.delays)} differ from the model's (Moshi's {list(_moshi_delays())}, "
                      "trainer/collate.py MOSHI_DELAYS): the model undoes Moshi's delays; remove data.delays")
    if model is not None and dcfg is not None and model.image_size != dcfg.image_size:
        errors.append(f"data.image_size {dcfg.image_size} differs from model.image_size {model.image_size}: "
                      "the loader resizes images to what the encoder takes; set both to the same value")
    if errors:
        raise TrainConfigError(path, errors)
    return TrainConfig(model, dcfg, train, path)
