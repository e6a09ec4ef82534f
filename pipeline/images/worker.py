"""The images worker: a chunk of image references -> image rows, through img2dataset's Downloader.

img2dataset (https://github.com/rom1504/img2dataset, 1.47.0) does the work it is built for: a thread
pool per worker, sha256 verification against the row's hash (`verify_hash`), resizing and JPEG
encoding (`Resizer`), writing a Parquet shard with a status and error per sample, and its statistics
(`NNNNN_stats.json`). Its fetch (`downloader.download_image_with_retry`, a plain `urllib.request.urlopen`)
has no hook for an address policy, a byte cap or a pixel cap, so this worker puts
`pipeline.images.safety` in its place (module attribute, in this worker process only): the safe
fetch, the image check, and retries of transient failures only. Local files (DOCCI release paths) go
through the same Downloader, their bytes handed over by key; nothing that a dataset calls a URL is
ever read from disk.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pipeline.images.safety import FetchPolicy, Refused, check_image, fetch, mirrored, opener
from pipeline.images.schema import ImageOptions, status_of

_LOCAL = "ssvd-local:"  # url column value of a local file (never a scheme fetch() accepts)
_TRANSIENT = ("image:timeout", "image:server_error", "image:unreachable")


@dataclass(slots=True)
class ImageItem:
    """One unique image reference of a split (the first dialogue row that has it)."""

    id: str
    input_shard: int
    input_row: int
    url: str | None
    path: str | None
    sha256: str | None
    data: bytes | None = None  # embedded in the source dataset (benchmarks): stored as it is, never fetched


def user_agent(token: str) -> str:
    try:
        v = metadata.version("ssvd")
    except metadata.PackageNotFoundError:
        v = "0"
    return f"ssvd-images/{v} (compatible; {token}; +https://github.com/rom1504/img2dataset)"


def versions() -> dict:
    out = {}
    for p in ("img2dataset", "opencv-python-headless", "albumentations", "pillow"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


class ImageWorker:
    """Runs chunks of ImageItems (a Ray actor through RayPool, or in-process through LocalPool)."""

    _patch_lock = threading.Lock()

    def __init__(self, opts: ImageOptions):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates on import
        import img2dataset.downloader as d2  # noqa: F401  (imports cv2, albumentations, webdataset)
        from img2dataset.resizer import Resizer

        self.opts = opts
        self.policy = FetchPolicy(allow=opts.allow, max_bytes=opts.max_bytes, timeout_s=opts.timeout_s,
                                  user_agent=user_agent(opts.user_agent_token),
                                  user_agent_token=opts.user_agent_token.strip().lower(),
                                  disallowed_header_directives=tuple(opts.disallowed_header_directives),
                                  mirrors=opts.mirrors)
        self.policy.networks  # noqa: B018 - a bad allow-list entry fails here, before any work
        self.resizer = Resizer(image_size=opts.image_size, resize_mode=opts.resize_mode, resize_only_if_bigger=True,
                               encode_quality=opts.encode_quality, encode_format=opts.encode_format,
                               min_image_size=opts.min_side, max_image_area=opts.max_pixels)
        self._local: dict[int, tuple[bytes | None, str]] = {}
        self._calls = 0

    def info(self) -> dict:
        return {"pid": os.getpid(), "software": versions(), "user_agent": self.policy.user_agent}

    # --- the fetch img2dataset calls (its download_image_with_retry signature) ---
    def _download(self, row, timeout, retries, user_agent_token, disallowed_header_directives,
                  ignore_ssl_certificate=False):
        import io

        key, url = row
        if key in self._local:
            data, err = self._local[key]
            return (key, io.BytesIO(data), None) if data is not None else (key, None, err)
        op = opener(self.policy)
        err = ""
        for _ in range(self.opts.retries + 1):
            try:
                data = fetch(mirrored(url, self.policy), self.policy, op)
                check_image(data, self.opts.max_pixels)
                return key, io.BytesIO(data), None
            except Refused as e:
                err = f"ssvd|{e.reason}|{e.detail}"
                if e.reason not in _TRANSIENT:
                    break
        return key, None, err

    def _read_local(self, item: ImageItem) -> tuple[bytes | None, str]:
        p = Path(item.path)
        if not p.is_file():
            return None, f"ssvd|image:not_found|no file {item.path!r}"
        if p.stat().st_size > self.opts.max_bytes:
            return None, f"ssvd|image:too_large|{p.stat().st_size} bytes > max_bytes {self.opts.max_bytes}"
        return self._check_local(p.read_bytes())

    def _check_local(self, data: bytes) -> tuple[bytes | None, str]:
        if len(data) > self.opts.max_bytes:
            return None, f"ssvd|image:too_large|{len(data)} bytes > max_bytes {self.opts.max_bytes}"
        try:
            check_image(data, self.opts.max_pixels)
        except Refused as e:
            return None, f"ssvd|{e.reason}|{e.detail}"
        return data, ""

    def run(self, items: list[ImageItem]) -> list[dict]:
        rows: list[dict] = []
        by_id = {it.id: it for it in items}
        todo = []
        for it in items:
            if it.url or it.path or it.data is not None:
                todo.append(it)
            else:
                rows.append(_row(it, "image:embedded_unavailable",
                                 "the image is embedded in the source dataset; only its sha256 is in the rows"))
        # one Downloader call for the rows with a sha256 to verify, one for the others (img2dataset
        # verifies every row of a call against its hash column)
        for verify in (True, False):
            group = [it for it in todo if bool(it.sha256) == verify]
            if group:
                rows += self._downloader_call(group, verify, by_id)
        return rows

    def _downloader_call(self, group: list[ImageItem], verify: bool, by_id: dict) -> list[dict]:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import img2dataset.downloader as d2
        from img2dataset.writer import ParquetSampleWriter

        tmp = Path(tempfile.mkdtemp(prefix="ssvd-images-"))
        try:
            self._local = {}
            urls = []
            for k, it in enumerate(group):
                if it.data is not None:  # embedded bytes first: a benchmark's `path` is a name in the dataset
                    self._local[k] = self._check_local(it.data)
                    urls.append(f"{_LOCAL}{k}")
                elif it.url:
                    urls.append(it.url)
                else:
                    self._local[k] = self._read_local(it)
                    urls.append(f"{_LOCAL}{k}")
            cols = {"url": urls, "ssvd_id": [it.id for it in group]}
            column_list = ["url", "ssvd_id"]
            if verify:
                cols["sha256"] = [it.sha256.lower() for it in group]
                column_list.append("sha256")
            shard = tmp / "input.feather"
            with pa.OSFile(str(shard), "wb") as f, pa.ipc.new_file(f, pa.table(cols).schema) as w:
                w.write_table(pa.table(cols))
            out = tmp / "out"
            out.mkdir()
            dl = d2.Downloader(
                sample_writer_class=ParquetSampleWriter, resizer=self.resizer, thread_count=self.opts.threads,
                save_caption=False, extract_exif=False, output_folder=str(out), column_list=column_list,
                timeout=self.opts.timeout_s, number_sample_per_shard=max(len(group), 10), oom_shard_count=5,
                compute_hash="sha256", verify_hash_type="sha256" if verify else None,
                encode_format=self.opts.encode_format, retries=self.opts.retries,
                user_agent_token=self.opts.user_agent_token,
                disallowed_header_directives=list(self.opts.disallowed_header_directives) or None)
            with self._patch_lock:  # img2dataset looks its fetch up as a module attribute at call time
                saved = d2.download_image_with_retry
                d2.download_image_with_retry = self._download
                try:
                    ok, _ = dl((self._calls, str(shard)))
                finally:
                    d2.download_image_with_retry = saved
            self._calls += 1
            files = sorted(out.glob("*.parquet"))
            got = {r["ssvd_id"]: r for f in files for r in pq.read_table(f).to_pylist()} if ok else {}
            rows = []
            for it in group:
                r = got.get(it.id)
                if r is None:
                    rows.append(_row(it, "image:error", "img2dataset wrote no result for it"))
                    continue
                rows.append(self._result(it, r))
            return rows
        finally:
            self._local = {}
            shutil.rmtree(tmp, ignore_errors=True)

    def _result(self, it: ImageItem, r: dict) -> dict:
        fetched = "embedded" if it.data is not None else "file" if not it.url else mirrored(it.url, self.policy)
        if r.get("status") == "success":
            data = r.get(self.opts.encode_format)
            return {**_row(it, "", ""), "status": "ok", "fetched_from": fetched,
                    "content_sha256": r.get("sha256"), "width": r.get("width"), "height": r.get("height"),
                    "original_width": r.get("original_width"), "original_height": r.get("original_height"),
                    "format": self.opts.encode_format, "image": data}
        msg = r.get("error_message") or r.get("status") or "unknown"
        reason, detail = classify(msg)
        row = _row(it, reason, detail)
        row["fetched_from"] = fetched
        return row


def classify(message: str) -> tuple[str, str]:
    """img2dataset's error_message -> (reason, detail)."""
    if message.startswith("ssvd|"):
        _, reason, detail = message.split("|", 2)
        return reason, detail
    m = message.lower()
    if m == "hash mismatch":
        return "image:hash_mismatch", "sha256 of the bytes differs from the row's sha256"
    if m == "image too small":
        return "image:too_small", message
    if m in ("image area too large", "aspect ratio too large"):
        return "image:too_many_pixels", message
    if "decoding error" in m:
        return "image:not_an_image", message
    if "x-robots-tag" in m:
        return "image:opt_out", message
    return "image:resize_error", message


def _row(it: ImageItem, reason: str, detail: str) -> dict:
    return {"id": it.id, "status": status_of(reason) if reason else "ok", "reason": reason, "error": detail,
            "url": it.url, "path": it.path, "sha256": it.sha256, "fetched_from": None, "content_sha256": None,
            "width": None, "height": None, "original_width": None, "original_height": None, "format": None,
            "image": None, "input_shard": it.input_shard, "input_row": it.input_row}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
