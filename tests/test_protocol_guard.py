"""Protocol guard: the test set never influences a hyperparameter. For every classification head
(svm, logreg, knn), permuting the TEST labels leaves the chosen hyperparameter (C by cross-validation;
for knn the fixed k's votes) and every prediction unchanged. A deliberately leaky selection (C or k
chosen on the test set by hand) does change under the same permutation: the guard can fail."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.head import FeatureSet

HEADS = ("svm", "logreg", "knn")
C_GRID = [0.01, 0.1, 1.0, 10.0, 100.0]


def _blobs(n_per_class, seed, classes=4, dim=10, spread=1.6):
    """Overlapping classes around fixed centres (the seed draws the images): C and k matter."""
    centres = np.random.default_rng(123).standard_normal((classes, dim)) * 1.5
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * np.random.default_rng(seed).standard_normal((len(y), dim))
    return FeatureSet(x.astype(np.float32), y, np.array([f"{seed}-{i}" for i in range(len(y))]),
                      [f"c{k}" for k in range(classes)])


TRAIN, TEST = _blobs(15, seed=1), _blobs(10, seed=2)


def _permuted(test: FeatureSet, seed: int) -> FeatureSet:
    return FeatureSet(test.features, np.random.default_rng(seed).permutation(test.labels), test.ids, test.classes)


def _head(name: str, **opts):
    if name in ("svm", "logreg"):
        opts.setdefault("C_grid", C_GRID)
    if name == "knn":
        opts.setdefault("k", [1, 5, 15])
    return plugins.create("head", name, **opts)


def _fit_predict(name: str, train: FeatureSet, test: FeatureSet, monkeypatch, **opts):
    """(chosen hyperparameters, {setting: predicted classes}, metrics) of one head on one problem."""
    head = _head(name, **opts)
    if name == "knn":  # k is fixed, not chosen: its votes per k are the predictions
        dec = head.decision_values(train, test, "multiclass")
        return {"k": list(dec)}, {k: v.argmax(1) for k, v in dec.items()}, head.evaluate(train, test, "multiclass")
    if name == "logreg":
        dec, info = head.decision_values(train, test, "multiclass")
        return {"C": info["C"]}, {"C": dec.argmax(1)}, head.evaluate(train, test, "multiclass")
    # svm exposes no predictions: record what it scores, through the accuracy its shared scoring calls
    from cnnbench_plugins.heads import _common

    seen = []
    real = _common.accuracy
    monkeypatch.setattr(_common, "accuracy", lambda y, pred: seen.append(np.asarray(pred).copy()) or real(y, pred))
    out = head.evaluate(train, test, "multiclass")
    monkeypatch.setattr(_common, "accuracy", real)
    return {"C": out["C"]}, {"C": seen[-1]}, out  # the last call scores the test images (CV folds come first)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("perm_seed", [0, 1])
def test_permuting_test_labels_changes_no_hyperparameter_and_no_prediction(name, perm_seed, monkeypatch):
    shuffled = _permuted(TEST, perm_seed)
    assert not np.array_equal(shuffled.labels, TEST.labels)
    chosen, pred, out = _fit_predict(name, TRAIN, TEST, monkeypatch)
    chosen_p, pred_p, out_p = _fit_predict(name, TRAIN, shuffled, monkeypatch)
    assert chosen == chosen_p
    assert pred.keys() == pred_p.keys() and all(np.array_equal(pred[s], pred_p[s]) for s in pred)
    # the scores on permuted labels are the unchanged predictions scored against those labels
    first = next(iter(pred))
    assert out_p["accuracy"] == pytest.approx(np.mean(pred[first] == shuffled.labels))
    assert out["accuracy"] == pytest.approx(np.mean(pred[first] == TEST.labels))


def test_the_svm_spy_sees_the_test_predictions(monkeypatch):
    """The svm guard reads predictions through its accuracy call: they must be the test images'."""
    _, pred, out = _fit_predict("svm", TRAIN, TEST, monkeypatch)
    assert len(pred["C"]) == len(TEST) and out["accuracy"] == pytest.approx(np.mean(pred["C"] == TEST.labels))


def test_C_is_chosen_by_cross_validation_from_the_grid_not_fixed():
    for name in ("svm", "logreg"):
        out = _head(name).evaluate(TRAIN, TEST, "multiclass")
        assert out["C"] in C_GRID


def _leaky(name: str, train: FeatureSet, test: FeatureSet):
    """The mistake the guard exists for: the setting with the best TEST score, and the test scores."""
    if name == "knn":
        out = _head(name).evaluate(train, test, "multiclass")
        scores = {k: out[f"accuracy@k={k}"] for k in (1, 5, 15)}
    else:
        scores = {c: _head(name, C=c).evaluate(train, test, "multiclass")["accuracy"] for c in C_GRID}
    return max(scores, key=lambda s: (scores[s], -s)), scores


@pytest.mark.parametrize("name", HEADS)
def test_the_guard_is_sensitive_a_setting_chosen_on_the_test_set_changes(name):
    best, scores = _leaky(name, TRAIN, TEST)
    changed = []
    for seed in range(3):
        best_p, scores_p = _leaky(name, TRAIN, _permuted(TEST, seed))
        assert scores_p != scores  # test scores always see the labels
        changed.append(best_p != best)
    assert any(changed), (name, best, scores)  # the leaky choice moves with the test labels



@pytest.mark.parametrize("name", ["svm", "logreg"])
def test_c_is_chosen_on_the_data_sets_validation_split_where_its_protocol_names_one(name, monkeypatch):
    """Flowers-102 (train_on: trainval): C is scored on the official ``val`` images, fitted on ``train``,
    then refitted on both; with ``tune_on: cv`` (or without a validation split) by cross-validation."""
    from cnnbench.evaluate import _gather

    trial = plugins.create("dataset", "flowers102", data_root="/nonexistent").trials({})[0]
    assert trial.validation == ("val",)
    sets = {"train": _blobs(12, seed=1), "val": _blobs(6, seed=3), "test": TEST}
    train = _gather(sets, trial.train, trial.validation)
    assert len(train) == 72 and train.validation.tolist() == [False] * 48 + [True] * 24
    assert train.subset(np.arange(40, 52)).validation.tolist() == [False] * 8 + [True] * 4
    assert _gather(sets, trial.train).validation is None and _gather(sets, trial.test, trial.validation).validation is None

    seen = []
    head = _head(name)
    real = type(head)._folds
    monkeypatch.setattr(type(head), "_folds", lambda self, *a: seen.append(real(self, *a)) or seen[-1])
    head.evaluate(train, TEST, "multiclass", metric="mean_class_accuracy")
    [[(fit, score)]] = seen
    assert fit.tolist() == list(range(48)) and score.tolist() == list(range(48, 72))

    seen.clear()
    _head(name, tune_on="cv").evaluate(train, TEST, "multiclass", metric="mean_class_accuracy")
    assert len(seen[0]) == 3 and sorted(np.concatenate([va for _, va in seen[0]]).tolist()) == list(range(72))
