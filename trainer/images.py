"""Images for the vision encoder: find a token row's image on disk, resize, normalise (CHW float32).

Token rows carry `image = {url, path, sha256}`. Nothing is ever fetched from a URL here: the corpus'
images stage (`ssvd images`, the `images` step of `ssvd run`; docs/images.md) stores each image in
`DIR/<split>/images/`, and `store` (a `pipeline.images.store.ImageStore`) gives its pixels by image id;
that is tried first. Then, under each folder of `image_root` (one folder or a list) the candidates are,
in order:

    ROOT/<path>                          `path` as written by the captions stage, relative to the
                                         caption dataset (e.g. images/qual_dev_00001.jpg); an
                                         absolute `path` is also tried as it is
    ROOT/sha256/<sha256>.{jpg,jpeg,png,webp}   a local cache keyed by the image's sha256
    ROOT/<host>/<url path>               a mirror of the URL (`wget --force-directories` layout)

The first that exists is opened with PIL, converted to RGB, resized to `size` x `size` (bicubic, as
the SigLIP / PaliGemma processors do), scaled to [0, 1] and normalised `(x - mean) / std` (SigLIP:
0.5 / 0.5 -> [-1, 1]).

When none exists (the shipped fixtures have no image files), `missing="placeholder"` gives a
deterministic flat-colour image whose colour is derived from a hash of the image's path, URL or
sha256 (or the row id when the row has no image reference) and counts it in `stats["images_missing"]`
(rows with no image reference at all, e.g. weighted generic rows: `stats["images_none"]`; files that
exist but do not decode: `stats["images_unreadable"]`); `missing="error"` raises `MissingImageError`
naming the row, the split, the paths tried and the fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from pipeline.core.types import stable_hash

EXTS = (".jpg", ".jpeg", ".png", ".webp")


class MissingImageError(FileNotFoundError):
    pass


def _triple(x: float | Sequence[float]) -> np.ndarray:
    a = np.asarray([x] * 3 if np.isscalar(x) else list(x), dtype=np.float32)
    if a.shape != (3,):
        raise ValueError(f"image mean/std must be one number or three, got {x!r}")
    return a


def _roots(image_root: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if image_root is None:
        return []
    if isinstance(image_root, (str, Path)):
        return [Path(image_root)]
    return [Path(r) for r in image_root]


def has_reference(image: dict | None) -> bool:
    return bool(image) and any(image.get(k) for k in ("path", "url", "sha256"))


def image_candidates(image: dict | None, image_root: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """The files tried for a row's image, in order (see the module docstring)."""
    if not has_reference(image):
        return []
    out: list[Path] = []
    path, url, sha = image.get("path"), image.get("url"), image.get("sha256")
    if path and Path(path).is_absolute():
        out.append(Path(path))
    for root in _roots(image_root):
        if path and not Path(path).is_absolute():
            out.append(root / path)
        if sha:
            out += [root / "sha256" / f"{sha}{e}" for e in EXTS]
        if url:
            u = urlsplit(url)
            if u.netloc and u.path.strip("/"):
                out.append(root / u.netloc / u.path.lstrip("/"))
    return out


def placeholder_key(image: dict | None, row_id: str = "") -> str:
    if has_reference(image):
        return str(image.get("path") or image.get("url") or image.get("sha256"))
    return f"row:{row_id}"


def placeholder_rgb(key: str) -> tuple[int, int, int]:
    """The flat colour (0-255) of the placeholder for `key`: the first three bytes of its hash."""
    h = stable_hash("placeholder", key, n=6)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def placeholder(key: str, size: int, mean=0.5, std=0.5, out: np.ndarray | None = None) -> np.ndarray:
    """A flat-colour image [3, size, size] float32, normalised like a real one."""
    if out is None:
        out = np.empty((3, size, size), np.float32)
    vals = (np.asarray(placeholder_rgb(key), np.float32) / 255.0 - _triple(mean)) / _triple(std)
    for c in range(3):
        out[c].fill(vals[c])
    return out


def preprocess(img, size: int, mean=0.5, std=0.5, out: np.ndarray | None = None) -> np.ndarray:
    """A PIL image -> [3, size, size] float32: RGB, bicubic resize, /255, (x - mean) / std."""
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    hwc = np.asarray(img, dtype=np.float32)
    m, s = _triple(mean), _triple(std)
    chw = ((hwc * np.float32(1 / 255.0) - m) / s).transpose(2, 0, 1)
    if out is None:
        return np.ascontiguousarray(chw)
    out[...] = chw
    return out


class ImageLoader:
    """Row image -> encoder-ready pixels, with the missing-image policy and counters in `stats`."""

    def __init__(self, image_root: str | Path | Sequence[str | Path] | None = None, size: int = 448,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                 missing: str = "placeholder", store=None):
        if missing not in ("placeholder", "error"):
            raise ValueError(f"missing_images must be 'placeholder' or 'error', got {missing!r}")
        self.image_root, self.size, self.missing = image_root, int(size), missing
        self.store = store  # pipeline.images.store.ImageStore: the corpus' images stage, looked up first
        self.mean, self.std = _triple(mean), _triple(std)
        self.stats = {"images_loaded": 0, "images_from_store": 0, "images_missing": 0, "images_none": 0,
                      "images_unreadable": 0}

    def load(self, image: dict | None, *, row_id: str = "", split: str = "", out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((3, self.size, self.size), np.float32)
        if not has_reference(image):
            self.stats["images_none"] += 1
            return placeholder(placeholder_key(image, row_id), self.size, self.mean, self.std, out)
        data = self.store.get(image) if self.store else None
        if data is not None:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                preprocess(im, self.size, self.mean, self.std, out)
            self.stats["images_loaded"] += 1
            self.stats["images_from_store"] += 1
            return out
        tried = image_candidates(image, self.image_root)
        for p in tried:
            if p.is_file():
                try:
                    from PIL import Image

                    with Image.open(p) as im:
                        preprocess(im, self.size, self.mean, self.std, out)
                    self.stats["images_loaded"] += 1
                    return out
                except Exception as e:  # noqa: BLE001 - a bad file is reported or counted, never fatal in placeholder mode
                    if self.missing == "error":
                        raise MissingImageError(f"image of row {row_id!r} (split {split!r}) at {p} does not "
                                                f"decode: {type(e).__name__}: {e}") from e
                    self.stats["images_unreadable"] += 1
                    return placeholder(placeholder_key(image, row_id), self.size, self.mean, self.std, out)
        if self.missing == "error":
            ref = image.get("path") or image.get("url") or image.get("sha256")
            where = ", ".join(str(p) for p in tried[:6]) if tried else "nothing (data.image_root is not set)"
            raise MissingImageError(
                f"image of row {row_id!r} (split {split!r}) not found: image {ref!r}; tried {where}. "
                f"Fix: set data.image_root to the folder the image paths are relative to (the caption "
                f"dataset's folder; URL images: a local mirror <root>/<host>/<path> or <root>/sha256/<sha256>.jpg), "
                f"or set data.missing_images: placeholder")
        self.stats["images_missing"] += 1
        return placeholder(placeholder_key(image, row_id), self.size, self.mean, self.std, out)
