"""``svm``: the paper's classifier: a linear SVM on L2-normalised features.

One-vs-rest (scikit-learn's ``LinearSVC``), hinge loss as published (``loss`` is a parameter), C
chosen by stratified k-fold cross-validation on the training split from ``C_grid`` unless ``C`` is
fixed (the paper's values: VOC 0.2, MIT-67 2, CUB 2, Flowers 2, H3D 0.2, UIUC 0.2).
"""

from __future__ import annotations

import warnings

import numpy as np

from cnnbench import hookimpl
from cnnbench.head import FeatureSet, Head, l2_normalize
from cnnbench.metrics import accuracy, mean_class_accuracy


@hookimpl
def register_heads(register):
    register("svm", LinearSVMHead, description="linear SVM (one-vs-rest) on L2-normalised features, C by k-fold CV")


class LinearSVMHead(Head):
    name = "svm"
    tasks = ("multiclass",)
    diagnostics = ("C",)

    def __init__(self, C_grid=(0.01, 0.1, 1.0, 10.0, 100.0), C: float | None = None, cv_folds: int = 3,
                 seed: int = 0, loss: str = "hinge", class_weight: str | None = None, max_iter: int = 10000):
        super().__init__(C_grid=list(C_grid), C=C, cv_folds=cv_folds, seed=seed, loss=loss,
                         class_weight=class_weight, max_iter=max_iter)
        if not C_grid and C is None:
            raise ValueError("svm: give C or a non-empty C_grid")
        if loss not in ("hinge", "squared_hinge"):
            raise ValueError(f"svm: loss must be 'hinge' or 'squared_hinge', got {loss!r}")
        self.C_grid, self.C, self.cv_folds, self.seed = [float(c) for c in C_grid], C, int(cv_folds), int(seed)
        self.loss, self.class_weight, self.max_iter = loss, class_weight, int(max_iter)

    def _svc(self, C: float):
        from sklearn.svm import LinearSVC

        return LinearSVC(C=C, loss=self.loss, dual=True if self.loss == "hinge" else "auto",
                         class_weight=self.class_weight, max_iter=self.max_iter, random_state=self.seed)

    def fit(self, X: np.ndarray, y: np.ndarray):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.C is not None:
                return self._svc(float(self.C)).fit(X, y), float(self.C)
            folds = min(self.cv_folds, int(np.bincount(y).min()))
            if folds < 2:
                raise ValueError("svm: cross-validation needs at least 2 training images per class; fix C instead")
            search = GridSearchCV(
                self._svc(1.0), {"C": self.C_grid},
                cv=StratifiedKFold(folds, shuffle=True, random_state=self.seed), scoring="accuracy", n_jobs=1,
            )
            search.fit(X, y)
            return search.best_estimator_, float(search.best_params_["C"])

    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str) -> dict[str, float]:
        if task != "multiclass":
            raise ValueError(f"svm head handles multiclass data sets, not {task!r}")
        clf, C = self.fit(l2_normalize(train.features), np.asarray(train.labels))
        pred = clf.predict(l2_normalize(test.features))
        return {
            "accuracy": accuracy(test.labels, pred),
            "mean_class_accuracy": mean_class_accuracy(test.labels, pred),
            "C": C,
        }
