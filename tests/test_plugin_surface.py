"""The plugin surface (docs/plugins.md) is what plugins actually import, and the docs say so.

Every module of the first-party plugins and of the examples is parsed, not imported, so the check
is fast and also covers imports inside functions. A plugin's own helper modules (relative imports,
``cnnbench_plugins.datasets._common``) are its own business; only ``cnnbench.*`` is checked.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnbench import plugins
from cnnbench.cli import main
from cnnbench.head import FeatureSet, Head

from conftest import ROOT

# What a plugin may import: the contracts, and the libraries meant for plugins. ``cnnbench`` itself
# offers ``hookimpl`` (and ``__version__``).
SURFACE = {
    "cnnbench", "cnnbench.backbone", "cnnbench.dataset", "cnnbench.head", "cnnbench.metrics",
    "cnnbench.retrieval", "cnnbench.linsvm", "cnnbench.logreg", "cnnbench.outcomes", "cnnbench.options", "cnnbench.errors", "cnnbench.download",
    "cnnbench.weights", "cnnbench.scores",
}
# Named in the docs as off limits: the engine, whose insides change without notice. Any module not
# in SURFACE is refused, whether listed here or not.
ENGINE = {"cnnbench.store", "cnnbench.extract", "cnnbench.runtime", "cnnbench.cli", "cnnbench.partial",
          "cnnbench.settings", "cnnbench.images", "cnnbench.plugins", "cnnbench.evaluate", "cnnbench.compare"}
CHECKED = [ROOT / "plugins" / "cnnbench_plugins", ROOT / "examples"]
SKIPPED_DIRS = {"build", "dist", "__pycache__"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _is_module(dotted: str) -> bool:
    return importlib.util.find_spec(dotted) is not None


def surface_violations(source: str, filename: str = "<plugin>") -> list[str]:
    """``file:line: what`` for each import of a module outside the surface, each private name taken
    from cnnbench, and each ``<cnnbench module>._name`` attribute use."""
    tree = ast.parse(source, filename)
    found: list[tuple[int, str]] = []
    aliases: dict[str, str] = {}  # local name -> cnnbench module it is bound to

    def module(lineno: int, name: str) -> None:
        if any(_private(part) for part in name.split(".")):
            found.append((lineno, f"imports the private module {name}"))
        elif name not in SURFACE:
            found.append((lineno, f"imports {name}, which is not part of the plugin surface"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "cnnbench" or a.name.startswith("cnnbench."):
                    module(node.lineno, a.name)
                    aliases[a.asname or "cnnbench"] = a.name if a.asname else "cnnbench"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "cnnbench" or node.module.startswith("cnnbench.")):
            module(node.lineno, node.module)
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _private(a.name):
                    found.append((node.lineno, f"imports the private name {full}"))
                elif node.module == "cnnbench" and _is_module(full):
                    module(node.lineno, full)
                    aliases[a.asname or a.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None), ast.Del):
            parts = _dotted(node)
            if parts and parts[0] in aliases:
                full = [*aliases[parts[0]].split("."), *parts[1:]]
                private = next((p for p in full[1:] if _private(p)), None)
                if private:
                    found.append((node.lineno, f"uses the private name {'.'.join(full)}"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(set(found))]


def _plugin_modules() -> list[Path]:
    files = []
    for root in CHECKED:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts[:-1]
            if not any(p in SKIPPED_DIRS or p.endswith(".egg-info") or p.startswith(".") for p in rel):
                files.append(path)
    return files


def test_plugins_and_examples_import_only_the_plugin_surface():
    files = _plugin_modules()
    assert len(files) > 20 and any(f.name == "cnnbench_colorhist.py" for f in files)
    problems = [v for f in files for v in surface_violations(f.read_text(), str(f.relative_to(ROOT)))]
    assert not problems, "plugins reach past the plugin surface (docs/plugins.md):\n" + "\n".join(problems)


def test_the_check_catches_engine_modules_private_names_and_private_attributes():
    source = "\n".join([
        "from cnnbench import hookimpl, store",  # 1: engine module by from-import
        "from cnnbench.metrics import _trapezoid_ap, accuracy",  # 2: private name
        "import cnnbench.extract as ex",  # 3: engine module
        "from cnnbench import options as O",  # 4: fine
        "O._bad('x', 1, 'y')",  # 5: private attribute through an alias
        "import cnnbench",  # 6: fine
        "cnnbench.metrics._trapezoid_ap",  # 7: private attribute through the package
        "from cnnbench._secret import x",  # 8: private module
        "from ._common import refuse_unknown",  # 9: the plugin's own helper: fine
        "def f():\n    from cnnbench.runtime import build",  # 11: inside a function
        "from cnnbench.dataset import Dataset, seeded_per_class_split",  # 12: fine
    ])
    lines = [int(v.split(":")[1]) for v in surface_violations(source)]
    assert lines == [1, 2, 3, 5, 7, 8, 11]


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end != -1 else None]


def test_the_docs_list_exactly_what_the_check_allows_and_forbids():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    allowed, forbidden = _section(doc, "What a plugin may import"), _section(doc, "What a plugin must not import")
    for name in SURFACE - {"cnnbench"}:
        assert f"`{name}`" in allowed, f"{name} is on the surface but docs/plugins.md does not list it"
        assert f"`{name}`" not in forbidden
    for name in ENGINE:
        assert f"`{name}`" in forbidden, f"docs/plugins.md does not warn against {name}"
        assert f"`{name}`" not in allowed


@pytest.mark.parametrize("name", sorted(SURFACE | ENGINE))
def test_every_module_the_docs_name_exists(name):
    assert _is_module(name)


def test_every_registered_head_takes_the_data_sets_metric_as_a_keyword():
    base = inspect.signature(Head.evaluate).parameters["metric"]
    assert base.kind is base.KEYWORD_ONLY and base.default is None
    for name, reg in plugins.registry("head").items():
        params = inspect.signature(plugins.create("head", name).evaluate).parameters
        assert "metric" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()), (
            f"head {name!r} ({reg.origin()}): evaluate() must accept metric=")


# -- docs/plugins.md's "Declaring options": its example is a plugin that does what the page says ----------


def _docs_example(monkeypatch) -> tuple[str, types.ModuleType]:
    """The section, and its example run as the plugin it shows (registered in-process)."""
    section = _section((ROOT / "docs" / "plugins.md").read_text(), "Declaring options")
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    assert not surface_violations(code, "docs/plugins.md")
    module = types.ModuleType("docs_kvote")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/plugins.md (Declaring options)", "exec"), module.__dict__)
    plugins.register_plugin(module, name="docs-kvote")
    return section, module


def test_the_docs_options_example_is_refused_and_listed_as_the_docs_show(monkeypatch, tmp_path):
    section, _ = _docs_example(monkeypatch)
    shown = re.findall(r"\$ cnnbench (.*)\n\s*(Error: .*)", section)
    assert len(shown) == 3
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the defaults
    for command, error in shown:
        result = CliRunner().invoke(main, shlex.split(command))
        assert (result.exit_code, result.output.strip()) == (1, error), command
    listing = CliRunner().invoke(main, ["plugins", "kvote"]).output
    for name in ("k", "vote", "temperature", "normalize"):
        assert f"│ {name} " in listing, listing


def test_the_docs_options_example_records_its_resolved_options_and_votes_as_declared(monkeypatch):
    _, kvote = _docs_example(monkeypatch)
    assert plugins.create("head", "kvote").params == {"k": 5, "vote": "majority", "temperature": None,
                                                       "normalize": True}
    # one test image at angle 0; training images: class 0 at 0 and 180 degrees, class 1 at +-30 degrees.
    # Its 3 nearest are one of class 0 (similarity 1) and two of class 1 (0.866 each): one vote each
    # gives class 1; weighted, exp(1/t) beats 2 exp(0.866/t) once t < 0.19, so t=0.05 gives class 0
    angles = np.radians([0, 180, 30, -30])
    train = FeatureSet(np.stack([np.cos(angles), np.sin(angles)], 1), np.array([0, 0, 1, 1]),
                       ["a0", "a180", "b30", "b-30"], ["a", "b"])
    test = FeatureSet(np.array([[1.0, 0.0]]), np.array([0]), ["t"], ["a", "b"])
    assert kvote.KVote(k=3).evaluate(train, test, "multiclass") == {"accuracy": 0.0}
    weighted = kvote.KVote(k=3, vote="weighted", temperature=0.05)
    assert weighted.params["temperature"] == 0.05
    assert weighted.evaluate(train, test, "multiclass") == {"accuracy": 1.0}
    assert kvote.KVote(k=3, vote="weighted", temperature=1.0).evaluate(train, test, "multiclass") == {"accuracy": 0.0}
