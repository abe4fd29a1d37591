"""Metrics on hand-computed cases, and the two heads on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.head import FeatureSet
from cnnbench.metrics import accuracy, mean_class_accuracy, ranked_average_precision


def test_mean_class_accuracy_weighs_classes_equally():
    y = np.array([0, 0, 0, 0, 1])
    p = np.array([0, 0, 0, 0, 0])
    assert accuracy(y, p) == pytest.approx(0.8)
    assert mean_class_accuracy(y, p) == pytest.approx(0.5)  # (4/4 + 0/1) / 2


def test_ranked_average_precision_by_hand():
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert ranked_average_precision(np.array([1, 0, 1, 0]))[0] == pytest.approx((1 + 2 / 3) / 2)
    # a third relevant item never retrieved counts as precision 0
    assert ranked_average_precision(np.array([[1, 0, 1, 0]]), n_relevant=[3])[0] == pytest.approx((1 + 2 / 3) / 3)
    assert np.isnan(ranked_average_precision(np.array([0, 0]))[0])


def _blobs(n_per_class=20, classes=3, dim=16, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.standard_normal((len(y), dim))
    return FeatureSet(x.astype(np.float32), y, np.array([str(i) for i in range(len(y))], dtype=object),
                      [str(c) for c in range(classes)])


def test_svm_separates_separable_classes_and_reports_the_chosen_C():
    head = plugins.create("head", "svm", C_grid=[0.1, 1.0], cv_folds=3)
    out = head.evaluate(_blobs(seed=0), _blobs(seed=0, n_per_class=10), "multiclass")
    assert out["accuracy"] == 1.0 and out["mean_class_accuracy"] == 1.0 and out["C"] in (0.1, 1.0)


def test_svm_fixed_C_skips_cross_validation():
    head = plugins.create("head", "svm", C=2.0)
    assert head.evaluate(_blobs(), _blobs(n_per_class=5), "multiclass")["C"] == 2.0


def test_l2_retrieval_excludes_the_query_and_is_perfect_on_tight_clusters():
    head = plugins.create("head", "l2")
    out = head.evaluate(_blobs(), _blobs(n_per_class=5, spread=0.01), "multiclass")
    assert out["mAP"] == pytest.approx(1.0) and out["nn_accuracy"] == 1.0


def test_l2_retrieval_by_hand():
    # 1-D unit vectors: a and b same class, c other. Query a ranks b then c -> AP 1;
    # query c ranks (a, b) before nothing relevant -> no positives besides itself -> NaN, ignored.
    x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.1, 0.995]], np.float32)
    y = np.array([0, 0, 1, 0])
    fs = FeatureSet(x, y, np.array(list("abcd"), dtype=object), ["0", "1"])
    out = plugins.create("head", "l2").evaluate(fs, fs, "multiclass")
    # a: ranks b(rel), d(rel), c -> 1;  b: a(rel), d(rel)... d=(0.1,0.995): b·d=0.677, b·a=0.8 -> 1
    # d: ranks c(no), b(rel), a(rel) -> (1/2 + 2/3)/2;  c: only class-1 image -> NaN (skipped)
    assert out["mAP"] == pytest.approx((1 + 1 + (1 / 2 + 2 / 3) / 2) / 3)
