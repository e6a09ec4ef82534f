"""`ssvd run` on the tiny manifest (built once by conftest.corpus_build): layout, provenance, resume, refusals."""
import json

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.shards import sha256_file
from tests.pipeline.corpus.conftest import TINY, WEB, ssvd


def _prov(d):
    return json.loads((d / "manifest.json").read_text())


def test_every_split_went_through_its_stages(corpus_dir):
    prov = _prov(corpus_dir)
    assert prov["state"] == "complete" and prov["format"] == "ssvd-corpus/1"
    stages = {s["name"]: [st["stage"] for st in s["stages"]] for s in prov["splits"]}
    assert stages == {"docci-prop": ["dialogues", "images", "speech", "tokens"],
                      "pixelprose-ts1": ["dialogues", "images", "tokens"],
                      "tallyqa": ["dialogues", "images", "tokens"], "generic": ["dialogues", "speech", "tokens"]}
    for s in prov["splits"]:
        assert s["state"] == "complete", s["name"]
        assert s["rows"] >= 1, f"{s['name']} has no training rows"
        for row in pq.read_table(corpus_dir / s["shards"][0]["path"]).to_pylist():
            assert row["split"] == s["name"]
            assert row["kind"] == ("speech" if s["kind"] == "speech" else "text")
    from pipeline.corpus.run import holder

    assert holder(corpus_dir / "_corpus.lock") is None  # released
    assert (corpus_dir / "README.md").is_file()


def test_manifest_json_lists_shards_with_true_rows_and_checksums(corpus_dir):
    prov = _prov(corpus_dir)
    files = sorted(p.relative_to(corpus_dir).as_posix() for p in corpus_dir.glob("*/*/*-0*.parquet"))
    listed = sorted(sh["path"] for s in prov["splits"] for st in s["stages"] for sh in st["shards"])
    assert listed == files
    for s in prov["splits"]:
        for st in s["stages"]:
            for sh in st["shards"]:
                f = corpus_dir / sh["path"]
                assert sh["sha256"] == sha256_file(f) and sh["rows"] == pq.read_metadata(f).num_rows
                assert sh["bytes"] == f.stat().st_size


def test_manifest_json_records_stats_config_and_models(corpus_dir):
    prov = _prov(corpus_dir)
    assert prov["config"]["manifest"]["name"] == "tiny" and len(prov["config_hash"]) == 16
    assert prov["weights"] == {"docci-prop": 5 / 21, "pixelprose-ts1": 15 / 21, "tallyqa": 1 / 21}
    m = prov["models"]
    assert m["dialogue"]["user"]["name"] == "builtin:smollm2" and m["dialogue"]["user"]["fingerprint"]
    assert m["dialogue"]["user"]["quality"]  # smoke-test label travels with the corpus
    assert m["codec"]["random"] is True and m["codec"]["weights_sha256"]
    assert m["tokenizer"]["stand_in"] is True and m["tokenizer"]["sha256"]
    assert m["voices"]["assistant"] == "piper:joe" and "piper" in m["tts"]
    assert {"python", "pyarrow", "transformers"} <= set(prov["software"])
    tally = next(s for s in prov["splits"] if s["name"] == "tallyqa")
    first = tally["stages"][0]["stats"]
    assert first["ok"] + first["rejected"] == 3  # limit: 3 of the benchmark's rows, each accounted for
    tokens = next(st for st in tally["stages"] if st["stage"] == "tokens")["stats"]
    assert tokens["ok"] == first["ok"] and tokens["input_not_ok"] == first["rejected"]
    docci = next(s for s in prov["splits"] if s["name"] == "docci-prop")
    assert docci["totals"]["audio_s"] > 0 and docci["totals"]["audio_frames"] > 0
    assert docci["totals"]["text_tokens"] == docci["totals"]["audio_frames"]  # one text token per frame


def test_first_partial_run_then_full_run_resumed_across_splits(corpus_build):
    out, first, second = corpus_build
    assert "tallyqa" in first.stderr and "docci-prop" not in first.stderr
    # the second run found tallyqa done: its stages were skipped, not rerun
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("tallyqa")]
    assert len(lines) == 3 and all("done" in ln for ln in lines)  # dialogues, images, tokens
    again = ssvd("run", TINY, "--out", out, "--only", "tallyqa", "--no-progress")
    assert json.loads(again.stdout.strip().splitlines()[-1])["ok"] is True


def test_resume_with_a_changed_key_is_refused_naming_it(corpus_copy, tmp_path):
    data = yaml.safe_load(TINY.read_text())
    data["defaults"]["temperature"] = 0.3
    data["splits"][0]["weight"] = 6
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    before = (corpus_copy / "manifest.json").read_text()
    p = ssvd("run", changed, "--out", corpus_copy, "--no-progress", check=False)
    assert p.returncode == 2
    assert "manifest.defaults.temperature: 0.7 -> 0.3" in p.stderr
    assert "manifest.splits.docci-prop.weight: 5 -> 6" in p.stderr
    assert (corpus_copy / "manifest.json").read_text() == before  # nothing touched
    p = ssvd("run", TINY, "--out", corpus_copy, "--limit", "1", "--no-progress", check=False)
    assert p.returncode == 2 and "limit: None -> 1" in p.stderr


HOLD = """
import sys, time
from pathlib import Path
from pipeline.corpus.run import _Lock
with _Lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(300)
"""


def _hold(directory):
    import subprocess
    import sys

    from tests.pipeline.corpus.conftest import ROOT

    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_live_run_holds_the_directory(corpus_copy):
    holder_proc = _hold(corpus_copy)
    try:
        p = ssvd("run", TINY, "--out", corpus_copy, "--no-progress", check=False)
        assert p.returncode == 2 and f"pid {holder_proc.pid}" in p.stderr and "is writing it" in p.stderr
        assert json.loads(ssvd("status", corpus_copy, "--json").stdout)["running"]["pid"] == holder_proc.pid
    finally:
        holder_proc.kill()
        holder_proc.wait()


def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path):
    """SIGKILL leaves the lock file with the dead run's pid in it; the kernel released the lock itself."""
    from pipeline.corpus.run import _Lock, holder

    p = _hold(tmp_path)
    assert holder(tmp_path / "_corpus.lock")["pid"] == p.pid
    p.kill()
    p.wait()
    assert json.loads((tmp_path / "_corpus.lock").read_text())["pid"] == p.pid  # left behind ...
    assert holder(tmp_path / "_corpus.lock") is None  # ... but held by nobody
    with _Lock(tmp_path):
        assert holder(tmp_path / "_corpus.lock")["pid"] != p.pid


def test_a_bad_manifest_is_refused_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("instruction: PROP", "instruction: PROPS").replace("seed: 3", "sede: 3"))
    p = ssvd("run", bad, "--out", tmp_path / "out", check=False)
    assert p.returncode == 2
    assert "PROPS" in p.stderr and "COMB" in p.stderr and "sede" in p.stderr
    assert not (tmp_path / "out").exists()


def test_a_failing_split_is_reported_and_the_others_go_on(tmp_path):
    """A split whose input turns out corrupt while it is read (past what the start-of-run check reads) fails
    alone; the others go on. (A split whose input cannot be opened at all stops the run before any work:
    tests/integration/test_cli_hostile_inputs.py.)"""
    from tests.pipeline.sources.hostile_inputs import corrupt_past_footer

    bad = tmp_path / "ocrvqa.parquet"
    corrupt_past_footer(bad, [{"image_id": str(i), "image": f"ocr/{i}.jpg", "questions": [f"Who wrote book {i}?"],
                                "answers": ["Ann Lee"]} for i in range(40)])
    data = yaml.safe_load(TINY.read_text())
    data.pop("generic")
    data["splits"] = [s for s in data["splits"] if s["name"] == "tallyqa"] + [
        {"name": "ocrvqa", "kind": "text", "weight": 5, "benchmark": "ocrvqa", "input": str(bad)}]
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    p = ssvd("run", m, "--out", out, "--no-progress", check=False)
    assert p.returncode == 1
    err = p.stderr
    assert "ocrvqa" in err and str(bad) in err and "not a readable Parquet file" in err and "blocked" in err
    assert "Traceback" not in err
    prov = _prov(out)
    by = {s["name"]: s for s in prov["splits"]}
    assert by["tallyqa"]["state"] == "complete" and by["tallyqa"]["rows"] >= 1
    assert by["ocrvqa"]["state"] == "partial" and prov["state"] == "partial"  # its first rows were kept


def test_an_unknown_script_repository_is_refused_before_any_work(tmp_path, monkeypatch):
    """A hub repository ssvd does not know to be a loading script is found out when `datasets` resolves it:
    `ssvd run` does that for every split at the start, so the split before it never runs."""
    from pipeline.sources import hub_load
    from pipeline.manifest import load as manifest_load
    from pipeline.corpus.run import CorpusInputError, RunArgs, run_corpus

    repo = tmp_path / "someset"
    repo.mkdir()
    (repo / "someset.py").write_text("raise SystemExit('never run')\n")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    for mod in (hub_load, manifest_load):  # as if the repo were on the hub, unknown to ssvd's list
        monkeypatch.setattr(mod, "script_repo_problem", lambda _: None)
    data = yaml.safe_load(TINY.read_text())
    data.pop("generic")
    data["splits"] = [s for s in data["splits"] if s["name"] == "tallyqa"] + [
        {"name": "someset", "kind": "text", "weight": 1, "source": "pixmo", "instruction": "LOC",
         "input": f"hub:{repo}"}]
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    with pytest.raises(CorpusInputError) as e:
        run_corpus(m, out, RunArgs(progress=False))
    assert "someset: " in str(e.value) and "loading-script repository" in str(e.value) and "Fix" in str(e.value)
    assert not out.exists()


def test_rerun_of_a_finished_corpus_starts_no_workers(corpus_copy):
    """Every step is found finished from the run records alone: no engine, TTS or codec is started."""
    before = {p: p.stat().st_mtime_ns for p in corpus_copy.rglob("*.parquet")}
    p = ssvd("run", TINY, "--out", corpus_copy, "--no-progress", "--verbose")
    assert json.loads(p.stdout.strip().splitlines()[-1])["ok"] is True
    assert "worker ready" not in p.stderr and "Starting to load model" not in p.stderr
    assert {p: p.stat().st_mtime_ns for p in corpus_copy.rglob("*.parquet")} == before
    status = ssvd("status", corpus_copy)
    assert "pending" not in status.stdout and "interrupted" not in status.stdout


def test_images_step_stored_every_image_with_real_pixels(corpus_dir, web_server, tmp_path):
    """docci-prop: the DOCCI release's local files; pixelprose-ts1: URLs fetched from the tests' server
    through --image-mirror (127.0.0.1 allowed explicitly), each checked against the row's sha256; tallyqa:
    the bytes embedded in the benchmark dataset, read back from it."""
    import hashlib

    prov = _prov(corpus_dir)
    by = {s["name"]: {st["stage"]: st for st in s["stages"]} for s in prov["splits"]}
    for name, fetched in (("docci-prop", "file"), ("pixelprose-ts1", "http://127.0.0.1"), ("tallyqa", "embedded")):
        im = by[name]["images"]["stats"]["images"]
        assert im["total"] >= 1 and im["status"] == {"ok": im["total"]} and im["by_reason"] == {}, (name, im)
        for r in pq.read_table(corpus_dir / by[name]["images"]["shards"][0]["path"]).to_pylist():
            assert r["image"][:3] == b"\xff\xd8\xff" and r["fetched_from"].startswith(fetched)
            if name == "pixelprose-ts1":  # verified: the served bytes are the ones the row names
                assert r["sha256"] and r["content_sha256"] == r["sha256"]
                assert r["sha256"] == hashlib.sha256((WEB / r["url"].split("://")[1]).read_bytes()).hexdigest()
    assert prov["models"]["images"]["options"]["image_size"] == 448
    assert prov["models"]["images"]["software"]["img2dataset"]
    assert "## Images" in (corpus_dir / "README.md").read_text()
    from pipeline.corpus.preview import write_preview  # the preview shows the stored image of a URL

    write_preview(corpus_dir, tmp_path / "p.html", splits=["pixelprose-ts1"])
    assert '<img src="data:image/jpeg;base64,' in (tmp_path / "p.html").read_text()


def test_images_without_the_allow_list_are_refused_and_counted(corpus_copy):
    """Rerun of the images step without --allow-address: the server is loopback, so every URL is refused."""
    from pipeline.corpus.status import corpus_status, format_status
    from pipeline.images.cli import options
    from pipeline.images.stage import images
    from pipeline.core.runner import RunOptions

    out = corpus_copy / "pixelprose-ts1" / "images"
    images(corpus_copy / "pixelprose-ts1" / "dialogues", out, options(mirror=["https://cdn.example.net/=http://127.0.0.1:9/"]),
           workers=0, run_opts=RunOptions(overwrite=True, progress=False))  # in-process: the CLI is tested elsewhere
    got = json.loads((out / "_images.run.json").read_text())["images"]
    assert got["status"] == {"rejected": got["total"]} and got["by_reason"] == {"image:refused_address": got["total"]}
    status = format_status(corpus_status(corpus_copy))
    assert "pixelprose-ts1 images not had, by reason: refused_address" in status
