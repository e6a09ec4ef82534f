"""A small real corpus, built once per test session with `ssvd run` on tests/fixtures/manifests/tiny.yaml
(builtin:smollm2 dialogues, piper + eSpeak speech, random-weight Mimi): a speech caption split, a text
caption split, a benchmark split and the generic set. Built in two runs (first `--only tallyqa`, then
everything), so the fixture itself exercises resuming a corpus across splits. The images step fetches
the PixelProse URLs from tests/fixtures/web served on 127.0.0.1 (--image-mirror, --allow-address) and
reads DOCCI's release files.

Registered once, in tests/conftest.py: a fixture imported into several conftest files would be built once per file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "manifests" / "tiny.yaml"


def ssvd(*args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (its own Ray cluster and engine), from the repository root."""
    p = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"ssvd {' '.join(map(str, args))} exited {p.returncode}:\n{p.stderr[-4000:]}")
    return p


WEB = ROOT / "tests" / "fixtures" / "web"


def image_args(base: str) -> list[str]:
    """`ssvd run` options that fetch the fixture captions' images from the tests' server on 127.0.0.1."""
    return ["--allow-address", "127.0.0.1",
            "--image-mirror", f"https://images.example.org/={base}/images.example.org/",
            "--image-mirror", f"https://cdn.example.net/={base}/cdn.example.net/"]


@pytest.fixture(scope="session")
def web_server():
    """tests/fixtures/web (the images the fixture captions' URLs name) served on 127.0.0.1."""
    from pipeline.images.fixture_server import FixtureServer

    srv = FixtureServer(root=WEB).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def corpus_build(tmp_path_factory, web_server):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    first = ssvd("run", TINY, "--out", out, "--only", "tallyqa", "--no-progress")
    second = ssvd("run", TINY, "--out", out, "--no-progress", *image_args(web_server.base))
    return out, first, second


@pytest.fixture(scope="session")
def corpus_dir(corpus_build) -> Path:
    """The corpus directory (do not modify it: copy it with `corpus_copy`)."""
    return corpus_build[0]


@pytest.fixture
def corpus_copy(corpus_dir, tmp_path) -> Path:
    """A private copy of the corpus, free to damage."""
    dst = tmp_path / "copy"
    shutil.copytree(corpus_dir, dst)
    return dst
