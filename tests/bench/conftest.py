"""The real tiny corpus (built once per session by tests/pipeline/corpus/conftest.py) for the loader benchmark."""
from tests.pipeline.corpus.conftest import corpus_build, corpus_dir  # noqa: F401
