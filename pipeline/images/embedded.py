"""Images embedded in a benchmark dataset (TallyQA, OCR-VQA, RenderedText, DocVQA): their rows carry only
the sha256 of the bytes (pipeline/sources/benchmarks.py), so the images stage reads the bytes back from the
benchmark source, shard by shard (dialogue shard i was made from source shard i), and stores them as
they are (no fetch: `fetched_from` "embedded")."""
from __future__ import annotations

import hashlib
from typing import Any, Iterator


def blobs(value: Any, depth: int = 0) -> Iterator[bytes]:
    """The image bytes in a record value: `{bytes, path}` structs (datasets Image), raw bytes, lists of them."""
    if depth > 3:
        return
    if isinstance(value, (bytes, bytearray)) and value:
        yield bytes(value)
    elif isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, (bytes, bytearray)) and data:
            yield bytes(data)
        else:
            for v in value.values():
                yield from blobs(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from blobs(v, depth + 1)


def shard_images(source: Any, index: int, wanted: set[str]) -> dict[str, bytes]:
    """sha256 -> bytes of the wanted images embedded in shard `index` of a benchmark source."""
    out: dict[str, bytes] = {}
    if not wanted or not 0 <= index < len(source.shards):
        return out
    for rec in source.raw_records(index):
        for data in blobs(rec):
            sha = hashlib.sha256(data).hexdigest()
            if sha in wanted and sha not in out:
                out[sha] = data
                if len(out) == len(wanted):
                    return out
    return out
