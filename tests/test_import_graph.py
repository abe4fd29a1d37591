"""The import graph of cnnbench and its plugins has layers, and the contracts stand on their own.

Every module under ``cnnbench/`` and ``plugins/cnnbench_plugins/`` is parsed, not imported: each
import anywhere in the file counts, lazy ones inside functions too (they run as surely, only later),
relative ones resolved; only ``if TYPE_CHECKING:`` blocks are left out (they never run). With no
cycle, every module sits on a layer above everything it imports, so no import runs back up one.
The modules a plugin may import (``SURFACE``, docs/plugins.md) pull in no engine module when they
are imported, and take no private name of another module.

``python tests/test_import_graph.py [ROOT]`` prints the figures of any checkout (modules, imports,
layers, cycles, the fewest imports whose removal would leave it layered).
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from test_plugin_surface import ENGINE, SURFACE, _private

PACKAGES = ("cnnbench", "plugins/cnnbench_plugins")  # folders of the packages, relative to the root


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages (a package is its ``__init__.py``)."""
    found = {}
    for folder in PACKAGES:
        base = (root / folder).parent
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class Import:
    """One import of a module of the graph: where it is, and whether it runs only when a function is called."""

    def __init__(self, source: str, target: str, line: int, lazy: bool, names: tuple[str, ...] = (),
                 binds: str | None = None):
        self.source, self.target, self.line, self.lazy = source, target, line, lazy
        self.names = names  # the names taken from the module (``from .store import read``)
        self.binds = binds  # or the local name the module itself is bound to (``from . import store``)

    def __repr__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}{' (in a function)' if self.lazy else ''}"


def imports(name: str, path: Path, known) -> list[Import]:
    """The imports of module ``name`` (file ``path``) that name a module in ``known``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []

    def target(dotted: str) -> str | None:  # the longest prefix that is a module of the graph
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            nodes = node.orelse
        else:
            nodes = list(ast.iter_child_nodes(node))
            lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Import):
            for a in node.names:
                if (t := target(a.name)) and t != name:
                    found.append(Import(name, t, node.lineno, lazy, binds=a.asname if t == a.name else None))
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module
            plain = []
            for a in node.names:
                if f"{base}.{a.name}" in known:  # ``from . import store``: the module store
                    found.append(Import(name, f"{base}.{a.name}", node.lineno, lazy, binds=a.asname or a.name))
                else:
                    plain.append(a.name)
            if plain and (t := target(base)) and t != name:
                found.append(Import(name, t, node.lineno, lazy, tuple(plain)))
        for child in nodes:
            visit(child, lazy)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[Import]]:
    """module -> the modules it imports, and every import behind those edges."""
    mods = modules(root)
    edges = [i for name, path in mods.items() for i in imports(name, path, mods)]
    out: dict[str, set[str]] = {m: set() for m in mods}
    for i in edges:
        out[i.source].add(i.target)
    return out, edges


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components, each sorted; a component of two or more modules holds a cycle."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            comps.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return comps


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The components that hold a cycle."""
    return [c for c in strongly_connected(g) if len(c) > 1]


def one_cycle(g: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path that ends where it starts."""
    start, inside = comp[0], set(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & inside):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{comp} is no cycle")


def layers(g: dict[str, set[str]]) -> dict[str, int]:
    """Each module's layer: 1 for a module that imports none of the graph, else one above the highest
    it imports; the modules of one cycle share a layer (that of the cycle as a whole)."""
    comp_of = {m: i for i, c in enumerate(strongly_connected(g)) for m in c}
    layer: dict[int, int] = {}
    for i, comp in enumerate(strongly_connected(g)):  # Tarjan's order: a component after all it imports
        below = [layer[comp_of[w]] for v in comp for w in g[v] if comp_of[w] != i]
        layer[i] = 1 + max(below, default=0)
    return {m: layer[comp_of[m]] for m in g}


def back_up(g: dict[str, set[str]]) -> int:
    """The fewest imports that must go for the graph to have layers (a minimum feedback arc set, found
    by trying every choice inside each cycle: they are small), i.e. the imports that run back up."""
    total = 0
    for comp in cycles(g):
        inside = [(v, w) for v in comp for w in sorted(g[v]) if w in comp]
        for k in range(1, len(inside) + 1):
            if any(not cycles({v: {w for (a, w) in inside if a == v and (a, w) not in cut} for v in comp})
                   for cut in map(set, itertools.combinations(inside, k))):
                total += k
                break
    return total


def summary(root: Path = ROOT) -> str:
    g, edges = graph(root)
    found = cycles(g)
    lines = [f"{len(g)} modules, {sum(map(len, g.values()))} imports between them, "
             f"{max(layers(g).values())} layers, {len(found)} cycles, {back_up(g)} imports back up a layer"]
    lines += [f"  cycle among {', '.join(c)}: " + " -> ".join(one_cycle(g, c)) for c in found]
    return "\n".join(lines)


def _closure(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in g[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def _chain(g: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """The import chain from ``start`` to ``goal`` (both in ``g``; ``goal`` reachable)."""
    paths, todo = {start: [start]}, [start]
    while goal not in paths:
        v = todo.pop(0)
        for w in sorted(g[v] - paths.keys()):
            paths[w] = paths[v] + [w]
            todo.append(w)
    return paths[goal]


def test_the_import_graph_has_no_cycle():
    g, edges = graph()
    assert len(g) > 60 and "cnnbench.head" in g and "cnnbench_plugins.heads.svm" in g
    found = cycles(g)
    where = {(i.source, i.target): i for i in edges}
    message = []
    for comp in found:
        path = one_cycle(g, comp)
        message.append(f"among {', '.join(comp)}: " + " -> ".join(path) + "  (" +
                       "; ".join(repr(where[e]) for e in zip(path, path[1:])) + ")")
    assert not found, f"{len(found)} import cycles (a module imports, maybe lazily, one that imports it back):\n" + \
        "\n".join(message)


def test_importing_a_plugin_contract_loads_no_engine_module():
    g, edges = graph()
    at_import = {v: set() for v in g}
    for i in edges:
        if not i.lazy:
            at_import[i.source].add(i.target)
    problems = []
    for module in sorted(SURFACE):
        for engine in sorted(_closure(at_import, module) & ENGINE):
            problems.append(" -> ".join(_chain(at_import, module, engine)))
    assert not problems, "importing a module of docs/plugins.md's surface loads the engine:\n" + "\n".join(problems)


def test_a_fresh_interpreter_that_imports_every_contract_holds_no_engine_module():
    """The same, as Python sees it: what a plugin's imports actually load (an import the parse cannot
    see, through importlib, would show here)."""
    code = ("import importlib, sys\n"
            f"for m in {sorted(SURFACE)!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'cnnbench')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(run.stdout.split())
    assert SURFACE <= loaded
    assert not loaded & ENGINE, f"importing the plugin contracts loads the engine modules {sorted(loaded & ENGINE)}"


def test_the_plugin_contracts_take_no_private_name_of_another_module():
    _, edges = graph()
    problems = []
    for module, path in modules().items():
        if module not in SURFACE:
            continue
        bound = {i.binds: i.target for i in edges if i.source == module and i.binds}
        problems += [f"{i!r}: {n}" for i in edges if i.source == module for n in i.names if _private(n)]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                    and _private(node.attr):
                problems.append(f"{module}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    assert not problems, "a plugin contract leans on another module's private names:\n" + "\n".join(problems)


def test_the_core_never_imports_a_plugin():
    _, edges = graph()
    bad = [i for i in edges if i.source.startswith("cnnbench.") and i.target.startswith("cnnbench_plugins")]
    assert not bad, f"the core imports concrete plugins: {bad}"


def test_the_graph_reads_lazy_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "cnnbench"
    pkg.mkdir()
    (tmp_path / "plugins" / "cnnbench_plugins").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
                              "def f():\n    from . import b\n")
    (pkg / "b.py").write_text("import cnnbench.c\n")
    (pkg / "c.py").write_text("from cnnbench import a\n")
    g, edges = graph(tmp_path)
    assert g == {"cnnbench": {"cnnbench.a"}, "cnnbench.a": {"cnnbench.b"}, "cnnbench.b": {"cnnbench.c"},
                 "cnnbench.c": {"cnnbench.a"}}
    assert cycles(g) == [["cnnbench.a", "cnnbench.b", "cnnbench.c"]]
    assert one_cycle(g, cycles(g)[0]) == ["cnnbench.a", "cnnbench.b", "cnnbench.c", "cnnbench.a"]
    assert [i.lazy for i in edges if i.source == "cnnbench.a"] == [True]
    assert back_up(g) == 1 and layers(g)["cnnbench"] == 2


def test_the_figures_for_the_closing_note():
    text = summary()
    print("\nimport graph:", text)
    assert text.splitlines()[0].endswith(", 0 cycles, 0 imports back up a layer"), text


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
