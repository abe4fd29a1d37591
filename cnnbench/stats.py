"""Confidence intervals and paired tests for the numbers ``cnnbench compare`` shows.

A 95 % interval for every number, by the protocol's own repetitions where it has them:

* **trials** (Flowers-17's three seeded splits, Caltech-101's five, few-shot draws): the
  t-interval of their mean, ``mean ± t(n-1) · s / sqrt(n)``. It is the spread of the protocol's
  repeated experiments, which is what a reader of the paper's "± x" has in mind.
* **bootstrap** otherwise (one fixed split: VOC 2007, MIT-67, Oxford5k): a seeded percentile
  bootstrap over test items, resampled with replacement ``bootstrap`` times, the metric recomputed
  on each resample from the per-item outcomes the head kept (:mod:`cnnbench.outcomes`): per-class
  mAP is recomputed, not averaged per image. It measures how much the number depends on which
  test images happened to be drawn, not the training noise (ours is deterministic).

Two backbones scored on the same test items (same data set, head, trials and ids) are compared
pair by pair:

* ``accuracy`` on one trial: **McNemar's exact test** (two-sided binomial test on the images one
  gets right and the other wrong), the standard paired test for classifiers.
* anything else: a **paired bootstrap** (the same resampled items for both, within each trial;
  the metric is the mean over trials): ``p = min(1, 2 · min(#(d* <= 0) + 1, #(d* >= 0) + 1) /
  (B + 1))`` over the B resampled differences d*, so the smallest p it can give is 2 / (B + 1).

A difference is *significant* when ``p < 1 - level`` (0.05 for 95 %). Choices (percentile
intervals, t over trials, McNemar for single-trial accuracy) are written here and in
docs/datasets.md; ``level``, ``bootstrap`` (:func:`check_resamples`) and ``seed`` are ``compare``
parameters. Resamples are drawn and scored in chunks (:data:`ELEMENTS` indices at a time), so memory
does not grow with ``bootstrap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .outcomes import Outcomes

LEVEL = 0.95
BOOTSTRAP = 1000
SEED = 0
ELEMENTS = 1 << 22  # resampled item indices held at once (32 MiB): the resamples are drawn and scored in chunks


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "trials" (t over n repetitions) or "bootstrap" (over n resamples of the test items)
    n: int


@dataclass(frozen=True)
class Paired:
    p: float
    method: str  # "mcnemar" or "paired-bootstrap"
    difference: float  # a minus b, on the common items
    n_items: int  # items both were scored on (summed over trials)


def t_interval(values, level: float = LEVEL) -> Interval | None:
    """Interval of the mean of repeated measurements (None for fewer than two)."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) < 2:
        return None
    mean, half = v.mean(), t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return Interval(float(mean - half), float(mean + half), "trials", len(v))


def check_resamples(n: int) -> int:
    """``n`` resamples, checked as ``compare.bootstrap`` is (:func:`cnnbench.params.compare_statistics`,
    at most :data:`cnnbench.params.MAX_BOOTSTRAP`): a library caller cannot ask for unbounded work either."""
    from .params import compare_statistics

    return compare_statistics("bootstrap", {"bootstrap": n})[1]


def _resamples(sizes: list[int], n: int, seed: int):
    """Per trial, the ``n`` resamples of its items (indices drawn with replacement, seeded per trial),
    yielded in chunks of rows: [(rows, size) per trial]. The draws are those of one (n, size) matrix per
    trial, whatever the chunk (each generator continues where its last chunk stopped), and memory stays
    at about :data:`ELEMENTS` indices."""
    check_resamples(n)
    gens = [np.random.default_rng([seed, t]) for t in range(len(sizes))]
    step = max(1, ELEMENTS // max(1, sum(sizes)))
    for start in range(0, n, step):
        rows = min(step, n - start)
        yield [g.integers(0, size, size=(rows, size)) for g, size in zip(gens, sizes)]


def _replicates(trials: list[Outcomes], metric: str, draws: list[np.ndarray]) -> np.ndarray:
    """The metric (mean over trials) on each resample of one chunk: (rows,)."""
    per_trial = []
    for o, idx in zip(trials, draws):
        per_trial.append(_fast(o, metric, idx))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(per_trial), axis=0) if len(per_trial) > 1 else per_trial[0]


def _fast(o: Outcomes, metric: str, idx: np.ndarray) -> np.ndarray:
    """The metric on each row of ``idx`` (resamples x items), vectorised where the metric is a mean."""
    if metric in o.values:
        v = o.values[metric][idx]
        with np.errstate(invalid="ignore"):
            return np.nanmean(v, axis=1)
    if metric == "accuracy" and o.predictions is not None:
        return (o.predictions == o.labels).astype(np.float64)[idx].mean(axis=1)
    if metric == "mean_class_accuracy" and o.predictions is not None:
        correct = (o.predictions == o.labels).astype(np.float64)[idx]
        labels = np.asarray(o.labels)[idx]
        classes = np.unique(o.labels)
        code = np.searchsorted(classes, labels) + np.arange(len(idx))[:, None] * len(classes)
        hits = np.bincount(code.ravel(), correct.ravel(), len(idx) * len(classes)).reshape(len(idx), -1)
        seen = np.bincount(code.ravel(), None, len(idx) * len(classes)).reshape(len(idx), -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(seen > 0, hits / seen, np.nan), axis=1)  # classes present in the resample
    if metric in ("mAP", "mean_auc") and o.decisions is not None:
        return np.concatenate([_weighted_multilabel(o, metric, idx[s:s + CHUNK]) for s in range(0, len(idx), CHUNK)])
    return np.array([o.metric(metric, rows) for rows in idx])


CHUNK = 200  # resamples scored at once by _weighted_multilabel (bounds its (resamples, images) arrays)


def _weighted_multilabel(o: Outcomes, metric: str, idx: np.ndarray) -> np.ndarray:
    """mAP (voc07 or exact) or mean AUC of each resample, without materialising it: a resample is a
    count per image, and each class is sorted once. Equal to :meth:`Outcomes.metric` on the resampled
    rows (the copies of one image are adjacent in its sorted order; intermediate points of a run of
    copies never raise an interpolated precision; exact AP sums a run's precisions in closed form)."""
    from scipy.special import digamma

    b, n = idx.shape
    counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
    labels, dec = np.asarray(o.labels), np.asarray(o.decisions, np.float64)
    per_class = []
    for c in range(labels.shape[1]):
        keep = labels[:, c] >= 0
        s, pos, w = dec[keep, c], labels[keep, c] > 0, counts[:, keep]
        if metric == "mean_auc":
            order = np.argsort(s, kind="stable")
            s, pos, w = s[order], pos[order], w[:, order]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
            pos_g = np.add.reduceat(w * pos, starts, axis=1) if len(s) else np.zeros((b, 0))
            neg_g = np.add.reduceat(w * ~pos, starts, axis=1) if len(s) else np.zeros((b, 0))
            below = np.cumsum(neg_g, axis=1) - neg_g
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class.append((pos_g * (below + 0.5 * neg_g)).sum(1) / (pos_g.sum(1) * neg_g.sum(1)))
            continue
        order = np.argsort(-s, kind="stable")
        pos, w = pos[order], w[:, order]
        tp, seen = np.cumsum(w * pos, axis=1), np.cumsum(w, axis=1)
        n_pos = tp[:, -1:] if tp.shape[1] else np.zeros((b, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            if o.ap == "voc07":
                prec = np.where(seen > 0, tp / np.where(seen > 0, seen, 1), 0.0)
                rec = tp / n_pos  # non-decreasing along a row: rec >= t is a suffix, starting at #(rec < t)
                best_after = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
                rows, width = np.arange(b), prec.shape[1]
                ap = 0.0
                for t in np.linspace(0, 1, 11):
                    start = (rec < t).sum(axis=1)
                    ap = ap + np.where(start < width, best_after[rows, np.minimum(start, width - 1)], 0.0) / 11
            else:  # the precisions at a run of w copies of a positive, after a hits among m: sum_j (a+j)/(m+j)
                a, m = tp - w * pos, seen - w
                run = w - (m - a) * (digamma(m + w + 1) - digamma(m + 1))
                ap = np.where(pos, run, 0.0).sum(axis=1) / n_pos[:, 0]
            per_class.append(np.where(n_pos[:, 0] > 0, ap, np.nan))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(per_class, axis=1), axis=1)


def bootstrap_interval(trials: list[Outcomes], metric: str, *, level: float = LEVEL, n: int = BOOTSTRAP,
                       seed: int = SEED) -> Interval | None:
    """Percentile interval of ``metric`` (mean over trials) over resamples of each trial's items;
    None when the outcomes cannot compute it."""
    if not trials or any(metric not in o.metrics() or len(o) == 0 for o in trials):
        return None
    sizes = [len(o) for o in trials]
    reps = np.concatenate([_replicates(trials, metric, draws) for draws in _resamples(sizes, n, seed)])
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return None
    low, high = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(low), float(high), "bootstrap", n)


def _aligned(a: list[tuple[str, Outcomes]], b: list[tuple[str, Outcomes]]) -> list[tuple[Outcomes, Outcomes]]:
    """Trials of the same name, restricted to the items both scored, in a's order."""
    b_by = dict(b)
    pairs = []
    for name, oa in a:
        ob = b_by.get(name)
        if ob is None:
            continue
        pos_b = {i: k for k, i in enumerate(ob.ids)}
        rows_a = [k for k, i in enumerate(oa.ids) if i in pos_b]
        if not rows_a:
            continue
        rows_b = [pos_b[oa.ids[k]] for k in rows_a]
        pairs.append((oa.subset(rows_a), ob.subset(rows_b)))
    return pairs


def paired_test(a: list[tuple[str, Outcomes]], b: list[tuple[str, Outcomes]], metric: str, *,
                n: int = BOOTSTRAP, seed: int = SEED) -> Paired | None:
    """Is ``a``'s ``metric`` different from ``b``'s on the same test items? None when they share no
    scored item (other splits, other data set) or cannot compute the metric."""
    pairs = _aligned(a, b)
    if not pairs or any(metric not in o.metrics() for pair in pairs for o in pair):
        return None
    ta, tb = [p[0] for p in pairs], [p[1] for p in pairs]
    n_items = sum(len(o) for o in ta)
    diff = float(np.mean([x.metric(metric) - y.metric(metric) for x, y in pairs]))
    if metric == "accuracy" and len(pairs) == 1 and ta[0].predictions is not None:
        from scipy.stats import binomtest

        right_a = ta[0].predictions == ta[0].labels
        right_b = tb[0].predictions == tb[0].labels
        only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
        p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
        return Paired(p, "mcnemar", diff, n_items)
    d = np.concatenate([_replicates(ta, metric, draws) - _replicates(tb, metric, draws)
                        for draws in _resamples([len(o) for o in ta], n, seed)])
    d = d[np.isfinite(d)]
    if not len(d):
        return None
    m = len(d)  # add-one: a p-value from m resamples is never 0 (Davison & Hinkley 1997)
    p = float(min(1.0, 2.0 * min((1 + np.sum(d <= 0)) / (m + 1), (1 + np.sum(d >= 0)) / (m + 1))))
    return Paired(p, "paired-bootstrap", diff, n_items)
