from pathlib import Path

import pyarrow.parquet as pq

from pipeline.sources.benchmarks import open_benchmark
from pipeline.corpus.benchmark_stage import BenchmarkStage
from pipeline.core.runner import RunOptions, run_stage

ROOT = Path(__file__).resolve().parents[3]
FIX = ROOT / "tests" / "fixtures" / "benchmarks"


def _no_pool():
    raise AssertionError("a benchmark split must not start workers")


def test_benchmark_rows_become_dialogue_shards_without_workers(tmp_path):
    src = open_benchmark("tallyqa", str(FIX / "tallyqa"))
    expected = list(src.iter_shard(0))
    s = run_stage(BenchmarkStage(src, None), tmp_path, _no_pool, RunOptions(progress=False))
    t = pq.read_table(tmp_path / "dialogues-00000.parquet").to_pylist()
    assert len(t) == len(expected) and s.shards_written == 1
    ok = [r for r in t if r["status"] == "ok"]
    assert ok and all(r["instruction"] == "QA" and [x["role"] for x in r["turns"]][:2] == ["user", "assistant"]
                      for r in ok)
    rejected = [r for r in t if r["status"] == "rejected"]
    assert all(r["reason"] and r["note"] for r in rejected)  # each rejection says why and where
    assert s.status["ok"] + s.status["rejected"] == len(t)


def test_limit_and_rerun_is_a_no_op(tmp_path):
    src = open_benchmark("docvqa", str(FIX / "docvqa"))
    run_stage(BenchmarkStage(src, 2), tmp_path, _no_pool, RunOptions(progress=False))
    assert pq.read_metadata(tmp_path / "dialogues-00000.parquet").num_rows == 2
    again = run_stage(BenchmarkStage(src, 2), tmp_path, _no_pool, RunOptions(progress=False))
    assert again.shards_skipped == 1 and again.shards_written == 0
