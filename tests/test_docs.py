"""The docs tell the truth about the code they name: every option of every `ssvd` command is documented in a doc
that names the command, and every module path or dotted module a doc or manifest names exists. Fast: reads the
Typer app's command tree and the files, no subprocess."""
from __future__ import annotations

import re
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMED = DOCS + sorted((ROOT / "manifests").glob("*.yaml"))
PACKAGES = ("pipeline", "tts", "trainer", "augment", "prompts")


def commands(group, path: tuple[str, ...] = ()):
    """(command path, command) of every leaf command under a click group (Typer's own vendored click)."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def mentions(text: str, word: str) -> bool:
    """`word` in `text` as itself: `--seed` is not found in `--seeds` nor in `--seed-file`."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def undocumented(app: typer.Typer, docs: dict[str, str]) -> list[str]:
    """'ssvd CMD --option' for every option found in no doc that names `ssvd CMD`."""
    missing = []
    for path, cmd in commands(typer.main.get_command(app)):
        name = "ssvd " + " ".join(path)
        naming = [t for t in docs.values() if mentions(t, name)]
        if not naming:
            missing.append(f"{name} (no doc names the command)")
            continue
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            opt = next((o for o in p.opts if o.startswith("--")), p.opts[0])
            if not any(mentions(t, opt) for t in naming):
                missing.append(f"{name} {opt}")
    return missing


def _docs() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in DOCS}


def test_every_option_of_every_command_is_documented():
    from cli import app

    assert undocumented(app, _docs()) == [], "document these in README.md or docs/*.md (a doc naming the command)"


def test_an_undocumented_option_is_found():
    """The check itself: a synthetic command with a documented and an undocumented option, and one named nowhere."""
    app = typer.Typer()

    @app.command()
    def paint(colour: str = typer.Option("red", "--colour"), size: int = typer.Option(1, "--size")) -> None:
        """Paint."""

    @app.command()
    def wash(hot: bool = typer.Option(False, "--hot")) -> None:
        """Wash."""

    docs = {"a.md": "`ssvd paint --colour blue` paints; `ssvd wash --hot` washes; --sizes is another word."}
    assert undocumented(app, docs) == ["ssvd paint --size"]
    assert undocumented(app, {"a.md": "`ssvd paint --colour --size`"}) == ["ssvd wash (no doc names the command)"]


# --- module paths and dotted modules -------------------------------------------------------------

PATH_RE = re.compile(rf"(?<![\w/.-])(?:{'|'.join(PACKAGES)})/[\w*./-]*")
DOTTED_RE = re.compile(r"(?<![\w/.-])pipeline(?:\.[A-Za-z_]\w*)+")


def missing_paths(text: str) -> list[str]:
    """Paths under the packages (globs allowed: they must match a file) that do not exist."""
    bad = []
    for m in PATH_RE.finditer(text):
        p = m.group(0).rstrip(".,")
        if "*" in p:
            if not list(ROOT.glob(p)):
                bad.append(p)
        elif not (ROOT / p).exists():
            bad.append(p)
    return bad


def _defines(module: Path, name: str) -> bool:
    src = module.read_text()
    return re.search(rf"^\s*(?:def|class|async def)\s+{name}\b|^{name}\s*[:=]", src, re.M) is not None


def missing_modules(text: str) -> list[str]:
    """Dotted `pipeline.x.y[.attr]` names whose module does not exist (or does not define the attribute)."""
    bad = []
    for m in DOTTED_RE.finditer(text):
        parts = m.group(0).split(".")
        k, module = len(parts), None
        while k > 1:  # the longest prefix that is a module or package
            base = ROOT.joinpath(*parts[:k])
            if base.with_suffix(".py").is_file():
                module = base.with_suffix(".py")
                break
            if (base / "__init__.py").is_file():
                module = base / "__init__.py"
                break
            k -= 1
        rest = parts[k:]
        if module is None or len(rest) > 1 or (rest and not _defines(module, rest[0])):
            bad.append(m.group(0))
    return bad


def test_every_module_a_doc_names_exists():
    bad = {str(p.relative_to(ROOT)): missing_paths(p.read_text()) + missing_modules(p.read_text()) for p in NAMED}
    assert {k: v for k, v in bad.items() if v} == {}


def test_a_module_that_does_not_exist_is_found():
    text = ("see pipeline/tokens.py, pipeline/speech_*.py, pipeline/core/runner.py, pipeline/*/cli.py, "
            "`pipeline.core.runner.run_stage`, pipeline.core.nothing, pipeline.tokens.interleave.nope and prompts/.")
    assert missing_paths(text) == ["pipeline/tokens.py", "pipeline/speech_*.py"]
    assert missing_modules(text) == ["pipeline.core.nothing", "pipeline.tokens.interleave.nope"]
