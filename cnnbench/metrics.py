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
