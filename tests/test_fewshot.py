"""Few-shot protocol: k training images per class in seeded, class-balanced draws; a class too small is
refused; results are the mean ± std over draws, named <metric>@<k>shot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnbench import fewshot as F
from cnnbench import plugins
from cnnbench.dataset import Trial
from cnnbench.errors import UserError
from cnnbench.evaluate import evaluate, read_results, write_results
from cnnbench.recipes import EvalOptions


def _labels(per_class=(8, 9, 10), seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(labels)


def test_each_class_gets_exactly_k_images_drawn_from_its_own():
    labels = _labels()
    for k in (1, 3, 8):
        pos = F.draw(labels, k, seed=0, t=0)
        assert len(pos) == len(set(pos.tolist())) == 3 * k
        assert np.bincount(labels[pos], minlength=3).tolist() == [k, k, k]


def test_draws_are_seeded_differ_across_draws_and_not_on_the_order_of_shots():
    labels = _labels()
    a = [F.draw(labels, 2, seed=0, t=t, trial="seed0") for t in range(4)]
    again = [F.draw(labels, 2, seed=0, t=t, trial="seed0") for t in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, again))  # same across runs
    assert len({tuple(x) for x in a}) == 4  # draws differ across t
    assert not np.array_equal(F.draw(labels, 2, seed=1, t=0, trial="seed0"), a[0])  # the seed matters
    assert not np.array_equal(F.draw(labels, 2, seed=0, t=0, trial="seed1"), a[0])  # so does the trial
    # the seed of (k, t) is its own: drawing 5 shots first changes nothing for 2 shots
    F.draw(labels, 5, seed=0, t=0, trial="seed0")
    assert np.array_equal(F.draw(labels, 2, seed=0, t=0, trial="seed0"), a[0])


def test_a_class_with_too_few_training_images_is_refused_naming_it():
    labels = _labels((8, 3, 10))
    with pytest.raises(UserError) as err:
        F.draw(labels, 5, seed=0, t=0, trial="seed0", class_names=["a", "b", "c"], dataset="toy")
    msg = str(err.value)
    assert "class 'b' has 3 training images" in msg and "5-shot" in msg and "seed0" in msg and "\n" not in msg
    with pytest.raises(UserError, match="class 'c' has 0 training images"):  # in the test set, not in training
        F.draw(labels[labels != 2], 1, seed=0, t=0, required=[0, 1, 2], class_names=["a", "b", "c"])


def test_positions_map_back_to_rows_of_each_stored_split():
    sel = {"all": np.array([3, 5, 7, 9]), "extra": None}
    out = F.select(sel, {"all": 12, "extra": 3}, np.array([0, 3, 5]))
    assert out["all"].tolist() == [3, 9] and out["extra"].tolist() == [1]
    assert F.select({"all": np.array([3, 5])}, {"all": 12}, np.array([1])) == {"all": np.array([5])}


@pytest.mark.parametrize("opts, where", [
    ({"shots": 0}, "-E: shots[0]"), ({"shots": [1, "x"]}, "-E: shots[1]"), ({"shots": []}, "-E: shots"),
    ({"shots": [1, 1]}, "distinct"), ({"shots": 1, "shots_trials": 0}, "-E: shots_trials"),
    ({"shots": 1, "shots_seed": -1}, "-E: shots_seed"), ({"shots_trials": 3}, "without shots"),
    ({"shotz": 1}, "did you mean 'shots'"),
])
def test_bad_options_are_one_line_user_errors(opts, where):
    with pytest.raises(UserError) as err:
        EvalOptions.from_mapping("-E", opts)
    assert where in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_options_are_evaluation_options_and_multilabel_or_retrieval_sets_refuse_them(tmp_path):
    opts = EvalOptions.from_mapping("-E", {"shots": [5, 1], "shots_trials": 3, "shots_seed": 7})
    assert opts.fewshot == F.FewShot((1, 5), 3, 7)
    ds = plugins.create("dataset", "flowers17")  # the data set knows nothing of them
    assert ds.options() == {"seeds": [0, 1, 2], "train_on": "trainval"} and not hasattr(ds, "fewshot")
    opts.check_for(ds)
    for name in ("voc2007", "oxford5k"):
        with pytest.raises(UserError, match="needs a multi-class data set"):
            opts.check_for(plugins.create("dataset", name, data_root=tmp_path))
    with pytest.raises(UserError, match="digits: unknown key 'shots'"):  # a data set's own options only
        plugins.create("dataset", "digits", shots=1)


class _Mean:
    """A head whose score is the mean of the training ids' numbers: it shows which images it trained on."""

    diagnostics = ("n_classes",)

    def evaluate(self, train, test, task, *, metric=None):
        return {"accuracy": float(np.mean([int(i) for i in train.ids])), "n_classes": len(set(train.labels))}


def test_mean_and_std_are_over_draws_and_trials_per_k(monkeypatch):
    from cnnbench import evaluate as E
    from cnnbench.head import FeatureSet

    labels = _labels((6, 6, 6))
    sets = {"all": FeatureSet(np.zeros((18, 2), np.float32), labels, np.array([str(i) for i in range(18)]),
                              ["a", "b", "c"])}
    trials = [Trial("s0", {"all": np.arange(12)}, {"all": np.arange(12, 18)}),
              Trial("s1", {"all": np.arange(6, 18)}, {"all": np.arange(6)})]
    ds = plugins.create("dataset", "digits")
    means, spread, rec = E._fewshot(sets, trials, ds, _Mean(), EvalOptions(shots=(1, 2), shots_trials=3).fewshot)
    assert set(means) == set(spread) == {"accuracy@1shot", "accuracy@2shot"}  # diagnostics stay out
    assert [d["shots"] for d in rec["draws"]] == [1, 1, 1, 2, 2, 2] * 2
    for k in (1, 2):
        values = [d["accuracy"] for d in rec["draws"] if d["shots"] == k]
        assert len(values) == 6 and means[f"accuracy@{k}shot"] == pytest.approx(np.mean(values))
        assert spread[f"accuracy@{k}shot"] == pytest.approx(np.std(values))
    for d in rec["draws"]:
        assert d["n_train"] == 3 * d["shots"] and d["n_classes"] == 3 and len(d["ids_sha256"]) == 64
    assert rec["shots"] == [1, 2] and rec["shots_trials"] == 3 and rec["shots_seed"] == 0




def test_evaluate_on_digits_writes_few_shot_metrics_beside_the_full_result(tiny_digits, tmp_path):
    ds, opts = plugins.create("dataset", "digits"), EvalOptions(shots=(1, 5), shots_trials=2)
    record = evaluate(tiny_digits, ds, plugins.create("head", "svm", C=1.0), "svm", evaluation=opts)
    metrics_path, run_path = write_results(record, tmp_path / "m/tiny/digits/svm.json")
    numbers = json.loads(metrics_path.read_text())
    expected = {"accuracy", "mean_class_accuracy"}
    for k in (1, 5):
        for m in ("accuracy", "mean_class_accuracy"):
            expected |= {f"{m}@{k}shot", f"{m}@{k}shot_std"}
    assert set(numbers) == expected
    assert 0 <= numbers["accuracy@1shot"] <= 1 and numbers["accuracy@1shot_std"] >= 0
    run = json.loads(run_path.read_text())
    draws = run["fewshot"]["draws"]
    assert [(d["shots"], d["draw"], d["n_train"]) for d in draws] == [(1, 0, 10), (1, 1, 10), (5, 0, 50), (5, 1, 50)]
    assert draws[0]["ids_sha256"] != draws[1]["ids_sha256"] and all(d["C"] == 1.0 for d in draws)
    assert read_results(metrics_path)["fewshot"]["shots"] == [1, 5]
    again = evaluate(tiny_digits, ds, plugins.create("head", "svm", C=1.0), "svm", evaluation=opts)
    assert again["fewshot"]["draws"] == record["fewshot"]["draws"]  # seeded: the same draws and numbers

    knn = evaluate(tiny_digits, ds, plugins.create("head", "knn", k=[1, 3]), "knn", evaluation=opts)
    assert {"accuracy@k=1@1shot", "accuracy@k=1@5shot", "accuracy@k=3@5shot"} <= set(knn["metrics"])


def test_a_head_that_cannot_fit_so_few_images_says_which_draw(tiny_digits):
    ds = plugins.create("dataset", "digits")
    with pytest.raises(UserError) as err:  # C by cross-validation needs 2 images per class
        evaluate(tiny_digits, ds, plugins.create("head", "svm"), "svm", evaluation=EvalOptions(shots=(1,), shots_trials=1))
    assert "1-shot draw 0 of trial 'default'" in str(err.value) and "\n" not in str(err.value)
