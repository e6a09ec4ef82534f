"""The training config: one YAML file with `model`, `data` and `train` sections.

    model:  trainer.model.ModelConfig fields (backbone, image_encoder, gating, sharing, ...)
    data:   trainer.data.DataConfig fields (batch_size, p_concat, text_pad_weight, ...)
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
    from trainer.data import DataConfig
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
