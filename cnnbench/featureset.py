"""What a head fits on: rows of stored features with their labels and ids. A module of its own, so
the store that fills it and the head contract that hands it to plugins (:mod:`cnnbench.head`,
where plugins import it from) need not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureSet:
    """Rows of one (or several concatenated) feature files."""

    features: np.ndarray  # (N, D) float32, or (N, V, D) with a view axis (jittered views)
    labels: np.ndarray  # (N,) int class ids, or (N, C) int8 for multi-label: 1 yes, 0 no, -1 ignore
    ids: np.ndarray  # (N,) str
    classes: list[str]
    extras: dict = field(default_factory=dict)  # per-split structures (e.g. retrieval ground truth)
    views: list[str] | None = None  # names along the view axis, as extracted: "image", "crop_tl", …
    # (jitter16) or "l1_r0_c0", "l2_r0_c0", … (spatial: level l, row, column); None for (N, D) features
    validation: np.ndarray | None = None  # (N,) bool: rows of the data set's validation split (Trial.validation);
    # None: it has none, and heads choose hyperparameters by cross-validation

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "FeatureSet":
        return FeatureSet(self.features[index], self.labels[index], self.ids[index], self.classes, self.extras,
                          self.views, None if self.validation is None else self.validation[index])
