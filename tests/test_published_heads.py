"""The svm and l2 heads as published, on synthetic FeatureSets whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.head import FeatureSet
from cnnbench.images import view_names
from cnnbench.retrieval import Whitening, rank_database, spatial_distance, spatial_view_levels


def _ids(n, prefix="i"):
    return np.array([f"{prefix}{k}" for k in range(n)], dtype=object)


# -- spatial search ---------------------------------------------------------------------------------


def test_spatial_distance_by_hand():
    # query: 2 patches; database image 0: patches at (0,0),(3,4); image 1: (1,0),(0,10)
    q = np.array([[0.0, 0.0], [3.0, 4.0]])
    db = np.array([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 10.0]]])
    # image 0: each query patch has an exact match -> mean(0, 0) = 0
    # image 1: patch (0,0): min(1, 10) = 1; patch (3,4): min(|(2,4)|, |(3,-6)|) = min(4.472, 6.708)
    expected = [0.0, (1.0 + np.sqrt(20.0)) / 2]
    np.testing.assert_allclose(spatial_distance(q, db), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(spatial_distance(q[None], db)[0], expected, rtol=1e-5, atol=1e-5)


def test_spatial_view_names_give_each_patch_its_level_and_other_layouts_none():
    assert spatial_view_levels(view_names("spatial", 3)).tolist() == [1] + [2] * 4 + [3] * 9
    assert spatial_view_levels(view_names("jitter16")) is None and spatial_view_levels(None) is None
    assert spatial_view_levels(["l1_r0_c0", "image"]) is None


def test_whitening_clips_the_dimension_and_whitens():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 50)).astype(np.float32)
    w = Whitening(dim=500).fit(x)
    assert w.out_dim == 19  # 20 descriptors span at most 19 centred directions
    y = (np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True)) - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(y.T), np.eye(19), atol=1e-3)  # whitened before the last normalisation
    out = w.transform(x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.sign(Whitening(dim=None, power=2.0).fit(x).transform(x)) == np.sign(x))


def test_faiss_ranks_like_exact_search():
    rng = np.random.default_rng(1)
    db, q = rng.standard_normal((300, 32)).astype(np.float32), rng.standard_normal((20, 32)).astype(np.float32)
    exact, _ = rank_database(q, db, index="exact", batch=7)
    viafaiss, _ = rank_database(q, db, index="faiss")
    np.testing.assert_array_equal(exact, viafaiss)
    top, _ = rank_database(q, db, index="exact", top_k=10)
    np.testing.assert_array_equal(top, exact[:, :10])


# -- l2 head on retrieval data sets -----------------------------------------------------------------


def _retrieval_sets(patches=None, seed=0, views=None):
    """10 objects x 3 database images; one query per object, the query close to its object.
    ``patches``: (database, query) views per image; ``views``: their names, e.g. spatial levels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, 64)) * 2
    db_obj = np.repeat(np.arange(10), 3)
    db = centres[db_obj] + 0.5 * rng.standard_normal((30, 64))
    q = centres + 0.5 * rng.standard_normal((10, 64))
    if patches:
        db = db[:, None, :] + 0.3 * rng.standard_normal((30, patches[0], 64))
        q = q[:, None, :] + 0.3 * rng.standard_normal((10, patches[1], 64))
    db_ids, q_ids = _ids(30, "d"), _ids(10, "q")
    gt = {q_ids[o]: {"positives": [db_ids[k] for k in np.flatnonzero(db_obj == o)][:2],
                     "junk": [db_ids[k] for k in np.flatnonzero(db_obj == o)][2:]} for o in range(10)}
    database = FeatureSet(db.astype(np.float32), np.full(30, -1), db_ids, [], views=views and views[0])
    queries = FeatureSet(q.astype(np.float32), np.full(10, -1), q_ids, [], {"ground_truth": gt}, views and views[1])
    return database, queries


def test_l2_retrieval_is_perfect_on_separated_objects_and_junk_is_ignored():
    database, queries = _retrieval_sets()
    head = plugins.create("head", "l2", pca_dim=16)
    out = head.evaluate(database, queries, "retrieval", metric="mAP")
    assert out["mAP"] == pytest.approx(1.0) and out["n_queries"] == 10 and out["pca_dim_used"] == 16


def test_l2_retrieval_ap_follows_compute_ap_on_a_crafted_database():
    # 1-D features (no PCA): query at 0; database at distances 1 (x), 2 (junk j), 3 (positive a), 4 (positive b)
    db = FeatureSet(np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]], np.float32), np.full(4, -1),
                    np.array(["x", "j", "a", "b"], dtype=object), [])
    q = FeatureSet(np.array([[1.0, 0.0]], np.float32), np.full(1, -1), np.array(["q"], dtype=object), [],
                   {"ground_truth": {"q": {"positives": ["a", "b", "c"], "junk": ["j"]}}})
    # L2-normalised, the order by angle is the same: x, j, a, b. compute_ap: x (0 hits), a: recall 1/3,
    # precision 1/2, old precision 0 -> (1/3)(0+1/2)/2; b: recall 2/3, precision 2/3 -> (1/3)(1/2+2/3)/2
    hand = (1 / 3) * (0 + 1 / 2) / 2 + (1 / 3) * (1 / 2 + 2 / 3) / 2
    out = plugins.create("head", "l2", pca_dim=None).evaluate(db, q, "retrieval", metric="mAP")
    assert out["mAP"] == pytest.approx(hand)


def test_l2_holidays_excludes_the_query_and_ukbench_counts_it():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    gt = {"a": {"positives": ["a", "b"]}, "c": {"positives": ["d"]}}
    db = FeatureSet(x, np.full(4, -1), ids, [])
    queries = FeatureSet(x[[0, 2]], np.full(2, -1), ids[[0, 2]], [], {"ground_truth": gt, "exclude_self": True})
    out = plugins.create("head", "l2", pca_dim=None).evaluate(db, queries, "retrieval", metric="mAP")
    assert out["mAP"] == pytest.approx(1.0)  # the query itself (rank 1) is removed, b / d come first
    # without exclusion, query c ranks itself (not a positive) first: AP of d at rank 2 = (0 + 1/2)/2 ...
    out = plugins.create("head", "l2", pca_dim=None, exclude_self=False).evaluate(db, queries, "retrieval", metric="mAP")
    assert out["mAP"] == pytest.approx((1.0 + 0.25) / 2)
    queries.extras.pop("exclude_self")
    out = plugins.create("head", "l2", pca_dim=None).evaluate(db, queries, "retrieval", metric="top4")
    # query a: top 4 = a, b, d, c -> a and b; query c: c counted as itself + d -> 2 each, i.e. 2/4
    assert out["top4_score"] == pytest.approx(2.0) and out["top4"] == pytest.approx(0.5)


def test_l2_spatial_search_keeps_the_pyramid_levels_asked_for():
    spatial4 = view_names("spatial", 4)
    database, queries = _retrieval_sets(patches=(30, 30), views=(spatial4, spatial4))
    head = plugins.create("head", "l2", pca_dim=32, levels=[4, 3])
    assert head._patches(queries, 1).shape[1] == 14 and head._patches(database, 0).shape[1] == 30
    assert head.evaluate(database, queries, "retrieval", metric="mAP")["mAP"] > 0.9
    out = plugins.create("head", "l2", pca_dim=None).evaluate(database, queries, "retrieval", metric="mAP")
    assert out["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="levels"):
        plugins.create("head", "l2", levels=[4, 4]).evaluate(
            *_retrieval_sets(patches=(30, 14), views=(spatial4, view_names("spatial", 3))), "retrieval")
    # spatial search on FAISS (Flat below 100k vectors, candidates re-scored exactly) ranks as exact search
    pytest.importorskip("faiss")
    on_faiss = plugins.create("head", "l2", pca_dim=8, index="faiss").evaluate(database, queries, "retrieval")
    exact = plugins.create("head", "l2", pca_dim=8).evaluate(database, queries, "retrieval")
    assert on_faiss["mAP"] == pytest.approx(exact["mAP"])


def test_l2_pca_fit_on_an_independent_feature_file(tmp_path):
    database, queries = _retrieval_sets()
    path = _write_feature_file(tmp_path / "paris.h5", np.random.default_rng(3).standard_normal((40, 64)).astype(np.float32))
    out = plugins.create("head", "l2", pca_dim=16, pca_fit=str(path)).evaluate(database, queries, "retrieval")
    assert 0 < out["mAP"] <= 1 and out["pca_dim_used"] == 16
    with pytest.raises(FileNotFoundError, match="pca_fit"):
        plugins.create("head", "l2", pca_fit=str(tmp_path / "missing.h5")).evaluate(database, queries, "retrieval")


def _write_feature_file(path, feats):
    """A feature file as the store writes it (with its checksums), from given rows."""
    from cnnbench import store

    w = store.StoreWriter(path, {"test": "pca_fit"})
    w.append([f"p{k}" for k in range(len(feats))], np.full(len(feats), -1), {"pre_logits": feats}, next_item=len(feats))
    return w.commit({"default_layer": "pre_logits", "layers": ["pre_logits"], "classes": [], "backbone": "x"})


def test_l2_retrieval_errors_name_the_problem():
    database, queries = _retrieval_sets()
    queries.extras.clear()
    with pytest.raises(ValueError, match="ground_truth"):
        plugins.create("head", "l2").evaluate(database, queries, "retrieval")
    with pytest.raises(ValueError, match="pca_dim"):
        plugins.create("head", "l2", pca_dim=0)


# -- svm head ---------------------------------------------------------------------------------------


def _multilabel(n=60, classes=4, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, classes)) < 0.4).astype(np.int8)
    protos = rng.standard_normal((classes, dim)) * 2
    x = y @ protos + 0.3 * rng.standard_normal((n, dim)) + 3
    return x.astype(np.float32), y


def test_svm_multilabel_voc_map_and_ignored_labels():
    xa, ya = _multilabel(n=120)
    x, y, xt, yt = xa[:60], ya[:60], xa[60:], ya[60:].copy()
    y_ign = y.copy()
    y_ign[:10, 0] = -1  # e.g. VOC difficult: neither positive nor negative for class 0
    yt[:5, 1] = -1
    train = FeatureSet(x, y_ign, _ids(60), list("abcd"))
    test = FeatureSet(xt, yt, _ids(60), list("abcd"))
    head = plugins.create("head", "svm", C_grid=[0.1, 1.0, 10.0])
    out = head.evaluate(train, test, "multilabel", metric="mAP")
    assert out["mAP"] > 0.95 and out["mean_auc"] > 0.95 and set(out) >= {"AP/a", "AP/d", "C"}
    assert head.primary_metric_for("multilabel", "mean_auc") == "mean_auc"
    # a class whose training rows are all -1 but one positive would break training; ignored rows really are ignored:
    y_bad = y.copy()
    y_bad[:, 2] = np.where(y[:, 2] == 1, -1, y[:, 2])  # class 2: no positive left for training
    out2 = plugins.create("head", "svm", C=1.0).evaluate(FeatureSet(x, y_bad, _ids(60), list("abcd")), test,
                                                      "multilabel", metric="mean_auc")
    assert out2["AP/a"] == pytest.approx(out["AP/a"], abs=0.05)


def test_svm_views_are_trained_on_and_summed_at_test_time():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 3
    y = np.repeat(np.arange(3), 10)
    views = centres[y][:, None, :] + rng.standard_normal((30, 4, 16))
    train = FeatureSet(views.astype(np.float32), y, _ids(30), list("abc"))
    out = plugins.create("head", "svm", C=1.0).evaluate(train, train, "multiclass", metric="accuracy")
    assert out["accuracy"] == 1.0
    out = plugins.create("head", "svm", C=1.0, view_pooling="max", power=2.0).evaluate(train, train, "multiclass")
    assert out["accuracy"] == 1.0


def test_batched_solver_matches_liblinear():
    from sklearn.svm import LinearSVC

    from cnnbench.linsvm import BatchedLinearSVM
    from cnnbench.head import l2_normalize

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 40))
    y = np.repeat(np.arange(5), 40)
    x = l2_normalize((centres[y] + 1.5 * rng.standard_normal((200, 40))).astype(np.float32))
    ours = BatchedLinearSVM(tol=1e-6).fit(x, y, 1.0)
    ref = LinearSVC(C=1.0, loss="squared_hinge", tol=1e-8, max_iter=100000).fit(x, y)
    dec_ref = ref.decision_function(x)
    np.testing.assert_allclose(ours.decision_function(x), dec_ref, atol=2e-3)


def test_svm_balanced_and_liblinear_options_run():
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 6)
    x = (rng.standard_normal((36, 8)) + 2 * y[:, None]).astype(np.float32)
    fs = FeatureSet(x, y, _ids(36), ["a", "b"])
    for opts in ({"class_weight": "balanced"}, {"solver": "liblinear"}, {"multiclass": "ovo"},
                 {"loss": "hinge"}):
        out = plugins.create("head", "svm", C=1.0, **opts).evaluate(fs, fs, "multiclass", metric="mean_class_accuracy")
        assert out["mean_class_accuracy"] > 0.8, opts
    with pytest.raises(ValueError, match="view_pooling"):
        plugins.create("head", "svm", view_pooling="mean")


def test_the_primary_metric_follows_the_head_and_the_data_set():
    from cnnbench.evaluate import _primary_metric
    from cnnbench.head import Head

    class PlainHead(Head):
        def evaluate(self, train, test, task, *, metric=None):
            return {}

    class DS:
        task, metric = "retrieval", "top4"

    assert _primary_metric(plugins.create("head", "l2"), DS) == "top4"
    DS.task, DS.metric = "multilabel", "mean_auc"
    assert _primary_metric(plugins.create("head", "svm"), DS) == "mean_auc"
    assert _primary_metric(PlainHead(), DS) == "mean_auc"


def test_l2_on_the_real_oxford5k_subset_ground_truth(shared_data):
    """Real ids and ground truth (queries.json); features crafted so the answer is known:
    each database image sits at its landmark's centre, so a query finds its relevant images
    first unless they belong to another landmark."""
    root = shared_data / "oxford5k-subset"
    if not (root / "queries.json").exists():
        pytest.skip(f"{root}/queries.json not found")
    queries = json.loads((root / "queries.json").read_text())
    db_ids = np.array(sorted(p.name for p in (root / "jpg").glob("*.jpg")), dtype=object)
    rng = np.random.default_rng(0)
    landmark_of_query = {q["id"]: k for k, q in enumerate(queries)}
    relevant_to = {}
    for q in queries:
        for r in q["relevant"]:
            relevant_to.setdefault(r, landmark_of_query[q["id"]])
    dim = len(queries) + 1
    db = np.zeros((len(db_ids), dim), np.float32)
    for i, name in enumerate(db_ids):
        db[i, relevant_to.get(name, dim - 1)] = 1.0
    db += 0.01 * rng.standard_normal(db.shape).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)  # unit length: L2 order = dot-product order
    q_feats = np.eye(dim, dtype=np.float32)[: len(queries)]
    gt = {q["id"]: {"positives": [r for r in q["relevant"] if r != q["query"]], "junk": [q["query"]]} for q in queries}
    q_ids = np.array([q["id"] for q in queries], dtype=object)
    out = plugins.create("head", "l2", pca_dim=None).evaluate(
        FeatureSet(db, np.full(len(db), -1), db_ids, []),
        FeatureSet(q_feats, np.full(len(q_ids), -1), q_ids, [], {"ground_truth": gt}), "retrieval", metric="mAP")
    # queries whose relevant images are also relevant to an earlier query lose those (they sit elsewhere)
    from cnnbench.metrics import oxford_average_precision

    order = np.argsort(-(q_feats @ db.T), axis=1, kind="stable")
    expected = np.mean([oxford_average_precision(db_ids[order[k]], set(gt[q["id"]]["positives"]), set(gt[q["id"]]["junk"]))
                        for k, q in enumerate(queries)])
    assert out["n_queries"] == len(queries) and out["mAP"] == pytest.approx(expected, abs=1e-6) and out["mAP"] > 0.5
