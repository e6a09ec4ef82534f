"""Run records: the same config resumes, another is refused naming what differs, a moved corpus resumes."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.core.runstate import ConfigMismatch, RunState, config_hash


def _config(root, k=1):
    return {"stage": "speech", "input": {"dir": str((root / "dialogues").resolve()), "stage": "dialogues",
                                         "config_hash": "abc"}, "k": k}


def test_input_dir_is_recorded_relative_and_a_moved_corpus_resumes(tmp_path):
    a = tmp_path / "a"
    RunState(a / "speech", "speech").begin(_config(a))
    rec = json.loads((a / "speech" / "_speech.run.json").read_text())
    assert rec["config"]["input"]["dir"] == "../dialogues"
    b = tmp_path / "moved" / "b"
    shutil.copytree(a, b)
    RunState(b / "speech", "speech").begin(_config(b))  # same run, elsewhere: accepted
    with pytest.raises(ConfigMismatch, match=r"k: 1 -> 2"):
        RunState(b / "speech", "speech").begin(_config(b, k=2))


def test_a_record_with_an_absolute_input_dir_still_resumes_in_place(tmp_path):
    out = tmp_path / "speech"
    old = json.loads(json.dumps(_config(tmp_path)))  # as written before input dirs were relative
    out.mkdir()
    (out / "_speech.run.json").write_text(json.dumps({"stage": "speech", "config": old,
                                                       "config_hash": config_hash(old)}))
    RunState(out, "speech").begin(_config(tmp_path))
    rec = json.loads((out / "_speech.run.json").read_text())
    assert rec["config"]["input"]["dir"] == "../dialogues" and rec["state"] == "running"
