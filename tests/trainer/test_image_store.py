"""The trainer reads the images stage's shards by image id (tiny real corpus, its images fetched from the
tests' server and read from DOCCI's files), and skips (counting) a dialogue whose image could not be had."""
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.images.schema import ref_id
from tests.pipeline.corpus.conftest import WEB, ROOT
from trainer.config import DataConfig
from trainer.data import CorpusLoader
from trainer.images import preprocess

SPLITS = {"docci-prop": 1.0, "pixelprose-ts1": 1.0, "tallyqa": 1.0}


def _original(image: dict) -> Image.Image:
    """The fixture image a row names: DOCCI's release file, the file the tests' server sent for the URL, or the
    bytes embedded in the benchmark fixture."""
    if not image.get("url") and image.get("sha256") and not (ROOT / (image.get("path") or "-")).is_file():
        import hashlib

        from tests.fixtures.make_benchmark_fixtures import fake_image

        data = fake_image(Path(image["path"]).stem)["bytes"]
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        return Image.open(io.BytesIO(data))
    if image.get("url"):
        return Image.open(WEB / image["url"].split("://", 1)[1])
    return Image.open(ROOT / image["path"]) if not image["path"].startswith("/") else Image.open(image["path"])


def test_batches_hold_the_fixture_images_pixels(corpus_dir):
    cfg = DataConfig(batch_size=2, p_concat=0.0, image_size=32, splits=SPLITS, eval_rows=0)
    loader = CorpusLoader(corpus_dir, cfg)
    seen = set()
    for _ in range(6):
        b = loader.next_batch()
        rows = {r["id"]: r for s in SPLITS for f in loader.split_info[s]["shards"]
                for r in pq.read_table(f, columns=["id", "image"]).to_pylist()}
        for i, rid in enumerate(b["ids"]):
            want = preprocess(_original(rows[rid]["image"]), 32)
            got = b["image"][i].numpy()
            # the stored image is the original re-encoded by img2dataset (JPEG q95): close, not bit-exact;
            # a placeholder (one flat colour) is far from the fixtures' colour bands
            assert np.abs(got - want).mean() < 0.05, rid
            assert got.std() > 0 or want.std() == 0
            seen.add(b["splits"][i])
    assert seen == set(SPLITS)
    st = loader.stats
    assert st["images_from_store"] == st["images_loaded"] == st["samples"] == 12
    assert st["images_missing"] == 0 and st["rows_skipped_no_image"] == 0


def test_a_dialogue_whose_image_was_not_had_is_skipped_and_counted(corpus_copy, tmp_path):
    prov = json.loads((corpus_copy / "manifest.json").read_text())
    pp = next(s for s in prov["splits"] if s["name"] == "pixelprose-ts1")
    shard = corpus_copy / next(st for st in pp["stages"] if st["stage"] == "images")["shards"][0]["path"]
    t = pq.read_table(shard)
    rows = t.to_pylist()
    lost = rows[0]["id"]
    rows[0].update(status="rejected", reason="image:dead_link", error="HTTP 404 Not Found", image=None)
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), shard)
    tokens = [r for f in pp["shards"] for r in pq.read_table(corpus_copy / f["path"], columns=["id", "status", "image"])
              .to_pylist() if r["status"] == "ok"]
    skipped = {r["id"] for r in tokens if ref_id(r["image"]) == lost}
    assert skipped
    loader = CorpusLoader(corpus_copy, DataConfig(batch_size=2, p_concat=0.0, image_size=32, splits=SPLITS, eval_rows=0))
    st = loader.stats
    assert st["rows_skipped_no_image"] == len(skipped)
    assert st["rows_skipped_no_image_by_split"] == {"pixelprose-ts1": {"image:dead_link": len(skipped)}}
    if len(skipped) == len(tokens):  # the tiny corpus: one row per split, so the split has nothing left
        assert "no ok row with an image" in st["dropped_splits"]["pixelprose-ts1"]
    for _ in range(4):
        b = loader.next_batch()
        assert not skipped & set(b["ids"])
    assert loader.stats["images_missing"] == 0  # never a placeholder in its place
    # the preview shows why
    from pipeline.corpus.preview import write_preview

    write_preview(corpus_copy, tmp_path / "p.html", splits=["pixelprose-ts1"])
    assert "image not had: <code>image:dead_link</code>" in (tmp_path / "p.html").read_text()


def test_stored_image_decodes_as_jpeg_at_the_stage_size(corpus_dir):
    for d in corpus_dir.glob("*/images"):
        for f in d.glob("images-*.parquet"):
            for r in pq.read_table(f).to_pylist():
                if r["status"] == "ok":
                    with Image.open(io.BytesIO(r["image"])) as im:
                        assert im.format == "JPEG" and im.size == (r["width"], r["height"])
                        assert min(im.size) <= 448
