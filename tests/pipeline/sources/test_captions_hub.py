"""Caption sources loaded through `datasets` (the hub path), on a local repo laid out like a hub dataset."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.sources.captions import CaptionSchemaError, open_source
from pipeline.core.types import CaptionRejection, InputShard, stable_hash
from tests.pipeline.sources.test_captions import FIX, captions, load, rejections


def _repo(tmp_path: Path, files: list[Path]) -> Path:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copy(f, repo / "data" / f"train-{i:05d}-of-{len(files):05d}{f.suffix}")
    return repo


@pytest.mark.parametrize("source, files", [
    ("pixmo", ["pixmo/train-00000-of-00002.parquet", "pixmo/train-00001-of-00002.parquet"]),
    ("docci", ["docci_mirror/train-00000-of-00001.parquet"]),
    ("pixelprose", ["pixelprose/train-00000-of-00001.parquet"]),
])
def test_hub_path_matches_local_files(tmp_path, monkeypatch, source, files):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = _repo(tmp_path, [FIX / f for f in files])
    hub = open_source(source, f"hub:{repo}")
    assert hub.describe()["kind"] == "hub"
    assert hub.shards == [InputShard(i, f"{repo}#shard{i}") for i in range(len(files))]
    for i, f in enumerate(files):
        got = list(hub.iter_shard(i))
        _, (want,) = load(source, FIX / f)
        assert [(type(r), r.row) for r in got] == [(type(r), r.row) for r in want]
        assert captions(got) == captions(want)
        assert rejections(got) == rejections(want)
        assert [r.id for r in got if isinstance(r, CaptionRejection)] == [
            stable_hash(source, f"repo#shard{i}", r.row) for r in got if isinstance(r, CaptionRejection)]
        # named by its source's id, so the hub and the files name a rejected row alike
        assert [(r.caption_id, r.image) for r in got if isinstance(r, CaptionRejection)] == [
            (r.caption_id, r.image) for r in want if isinstance(r, CaptionRejection)]


def test_hub_path_missing_column(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    repo = _repo(tmp_path, [FIX / "docci_mirror/train-00000-of-00001.parquet"])
    with pytest.raises(CaptionSchemaError) as e:
        open_source("pixmo", f"hub:{repo}")
    assert f"hub dataset '{repo}'" in str(e.value) and "'image_url'" in str(e.value)
