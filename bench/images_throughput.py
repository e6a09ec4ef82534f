"""Images throughput: img2dataset's own multiprocessing distributor vs. our images stage, in-process and on Ray.

Measured in one run, on the same machine, over the same URL list served by one local HTTP server
(pipeline/images/fixture_server.py, 127.0.0.1 only, in its own process) from N generated JPEGs of a
web photo's size (about 1000 x 800, seeded, generated beforehand, not timed):
- img2dataset: its `download()` (1.47.0) with `distributor="multiprocessing"`, `processes_count` P,
               `thread_count` T, the same resize policy as ours (keep_ratio 448, resize_only_if_bigger,
               jpg quality 95, sha256 computed), Parquet output. Its fetch is its own bare urllib
               (no address policy: it reaches 127.0.0.1 freely);
- ssvd:        `ssvd images` in-process (the default: img2dataset's Downloader with T threads, through our
               stage runner, safe fetch, run records), `--allow-address 127.0.0.1`;
- ssvd_ray:    `ssvd images --workers P` (P Ray actors of T threads each; a local Ray cluster is started).
Each arm is a fresh process writing into its own folder; `wall_s` is the command from start to exit (what
a user waits: interpreter, imports, Ray start), `fetch_s` the download phase alone (img2dataset: first
shard start to last shard end from its NNNNN_stats.json; ssvd: the runner's elapsed time less its worker
start). ratio_vs_img2dataset = img2dataset wall seconds / the arm's wall seconds (> 1: ours is faster);
ratio_vs_img2dataset_fetch the same on fetch_s. With --rounds R the arms run R times in rotated order and
each arm's best round counts (the machine may be shared: the load average before and after is recorded).
Every arm must store all N images (counted from its output), or the benchmark fails.
The last line printed is one JSON object. Run: `make bench-images` or `python bench/images_throughput.py --help`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("img2dataset", "ssvd", "ssvd_ray")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="generated JPEGs served and fetched by every arm")
    p.add_argument("--width", type=int, default=1000, help="mean width of the generated images (height: 0.8x)")
    p.add_argument("--processes", type=int, default=2, help="img2dataset processes_count, and ssvd_ray's --workers")
    p.add_argument("--threads", type=int, default=32, help="download threads per process / worker (ours' default)")
    p.add_argument("--shard-size", type=int, default=50,
                   help="img2dataset number_sample_per_shard (its unit of work per process; several per process)")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--timeout-s", type=int, default=10)
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="run the arms this many times, order rotated; best round counts")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="keep the images and the outputs in this folder")
    p.add_argument("--img2dataset-arm", default=None, help=argparse.SUPPRESS)  # internal: run download(**json)
    a = p.parse_args(argv)
    a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in a.arms if x not in ARMS]
    if bad or not a.arms:
        p.error(f"--arms: unknown {bad}; choose from {', '.join(ARMS)}")
    if "img2dataset" not in a.arms:
        p.error("--arms: img2dataset is the reference arm and must be measured")
    return a


def log(*x) -> None:
    print(*x, file=sys.stderr, flush=True)


def make_images(folder: Path, n: int, width: int, seed: int) -> int:
    """n JPEGs of a photo's size and weight: smooth colour fields, shapes, sensor-like noise (seeded)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0
    for k in range(n):
        w = int(rng.integers(width * 9 // 10, width * 11 // 10 + 1))
        h = int(rng.integers(w * 7 // 10, w * 9 // 10 + 1))
        low = rng.integers(0, 256, (h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 200))
            d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        px = np.asarray(im, np.int16) + rng.normal(0, 5, (h, w, 1)).astype(np.int16)
        buf = io.BytesIO()
        Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        (folder / f"{k:05d}.jpg").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
        if (k + 1) % 100 == 0:
            log(f"  generated {k + 1}/{n} images")
    return total


def write_inputs(base: Path, urls: list[str]) -> tuple[Path, Path]:
    """The URL list as img2dataset's Parquet input, and as dialogue shards (the images stage's input)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core.runstate import RunState
    from pipeline.core.shards import ShardStore
    from pipeline.core.types import DIALOGUE_SCHEMA, Dialogue, ImageRef, Turn, dialogue_to_row

    url_list = base / "urls.parquet"
    pq.write_table(pa.table({"url": urls}), url_list)
    dlg = base / "dialogues"
    store = ShardStore(dlg, "dialogues", DIALOGUE_SCHEMA)
    for s in range(0, len(urls), 1000):  # shards of 1000 dialogues, as `ssvd dialogues` writes them
        rows = [dialogue_to_row(Dialogue(
            id=f"bench{k:06d}", caption_id=f"c{k}", source="pixmo", instruction="COMB", seed=k,
            turns=[Turn("user", "What is in the picture?", "COMB"), Turn("assistant", "Shapes of colour.", "COMB")],
            image=ImageRef(url=urls[k]), input_shard=s // 1000, input_row=k - s)) for k in range(s, min(s + 1000, len(urls)))]
        store.write_part(s // 1000, rows)
        store.finalize(s // 1000)
    st = RunState(dlg, "dialogues")
    st.begin({"stage": "dialogues", "bench": "images"})
    st.finish({})
    return url_list, dlg


class Server:
    """pipeline.images.fixture_server in its own process (its threads never share a GIL with an arm)."""

    def __init__(self, root: Path, url_file: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.images.fixture_server", "--root", str(root),
                                      "--url-file", str(url_file)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        for _ in range(600):
            if url_file.is_file() and url_file.read_text().strip():
                self.base = url_file.read_text().strip()
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"the image server exited with {self.proc.returncode}")
            time.sleep(0.1)
        self.stop()
        raise SystemExit("the image server did not start within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}


def _run(cmd: list[str], logfile: Path) -> float:
    t = time.perf_counter()
    with open(logfile, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {p.returncode}; its log ({logfile}) ends:\n"
                         + logfile.read_text()[-3000:])
    return wall


def run_img2dataset(a: argparse.Namespace, url_list: Path, out: Path, logfile: Path) -> dict:
    kwargs = dict(
        url_list=str(url_list), input_format="parquet", url_col="url", output_folder=str(out),
        output_format="parquet", processes_count=a.processes, thread_count=a.threads, distributor="multiprocessing",
        number_sample_per_shard=a.shard_size, image_size=a.image_size, resize_mode="keep_ratio",
        resize_only_if_bigger=True, encode_format="jpg", encode_quality=95, compute_hash="sha256",
        extract_exif=False, timeout=a.timeout_s, retries=a.retries, max_image_area=64_000_000,
        user_agent_token="ssvd", enable_wandb=False)
    shutil.rmtree(out, ignore_errors=True)  # (its incremental_mode="overwrite" deletes its own _tmp folder: 1.47.0)
    wall = _run([sys.executable, str(Path(__file__).resolve()), "--img2dataset-arm", json.dumps(kwargs)], logfile)
    import pyarrow.parquet as pq

    stats = [json.loads(f.read_text()) for f in sorted(out.glob("*_stats.json"))]
    fetch = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats) if stats else float("nan")
    rows = [r for f in sorted(out.glob("*.parquet")) for r in
            pq.read_table(f, columns=["status", "width", "height", "error_message"]).to_pylist()]
    ok = [r for r in rows if r["status"] == "success"]
    return {"wall_s": wall, "fetch_s": fetch, "stored": len(ok), "rows": len(rows),
            "short_sides": sorted({min(r["width"], r["height"]) for r in ok}),
            "errors": sorted({r["error_message"] for r in rows if r["status"] != "success"})[:5]}


def run_ssvd(a: argparse.Namespace, dlg: Path, out: Path, logfile: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "cli", "images", "--in", str(dlg), "--out", str(out), "--allow-address", "127.0.0.1",
           "--threads", str(a.threads), "--workers", str(workers), "--image-size", str(a.image_size),
           "--timeout-s", str(a.timeout_s), "--retries", str(a.retries), "--overwrite", "--no-progress"]
    wall = _run(cmd, logfile)
    import pyarrow.parquet as pq

    line = [x for x in logfile.read_text().splitlines() if x.startswith("{")][-1]
    summary = json.loads(line)
    run = summary.get("run") or {}
    rows = [r for f in sorted(out.glob("images-*.parquet")) for r in
            pq.read_table(f, columns=["status", "width", "height", "reason"]).to_pylist()]
    ok = [r for r in rows if r["status"] == "ok"]
    return {"wall_s": wall, "fetch_s": summary["elapsed_s"] - run.get("startup_s", 0.0),
            "startup_s": run.get("startup_s", 0.0), "stored": len(ok), "rows": len(rows),
            "short_sides": sorted({min(r["width"], r["height"]) for r in ok}),
            "errors": sorted({r["reason"] for r in rows if r["status"] != "ok"})[:5]}


def main() -> None:
    a = parse()
    if a.img2dataset_arm:  # the img2dataset arm's own process (its spawn workers import this file again)
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        from img2dataset import download

        download(**json.loads(a.img2dataset_arm))
        return
    load_before = os.getloadavg()
    base = a.keep or Path(tempfile.mkdtemp(prefix="ssvd-bench-images-"))
    base.mkdir(parents=True, exist_ok=True)
    log(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; generating {a.images} images in {base}")
    web = base / "web"
    image_bytes = make_images(web / "img", a.images, a.width, a.seed)
    url_file = base / "server.url"
    url_file.unlink(missing_ok=True)
    srv = Server(web, url_file)
    try:
        urls = [f"{srv.base}/img/{k:05d}.jpg" for k in range(a.images)]
        url_list, dlg = write_inputs(base, urls)
        results: dict[str, list[dict]] = {x: [] for x in a.arms}
        for rnd in range(a.rounds):
            order = a.arms[rnd % len(a.arms):] + a.arms[:rnd % len(a.arms)]
            for arm in order:
                out, logfile = base / "out" / arm, base / f"{arm}.{rnd}.log"
                log(f"round {rnd + 1}/{a.rounds}: {arm} ...")
                if arm == "img2dataset":
                    r = run_img2dataset(a, url_list, out, logfile)
                else:
                    r = run_ssvd(a, dlg, out, logfile, a.processes if arm == "ssvd_ray" else 0)
                if r["stored"] != a.images:
                    raise SystemExit(f"{arm} stored {r['stored']} of {a.images} images (errors: {r['errors']}); "
                                     f"log: {logfile}")
                log(f"  {arm}: {r['stored']} images in {r['wall_s']:.1f} s ({a.images / r['wall_s']:.1f} images/s), "
                    f"fetch phase {r['fetch_s']:.1f} s ({a.images / r['fetch_s']:.1f} images/s)")
                results[arm].append(r)
    finally:
        srv.stop()
    load_after = os.getloadavg()
    best = {arm: min(rs, key=lambda r: r["wall_s"]) for arm, rs in results.items()}
    best_fetch = {arm: min(r["fetch_s"] for r in rs) for arm, rs in results.items()}
    ref, ref_fetch = best["img2dataset"]["wall_s"], best_fetch["img2dataset"]
    result = {
        **{f"ratio_vs_img2dataset{'' if arm == 'ssvd' else '_' + arm.split('_', 1)[1]}": round(ref / best[arm]["wall_s"], 3)
           for arm in a.arms if arm != "img2dataset"},
        **{f"ratio_vs_img2dataset_fetch{'' if arm == 'ssvd' else '_' + arm.split('_', 1)[1]}":
           round(ref_fetch / best_fetch[arm], 3) for arm in a.arms if arm != "img2dataset"},
        "images_per_s": {arm: round(a.images / best[arm]["wall_s"], 2) for arm in a.arms},
        "images_per_s_fetch": {arm: round(a.images / best_fetch[arm], 2) for arm in a.arms},
        "wall_s": {arm: [round(r["wall_s"], 2) for r in rs] for arm, rs in results.items()},
        "fetch_s": {arm: [round(r["fetch_s"], 2) for r in rs] for arm, rs in results.items()},
        "stored": {arm: [r["stored"] for r in rs] for arm, rs in results.items()},
        "stored_short_side": {arm: sorted({s for r in rs for s in r["short_sides"]}) for arm, rs in results.items()},
        "images": a.images, "image_mb": round(image_bytes / 1e6, 1), "processes": a.processes, "threads": a.threads,
        "shard_size": a.shard_size, "rounds": a.rounds, "arms": a.arms,
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "out": str(base),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
