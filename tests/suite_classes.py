"""Which tests `make test-quick` runs, and the guard that keeps that true (docs/testing.md, "Quick loop").

A test is *heavy* (left out of `make test-quick`, always in `make test`) when it
- carries one of the HEAVY_MARKERS (`engine`, `cluster`, `server`, `cli`, `slow`, `gpu`), on itself, its
  class or its module (`pytestmark`), or
- lives in one of the HEAVY_DIRS (the CLI integration tests, the benchmarks, the GPU tests), or
- uses, directly or through other fixtures, one of the HEAVY_FIXTURES (a vLLM engine, the real corpus
  built with `ssvd run`, a local HTTP server, the Kyutai tiny TTS).
Every other test is quick. With SSVD_TEST_QUICK=1 the guard below is installed for the session: a quick test
that starts a vLLM engine, a Ray cluster, a local server, an `ssvd` CLI subprocess or any other Python
subprocess (seconds of imports each) fails at once with a
message naming the marker to add, so a new test cannot silently make the quick loop slow.
"""
from __future__ import annotations

import os
import socketserver
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY_MARKERS = ("engine", "cluster", "server", "cli", "slow", "gpu")
# Session fixtures that start something expensive (tests/conftest.py, tests/real_corpus.py, the images
# conftest). A fixture that depends on one of these is heavy too (pytest's fixture closure).
HEAVY_FIXTURES = frozenset({
    "tiny_engine",  # a vLLM engine
    "tiny_mistral",  # builds tiny-mistral into ~/.cache/ssvd on a machine without it
    "corpus_build", "corpus_dir", "corpus_copy",  # `ssvd run` twice: Ray, vLLM, TTS, Mimi
    "web_server", "image_server",  # a local HTTP server
    "kyutai_tiny", "kyutai_backend",  # the Kyutai DSM TTS built and loaded
})

# Folders (relative to the repository root) whose every test is heavy: the CLI end to end, benchmarks, GPU.
HEAVY_DIRS = ("tests/integration/", "tests/bench/", "tests/gpu/")

# Test files that are heavy as a whole without a marker of their own ({path: why}); prefer a marker in new code.
HEAVY_FILES = {
    "tests/pipeline/core/test_procguard.py": "Python subprocesses and a Ray actor, killed with their process trees",
    "tests/pipeline/corpus/test_run.py": "`ssvd run` subprocesses and the real corpus",
    "tests/pipeline/corpus/test_run_lock.py": "three `ssvd run` subprocesses at once",
    "tests/pipeline/dialogue/test_models.py": "builds tiny-mistral and converts SmolLM2 (minutes on 2 cores)",
    "tests/trainer/test_ddp.py": "two-process DDP training (torch.distributed, Python subprocesses)",
    "tests/trainer/test_export_kyuteye.py": "trains a run and exports it through the CLI in a subprocess",
    "tests/trainer/test_export_moshi_names.py": "runs the exported backbone in Kyutai's moshi in a subprocess",
    "tests/tts/test_codec.py": "Mimi encodes and decodes (tens of seconds on 2 busy cores)",
    "tests/pipeline/tokens/test_speech_tokens_chain.py": "the speech and tokens jobs in-process: piper + Mimi encode",
}

QUICK = os.environ.get("SSVD_TEST_QUICK") == "1"
FULL = os.environ.get("SSVD_TEST_FULL") == "1"  # `make test-full`: the full size of the tests with a CI size


def is_heavy(item: pytest.Item) -> bool:
    path = Path(str(item.path)).resolve()
    if any(str(path).startswith(str(ROOT / d)) for d in HEAVY_DIRS) or \
            any(path == ROOT / f for f in HEAVY_FILES):
        return True
    if any(item.get_closest_marker(m) for m in HEAVY_MARKERS):
        return True
    return bool(HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def select_quick(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the heavy tests (SSVD_TEST_QUICK=1, `make test-quick`)."""
    keep, drop = [], []
    for item in items:
        (drop if is_heavy(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class HeavyInQuickTest(AssertionError):
    pass


def _refuse(what: str, marker: str):
    raise HeavyInQuickTest(
        f"this test {what}, but it is not marked heavy, so `make test-quick` (SSVD_TEST_QUICK=1) ran it: "
        f"mark it @pytest.mark.{marker} (or the module: pytestmark = pytest.mark.{marker}); see docs/testing.md")


def _heavy_command(argv) -> str | None:
    """The marker a subprocess with this command line calls for, or None (a cheap tool: espeak-ng, git ...)."""
    if isinstance(argv, (str, bytes)):
        argv = str(argv).split()
    args = [os.path.basename(str(a)) for a in argv]
    if args[:1] == ["ssvd"] or any(a == "-m" and b == "cli" for a, b in zip(args, args[1:])):
        return "cli"
    if args[:1] == ["ray"]:
        return "cluster"
    if args and (str(argv[0]) == sys.executable or args[0].startswith("python")):
        return "slow"
    return None


def install_guard(monkeypatch_like) -> None:
    """Make the expensive starts fail in quick mode (`monkeypatch_like`: a pytest.MonkeyPatch)."""
    real_popen_init = subprocess.Popen.__init__

    def popen_init(self, args, *a, **kw):
        marker = _heavy_command(args)
        if marker:
            _refuse(f"runs a subprocess ({' '.join(map(str, args if isinstance(args, (list, tuple)) else [args]))[:120]})",
                    marker)
        return real_popen_init(self, args, *a, **kw)

    def server_bind(self, *a, **kw):
        _refuse(f"starts a local server ({type(self).__name__})", "server")

    monkeypatch_like.setattr(subprocess.Popen, "__init__", popen_init)
    monkeypatch_like.setattr(socketserver.TCPServer, "server_bind", server_bind)

    from pipeline.dialogue.engines import VllmEngine

    def vllm_create(cls, *a, **kw):
        _refuse("starts a vLLM engine", "engine")

    monkeypatch_like.setattr(VllmEngine, "create", classmethod(vllm_create))
    try:
        import ray
    except ImportError:  # pragma: no cover
        return

    def ray_init(*a, **kw):
        _refuse("starts or joins a Ray cluster", "cluster")

    monkeypatch_like.setattr(ray, "init", ray_init)


# pytest -n 2 --dist loadgroup (docs/testing.md, "Parallel runs"): the tests sharing an expensive session fixture
# form one group, so that fixture is built on one worker only; every other heavy test is grouped with its module,
# so a module fixture (e.g. the three CLI runs of test_cli_dialogue_options) runs once. Quick tests go anywhere.
GROUPS = (  # (fixture names, group), first match wins
    ({"corpus_build", "corpus_dir", "corpus_copy"}, "corpus"),
    ({"tiny_engine"}, "tiny-engine"),
    ({"kyutai_tiny", "kyutai_backend"}, "kyutai"),
)


def xdist_group(item: pytest.Item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    for fixtures, group in GROUPS:
        if fixtures & names:
            return group
    if is_heavy(item):
        return Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
    return None


def add_xdist_groups(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = xdist_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
