"""Corpora for the trainer tests: the real tiny corpus (built once per session by tests/pipeline/corpus/conftest.py,
with Ray and vLLM) and a hand-made one (token shards written directly: no pipeline, seconds)."""
import pytest

from tests.augment import speech_row, text_row, write_corpus
from tests.pipeline.corpus.conftest import corpus_build, corpus_copy, corpus_dir, web_server  # noqa: F401


@pytest.fixture(scope="session")
def handmade_corpus(tmp_path_factory):
    """Two visual speech splits, a text split and a generic set (no images); token ids within the tiny
    model's vocabularies (text < 32000, audio < 2048)."""
    sa = [speech_row(f"sa{i}", (3 + i % 3, 4, 2 + i % 2, 5), tag=1) for i in range(8)]
    sb = [speech_row(f"sb{i}", (4, 4, 4), tag=2) for i in range(6)]
    ta = [text_row(f"ta{i}", 5 + i, tag=3) for i in range(6)]
    gen = [speech_row(f"gen{i}", (2 + i, 3, 2), tag=0, image={"url": None, "path": None, "sha256": None})
           for i in range(6)]
    return write_corpus(tmp_path_factory.mktemp("handmade-train"), {
        "sa": {"kind": "speech", "weight": 3, "shards": [sa[:4], sa[4:]]},
        "sb": {"kind": "speech", "weight": 1, "shards": [sb]},
        "ta": {"kind": "text", "weight": 1, "shards": [ta]},
        "generic": {"kind": "speech", "weight": None, "role": "generic", "shards": [gen]},
    })
