"""Recipes: the paper's method rows as named data (cnn, cnnaug, cnn-ss, cnnaug-ss, and the user's own in
params.yaml), and a result's identity (backbone, data set, recipe, head): metrics/<b>/<d>/<recipe>/<head>.json,
features/<b>/<d>/<features key>/<split>.h5, shared by recipes that extract alike."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cnnbench import plugins
from cnnbench import params as P
from cnnbench import recipes as R
from cnnbench.cli import Ctx, main
from cnnbench.errors import UserError
from cnnbench.evaluate import evaluate, read_results, write_results
from cnnbench.jsonio import ResultError

from conftest import TinyPlugin


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The tiny backbone registered in-process, the working folder ``tmp_path`` (no params.yaml)."""
    plugins.register_plugin(TinyPlugin(), name="tiny-plugin")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def _params(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


# -- the built-in recipes read like the protocol -----------------------------------------------------------


def test_cnnaug_is_16_jittered_views_and_a_signed_power_2_on_the_svm_with_views_summed(tmp_path):
    cnnaug = R.resolve("cnnaug")
    ctx = Ctx(str(tmp_path / "absent.yaml"))
    settings = ctx.extract_settings(recipe=cnnaug.for_dataset("flowers102"))
    assert settings.views == "jitter16" and len(settings.view_names) == 16
    svm = ctx.head("svm", recipe=cnnaug)
    assert svm.params["power"] == 2.0 and svm.params["view_pooling"] == "sum"
    assert ctx.head("svm", recipe=R.resolve("cnn")).params["power"] == 1.0  # cnn: the head's own default
    assert cnnaug.paper_row == "paper: OverFeat CNNaug-SVM" and "sum the SVM responses" in cnnaug.description


def test_cnnaug_ss_is_spatial_search_on_oxford_and_jittering_on_holidays_and_ukbench():
    r = R.resolve("cnnaug-ss")
    assert r.for_dataset("oxford5k").extract == {"views": "spatial"} and r.features_key("oxford5k") == "spatial"
    for ds in ("holidays", "ukbench"):
        assert r.for_dataset(ds).extract == {"views": "jitter16"} and r.features_key(ds) == "jitter16"
        assert r.for_dataset(ds).heads == {"l2": {"power": 2.0}}  # only the views are replaced there
    assert "Holidays and UKBench use the classification jittering instead" in r.description
    assert R.resolve("cnn-ss").features_key("holidays") == "spatial" and R.resolve("cnn").features_key("x") == "none"
    assert [R.resolve(n).paper_row for n in ("cnn", "cnn-ss")] == ["paper: OverFeat CNN-SVM", "paper: OverFeat CNN-ss"]


def test_two_recipes_that_extract_alike_share_one_features_key(tmp_path):
    params = P.load(_params(tmp_path, "recipes:\n"
                                      "  aug-logreg: {extract: {views: jitter16}, heads: {logreg: {C: 1.0}}}\n"
                                      "  ss3: {extract: {views: spatial, spatial_levels: 3}}\n"
                                      "  ss3-again: {extract: {spatial_levels: 3, views: spatial}, heads: {l2: {power: 2}}}\n"
                                      "  ss2: {extract: {views: spatial, spatial_levels: 2}}\n"))
    key = lambda name: R.resolve(name, params).features_key("oxford5k", params["extract"])  # noqa: E731
    assert key("aug-logreg") == key("cnnaug") == "jitter16"
    assert key("ss3") == key("ss3-again") and key("ss3").startswith("spatial-") and len(key("ss3")) == len("spatial-") + 8
    assert key("ss2") != key("ss3") and key("ss2").startswith("spatial-")
    ctx = Ctx(str(tmp_path / "params.yaml"))
    assert ctx.features_dir("b", "oxford5k", R.resolve("ss3", params)) == tmp_path.joinpath(
        "features", "b", "oxford5k", key("ss3")).relative_to(tmp_path)
    assert ctx.features_dir("b", "digits") == tmp_path.joinpath("features/b/digits/none").relative_to(tmp_path)


def test_evaluation_options_are_one_checked_object_with_the_few_shot_bounds():
    assert R.EvalOptions.from_mapping("-E", {"shots": [5, 1], "shots_trials": 3}).fewshot.as_dict() == {
        "shots": [1, 5], "shots_trials": 3, "shots_seed": 0}
    assert R.EvalOptions().fewshot is None and R.EvalOptions().distractors is None
    base = R.EvalOptions.from_mapping("r", {"shots": [1, 5], "shots_trials": 3})
    assert R.EvalOptions.from_mapping("-E", {"shots": None}, base) == R.EvalOptions()  # few-shot turned off
    assert R.EvalOptions.from_mapping("-E", {"shots_seed": 4}, base).shots == (1, 5)
    for values, says in (({"shots": 0}, "-E: shots[0]: 0 is not allowed"), ({"shots": []}, "-E: shots"),
                         ({"shots": [1, 1]}, "distinct"), ({"shots": [1], "shots_trials": 1001}, "shots_trials"),
                         ({"shots": [1], "shots_trials": 0}, "shots_trials"), ({"shots": 1, "shots_seed": -1}, "shots_seed"),
                         ({"shots_trials": 3}, "without shots"), ({"shotz": 1}, "did you mean 'shots'"),
                         ({"distractors": 3}, "-E: distractors: 3 is not allowed")):
        with pytest.raises(UserError) as err:
            R.EvalOptions.from_mapping("-E", values)
        assert says in str(err.value) and "\n" not in str(err.value), (values, str(err.value))


def test_multilabel_and_retrieval_sets_refuse_shots_and_other_sets_refuse_distractors(tmp_path):
    shots, dis = R.EvalOptions(shots=(1,)), R.EvalOptions(distractors="revisitop1m")
    for name in ("voc2007", "oxford5k"):
        with pytest.raises(UserError, match=rf"^recipe x: shots: .*needs a multi-class data set; {name} is"):
            shots.check_for(plugins.create("dataset", name, data_root=tmp_path), "recipe x")
    with pytest.raises(UserError, match=r"^-E: distractors: .*digits is a multiclass data set; leave distractors out"):
        dis.check_for(plugins.create("dataset", "digits"), "-E")
    with pytest.raises(UserError, match="revisitop1m is itself a distractor set"):
        dis.check_for(plugins.create("dataset", "revisitop1m", data_root=tmp_path))
    dis.check_for(plugins.create("dataset", "roxford5k", data_root=tmp_path))  # a retrieval set takes them


# -- user recipes in params.yaml, checked as the file is read ----------------------------------------------


@pytest.mark.parametrize("text, says", [
    ("recipes: {mine: {extrct: {views: jitter16}}}\n", "recipes.mine: unknown key 'extrct' (did you mean 'extract'?)"),
    ("recipes: {mine: {extract: {views: bogus}}}\n", "recipes.mine: extract.views (--views): 'bogus' is not allowed"),
    ("recipes: {mine: {extract: {veiws: spatial}}}\n", "did you mean 'views'"),
    ("recipes: {mine: {extract: {batch_size: 8}}}\n", "batch_size only changes how fast features are made"),
    ("recipes: {mine: {extract: {spatial_levels: 3000}}}\n", "from 1 to 8"),
    ("recipes: {mine: {heads: {svm: 2}}}\n", "recipes.mine: heads.svm"),
    ("recipes: {mine: {evaluation: {shots: [1], shots_trials: 100000}}}\n", "evaluation: shots_trials: 100000"),
    ("recipes: {mine: {datasets: {holidays: {views: jitter16}}}}\n", "datasets.holidays: unknown key 'views'"),
    ("recipes: {mine: {paper_row: CNNaug}}\n", "paper_row"),
    ("recipes: {cnnaug: {extract: {views: jitter16}}}\n", "recipes.cnnaug: cnnaug is a built-in recipe"),
    ("recipes: {a/b: {}}\n", "'a/b' is not a recipe name"),
    ("recipes: {..: {}}\n", "'..' is not a recipe name"),
    ("recipes: {CNNaug: {}}\n", "recipes.CNNaug: cnnaug is a built-in recipe"),
    ("recipes: {mine: {}, Mine: {}}\n", "recipes.Mine: it differs from 'mine' only in case"),
    ("recipes: [cnnaug]\n", "recipes"),
    ("recipe: cnnaugg\n", "recipe: recipe 'cnnaugg': no such recipe (did you mean 'cnnaug'?)"),
    ("recipe: 3\n", "recipe: 3 is not allowed"),
])
def test_a_user_recipe_is_checked_as_params_yaml_is_read(tmp_path, text, says):
    with pytest.raises(UserError) as err:
        P.load(_params(tmp_path, text))
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(tmp_path / "params.yaml") in str(err.value)


def test_a_head_override_of_a_recipe_is_checked_when_the_head_is_built(workdir, tiny_digits):
    _params(workdir, "recipes: {mine: {heads: {svm: {powr: 2}}}}\n")
    line = _one_line(_cli("evaluate", "-b", "tiny", "-d", "digits", "--recipe", "mine", "--head", "svm",
                          "--features", str(tiny_digits)))
    assert "powr" in line and "power" in line
    assert not (workdir / "metrics").exists()


# -- through the command line ----------------------------------------------------------------------------


def test_recipe_cnnaug_extracts_and_evaluates_digits_into_its_own_result(workdir):
    done = _cli("extract", "-b", "tiny", "-d", "digits", "--recipe", "cnnaug", "--runtime", "eager", "--no-progress")
    assert done.exit_code == 0, done.output
    assert (workdir / "features/tiny/digits/jitter16/train.h5").exists()
    done = _cli("evaluate", "-b", "tiny", "-d", "digits", "--recipe", "cnnaug", "--head", "svm", "-H", "C=1",
                "--no-extract-missing")
    assert done.exit_code == 0, done.output
    base = workdir / "metrics/tiny/digits/cnnaug"
    run = json.loads((base / "svm.run.json").read_text())
    assert run["recipe"] == "cnnaug" and run["recipe_spec"]["extract"] == {"views": "jitter16"}
    assert run["recipe_spec"]["heads"] == {"svm": {"power": 2.0, "C": 1}} and run["head_params"]["power"] == 2.0
    assert run["recipe_spec"]["paper_row"] == "paper: OverFeat CNNaug-SVM"
    assert run["provenance"]["features_dir"] == "features/tiny/digits/jitter16"
    assert read_results(base / "svm.json")["recipe"] == "cnnaug"
    # the default recipe beside it: its own features (extracted as missing) and its own result
    done = _cli("evaluate", "-b", "tiny", "-d", "digits", "--head", "svm", "-H", "C=1")
    assert done.exit_code == 0, done.output
    assert "extracting first (cnn: views none)" in done.output
    assert (workdir / "features/tiny/digits/none/test.h5").exists()
    plain = json.loads((workdir / "metrics/tiny/digits/cnn/svm.run.json").read_text())
    assert plain["recipe"] == "cnn" and plain["head_params"]["power"] == 1.0
    # an explicit flag overrides the recipe's extraction, and the features key says what was extracted
    done = _cli("extract", "-b", "tiny", "-d", "digits", "--recipe", "cnnaug", "--views", "none", "--split", "test",
                "--runtime", "eager", "--no-progress")
    assert done.exit_code == 0 and "features/tiny/digits/none/test.h5: up to date" in done.output, done.output


def test_E_shots_evaluates_few_shot_and_D_shots_says_to_use_E(workdir, tiny_digits):
    done = _cli("evaluate", "-b", "tiny", "-d", "digits", "--head", "svm", "-H", "C=1", "--features", str(tiny_digits),
                "-E", "shots=2", "-E", "shots_trials=1")
    assert done.exit_code == 0, done.output
    numbers = json.loads((workdir / "metrics/tiny/digits/cnn/svm.json").read_text())
    run = json.loads((workdir / "metrics/tiny/digits/cnn/svm.run.json").read_text())
    assert "accuracy@2shot" in numbers and run["fewshot"]["shots"] == [2]
    assert run["recipe_spec"]["evaluation"] == {"shots": [2], "shots_trials": 1, "shots_seed": 0, "distractors": None}
    line = _one_line(_cli("evaluate", "-b", "tiny", "-d", "digits", "--head", "svm", "--features", str(tiny_digits),
                          "-D", "shots=2"))
    assert "shots is an evaluation option of the recipe: use -E shots=2 or a recipe" in line
    _params(workdir, "dataset_options: {digits: {distractors: revisitop1m}}\n")
    line = _one_line(_cli("extract", "-b", "tiny", "-d", "digits"))
    assert "use -E distractors=revisitop1m or a recipe" in line and "dataset_options.digits" in line


def test_a_recipe_with_shots_in_params_yaml_and_its_refusals_name_the_recipe(workdir, tiny_digits):
    _params(workdir, "recipes: {fewshot: {evaluation: {shots: [1], shots_trials: 1}}}\n")
    done = _cli("evaluate", "-b", "tiny", "-d", "digits", "--recipe", "fewshot", "--head", "svm", "-H", "C=1",
                "--features", str(tiny_digits))
    assert done.exit_code == 0, done.output
    assert "accuracy@1shot" in json.loads((workdir / "metrics/tiny/digits/fewshot/svm.json").read_text())
    line = _one_line(_cli("evaluate", "-b", "tiny", "-d", "digits", "--head", "svm", "--features", str(tiny_digits),
                          "-E", "distractors=revisitop1m"))
    assert line.endswith("recipe cnn with -E: distractors: distractor images are appended to a retrieval database; "
                         "digits is a multiclass data set; leave distractors out")
    assert "did you mean 'shots'" in _one_line(_cli("evaluate", "-b", "tiny", "-d", "digits", "--features",
                                                    str(tiny_digits), "-E", "shotz=1"))
    assert "no such recipe" in _one_line(_cli("extract", "-b", "tiny", "-d", "digits", "--recipe", "nope"))
    assert not (workdir / "features").exists()


def test_cnnbench_recipes_lists_built_in_and_user_recipes_with_their_contents(workdir):
    _params(workdir, "recipe: mine\nrecipes: {mine: {extract: {views: jitter16}, paper_row: 'paper: OverFeat CNNaug-SVM',"
                     " description: my jitter}}\n")
    out = CliRunner().invoke(main, ["recipes"], terminal_width=200)
    assert out.exit_code == 0, out.output
    for text in ("cnnaug-ss", "cnn-ss", "mine", "params.yaml", "built in", "jitter16", "my jitter", "default: mine",
                 "paper: OverFeat CNN-ss"):
        assert text in out.output, text


# -- identity of older results ---------------------------------------------------------------------------


def test_a_record_without_a_recipe_is_read_as_cnn(tiny_digits, tmp_path):
    record = evaluate(tiny_digits, plugins.create("dataset", "digits"), plugins.create("head", "svm", C=1.0), "svm")
    assert "recipe" not in record  # the library names a recipe only when given one
    path, run_path = write_results(record, tmp_path / "metrics/tiny/digits/svm.json")
    back = read_results(path)
    assert back["recipe"] == "cnn" and back["recipe_spec"] == R.resolve("cnn").to_json()
    write_results({**record, "recipe": "cnnaug", "recipe_spec": R.resolve("cnnaug").to_json()}, path)
    assert read_results(path)["recipe_spec"]["heads"] == {"svm": {"power": 2.0}}
    write_results({**record, "recipe": 3}, path)
    with pytest.raises(ResultError, match=r"svm\.run\.json: 'recipe' is the number 3, not a name"):
        read_results(path)


def test_features_of_other_views_than_the_recipes_are_refused_not_evaluated(workdir, tiny_digits):
    line = _one_line(_cli("evaluate", "-b", "tiny", "-d", "digits", "--recipe", "cnnaug", "--head", "svm",
                          "--features", str(tiny_digits)))
    assert "holds views 'none', but evaluate asked for 'jitter16'" in line and "--recipe cnnaug --overwrite" in line
    assert not (workdir / "metrics").exists()
