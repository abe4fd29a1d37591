"""Configuration that would be accepted silently or make unbounded work: a key given twice, a list
left empty, a boolean that is any string, a value that asks for 10⁹ of something. Each is one line
naming the file or the option, the value and what is allowed; nothing runs first."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cnnbench import hookimpl, plugins
from cnnbench import options as O
from cnnbench import params as P
from cnnbench.cli import main
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet
from cnnbench.recipes import EvalOptions
from cnnbench.settings import ExtractSettings

from conftest import tiny_backbone


def _params(tmp_path, text: str | bytes):
    path = tmp_path / "params.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _refused(path) -> str:
    with pytest.raises(UserError) as err:
        P.load(path)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, "one short line"
    return msg


def _cli(tmp_path, *args):
    return CliRunner().invoke(main, ["--params", str(tmp_path / "params.yaml"), *args])


# -- params.yaml: duplicate keys, empty lists, odd files ---------------------------------------------------


@pytest.mark.parametrize("text, key, lines", [
    ("heads: [svm]\ndatasets: [digits]\nheads: [l2]\n", "heads", (1, 3)),
    ("head_options:\n  svm:\n    C: 1\n    power: 2\n    C: 0.001\n", "C", (3, 5)),
    ("extract:\n  batch_size: 8\n  views: none\n  batch_size: 64\n", "batch_size", (2, 4)),
    ("compare: {level: 0.9, level: 0.99}\n", "level", (1, 1)),
], ids=["top-level", "head-option", "extract-setting", "flow-mapping"])
def test_a_key_given_twice_in_params_yaml_is_refused_with_both_lines(tmp_path, text, key, lines):
    path = _params(tmp_path, text)
    msg = _refused(path)
    assert str(path) in msg and repr(key) in msg and f"lines {lines[0]} and {lines[1]}" in msg


def test_a_merge_key_may_still_override_what_it_merges_in(tmp_path):
    text = ("head_options:\n  svm: &base {C: 1, power: 2}\n  logreg:\n    <<: *base\n    C: 10\n")
    params = P.load(_params(tmp_path, text))
    assert params["head_options"]["logreg"] == {"C": 10, "power": 2}


def test_a_key_given_twice_on_the_command_line_is_refused():
    with pytest.raises(UserError, match=r"-H C is given twice \('C=1' and 'C=0\.001'\)"):
        P.parse_assignments(("C=1", "power=2", "C=0.001"), "-H")
    with pytest.raises(UserError, match=r"-D 'x=\{a: 1, a: 2\}': key 'a' is given twice"):
        P.parse_assignments(("x={a: 1, a: 2}",), "-D")


@pytest.mark.parametrize("key", ["heads", "datasets", "backbones"])
def test_an_empty_list_of_heads_datasets_or_backbones_is_refused(tmp_path, key):
    msg = _refused(_params(tmp_path, f"{key}: []\n"))
    assert f"{key}: [] is not allowed" in msg and "at least one name" in msg


def test_evaluate_with_heads_left_empty_says_so_instead_of_doing_nothing(tmp_path):
    _params(tmp_path, "heads: []\n")
    result = _cli(tmp_path, "evaluate", "-b", "tiny", "-d", "digits", "--no-extract-missing")
    assert result.exit_code != 0 and "heads: [] is not allowed" in result.output


def test_a_name_listed_twice_is_refused(tmp_path):
    assert "'svm' listed twice" in _refused(_params(tmp_path, "heads: [svm, l2, svm]\n"))


@pytest.mark.parametrize("text, says", [
    ("- heads\n- svm\n", "must hold a mapping of parameters"),
    ("just text\n", "must hold a mapping of parameters"),
    (b"heads: [svm]\ndata_root: caf\xe9\n", "not UTF-8"),
    ("heads:\n\t- svm\n", "not valid YAML"),
], ids=["a-list", "a-string", "latin-1", "tabs"])
def test_a_params_file_that_is_not_a_utf8_yaml_mapping_is_one_line(tmp_path, text, says):
    assert says in _refused(_params(tmp_path, text))


def test_an_empty_params_file_means_the_defaults(tmp_path):
    assert P.load(_params(tmp_path, "# nothing set\n"))["heads"] == P.DEFAULTS["heads"]


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path):
    """Nine lines of anchors are 9⁸ strings once printed: the message quotes the value cut short."""
    lines, prev = ["backbone_options:", "  x:", '    a: &a ["x","x","x","x","x","x","x","x","x"]'], "a"
    for name in "bcdefgh":
        lines.append(f"    {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    msg = _refused(_params(tmp_path, "\n".join(lines + ["heads: *h"]) + "\n"))
    assert "heads[0]" in msg


# -- booleans: true or false, never any string ----------------------------------------------------------


@pytest.mark.parametrize("value", ["maybe", "false", "", 2, [True]])
def test_a_boolean_option_of_a_plugin_accepts_only_true_or_false(value):
    with pytest.raises(UserError, match=r"^effnet-lite0: pretrained: .* is not allowed; expected true or false$"):
        plugins.create("backbone", "effnet-lite0", pretrained=value)


def test_a_boolean_backbone_option_in_params_yaml_is_refused_on_the_command_line(tmp_path):
    _params(tmp_path, "backbone_options:\n  effnet-lite0: {pretrained: maybe}\n")
    result = _cli(tmp_path, "layers", "effnet-lite0")
    assert result.exit_code != 0 and "pretrained: 'maybe' is not allowed; expected true or false" in result.output


def test_every_plugins_boolean_options_get_the_check_annotated_or_not():
    seen = {}

    def build(flag=True, strict: bool = False, maybe_none: bool | None = None, name: str = "x"):
        seen.update(flag=flag, strict=strict, maybe_none=maybe_none, name=name)
        return tiny_backbone()

    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register("bool-options-test", build)

    plugins.register_plugin(Plugin(), name="bool-options-test-plugin")
    try:
        for opts in ({"flag": "no"}, {"strict": "true"}, {"maybe_none": 3}):
            with pytest.raises(UserError, match=rf"^bool-options-test: {next(iter(opts))}: .* expected true or false"):
                plugins.create("backbone", "bool-options-test", **opts)
        plugins.create("backbone", "bool-options-test", flag=0, strict=1, maybe_none=None, name="yes")
        assert seen == {"flag": False, "strict": True, "maybe_none": None, "name": "yes"}
    finally:
        plugins.unregister_plugin("bool-options-test-plugin")


def test_yaml_spellings_of_booleans_are_booleans():
    values = P.parse_assignments(("a=true", "b=no", "c=off", "d=False"))
    assert [O.as_bool(k, v) for k, v in values.items()] == [True, False, False, False]


# -- one value, unbounded work ------------------------------------------------------------------------------


UNBOUNDED_HEAD_OPTIONS = [
    ("svm", {"C": 1e308}, "svm: C: 1e+308 is not allowed; expected a finite number from 1e-06 to 1e+06"),
    ("svm", {"C": "inf"}, "svm: C: 'inf'"),
    ("svm", {"C": ".nan"}, "svm: C: '.nan'"),
    ("svm", {"C_grid": [0.1, 1e9]}, "svm: C_grid[1]: 1000000000.0 is not allowed"),
    ("logreg", {"C": 1e-9}, "logreg: C: 1e-09 is not allowed"),
    ("logreg", {"C_grid": [float("nan")]}, "logreg: C_grid[0]: nan"),
    ("svm", {"max_iter": 10**12}, "svm: max_iter: 1000000000000 is not allowed"),
    ("logreg", {"max_iter": 10**12}, "logreg: max_iter"),
    ("knn", {"chunk_size": 10**9}, "knn: chunk_size: 1000000000 is not allowed"),
    ("knn", {"k": list(range(1, 1000))}, "knn: k: 999 values are not allowed"),
    ("l2", {"query_batch": 10**9}, "l2: query_batch"),
    ("l2", {"rerank": 10**9}, "l2: rerank"),
]


@pytest.mark.parametrize("head, opts, says", UNBOUNDED_HEAD_OPTIONS,
                         ids=[f"{h}-{k}={o[k]!r}"[:40] for h, o, _ in UNBOUNDED_HEAD_OPTIONS for k in o])
def test_a_head_option_that_would_make_unbounded_work_is_refused_when_the_head_is_made(head, opts, says):
    with pytest.raises(UserError) as err:
        plugins.create("head", head, **opts)
    assert says in str(err.value)


def test_the_solvers_handle_the_whole_range_of_C():
    from cnnbench.linsvm import BatchedLinearSVM
    from cnnbench.logreg import BatchedLogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    for C in (1e-6, 1e6):
        svm = BatchedLinearSVM().fit(x, y, C, n_classes=3)
        lr = BatchedLogisticRegression().fit(x, y, C, n_classes=3)
        assert np.isfinite(svm.decision_function(x)).all() and np.isfinite(lr.decision_function(x)).all()


def test_an_svm_fit_that_runs_out_of_newton_steps_is_reported_not_run_on(caplog):
    from cnnbench import linsvm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 8)).astype(np.float32)
    y = rng.integers(0, 2, 80)
    svm = linsvm.BatchedLinearSVM(tol=1e-30)  # a rule no fit can meet
    svm.fit(x, y, 1e6, n_classes=2)
    assert svm.n_iter == linsvm.MAX_NEWTON and svm.converged is False
    fs = FeatureSet(x, y, np.array([f"i{k}" for k in range(80)], dtype=object), ["a", "b"])
    with caplog.at_level("WARNING"):
        plugins.create("head", "svm", C=1e6, tol=1e-30).evaluate(fs, fs, "multiclass")
    assert "svm: C=1e+06: the batched solver stopped after 100 Newton steps before reaching its tolerance" in caplog.text


def _features(counts: list[int]) -> FeatureSet:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.standard_normal((len(y), 6)).astype(np.float32) + y[:, None]
    return FeatureSet(x, y, np.array([f"i{k}" for k in range(len(y))], dtype=object),
                      [f"c{k}" for k in range(len(counts))])


@pytest.mark.parametrize("head", ["svm", "logreg"])
def test_cv_folds_beyond_the_training_images_is_refused_naming_the_limit(head):
    train = _features([10, 12])
    with pytest.raises(UserError) as err:
        plugins.create("head", head, C_grid=[1.0], cv_folds=1_000_000).evaluate(train, train, "multiclass")
    assert f"{head}: cv_folds: 1000000 is not allowed with these 22 training images; expected at most 22" in str(err.value)


def test_cv_folds_beyond_the_smallest_class_is_lowered_with_a_warning(caplog):
    train = _features([3, 12])
    with caplog.at_level("WARNING"):
        out = plugins.create("head", "svm", C_grid=[1.0], cv_folds=10).evaluate(train, train, "multiclass")
    assert "accuracy" in out and "svm: cv_folds: 10 lowered to 3" in caplog.text


UNBOUNDED_SETTINGS = [
    ({"spatial_levels": 3000}, "extract.spatial_levels (--levels): 3000 is not allowed; expected an integer from 1 to 8"),
    ({"spatial_levels": {"queries": 9}}, "extract.spatial_levels (--levels).queries: 9"),
    ({"batch_size": 10**9}, "extract.batch_size"),
    ({"workers": 10**6}, "extract.workers"),
    ({"num_workers": 10**6}, "extract.num_workers"),
    ({"threads_per_worker": 10**6}, "extract.threads_per_worker"),
    ({"cpus_per_worker": 1e-9}, "extract.cpus_per_worker (--cpus-per-worker): 1e-09 is not allowed; expected 0 or at "
                                "least 0.01"),
    ({"gpus_per_worker": 1e-9}, "extract.gpus_per_worker"),
]


@pytest.mark.parametrize("bad, says", UNBOUNDED_SETTINGS, ids=[f"{k}={b[k]!r}" for b, _ in UNBOUNDED_SETTINGS for k in b])
def test_an_extraction_setting_that_would_make_unbounded_work_is_refused(bad, says):
    with pytest.raises(UserError) as err:
        ExtractSettings(**bad)
    assert says in str(err.value)


def test_levels_3000_on_the_command_line_is_one_line_before_any_work(tmp_path):
    _params(tmp_path, "{}\n")
    result = _cli(tmp_path, "extract", "-b", "tiny", "-d", "digits", "--views", "spatial", "--levels", "3000",
                  "--out", str(tmp_path / "f"))
    assert result.exit_code != 0 and "--levels" in result.output and "from 1 to 8" in result.output
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("opts, says", [
    ({"shots": [1], "shots_trials": 10**9}, "shots_trials: 1000000000 is not allowed"),
    ({"shots": 0}, "shots[0]: 0 is not allowed"),
    ({"shots": [1], "shots_seed": -1}, "shots_seed: -1 is not allowed"),
])
def test_few_shot_options_are_bounded(opts, says):
    with pytest.raises(UserError, match=says.replace("[", r"\[").replace("]", r"\]")):
        EvalOptions.from_mapping("-E", opts)


def test_compare_bootstrap_is_bounded(tmp_path):
    assert "compare.bootstrap: 2000000000 is not allowed" in _refused(_params(tmp_path, "compare: {bootstrap: 2000000000}\n"))
