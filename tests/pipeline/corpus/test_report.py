"""`ssvd report`: the quality report of the test corpus (fixture `corpus_dir`, tests/pipeline/corpus/conftest.py).

Every number of report.json is recomputed here straight from the shards with pyarrow."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.corpus.report import write_report
from pipeline.corpus.report_plots import PLOTS
from pipeline.core.types import DEFAULT_COMB_POOL, Dialogue, dialogue_to_row

XSS = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def report(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    return write_report(corpus_dir, out)


def _prov(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _stage(split: dict, name: str) -> dict | None:
    return next((s for s in split["stages"] if s["stage"] == name), None)


def _read(root: Path, stage: dict | None, columns: list[str]) -> list[dict]:
    if stage is None or not stage["shards"]:
        return []
    return pa.concat_tables([pq.read_table(root / s["path"], columns=columns) for s in stage["shards"]]).to_pylist()


def _by_name(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["splits"]}


def test_writes_page_json_and_valid_pngs(report):
    paths = report["paths"]
    out = Path(paths["dir"])
    assert Path(paths["html"]) == out / "index.html" and Path(paths["json"]) == out / "report.json"
    assert set(paths["plots"]) == set(PLOTS)
    html = (out / "index.html").read_text()
    for name, p in paths["plots"].items():
        p = Path(p)
        assert p.parent == out and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(p) as im:
            assert im.format == "PNG"
            im.verify()
        with Image.open(p) as im:
            w, h = im.size
            assert w >= 400 and h >= 200, (name, im.size)
            # not a blank canvas: a real plot has many colours
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20, name
        assert f'src="{p.name}"' in html  # relative: the folder can be moved
    saved = json.loads((out / "report.json").read_text())
    assert saved == {k: v for k, v in report.items() if k != "paths"}


def test_every_split_of_the_manifest_is_reported(report, corpus_dir):
    prov = _prov(corpus_dir)
    assert [s["name"] for s in report["splits"]] == [s["name"] for s in prov["splits"]]
    assert {s["role"] for s in report["splits"]} == {"split", "generic"}
    assert report["corpus"]["config_hash"] == prov["config_hash"]


def test_dialogue_numbers_match_the_shards(report, corpus_dir):
    prov = _prov(corpus_dir)
    got = _by_name(report)
    for split in prov["splits"]:
        rows = _read(corpus_dir, _stage(split, "dialogues"), ["status", "reason", "num_pairs", "turns"])
        ok = [r for r in rows if r["status"] == "ok"]
        d = got[split["name"]]["dialogues"]
        assert d["ok"] == len(ok) == sum(d["pairs_histogram"].values())
        assert d["pairs_histogram"] == {str(k): v for k, v in sorted(Counter(r["num_pairs"] for r in ok).items())}
        assert d["ok"] > 0, f"{split['name']}: no dialogues in the test corpus"
        turns = [t for r in ok for t in r["turns"]]
        for role in ("user", "assistant"):
            words = [len(t["text"].split()) for t in turns if t["role"] == role]
            assert d["words"][role]["count"] == len(words)
            assert d["words"][role]["max"] == max(words)
            assert math.isclose(d["words"][role]["mean"], sum(words) / len(words), abs_tol=0.01)
        assert sum(d["instructions"].values()) == sum(r["num_pairs"] for r in ok)
        assert d["instructions"] == dict(Counter(t["instruction"] for t in turns if t["role"] == "assistant"))
        if split["instruction"]:  # a caption split (COMB would mix several)
            assert set(d["instructions"]) <= {split["instruction"], *(DEFAULT_COMB_POOL
                                                                       if split["instruction"] == "COMB" else [])}
        rejected = sum(r["status"] == "rejected" for r in rows)
        assert got[split["name"]]["stages"]["dialogues"]["rows"]["rejected"] == rejected
    all_users = sum(s["dialogues"]["words"]["user"]["count"] for s in report["splits"])
    assert report["words"]["user"]["count"] == all_users


def test_speech_numbers_match_the_shards(report, corpus_dir):
    prov = _prov(corpus_dir)
    got = _by_name(report)
    seen = 0
    for split in prov["splits"]:
        rows = [r for r in _read(corpus_dir, _stage(split, "speech"), ["status", "duration_s", "voice_user",
                                                                     "voice_assistant"]) if r["status"] == "ok"]
        s = got[split["name"]]["speech"]
        assert s["durations"]["count"] == len(rows)
        assert math.isclose(s["durations"]["total_s"], sum(r["duration_s"] for r in rows), abs_tol=0.01)
        assert s["voices"]["user"] == dict(Counter(r["voice_user"] for r in rows))
        assert s["voices"]["assistant"] == dict(Counter(r["voice_assistant"] for r in rows))
        if split["kind"] == "speech":
            assert rows and math.isclose(s["durations"]["total_s"], split["totals"]["audio_s"], abs_tol=0.01)
            seen += 1
        else:
            assert not rows and s["voices"] == {"user": {}, "assistant": {}}
    assert seen >= 1


def test_token_counts_and_shares_match_the_shards_and_weights(report, corpus_dir):
    prov = _prov(corpus_dir)
    got = _by_name(report)
    totals = {}
    for split in prov["splits"]:
        rows = [r for r in _read(corpus_dir, _stage(split, "tokens"), ["status", "kind", "num_frames", "text_tokens"])
                if r["status"] == "ok"]
        n = sum(r["num_frames"] if r["kind"] == "speech" else len(r["text_tokens"]) for r in rows)
        t = got[split["name"]]["tokens"]
        assert t["training_tokens"] == n > 0
        assert t["speech_rows"] + t["text_rows"] == len(rows) == split["rows"]
        assert t["audio_frames"] == split["totals"]["audio_frames"]
        assert (t["speech_rows"] > 0) == (split["kind"] == "speech")
        totals[split["name"]] = n
    mix = report["mixture"]
    weights = prov["weights"]
    assert [r["split"] for r in mix["splits"]] == list(weights)
    assert mix["total_training_tokens"] == sum(totals[k] for k in weights)
    assert math.isclose(sum(r["token_share"] for r in mix["splits"]), 1.0)
    assert math.isclose(sum(r["weight_share"] for r in mix["splits"]), 1.0)
    wsum = sum(weights.values())
    raw = {s["name"]: s["weight"] for s in prov["splits"]}
    for r in mix["splits"]:
        assert math.isclose(r["weight_share"], weights[r["split"]] / wsum)
        assert math.isclose(r["weight_share"], raw[r["split"]] / sum(raw[k] for k in weights))
        assert math.isclose(r["token_share"], totals[r["split"]] / mix["total_training_tokens"])


def test_rejections_combine_stage_stats_and_rejected_rows(report, corpus_dir):
    prov = _prov(corpus_dir)
    got = _by_name(report)
    for split in prov["splits"]:
        expect = {}
        for stage in split["stages"]:
            cols = ["status", "reason"]
            # the images stage: every image not had (rejected and failed), with the run record's counts by reason
            not_ok = ("rejected", "failed") if stage["stage"] == "images" else ("rejected",)
            rows = Counter(r["reason"] for r in _read(corpus_dir, stage, cols) if r["status"] in not_ok)
            stats = stage["stats"].get("images", {}).get("by_reason") if stage["stage"] == "images" else \
                stage["stats"]["rejected_by_reason"]
            for reason in set(rows) | set(stats):
                expect[(stage["stage"], reason)] = (stats.get(reason, 0), rows.get(reason, 0))
        rej = got[split["name"]]["rejections"]
        assert {(r["stage"], r["reason"]): (r["stats"], r["rows"]) for r in rej} == expect
        assert all(r["count"] == max(r["stats"], r["rows"]) for r in rej)


def test_rejected_rows_and_stage_stats_are_counted(corpus_copy):
    prov = _prov(corpus_copy)
    split = next(s for s in prov["splits"] if s["name"] == "tallyqa")
    stage = _stage(split, "dialogues")
    stage["stats"]["rejected_by_reason"] = {"answer:empty": 1, "image:missing": 3}
    (corpus_copy / "manifest.json").write_text(json.dumps(prov))
    shard = corpus_copy / stage["shards"][0]["path"]
    t = pq.read_table(shard)
    bad = Dialogue(id="rej1", caption_id="rej1", source="tallyqa", instruction="QA", seed=0, status="rejected",
                   reason="answer:empty")
    pq.write_table(pa.concat_tables([t, pa.Table.from_pylist([dialogue_to_row(bad)], schema=t.schema)]), shard)

    info = write_report(corpus_copy)
    got = _by_name(info)["tallyqa"]
    rej = {(r["stage"], r["reason"]): (r["stats"], r["rows"], r["count"]) for r in got["rejections"]}
    assert rej == {("dialogues", "answer:empty"): (1, 1, 1), ("dialogues", "image:missing"): (3, 0, 3)}
    assert got["stages"]["dialogues"]["rows"]["rejected"] == 1
    assert got["dialogues"]["ok"] == t.column("status").to_pylist().count("ok")
    html = Path(info["paths"]["html"]).read_text()
    assert "image:missing" in html and "answer:empty" in html
    with Image.open(info["paths"]["plots"]["rejections"]) as im:  # bars now, not the "no data" panel
        colors = {c for _, c in im.convert("RGB").getcolors(1 << 24)}
    assert {(31, 119, 180), (255, 127, 14)} <= colors  # tab10's first two: one segment per reason


def test_corpus_strings_are_escaped_in_the_page(corpus_copy, tmp_path):
    prov = _prov(corpus_copy)
    prov["description"] = f"desc {XSS}"
    speech = next(s for s in prov["splits"] if s["kind"] == "speech")
    stage = _stage(speech, "speech")
    stage["stats"]["rejected_by_reason"] = {f"reason {XSS}": 2}
    (corpus_copy / "manifest.json").write_text(json.dumps(prov))
    shard = corpus_copy / stage["shards"][0]["path"]
    t = pq.read_table(shard)
    t = t.set_column(t.schema.get_field_index("voice_user"), "voice_user",
                     pa.array([f"voice {XSS}"] * t.num_rows, pa.string()))
    pq.write_table(t, shard)

    info = write_report(corpus_copy)  # default: CORPUS/report
    assert Path(info["paths"]["html"]) == corpus_copy / "report" / "index.html"
    html = (corpus_copy / "report" / "index.html").read_text()
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(") >= 3  # description, voice, reason
    assert "voice &lt;script&gt;" in html and "reason &lt;script&gt;" in html
    assert _by_name(info)[speech["name"]]["speech"]["voices"]["user"][f"voice {XSS}"] == t.num_rows


def test_smoke_test_quality_is_flagged(report, corpus_dir):
    prov = _prov(corpus_dir)
    quality = prov["models"]["dialogue"]["assistant"]["quality"]
    html = Path(report["paths"]["html"]).read_text()
    if quality != "production":
        assert any(quality in w for w in report["warnings"]) and quality in html
    if prov["models"].get("codec", {}).get("random"):
        assert any("random-weight" in w for w in report["warnings"])


def test_not_a_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        write_report(tmp_path)


def test_a_missing_shard_is_reported_not_fatal(corpus_copy):
    prov = _prov(corpus_copy)
    split = next(s for s in prov["splits"] if s["kind"] == "speech")
    shards = _stage(split, "speech")["shards"]
    gone = shards[0]["path"]
    (corpus_copy / gone).unlink()
    info = write_report(corpus_copy)
    got = _by_name(info)[split["name"]]
    assert got["missing_shards"] == [gone] and got["speech"]["durations"]["count"] == sum(s["rows"] for s in shards[1:])
    assert gone in Path(info["paths"]["html"]).read_text()
