"""The import structure, read from the code: one package per part of the work, arrows pointing down.

- nothing but `__init__.py` directly under `pipeline/`;
- no circle between modules (two modules of one package importing each other included);
- no circle between packages (`pipeline.core`, `pipeline.sources`, ..., `tts`, `trainer`, `augment`, `prompts`);
- every package imports only the packages `ALLOWED` gives it, which is the map of docs/DESIGN.md:
  `pipeline.core` imports no other package of the project.
Imports inside functions count as much as those at the top.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("pipeline", "tts", "trainer", "augment", "prompts")

# package -> the packages it may import (docs/DESIGN.md, "The map").
ALLOWED = {
    "pipeline.core": set(),
    "prompts": set(),
    "tts": {"pipeline.core"},
    "augment": {"pipeline.core"},
    "pipeline.sources": {"pipeline.core"},
    "pipeline.manifest": {"pipeline.core", "pipeline.sources", "tts"},
    "pipeline.dialogue": {"pipeline.core", "pipeline.sources", "prompts"},
    "pipeline.speech": {"pipeline.core", "tts"},
    "pipeline.tokens": {"pipeline.core", "tts"},
    "pipeline.images": {"pipeline.core"},
    "pipeline.views": {"pipeline.core", "pipeline.tokens", "tts"},
    "pipeline.corpus": {"pipeline.core", "pipeline.sources", "pipeline.manifest", "pipeline.dialogue",
                        "pipeline.speech", "pipeline.tokens", "pipeline.images", "tts"},
    "trainer": {"pipeline.core", "pipeline.images", "augment"},
}


def modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for p in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 2 else parts[0]


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name imported from a package counts as its module when
    there is one: `from pipeline.core import faults` is an import of pipeline.core.faults)."""
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        here = m if is_pkg else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not (is_pkg and t.startswith(m + ".")):
                    graph.setdefault(m, set()).add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(out)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    pg: dict[str, set[str]] = {}
    for a, bs in graph.items():
        for b in bs:
            pa, pb = package_of(a), package_of(b)
            if pa != pb and pb != "pipeline":
                pg.setdefault(pa, set()).add(pb)
    return pg


def test_nothing_but_init_directly_under_pipeline():
    flat = sorted(p.name for p in (ROOT / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert flat == [], f"modules directly under pipeline/: {flat}; each belongs in one of its packages"


def test_no_circle_between_modules():
    found = circles(imports(modules()))
    assert found == [], "import circles between modules: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_circle_between_packages():
    found = circles(package_graph(imports(modules())))
    assert found == [], "import circles between packages: " + "; ".join(" <-> ".join(c) for c in found)


def test_each_package_imports_only_what_the_map_allows():
    pg = package_graph(imports(modules()))
    assert set(pg) <= set(ALLOWED), f"packages missing from the map: {sorted(set(pg) - set(ALLOWED))}"
    extra = {p: sorted(deps - ALLOWED[p]) for p, deps in pg.items() if deps - ALLOWED[p]}
    assert extra == {}, f"imports the map does not allow (a lower layer importing a higher one?): {extra}"
    assert ALLOWED["pipeline.core"] == set() and not pg.get("pipeline.core")


def test_every_package_of_the_map_exists_and_the_design_doc_lists_them():
    mods = modules()
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    for pkg in ALLOWED:
        assert pkg in mods, f"{pkg} is in the map but not in the code"
        assert re.search(rf"`{re.escape(pkg.replace('.', '/'))}/`", design), f"docs/DESIGN.md's map lacks {pkg}"


def test_the_checks_see_a_circle_and_an_upward_import():
    graph = {"pipeline.core.a": {"pipeline.dialogue.b"}, "pipeline.dialogue.b": {"pipeline.core.a"}}
    assert circles(graph) == [["pipeline.core.a", "pipeline.dialogue.b"]]
    assert package_graph(graph) == {"pipeline.core": {"pipeline.dialogue"}, "pipeline.dialogue": {"pipeline.core"}}
