"""The released generator's lockstep schedule (pipeline/dialogue/replay_hf.py); its transformers run is in tests/bench."""
import pytest

from pipeline.dialogue.replay import Request
from pipeline.dialogue.replay_hf import has_hf_weights, steps
from pipeline.dialogue.models import resolve_model


def _reqs(counts):
    return [Request(f"d{k}", i, (1, 2, 3), 4) for k, n in enumerate(counts) for i in range(n)]


def test_batches_of_dialogues_advance_one_message_per_step():
    plan = steps(_reqs([4, 2, 3, 1, 2]), batch_dialogues=2)
    # batch 1: d0 (4 messages), d1 (2): 4 steps; batch 2: d2 (3), d3 (1): 3 steps; batch 3: d4 (2): 2 steps
    assert [[(r.dialogue, r.index) for r in s] for s in plan] == [
        [("d0", 0), ("d1", 0)], [("d0", 1), ("d1", 1)], [("d0", 2)], [("d0", 3)],
        [("d2", 0), ("d3", 0)], [("d2", 1)], [("d2", 2)],
        [("d4", 0)], [("d4", 1)]]
    assert len(steps(_reqs([2] * 130), batch_dialogues=64)) == 2 * 3  # 64 + 64 + 2 dialogues


@pytest.mark.slow  # resolve_model converts SmolLM2 on a machine without it in ~/.cache/ssvd (minutes)
def test_only_local_transformers_folders_have_an_hf_arm(tmp_path):
    assert has_hf_weights(resolve_model("builtin:smollm2").path)
    assert not has_hf_weights(str(tmp_path)) and not has_hf_weights("mistralai/Mistral-Nemo-Instruct-2407")
    (tmp_path / "config.json").write_text("{}")
    assert not has_hf_weights(str(tmp_path))  # no weights
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert has_hf_weights(str(tmp_path))
