"""trainer/images.py: lookup under image_root, resize + normalise, placeholders, the error that names the fix."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.augment import speech_row, text_row, write_corpus
from trainer.config import DataConfig
from trainer.data import CorpusLoader
from trainer.images import (ImageLoader, MissingImageError, image_candidates, placeholder, placeholder_rgb,
                            preprocess)


def _two_halves(path, w=20, h=10):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def test_found_under_image_root_resized_and_normalised(tmp_path):
    _two_halves(tmp_path / "images" / "a.png")
    il = ImageLoader(tmp_path, size=8)
    x = il.load({"url": None, "path": "images/a.png", "sha256": None}, row_id="r")
    assert x.shape == (3, 8, 8) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, :, 0] == pytest.approx(1.0) and x[2, :, 0] == pytest.approx(-1.0)  # red left
    assert x[2, :, -1] == pytest.approx(1.0) and x[0, :, -1] == pytest.approx(-1.0)  # blue right
    assert il.stats["images_loaded"] == 1 and il.stats["images_missing"] == 0


def test_normalisation_is_exact_for_a_flat_image():
    img = Image.new("RGB", (5, 7), (51, 102, 255))
    x = preprocess(img, 4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 1.0))
    assert x[0] == pytest.approx((51 / 255 - 0.5) / 0.5)
    assert x[1] == pytest.approx((102 / 255 - 0.25) / 0.5)
    assert x[2] == pytest.approx(1.0)


def test_candidates_path_sha256_cache_and_url_mirror(tmp_path):
    img = {"url": "https://cdn.example.net/redcaps/0001.jpg", "path": "images/x.jpg", "sha256": "ab" * 32}
    c = image_candidates(img, [tmp_path / "r1", tmp_path / "r2"])
    assert c[0] == tmp_path / "r1/images/x.jpg"
    assert tmp_path / "r1/sha256" / f"{'ab' * 32}.jpg" in c
    assert tmp_path / "r2/cdn.example.net/redcaps/0001.jpg" in c
    assert image_candidates(img, None) == [] and image_candidates(None, tmp_path) == []
    _two_halves(tmp_path / "r2/cdn.example.net/redcaps/0001.jpg")
    il = ImageLoader([tmp_path / "r1", tmp_path / "r2"], size=4)
    il.load({"url": img["url"], "path": None, "sha256": None})
    assert il.stats["images_loaded"] == 1


def test_missing_image_gives_a_deterministic_placeholder(tmp_path):
    il = ImageLoader(tmp_path, size=6)
    a = il.load({"url": None, "path": "images/missing.jpg", "sha256": None}, row_id="r1")
    b = il.load({"url": None, "path": "images/missing.jpg", "sha256": None}, row_id="r2")
    c = il.load({"url": None, "path": "images/other.jpg", "sha256": None}, row_id="r1")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rgb = placeholder_rgb("images/missing.jpg")
    assert a[:, 0, 0] == pytest.approx((np.array(rgb) / 255 - 0.5) / 0.5)
    assert (a == a[:, :1, :1]).all(), "a flat colour"
    np.testing.assert_array_equal(a, placeholder("images/missing.jpg", 6))
    assert il.stats["images_missing"] == 3
    il.load(None, row_id="generic-row")
    assert il.stats["images_none"] == 1


def test_missing_image_error_names_row_split_path_and_fix(tmp_path):
    il = ImageLoader(tmp_path, size=6, missing="error")
    with pytest.raises(MissingImageError) as e:
        il.load({"url": None, "path": "images/qual_dev_00001.jpg", "sha256": None}, row_id="abc123", split="docci-prop")
    msg = str(e.value)
    for s in ("abc123", "docci-prop", "images/qual_dev_00001.jpg", str(tmp_path), "data.image_root"):
        assert s in msg
    with pytest.raises(MissingImageError, match="image_root is not set"):
        ImageLoader(None, missing="error").load({"url": None, "path": "a.jpg", "sha256": None})


def test_unreadable_file_is_counted_or_reported(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    il = ImageLoader(tmp_path, size=4)
    il.load({"url": None, "path": "bad.jpg", "sha256": None})
    assert il.stats["images_unreadable"] == 1
    with pytest.raises(MissingImageError, match="does not decode"):
        ImageLoader(tmp_path, size=4, missing="error").load({"url": None, "path": "bad.jpg", "sha256": None})


def test_loader_images_from_image_root_and_error_mode(tmp_path):
    root = write_corpus(tmp_path / "corpus", {
        "s": {"kind": "speech", "weight": 1, "shards": [[speech_row("s1", (3, 3)), speech_row("s2", (3, 3))]]},
        "t": {"kind": "text", "weight": 1, "shards": [[text_row("t1")]]}})
    _two_halves(tmp_path / "imgs" / "images" / "s1.jpg")
    cfg = dict(batch_size=2, p_concat=0.0, image_size=8, eval_rows=0)
    loader = CorpusLoader(root, DataConfig(**cfg, image_root=str(tmp_path / "imgs")))
    for _ in range(4):
        b = next(loader)
        assert b["image"].shape == (2, 3, 8, 8)
    st = loader.stats
    assert st["images_loaded"] > 0 and st["images_missing"] > 0 and st["images_loaded"] + st["images_missing"] == 8
    bad = CorpusLoader(root, DataConfig(**cfg, image_root=str(tmp_path / "nowhere"), missing_images="error"))
    with pytest.raises(MissingImageError, match=r"split '(s|t)'.*data\.image_root"):
        for _ in range(4):
            next(bad)
