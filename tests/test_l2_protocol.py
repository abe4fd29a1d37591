"""The l2 head reads the stored view layout instead of guessing it, and PCA-whitening on a small
fitting set is never silent (see the rule in the head's module docstring)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, l2_normalize
from cnnbench.images import view_names
from cnnbench.metrics import retrieval_scores
from cnnbench.retrieval import rank_database


def _sets(n_db_views=None, n_q_views=None, db_views=None, q_views=None, n_objects=10, per_object=3, dim=64, seed=0):
    """``n_objects`` objects x ``per_object`` database images, one query per object close to it; with
    ``n_*_views``, a view axis of that length named by ``*_views`` (None: unnamed)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_objects, dim)) * 2
    obj = np.repeat(np.arange(n_objects), per_object)
    db = centres[obj] + 0.5 * rng.standard_normal((len(obj), dim))
    q = centres + 0.5 * rng.standard_normal((n_objects, dim))
    if n_db_views:
        db = db[:, None, :] + 0.3 * rng.standard_normal((len(obj), n_db_views, dim))
        q = q[:, None, :] + 0.3 * rng.standard_normal((n_objects, n_q_views, dim))
    db_ids = np.array([f"d{k}" for k in range(len(obj))], dtype=object)
    q_ids = np.array([f"q{k}" for k in range(n_objects)], dtype=object)
    gt = {q_ids[o]: {"positives": list(db_ids[obj == o]), "junk": []} for o in range(n_objects)}
    database = FeatureSet(db.astype(np.float32), np.full(len(obj), -1), db_ids, [], views=db_views)
    queries = FeatureSet(q.astype(np.float32), np.full(n_objects, -1), q_ids, [], {"ground_truth": gt}, q_views)
    return database, queries


def _l2(**opts):
    return plugins.create("head", "l2", **opts)


# -- the view layout, from the stored names -------------------------------------------------------------


def test_by_default_each_side_keeps_every_level_it_was_extracted_with():
    database, queries = _sets(14, 5, view_names("spatial", 3), view_names("spatial", 2))
    head = _l2(pca_dim=None)
    assert head.params["levels"] is None
    assert head._patches(database, 0).shape[1] == 14 and head._patches(queries, 1).shape[1] == 5
    explicit = _l2(pca_dim=None, levels=[3, 2]).evaluate(database, queries, "retrieval", metric="mAP")
    assert head.evaluate(database, queries, "retrieval", metric="mAP") == explicit


def test_explicit_levels_select_views_by_their_level_names():
    database, queries = _sets(14, 14, view_names("spatial", 3), view_names("spatial", 3))
    head = _l2(pca_dim=None, levels=[2, 1])
    kept = head._patches(database, 0)
    np.testing.assert_array_equal(kept, database.features[:, :5])  # level 1 and the 2 x 2 grid of level 2
    assert head._patches(queries, 1).ndim == 2  # one patch left: the whole image, one descriptor
    # the names decide, not the count: 5 views named as level 1 and 4 level-3 patches keep only the first at [1, 1]
    odd = ["l1_r0_c0", "l3_r0_c0", "l3_r0_c1", "l3_r1_c0", "l3_r1_c1"]
    database, queries = _sets(5, 5, odd, odd)
    np.testing.assert_array_equal(_l2(levels=[1, 1])._patches(database, 0), _l2()._patches(
        FeatureSet(database.features[:, :1], database.labels, database.ids, []), 0))


def test_levels_deeper_than_stored_are_a_one_line_error_naming_the_option():
    database, queries = _sets(14, 5, view_names("spatial", 3), view_names("spatial", 2))
    with pytest.raises(UserError, match=r"l2: levels: \[3, 3\] asks for 3 pyramid levels of the query images, "
                                        r"extracted with 2") as err:
        _l2(levels=[3, 3]).evaluate(database, queries, "retrieval", metric="mAP")
    assert "\n" not in str(err.value) and "spatial_levels: 3" in str(err.value)
    with pytest.raises(UserError, match="database images, extracted with 3"):
        _l2(levels=[4, 2]).evaluate(database, queries, "retrieval", metric="mAP")


def test_views_without_names_are_generic_multi_vectors_searched_by_min_mean_distance(caplog):
    # 30 unnamed views: the size of a 4-level pyramid, but nothing is guessed from the count
    database, queries = _sets(30, 30)
    head = _l2(pca_dim=None)
    assert head._patches(database, 0).shape[1] == 30 and head._patches(queries, 1).shape[1] == 30
    out = head.evaluate(database, queries, "retrieval", metric="mAP")
    # the same as ranking every view of every image by min over database views, mean over query views
    order, _ = rank_database(l2_normalize(queries.features), l2_normalize(database.features))
    ap, _ = retrieval_scores(order, database.ids, list(queries.ids), queries.extras["ground_truth"])
    assert out["mAP"] == pytest.approx(float(np.mean(ap))) == pytest.approx(1.0)
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        assert _l2(pca_dim=None, levels=[4, 3]).evaluate(database, queries, "retrieval", metric="mAP") == out
    assert "levels: [4, 3] ignored" in caplog.text and "unnamed" in caplog.text


def test_jitter16_views_are_all_kept_and_levels_do_not_apply(caplog):
    names = view_names("jitter16")
    database, queries = _sets(16, 16, names, names)
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        head = _l2(pca_dim=None, levels=[4, 3])
        assert head._patches(database, 0).shape[1] == 16 and head._patches(queries, 1).shape[1] == 16
    assert "not spatial sub-patches (image, crop_tl, crop_tr, …)" in caplog.text
    with pytest.raises(UserError, match="view names"):
        _l2()._patches(FeatureSet(database.features, database.labels, database.ids, [], views=names[:3]), 0)


# -- PCA-whitening on small fitting sets -----------------------------------------------------------------


def test_auto_skips_pca_on_a_small_database_and_says_so_in_the_log_and_the_diagnostics(caplog):
    database, queries = _sets()  # 30 database images of 64 dimensions: far fewer than 2 x 500
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        out = _l2().evaluate(database, queries, "retrieval", metric="mAP")
    assert out["pca_small_set"] == 1.0 and out["pca_fit_size"] == 30.0 and out["pca_dim_used"] == 64.0
    assert "pca_dim: auto: 30 descriptors (pca_fit: database) are too few" in caplog.text
    plain = _l2(pca_dim=None).evaluate(database, queries, "retrieval", metric="mAP")
    assert out["mAP"] == plain["mAP"] and plain["pca_small_set"] == 0.0 and plain["pca_fit_size"] == 0.0
    assert {"pca_small_set", "pca_fit_size", "pca_dim_used"} <= set(_l2().diagnostics)  # not averaged as metrics


def test_an_explicit_pca_dim_on_a_small_set_is_honoured_with_a_warning(caplog):
    database, queries = _sets()
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        out = _l2(pca_dim=16).evaluate(database, queries, "retrieval", metric="mAP")  # 30 < 2 x 16
    assert out["pca_dim_used"] == 16.0 and out["pca_small_set"] == 1.0 and out["pca_fit_size"] == 30.0
    assert "pca_dim: 16 fitted on only 30 descriptors" in caplog.text and "kept as asked" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        out = _l2(pca_dim=15).evaluate(database, queries, "retrieval", metric="mAP")  # 30 = 2 x 15: enough
    assert out["pca_dim_used"] == 15.0 and out["pca_small_set"] == 0.0 and not caplog.text
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):  # class data sets say so too
        out = _l2(pca_dim=20).evaluate(database, database, "multiclass")
    assert out["pca_small_set"] == 1.0 and "pca_dim: 20 fitted on only 30" in caplog.text


def test_auto_keeps_the_papers_pca_500_on_a_large_enough_set_counting_views_as_descriptors(caplog):
    # 100 images x 10 unnamed views = 1000 descriptors of 512 dimensions: not small
    database, queries = _sets(10, 10, n_objects=20, per_object=5, dim=512)
    with caplog.at_level(logging.WARNING, logger="cnnbench.heads.l2"):
        out = _l2().evaluate(database, queries, "retrieval", metric="mAP")
    assert out["pca_dim_used"] == 500.0 and out["pca_small_set"] == 0.0 and out["pca_fit_size"] == 1000.0
    assert not caplog.text and 0 < out["mAP"] <= 1
