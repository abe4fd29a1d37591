"""The logreg head: the batched solver minimises scikit-learn's objective, C is chosen on training
images only, views and multi-label sets follow the svm head's protocol, bad options are one line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cnnbench import plugins
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, l2_normalize
from cnnbench.logreg import BatchedLogisticRegression
from cnnbench.metrics import multilabel_map


def _problem(n=150, dim=8, classes=3, seed=0, spread=1.0):
    """Non-negative, L2-normalised features whose classes overlap (so C matters)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.abs(rng.standard_normal((n, dim)) * spread)
    x[np.arange(n), y % dim] += 1.0
    return l2_normalize(x).astype(np.float64), y


def _ids(n):
    return np.array([f"i{k}" for k in range(n)], dtype=object)


def _objective(W, b, X, y, C):
    """C · Σ cross-entropy + ½‖W‖², the objective of scikit-learn's LogisticRegression(C)."""
    z = X @ W + b
    z = z - z.max(1, keepdims=True)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    return C * ce.sum() + 0.5 * (W * W).sum()


@pytest.mark.parametrize("C", [0.5, 50.0])
def test_batched_solver_matches_scikit_learn_at_the_same_C(C):
    from sklearn.linear_model import LogisticRegression

    X, y = _problem()
    Xt, _ = _problem(seed=1)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y)
    ours = BatchedLogisticRegression(tol=1e-8, max_iter=5000).fit(X, y, C)
    assert ours.converged.all()
    W, b = ours.coef[0, :-1].numpy(), ours.coef[0, -1].numpy()
    # same predictions on unseen data, same weights, same objective
    assert (ours.decision_function(Xt).argmax(1) == ref.predict(Xt)).all()
    np.testing.assert_allclose(W.T, ref.coef_, atol=1e-4 * np.abs(ref.coef_).max())
    # the intercepts are defined up to a common shift (softmax): compare them centred
    scale = max(1, np.abs(b).max())
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-4 * scale)
    f_ours, f_ref = _objective(W, b, X, y, C), _objective(ref.coef_.T, ref.intercept_, X, y, C)
    assert f_ours == pytest.approx(f_ref, rel=1e-9)


def test_more_dimensions_than_images_still_matches_scikit_learn():
    # 40 images span 39 centred directions of 100: the solver drops the other 61 (their weights are 0)
    from sklearn.linear_model import LogisticRegression

    X, y = _problem(n=40, dim=100, spread=0.3)
    Xt, _ = _problem(n=40, dim=100, seed=1, spread=0.3)
    ref = LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000).fit(X, y)
    ours = BatchedLogisticRegression(tol=1e-8).fit(X, y, 10.0)
    np.testing.assert_allclose(ours.coef[0, :-1].numpy().T, ref.coef_, atol=1e-4 * np.abs(ref.coef_).max())
    assert (ours.decision_function(Xt).argmax(1) == ref.predict(Xt)).all()


def test_two_classes_are_the_binary_model_as_in_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    X, y = _problem(classes=2)
    y = np.where(y == 1, 4, 1)  # classes 1 and 4 of 6 outputs
    ref = LogisticRegression(C=5.0, tol=1e-10, max_iter=10_000).fit(X, y)
    ours = BatchedLogisticRegression(tol=1e-8).fit(X, y, 5.0, n_classes=6)
    np.testing.assert_allclose(ours.coef[0, :-1, 0].numpy(), ref.coef_[0], atol=1e-5)
    dec = ours.decision_function(X)
    # logits -z/2 and +z/2 for classes 1 and 4 (softmax = sigmoid), -inf for the classes never seen
    np.testing.assert_allclose(dec[:, 4] - dec[:, 1], ref.decision_function(X), atol=1e-5)
    assert np.isneginf(dec[:, [0, 2, 3, 5]]).all() and (dec.argmax(1) == ref.predict(X)).all()


def test_problems_fitted_together_equal_problems_fitted_alone():
    X, y = _problem(n=120)
    rows = np.stack([np.arange(120) % 3 != f for f in range(3)], 1)  # three folds' training rows
    together = BatchedLogisticRegression(tol=1e-8).fit(X, y, 3.0, rows=rows)
    for f in range(3):
        alone = BatchedLogisticRegression(tol=1e-8).fit(X[rows[:, f]], y[rows[:, f]], 3.0)
        np.testing.assert_allclose(together.coef[f].numpy(), alone.coef[0].numpy(), atol=1e-5)


def _multilabel(n=90, dim=6, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((n, dim)))
    y = (x[:, :labels] + 0.5 * rng.standard_normal((n, labels)) > 0.9).astype(np.int8)
    y[rng.random((n, labels)) < 0.2] = -1  # "difficult": in neither training nor scoring
    return l2_normalize(x).astype(np.float32), y


def test_multilabel_trains_one_binary_model_per_class_on_its_labelled_images_only():
    from sklearn.linear_model import LogisticRegression

    X, y = _multilabel()
    Xt, yt = _multilabel(seed=1)
    train, test = FeatureSet(X, y, _ids(len(y)), list("abc")), FeatureSet(Xt, yt, _ids(len(yt)), list("abc"))
    head = plugins.create("head", "logreg", C=4.0, tol=1e-8)
    dec, info = head.decision_values(train, test, "multilabel", metric="mAP")
    X64, Xt64 = X.astype(np.float64), Xt.astype(np.float64)  # scikit-learn would solve float32 input in float32
    ref = np.stack([LogisticRegression(C=4.0, tol=1e-10, max_iter=10_000).fit(X64[y[:, c] >= 0], y[y[:, c] >= 0, c])
                    .decision_function(Xt64) for c in range(3)], 1)
    np.testing.assert_allclose(dec, ref, atol=1e-4)
    out = head.evaluate(train, test, "multilabel", metric="mAP")
    assert out["mAP"] == pytest.approx(multilabel_map(ref, yt)[0]) and info["C"] == 4.0
    assert set(out) >= {"mAP", "mean_auc", "AP/a", "AP/b", "AP/c", "C"}
    # the reference solver does the same; C chosen by (unstratified, seeded) k-fold CV on the data set's metric
    dec_sk, _ = plugins.create("head", "logreg", C=4.0, tol=1e-8, solver="sklearn").decision_values(
        train, test, "multilabel")
    np.testing.assert_allclose(dec_sk, dec, atol=1e-4)
    cv = plugins.create("head", "logreg", C_grid=[1.0, 10.0]).evaluate(train, test, "multilabel", metric="mean_auc")
    assert cv["C"] in (1.0, 10.0) and {"cv_score@C=1", "cv_score@C=10"} <= set(cv)


def _blobs(n_per_class=12, classes=3, dim=8, seed=0, spread=0.8):
    """Images around the same class centres whatever the seed (the seed draws the images)."""
    centres = np.abs(np.random.default_rng(99).standard_normal((classes, dim)) * 2)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * np.random.default_rng(seed).standard_normal((len(y), dim))
    return FeatureSet(x.astype(np.float32), y, _ids(len(y)), [f"c{k}" for k in range(classes)])


def test_C_is_chosen_on_training_images_only_test_labels_change_nothing():
    train, test = _blobs(seed=0), _blobs(seed=1, n_per_class=6)
    rng = np.random.default_rng(0)
    shuffled = FeatureSet(test.features, rng.permutation(test.labels), test.ids, test.classes)
    head = plugins.create("head", "logreg", C_grid=[0.1, 1.0, 10.0, 100.0])
    dec, info = head.decision_values(train, test, "multiclass", metric="accuracy")
    dec_shuffled, info_shuffled = head.decision_values(train, shuffled, "multiclass", metric="accuracy")
    assert info == info_shuffled and np.array_equal(dec, dec_shuffled)  # same C, same CV scores, same logits
    out = head.evaluate(train, shuffled, "multiclass", metric="accuracy")
    assert out["accuracy"] == pytest.approx(np.mean(dec.argmax(1) == shuffled.labels))
    assert out["C"] == info["C"] and set(info) == {"C", "cv_score@C=0.1", "cv_score@C=1", "cv_score@C=10",
                                                   "cv_score@C=100"}
    assert set(head.diagnostics) == set(info)  # per-trial details, not metrics averaged into the metrics file


def test_both_solvers_choose_the_same_C_and_predict_the_same():
    train, test = _blobs(seed=2, spread=1.5), _blobs(seed=3, n_per_class=8, spread=1.5)
    outs = {}
    for solver in ("batched", "sklearn"):
        head = plugins.create("head", "logreg", C_grid=[0.1, 1.0, 10.0], solver=solver, tol=1e-8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs[solver] = head.decision_values(train, test, "multiclass", metric="mean_class_accuracy")
    (dec_b, info_b), (dec_s, info_s) = outs["batched"], outs["sklearn"]
    assert info_b["C"] == info_s["C"] and (dec_b.argmax(1) == dec_s.argmax(1)).all()
    assert all(info_b[k] == pytest.approx(info_s[k]) for k in info_b)


def test_views_train_one_row_each_and_sum_at_test_time():
    # two identical views per image double every loss term: the fit at C equals the one-view fit at 2C,
    # and the summed logits are twice the one-view logits
    train, test = _blobs(seed=4), _blobs(seed=5, n_per_class=5)
    two = FeatureSet(np.repeat(train.features[:, None], 2, 1), train.labels, train.ids, train.classes)
    two_test = FeatureSet(np.repeat(test.features[:, None], 2, 1), test.labels, test.ids, test.classes)
    dec2, _ = plugins.create("head", "logreg", C=3.0, tol=1e-9).decision_values(two, two_test, "multiclass")
    dec1, _ = plugins.create("head", "logreg", C=6.0, tol=1e-9).decision_values(train, test, "multiclass")
    np.testing.assert_allclose(dec2, 2 * dec1, atol=1e-4)


def test_cross_validation_folds_keep_the_views_of_an_image_together(monkeypatch):
    from cnnbench_plugins.heads import logreg

    seen = []
    fit = logreg._BatchedModel.fit
    monkeypatch.setattr(logreg._BatchedModel, "fit", lambda self, C, rows, warm=None: (seen.append(rows),
                                                                                        fit(self, C, rows, warm)))
    train = _blobs(seed=6)
    views = FeatureSet(np.stack([train.features, train.features + 0.01], 1), train.labels, train.ids, train.classes)
    plugins.create("head", "logreg", C_grid=[1.0]).evaluate(views, views, "multiclass")
    cv_rows, final_rows = seen
    assert cv_rows.shape == (2 * len(train), 3) and (cv_rows[0::2] == cv_rows[1::2]).all()  # image i: rows 2i, 2i+1
    assert (cv_rows.sum(1) == 2).all() and final_rows.all()  # each image held out once; the final fit uses all


@pytest.mark.parametrize("opts, where", [
    ({"C": 0}, "logreg: C"), ({"C": "abc"}, "logreg: C"), ({"C_grid": []}, "logreg: C_grid"),
    ({"C_grid": [1, -1]}, "logreg: C_grid[1]"), ({"cv_folds": 1}, "logreg: cv_folds"),
    ({"seed": -1}, "logreg: seed"), ({"max_iter": 0}, "logreg: max_iter"), ({"tol": 0}, "logreg: tol"),
    ({"solver": "newton"}, "logreg: solver"), ({"device": "gpu"}, "logreg: device"),
    ({"power": 0}, "logreg: power"), ({"view_pooling": "mean"}, "logreg: view_pooling"),
    ({"ap": "11pt"}, "logreg: ap"), ({"Cgrid": [1]}, "did you mean 'C_grid'"),
])
def test_bad_options_are_one_line_user_errors_naming_the_option(opts, where):
    with pytest.raises(UserError) as err:
        plugins.create("head", "logreg", **opts)
    msg = str(err.value)
    assert where in msg and "\n" not in msg and ("expected" in msg or "known keys" in msg), msg


def test_data_that_cannot_be_cross_validated_is_a_user_error_naming_the_class():
    train = FeatureSet(np.eye(5, 4, dtype=np.float32) + 0.1, np.array([0, 0, 0, 0, 1]), _ids(5), ["cat", "dog"])
    with pytest.raises(UserError, match=r"logreg: .*class 'dog' has 1 .*cv_folds: 3.*set a fixed C"):
        plugins.create("head", "logreg", cv_folds=3).evaluate(train, train, "multiclass")
    with pytest.raises(UserError, match="logreg: .*retrieval"):
        plugins.create("head", "logreg", C=1.0).evaluate(train, train, "retrieval")


def test_a_fit_that_runs_out_of_iterations_says_so(caplog):
    train, test = _blobs(seed=7), _blobs(seed=8, n_per_class=3)
    plugins.create("head", "logreg", C=100.0, max_iter=2).evaluate(train, test, "multiclass")
    assert "stopped before reaching tol" in caplog.text


def test_the_solver_runs_on_a_gpu_when_there_is_one():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    X, y = _problem()
    cpu = BatchedLogisticRegression(tol=1e-8).fit(X, y, 5.0)
    gpu = BatchedLogisticRegression(tol=1e-8, device="cuda").fit(X, y, 5.0)
    np.testing.assert_allclose(gpu.coef.cpu().numpy(), cpu.coef.numpy(), atol=1e-4)
