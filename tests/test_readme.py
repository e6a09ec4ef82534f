"""The README is a tested contract: every command of its quick start and offline examples runs, in order.

The ```bash blocks under the sections named in SECTIONS are read from README.md (a backslash joins lines,
`#` starts a comment) and every command runs as written from a scratch directory that sees the
repository's `manifests/` and `tests/` (so `tests/fixtures/...` and `manifests/...` resolve as from the
repository root), with `ssvd` being this checkout's CLI. The one change is size (`shrink`), to keep the run
short: `--limit N` and `--count N` become at most LIMIT, `ssvd run` without `--limit` gets `--limit RUN_LIMIT`,
and `ssvd dialogues` / `ssvd generic` without `--max-pairs` get `--min-pairs 1 --max-pairs MAX_PAIRS` (the
default 8-16 pairs of 150 tokens make minutes of speech to synthesise and encode on the CPU, and the
commands after them in the README work on that output). A command fails the test if it exits non-zero or,
when it makes rows (dialogues, generic, speech, tokens, run), if it yields no `ok` row.

Commands left out are listed in EXCLUDED, each with why; a command that is neither excluded nor an
`ssvd` command fails the test, and so does an exclusion that no longer matches any command.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The README's quick start (the text above the first `##` heading) and its offline examples.
SECTIONS = ("", "A whole corpus from one manifest", "Training the adapters", "Generating dialogues",
            "Speech and tokens")

# (substring of the command, why it is not run here)
EXCLUDED: tuple[tuple[str, str], ...] = (
    ("make test", "the test suite itself (this test is part of it)"),
    ("make demo", "`make install` (a fresh .venv, pip) and then the ssvd commands of the sections below "
                  "(quickstart run, status, verify, show, preview, report, train), which run here"),
    ("make bench-loader", "a timing benchmark, not an example; tests/bench covers the bench scripts"),
    ("manifests/moshivis.yaml", "Table 7 on GPUs: Mistral-Nemo, Kyutai TTS and Mimi from the hub"),
    ("torchrun", "DDP training of the production models on GPUs"),
    ("--input data/docci/", "DOCCI's release files (not shipped: 9,647 images) on the production model (GPU)"),
    ("ssvd export-adapters runs/moshivis", "exports a production run (`torchrun` above) with the hub's Moshi backbone"),
)
LIMIT = 2  # at most this many captions / dialogues / rows per command (`shrink`)
MAX_PAIRS = 2  # question/answer pairs per dialogue of `ssvd dialogues` / `ssvd generic` (`shrink`)
RUN_LIMIT = 1  # rows per split of an `ssvd run` (the trainer holds none out of a one-row split)
MAKES_ROWS = ("dialogues", "generic", "speech", "tokens", "run")


def readme_blocks(text: str) -> dict[str, list[str]]:
    """{section heading ("" before the first `##`): the commands of its ```bash blocks, in order}."""
    out: dict[str, list[str]] = {}
    section, block = "", None
    for line in text.splitlines():
        if block is None:
            m = re.match(r"^##\s+(.*\S)\s*$", line)
            if m:
                section = m.group(1)
            elif re.match(r"^```(bash|sh|shell)\s*$", line.strip()):
                block = []
            continue
        if line.strip().startswith("```"):
            out.setdefault(section, []).extend(_commands(block))
            block = None
        else:
            block.append(line)
    return out


def _commands(lines: list[str]) -> list[str]:
    cmds, cur = [], ""
    for line in lines:
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        cmd = shlex.join(shlex.split(cur, comments=True))
        if cmd:
            cmds.append(cmd)
        cur = ""
    return cmds


def excluded(cmd: str) -> str | None:
    return next((why for s, why in EXCLUDED if s in cmd), None)


def shrink(args: list[str]) -> list[str]:
    """The one change made to a README command, its size: --limit / --count at most LIMIT; `ssvd run` gets
    RUN_LIMIT; `ssvd dialogues` / `ssvd generic` get at most MAX_PAIRS pairs."""
    out = list(args)
    if out[1:2] == ["run"] and "--limit" not in out:
        out += ["--limit", str(RUN_LIMIT)]
    if out[1:2] in (["dialogues"], ["generic"]) and "--max-pairs" not in out and "--min-pairs" not in out:
        out += ["--min-pairs", "1", "--max-pairs", str(MAX_PAIRS)]
    for i, a in enumerate(out[:-1]):
        if a in ("--limit", "--count") and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), LIMIT))
    return out


def contract() -> list[str]:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    missing = [s or "(quick start)" for s in SECTIONS if not blocks.get(s)]
    assert not missing, f"README.md: no ```bash block under {missing}; update SECTIONS in {__file__}"
    return [c for s in SECTIONS for c in blocks[s]]


def test_every_readme_command_is_run_or_excluded_with_a_reason():
    cmds = contract()
    for c in cmds:
        assert excluded(c) or c.startswith("ssvd "), f"README command neither ssvd nor excluded: {c!r}"
    unused = [s for s, _ in EXCLUDED if not any(s in c for c in cmds)]
    assert not unused, f"EXCLUDED entries that match no README command (remove them): {unused}"
    run = [c for c in cmds if not excluded(c)]
    assert any(c.startswith("ssvd dialogues ") for c in run) and any(c.startswith("ssvd run ") for c in run)


def test_shrink_only_lowers_limits():
    assert shrink(["ssvd", "x", "--limit", "8", "--count", "100", "--seed", "9"]) == \
        ["ssvd", "x", "--limit", str(min(8, LIMIT)), "--count", str(min(100, LIMIT)), "--seed", "9"]
    assert shrink(["ssvd", "x", "--limit", "1"]) == ["ssvd", "x", "--limit", "1"]
    assert shrink(["ssvd", "run", "m.yaml"]) == ["ssvd", "run", "m.yaml", "--limit", str(RUN_LIMIT)]
    assert shrink(["ssvd", "run", "m.yaml", "--limit", "9"]) == ["ssvd", "run", "m.yaml", "--limit", str(LIMIT)]
    assert shrink(["ssvd", "generic", "--count", "100"]) == \
        ["ssvd", "generic", "--count", str(LIMIT), "--min-pairs", "1", "--max-pairs", str(MAX_PAIRS)]
    assert shrink(["ssvd", "dialogues", "--max-pairs", "9"]) == ["ssvd", "dialogues", "--max-pairs", "9"]


def _ok_rows(args: list[str], p: subprocess.CompletedProcess) -> int:
    if args[1] == "run":  # per step on stderr: "<split> <stage> done ok=N rejected=N failed=N"
        return sum(int(n) for n in re.findall(r"\bok=(\d+)", p.stderr))
    return int(json.loads(p.stdout.strip().splitlines()[-1])["status"].get("ok", 0))


@pytest.mark.engine
def test_readme_commands_run_in_order(tmp_path):
    for name in ("manifests", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("RAY_ADDRESS", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    for cmd in contract():
        if excluded(cmd):
            continue
        args = shrink(shlex.split(cmd))
        p = subprocess.run([sys.executable, "-m", "cli", *args[1:]], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=1800)
        assert p.returncode == 0, f"README command failed ({p.returncode}): {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
        if args[1] in MAKES_ROWS:
            assert _ok_rows(args, p) > 0, f"README command yields no ok row: {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
