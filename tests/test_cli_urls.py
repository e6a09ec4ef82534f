"""A URL where ssvd needs a path is refused before any work, naming the option (object storage is not built yet):
`--out s3://bucket/x` used to write a local folder named `s3:`."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from pipeline.core.locations import UnsupportedLocation, refuse_url, url_scheme
from pipeline.sources.captions import open_source

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "tests" / "fixtures" / "captions" / "pixmo"


def refused(args: list[str], option: str, scheme: str, cwd: Path) -> str:
    r = runner.invoke(app, args)
    out = r.output
    assert r.exit_code == 2, out
    assert f"{option} {scheme}://" in out and "object storage is not supported yet" in out
    assert not any(cwd.iterdir()), "nothing may be written, least of all a folder named after the scheme"
    return out


def test_run_refuses_an_object_storage_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["run", str(REPO / "manifests" / "quickstart.yaml"), "--out", "s3://bucket/corpus", "--workers", "0",
             "--no-progress"], "--out", "s3", tmp_path)
    refused(["run", "gs://bucket/manifest.yaml", "--out", "corpus"], "MANIFEST", "gs", tmp_path)


def test_dialogues_refuses_urls_for_out_and_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["dialogues", "--source", "pixmo", "--instruction", "LOC", "--model", "builtin:tiny-mistral"]
    refused(base + ["--input", str(CAPTIONS), "--out", "s3://bucket/dialogues"], "--out", "s3", tmp_path)
    refused(base + ["--input", "s3://bucket/captions", "--out", "dialogues"], "--input", "s3", tmp_path)
    refused(base + ["--input", str(CAPTIONS), "--out", "file:///tmp/x"], "--out", "file", tmp_path)


def test_verify_refuses_a_bucket(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["verify", "s3://bucket/corpus"], "CORPUS", "s3", tmp_path)
    refused(["status", "minio+s3://bucket/corpus"], "CORPUS", "minio+s3", tmp_path)


def test_what_is_a_url_and_what_is_a_path():
    assert [url_scheme(v) for v in ("s3://b/x", "s3:/b/x", "GS://b", "file:///x", "hf://datasets/a/b")] == \
        ["s3", "s3", "gs", "file", "hf"]
    assert [url_scheme(v) for v in ("out", "./s3/x", "/abs/path", "C:/x", "hub:allenai/pixmo-cap", "a:b", None)] == \
        [None] * 7
    refuse_url("hf://datasets/allenai/pixmo-cap", "--input", allowed=("hf",))  # a hub dataset's URL: allowed there
    with pytest.raises(UnsupportedLocation, match=r"--out s3://b/x: a s3:// URL"):
        refuse_url(Path("s3://b/x"), "--out")  # pathlib collapsed the slashes: the message shows the URL


def test_a_manifest_input_url_is_refused_by_the_caption_source():
    with pytest.raises(UnsupportedLocation, match="input s3://bucket/captions.parquet: .*not supported yet"):
        open_source("pixmo", "s3://bucket/captions.parquet")
