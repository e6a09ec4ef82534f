"""One caption row -> a `Caption`, or a `CaptionRejection` naming the file, row, field and the fix: its id, its
image (PixMo URL, PixelProse URL + sha256, DOCCI release file under the image root or mirror {bytes, path}), the
PixelProse filters (status, watermark class, toxicity) and the caption text (normalised, long enough)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from dataclasses import dataclass

from pipeline.sources.caption_text import normalize_caption
from pipeline.core.row_fields import describe, number, text, unreadable_row
from pipeline.core.types import Caption, CaptionRejection, ImageRef, stable_hash

ID_FIELD = {"pixmo": "image_url", "docci": "example_id", "pixelprose": "uid"}
TEXT_FIELD = {"pixmo": "caption", "docci": "description", "pixelprose": "vlm_caption"}
TOXICITY_COLUMNS = ("toxicity", "severe_toxicity", "obscene", "identity_attack", "insult",
                    "threat", "sexual_explicit")
# PixelProse watermark_class_id values (docs/sources.md) and the rejection reason of each.
WATERMARK_CLASSES = {0: "watermark", 1: "clean", 2: "text_overlay"}


@dataclass(frozen=True, slots=True)
class CaptionOptions:
    """How captions are read. The filters default to none, as Kyutai's released generator."""

    max_chars: int = 1000
    min_chars: int = 20
    max_toxicity: float | None = None  # PixelProse: reject a row whose highest Detoxify score is above
    watermark_classes: tuple[int, ...] | None = None  # PixelProse: keep only these watermark_class_ids
    split: str = "train"  # hub split to load; DOCCI release rows with another `split` are skipped
    image_root: str | None = None  # DOCCI release: folder that image_file is relative to

    def __post_init__(self) -> None:
        if not 0 <= self.min_chars <= self.max_chars or self.max_chars < 2:
            raise ValueError(f"need 0 <= min_chars <= max_chars and max_chars >= 2, got {self}")
        if self.max_toxicity is not None and not 0 <= self.max_toxicity <= 1:
            raise ValueError(f"max_toxicity must be in [0, 1] (Detoxify scores), got {self.max_toxicity}")
        if self.watermark_classes is not None:
            bad = [c for c in self.watermark_classes if c not in WATERMARK_CLASSES]
            if bad or not self.watermark_classes:
                raise ValueError(f"watermark_classes {self.watermark_classes!r}: choose from "
                                 f"{', '.join(f'{k} ({v})' for k, v in WATERMARK_CLASSES.items())}")
        if not self.split.strip():
            raise ValueError("split must be a non-empty split name, e.g. train")


def caption_of(src: str, opt: CaptionOptions, root: Path | None, base: str, row: int, where: str,
               rec: dict | None, err: tuple[str, str] | None) -> Caption | CaptionRejection:
    """Row `row` (at `where`) of the shard file `base` of source `src`; `root`: DOCCI's image root."""

    cid: str | None = None  # the row's caption id once its id field is read (as an ok row's)
    image: ImageRef | None = None

    def reject(reason: str, detail: str) -> CaptionRejection:
        # keyed by its place (file, row), so two rejected rows of one id stay two rows; named as its source names it
        return CaptionRejection(stable_hash(src, base, row), src, row, reason, f"{where}: {detail}",
                                caption_id=cid, image=image)

    if rec is None:
        return reject(*unreadable_row(where, err))
    id_field, text_field = ID_FIELD[src], TEXT_FIELD[src]
    raw_id = text(rec.get(id_field))
    if raw_id is None:
        return reject("row:missing_id", f"field {id_field!r} is {describe(rec.get(id_field))}; "
                      f"every {src} row needs a non-empty {id_field!r}. Fill it in or drop the row.")
    cid = caption_id(src, raw_id)
    image, reason, problem = _image(src, rec, root)
    if image is None:
        return reject(reason, problem)
    if src == "pixelprose":
        bad = _pixelprose_filter(rec, opt)
        if bad:
            return reject(*bad)
    raw_text = rec.get(text_field)
    if raw_text is not None and not isinstance(raw_text, str):
        return reject("caption:not_text", f"field {text_field!r} is {describe(raw_text)}; expected a "
                      "string. Write the caption as text or drop the row.")
    if not isinstance(raw_text, str) or not raw_text.strip():
        return reject("caption:empty", f"field {text_field!r} is {describe(raw_text)}; expected a "
                      "non-empty string. Fill in the caption or drop the row.")
    pp = src == "pixelprose"
    caption = normalize_caption(raw_text, boilerplate=pp, meta_trim=pp, max_chars=opt.max_chars)
    if len(caption) < opt.min_chars:
        return reject("caption:too_short" if caption else "caption:empty",
                      f"field {text_field!r} is {caption!r} after normalisation, shorter than "
                      f"min_chars={opt.min_chars}. Write a real caption or lower min_chars.")
    return Caption(id=cid, source=src, text=caption, image=image, row=row)


def caption_id(src: str, raw_id: str) -> str:
    """The caption id of a row, ok or rejected. PixMo: the full sha256 hex of image_url, as Kyutai's
    released generator names its rows; the others: their id field as it is."""
    return hashlib.sha256(raw_id.encode()).hexdigest() if src == "pixmo" else raw_id


def _pixelprose_filter(rec: dict, opt: CaptionOptions) -> tuple[str, str] | None:
    """(reason, detail) when a PixelProse row is left out, else None."""
    status = rec.get("status")
    if not (isinstance(status, str) and status.strip() == "success"):
        return ("pixelprose:status", f"status is {status!r} (error_message: "
                f"{rec.get('error_message')!r}); only 'success' rows have a usable image.")
    if opt.watermark_classes is not None:
        raw = rec.get("watermark_class_id")
        cls = number(raw)
        if cls is None or cls != int(cls) or int(cls) not in WATERMARK_CLASSES:
            return ("pixelprose:watermark_unknown", f"watermark_class_id is {describe(raw)}; expected "
                    f"0 (watermark), 1 (clean) or 2 (text overlay) to apply watermark_classes="
                    f"{list(opt.watermark_classes)}. Fix the value, or drop the watermark filter.")
        if int(cls) not in opt.watermark_classes:
            name = WATERMARK_CLASSES[int(cls)]
            return (f"pixelprose:{name}", f"watermark_class_id={int(cls)} ({name}) is not in "
                    f"watermark_classes={list(opt.watermark_classes)}; add {int(cls)} to keep such rows.")
    if opt.max_toxicity is not None:
        scores = {c: number(rec.get(c)) for c in TOXICITY_COLUMNS}
        scores = {c: v for c, v in scores.items() if v is not None}
        if scores and max(scores.values()) > opt.max_toxicity:
            col = max(scores, key=scores.__getitem__)
            return ("pixelprose:toxicity", f"{col}={scores[col]:.3f} > max_toxicity={opt.max_toxicity} "
                    "(raise max_toxicity, or drop it, to keep the row).")
    return None


def _image(src: str, rec: dict, root: Path | None) -> tuple[ImageRef | None, str, str]:
    """(image, reason, detail): image None with the rejection reason and detail when unusable."""
    fill = " Every caption needs its image; fill it in or drop the row."
    if src == "pixmo":
        return ImageRef(url=text(rec.get("image_url"))), "", ""
    if src == "pixelprose":
        url = text(rec.get("url"))
        if url is None:
            return None, "image:missing", f"field 'url' is {describe(rec.get('url'))}.{fill}"
        sha = rec.get("sha256")
        return ImageRef(url=url, sha256=sha.strip() if isinstance(sha, str) and sha.strip() else None), "", ""
    if "image_file" in rec and rec.get("image") is None:  # docci release: relative to the image root
        name = text(rec.get("image_file"))
        if name is None:
            return None, "image:missing", f"field 'image_file' is {describe(rec.get('image_file'))}.{fill}"
        if root is None:
            return ImageRef(path=name), "", ""
        path = root / name
        if not path.is_file():
            return None, "image:not_found", (
                f"image_file {name!r} is not in the image root {str(root)!r} (looked for {str(path)!r}). "
                "Fix: extract docci_images.tar.gz there or pass the folder that holds the images "
                "(--image-root / image_root), or drop the row.")
        return ImageRef(path=str(path)), "", ""
    img = rec.get("image")  # docci mirror: {bytes, path} (Parquet / datasets) or a path string
    if isinstance(img, str) and img.strip():
        return ImageRef(path=img.strip()), "", ""
    if isinstance(img, dict):
        data, path = img.get("bytes"), text(img.get("path"))
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) and data else None
        if sha or path:
            return ImageRef(path=path, sha256=sha), "", ""
    return None, "image:missing", (f"field 'image' is {describe(img)}; expected a path or "
                                   f"{{bytes, path}}.{fill}")
