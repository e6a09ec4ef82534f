"""One benchmark row -> its key, image and question/answer pairs (or `BadRow` with the rejection reason and a
detail naming the field and the fix), one parser per benchmark (`PARSERS`); the column schemas are in
pipeline/sources/benchmarks.py's docstring and docs/sources.md."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable

from pipeline.core.row_fields import describe as _describe, text as _text
from pipeline.core.types import ImageRef, stable_hash, stable_int

RENDERED_TEXT_QUESTIONS: tuple[str, ...] = (
    "What does the text say?",
    "Can you read me what's written here?",
    "What is written in the image?",
    "Could you tell me what this note says?",
    "What does it say on there?",
)


def _count(value: Any) -> str | None:
    """A TallyQA answer as written digits: 3, 3.0, "3" -> "3"; None when not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float):
        if math.isnan(value) or value != int(value):
            return None
        value = int(value)
    return str(value) if isinstance(value, int) and value >= 0 else None


def image_of(value: Any, url: Any = None) -> ImageRef | None:
    """ImageRef from a path string or a {bytes, path} struct (sha256 of the bytes, never bytes)."""
    url = _text(url)
    if isinstance(value, str) and value.strip():
        v = value.strip()
        return ImageRef(url=v, path=None) if v.startswith(("http://", "https://")) else ImageRef(url=url, path=v)
    if isinstance(value, dict):
        data, path = value.get("bytes"), _text(value.get("path"))
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, (bytes, bytearray)) and data else None
        if sha or path:
            return ImageRef(url=url, path=path, sha256=sha)
    if isinstance(value, (bytes, bytearray)) and value:  # webdataset png column, undecoded
        return ImageRef(url=url, sha256=hashlib.sha256(value).hexdigest())
    return ImageRef(url=url) if url else None


class BadRow(Exception):
    """A row that cannot become a dialogue: `reason` (e.g. qa:empty) and `detail` (field and fix)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _need_text(rec: dict, field: str, what: str = "question") -> str:
    v = rec.get(field)
    t = v.strip() if isinstance(v, str) else None
    if not t:
        raise BadRow("qa:empty", f"field {field!r} is {_describe(v)}; expected a non-empty {what} "
                      "string. Fill it in or drop the row.")
    return t


def _need_image(rec: dict, field: str, url_field: str | None = None) -> ImageRef:
    img = image_of(rec.get(field), rec.get(url_field) if url_field else None)
    if img is None:
        raise BadRow("image:missing", f"field {field!r} is {_describe(rec.get(field))}; expected a "
                      "path or {bytes, path}. Every QA row needs its image; fill it in or drop the row.")
    return img


# Each parser returns (key, image, [(question, answer), ...]) or raises BadRow.
Parsed = tuple[str, ImageRef, list[tuple[str, str]]]


def _parse_tallyqa(rec: dict) -> Parsed:
    if "texts" in rec or "images" in rec:
        return _parse_cauldron(rec)
    img = _need_image(rec, "image", "image_url" if rec.get("image_url") else "url")
    q = _need_text(rec, "question")
    a = _count(rec.get("answer"))
    if a is None:
        raise BadRow("qa:empty", f"field 'answer' is {_describe(rec.get('answer'))}; expected a "
                      "non-negative integer count. Fix the answer or drop the row.")
    key = _text(rec.get("question_id")) or stable_hash("tallyqa", img.path or img.url or img.sha256, q)
    return key, img, [(q, a)]


def _parse_cauldron(rec: dict) -> Parsed:
    """A the_cauldron row: `images` (list of Image structs), `texts` (list of {user, assistant, source})."""
    images, texts = rec.get("images"), rec.get("texts")
    if not isinstance(images, list) or not images:
        raise BadRow("image:missing", f"field 'images' is {_describe(images)}; expected a non-empty list of "
                      "images {bytes, path}. Every QA row needs its image; fill it in or drop the row.")
    img = image_of(images[0])
    if img is None:
        raise BadRow("image:missing", f"field 'images'[0] is {_describe(images[0])}; expected an image "
                      "{bytes, path}. Fill it in or drop the row.")
    if not isinstance(texts, list) or not texts:
        raise BadRow("qa:empty", f"field 'texts' is {_describe(texts)}; expected a non-empty list of "
                      "{user, assistant} turns. Fill it in or drop the row.")
    pairs = []
    for j, turn in enumerate(texts):
        if not isinstance(turn, dict):
            raise BadRow("qa:empty", f"field 'texts'[{j}] is {_describe(turn)}; expected a {{user, assistant}} "
                          "object. Fix it or drop the row.")
        for role in ("user", "assistant"):
            v = turn.get(role)
            if not (isinstance(v, str) and v.strip()):
                raise BadRow("qa:empty", f"field 'texts'[{j}].{role} is {_describe(v)}; expected a non-empty "
                              "string. Fill it in or drop the row.")
        pairs.append((turn["user"].strip(), turn["assistant"].strip()))
    key = stable_hash("tallyqa", img.sha256 or img.path or img.url, pairs[0][0])
    return key, img, pairs


def _parse_ocrvqa(rec: dict) -> Parsed:
    key = _text(rec.get("image_id"))
    if key is None:
        raise BadRow("row:missing_id", f"field 'image_id' is {_describe(rec.get('image_id'))}; every "
                      "ocrvqa row needs a non-empty 'image_id'. Fill it in or drop the row.")
    img = _need_image(rec, "image", "image_url")
    qs, ans = rec.get("questions"), rec.get("answers")
    if not isinstance(qs, list) or not qs:
        raise BadRow("qa:empty", f"field 'questions' is {_describe(qs)}; expected a non-empty list of "
                      "strings. Fill it in or drop the row.")
    if not isinstance(ans, list) or len(ans) != len(qs):
        raise BadRow("qa:mismatch", f"field 'answers' is {_describe(ans)} but 'questions' has "
                      f"{len(qs)} item(s); expected one answer per question. Fix the lists or drop the row.")
    pairs = []
    for j, (q, a) in enumerate(zip(qs, ans)):
        for field, v in (("questions", q), ("answers", a)):
            if not (isinstance(v, str) and v.strip()):
                raise BadRow("qa:empty", f"field {field!r}[{j}] is {_describe(v)}; expected a non-empty "
                              "string. Fill it in or drop the pair.")
        pairs.append((q.strip(), a.strip()))
    return key, img, pairs


def _parse_renderedtext(rec: dict) -> Parsed:
    field = "png" if "png" in rec else "image"
    img = _need_image(rec, field)
    if "json" in rec:
        text = _rendered_lines(rec.get("json"))
    else:
        text = _need_text(rec, "text", "rendered text")
    key = _text(rec.get("__key__")) or stable_hash("renderedtext", img.sha256 or img.path, text)
    question = RENDERED_TEXT_QUESTIONS[stable_int("renderedtext", key) % len(RENDERED_TEXT_QUESTIONS)]
    return key, img, [(question, text)]


def _rendered_lines(side: Any) -> str:
    """The text of a RenderedText sidecar: `ocr_annotation.text`, a list of lines, joined with spaces."""
    if isinstance(side, (str, bytes)):  # the sidecar as raw JSON text (a webdataset .json member)
        try:
            side = json.loads(side)
        except ValueError as e:
            raise BadRow("qa:empty", f"field 'json' is not valid JSON ({e}); expected the webdataset sidecar "
                          "{ocr_annotation: {text: [lines]}}. Fix it or drop the row.") from None
    ann = side.get("ocr_annotation") if isinstance(side, dict) else None
    lines = ann.get("text") if isinstance(ann, dict) else None
    if isinstance(lines, str):
        lines = [lines]
    if not isinstance(lines, list):
        where = "field 'json'" if not isinstance(side, dict) else \
            "field 'json'.ocr_annotation" if not isinstance(ann, dict) else "field 'json'.ocr_annotation.text"
        value = side if not isinstance(side, dict) else ann if not isinstance(ann, dict) else lines
        raise BadRow("qa:empty", f"{where} is {_describe(value)}; expected the webdataset sidecar "
                      "{ocr_annotation: {text: [lines]}}. Fill it in or drop the row.")
    text = " ".join(" ".join(x.split()) for x in lines if isinstance(x, str) and x.strip())
    if not text:
        raise BadRow("qa:empty", f"field 'json'.ocr_annotation.text is {_describe(lines)}; expected at least "
                      "one non-empty line of rendered text. Fill it in or drop the row.")
    return text


def _parse_docvqa(rec: dict) -> Parsed:
    key = _text(rec.get("questionId"))
    if key is None:
        raise BadRow("row:missing_id", f"field 'questionId' is {_describe(rec.get('questionId'))}; "
                      "every docvqa row needs a 'questionId'. Fill it in or drop the row.")
    img = _need_image(rec, "image")
    q = _need_text(rec, "question")
    ans = rec.get("answers")
    first = ans[0] if isinstance(ans, list) and ans else None
    if not (isinstance(first, str) and first.strip()):
        raise BadRow("qa:empty", f"field 'answers' is {_describe(ans)}; expected a list whose first "
                      "item is a non-empty string (test splits have no answers: use train).")
    return key, img, [(q, first.strip())]


PARSERS: dict[str, Callable[[dict], Parsed]] = {
    "tallyqa": _parse_tallyqa, "ocrvqa": _parse_ocrvqa,
    "renderedtext": _parse_renderedtext, "docvqa": _parse_docvqa,
}
