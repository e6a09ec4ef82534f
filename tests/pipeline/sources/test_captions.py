"""Caption sources on real files (pipeline/sources/captions.py): the committed fixtures load exactly, folders, ids,
DOCCI's release and mirror, and the errors of a bad source or input. Row checks: test_caption_rows.py; text
clean-up: test_caption_text.py; file reading: test_record_files.py."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.captions import (
    CaptionOptions,
    CaptionSchemaError,
    open_source,
)
from pipeline.core.types import Caption, CaptionRejection, ImageRef, InputShard, stable_hash
from pipeline.sources.caption_rows import ID_FIELD, caption_id
from pipeline.sources.record_files import read_rows


FIX = Path(__file__).resolve().parents[2] / "fixtures" / "captions"


def load(source: str, input: str | Path, options: CaptionOptions = CaptionOptions()):
    src = open_source(source, str(input), options)
    return src, [list(src.iter_shard(s.index)) for s in src.shards]


def captions(rows):
    return [r for r in rows if isinstance(r, Caption)]


def rejections(rows):
    return [(r.row, r.reason) for r in rows if isinstance(r, CaptionRejection)]


# ------------------------------------------------------------------ fixtures load exactly
@pytest.mark.parametrize(
    "source, file, n_rows, expected_rejections",
    [
        ("pixmo", "pixmo/train-00000-of-00002.parquet", 12, []),
        ("pixmo", "pixmo/train-00001-of-00002.parquet", 12, []),
        ("pixmo", "pixmo/extra.jsonl", 6, []),
        ("docci", "docci_mirror/train-00000-of-00001.parquet", 12, []),
        ("pixelprose", "pixelprose/train-00000-of-00001.parquet", 16,
         [(5, "pixelprose:status"), (9, "pixelprose:status")]),  # no content filter by default
        ("pixelprose", "pixelprose/redcaps.jsonl", 6, [(2, "caption:too_short")]),
    ],
)
def test_every_fixture_loads_with_exact_counts(source, file, n_rows, expected_rejections):
    src, (rows,) = load(source, FIX / file)
    assert len(rows) == n_rows
    assert [r.row for r in rows] == list(range(n_rows))  # file order, 0-based
    assert rejections(rows) == expected_rejections
    assert len(captions(rows)) == n_rows - len(expected_rejections)
    for c in captions(rows):
        assert c.source == source and 20 <= len(c.text) <= 1000
        assert c.text == c.text.strip() and "  " not in c.text and "\n" not in c.text
    recs = [rec for _, rec, _ in read_rows(FIX / file, ("uid", "image_url", "example_id", "url"))]
    for r in rows:
        if isinstance(r, CaptionRejection):  # keyed by its place, named by its source's id as an ok row
            assert r.id == stable_hash(source, Path(file).name, r.row)
            assert r.caption_id == caption_id(source, recs[r.row][ID_FIELD[source]])
            unit = "row" if file.endswith(".parquet") else "line"
            assert r.detail.startswith(f"{FIX / file} {unit} {r.row + 1}: ")


def test_directory_is_one_shard_per_file_sorted_by_path():
    src = open_source("pixmo", str(FIX / "pixmo"))
    assert src.shards == [
        InputShard(0, str(FIX / "pixmo" / "extra.jsonl")),
        InputShard(1, str(FIX / "pixmo" / "train-00000-of-00002.parquet")),
        InputShard(2, str(FIX / "pixmo" / "train-00001-of-00002.parquet")),
    ]
    assert src.describe() == {"source": "pixmo", "input": str(FIX / "pixmo"), "kind": "local",
                              "shards": [s.name for s in src.shards]}
    with pytest.raises(IndexError, match=r"shard 3 out of range \(0\.\.2\)"):
        src.iter_shard(3)


def test_directory_scan_is_recursive_and_skips_hidden_and_other_files(tmp_path):
    line = json.dumps({"image_url": "u", "caption": "A perfectly fine caption here."}) + "\n"
    for rel in ["b.jsonl", "a/z.json", "a/y.csv", ".cache/x.jsonl", "a/.hidden.jsonl", "notes.txt",
                "b.jsonl.tmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("image_url,caption\nu,A perfectly fine caption here.\n"
                                    if rel.endswith(".csv") else line)
    src = open_source("pixmo", str(tmp_path))
    assert [Path(s.name).relative_to(tmp_path).as_posix() for s in src.shards] == ["a/y.csv", "a/z.json", "b.jsonl"]
    assert [len(captions(src.iter_shard(s.index))) for s in src.shards] == [1, 1, 1]


def test_pixmo_ids_are_sha256_of_the_url_and_deterministic():
    table = pq.read_table(FIX / "pixmo/train-00000-of-00002.parquet")
    _, (rows,) = load("pixmo", FIX / "pixmo/train-00000-of-00002.parquet")
    urls = table.column("image_url").to_pylist()
    # the full sha256 hex of image_url, as Kyutai's released generator (ssvd/generate.py) names PixMo rows
    assert [c.id for c in rows] == [hashlib.sha256(u.encode()).hexdigest() for u in urls]
    assert all(len(c.id) == 64 for c in rows)
    assert [c.image for c in rows] == [ImageRef(url=u) for u in urls]
    _, (again,) = load("pixmo", FIX / "pixmo/train-00000-of-00002.parquet")
    assert again == rows
    _, shards = load("pixmo", FIX / "pixmo")
    ids = [c.id for rows in shards for c in rows]
    assert len(ids) == 30 and len(set(ids)) == 30


def test_docci_mirror_ids_paths_and_image_hashes():
    table = pq.read_table(FIX / "docci_mirror/train-00000-of-00001.parquet").to_pylist()
    _, (rows,) = load("docci", FIX / "docci_mirror/train-00000-of-00001.parquet")
    assert [c.id for c in rows] == [f"train_{i:05d}" for i in range(1, 13)]
    for c, r in zip(rows, table):
        assert r["image"]["bytes"].startswith(b"\x89PNG\r\n\x1a\n")
        assert c.image == ImageRef(path=f"{c.id}.png", sha256=hashlib.sha256(r["image"]["bytes"]).hexdigest())
    assert len({c.image.sha256 for c in rows}) == 12


def _release_lines():
    return [json.loads(x) for x in (FIX / "docci/docci_descriptions.jsonlines").read_text().splitlines()[:-1]]


def test_docci_release_selects_train_and_resolves_images_against_the_root():
    path = FIX / "docci/docci_descriptions.jsonlines"
    src, (rows,) = load("docci", path)
    lines = _release_lines()
    train = [i for i, r in enumerate(lines) if r["split"] == "train"]
    assert len(lines) == 20 and len(train) == 14
    # every train row, in file order, at its file position; the 6 rows of other splits are skipped
    assert [r.row for r in rows] == train + [20]
    assert src.skipped == [6]
    assert rejections(rows) == [(18, "image:not_found"), (19, "caption:empty"), (20, "row:malformed_json")]
    root = FIX / "docci" / "images"
    assert src.describe()["image_roots"] == [str(root)]
    for c in captions(rows):
        assert c.id.startswith("train_") and c.image == ImageRef(path=str(root / f"{c.id}.jpg"))
        assert Path(c.image.path).read_bytes()[:3] == b"\xff\xd8\xff"  # a real JPEG
    bad = rows[-3]
    assert "train_00013.jpg" in bad.detail and str(root) in bad.detail and "--image-root" in bad.detail
    assert f"{path} line 21" in rows[-1].detail


def test_docci_release_other_split_and_explicit_image_root(tmp_path):
    path = FIX / "docci/docci_descriptions.jsonlines"
    # the fixture's images/ holds train images only: qual_dev rows are selected, their images missing
    src, (rows,) = load("docci", path, CaptionOptions(split="qual_dev"))
    assert [r.reason for r in rows] == ["image:not_found"] * 2 + ["row:malformed_json"]
    assert "qual_dev_00001.jpg" in rows[0].detail and src.skipped == [18]
    (tmp_path / "imgs").mkdir()
    for name in ("qual_dev_00001.jpg", "qual_dev_00002.jpg"):
        shutil.copy(FIX / "docci/images/train_00001.jpg", tmp_path / "imgs" / name)
    _, (rows,) = load("docci", path, CaptionOptions(split="qual_dev", image_root=str(tmp_path / "imgs")))
    assert [c.id for c in captions(rows)] == ["qual_dev_00001", "qual_dev_00002"]
    assert captions(rows)[0].image == ImageRef(path=str(tmp_path / "imgs" / "qual_dev_00001.jpg"))
    # train images are not in that root: every train row is missing its image
    (tmp_path / "imgs2").mkdir()
    src, (rows,) = load("docci", path, CaptionOptions(image_root=str(tmp_path / "imgs2")))
    assert [r.reason for r in rows] == ["image:not_found"] * 14 + ["row:malformed_json"]
    assert not captions(rows)
    # without an images/ folder next to the file and no root, the path stays as written
    shutil.copy(path, tmp_path / "d.jsonlines")
    _, (rows,) = load("docci", tmp_path / "d.jsonlines")
    assert captions(rows)[0].image == ImageRef(path="train_00001.jpg")
    with pytest.raises(FileNotFoundError, match="image root .* is not a folder"):
        open_source("docci", str(path), CaptionOptions(image_root=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="only used by --source docci"):
        open_source("pixmo", str(FIX / "pixmo"), CaptionOptions(image_root=str(tmp_path / "imgs")))


def test_template_syntax_is_kept_verbatim(tmp_path):
    texts = ["A mug printed with {{ 7*7 }} and the word {caption} on its side, on a table.",
             "A code editor showing {% raw %}{{ user.name }}{% endraw %} in a template file.",
             "A sign that reads ${HOME} and {0} and {{caption}} in bold red letters."]
    path = tmp_path / "t.json"  # *.json is read as JSON lines too
    path.write_text("".join(json.dumps({"image_url": f"u{i}", "caption": t}) + "\n" for i, t in enumerate(texts)))
    _, (rows,) = load("pixmo", path)
    assert [c.text for c in rows] == texts


@pytest.mark.parametrize("kind", ["parquet", "csv", "jsonl"])
def test_missing_column_names_file_and_column(tmp_path, kind):
    good = tmp_path / "a_good.jsonl"
    good.write_text(json.dumps({"image_url": "u", "caption": "A perfectly fine caption here."}) + "\n")
    bad = tmp_path / f"b_bad.{kind}"
    rows = [{"image_url": "https://x/1.jpg", "description": "A caption in the wrong column."}]
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), bad)
    elif kind == "csv":
        bad.write_text("image_url,description\nhttps://x/1.jpg,A caption in the wrong column.\n")
    else:
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    with pytest.raises(CaptionSchemaError) as e:
        open_source("pixmo", str(tmp_path))  # up-front check of every file
    msg = str(e.value)
    assert str(bad) in msg and "'caption'" in msg and "description" in msg and "Fix" in msg
    # also raised when the shard is opened (file changed after open_source)
    bad.unlink()
    good2 = tmp_path / f"b_bad.jsonl"
    good2.write_text(good.read_text())
    src = open_source("pixmo", str(tmp_path))
    good2.write_text(json.dumps({"image_url": "u", "text": "x"}) + "\n")
    with pytest.raises(CaptionSchemaError, match="'caption'"):
        src.iter_shard(1)


def test_schema_error_suggests_the_right_source():
    with pytest.raises(CaptionSchemaError, match="did you mean --source docci"):
        open_source("pixmo", str(FIX / "docci_mirror/train-00000-of-00001.parquet"))


def test_script_repositories_fail_before_any_work(tmp_path, monkeypatch):
    from pipeline.sources import hub_load
    from pipeline.sources.hub_load import ScriptDatasetError

    for inp in ("google/docci", "hub:google/docci", "hf://datasets/google/docci", "google/docci@train"):
        with pytest.raises(ScriptDatasetError) as e:
            open_source("docci", inp)
        msg = str(e.value)
        assert "loading-script repository" in msg and "docci_descriptions.jsonlines" in msg
        assert "--image-root" in msg and "Fix:" in msg
    repo = tmp_path / "myset"
    repo.mkdir()
    (repo / "myset.py").write_text("raise SystemExit('never run')\n")
    with pytest.raises(ScriptDatasetError, match="holds myset.py"):
        open_source("pixmo", f"hub:{repo}")
    # what `datasets` itself raises for a script repo is turned into the same kind of error
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_load, "script_repo_problem", lambda _: None)
    with pytest.raises(ScriptDatasetError, match="loading-script repository") as e:
        hub_load.load_streaming(str(repo))
    assert "no longer supported" in str(e.value.__cause__) or "trust_remote_code" in str(e.value.__cause__)


def test_unknown_source_and_missing_input(tmp_path):
    with pytest.raises(ValueError, match="pixmo, docci, pixelprose"):
        open_source("coco", str(FIX / "pixmo"))
    for missing in ["./nope", str(tmp_path / "nope"), "a/b/c", "captions.parquet"]:
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            open_source("pixmo", missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no caption files"):
        open_source("pixmo", str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported caption file type"):
        open_source("pixmo", str(tmp_path / "x.txt"))
