"""Caption loaders on real files: the committed fixtures, and bad files made in tmp_path."""
from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.caption_text import (
    collapse_whitespace,
    sentence_ends,
    shorten,
    strip_boilerplate,
    trim_meta_sentences,
)
from pipeline.captions import (
    CaptionOptions,
    CaptionSchemaError,
    open_source,
)
from pipeline.types import Caption, CaptionRejection, ImageRef, InputShard, stable_hash

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "captions"


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
    for r in rows:
        if isinstance(r, CaptionRejection):
            assert r.id == stable_hash(source, Path(file).name, r.row)
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


def test_pixelprose_ids_scores_and_boilerplate():
    _, (rows,) = load("pixelprose", FIX / "pixelprose/train-00000-of-00001.parquet")
    table = pq.read_table(FIX / "pixelprose/train-00000-of-00001.parquet").to_pylist()
    by_row = {r.row: r for r in rows}
    assert all(len(r["uid"]) == 64 and int(r["uid"], 16) >= 0 for r in table)
    for i in (0, 1, 2, 3, 4, 7, 8, 12, 14, 15):  # rows that open with boilerplate
        raw = table[i]["vlm_caption"]
        assert raw.lower().startswith(("this image", "the image", "in this image", "this is an image"))
        assert not by_row[i].text.lower().startswith(("this image", "the image", "in this", "this is an"))
        assert by_row[i].text[0].isupper()
    assert by_row[0].text.startswith("A weathered wooden fishing boat")
    assert by_row[3].text.startswith("A snowboarder is in mid-air")
    assert by_row[7].text.startswith("A digital illustration of a fantasy castle")
    assert by_row[6].text == table[6]["vlm_caption"]  # no boilerplate: untouched
    assert by_row[0].id == table[0]["uid"]
    assert by_row[0].image == ImageRef(url=table[0]["url"], sha256=table[0]["sha256"])
    assert "HTTP 404" in by_row[5].detail and "status" in by_row[5].detail
    # the released generator's clean-up: cut at the first meta sentence after the second sentence
    assert "The style of the image is" in table[1]["vlm_caption"]
    assert by_row[1].text.endswith("hang above it.") and "The background is" not in by_row[1].text
    _, (jrows,) = load("pixelprose", FIX / "pixelprose/redcaps.jsonl")
    assert jrows[5].text.startswith("A row of colorful beach huts painted pink")


def test_pixelprose_filters_are_opt_in_and_use_the_class_id():
    path = FIX / "pixelprose/train-00000-of-00001.parquet"
    table = pq.read_table(path).to_pylist()
    classes = {i: int(r["watermark_class_id"]) for i, r in enumerate(table)}
    assert classes[10] == 0 and classes[13] == 2 and sum(c == 1 for c in classes.values()) == 14
    # a clean row's watermark_class_score is the confidence of "clean", high: never a reason to drop it
    assert table[0]["watermark_class_score"] > 0.9
    _, (rows,) = load("pixelprose", path, CaptionOptions(watermark_classes=(1,)))
    assert rejections(rows) == [(5, "pixelprose:status"), (9, "pixelprose:status"), (10, "pixelprose:watermark"),
                                (13, "pixelprose:text_overlay")]
    kept = {c.row for c in captions(rows)}
    assert kept == {i for i, c in classes.items() if c == 1} - {5, 9}
    _, (rows,) = load("pixelprose", path, CaptionOptions(watermark_classes=(1, 2), max_toxicity=0.85))
    assert rejections(rows) == [(5, "pixelprose:status"), (9, "pixelprose:status"), (10, "pixelprose:watermark"),
                                (11, "pixelprose:toxicity")]  # insult 0.87 > 0.85
    assert "insult=0.870" in rows[11].detail and "watermark_class_id=0 (watermark)" in rows[10].detail
    _, (rows,) = load("pixelprose", path, CaptionOptions(max_toxicity=0.9))
    assert rejections(rows) == [(5, "pixelprose:status"), (9, "pixelprose:status")]
    _, (rows,) = load("pixelprose", FIX / "pixelprose/redcaps.jsonl", CaptionOptions(min_chars=2))
    assert rejections(rows) == [] and rows[2].text == "Ok."
    with pytest.raises(ValueError, match="watermark_classes"):
        CaptionOptions(watermark_classes=(3,))
    # the options that change the rows are part of the source's description (so of the stage config)
    assert "options" not in open_source("pixelprose", str(path)).describe()
    assert open_source("pixelprose", str(path), CaptionOptions(watermark_classes=(1,), max_toxicity=0.5)
                       ).describe()["options"] == {"max_toxicity": 0.5, "watermark_classes": (1,)}


def test_pixelprose_unknown_class_is_a_counted_rejection(tmp_path):
    rows = [{"uid": "a" * 64, "url": "https://x/1.jpg", "status": "success", "watermark_class_id": v,
             "vlm_caption": "A lamp on a desk next to a window at night."} for v in (1.0, None, 7, "x")]
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, (got,) = load("pixelprose", p, CaptionOptions(watermark_classes=(1,)))
    assert [getattr(r, "reason", "ok") for r in got] == ["ok"] + ["pixelprose:watermark_unknown"] * 3
    assert "watermark_class_id is null" in got[1].detail and "Fix" in got[1].detail
    _, (got,) = load("pixelprose", p)  # no filter: the class is not looked at
    assert len(captions(got)) == 4


@pytest.mark.parametrize("raw, expected", [
    ("A dog. It runs. The image is blurry. More text.", "A dog. It runs."),
    ("A dog. The image is blurry. It runs.", "A dog. The image is blurry. It runs."),  # first two stay
    ("A dog. It runs. A cat. The font is bold. The end.", "A dog. It runs. A cat."),
    ("A dog. It runs. This is a photograph of a dog.", "A dog. It runs."),
    ("A dog. It runs. the image is lower case.", "A dog. It runs. the image is lower case."),
    ("Dr. Who waves. It runs. The text is in red.", "Dr. Who waves. It runs."),
    ("One sentence only.", "One sentence only."),
])
def test_trim_meta_sentences(raw, expected):
    assert trim_meta_sentences(raw) == expected


# ------------------------------------------------------------------ text normalisation
def test_long_fixture_captions_are_shortened_at_a_sentence_boundary():
    for source, file, row in [("pixmo", "pixmo/extra.jsonl", 5),
                              ("docci", "docci_mirror/train-00000-of-00001.parquet", 11),
                              ("pixelprose", "pixelprose/train-00000-of-00001.parquet", 15)]:
        _, (rows,) = load(source, FIX / file)
        text = rows[row].text
        if file.endswith(".parquet"):
            raw = pq.read_table(FIX / file).to_pylist()[row]
        else:
            raw = [json.loads(x) for x in (FIX / file).read_text().splitlines()][row]
        full = collapse_whitespace(raw["caption" if source == "pixmo" else
                                       "description" if source == "docci" else "vlm_caption"])
        if source == "pixelprose":
            full = trim_meta_sentences(strip_boilerplate(full))
        assert len(full) > 1000 and 800 < len(text) <= 1000
        assert full.startswith(text) and text.endswith(".")
        assert full[len(text)] == " "  # the next sentence starts after the cut
        assert len(text) in sentence_ends(full)
        # the longest prefix of whole sentences that fits
        assert not [e for e in sentence_ends(full) if len(text) < e <= 1000]


def test_shorten_rules():
    sentences = ["The quick brown fox jumps over the lazy dog near the river bank."] * 30
    text = " ".join(sentences)
    out = shorten(text, 1000)
    assert len(out) <= 1000 and out.endswith("dog near the river bank.")
    assert len(out) == 15 * 65 - 1  # 15 whole sentences of 64 chars + spaces
    assert shorten("Short caption. Fits.", 1000) == "Short caption. Fits."
    # first sentence alone too long: cut at the last word boundary and end with "."
    long_first = "A very long winding sentence " + "with many more words, " * 60 + "ending here. Next."
    cut = shorten(long_first, 1000)
    assert len(cut) <= 1000 and cut.endswith(".") and not cut.endswith(",.")
    assert long_first.startswith(cut[:-1].rstrip(",")) and long_first[len(cut[:-1].rstrip(","))] in " ,"
    assert shorten("word " * 10 + "extraordinarily", 20) == "word word word word."
    # abbreviations and initials do not end sentences; closing quotes stay with theirs
    text = 'Dr. Smith and J. R. Doe stand by St. Mary\'s. A sign says "Open." ' + "Tail words. " * 200
    assert sentence_ends(text)[:2] == [text.index("Mary's.") + 7, text.index('"Open."') + 7]
    assert shorten(text, 70) == 'Dr. Smith and J. R. Doe stand by St. Mary\'s. A sign says "Open."'


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("This image displays: a red barn in a field.", "A red barn in a field."),
        ("THIS IMAGE SHOWS two dogs playing.", "Two dogs playing."),
        ("The image depicts a quiet street.", "A quiet street."),
        ("In this image, we see a lake at dawn.", "We see a lake at dawn."),
        ("This is an image of a bowl of soup.", "A bowl of soup."),
        ("This image displays:\n\n  In this image, a kite.", "A kite."),
        ("The imagery here is dark and moody.", "The imagery here is dark and moody."),
        ("A dog. This image shows a cat.", "A dog. This image shows a cat."),
    ],
)
def test_boilerplate_openings_are_stripped(raw, expected):
    assert strip_boilerplate(collapse_whitespace(raw)) == expected


def test_template_syntax_is_kept_verbatim(tmp_path):
    texts = ["A mug printed with {{ 7*7 }} and the word {caption} on its side, on a table.",
             "A code editor showing {% raw %}{{ user.name }}{% endraw %} in a template file.",
             "A sign that reads ${HOME} and {0} and {{caption}} in bold red letters."]
    path = tmp_path / "t.json"  # *.json is read as JSON lines too
    path.write_text("".join(json.dumps({"image_url": f"u{i}", "caption": t}) + "\n" for i, t in enumerate(texts)))
    _, (rows,) = load("pixmo", path)
    assert [c.text for c in rows] == texts


# ------------------------------------------------------------------ bad input
def test_malformed_rows_become_rejections_and_good_rows_still_load(tmp_path):
    good = "A brown horse grazing in a green meadow beside a wooden fence."
    lines = [
        json.dumps({"image_url": "https://x/1.jpg", "caption": good}),
        '{"image_url": "https://x/2.jpg", "caption": "unterminated',
        json.dumps({"image_url": "https://x/3.jpg", "caption": None}),
        "",  # blank lines are skipped, not rows
        json.dumps({"image_url": "https://x/4.jpg", "caption": "   \n\t "}),
        json.dumps({"image_url": "https://x/5.jpg", "caption": 12345}),
        json.dumps({"caption": good}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"image_url": "https://x/6.jpg", "caption": "Too short."}),
        json.dumps({"image_url": "https://x/7.jpg", "caption": good + " Second sentence here."}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"image_url": "\xff\xfe"}\n')
    _, (rows,) = load("pixmo", path)
    assert [(r.row, getattr(r, "reason", "ok")) for r in rows] == [
        (0, "ok"), (1, "row:malformed_json"), (2, "caption:empty"), (3, "caption:empty"),
        (4, "caption:not_text"), (5, "row:missing_id"), (6, "row:malformed_json"),
        (7, "caption:too_short"), (8, "ok"), (9, "row:malformed_json"),
    ]
    lines_of = {1: 2, 2: 3, 3: 5, 4: 6, 5: 7, 6: 8, 7: 9, 9: 11}
    for r in rows:
        if isinstance(r, CaptionRejection):
            assert str(path) in r.detail and f"line {lines_of[r.row]}:" in r.detail
            assert "Fix" in r.detail or "fill" in r.detail.lower() or "write" in r.detail.lower()
            assert r.id == stable_hash("pixmo", "bad.jsonl", r.row)
    assert "'caption' is null" in rows[2].detail and "'caption' is int '12345'" in rows[4].detail
    assert "'image_url'" in rows[5].detail
    assert rows[0].text == good and rows[8].text == good + " Second sentence here."


def test_bad_csv_and_parquet_rows(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        "example_id,description,image\n"
        "a1,A small red boat on a calm lake at dawn.,img/a1.jpg\n"
        "a2,too,many,fields,img/a2.jpg\n"
        ",A row without its example id but with a long caption.,img/a3.jpg\n"
        "a4,A tall clock tower against a gray winter sky.,\n"
        '"a5","A caption spanning\ntwo lines of the file, quoted.",img/a5.jpg\n'
    )
    _, (rows,) = load("docci", csv_path)
    assert [(r.row, getattr(r, "reason", "ok")) for r in rows] == [
        (0, "ok"), (1, "row:malformed_csv"), (2, "row:missing_id"), (3, "image:missing"), (4, "ok")]
    assert "row 2 (line 3)" in rows[1].detail and "row 4 (line 5)" in rows[3].detail
    assert rows[4].text == "A caption spanning two lines of the file, quoted."
    pq_path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"uid": ["u1", None, "u3"], "url": ["h://1", "h://2", None],
                             "vlm_caption": ["A lamp on a desk next to a window."] * 3,
                             "status": ["success"] * 3}), pq_path)
    _, (rows,) = load("pixelprose", pq_path)
    assert [getattr(r, "reason", "ok") for r in rows] == ["ok", "row:missing_id", "image:missing"]
    assert rows[0].image == ImageRef(url="h://1")  # no sha256 column: None
    assert f"{pq_path} row 2:" in rows[1].detail


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


def test_json_array_file_is_read_as_a_stream(tmp_path):
    recs = [{"image_url": f"https://x/{i}.jpg", "caption": f"Caption number {i} of a JSON array file."}
            for i in range(50)]
    p = tmp_path / "arr.json"
    p.write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    _, (rows,) = load("pixmo", p)
    assert [c.text for c in rows] == [r["caption"] for r in recs]
    from pipeline.record_files import json_array_records
    assert [r for _, r, _ in json_array_records(p, chunk=7)] == recs  # elements cut across chunks
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_url": "u1", "caption": "A fine first caption here."}, 3, {"image_url": "u2", "cap')
    _, (rows,) = load("pixmo", bad)
    assert [getattr(r, "reason", "ok") for r in rows] == ["ok", "row:malformed_json", "row:malformed_json"]
    assert f"{bad} element 2:" in rows[1].detail and "not an object" in rows[1].detail
    assert f"{bad} element 3:" in rows[2].detail and "elements after it were not read" in rows[2].detail
    assert "the rest of the file is read" in rows[1].detail


def test_script_repositories_fail_before_any_work(tmp_path, monkeypatch):
    from pipeline import hub_load
    from pipeline.hub_load import ScriptDatasetError

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


# ------------------------------------------------------------------ streaming
def test_parquet_is_streamed_in_batches(tmp_path, monkeypatch):
    path = tmp_path / "big.parquet"
    n = 5000
    pq.write_table(pa.table({"image_url": [f"https://x/{i}.jpg" for i in range(n)],
                             "caption": [f"Caption number {i} of a long stream of rows." for i in range(n)]}),
                   path, row_group_size=500)
    src = open_source("pixmo", str(path))

    def forbidden(*a, **k):
        raise AssertionError("whole-file read")

    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    monkeypatch.setattr(pq, "read_table", forbidden)
    it = src.iter_shard(0)
    first = next(it)
    assert first.row == 0 and first.text.startswith("Caption number 0")
    assert sum(1 for _ in it) == n - 1


def test_jsonl_memory_does_not_grow_with_file_size(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"image_url": "https://x/{}.jpg", "caption": "A caption. " * 80}) + "\n"
    with open(path, "w") as f:
        for i in range(20000):
            f.write(line.replace("{}", str(i)))
    size = path.stat().st_size
    src = open_source("pixmo", str(path))
    tracemalloc.start()
    count = sum(1 for _ in src.iter_shard(0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20000 and size > 15_000_000 and peak < 2_000_000
