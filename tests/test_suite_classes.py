"""The quick/heavy split of the suite (tests/suite_classes.py, docs/testing.md): the guard of `make test-quick`
refuses what a quick test must not start, and the classification follows markers, fixtures and folders."""
import subprocess
import sys
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from tests import suite_classes
from tests.suite_classes import HeavyInQuickTest, _heavy_command


def test_commands_are_classified_by_what_they_start():
    assert _heavy_command([sys.executable, "-m", "cli", "run", "m.yaml"]) == "cli"
    assert _heavy_command(["/x/.venv/bin/ssvd", "verify", "d"]) == "cli"
    assert _heavy_command(["/x/.venv/bin/ray", "start", "--head"]) == "cluster"
    assert _heavy_command([sys.executable, "bench/loader_throughput.py"]) == "slow"
    assert _heavy_command(["espeak-ng", "-q", "hello"]) is None
    assert _heavy_command("git status") is None


def test_the_guard_refuses_the_cli_a_server_an_engine_and_ray_and_names_the_marker():
    mp = pytest.MonkeyPatch()
    try:
        suite_classes.install_guard(mp)
        with pytest.raises(HeavyInQuickTest, match=r"pytest\.mark\.cli"):
            subprocess.run([sys.executable, "-m", "cli", "--help"])
        with pytest.raises(HeavyInQuickTest, match=r"pytest\.mark\.server"):
            HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
        from pipeline.dialogue.engines import EngineOptions, VllmEngine

        with pytest.raises(HeavyInQuickTest, match=r"pytest\.mark\.engine"):
            VllmEngine.create(None, EngineOptions())
        import ray

        with pytest.raises(HeavyInQuickTest, match=r"pytest\.mark\.cluster"):
            ray.init()
        assert subprocess.run(["true"]).returncode == 0  # a cheap tool still runs
    finally:
        mp.undo()
    if not suite_classes.QUICK:  # undone (under `make test-quick` the session's own guard stays)
        HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler).server_close()


def test_heavy_by_marker_fixture_and_folder(request):
    item = request.node
    assert not suite_classes.is_heavy(item)  # this very test is quick
    item.add_marker(pytest.mark.cli)
    assert suite_classes.is_heavy(item)
    assert suite_classes.HEAVY_FIXTURES >= {"tiny_engine", "corpus_dir", "corpus_copy", "web_server"}
    assert all((suite_classes.ROOT / d).is_dir() for d in suite_classes.HEAVY_DIRS)
    assert all((suite_classes.ROOT / f).is_file() for f in suite_classes.HEAVY_FILES), "HEAVY_FILES names a lost file"


class _Item:  # what xdist_group reads of a pytest.Item
    def __init__(self, path, fixtures=(), markers=()):
        self.path, self.fixturenames, self._markers = suite_classes.ROOT / path, list(fixtures), set(markers)

    def get_closest_marker(self, name):
        return name if name in self._markers else None


def test_xdist_groups_keep_each_expensive_fixture_and_each_heavy_module_on_one_worker():
    group = suite_classes.xdist_group
    assert group(_Item("tests/trainer/test_data.py", ["corpus_dir", "tmp_path"])) == "corpus"
    assert group(_Item("tests/pipeline/dialogue/test_engines.py", ["tiny_engine", "loop"])) == "tiny-engine"
    assert group(_Item("tests/tts/test_kyutai.py", ["kyutai_backend"])) == "kyutai"
    assert group(_Item("tests/integration/test_cli_dialogues.py", ["tmp_path"])) == "tests/integration/test_cli_dialogues.py"
    assert group(_Item("tests/pipeline/x/test_y.py", ["tmp_path"], ["engine"])) == "tests/pipeline/x/test_y.py"
    assert group(_Item("tests/pipeline/x/test_y.py", ["tmp_path"])) is None  # quick: any worker
