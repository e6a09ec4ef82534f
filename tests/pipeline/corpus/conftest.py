"""The real tiny corpus fixtures (`corpus_dir`, `corpus_copy`, `web_server`) live in tests/real_corpus.py and
are registered once for the whole session by tests/conftest.py; these names stay importable from here."""
from tests.real_corpus import ROOT, TINY, WEB, image_args, ssvd  # noqa: F401
