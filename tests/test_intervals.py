"""Intervals and paired tests (cnnbench.stats) as compare uses them: per-image outcomes kept by every
head, a t-interval over trials, a bootstrap over test images that covers the true value, McNemar
on a hand-counted case, and compare marking differences that are not significant."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench import outcomes, plugins, stats
from cnnbench.compare import build_table, load_records, to_long_csv, to_markdown
from cnnbench.evaluate import evaluate, write_results
from cnnbench.outcomes import Outcomes


def test_t_interval_of_three_trials_by_hand():
    # mean 0.9, s = 0.1, t(0.975, 2) = 4.3027: 0.9 ± 4.3027 · 0.1 / sqrt(3) = 0.9 ± 0.2484
    ci = stats.t_interval([0.8, 0.9, 1.0])
    assert (ci.low, ci.high) == pytest.approx((0.9 - 0.24841, 0.9 + 0.24841), abs=1e-5)
    assert ci.method == "trials" and ci.n == 3
    assert stats.t_interval([0.8]) is None  # one trial: no spread to speak of


def test_bootstrap_interval_covers_the_true_accuracy_about_95_in_100_times():
    rng = np.random.default_rng(7)
    truth, n_images, experiments = 0.8, 400, 200
    covered = 0
    for e in range(experiments):
        labels = np.zeros(n_images, dtype=int)
        predictions = np.where(rng.random(n_images) < truth, 0, 1)  # each image right with probability 0.8
        o = Outcomes([f"i{k}" for k in range(n_images)], labels=labels, predictions=predictions)
        ci = stats.bootstrap_interval([o], "accuracy", n=500, seed=e)
        covered += ci.low <= truth <= ci.high
    assert 0.90 <= covered / experiments <= 0.99


def test_bootstrap_is_seeded_and_recomputes_class_means_and_map_on_each_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    predictions = np.where(rng.random(60) < 0.7, labels, (labels + 1) % 4)
    o = Outcomes([str(k) for k in range(60)], labels=labels, predictions=predictions)
    a = stats.bootstrap_interval([o], "mean_class_accuracy", n=200, seed=3)
    assert a == stats.bootstrap_interval([o], "mean_class_accuracy", n=200, seed=3)
    # the vectorised class mean is the plain one on every resample
    idx = np.random.default_rng(1).integers(0, 60, (5, 60))
    assert stats._fast(o, "mean_class_accuracy", idx) == pytest.approx([o.metric("mean_class_accuracy", r) for r in idx])
    assert a.low <= o.metric("mean_class_accuracy") <= a.high
    # multi-label: per-class AP recomputed on the resample (VOC 11-point), not averaged per image
    y = rng.integers(0, 2, (50, 3))
    ml = Outcomes([str(k) for k in range(50)], labels=y, decisions=y + rng.normal(0, 0.8, y.shape))
    ci = stats.bootstrap_interval([ml], "mAP", n=100)
    assert 0 < ci.low <= ml.metric("mAP") <= ci.high <= 1


@pytest.mark.parametrize("ap", ["voc07", "exact"])
def test_multilabel_resamples_scored_from_counts_equal_the_resampled_rows(ap):
    """The bootstrap scores a resample of a multi-label set from per-image counts (no copy of the
    rows); it must give what recomputing mAP / mean AUC on the resampled rows gives, ignored (-1)
    labels included, and for AUC tied scores too."""
    rng = np.random.default_rng(5)
    y = rng.choice([-1, 0, 0, 0, 1], size=(120, 5))
    dec = y + rng.normal(0, 0.8, y.shape)
    tied = np.round(dec)  # AUC counts ties one half; AP ranks tied images in an arbitrary order
    idx = rng.integers(0, 120, (40, 120))
    for metric, scores in (("mAP", dec), ("mean_auc", dec), ("mean_auc", tied)):
        o = Outcomes([str(k) for k in range(120)], labels=y, decisions=scores, ap=ap)
        fast = stats._fast(o, metric, idx)
        slow = [o.metric(metric, rows) for rows in idx]
        assert fast == pytest.approx(slow, abs=1e-12), metric


def test_mcnemar_on_a_hand_counted_case():
    # a is right and b wrong on 10 images, b right and a wrong on 2, both right on 88:
    # p = 2 · P(Binomial(12, 1/2) <= 2) = 2 · (1 + 12 + 66) / 4096
    labels = np.zeros(100, dtype=int)
    a = np.zeros(100, dtype=int)
    b = np.zeros(100, dtype=int)
    a[:2] = 1  # a wrong
    b[2:12] = 1  # b wrong
    ids = [str(k) for k in range(100)]
    res = stats.paired_test([("t", Outcomes(ids, labels=labels, predictions=a))],
                            [("t", Outcomes(ids, labels=labels, predictions=b))], "accuracy")
    assert res.method == "mcnemar" and res.p == pytest.approx(2 * 79 / 4096)
    assert res.difference == pytest.approx(0.08) and res.n_items == 100


def test_paired_bootstrap_pairs_items_by_id_within_trials():
    rng = np.random.default_rng(0)
    ap = rng.random(80)
    ids = [f"q{k}" for k in range(80)]
    same = [("default", Outcomes(ids, values={"mAP": ap}))]
    shuffled = np.random.default_rng(1).permutation(80)  # same outcomes stored in another order
    other_order = [("default", Outcomes([ids[k] for k in shuffled], values={"mAP": ap[shuffled]}))]
    res = stats.paired_test(same, other_order, "mAP", n=300)
    assert res.method == "paired-bootstrap" and res.p == 1.0 and res.difference == 0.0
    better = [("default", Outcomes(ids, values={"mAP": np.minimum(1, ap + 0.05)}))]
    assert stats.paired_test(better, same, "mAP", n=300).p < 0.01
    # nothing in common: no test
    assert stats.paired_test([("other", Outcomes(ids, values={"mAP": ap}))], same, "mAP") is None


@pytest.mark.parametrize("head, options", [("svm", {"C": 1.0}), ("logreg", {"C": 10.0}), ("knn", {}), ("l2", {})])
def test_every_head_keeps_outcomes_that_give_back_its_numbers(tiny_digits, tmp_path, head, options):
    ds = plugins.create("dataset", "digits")
    record = evaluate(tiny_digits, ds, plugins.create("head", head, **options), head)
    [(trial, kept)] = record["outcomes"]
    assert len(kept) == record["trials"][0]["n_test"]
    names = kept.metrics()
    assert record["primary_metric"] in names
    for name in names:
        assert kept.metric(name) == pytest.approx(record["metrics"][name], abs=1e-12), name
    path, _ = write_results(record, tmp_path / f"{head}.json")
    assert outcomes.read(outcomes.path_for(path)) == [(trial, kept)]


def test_compare_shows_intervals_and_marks_differences_that_are_not_significant(tiny_digits, tmp_path):
    ds = plugins.create("dataset", "digits")
    for backbone, C in (("strong", 1.0), ("nearly", 0.9), ("weak", 1e-4)):
        record = evaluate(tiny_digits, ds, plugins.create("head", "svm", C=C), "svm")
        record["backbone"] = backbone
        write_results(record, tmp_path / f"metrics/{backbone}/digits/svm.json")
    table = build_table(load_records(tmp_path / "metrics"), bootstrap=300)
    col = ("digits", "svm", "accuracy")
    values = {r: table.values[(r, col)] for r in ("strong", "nearly", "weak")}
    assert values["strong"] > values["weak"] + 10, values  # C = 1e-4 underfits
    best = table.best[col]
    for row in values:
        ci = table.intervals[(row, col)]
        assert ci.method == "bootstrap" and ci.low <= values[row] <= ci.high
    assert table.paired[("weak", col)].p < 0.05 and table.significant("weak", col)
    near = "nearly" if best == "strong" else "strong"
    assert table.paired[(near, col)].method == "mcnemar" and table.significant(near, col) is False
    md = to_markdown(table)
    assert " ≈" in md and "not significantly different" in md and f"| **{values[best]:.1f} [" in md
    assert "bootstrap" in to_long_csv(table)


def test_several_trials_give_a_t_interval_without_outcomes(tmp_path):
    record = {"backbone": "b", "dataset": "flowers17", "head": "svm", "layer": "x", "primary_metric": "accuracy",
              "metrics": {"accuracy": 0.9}, "std": {"accuracy": 0.0816},
              "trials": [{"trial": f"seed{s}", "accuracy": v} for s, v in enumerate((0.8, 0.9, 1.0))]}
    write_results(record, tmp_path / "b/flowers17/svm.json")
    table = build_table(load_records(tmp_path), with_paper=False)
    ci = table.intervals[("b", ("flowers17", "svm", "accuracy"))]
    assert ci.method == "trials" and (ci.low, ci.high) == pytest.approx((65.16, 100.0), abs=0.01)  # clipped at 100
