"""Every plugin option is declared once (cnnbench.options.Options): its checks, "did you mean",
`cnnbench plugins NAME`, the run record's resolved options and the params.yaml check all come from
that one declaration; the extraction settings' flags come from ExtractSettings' fields."""

from __future__ import annotations

import ast
import dataclasses
import json
from typing import Literal

import pytest
import yaml
from click.testing import CliRunner

from cnnbench import cli, plugins
from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.settings import FEATURE_KEYS, ExtractSettings, flag_of

from conftest import ROOT


@dataclasses.dataclass(frozen=True)
class ProbeLike(O.Options):
    C_grid: tuple[float, ...] = O.option((0.1, 1.0), "C values tried", min=1e-6, max=1e6, min_len=0)
    C: float | None = O.option(None, "a fixed C", min=1e-6, max=1e6)
    loss: Literal["hinge", "squared_hinge"] = O.option("squared_hinge", "the loss")
    folds: int = O.option(3, "cross-validation folds", min=2)
    balanced: bool = O.option(False, "weigh classes equally")

    def check(self, owner):
        if self.C is None and not self.C_grid:
            raise UserError(f"{owner}: C_grid: [] with no C")


def test_one_declaration_checks_types_bounds_and_allowed_values():
    o = ProbeLike.parse("probe", {"C_grid": [1, "10"], "folds": "4", "balanced": True})
    assert o.C_grid == (1.0, 10.0) and o.folds == 4 and o.balanced is True and o.loss == "squared_hinge"
    for given, says in [({"folds": 1}, "probe: folds: 1 is not allowed; expected an integer >= 2"),
                        ({"loss": "hinged"}, "probe: loss: 'hinged' is not allowed; expected one of 'hinge', "
                                             "'squared_hinge'"),
                        ({"balanced": "maybe"}, "probe: balanced: 'maybe' is not allowed; expected true or false"),
                        ({"C": float("inf")}, "probe: C: inf is not allowed"),
                        ({"C_grid": []}, "probe: C_grid: [] with no C")]:
        with pytest.raises(UserError) as exc:
            ProbeLike.parse("probe", given)
        assert str(exc.value).startswith(says)


def test_an_unknown_key_names_the_closest_declared_one():
    with pytest.raises(UserError, match=r"probe: unknown key 'C_grd' \(did you mean 'C_grid'\?\); known keys: "
                                        r"C_grid, C, loss, folds, balanced"):
        ProbeLike.parse("probe", {"C_grd": [1]})


def test_describe_and_defaults_come_from_the_declaration():
    rows = {o.name: o for o in ProbeLike.describe()}
    assert rows["C_grid"].default == [0.1, 1.0] and rows["C_grid"].type == "list of float"
    assert rows["loss"].allowed == "one of 'hinge', 'squared_hinge'" and rows["folds"].allowed == ">= 2"
    assert ProbeLike.default("folds") == 3 and all(o.help for o in rows.values())


def _first_party_plugin_files():
    return sorted((ROOT / "plugins" / "cnnbench_plugins").rglob("*.py"))


def test_no_constructor_takes_options_it_does_not_declare():
    """No ``**unknown`` tail (a second check beside the declaration) in any first-party plugin."""
    tails = []
    for path in _first_party_plugin_files():
        for node in ast.walk(ast.parse(path.read_text())):
            kwarg = node.args.kwarg if isinstance(node, ast.FunctionDef) else None
            if kwarg is not None and node.name == "__init__" and kwarg.arg == "unknown":
                tails.append(f"{path.name}:{node.lineno}")
    assert tails == []
    assert "refuse_unknown" not in "".join(p.read_text() for p in _first_party_plugin_files())


@pytest.mark.parametrize("kind", plugins.KINDS)
def test_every_first_party_plugin_declares_its_options_with_help(kind):
    for name, r in plugins.registry(kind).items():
        if not r.builtin:
            continue
        declared = r.options or O.options_of(r.factory)
        assert declared is not None, f"{kind} {name} declares no Options"
        missing = [o.name for o in declared.describe() if not o.help]
        assert missing == [], f"{kind} {name}: options without help: {missing}"


def test_a_head_records_its_resolved_options():
    head = plugins.create("head", "svm", C=2, solver="auto")
    assert head.params["C"] == 2.0 and head.params["solver"] == "auto" and head.solver == "batched"
    assert set(head.params) == set(type(head).Options.names())
    assert head.params["C_grid"] == list(type(head).Options.default("C_grid"))  # the declared default, once


@pytest.mark.parametrize("params_file", ["params.yaml", "paper/params.yaml"])
def test_the_shipped_params_files_set_only_declared_options_with_allowed_values(params_file):
    params = yaml.safe_load((ROOT / params_file).read_text())
    checked = 0
    for section, kind in (("backbone_options", "backbone"), ("dataset_options", "dataset"), ("head_options", "head")):
        for name, given in (params.get(section) or {}).items():
            r, _ = plugins.lookup(kind, name)
            declared = r.options or O.options_of(r.factory)
            declared.parse(name, given or {})  # raises on an unknown key or a value it does not allow
            checked += 1
    assert checked >= 5


def test_plugins_name_lists_the_options_from_their_declaration():
    res = CliRunner().invoke(cli.main, ["plugins", "svm"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "C_grid" in res.output and "squared_hinge" in res.output and "-H KEY=VALUE" in res.output
    res = CliRunner().invoke(cli.main, ["plugins", "svmm"])
    assert res.exit_code != 0 and "no backbone, data set or head is named 'svmm'" in res.output
    assert "Traceback" not in res.output


def test_every_extraction_setting_is_a_flag_made_from_its_field():
    """A new setting is one field: the extract command's flags are made from ExtractSettings."""
    command = cli.main.commands["extract"]
    flags = {opt: p.name for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for f, _ in ExtractSettings.declared():
        if f.metadata.get("flag") == "":
            continue
        for spelling in flag_of(f.name).replace("--[no-]", "--").split("/"):
            assert flags.get(spelling) == f.name, spelling
        if flag_of(f.name).startswith("--[no-]"):
            assert flags.get(flag_of(f.name).replace("--[no-]", "--no-")) == f.name
    assert "fast_decode" in FEATURE_KEYS and "batch_size" not in FEATURE_KEYS
    help_text = CliRunner().invoke(cli.main, ["extract", "--help"], terminal_width=200).output
    assert "--fast-decode / --no-fast-decode" in help_text and "JPEG draft mode" in help_text


def test_a_setting_given_as_a_flag_reaches_the_settings(monkeypatch, tmp_path):
    seen = {}

    def fake_extract(ctx, backbone, dataset, settings, **kw):
        seen["settings"] = settings

    monkeypatch.setattr(cli, "_extract", fake_extract)
    res = CliRunner().invoke(cli.main, ["extract", "-b", "effnet-lite0", "-d", "digits", "--fast-decode",
                                        "--layer", "a", "--layer", "b", "--levels", "2", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    s = seen["settings"]
    assert s.fast_decode is True and s.layers == ("a", "b") and s.spatial_levels == 2 and s.batch_size == 8
    assert json.loads(json.dumps(s.to_json()))["fast_decode"] is True
