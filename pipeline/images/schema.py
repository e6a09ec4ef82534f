"""Image shards: one row per image (keyed by its image id), the options of the stage and the reasons.

An image shard `DIR/<split>/images/images-NNNNN.parquet` holds the images first referenced by the
ok dialogues of dialogue shard NNNNN (each image once per split). `status` is "ok" (pixels in
`image`), "rejected" (a permanent reason: dead link, not an image, hash mismatch, refused address...)
or "failed" (a transient one: timeout, server error, unreachable; `--retry-failed` tries them again).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import pyarrow as pa

IMAGES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # image id (image_id())
        ("status", pa.string()),  # ok | rejected | failed
        ("reason", pa.string()),  # image:<reason> ("" when ok)
        ("error", pa.string()),  # what happened, for a person
        ("url", pa.string()),  # the reference as the dialogue rows carry it
        ("path", pa.string()),
        ("sha256", pa.string()),  # expected sha256 of the original bytes (PixelProse), verified
        ("fetched_from", pa.string()),  # the URL requested (after --mirror), "file" or "embedded"
        ("content_sha256", pa.string()),  # sha256 of the bytes received
        ("width", pa.int32()),  # stored image
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("format", pa.string()),  # "jpg"
        ("image", pa.binary()),  # the encoded stored image (None unless ok)
        ("input_shard", pa.int32()),  # the first dialogue row that references it
        ("input_row", pa.int64()),
    ],
    metadata={"ssvd.kind": "images", "ssvd.schema_version": "1"},
)

# Every reason an image can end with (docs/images.md); "failed" ones are transient and retried with --retry-failed.
REASONS: dict[str, tuple[str, str]] = {
    "image:dead_link": ("rejected", "HTTP 4xx (404, 410, 403, ...)"),
    "image:server_error": ("failed", "HTTP 5xx"),
    "image:timeout": ("failed", "no answer, or not all bytes, within --timeout-s"),
    "image:unreachable": ("failed", "DNS failure, connection refused or reset, incomplete transfer"),
    "image:not_an_image": ("rejected", "the bytes are not an image PIL or OpenCV can decode (an HTML page, ...)"),
    "image:truncated": ("rejected", "an image whose data ends early"),
    "image:hash_mismatch": ("rejected", "sha256 of the bytes differs from the row's sha256"),
    "image:too_small": ("rejected", "shorter side below --min-side pixels"),
    "image:too_large": ("rejected", "more than --max-bytes bytes"),
    "image:too_many_pixels": ("rejected", "more than --max-pixels decoded pixels (decompression bomb guard)"),
    "image:refused_address": ("rejected", "the host resolves (or a redirect leads) to a loopback, private, "
                                          "link-local, cloud-metadata or other non-public address"),
    "image:refused_scheme": ("rejected", "not http(s): file://, ftp://, data:, ... (also as a redirect target)"),
    "image:too_many_redirects": ("rejected", "more redirects than urllib follows (10)"),
    "image:opt_out": ("rejected", "the site opts out with X-Robots-Tag (noai, noimageai, noindex, noimageindex)"),
    "image:not_found": ("rejected", "a local image path that does not exist"),
    "image:embedded_unavailable": ("rejected", "an image embedded in the source dataset (benchmarks): "
                                               "only its sha256 is in the rows"),
    "image:resize_error": ("rejected", "img2dataset's resizer failed"),
    "image:error": ("failed", "anything else (the error says what)"),
}


def status_of(reason: str) -> str:
    return REASONS.get(reason, ("failed", ""))[0]


def image_id(url: str | None, path: str | None = None, sha256: str | None = None) -> str | None:
    """The stable id of an image reference: the sha256 hex of its URL (PixMo's caption id, as Kyutai's
    released generator names rows), else the content sha256 (embedded images), else the sha256 hex of
    "path:" + its path. None when the reference is empty."""
    if url:
        return hashlib.sha256(url.encode()).hexdigest()
    if sha256:
        return sha256.lower()
    if path:
        return hashlib.sha256(("path:" + path).encode()).hexdigest()
    return None


def ref_id(image: dict | None) -> str | None:
    image = image or {}
    return image_id(image.get("url"), image.get("path"), image.get("sha256"))


DISALLOWED = ("noai", "noimageai", "noindex", "noimageindex")  # img2dataset's default


@dataclass(frozen=True)
class ImageOptions:
    """How images are fetched and stored (recorded in the stage's run record and manifest.json).

    Storage: img2dataset's `keep_ratio` resize with `resize_only_if_bigger`, the shorter side brought
    down to `image_size` (448: the SigLIP / PaliGemma 2 encoder of MoshiVis), JPEG quality 95. The
    encoder's processor squashes any image to 448 x 448; a stored image keeps both sides >= 448 (when
    the original had them), so the trainer's squash is a pure downscale, as on the original."""

    image_size: int = 448
    resize_mode: str = "keep_ratio"
    encode_format: str = "jpg"
    encode_quality: int = 95
    min_side: int = 0  # shorter side below this: image:too_small (img2dataset's default 0: no minimum)
    max_bytes: int = 32 << 20  # per image, before decoding
    max_pixels: int = 64_000_000  # decoded pixels (width x height), checked from the header before decoding
    timeout_s: float = 10.0
    retries: int = 1  # transient failures only (timeout, 5xx, unreachable)
    threads: int = 32  # img2dataset download threads per worker
    user_agent_token: str = "ssvd"
    disallowed_header_directives: tuple[str, ...] = DISALLOWED
    # deployment, not content (left out of the config hash): addresses allowed although not public
    # (e.g. 127.0.0.1 for the tests' server), and URL prefix rewrites (ORIGINAL=MIRROR)
    allow: tuple[str, ...] = field(default=(), compare=False)
    mirrors: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def errors(self) -> list[str]:
        e = []
        if self.image_size < 1 or self.min_side < 0 or self.max_bytes < 1 or self.max_pixels < 1:
            e.append("image_size, max_bytes, max_pixels must be >= 1, min_side >= 0")
        if self.resize_mode not in ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"):
            e.append(f"resize_mode {self.resize_mode!r}: one of img2dataset's no, keep_ratio, center_crop, border, "
                     "keep_ratio_largest")
        if self.encode_format not in ("jpg", "png", "webp"):
            e.append(f"encode_format {self.encode_format!r}: jpg, png or webp")
        if self.timeout_s <= 0 or self.retries < 0 or self.threads < 1:
            e.append("timeout_s > 0, retries >= 0, threads >= 1")
        return e

    def content(self) -> dict:
        """What decides the stored bytes (the stage config); allow and mirrors are left out."""
        d = asdict(self)
        d.pop("allow")
        d.pop("mirrors")
        d["disallowed_header_directives"] = list(self.disallowed_header_directives)
        return d


def parse_mirror(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"--mirror {text!r}: expected ORIGINAL_PREFIX=MIRROR_PREFIX, e.g. "
                         "https://images.example.org/=http://127.0.0.1:8000/")
    a, b = text.split("=", 1)
    if not a or not b.startswith(("http://", "https://")):
        raise ValueError(f"--mirror {text!r}: both prefixes must be given, the mirror as http(s)://...")
    return a, b
