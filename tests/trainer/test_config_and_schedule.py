import math

import pytest

from trainer.config import TrainConfigError, load_train_config
from trainer.loop import lr_factor


def test_warmup_then_cosine_to_the_floor():
    f = [lr_factor(s, 4, 20, 0.1) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[4:], f[5:]))  # decays monotonically after warm-up
    assert math.isclose(lr_factor(20, 4, 20, 0.1), 0.1) and f[4] == 1.0


def test_config_errors_are_all_listed_with_valid_keys(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {gatng: shared}\ndata: {batch_sise: 2}\ntrain: {steps: 0, precision: fp8}\noptim: {}\n")
    with pytest.raises(TrainConfigError) as e:
        load_train_config(p)
    msg = str(e.value)
    for needle in ("model.gatng: unknown key (did you mean 'gating'?)", "data.batch_sise: unknown key",
                   "train.steps: 0 must be an integer >= 1", "train.precision: 'fp8'", "optim: unknown section"):
        assert needle in msg, needle


def test_the_shipped_quickstart_config_loads():
    from pathlib import Path

    cfg = load_train_config(Path(__file__).resolve().parents[2] / "manifests" / "train-quickstart.yaml")
    assert cfg.train.steps >= 1 and cfg.data.batch_size >= 1


def test_delays_other_than_the_model_s_are_refused_and_missing_images_resolve_by_encoder(tmp_path):
    from trainer.config import resolve_missing_images

    p = tmp_path / "d.yaml"
    p.write_text("data: {delays: [0, 0, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2]}\n")
    with pytest.raises(TrainConfigError, match=r"data.delays .* differ from the model's"):
        load_train_config(p)
    p.write_text("model: {image_encoder: google/paligemma2-3b-pt-448}\n")
    cfg = load_train_config(p)
    assert cfg.data.missing_images == "auto" and resolve_missing_images(cfg) == "error"
    p.write_text("model: {image_encoder: tiny}\n")
    assert resolve_missing_images(load_train_config(p)) == "placeholder"
    p.write_text("model: {image_encoder: some/siglip}\ndata: {missing_images: placeholder}\n")
    assert resolve_missing_images(load_train_config(p)) == "placeholder"  # an explicit choice is kept
