"""The paper's metrics, each on a small case computed by hand following the official definition."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench.metrics import (holidays_average_precision, mean_auc, multilabel_map, oxford_average_precision,
                              retrieval_scores, roc_auc, trapezoid_average_precision, ukbench_top4,
                              voc07_average_precision)


def compute_ap_cpp(pos, amb, ranked_list):
    """A line-by-line port of Oxford's compute_ap.cpp, the reference for the hand cases below."""
    old_recall, old_precision, ap, intersect_size, j = 0.0, 1.0, 0.0, 0, 0
    for r in ranked_list:
        if r in amb:
            continue
        if r in pos:
            intersect_size += 1
        recall = intersect_size / len(pos)
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall, old_precision = recall, precision
        j += 1
    return ap


def test_voc07_11_point_ap_by_hand():
    # ranked by score: P N P N (difficult image ignored) ; 2 positives
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.65])
    labels = np.array([1, 0, 1, 0, -1])
    # precision/recall along the ranking: (1, .5) (.5, .5) (.667, 1) (.5, 1)
    # t = 0 .. 0.5 -> max precision at recall >= t = 1 (6 points); t = 0.6 .. 1 -> 2/3 (5 points)
    assert voc07_average_precision(scores, labels) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_voc07_difficult_images_count_neither_way():
    labels = np.array([1, -1, 0, 1])
    with_difficult_on_top = np.array([0.5, 0.99, 0.4, 0.3])
    assert voc07_average_precision(with_difficult_on_top, labels) == voc07_average_precision(
        np.array([0.5, -5, 0.4, 0.3]), labels)
    assert np.isnan(voc07_average_precision(np.array([0.1, 0.2]), np.array([0, -1])))


def test_multilabel_map_averages_classes_with_positives():
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.5, 0.3]])
    labels = np.array([[1, 0], [0, 0], [0, -1]])  # class 1 has no positive: left out
    m, per = multilabel_map(scores, labels)
    assert m == pytest.approx(1.0) and np.isnan(per[1])
    m, _ = multilabel_map(np.array([[0.1], [0.9]]), np.array([[1], [0]]), kind="exact")
    assert m == pytest.approx(0.5)  # positive at rank 2: precision 1/2


def test_auc_counts_correctly_ordered_pairs_ties_half():
    # positives 0.8, 0.4 ; negatives 0.4, 0.1 -> pairs: (0.8>0.4) (0.8>0.1) (0.4=0.4: 1/2) (0.4>0.1) = 3.5 / 4
    assert roc_auc(np.array([0.8, 0.4, 0.4, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)
    m, per = mean_auc(np.array([[0.8, 1.0], [0.1, 0.0], [0.5, 0.5]]), np.array([[1, 0], [0, 1], [-1, -1]]))
    assert per.tolist() == [1.0, 0.0] and m == pytest.approx(0.5)


def test_oxford_ap_with_junk_follows_compute_ap():
    good_ok = {"a", "b", "c"}
    junk = {"j"}
    ranked = ["a", "x", "j", "b", "y", "z"]  # c never retrieved
    # compute_ap by hand (junk skipped, ranks renumbered): a: recall 1/3, precision 1 -> (1/3)(1+1)/2
    # x: no recall step; b (3rd non-junk): recall 2/3, precision 2/3, old precision 1/2 -> (1/3)(1/2+2/3)/2
    hand = (1 / 3) * (1 + 1) / 2 + (1 / 3) * (1 / 2 + 2 / 3) / 2
    assert oxford_average_precision(ranked, good_ok, junk) == pytest.approx(hand)
    assert compute_ap_cpp(good_ok, junk, ranked) == pytest.approx(hand)
    # junk moved to the top changes nothing
    assert oxford_average_precision(["j"] + [r for r in ranked if r != "j"], good_ok, junk) == pytest.approx(hand)


def test_oxford_ap_matches_compute_ap_on_random_rankings():
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(40)]
    for _ in range(20):
        pos = set(rng.choice(ids, 7, replace=False))
        amb = set(rng.choice([i for i in ids if i not in pos], 3, replace=False))
        ranked = list(rng.permutation(ids)[:30])
        assert oxford_average_precision(ranked, pos, amb) == pytest.approx(compute_ap_cpp(pos, amb, ranked))


def test_trapezoid_ap_of_hits_is_compute_ap_with_junk_already_removed():
    # the case above with the junk dropped: a x b y z as hits, 3 positives (c never retrieved)
    hand = (1 / 3) * (1 + 1) / 2 + (1 / 3) * (1 / 2 + 2 / 3) / 2
    assert trapezoid_average_precision([True, False, True, False, False], 3) == pytest.approx(hand)
    # a first miss: the first hit adds (1/2)(0 + 1/2)/2, old precision 0 after the miss
    assert trapezoid_average_precision(np.array([False, True]), 2) == pytest.approx(0.5 * (0 + 0.5) / 2)
    assert trapezoid_average_precision([], 2) == 0.0 and np.isnan(trapezoid_average_precision([True], 0))
    rng = np.random.default_rng(1)
    for _ in range(10):
        hits = rng.random(25) < 0.3
        n_pos = int(hits.sum()) + int(rng.integers(0, 3))
        ids = [f"i{k}" for k in range(25)]
        pos = {i for i, h in zip(ids, hits) if h} | {f"missing{k}" for k in range(n_pos - int(hits.sum()))}
        if pos:
            assert trapezoid_average_precision(hits, n_pos) == pytest.approx(compute_ap_cpp(pos, set(), ids))


def test_retrieval_scores_remove_junk_exclude_the_query_and_count_it_for_ukbench():
    db = np.array(["q1", "a", "j", "b", "x"], dtype=object)
    order = np.array([[0, 2, 4, 1, 3],   # q1: itself, junk, x, a, b
                      [4, 3, 1, 0, 2],   # q2: x, b, a, q1, j
                      [0, 1, 2, 3, 4]])  # q3: no ground truth
    gt = {"q1": {"positives": ["a", "b", "c"], "junk": ["j"]}, "q2": {"positives": ["b"], "exclude_self": True}}
    ap, top4 = retrieval_scores(order, db, ["q1", "q2", "q3"], gt)
    # q1: q1 (miss), x (miss), a, b: recall 1/3 at precision 1/3, 2/3 at 2/4 (c never retrieved)
    q1 = compute_ap_cpp({"a", "b", "c"}, {"j"}, ["q1", "j", "x", "a", "b"])
    assert ap[0] == pytest.approx(q1) and ap[1] == pytest.approx(0.5 * (0 + 0.5))  # q2: x then b
    # top 4 after junk: q1 -> q1 x a b: a, b and q1 itself (in the database, not excluded) = 3; q2 -> b = 1
    assert top4[:2].tolist() == [3.0, 1.0] and np.isnan(ap[2]) and np.isnan(top4[2])
    ap_excl, top4_excl = retrieval_scores(order, db, ["q1", "q2"], gt, exclude_self=True)
    assert ap_excl[0] == pytest.approx(compute_ap_cpp({"a", "b", "c"}, {"j", "q1"}, ["x", "a", "b"]))
    assert top4_excl[0] == 2.0
    ap_def, _ = retrieval_scores(order[:1], db, ["q1"], {"q1": gt["q1"]}, exclude_self_default=True)
    assert ap_def[0] == pytest.approx(ap_excl[0])


def test_holidays_ap_excludes_the_query():
    # query q ranks itself first; its one positive p comes second -> AP 1 once q is removed
    assert holidays_average_precision(["q", "p", "n"], {"q", "p"}, "q") == pytest.approx(1.0)
    # without removal the trapezoid would start at rank 1 with a hit on q
    # q removed: n (precision 0) then p (recall 1, precision 1/2): trapezoid (0 + 1/2) / 2
    assert holidays_average_precision(["q", "n", "p"], {"p"}, "q") == pytest.approx(0.25)


def test_ukbench_top4_counts_the_object_s_images_in_the_first_four():
    assert ukbench_top4(["q", "a", "x", "b", "c"], {"q", "a", "b", "c"}) == 3
    assert ukbench_top4(["q", "a", "b", "c"], {"q", "a", "b", "c"}) == 4
