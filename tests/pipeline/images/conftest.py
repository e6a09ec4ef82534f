"""The tests' image server (127.0.0.1 only) and dialogue shards whose rows reference its URLs."""
from __future__ import annotations

import pytest

from pipeline.images.fixture_server import FixtureServer


@pytest.fixture(scope="session")
def image_server():
    srv = FixtureServer(slow_s=5.0).start()  # past the tests' --timeout-s 2
    yield srv
    srv.stop()


def write_dialogues(out_dir, shards: list[list[dict | None]]):
    """Dialogue shards (the real format): shard k holds one ok dialogue per image reference dict
    ({url, path, sha256}); None gives a dialogue without image; each shard ends with a rejected dialogue."""
    from pipeline.core.types import Dialogue, ImageRef, Turn, dialogue_to_row
    from tests.conftest import write_dialogue_shards

    n = 0
    all_rows = []
    for k, refs in enumerate(shards):
        rows = []
        for ref in refs:
            d = Dialogue(id=f"dlg{n:04d}", caption_id=f"cap{n}", source="pixmo", instruction="COMB", seed=n,
                         turns=[Turn("user", "What is it?", "COMB"), Turn("assistant", "Bands of colour.", "COMB")],
                         image=ImageRef(**ref) if ref else ImageRef(), input_shard=k, input_row=n)
            rows.append(dialogue_to_row(d))
            n += 1
        rows.append(dialogue_to_row(Dialogue(id=f"rej{k}", caption_id="x", source="pixmo", instruction="COMB", seed=0,
                                             status="rejected", reason="caption:empty", input_shard=k,
                                             image=ImageRef(url="http://127.0.0.1:9/never.jpg"))))
        all_rows.append(rows)
    return write_dialogue_shards(out_dir, all_rows)
