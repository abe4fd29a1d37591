"""Metrics as the papers define them. Scores are fractions in [0, 1]; reports show percentages."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty test set")
    return float(np.mean(y_true == y_pred))


def mean_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over classes present in ``y_true`` of the per-class recall (MIT-67, Flowers, Scene-15)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    if len(classes) == 0:
        raise ValueError("mean class accuracy of an empty test set")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def ranked_average_precision(relevant_sorted: np.ndarray, n_relevant: np.ndarray | None = None) -> np.ndarray:
    """Non-interpolated AP per row of a boolean matrix of ranked results (row = query).

    AP = mean over the relevant items of the precision at their rank. ``n_relevant`` (per row)
    counts relevant items that were not retrieved at all (they add zero precision); by default it
    is the number of relevant items in the row. Rows with no relevant item get NaN.
    """
    rel = np.asarray(relevant_sorted, dtype=bool)
    if rel.ndim == 1:
        rel = rel[None, :]
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.cumsum(rel, axis=1) / ranks * rel
    n_rel = rel.sum(axis=1) if n_relevant is None else np.asarray(n_relevant, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = precision_at_hits.sum(axis=1) / n_rel
    return np.where(n_rel > 0, ap, np.nan)


# -- multi-label classification (VOC 2007, UIUC and H3D attributes) ------------------------------------


def _labelled(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 targets of one class with the ignored (-1, e.g. VOC "difficult") rows removed."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    keep = labels >= 0
    return scores[keep], (labels[keep] > 0)


def voc07_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC 2007 11-point interpolated AP of one class (the devkit's ``VOCevalcls``).

    Images are sorted by decreasing score; labels are 1 (positive), 0 (negative), -1 (ignored:
    the devkit's "difficult" images count neither as true nor as false positives, which is the
    same as removing them). ``AP = mean over t in {0, 0.1, ..., 1} of max(precision[recall >= t])``
    (0 where the recall never reaches t). NaN when the class has no positive image.
    """
    s, pos = _labelled(scores, labels)
    if not pos.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(pos[order])
    fp = np.cumsum(~pos[order])
    rec = tp / pos.sum()
    prec = tp / (tp + fp)
    ap = 0.0
    for t in np.linspace(0, 1, 11):
        p = prec[rec >= t]
        ap += (p.max() if p.size else 0.0) / 11
    return float(ap)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class (mean precision at each positive's rank), -1 labels ignored."""
    s, pos = _labelled(scores, labels)
    if not pos.any():
        return float("nan")
    return float(ranked_average_precision(pos[np.argsort(-s, kind="stable")])[0])


def multilabel_map(scores: np.ndarray, labels: np.ndarray, kind: str = "voc07") -> tuple[float, np.ndarray]:
    """Mean over classes of the AP (``kind``: ``voc07`` 11-point or ``exact`` non-interpolated).

    ``scores`` and ``labels`` are (N, C); returns (mAP, per-class AP). Classes without a positive
    test image get NaN and are left out of the mean.
    """
    fn = {"voc07": voc07_average_precision, "exact": average_precision}.get(kind)
    if fn is None:
        raise ValueError(f"AP kind must be 'voc07' or 'exact', got {kind!r}")
    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels)
    per_class = np.array([fn(scores[:, c], labels[:, c]) for c in range(labels.shape[1])])
    if np.all(np.isnan(per_class)):
        raise ValueError("mAP: no class has a positive test image")
    return float(np.nanmean(per_class)), per_class


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of one binary attribute (ties count one half), -1 labels ignored.

    Computed as the Mann-Whitney statistic: the fraction of (positive, negative) pairs ranked
    correctly. NaN when the attribute has no positive or no negative test image.
    """
    s, pos = _labelled(scores, labels)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks (1-based) handle ties
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over attributes of the ROC AUC (UIUC attributes); returns (mean, per-attribute AUC)."""
    scores, labels = np.atleast_2d(scores), np.atleast_2d(labels)
    per = np.array([roc_auc(scores[:, c], labels[:, c]) for c in range(labels.shape[1])])
    if np.all(np.isnan(per)):
        raise ValueError("mean AUC: no attribute has both positive and negative test images")
    return float(np.nanmean(per)), per


# -- instance retrieval (Oxford5k, Paris6k, Sculptures6k, Holidays, UKBench) ---------------------------


def oxford_average_precision(ranked_ids, positives, junk=()) -> float:
    """AP exactly as the Oxford Buildings ``compute_ap.cpp`` computes it.

    ``positives`` are the good and ok images, ``junk`` the images ignored (skipped in the ranked
    list: they move nothing). Walking down the list, every non-junk image j (0-based among the
    non-junk ones) gives ``recall = hits / |positives|`` and ``precision = hits / (j + 1)``; AP adds
    the trapezoid ``(recall - old_recall) * (old_precision + precision) / 2`` with
    ``old_precision`` starting at 1 and ``old_recall`` at 0. Positives never retrieved count in
    ``|positives|`` (they cap the recall). NaN when there is no positive.
    """
    pos, amb = set(positives), set(junk)
    if not pos:
        return float("nan")
    ranked = [r for r in ranked_ids if r not in amb]
    hit = np.fromiter((r in pos for r in ranked), dtype=bool, count=len(ranked))
    return trapezoid_average_precision(hit, len(pos))


def trapezoid_average_precision(hits, n_positives: int) -> float:
    """:func:`oxford_average_precision` on a ranking already reduced to hits (junk removed).

    ``hits[j]`` says whether the j-th non-junk result is a positive; ``n_positives`` counts every
    positive, retrieved or not. The same trapezoid rule as ``compute_ap.cpp``, vectorised (only
    ranks where the recall grows add area), for heads that rank by array index rather than by id.
    NaN when ``n_positives`` is 0.
    """
    if n_positives <= 0:
        return float("nan")
    hit = np.asarray(hits, dtype=bool)
    tp = np.cumsum(hit)
    j = np.arange(1, len(hit) + 1)
    precision = tp / j
    old_precision = np.concatenate([[1.0], precision[:-1]])
    return float(np.sum(hit * (old_precision + precision) / 2.0) / n_positives)


def retrieval_scores(order, database_ids, query_ids, ground_truth: dict, *, exclude_self: bool | None = None,
                     exclude_self_default: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-query Oxford AP and UKBench top-4 count of database rankings, as the data sets score them.

    ``order`` (Q, N) holds database row indices, best first (e.g. from
    :func:`cnnbench.retrieval.rank_database`); ``ground_truth[query_id]`` is ``{"positives": [...],
    "junk": [...]}`` (database ids), optionally with ``"exclude_self"``. Junk is removed from the
    ranking; positives missing from the database still count in ``|positives|``. When a query is
    excluded from its own ranking (``exclude_self``; None: the entry's ``"exclude_self"``, else
    ``exclude_self_default``; Holidays), its id becomes junk and stops being a positive.

    Returns ``(ap, top4)``, both (Q,) floats: ``ap`` by :func:`trapezoid_average_precision` (NaN for a
    query without positives), ``top4`` the positives among the first 4 results (UKBench: a query
    found in the database and not excluded counts as one of its object's images). Queries absent
    from ``ground_truth`` get NaN in both.
    """
    order = np.asarray(order)
    db_ids = np.asarray(database_ids)
    row_of = {i: k for k, i in enumerate(db_ids)}
    n_db = len(db_ids)
    ap = np.full(len(query_ids), np.nan)
    top4 = np.full(len(query_ids), np.nan)
    for row, qid in enumerate(query_ids):
        entry = ground_truth.get(qid)
        if entry is None:
            continue
        positives = set(entry.get("positives", []))
        junk = set(entry.get("junk", []))
        excl = exclude_self if exclude_self is not None else bool(entry.get("exclude_self", exclude_self_default))
        if excl:
            junk.add(qid)
            positives.discard(qid)
        # boolean lookups over database rows: vectorised per query (UKBench: 10k x 10k)
        is_junk = np.zeros(n_db, dtype=bool)
        is_junk[[row_of[i] for i in junk if i in row_of]] = True
        is_pos = np.zeros(n_db, dtype=bool)
        is_pos[[row_of[i] for i in positives if i in row_of]] = True
        ranked = order[row][~is_junk[order[row]]]
        if positives:
            ap[row] = trapezoid_average_precision(is_pos[ranked], len(positives))
        if qid in row_of and not excl:
            is_pos[row_of[qid]] = True  # UKBench: the query is one of its object's 4 images
        top4[row] = float(is_pos[ranked[:4]].sum())
    return ap, top4


def holidays_average_precision(ranked_ids, positives, query_id) -> float:
    """INRIA Holidays AP (``holidays_map.py``): the query image itself is removed from the results
    (and from the positives) before the same trapezoid rule as ``compute_ap``."""
    pos = set(positives) - {query_id}
    return oxford_average_precision([r for r in ranked_ids if r != query_id], pos)


def ukbench_top4(ranked_ids, positives) -> int:
    """UKBench score of one query: how many of its positives (the 4 images of the object, the query
    itself included) are among the first 4 results (0 to 4). Report the mean (0-4) or, as the paper
    does, that mean / 4 in percent."""
    pos = set(positives)
    return int(sum(r in pos for r in list(ranked_ids)[:4]))


# -- revisited Oxford and Paris (Radenović et al., CVPR 2018) -------------------------------------------

REVISITED_SETTINGS = ("easy", "medium", "hard")


def revisited_ground_truth(entry: dict, setting: str) -> tuple[list, list]:
    """``(positives, junk)`` of one query in one setting of the revisited protocol, from its entry
    ``{"easy": [...], "hard": [...], "junk": [...]}``, as revisitop's ``example_evaluate.py`` builds
    them: Easy = easy, ignoring junk and hard; Medium = easy + hard, ignoring junk; Hard = hard,
    ignoring junk and easy. Lists are concatenated, not merged, as ``np.concatenate`` does there."""
    easy, hard, junk = list(entry.get("easy", [])), list(entry.get("hard", [])), list(entry.get("junk", []))
    if setting == "easy":
        return easy, junk + hard
    if setting == "medium":
        return easy + hard, junk
    if setting == "hard":
        return hard, junk + easy
    raise ValueError(f"revisited setting must be one of {REVISITED_SETTINGS}, got {setting!r}")


def revisitop_query_scores(positions: np.ndarray, junk_positions: np.ndarray, n_positives: int,
                           kappas=(1, 5, 10)) -> tuple[float, np.ndarray]:
    """AP and precision at each of ``kappas`` of one query, exactly as revisitop's ``compute_map``
    (``python/evaluate.py``) scores it.

    ``positions`` and ``junk_positions`` are the 0-based places of the positive and the junk images
    in the ranking (ascending). Each positive moves up by the number of junk images ranked strictly
    before it; AP is ``compute_ap``'s trapezoid rule over those ranks r_j (j-th retrieved positive):
    ``sum_j (j / r_j + (j + 1) / (r_j + 1)) / 2 / n_positives`` with ``j / r_j`` taken as 1 at r_j = 0,
    which is :func:`trapezoid_average_precision` of the junk-free ranking whenever no image is both
    positive and junk. Precision at k, on the 1-based shifted ranks p: ``kq = min(max(p), k)``,
    ``(p <= kq).sum() / kq`` (so it is not penalised when every positive sits above rank k). NaN for
    both when ``n_positives`` is 0; precision 0 when positives exist but none is ranked (revisitop's
    rankings always hold every image, so it never meets that case).
    """
    if n_positives <= 0:
        return float("nan"), np.full(len(kappas), np.nan)
    pos = np.asarray(positions, dtype=np.int64)
    junk = np.sort(np.asarray(junk_positions, dtype=np.int64))
    ranks = pos - np.searchsorted(junk, pos, side="left")  # junk images strictly before each positive
    j = np.arange(len(ranks), dtype=np.float64)
    r = ranks.astype(np.float64)
    precision_0 = np.where(ranks == 0, 1.0, j / np.maximum(r, 1.0))
    precision_1 = (j + 1.0) / (r + 1.0)
    ap = float(np.sum((precision_0 + precision_1) / 2.0) / n_positives)
    prs = np.zeros(len(kappas))
    if len(ranks):
        one_based = ranks + 1
        for t, k in enumerate(kappas):
            kq = min(int(one_based.max()), int(k))
            prs[t] = (one_based <= kq).sum() / kq
    return ap, prs


def revisited_scores(order, database_ids, query_ids, ground_truth: dict, kappas=(1, 5, 10)) -> dict[str, dict]:
    """The revisited Oxford / Paris protocol (Easy, Medium, Hard) on database rankings, exactly as
    revisitop's ``compute_map`` with ``example_evaluate.py``'s three settings.

    ``order`` (Q, N) holds database row indices, best first; ``ground_truth[query_id]`` is
    ``{"easy": [...], "hard": [...], "junk": [...]}`` (database ids; see
    :func:`revisited_ground_truth`). Per query and setting, :func:`revisitop_query_scores`; positives
    absent from the database (images skipped at extraction) still count in ``|positives|``, as
    compute_map counts every listed image. A query without positives in a setting (or without a
    ground-truth entry) gets NaN there and is left out of that setting's means, as compute_map does.

    Returns ``{setting: {"mAP": float, "mP@k": float for each k, "n_queries": int, "ap": (Q,) array,
    "precision": (Q, len(kappas)) array}}`` for ``easy``, ``medium`` and ``hard``; means are NaN when
    no query has a positive in that setting.
    """
    order = np.asarray(order)
    db_ids = list(database_ids)
    row_of = {i: k for k, i in enumerate(db_ids)}
    n_db = len(db_ids)
    kappas = tuple(int(k) for k in kappas)
    out: dict[str, dict] = {}
    for setting in REVISITED_SETTINGS:
        ap = np.full(len(query_ids), np.nan)
        prs = np.full((len(query_ids), len(kappas)), np.nan)
        for row, qid in enumerate(query_ids):
            entry = ground_truth.get(qid)
            if entry is None:
                continue
            positives, junk = revisited_ground_truth(entry, setting)
            is_pos = np.zeros(n_db, dtype=bool)
            is_pos[[row_of[i] for i in positives if i in row_of]] = True
            is_junk = np.zeros(n_db, dtype=bool)
            is_junk[[row_of[i] for i in junk if i in row_of]] = True
            ranked = order[row]
            ap[row], prs[row] = revisitop_query_scores(np.flatnonzero(is_pos[ranked]), np.flatnonzero(is_junk[ranked]),
                                                       len(positives), kappas)
        scored = ~np.isnan(ap)
        n = int(scored.sum())
        res: dict = {"mAP": float(ap[scored].mean()) if n else float("nan")}
        for t, k in enumerate(kappas):
            res[f"mP@{k}"] = float(prs[scored, t].mean()) if n else float("nan")
        res.update({"n_queries": n, "ap": ap, "precision": prs})
        out[setting] = res
    return out
