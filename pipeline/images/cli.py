"""`ssvd images`: the command's options and body (registered in cli.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.core.cli_options import NoProgress, Overwrite, RayAddress, fail

AllowAddress = Annotated[Optional[list[str]], typer.Option(
    "--allow-address", help="An IP or CIDR that may be fetched although it is not public (loopback, private, "
    "link-local); repeat for several. Only for a server you trust, e.g. 127.0.0.1 for a local mirror or the "
    "tests' server. Default: none; cloud metadata addresses are refused unless listed here.")]
Mirror = Annotated[Optional[list[str]], typer.Option(
    "--mirror", "--image-mirror", help="ORIGINAL_PREFIX=MIRROR_PREFIX: fetch URLs that start with ORIGINAL_PREFIX from the mirror "
    "instead (the image id stays that of the original URL); repeatable. The mirror's address obeys "
    "--allow-address like any other.")]


def options(image_size: int = 448, min_side: int = 0, max_bytes: int = 32 << 20, max_pixels: int = 64_000_000,
            timeout_s: float = 10.0, retries: int = 1, threads: int = 32, allow=None, mirror=None):
    from pipeline.images.safety import parse_allow
    from pipeline.images.schema import ImageOptions, parse_mirror

    o = ImageOptions(image_size=image_size, min_side=min_side, max_bytes=max_bytes, max_pixels=max_pixels,
                     timeout_s=timeout_s, retries=retries, threads=threads, allow=parse_allow(allow or ()),
                     mirrors=tuple(parse_mirror(m) for m in mirror or ()))
    errs = o.errors()
    if errs:
        raise ValueError("; ".join(errs))
    return o


def images(
    input: Annotated[Path, typer.Option("--in", help="A dialogues output directory (its ok rows' image references).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: images-NNNNN.parquet (one row per image, keyed by image id) + run record.")],
    allow_address: AllowAddress = None,
    mirror: Mirror = None,
    image_size: Annotated[int, typer.Option("--image-size", min=1, help="Shorter side of the stored image (img2dataset keep_ratio, only downscaled): 448 for MoshiVis' SigLIP encoder.")] = 448,
    min_side: Annotated[int, typer.Option("--min-side", min=0, help="Images whose shorter side is below this are rejected (image:too_small); 0: no minimum, as img2dataset.")] = 0,
    max_bytes: Annotated[int, typer.Option("--max-bytes", min=1, help="Most bytes read per image (image:too_large).")] = 32 << 20,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Most decoded pixels per image, checked from the header before decoding (image:too_many_pixels).")] = 64_000_000,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.1, help="Per image: connection, each read and the whole transfer.")] = 10.0,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries of a transient failure (timeout, 5xx, unreachable).")] = 1,
    threads: Annotated[int, typer.Option("--threads", min=1, help="img2dataset download threads per worker.")] = 32,
    workers: Annotated[int, typer.Option("--workers", min=0, help="0 (default): in-process, img2dataset's download threads (--threads); N: N Ray actors (one CPU each, spread over the cluster's nodes), each with its threads.")] = 0,
    ray_address: RayAddress = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N accepted dialogue rows.")] = None,
    overwrite: Overwrite = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Fetch again the images recorded as failed (transient reasons).")] = False,
    no_progress: NoProgress = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray logs.")] = False,
) -> None:
    """Fetch, verify, resize and store the images a split's dialogues reference (img2dataset; docs/images.md).

    URLs are fetched (HTTP(S) only, public addresses only unless --allow-address, byte and pixel caps,
    sha256 verified when the row has one, X-Robots-Tag opt-outs honoured), local paths read; every
    image ends ok or with a counted reason. Resumable: a rerun fetches nothing already stored."""
    import logging

    from pipeline.images.stage import images as run_images
    from pipeline.images.stage import run_options

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        opts = options(image_size, min_side, max_bytes, max_pixels, timeout_s, retries, threads, allow_address, mirror)
        summary = run_images(input, out, opts, workers=workers, ray_address=ray_address, verbose=verbose, limit=limit,
                             run_opts=run_options(opts, overwrite=overwrite, retry_failed=retry_failed,
                                                  progress=not no_progress))
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    rec = json.loads((Path(out) / "_images.run.json").read_text())
    d = summary.to_dict()
    d["images"] = rec.get("images")
    d["input"] = rec.get("input")
    typer.echo(json.dumps(d, sort_keys=True))
    st = d["images"]["status"]
    typer.echo(f"images: ok={st.get('ok', 0)} rejected={st.get('rejected', 0)} failed={st.get('failed', 0)} "
               f"by reason {d['images']['by_reason']} -> {out}", err=True)
