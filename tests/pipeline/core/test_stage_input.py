"""Reading an earlier stage's directory: finished shards only, clear errors, rows not ok counted."""
from collections import Counter

import pytest

from pipeline.core.shards import ShardStore
from pipeline.core.stage_input import StageInputError, open_stage_input
from pipeline.core.types import DIALOGUE_SCHEMA
from tests.conftest import write_dialogue_fixture


def test_finished_shards_in_order_and_rows_not_ok_counted(dialogue_dir):
    inp = open_stage_input(dialogue_dir, ("dialogues",))
    assert inp.stage == "dialogues"
    assert [i for i, _ in inp.shards] == [0, 1]
    stats = Counter()
    items = list(inp.ok_items(None, stats))
    assert [(i, it.id) for i, it in items] == [(0, "dlg000"), (0, "dlg001"), (1, "dlg002")]
    assert stats["input_not_ok"] == 1
    assert all(it.row["input_shard"] == i for i, it in items)
    assert [it.input_row for _, it in items] == [0, 1, 0]


def test_limit_counts_accepted_rows_only(dialogue_dir):
    inp = open_stage_input(dialogue_dir, ("dialogues",))
    assert [it.id for _, it in inp.ok_items(2, Counter())] == ["dlg000", "dlg001"]


def test_unfinished_upstream_shard_is_reported_not_read(tmp_path):
    write_dialogue_fixture(tmp_path, shards=((0,),))
    ShardStore(tmp_path, "dialogues", DIALOGUE_SCHEMA).write_part(1, [])  # nothing written: no parts dir
    (tmp_path / ".parts" / "dialogues-00001").mkdir(parents=True)
    inp = open_stage_input(tmp_path, ("dialogues",))
    assert [i for i, _ in inp.shards] == [0]
    assert inp.unfinished == [1]


@pytest.mark.parametrize("make, msg", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: p, "holds no dialogues shards"),
])
def test_bad_input_directories_name_the_fix(tmp_path, make, msg):
    with pytest.raises(StageInputError, match=msg) as e:
        open_stage_input(make(tmp_path), ("dialogues",))
    assert "ssvd dialogues" in str(e.value)


def test_describe_has_no_shard_list_so_later_upstream_shards_keep_the_config(tmp_path):
    write_dialogue_fixture(tmp_path, shards=((0,),))
    before = open_stage_input(tmp_path, ("dialogues",)).describe()
    write_dialogue_fixture(tmp_path, shards=((0,), (1,)))
    assert open_stage_input(tmp_path, ("dialogues",)).describe() == before
