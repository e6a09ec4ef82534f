"""The column schemas of the real input sources, as docs/sources.md records them (one block per schema).

Types are written in one small notation for Parquet (Arrow) and JSON files alike: `string`, `int64`,
`float64`, `bool`, `binary`, `image` (the `datasets` Image struct {bytes: binary, path: string}),
`list<T>`, `struct<a: T, b: T>`. `schema_of_table` / `schema_of_records` give a file's schema in that
notation; tests/pipeline/sources/test_source_schemas.py checks that the fixtures, this module and the
` ```schema NAME ` blocks of docs/sources.md agree.
"""
from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

IMAGE = "image"

# name -> {column: type}. Where each fact was checked: docs/sources.md.
SCHEMAS: dict[str, dict[str, str]] = {
    "pixmo": {  # allenai/pixmo-cap
        "image_url": "string", "caption": "string", "transcripts": "list<string>",
    },
    "docci-release": {  # docci_descriptions.jsonlines (storage.googleapis.com/docci/data/)
        "example_id": "string", "split": "string", "image_file": "string", "description": "string",
    },
    "docci-mirror": {  # a Parquet mirror with the features of google/docci's loader
        "image": IMAGE, "example_id": "string", "description": "string",
    },
    "pixelprose": {  # tomg-group-umd/pixelprose data/vlm_captions_*.parquet
        "uid": "string", "url": "string", "key": "string", "status": "string",
        "original_caption": "string", "vlm_model": "string", "vlm_caption": "string",
        "toxicity": "float64", "severe_toxicity": "float64", "obscene": "float64",
        "identity_attack": "float64", "insult": "float64", "threat": "float64",
        "sexual_explicit": "float64", "watermark_class_id": "float64",
        "watermark_class_score": "float64", "aesthetic_score": "float64", "error_message": "string",
        "width": "int64", "height": "int64", "original_width": "float64", "original_height": "float64",
        "exif": "string", "sha256": "string", "image_id": "string", "author": "string",
        "subreddit": "string", "score": "int64",
    },
    "tallyqa-cauldron": {  # HuggingFaceM4/the_cauldron, config tallyqa
        "images": f"list<{IMAGE}>",
        "texts": "list<struct<user: string, assistant: string, source: string>>",
    },
    "tallyqa-release": {  # TallyQA train.json (github.com/manoja328/TallyQA_dataset)
        "image": "string", "answer": "int64", "data_source": "string", "question": "string",
        "image_id": "int64", "question_id": "int64", "issimple": "bool",
    },
    "ocrvqa": {  # howard-hou/OCR-VQA
        "image": IMAGE, "image_id": "string", "questions": "list<string>", "answers": "list<string>",
        "ocr_tokens": "list<string>",
        "ocr_info": "list<struct<word: string, bounding_box: struct<width: float64, height: float64, "
                    "top_left_x: float64, top_left_y: float64>>>",
        "title": "string", "authorName": "string", "genre": "string", "image_width": "int64",
        "image_height": "int64", "image_url": "string", "set_name": "string",
    },
    "renderedtext": {  # wendlerc/RenderedText webdataset as `datasets` reads it
        "__key__": "string", "__url__": "string", "png": IMAGE,
        "json": "struct<ocr_annotation: struct<text: list<string>>>",
    },
    "docvqa": {  # HuggingFaceM4/DocumentVQA (same columns as lmms-lab/DocVQA)
        "questionId": "string", "question": "string", "question_types": "list<string>",
        "image": IMAGE, "docId": "int64", "ucsf_document_id": "string",
        "ucsf_document_page_no": "string", "answers": "list<string>",
    },
}


def type_of_arrow(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_of_arrow(t.value_type)}>"
    if pa.types.is_struct(t):
        fields = [(t.field(i).name, type_of_arrow(t.field(i).type)) for i in range(t.num_fields)]
        if fields == [("bytes", "binary"), ("path", "string")]:
            return IMAGE
        return "struct<" + ", ".join(f"{n}: {ty}" for n, ty in fields) + ">"
    return str(t)


def schema_of_table(schema: pa.Schema) -> dict[str, str]:
    return {f.name: type_of_arrow(f.type) for f in schema}


def type_of_json(values: Iterable[Any]) -> str | None:
    """The type of a JSON column from its values (None when every value is null)."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int):
            return "int64"
        if isinstance(v, float):
            return "float64"
        if isinstance(v, str):
            return "string"
        if isinstance(v, list):
            inner = type_of_json(x for item in [v] for x in item)
            return f"list<{inner}>"
        if isinstance(v, dict):
            fields = [(k, type_of_json([v[k]])) for k in v]
            if [n for n, _ in fields] == ["bytes", "path"]:
                return IMAGE
            return "struct<" + ", ".join(f"{n}: {ty}" for n, ty in fields) + ">"
    return None


def schema_of_records(records: list[dict]) -> dict[str, str | None]:
    cols: dict[str, None] = {}
    for r in records:
        cols.update(dict.fromkeys(r))
    return {c: type_of_json(r.get(c) for r in records) for c in cols}


def parse_doc_blocks(text: str) -> dict[str, dict[str, str]]:
    """The ```schema NAME blocks of docs/sources.md: one `column: type` a line."""
    out: dict[str, dict[str, str]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if head.startswith("```schema "):
            name = head.split(None, 1)[1].strip()
            cols: dict[str, str] = {}
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                line = lines[i].strip()
                if line:
                    col, _, ty = line.partition(":")
                    cols[col.strip()] = ty.strip()
                i += 1
            out[name] = cols
        i += 1
    return out
