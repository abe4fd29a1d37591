"""DVC deps that cannot drift: each stage of dvc.yaml and paper/dvc.yaml depends on exactly the code it runs.

The code a stage runs is computed from the source, never listed here: its command line names a
``cnnbench`` command; the console script (pyproject.toml) and that command's function in cli.py are
followed through the cli helpers and ``Ctx`` methods they reach, skipping the branches the stage's own
flags switch off (``--no-extract-missing``: no extraction); every first-party module imported on the
way is followed through its imports, wherever they stand in it (lazy ones in functions too, not
``if TYPE_CHECKING:`` blocks), with the ``__init__.py`` of each package on the way. cli.py itself and
what it imports at module level run for every command, so every stage depends on them. The plugins a
stage builds (:data:`BUILDS`: the names its command line gives, or params.yaml's lists) add their
modules, as the registry resolves each name, and those modules' own imports. Entry-point loading
imports every plugin, but only the plugins a stage builds compute its outputs: the others are not its
deps. A folder dep covers every file under it. Only the ast is read: nothing under test is imported
to find its imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import itertools
import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from cnnbench import cli, plugins
from conftest import ROOT
from test_pipeline import _dvc, _stale, _touch

PIPELINES = (ROOT / "dvc.yaml", ROOT / "paper" / "dvc.yaml")
SOURCES = (ROOT, ROOT / "plugins")  # where first-party modules live (pyproject: packages.find where)
BUILDS = {"extract": ("backbone", "dataset"), "evaluate": ("dataset", "head"), "compare": ()}
"""The plugins each command builds; each kind is named by the command's ``--<kind>`` option."""


# -- modules and their imports, from the ast ------------------------------------------------------------


def _module_file(name: str, sources=SOURCES) -> Path | None:
    parts = name.split(".")
    for base in sources:
        path = base.joinpath(*parts)
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


def _module_name(path: Path, sources=SOURCES) -> str:
    """The dotted name of a first-party file (the most specific source root wins: plugins/ over the root)."""
    base = max((b for b in sources if b in path.parents), key=lambda b: len(b.parts))
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dead(test: ast.expr, known: dict) -> bool:
    """Whether the test of an ``if`` is false for sure: ``TYPE_CHECKING``, or a parameter of the
    command function whose value ``known`` gives (``if missing and extract_missing:``)."""
    if getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
        return True
    if isinstance(test, ast.Name):
        return test.id in known and not known[test.id]
    if isinstance(test, ast.BoolOp):
        parts = [_dead(v, known) for v in test.values]
        return any(parts) if isinstance(test.op, ast.And) else all(parts)
    return False


def _live(nodes, known: dict | None = None, *, into_defs: bool = True):
    """The nodes in and below ``nodes`` that run: not the body of an ``if`` whose test is
    :func:`_dead`; with ``into_defs=False`` not a function's body either (what runs at import)."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.IfExp)) and _dead(node.test, known or {}):
            todo.extend([node.test, *(node.orelse if isinstance(node.orelse, list) else [node.orelse])])
        elif not into_defs and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend([*node.decorator_list, *node.args.defaults, *filter(None, node.args.kw_defaults)])
        else:
            todo.extend(ast.iter_child_nodes(node))


def _imported(nodes, module: str, package: bool) -> set[str]:
    """Dotted names the imports among ``nodes`` may load (``from a import b``: maybe module ``a.b``),
    relative ones resolved against ``module`` (a ``package``'s ``__init__.py`` or not)."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: None if package else -1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def _loaded(names, sources=SOURCES) -> set[Path]:
    """First-party files importing ``names`` runs: each module and the ``__init__.py`` of its packages."""
    files = set()
    for name in names:
        parts = name.split(".")
        files |= {f for i in range(1, len(parts) + 1) if (f := _module_file(".".join(parts[:i]), sources))}
    return files


@cache
def _imports_of(path: Path, sources=SOURCES) -> frozenset[Path]:
    """The first-party files ``path``'s imports load, wherever they stand in it."""
    tree = ast.parse(path.read_text(), str(path))
    names = _imported(_live(tree.body), _module_name(path, sources), path.name == "__init__.py")
    return frozenset(_loaded(names, sources))


def _closure(files, sources=SOURCES, followed=()) -> frozenset[Path]:
    """``files`` and every first-party file their imports reach, transitively (the imports of the
    ``followed`` files are known already: they are counted, not read)."""
    seen, todo = set(followed), list(files)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imports_of(path, sources))
    return frozenset(seen)


# -- what one command line runs in cli.py ---------------------------------------------------------------


def _cli_run(function: str, flags: dict) -> set[str]:
    """Dotted names cli.py imports when the command whose function is named ``function`` runs with
    ``flags`` (its parsed parameters): at module level, in the console script's function, in
    ``function`` and in every cli function, class and ``Ctx`` method they reach by name (recursively)."""
    path = Path(cli.__file__)
    tree = ast.parse(path.read_text(), str(path))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    methods: dict[str, list] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for m in cls.body:
            if isinstance(m, ast.FunctionDef):
                methods.setdefault(m.name, []).append(m)
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["cnnbench"]
    assert script.startswith(f"{cli.__name__}:"), script
    entry, function = defs[script.split(":")[1]], defs[function]
    todo = [(tree.body, {}, False), ([entry], {}, True), ([function], flags, True)]
    reached, names = {id(entry), id(function)}, set()
    while todo:
        nodes, known, into_defs = todo.pop()
        if into_defs and isinstance(nodes[0], ast.ClassDef):  # built: its dunders run; a click subclass: the rest
            todo.extend(([m], {}, True) for m in nodes[0].body if isinstance(m, ast.FunctionDef)
                        and (nodes[0].bases or m.name.startswith("__")))
            continue
        live = list(_live(nodes, known, into_defs=into_defs))
        names |= _imported(live, cli.__name__, False)
        for n in live:
            if isinstance(n, ast.Name) and n.id in defs:
                found = [defs[n.id]]
            elif isinstance(n, ast.Attribute) and n.attr in methods:  # ctx.recipe(), self._report(), ctx.params
                found = methods[n.attr]
            else:
                continue
            todo.extend(([f], {}, True) for f in found if id(f) not in reached)
            reached |= {id(f) for f in found}
    return names


# -- the pipelines --------------------------------------------------------------------------------------


def _interpolate(text: str, scope: dict) -> str:
    def value(m):
        v = scope
        for key in m.group(1).split("."):
            v = v[key]
        return str(v)

    return re.sub(r"\$\{([\w.-]+)\}", value, text)


class Stage(NamedTuple):
    name: str
    cmd: str
    deps: list[Path]
    outs: list[Path]  # outs and metrics


def _stages(pipeline: Path) -> list[Stage]:
    """Every stage, each matrix expanded and named as DVC does (``evaluate@lite0-digits-svm``; a
    mapping item: ``cell3``), its paths resolved (deps in the order listed)."""
    params = yaml.safe_load((pipeline.parent / "params.yaml").read_text())
    out = []
    for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
        matrix = {k: params[v[2:-1]] if isinstance(v, str) else v for k, v in stage.get("matrix", {}).items()}
        for combo in itertools.product(*(enumerate(v) for v in matrix.values())):
            scope = {**params, "item": {k: v for k, (_, v) in zip(matrix, combo)}}
            key = "-".join(f"{k}{i}" if isinstance(v, (dict, list)) else str(v) for k, (i, v) in zip(matrix, combo))
            paths = {field: [(pipeline.parent / _interpolate(d if isinstance(d, str) else next(iter(d)), scope))
                             .resolve() for d in stage.get(field, [])]  # an entry with options: {path: {cache: ...}}
                     for field in ("deps", "outs", "metrics")}
            out.append(Stage(f"{name}@{key}" if matrix else name, _interpolate(" ".join(stage["cmd"].split()), scope),
                             paths["deps"], paths["outs"] + paths["metrics"]))
    return out


def _plugin_files(reg: plugins.Registration) -> frozenset[Path]:
    """The module registering a plugin's name (its entry point) and the module defining its factory."""
    modules = {ep.module for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP, name=reg.plugin)}
    modules.add(getattr(reg.factory, "__module__", ""))
    return frozenset(f for m in modules if (f := _module_file(m)))


@cache
def _runs(pipeline: Path, cmd: str) -> frozenset[Path]:
    """Every first-party file ``cmd`` (a stage's command line, run in ``pipeline``'s folder) runs."""
    argv = shlex.split(cmd)
    assert argv[0] == "cnnbench", cmd
    command = cli.main.commands[argv[1]]
    flags = command.make_context(argv[1], argv[2:], resilient_parsing=True).params
    params = yaml.safe_load((pipeline.parent / "params.yaml").read_text())
    files = _loaded(_cli_run(inspect.unwrap(command.callback).__name__, flags))
    for kind in BUILDS[argv[1]]:
        option = next(p for p in command.params if f"--{kind}" in p.opts)
        given = flags[option.name]
        for name in (given if isinstance(given, tuple) else [given]) if given else params[f"{kind}s"]:
            files |= _plugin_files(plugins.lookup(kind, name)[0])
    return _closure(files, followed={Path(cli.__file__)})


@cache
def _any_plugin_runs(command: str) -> frozenset[Path]:
    """The code beyond their own modules that the built-in plugins ``command`` builds run, each of
    them: what a stage's one list of deps needs whichever of them params.yaml lists."""
    files = set()
    for kind in BUILDS[command]:
        for reg in plugins.registry(kind).values():
            if reg.builtin:
                files |= _closure(_plugin_files(reg)) - _plugin_files(reg)
    return frozenset(files)


def _covers(dep: Path, path: Path) -> bool:
    return dep == path or dep in path.parents


def _code(deps: list[Path]) -> list[Path]:
    """The deps that are first-party code (not data, features or metrics)."""
    return [d for d in deps if any(_covers(ROOT / top, d) for top in ("cnnbench", "plugins"))]


def _shown(paths) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths)


# -- the closure itself ---------------------------------------------------------------------------------


def test_the_closure_follows_lazy_and_relative_imports_and_package_inits_but_not_type_checking(tmp_path):
    """The rules the deps are computed by, on a package written for it: a lazy import in a function
    counts, a relative one resolves, ``from pkg import sub`` loads the submodule and each package's
    ``__init__.py``; an ``if TYPE_CHECKING:`` import and a third-party one do not count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import hinted\n"
                "def f():\n    from .sub import deep\n",
        "hinted.py": "",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import b\n",
        "b.py": "def g():\n    import pkg.c\n",
        "c.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    found = _closure({pkg / "a.py"}, sources=(tmp_path,))
    assert sorted(str(p.relative_to(pkg)) for p in found) == [
        "__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/deep.py"]


def test_a_stage_runs_the_helpers_its_command_calls_and_not_the_branches_its_flags_switch_off():
    """``extract`` reaches the engine through ``_extract`` -> ``_extract_one``; ``evaluate
    --no-extract-missing`` never extracts, so the engine is not one of its deps; ``compare`` runs
    neither. Every command runs cli.py's module-level imports and the console script's function."""
    stages = {name.split("@")[0]: cmd for name, cmd, _, _ in _stages(ROOT / "dvc.yaml")}
    runs = {name: _runs(ROOT / "dvc.yaml", cmd) for name, cmd in stages.items()}
    extract_engine = runs["extract"] - runs["evaluate"]
    assert ROOT / "cnnbench" / "extract.py" in extract_engine, _shown(extract_engine)
    assert ROOT / "cnnbench" / "extract.py" not in runs["compare"]
    every = set.intersection(*map(set, runs.values()))
    tree = ast.parse(Path(cli.__file__).read_text())
    assert _loaded(_imported(_live(tree.body, into_defs=False), cli.__name__, False)) <= every
    assert {Path(cli.__file__), ROOT / "cnnbench" / "__init__.py"} <= every


# -- the shipped pipelines ------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stage_depends_on_every_file_its_command_runs(pipeline):
    """A file a stage runs but does not depend on leaves it "up to date" after an edit that changes
    its output (cnnbench/fewshot.py and the evaluate stages, once)."""
    missing = {}
    for name, cmd, deps, _ in _stages(pipeline):
        lacking = [f for f in _runs(pipeline, cmd) if not any(_covers(d, f) for d in deps)]
        if lacking:
            missing[name] = _shown(lacking)
    assert missing == {}, f"add these to the stages' deps in {pipeline.relative_to(ROOT)}"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stage_depends_on_the_code_any_built_in_plugin_it_builds_runs(pipeline):
    """params.yaml's lists are the user's to change (voc2007 for digits, the paper preset's data
    sets): a stage's one list of deps covers the code each built-in plugin of the kinds it builds
    runs beyond its own module (the download helper of the data sets that download, the solver of
    the svm head), so editing the lists never leaves a stage blind to code it then runs."""
    missing = {}
    for name, cmd, deps, _ in _stages(pipeline):
        stage = name.split("@")[0]
        lacking = [f for f in _any_plugin_runs(shlex.split(cmd)[1]) if not any(_covers(d, f) for d in deps)]
        missing.setdefault(stage, set()).update(_shown(lacking))
    missing = {k: sorted(v) for k, v in missing.items() if v}
    assert missing == {}, f"add these to the deps in {pipeline.relative_to(ROOT)}"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_stage_depends_on_code_its_command_does_not_run(pipeline):
    """A code dep that nothing a stage may run reaches (its items, or any built-in plugin it builds)
    reruns it needlessly; one that no longer exists (a module moved) stops `dvc repro`. A folder dep
    must hold some file the stage runs."""
    runs, listed = {}, {}
    for name, cmd, deps, _ in _stages(pipeline):
        stage = name.split("@")[0]
        runs.setdefault(stage, set()).update(_runs(pipeline, cmd) | _any_plugin_runs(shlex.split(cmd)[1]))
        listed.setdefault(stage, set()).update(_code(deps))
    stale = {stage: _shown(d for d in deps if not d.exists() or not any(_covers(d, f) for f in runs[stage]))
             for stage, deps in listed.items()}
    assert {k: v for k, v in stale.items() if v} == {}, f"remove these from the deps in {pipeline.relative_to(ROOT)}"


def _stale_after_editing(pipeline: Path, path: Path) -> list[str]:
    """The stages whose deps cover ``path``: those `dvc status` reports once it is edited."""
    return sorted(name for name, _, deps, _ in _stages(pipeline) if any(_covers(d, path) for d in deps))


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: str(p.relative_to(ROOT)))
def test_editing_the_few_shot_rule_stales_every_evaluation_and_editing_compare_only_compare(pipeline):
    """The issue's two checks, from the closure and from the deps: cnnbench/fewshot.py runs in every
    evaluate stage (and wherever a recipe is read: recipes.py parses `shots` with it),
    cnnbench/compare.py only in compare."""
    stages = _stages(pipeline)
    evaluations = [name for name, *_ in stages if name.startswith("evaluate@")]
    fewshot, compare = ROOT / "cnnbench" / "fewshot.py", ROOT / "cnnbench" / "compare.py"
    runs_fewshot = sorted(n for n, cmd, *_ in stages if fewshot in _runs(pipeline, cmd))
    assert runs_fewshot == _stale_after_editing(pipeline, fewshot)
    assert set(evaluations) <= set(_stale_after_editing(pipeline, fewshot)) and evaluations
    assert [n for n, cmd, *_ in stages if compare in _runs(pipeline, cmd)] == ["compare"]
    assert _stale_after_editing(pipeline, compare) == ["compare"]


def test_dvc_status_reports_what_an_edit_of_the_few_shot_rule_or_of_compare_makes_stale(tmp_path):
    """The same, as DVC sees it, on a copy of the repository whose stages are recorded as run
    (`dvc commit` over stand-in outputs: nothing is computed)."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "cnnbench", tmp_path / "cnnbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["backbones"] = params["backbones"][:1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = _stages(tmp_path / "dvc.yaml")
    for out in (o for stage in stages for o in stage.outs):  # a folder out (features): one file in it
        stand_in = out if out.suffix else out / "none" / "train.h5"
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("{}")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc("init", "-q", cwd=tmp_path)
    _dvc("config", "core.analytics", "false", cwd=tmp_path)
    _dvc("commit", "-f", "-q", cwd=tmp_path)
    assert _stale(tmp_path) == []

    for edited in ("fewshot.py", "compare.py"):
        path = tmp_path / "cnnbench" / edited
        before = path.read_text()
        _touch(path)
        expected = sorted(n for n, cmd, *_ in stages if ROOT / "cnnbench" / edited in _runs(ROOT / "dvc.yaml", cmd))
        assert _stale(tmp_path) == expected, edited
        assert any(n.startswith("evaluate@") for n in expected) == (edited == "fewshot.py")
        path.write_text(before)
