"""A stage whose input rows are all rejected still writes its (empty) shards, through the real CLI:
shard i in -> shard i out along dialogues -> speech -> tokens (and dialogues -> text tokens), and the
next stage says "0 rows to process" instead of failing."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_dialogue_fixture
from tests.integration.test_cli_dialogues import ssvd

pytestmark = pytest.mark.engine


def _shards(d: Path, stage: str) -> dict[str, int]:
    return {p.name: pq.read_metadata(p).num_rows for p in sorted(d.glob(f"{stage}-*.parquet"))}


def _summary(p) -> dict:
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def all_rejected(tmp_path_factory):
    """Two caption files whose every row is bad: `ssvd dialogues` rejects them all (no engine needed)."""
    base = tmp_path_factory.mktemp("empty")
    captions = base / "captions"
    captions.mkdir()
    for k in range(2):
        rows = [{"image_url": f"https://example.org/{k}-{i}.jpg", "caption": ""} for i in range(2)]
        (captions / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dlg = base / "dialogues"
    p = ssvd("dialogues", "--source", "pixmo", "--instruction", "LOC", "--input", captions, "--out", dlg,
             "--model", "builtin:tiny-mistral", "--no-progress")
    assert _summary(p)["status"] == {"rejected": 4}
    assert _summary(p)["rejected_by_reason"] == {"caption:empty": 4}
    return base, dlg


def test_all_rejected_dialogues_give_empty_speech_and_token_shards(all_rejected):
    base, dlg = all_rejected
    assert _shards(dlg, "dialogues") == {"dialogues-00000.parquet": 2, "dialogues-00001.parquet": 2}
    speech, tokens = base / "speech", base / "tokens"
    ps = ssvd("speech", "--in", dlg, "--out", speech, "--workers", 0, "--no-progress")
    assert "0 rows to process" in ps.stderr
    assert _summary(ps)["shards_written"] == 2 and _summary(ps)["status"] == {}
    assert _shards(speech, "speech") == {"speech-00000.parquet": 0, "speech-00001.parquet": 0}
    pt = ssvd("tokens", "--in", speech, "--out", tokens, "--workers", 0, "--no-progress")
    assert "0 rows to process" in pt.stderr
    assert _shards(tokens, "tokens") == {"tokens-00000.parquet": 0, "tokens-00001.parquet": 0}
    # a rerun finds everything done, and `show` reads the empty shards
    again = ssvd("tokens", "--in", speech, "--out", tokens, "--workers", 0, "--no-progress")
    assert _summary(again)["shards_skipped"] == 2 and _summary(again)["shards_written"] == 0
    assert ssvd("show", tokens).returncode == 0


def test_all_rejected_dialogues_give_empty_text_token_shards(all_rejected):
    base, dlg = all_rejected
    out = base / "text"
    p = ssvd("tokens", "--in", dlg, "--out", out, "--kind", "text", "--workers", 0, "--no-progress")
    assert "0 rows to process" in p.stderr
    assert _shards(out, "tokens") == {"tokens-00000.parquet": 0, "tokens-00001.parquet": 0}
    assert json.loads((out / "_tokens.run.json").read_text())["input"]["not_ok_rows"] == 4


def test_a_shard_without_accepted_rows_keeps_its_place_in_the_chain(tmp_path):
    # shard 0 holds one rejected dialogue only, shard 1 one accepted dialogue
    dlg = write_dialogue_fixture(tmp_path / "dialogues", ((), (0,)))
    out = tmp_path / "text"
    p = ssvd("tokens", "--in", dlg, "--out", out, "--kind", "text", "--workers", 0, "--no-progress")
    assert "0 rows to process" not in p.stderr
    assert _shards(out, "tokens") == {"tokens-00000.parquet": 0, "tokens-00001.parquet": 1}
    row = pq.read_table(out / "tokens-00001.parquet").to_pylist()[0]
    assert row["id"] == "dlg000" and row["input_shard"] == 1
