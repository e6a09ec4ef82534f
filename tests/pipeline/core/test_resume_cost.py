"""Resume and no-op reruns in O(shards): a complete input shard is skipped before it is opened, and a rerun of a
finished stage starts no worker and reads no input row (issue 25, item 4). Reads are counted on real sources:
the caption source's shard opens, the stage input's row reads, and input files made unreadable after the run."""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.runner import RunOptions, run_stage
from pipeline.core.runstate import RunState
from pipeline.core.stage_input import StageInput, open_stage_input
from pipeline.core.stage_jobs import run_row_stage
from pipeline.dialogue.protocol import DialogueConfig
from pipeline.dialogue.stage import DialogueStage
from pipeline.sources.captions import CaptionSource, open_source
from pipeline.speech.stage import SpeechStage
from pipeline.speech.worker import SpeechSpec, speech_row
from tests.conftest import write_dialogue_fixture
from tests.pipeline.core.test_runner import LocalPool as DialoguePool  # in-process, dies after N chunks

MODELS = {"user": {"name": "m"}, "assistant": {"name": "m"}, "engine": "test"}
OPTS = RunOptions(progress=False, chunk_size=3, flush_rows=4)


def no_workers():
    raise AssertionError("a finished stage asked for workers")


class CountingCaptions(CaptionSource):
    """The real caption source, counting the shards it opens and the rows it reads."""

    def iter_shard(self, index):
        self.opened.append(index)
        for rec in super().iter_shard(index):
            self.rows_read += 1
            yield rec


def captions(path: Path) -> CountingCaptions:
    src = open_source("pixmo", str(path))
    src.__class__ = CountingCaptions
    src.opened, src.rows_read = [], 0
    return src


def dialogue_stage(src) -> DialogueStage:
    return DialogueStage(source=src, instruction="LOC", run_seed=0, replicas=2, limit=None,
                         dialogue=DialogueConfig(), models=MODELS)


def write_captions(d: Path, shards: list[list[str]]) -> Path:
    d.mkdir(parents=True)
    for k, ids in enumerate(shards):
        pq.write_table(pa.table({"image_url": ids, "caption": [f"A long enough caption about picture {i}." for i in ids]}),
                       d / f"train-{k:05d}.parquet")
    return d


def rows(out: Path, stage: str = "dialogues") -> list[dict]:
    return sorted((r for p in sorted(out.glob(f"{stage}-*.parquet")) for r in pq.read_table(p).to_pylist()),
                  key=lambda r: r["id"])


def test_no_op_rerun_of_a_finished_dialogue_split_opens_no_input_shard(tmp_path):
    inp = write_captions(tmp_path / "in", [[f"u{i}" for i in range(10)], [f"v{i}" for i in range(7)]])
    first = run_stage(dialogue_stage(captions(inp)), tmp_path / "out", DialoguePool, OPTS)
    assert first.shards_written == 2 and RunState(tmp_path / "out", "dialogues").load()["output_shards"] == [0, 1]
    src = captions(inp)
    again = run_stage(dialogue_stage(src), tmp_path / "out", no_workers, OPTS)
    assert (src.opened, src.rows_read) == ([], 0)
    assert again.shards_skipped == 2 and again.shards_written == 0 and again.items_run == 0
    assert again.status == first.status and again.to_dict()["status"] == {"ok": 34}
    # a missing output shard is not a no-op: that shard alone is read and made again
    (tmp_path / "out" / "dialogues-00001.parquet").unlink()
    src, pool = captions(inp), DialoguePool()
    redo = run_stage(dialogue_stage(src), tmp_path / "out", lambda: pool, OPTS)
    assert src.opened == [1] and len(pool.seen) == 14 and redo.shards_written == 1 and redo.shards_skipped == 1


def test_resume_skips_complete_input_shards_unopened_and_keeps_the_duplicate_id_check(tmp_path):
    # shard 1 repeats an id of shard 0 (u3): an uninterrupted run rejects it as a duplicate
    inp = write_captions(tmp_path / "in", [[f"u{i}" for i in range(12)], ["v0", "u3", "v1", "v2"]])
    run_stage(dialogue_stage(captions(inp)), tmp_path / "full", DialoguePool, OPTS)
    expected = rows(tmp_path / "full")
    assert [r["reason"] for r in expected if r["status"] == "rejected"] == ["row:duplicate_id"] * 2

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_stage(dialogue_stage(captions(inp)), out, lambda: DialoguePool(die_after=9), OPTS)
    assert (out / "dialogues-00000.parquet").exists() and not (out / "dialogues-00001.parquet").exists()
    src, pool = captions(inp), DialoguePool()
    run_stage(dialogue_stage(src), out, lambda: pool, OPTS)
    assert src.opened == [1]  # the complete shard 0 was not opened
    assert rows(out) == expected  # the same rows, the duplicate still rejected naming its first row
    assert 0 < len(pool.seen) <= 6  # only shard 1's remaining dialogues were run


# --- a row stage (speech) over dialogue shards ---
class SpeechPool(DialoguePool):
    """In-process speech rows without audio (the worker is not under test); dies after `die_after` chunks."""

    def submit(self, items):
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            raise KeyboardInterrupt("killed")
        self.seen += [it.id for it in items]
        self.done.append([speech_row(it.row, None, SpeechSpec()) for it in items])


class CountingInput(StageInput):
    """The real stage input, counting the shards whose rows it reads."""

    def rows(self, index, path, columns=None):
        self.read.append(index)
        return super().rows(index, path, columns)


def speech_stage(dlg: Path) -> SpeechStage:
    inp = open_stage_input(dlg, ("dialogues",))
    inp.__class__ = CountingInput
    inp.read = []
    return SpeechStage(inp, SpeechSpec(), tts={"test": "none"})


def test_row_stage_resume_skips_complete_shards_and_a_no_op_rerun_reads_no_input(tmp_path):
    dlg = write_dialogue_fixture(tmp_path / "dialogues")  # shard 0: 2 ok + 1 rejected; shard 1: 1 ok
    out = tmp_path / "speech"
    row_opts = RunOptions(progress=False, chunk_size=1, flush_rows=1)
    with pytest.raises(KeyboardInterrupt):
        run_row_stage(speech_stage(dlg), out, SpeechPool(die_after=2), row_opts, True)
    assert (out / "speech-00000.parquet").exists() and not (out / "speech-00001.parquet").exists()

    stage, pool = speech_stage(dlg), SpeechPool()
    s = run_row_stage(stage, out, pool, row_opts, True)
    assert stage.input.read == [1] and len(pool.seen) == 1 and s.status["ok"] == 3
    rec = RunState(out, "speech").load()
    assert rec["input"]["not_ok_rows"] == 1  # shard 0's rejected dialogue, counted from the footers
    assert rec["output_shards"] == [0, 1]

    for f in dlg.glob("dialogues-*.parquet"):  # no rerun may read them now: not even a footer
        f.write_bytes(b"not parquet any more")
    stage = speech_stage(dlg)
    again = run_row_stage(stage, out, None, row_opts, True)
    assert stage.input.read == [] and again.noop
    assert again.shards_skipped == 2 and again.status["ok"] == 3 and again.items_run == 0
    assert RunState(out, "speech").load()["input"]["not_ok_rows"] == 1  # the recorded input stats stand
