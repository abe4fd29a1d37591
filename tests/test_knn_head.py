"""The knn head: DINO's weighted vote worked out by hand, several k in one pass, multi-label label
averages that ignore -1, test labels that change nothing, bad options as one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet


def _fs(points, labels, classes=("A", "B")):
    x = np.asarray(points, dtype=np.float32)
    return FeatureSet(x, np.asarray(labels), np.array([f"i{k}" for k in range(len(x))], dtype=object), list(classes))


# Five training images on the unit circle and one query q = (1, 0). Cosine similarities to q:
#   a = (1, 0)      class A   s = 1.0
#   b = (0.8, 0.6)  class B   s = 0.8
#   c = (0.6, 0.8)  class B   s = 0.6
#   d = (0, 1)      class A   s = 0.0
#   e = (-1, 0)     class A   s = -1.0
TRAIN = _fs([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [-1, 0]], [0, 1, 1, 0, 0])
QUERY = _fs([[2, 0]], [0])  # not unit length: L2-normalised to (1, 0) first


def test_weighted_vote_by_hand_the_temperature_decides():
    # k = 3: neighbours a (A), b (B), c (B); a plain majority would say B.
    # T = 0.1: A gets exp(1.0/0.1) = e^10 = 22026, B gets e^8 + e^6 = 2981 + 403 = 3384  -> A.
    # The head divides every weight by exp(s_max / T) = e^10 (same votes up to one factor per query):
    # A = 1, B = e^-2 + e^-4 = 0.1353 + 0.0183 = 0.1536.
    votes = plugins.create("head", "knn", k=3, T=0.1).decision_values(TRAIN, QUERY, "multiclass")[3]
    np.testing.assert_allclose(votes[0], [1.0, math.exp(-2) + math.exp(-4)], rtol=1e-5)
    assert plugins.create("head", "knn", k=3, T=0.1).evaluate(TRAIN, QUERY, "multiclass")["accuracy"] == 1.0
    # T = 1: A gets e^1 = 2.718, B gets e^0.8 + e^0.6 = 2.226 + 1.822 = 4.048 -> B.
    out = plugins.create("head", "knn", k=3, T=1.0).evaluate(TRAIN, QUERY, "multiclass")
    assert out["accuracy"] == 0.0  # the query is an A
    votes = plugins.create("head", "knn", k=3, T=1.0).decision_values(TRAIN, QUERY, "multiclass")[3]
    np.testing.assert_allclose(votes[0], [1.0, math.exp(-0.2) + math.exp(-0.4)], rtol=1e-5)


def test_several_k_in_one_pass_the_first_is_the_primary():
    # T = 1. k = 1: a alone -> A (right). k = 3: B wins, as above (wrong). k = 5: A gets
    # e^1 + e^0 + e^-1 = 2.718 + 1 + 0.368 = 4.086 against B's 4.048 -> A (right).
    head = plugins.create("head", "knn", k=[3, 1, 5], T=1.0)
    out = head.evaluate(TRAIN, QUERY, "multiclass", metric="mean_class_accuracy")
    assert out["accuracy@k=1"] == 1.0 and out["accuracy@k=3"] == 0.0 and out["accuracy@k=5"] == 1.0
    assert out["accuracy"] == out["accuracy@k=3"] and out["mean_class_accuracy"] == out["mean_class_accuracy@k=3"]
    assert head.primary_metric_for("multiclass", "mean_class_accuracy") == "mean_class_accuracy"


def test_defaults_are_dino_s():
    head = plugins.create("head", "knn")
    assert head.ks == [20] and head.T == 0.07 and head.params["k"] == 20


def test_a_k_above_the_training_set_uses_every_image(caplog):
    out = plugins.create("head", "knn", k=[5, 20], T=1.0).evaluate(TRAIN, QUERY, "multiclass")
    assert out["accuracy@k=20"] == out["accuracy@k=5"] == 1.0 and "every training image votes" in caplog.text


def test_multilabel_scores_are_weighted_label_averages_ignoring_minus_one():
    # Query (1, 0), T = 1, k = 3: weights (divided by e^1) a: 1, b: e^-0.2 = 0.8187, c: e^-0.4 = 0.6703.
    # label 0: a=1, b=0, c=1       -> (1 + 0.6703) / (1 + 0.8187 + 0.6703)
    # label 1: a=-1, b=1, c=0      -> a is not labelled: 0.8187 / (0.8187 + 0.6703)
    # label 2: a=-1, b=-1, c=-1    -> no labelled neighbour: 0
    labels = np.array([[1, -1, -1], [0, 1, -1], [1, 0, -1], [0, 0, 1], [0, 1, 1]], dtype=np.int8)
    train = _fs(TRAIN.features, labels, classes=("x", "y", "z"))
    query = _fs([[1, 0]], np.array([[1, 0, 1]], dtype=np.int8), classes=("x", "y", "z"))
    scores = plugins.create("head", "knn", k=3, T=1.0).decision_values(train, query, "multilabel")[3][0]
    wa, wb, wc = 1.0, math.exp(-0.2), math.exp(-0.4)
    np.testing.assert_allclose(scores, [(wa + wc) / (wa + wb + wc), wb / (wb + wc), 0.0], rtol=1e-5)


def _blobs(n_per_class=10, classes=3, dim=6, seed=0):
    """Images around the same class centres whatever the seed (the seed draws the images)."""
    centres = np.random.default_rng(99).standard_normal((classes, dim)) * 2
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + np.random.default_rng(seed).standard_normal((len(y), dim))
    return FeatureSet(x.astype(np.float32), y, np.array([f"i{k}" for k in range(len(y))], dtype=object),
                      [f"c{k}" for k in range(classes)])


def test_multilabel_is_scored_with_the_data_set_s_metric_and_breakdown():
    rng = np.random.default_rng(1)
    train, test = _blobs(seed=2), _blobs(seed=3, n_per_class=4)
    ytr = (rng.random((len(train), 4)) < 0.4).astype(np.int8)
    ytr[:, 0] = train.labels == 0
    ytr[rng.random(ytr.shape) < 0.1] = -1
    yte = (rng.random((len(test), 4)) < 0.4).astype(np.int8)
    yte[:, 0] = test.labels == 0
    classes = ["p", "q", "r", "s"]
    out = plugins.create("head", "knn", k=[5, 10]).evaluate(
        FeatureSet(train.features, ytr, train.ids, classes), FeatureSet(test.features, yte, test.ids, classes),
        "multilabel", metric="mAP")
    assert {"mAP", "mean_auc", "AP/p", "AP/s", "mAP@k=5", "mAP@k=10", "mean_auc@k=10"} <= set(out)
    assert out["AP/p"] == pytest.approx(1.0)  # label p is exactly class 0, whose images cluster
    assert out["mAP"] == out["mAP@k=5"]


def test_test_labels_change_no_prediction():
    train, test = _blobs(seed=4), _blobs(seed=5, n_per_class=5)
    shuffled = FeatureSet(test.features, np.random.default_rng(0).permutation(test.labels), test.ids, test.classes)
    head = plugins.create("head", "knn", k=[1, 7])
    dec, dec_shuffled = (head.decision_values(train, t, "multiclass") for t in (test, shuffled))
    assert all(np.array_equal(dec[k], dec_shuffled[k]) for k in (1, 7))
    out = head.evaluate(train, shuffled, "multiclass")
    assert out["accuracy@k=7"] == pytest.approx(np.mean(dec[7].argmax(1) == shuffled.labels))


def test_chunks_bound_memory_and_change_nothing():
    train, test = _blobs(seed=6), _blobs(seed=7, n_per_class=7)
    whole = plugins.create("head", "knn", k=[3, 9], chunk_size=1000).decision_values(train, test, "multiclass")
    chunked = plugins.create("head", "knn", k=[3, 9], chunk_size=4).decision_values(train, test, "multiclass")
    assert all(np.allclose(whole[k], chunked[k]) for k in (3, 9))


def test_views_are_averaged_into_one_vector_per_image():
    train, test = _blobs(seed=8), _blobs(seed=9, n_per_class=3)
    rng = np.random.default_rng(0)
    v1, v2 = rng.standard_normal(train.features.shape), rng.standard_normal(train.features.shape)
    v1, v2 = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (v1, v2))
    views = FeatureSet(np.stack([v1, v2], 1).astype(np.float32), train.labels, train.ids, train.classes)
    mean = FeatureSet(((v1 + v2) / 2).astype(np.float32), train.labels, train.ids, train.classes)
    head = plugins.create("head", "knn", k=5)
    a, b = head.decision_values(views, test, "multiclass")[5], head.decision_values(mean, test, "multiclass")[5]
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("opts, where", [
    ({"k": 0}, "knn: k[0]"), ({"k": [5, 0]}, "knn: k[1]"), ({"k": "x"}, "knn: k[0]"), ({"k": []}, "knn: k"),
    ({"T": 0}, "knn: T"), ({"T": -1}, "knn: T"), ({"T": "hot"}, "knn: T"), ({"chunk_size": 0}, "knn: chunk_size"),
    ({"device": "gpu"}, "knn: device"), ({"ap": "11pt"}, "knn: ap"), ({"kk": 5}, "did you mean 'k'"),
])
def test_bad_options_are_one_line_user_errors_naming_the_option(opts, where):
    with pytest.raises(UserError) as err:
        plugins.create("head", "knn", **opts)
    msg = str(err.value)
    assert where in msg and "\n" not in msg and ("expected" in msg or "known keys" in msg), msg


def test_wrong_kind_of_data_set_is_a_user_error():
    with pytest.raises(UserError, match="knn: .*retrieval.*l2"):
        plugins.create("head", "knn").evaluate(TRAIN, QUERY, "retrieval")
