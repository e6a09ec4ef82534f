"""`ssvd estimate`: input rows counted from the files, totals scaled from a measured sample, and the estimate
for 4x the sample checked against a real run of 4x the sample on the quickstart inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.corpus.estimate import EstimateArgs, _sum_and_se, _wall, input_rows, planned_dialogues
from pipeline.corpus.plan import units
from pipeline.manifest.load import load_manifest
from tests.pipeline.corpus.conftest import ROOT, ssvd

QUICKSTART = ROOT / "manifests" / "quickstart.yaml"


def _manifest(tmp_path: Path, model: str = "builtin:smollm2") -> Path:
    """The quickstart's inputs: a speech split (PixMo) and a text split (PixelProse), one pair per dialogue."""
    m = yaml.safe_load(QUICKSTART.read_text())
    m.update(name="estimate-check")
    m["models"]["dialogue"]["model"] = model
    m["defaults"].update(min_pairs=1, max_pairs=1, max_new_tokens=24, limit=None)
    m.pop("generic")
    m["splits"] = [s for s in m["splits"] if s["name"] in ("pixmo-lead1", "pixelprose-ts1")]
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m, sort_keys=False))
    return p


def test_input_rows_are_counted_in_the_local_files_and_the_hub_is_never_guessed(monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = load_manifest(QUICKSTART)
    got = {u.name: input_rows(u) for u in units(m)}
    pixmo = ROOT / "tests/fixtures/captions/pixmo"
    jsonl = sum(1 for line in (pixmo / "extra.jsonl").read_text().splitlines() if line.strip())
    assert got["pixmo-comb"] == (sum(pq.ParquetFile(f).metadata.num_rows for f in pixmo.glob("*.parquet")) + jsonl,
                                 "local files")
    assert got["generic"] == (2, "manifest (generic count)")
    assert all(origin == "local files" and n > 0 for name, (n, origin) in got.items() if name != "generic")
    # the manifest's limit (2) and replicas apply; --rows stands for both
    u = next(u for u in units(m) if u.name == "pixmo-comb")
    assert planned_dialogues(u, 30, None) == 2 and planned_dialogues(u, 30, 8) == 8 and planned_dialogues(u, None, None) is None
    # a hub input whose metadata cannot be read: unknown, and said so
    hub = units(load_manifest(ROOT / "manifests" / "moshivis.yaml"))[0]
    n, origin = input_rows(hub, timeout_s=2)
    assert n is None and origin.startswith("unknown:"), origin


def test_totals_scale_the_sample_and_carry_one_standard_error():
    assert _sum_and_se([1.0], 4.0) == (4.0, None)  # one row: no spread
    total, se = _sum_and_se([1.0, 3.0], 4.0)  # mean 2, sd sqrt(2), se of the mean 1 -> of the total 2 * 4
    assert total == 16.0 and se == pytest.approx(8.0)


def test_a_pools_start_is_counted_once_per_pool():
    """`ssvd run` keeps one pool per stage across splits (tokens: one per kind): the workers' start a split
    measured is counted for the first split of its pool, the work of every split scaled."""
    m = {"rows": 2, "elapsed_s": 12.0, "startup_s": 10.0, "workers": 1}
    started: set = set()
    assert _wall(m, 3.0, EstimateArgs(), started, "tokens/speech")[0] == 10.0 + 2.0 * 3
    assert _wall(m, 3.0, EstimateArgs(), started, "tokens/speech")[0] == 2.0 * 3  # same pool: started already
    assert _wall(m, 3.0, EstimateArgs(workers=2), started, "tokens/text")[0] == 10.0 + 2.0 * 3 / 2  # its own pool


@pytest.mark.full  # minutes: a sample run and a 4x run of builtin:smollm2 (make test-full)
def test_the_estimate_for_4x_the_sample_is_close_to_a_real_run_of_4x_the_sample(tmp_path):
    """Tolerance: every total (accepted dialogues, messages, generated tokens, audio hours, bytes per stage)
    within 50% of the real run's, or within 3 standard errors of the estimate where the sample gives one.
    Dialogue rows are exact. Wall times are reported, never asserted (speed belongs in bench/)."""
    m = _manifest(tmp_path)
    p = ssvd("estimate", m, "--sample", "2", "--rows", "8", "--out", tmp_path / "sample", "--sample-workers", "0",
             "--no-progress")
    est = json.loads(p.stdout.strip().splitlines()[-1])
    assert "accepted dialogues" in p.stderr and "wall:" in p.stderr and "local files" in p.stderr
    ssvd("run", m, "--limit", "8", "--out", tmp_path / "real", "--workers", "0", "--no-progress")
    real = json.loads(ssvd("estimate", m, "--from", tmp_path / "real", "--rows", "8").stdout.strip().splitlines()[-1])
    assert est["sample"]["ran"] and not real["sample"]["ran"] and est["not_estimated"] == real["not_estimated"] == []
    for e, r in zip(est["splits"], real["splits"]):
        assert (e["name"], e["input_rows_from"], e["dialogues_planned"]) == (r["name"], "local files", 8)
        assert e["sample_dialogues"] == 2 and r["sample_dialogues"] == 8 and r["factor"] == 1.0
        assert e["stages"][0]["rows"] == r["stages"][0]["rows"] == 8
        assert [s["stage"] for s in e["stages"]] == [s["stage"] for s in r["stages"]]
        assert all(s["wall_s"] > 0 and s["rate"]["rows_per_s"] > 0 for s in e["stages"])
    et, rt, se = est["totals"], real["totals"], est["totals"]["se"]

    def close(key, e, r, err=None):
        assert abs(e - r) <= max(0.5 * r, 3 * (err or 0)), (key, e, r, err)

    for k in ("dialogues", "messages", "generated_tokens", "audio_h"):
        close(k, et[k], rt[k], se.get(k))
    assert et["kept_tokens"] + et["wasted_tokens"] == pytest.approx(et["generated_tokens"], abs=0.01)
    for stage in ("dialogues", "speech", "tokens"):
        close(stage, et["bytes"][stage], rt["bytes"][stage])
    assert rt["audio_h"] > 0 and rt["generated_tokens"] > 0
