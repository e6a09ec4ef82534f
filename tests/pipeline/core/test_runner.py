"""The stage runner's resume and atomicity, with an in-process pool (the Ray + vLLM path is in tests/integration)."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.sources.captions import open_source
from pipeline.dialogue.stage import DialogueStage
from pipeline.dialogue.protocol import DialogueConfig
from pipeline.core.runner import RunOptions, run_stage
from pipeline.core.runstate import ConfigMismatch
from pipeline.core.types import Dialogue, Turn, dialogue_to_row

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "captions"
MODELS = {"user": {"name": "m"}, "assistant": {"name": "m"}, "engine": "test"}


class LocalPool:
    """Runs items in-process; optionally dies after `die_after` submissions (like a killed driver)."""

    size = 1

    def __init__(self, die_after=None):
        self.done, self.calls, self.die_after, self.seen = [], 0, die_after, []

    def submit(self, items):
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            raise KeyboardInterrupt("killed")
        self.seen += [it.id for it in items]
        rows = [dialogue_to_row(Dialogue(id=it.id, caption_id=it.caption.id, source=it.source,
                                         instruction=it.instruction, seed=it.seed, replica=it.replica,
                                         turns=[Turn("user", "q", it.instruction), Turn("assistant", "a", it.instruction)],
                                         input_shard=it.input_shard, input_row=it.input_row))
                for it in items]
        self.done.append(rows)

    def inflight(self):
        return sum(len(r) for r in self.done)

    def wait(self, timeout_s):
        out, self.done = [(None, r) for r in self.done], []
        return out


def stage(src="pixelprose", replicas=1, limit=None, seed=0):
    source = open_source(src, str(FIXTURES / src))
    return DialogueStage(source=source, instruction="LOC", run_seed=seed, replicas=replicas, limit=limit,
                         dialogue=DialogueConfig(), models=MODELS)


OPTS = RunOptions(progress=False, chunk_size=3, flush_rows=4)


def rows_of(out: Path):
    return [r for p in sorted(out.glob("dialogues-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_one_output_shard_per_input_shard_and_every_row_accounted(tmp_path):
    s = run_stage(stage(replicas=2), tmp_path, LocalPool, OPTS)
    files = sorted(p.name for p in tmp_path.glob("dialogues-*.parquet"))
    assert files == ["dialogues-00000.parquet", "dialogues-00001.parquet"]
    rows = rows_of(tmp_path)
    assert len(rows) == (16 + 6) * 2  # every input row x replicas, rejected ones included
    assert len({r["id"] for r in rows}) == len(rows)
    rejected = [r for r in rows if r["status"] == "rejected"]
    # no content filter by default (as Kyutai's released generator): only unusable rows are rejected
    assert {r["reason"] for r in rejected} == {"pixelprose:status", "caption:too_short"}
    assert s.status["ok"] == len(rows) - len(rejected)
    assert not (tmp_path / ".parts" / "dialogues-00000").exists()
    assert (tmp_path / "_dialogues.run.json").exists()


def test_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    full = tmp_path / "full"
    run_stage(stage(src="pixmo"), full, LocalPool, OPTS)
    expected = {r["id"] for r in rows_of(full)}

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage(src="pixmo"), out, lambda: LocalPool(die_after=5), OPTS)
    first = out / "dialogues-00000.parquet"
    assert first.exists()  # shard 0 (12 rows) completed before the kill
    mtime = first.stat().st_mtime_ns
    partial = list((out / ".parts").rglob("part-*.parquet"))
    assert partial  # shard 1's finished records were kept
    pool = LocalPool()
    run_stage(stage(src="pixmo"), out, lambda: pool, OPTS)
    rows = rows_of(out)
    assert [r["id"] for r in rows].count(rows[0]["id"]) == 1
    assert {r["id"] for r in rows} == expected and len(rows) == len(expected)
    assert first.stat().st_mtime_ns == mtime  # completed shard untouched
    assert len(pool.seen) < len(expected) - 12  # only the unfinished work was redone
    assert not list(out.rglob("*.tmp"))


def test_limit_and_complete_rerun_is_a_no_op(tmp_path):
    run_stage(stage(src="pixmo", limit=14), tmp_path, LocalPool, OPTS)
    assert len(rows_of(tmp_path)) == 14
    assert sorted(p.name for p in tmp_path.glob("dialogues-*.parquet")) == ["dialogues-00000.parquet",
                                                                           "dialogues-00001.parquet"]
    def no_pool():
        raise AssertionError("a complete run needs no workers")
    s = run_stage(stage(src="pixmo", limit=14), tmp_path, no_pool, OPTS)
    assert s.shards_skipped == 2 and s.status["ok"] == 14


def test_different_config_is_refused_naming_the_keys(tmp_path):
    run_stage(stage(src="pixmo", limit=3), tmp_path, LocalPool, OPTS)
    with pytest.raises(ConfigMismatch, match="seed"):
        run_stage(stage(src="pixmo", limit=3, seed=7), tmp_path, LocalPool, OPTS)
    first = rows_of(tmp_path)
    stale = tmp_path / ".parts" / "dialogues-00001"
    stale.mkdir(parents=True)  # a part left by a killed run: --overwrite discards it too
    (stale / "part-00000.parquet").write_bytes(b"stale")
    pool = LocalPool()
    run_stage(stage(src="pixmo", limit=3, seed=7), tmp_path, lambda: pool, RunOptions(progress=False, overwrite=True))
    rows = rows_of(tmp_path)
    expected = {it.id: it.seed for _, it in stage(src="pixmo", limit=3, seed=7).entries()}
    assert {r["id"]: r["seed"] for r in rows} == expected and len(rows) == 3  # the new run's rows, only them
    assert not {r["id"] for r in rows} & {r["id"] for r in first}
    assert not {r["seed"] for r in rows} & {r["seed"] for r in first}
    assert sorted(pool.seen) == sorted(expected)  # every dialogue was run again, none skipped as done
    assert not stale.exists()
    assert json.loads((tmp_path / "_dialogues.run.json").read_text())["config"]["seed"] == 7


def test_retry_failed_reruns_only_failed(tmp_path):
    run_stage(stage(src="pixmo", limit=5), tmp_path, LocalPool, OPTS)
    path = tmp_path / "dialogues-00000.parquet"
    t = pq.read_table(path).to_pylist()
    t[2]["status"], t[2]["error"] = "failed", "EngineError: boom"
    import pyarrow as pa
    from pipeline.core.types import DIALOGUE_SCHEMA
    pq.write_table(pa.Table.from_pylist(t, schema=DIALOGUE_SCHEMA), path)
    pool = LocalPool()
    run_stage(stage(src="pixmo", limit=5), tmp_path, lambda: pool, RunOptions(progress=False, retry_failed=True))
    assert pool.seen == [t[2]["id"]]
    rows = rows_of(tmp_path)
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)


def test_retry_failed_when_every_row_of_a_shard_failed(tmp_path):
    """A reopened shard whose rows are all redone: its old part holds no surviving row."""
    import pyarrow as pa
    from pipeline.core.types import DIALOGUE_SCHEMA

    run_stage(stage(src="pixmo", limit=3), tmp_path, LocalPool, OPTS)
    path = tmp_path / "dialogues-00000.parquet"
    t = pq.read_table(path).to_pylist()
    for r in t:
        r["status"], r["error"] = "failed", "EngineError: boom"
    pq.write_table(pa.Table.from_pylist(t, schema=DIALOGUE_SCHEMA), path)
    pool = LocalPool()
    run_stage(stage(src="pixmo", limit=3), tmp_path, lambda: pool, RunOptions(progress=False, retry_failed=True))
    assert sorted(pool.seen) == sorted(r["id"] for r in t)
    rows = rows_of(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in t) and {r["status"] for r in rows} == {"ok"}
    assert not (tmp_path / ".parts" / "dialogues-00000").exists()


class TokenPool(LocalPool):
    """Every dialogue costs 9 generated tokens; its two stored turns hold 3 + 4 of them (the rest: redraws)."""

    def submit(self, items):
        super().submit(items)
        for r in self.done[-1]:
            r["turns"] = [{**t, "completion_tokens": 3 + k} for k, t in enumerate(r["turns"])]
            r["completion_tokens"], r["generated_tokens"], r["wasted_tokens"] = 7, 9, 2


def test_summary_and_run_record_separate_generated_kept_and_wasted_tokens_with_this_run_s_rates(tmp_path):
    s = run_stage(stage(src="pixmo", limit=14), tmp_path, TokenPool, OPTS)
    d = s.to_dict()
    assert (d["generated_tokens"], d["kept_tokens"], d["wasted_tokens"]) == (14 * 9, 14 * 7, 14 * 2)
    run = d["run"]
    assert run["rows"] == 14 and run["generated_tokens"] == 14 * 9 and run["workers"] == 1
    assert run["left"] == 0 and run["eta_s"] == 0.0
    work = run["elapsed_s"] - run["startup_s"]
    assert run["rows_per_s"] == pytest.approx(14 / work, rel=0.02)  # figures rounded to 1 ms
    assert run["tokens_per_s"] == pytest.approx(14 * 9 / work, rel=0.02)
    rec = json.loads((tmp_path / "_dialogues.run.json").read_text())
    assert rec["summary"]["run"] == run and rec["progress"]["rows"] == 14  # the last flush's measures
    # a rerun does no work: its own measures say so, the totals still count every row of the files
    s = run_stage(stage(src="pixmo", limit=14), tmp_path, TokenPool, OPTS)
    assert s.run["rows"] == 0 and s.run["rows_per_s"] == 0.0 and s.generated_tokens == 14 * 9


def test_parts_written_before_the_token_columns_still_finalise(tmp_path):
    """A run begun by an older ssvd (no generated/wasted columns) resumes: the columns are null, counted as kept."""
    import pyarrow as pa

    from pipeline.core.types import DIALOGUE_SCHEMA

    with pytest.raises(KeyboardInterrupt):
        run_stage(stage(src="pixmo"), tmp_path, lambda: LocalPool(die_after=5), OPTS)
    parts = list((tmp_path / ".parts").rglob("part-*.parquet"))
    assert parts
    for p in parts:
        t = pq.read_table(p)
        pq.write_table(t.drop(["generated_tokens", "wasted_tokens"]), p)
    s = run_stage(stage(src="pixmo"), tmp_path, LocalPool, OPTS)
    assert sum(s.status.values()) == len(rows_of(tmp_path)) == 30 and s.wasted_tokens == 0
    t = pq.read_table(tmp_path / "dialogues-00001.parquet")
    assert t.schema.remove_metadata().equals(DIALOGUE_SCHEMA.remove_metadata())
    assert None in t.column("generated_tokens").to_pylist() and isinstance(t, pa.Table)
