"""Hostile input files through the real CLI (issue 14, item 5): a clear `error:` line and exit 2, or counted
rejections, never a Python traceback. No engine starts: every case fails before any work or has no row to
generate from (tests/pipeline/sources/test_hostile_files.py and test_hostile_rows.py cover the cases one by one on
the loaders)."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tests.integration.test_cli_dialogues import ROOT, TINY, _env

FIXB = ROOT / "tests" / "fixtures" / "benchmarks"


def ssvd(*args, check: bool = True, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**_env(), **(env_extra or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"ssvd {args} exited {p.returncode}\n{p.stderr[-4000:]}")
    return p


def _dialogues(inp: Path | str, out: Path, *extra: str, check: bool = False, source: str = "pixmo"):
    return ssvd("dialogues", "--source", source, "--instruction", "LOC", "--input", inp, "--out", out, *TINY,
                *extra, check=check)


def _refused(p, *words: str) -> None:
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "error:" in p.stderr, p.stderr[-3000:]
    for w in words:
        assert w in p.stderr, (w, p.stderr[-3000:])


def test_broken_files_and_a_missing_hub_id_are_one_error_line_each(tmp_path):
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"image_url": ["https://example.org/0.jpg"] * 50, "caption": ["A caption."] * 50}), whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[:300])
    _refused(_dialogues(cut, tmp_path / "o1"), str(cut), "Parquet", "Fix")
    gz = tmp_path / "captions.jsonl"
    gz.write_bytes(gzip.compress(b'{"image_url": "u", "caption": "A caption."}\n'))
    _refused(_dialogues(gz, tmp_path / "o2"), str(gz), "gzip", "gzip -dc")
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    _refused(_dialogues(loop, tmp_path / "o3"), str(loop), "symlink loop")
    p = ssvd("dialogues", "--source", "pixmo", "--instruction", "LOC", "--input", "nobody-ssvd/no-such-captions",
             "--out", tmp_path / "o4", *TINY, check=False, env_extra={"HF_HUB_OFFLINE": "1"})
    _refused(p, "nobody-ssvd/no-such-captions", "HF_HUB_OFFLINE", "Fix")
    assert not [f for k in range(1, 5) for f in (tmp_path / f"o{k}").glob("*.parquet")]


def test_empty_file_gives_an_empty_dialogues_shard_and_bad_rows_are_counted(tmp_path):
    """Issue 12's leftover: an empty caption file is shard 0 in, an empty shard 0 out."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("")
    bad = [{"image_url": "https://example.org/1.jpg", "caption": 7},
           {"image_url": "https://example.org/1.jpg", "caption": ["a", "list"]},
           {"image_url": "https://example.org/2.jpg", "caption": "\x00\x07 \t"}]
    (folder / "b.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in bad) + b"{not json\n")
    out = tmp_path / "out"
    p = _dialogues(folder, out, check=True)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["rejected_by_reason"] == {"caption:not_text": 2, "caption:empty": 1, "row:malformed_json": 1}
    assert {f.name: pq.read_metadata(f).num_rows for f in out.glob("dialogues-*.parquet")} == {
        "dialogues-00000.parquet": 0, "dialogues-00001.parquet": 4}


def test_run_checks_every_split_input_before_any_work(tmp_path):
    """`ssvd run` opens every split's input at the start: a missing hub id in the last split stops it before
    the first split runs, naming the split, the id and the fix; nothing is written."""
    data = {"name": "t", "seed": 1,
            "models": {"dialogue": {"engine": "vllm", "model": "builtin:tiny-mistral"},
                       "speech": {"assistant_voice": "piper:joe", "user_voices": ["espeak:en-us+m3"]},
                       "codec": "random", "tokenizer": None},
            "defaults": {"min_pairs": 1, "max_pairs": 1, "limit": 1},
            "splits": [{"name": "tallyqa", "kind": "text", "weight": 1, "benchmark": "tallyqa",
                        "input": str(FIXB / "tallyqa")},
                       {"name": "pixmo-loc", "kind": "text", "weight": 1, "source": "pixmo", "instruction": "LOC",
                        "input": "nobody-ssvd/no-such-captions"},
                       {"name": "docvqa", "kind": "text", "weight": 1, "benchmark": "docvqa",
                        "input": str(tmp_path / "nowhere")}]}
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(data))
    out = tmp_path / "corpus"
    p = ssvd("run", m, "--out", out, "--no-progress", check=False, env_extra={"HF_HUB_OFFLINE": "1"})
    _refused(p, "2 split(s) cannot read their input; nothing was run", "pixmo-loc:", "nobody-ssvd/no-such-captions",
             "docvqa:", "nowhere")
    assert not out.exists()
