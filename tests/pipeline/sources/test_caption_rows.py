"""One caption row -> a Caption or a counted rejection (pipeline/sources/caption_rows.py), read through the sources:
PixelProse ids, scores and filters; malformed JSON, CSV and Parquet rows next to good ones."""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sources.caption_rows import CaptionOptions
from pipeline.sources.captions import open_source
from pipeline.core.types import CaptionRejection, ImageRef, stable_hash
from tests.pipeline.sources.test_captions import FIX, captions, load, rejections


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
    # a rejected row keeps the caption id and image its source gives it, as an ok row does (PixMo: sha256 of
    # image_url, with the URL), so rejections join with the source and Kyutai's release; its key stays its place
    for r in rows:
        if isinstance(r, CaptionRejection):
            assert r.id == stable_hash("pixmo", "bad.jsonl", r.row)
        if isinstance(r, CaptionRejection) and r.reason.startswith("caption:"):
            url = json.loads(lines[lines_of[r.row] - 1])["image_url"]
            assert r.caption_id == hashlib.sha256(url.encode()).hexdigest() and r.image == ImageRef(url=url)
        elif isinstance(r, CaptionRejection):  # no readable id: nothing to name it by
            assert r.caption_id is None and r.image is None
    assert rows[0].id == hashlib.sha256(b"https://x/1.jpg").hexdigest()
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


def test_a_rejected_pixmo_row_is_written_under_its_caption_id_and_url(tmp_path):
    """The dialogue row of a rejected caption carries the sha256 of its image_url and the URL, as an ok row; rows
    repeating one URL (two rejected, one ok) stay three dialogues with three ids."""
    from pipeline.dialogue.protocol import DialogueConfig, dialogue_id
    from pipeline.dialogue.stage import DialogueStage

    url = "https://x/empty.jpg"
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"image_url": url, "caption": c}) + "\n" for c in
                         ("", None, "A brown horse grazing in a green meadow.")))
    model = {"name": "m"}
    stage = DialogueStage(source=open_source("pixmo", str(p)), instruction="LOC", run_seed=0, replicas=1, limit=None,
                          dialogue=DialogueConfig(), models={"user": model, "assistant": model})
    (_, r0), (_, r1), (_, ok) = list(stage.entries())
    cid = hashlib.sha256(url.encode()).hexdigest()
    for n, row in enumerate((r0, r1)):
        assert row["status"] == "rejected" and row["reason"] == "caption:empty"
        assert row["caption_id"] == cid and row["image"] == {"url": url, "path": None, "sha256": None}
        assert row["id"] == dialogue_id(0, "pixmo", stable_hash("pixmo", "c.jsonl", n), "LOC", 0)
    assert ok.caption.id == cid and len({r0["id"], r1["id"], ok.id}) == 3
