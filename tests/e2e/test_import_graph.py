"""The package's import graph has no cycle, and no module is too long to read at once.

The graph is read from the source with `ast`: every `import` / `from ... import` in a module,
at the top or inside a function (a late import still ties the two modules together), except
under `if TYPE_CHECKING:` (annotations only). `objectives/` and `envs/` install as
`stlm_selfplay.objectives` and `stlm_selfplay.envs` (pyproject's package-dir).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"stlm_selfplay": ROOT / "stlm_selfplay", "stlm_selfplay.objectives": ROOT / "objectives",
            "stlm_selfplay.envs": ROOT / "envs"}
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the installed package."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Import nodes of a module, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the package modules it imports}; `from a import b` names `a.b` when that is a module."""
    def known(name: str | None) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(filter(None, (known(a.name) for a in node.names)))
                continue
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                target = f"{base}.{alias.name}"
                edges.add(target if target in mods else known(base))
        edges.discard(None)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_reads_late_relative_and_plugin_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "stlm_selfplay"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from stlm_selfplay import top\n")
    (pkg / "top.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import stlm_selfplay.sub\n")
    monkeypatch.setitem(PACKAGES, "stlm_selfplay", pkg)
    monkeypatch.setitem(PACKAGES, "stlm_selfplay.objectives", tmp_path / "none")
    monkeypatch.setitem(PACKAGES, "stlm_selfplay.envs", tmp_path / "none")
    graph = import_graph(modules())
    assert graph == {"stlm_selfplay": set(), "stlm_selfplay.sub": {"stlm_selfplay.sub.leaf"},
                     "stlm_selfplay.sub.leaf": {"stlm_selfplay.top"}, "stlm_selfplay.top": set()}


def test_package_has_no_import_cycle():
    mods = modules()
    assert "stlm_selfplay.envs.registry" in mods and "stlm_selfplay.objectives.ce" in mods
    cycle = find_cycle(import_graph(mods))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_longer_than_one_read():
    """Short modules, one concept each: none over MAX_LINES lines."""
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"
