"""``svm``: the paper's classifier, a linear SVM on L2-normalised features.

Protocol (Razavian et al. 2014, as cnnbench reads it):

* features: signed power ``sign(x)|x|^power`` (``power``; 1 = off, the paper's CNNaug uses 2),
  then L2-normalised to unit length;
* multi-label data sets (VOC 2007, UIUC, H3D): one binary SVM per class (one-vs-rest); images
  labelled -1 for a class (VOC "difficult") are left out of that class's training and scoring.
  Scores: ``mAP`` = VOC 2007 11-point interpolated AP averaged over classes (``ap: exact`` gives
  the non-interpolated AP instead; H3D's original evaluation is not pinned down by the paper, so
  the VOC definition is the default for every ``mAP``), ``mean_auc`` = mean ROC AUC over
  attributes (UIUC), and the per-class ``AP/<class>``. The data set's ``metric`` (passed in by
  :func:`cnnbench.evaluate.evaluate`) is the primary number and the score C is chosen on.
* multi-class data sets: ``multiclass: ovr`` (default; one-vs-rest, scikit-learn's LinearSVC
  strategy, argmax of the decision values) or ``ovo`` (one-vs-one, which the paper names; runs
  liblinear per pair, slow on many classes). Scores: accuracy and mean class accuracy.
* C: fixed (``C``; the paper's values: VOC 0.2, MIT-67 2, CUB 2, Flowers 2, H3D 0.2, UIUC 0.2) or
  chosen from ``C_grid`` by ``cv_folds``-fold cross-validation on the training split (stratified
  for multi-class, seeded; folds split images, never the views of one image), or on the data set's
  validation split where its protocol names one (Flowers-102's ``val``; ``tune_on: auto``, the
  default; ``cv`` cross-validates anyway), then refitted on the whole training selection. Ties
  go to the smaller C.
* views: features (N, V, D) train one sample per view; at test time an image's decision values
  are summed over its views (``view_pooling: sum``, the paper's choice) or maxed (``max``).
* ``class_weight: balanced`` weighs each binary problem's positives and negatives to equal total.
* solver: ``batched`` (:mod:`cnnbench.linsvm`: all one-vs-rest problems in the same torch
  matrix products, Newton steps, warm starts along the C path; ``device`` cpu/cuda, or auto: a GPU when there is one) or
  ``liblinear`` (scikit-learn's LinearSVC, the reference); ``auto`` (default) picks batched for
  the squared hinge and liblinear for the hinge. ``loss``: ``squared_hinge`` (default:
  LinearSVC's default, solved exactly by both solvers) or ``hinge`` (the paper's wording; exact
  with liblinear; the batched solver smooths its kink over ``smooth``). Measured by
  ``benchmarks/svm_speed.py`` (3060 x 1280, 102 classes, 3-fold CV over 5 C values, 2 CPU cores):
  squared hinge, batched 5.5 s vs LinearSVC + GridSearchCV 68 s (12x), test accuracy -0.05
  points; hinge, batched (smoothed) 44 s vs 30 s and +0.5 points: hence ``auto``. The default
  loss is therefore the squared hinge, not the paper's hinge: ``loss: hinge`` restores it (at
  liblinear's speed).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet
from cnnbench.outcomes import KEY as OUTCOMES

from ._common import (
    C_MAX,
    C_MIN,
    MAX_ITER,
    ClassifierHead,
    ProbeOptions,
    check_device,
    classifier_outcomes,
    classifier_scores,
    count_outputs,
)


log = logging.getLogger("cnnbench.heads.svm")


@hookimpl
def register_heads(register):
    register("svm", LinearSVMHead,
             description="linear SVM on L2-normalised features (one-vs-rest / multi-label), C by k-fold CV, view pooling")


@dataclass(frozen=True)
class SVMOptions(ProbeOptions):
    """The svm head's options (the C and feature options are :class:`ProbeOptions`')."""

    C: float | None = O.option(None, "a fixed C (null: choose it from C_grid); the paper's: 0.2 or 2", min=C_MIN,
                               max=C_MAX, fix="C weighs the training errors (the paper uses 0.2 or 2); leave C unset "
                                              "(null) to choose it from C_grid by cross-validation")
    loss: Literal["squared_hinge", "hinge"] = O.option("squared_hinge", "squared_hinge (LinearSVC's default) or hinge "
                                                                        "(the paper's wording)")
    class_weight: Literal[None, "balanced"] = O.option(None, "balanced: weigh each problem's positives and negatives "
                                                             "to equal total")
    max_iter: int = O.option(10000, "the most liblinear iterations per fit", min=1, max=MAX_ITER,
                             fix="the most liblinear iterations per fit (default 10000)")
    solver: Literal["auto", "batched", "liblinear"] = O.option("auto", "batched (torch Newton steps, all problems at "
                                                                        "once), liblinear (LinearSVC), or auto")
    multiclass: Literal["ovr", "ovo"] = O.option("ovr", "one-vs-rest, or one-vs-one as the paper names it (slow)")
    smooth: float = O.option(0.05, "the width over which the batched solver smooths the hinge's kink", min=0,
                             min_exclusive=True,
                             fix="the width over which the batched solver smooths the hinge's kink (default 0.05)")
    tol: float = O.option(1e-4, "the solvers' stopping tolerance", min=0, min_exclusive=True)


class LinearSVMHead(ClassifierHead):
    name = "svm"
    diagnostics = ("C",)
    Options = SVMOptions

    def setup(self) -> None:
        solver = self.opts.solver
        if solver == "auto":  # the faster of the two where it meets the accuracy bar (benchmarks/svm_speed.py)
            solver = "batched" if self.loss == "squared_hinge" else "liblinear"
        if self.multiclass == "ovo" and solver == "batched":
            solver = "liblinear"  # one-vs-one runs per pair with liblinear
        self.solver = solver
        self.params["device"] = self.device = check_device("svm: device", self.opts.device, used=solver == "batched")
        self.C_grid = sorted(self.opts.C_grid)

    # -- features ------------------------------------------------------------------------------------
    # -- one fit + decision values -------------------------------------------------------------------
    def _model(self, n_outputs: int):
        if self.solver == "batched":
            return _BatchedModel(self, n_outputs)
        return _LiblinearModel(self, n_outputs)


    def choose_C(self, X: np.ndarray, y: np.ndarray, task: str, metric: str, n_outputs: int,
                 classes: list[str] | None = None, validation: np.ndarray | None = None) -> tuple[float, dict]:
        """Score the C grid on the validation split or k CV folds (:meth:`_folds`); returns (best C, {C: mean score})."""
        scores = {c: [] for c in self.C_grid}
        for tr, va in self._folds(y, task, classes, validation):
            model = self._model(n_outputs)
            model.start(X[tr], y[tr])
            for c in self.C_grid:  # ascending: each fit warm-starts from the previous one
                model.fit(c)
                dec = self._pool(model.decision(X[va]))
                scores[c].append(classifier_scores(task, dec, y[va], self.ap)[metric])
        mean = {c: float(np.nanmean(v)) for c, v in scores.items()}
        best = max(self.C_grid, key=lambda c: (mean[c], -c))
        return best, mean

    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        if task not in self.tasks:
            raise UserError(f"svm: the svm head handles multiclass and multilabel data sets, not a {task} one; "
                            "use the l2 head for retrieval data sets")
        metric = self.primary_metric_for(task, metric)
        Xtr, Xte = self._prepare(train.features), self._prepare(test.features)
        ytr, yte = np.asarray(train.labels), np.asarray(test.labels)
        for which, y in (("training", ytr), ("test", yte)):
            if len(y) == 0:
                raise UserError(f"svm: the trial's {which} selection holds no images; check the data set's split "
                                "options and that its feature files are not empty")
        n_outputs = count_outputs("svm", task, train, ytr, yte)
        if self.C is not None:
            C = float(self.C)
        else:
            C, _ = self.choose_C(Xtr, ytr, task, metric, n_outputs, list(train.classes), train.validation)
        model = self._model(n_outputs)
        model.start(Xtr, ytr)
        model.fit(C)
        dec = self._pool(model.decision(Xte))
        out = classifier_scores(task, dec, yte, self.ap, list(test.classes))
        out["C"] = C
        out[OUTCOMES] = classifier_outcomes(task, dec, yte, test.ids, self.ap)
        return out


def _not_converged(C: float, how: str) -> None:
    """A fit that ran out of iterations is reported (its numbers are those of an unfinished fit), not hidden."""
    log.warning("svm: C=%g: %s before reaching its tolerance; the scores at this C are those of an unfinished fit "
                "(a C in the usual range, 0.01 to 100, converges)", C, how)


def _flatten(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, D) features and (N, ...) labels → one training row per view."""
    n, v, d = X.shape
    return X.reshape(n * v, d), np.repeat(y, v, axis=0)


class _BatchedModel:
    def __init__(self, head: LinearSVMHead, n_outputs: int):
        from cnnbench.linsvm import BatchedLinearSVM

        self.svm = BatchedLinearSVM(loss=head.loss, smooth=head.smooth, tol=head.tol, class_weight=head.class_weight,
                                    device=head.device)
        self.n_outputs = n_outputs
        self.W = None

    def start(self, X: np.ndarray, y: np.ndarray) -> None:
        Xf, self.y = _flatten(X, y)
        self.X = self.svm.prepare(Xf)
        self.gram = None

    def fit(self, C: float) -> None:
        self.svm.fit(self.X, self.y, C, n_classes=self.n_outputs, warm_start=self.W, gram=self.gram)
        self.W = self.svm.W
        if not self.svm.converged:
            _not_converged(C, f"the batched solver stopped after {self.svm.n_iter} Newton steps")

    def decision(self, X: np.ndarray) -> np.ndarray:
        n, v, d = X.shape
        return self.svm.decision_function(X.reshape(n * v, d)).reshape(n, v, -1)


class _LiblinearModel:
    """scikit-learn's LinearSVC (liblinear): the reference solver; one-vs-one through OneVsOneClassifier."""

    def __init__(self, head: LinearSVMHead, n_outputs: int):
        self.head, self.n_outputs = head, n_outputs

    def start(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = _flatten(X, y)

    def _svc(self, C: float):
        from sklearn.svm import LinearSVC

        h = self.head
        return LinearSVC(C=C, loss=h.loss, dual=True if h.loss == "hinge" else "auto", class_weight=h.class_weight,
                         max_iter=h.max_iter, random_state=h.seed)

    def fit(self, C: float) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.multiclass import OneVsOneClassifier

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if self.y.ndim == 2:  # multi-label: one binary SVM per column on its labelled rows
                self.models = []
                for k in range(self.y.shape[1]):
                    keep = self.y[:, k] >= 0
                    yk = self.y[keep, k]
                    self.models.append(self._svc(C).fit(self.X[keep], yk) if len(np.unique(yk)) == 2 else None)
            elif self.head.multiclass == "ovo":
                self.models = OneVsOneClassifier(self._svc(C)).fit(self.X, self.y)
            else:
                self.models = self._svc(C).fit(self.X, self.y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            _not_converged(C, f"liblinear stopped after max_iter={self.head.max_iter} iterations")

    def decision(self, X: np.ndarray) -> np.ndarray:
        n, v, d = X.shape
        Xf = X.reshape(n * v, d)
        if isinstance(self.models, list):
            dec = np.stack([m.decision_function(Xf) if m is not None else np.zeros(len(Xf)) for m in self.models], 1)
        else:
            raw = self.models.decision_function(Xf)
            if raw.ndim == 1:  # binary problem: one column for class 1
                raw = np.stack([-raw, raw], 1)
            dec = np.full((len(Xf), self.n_outputs), -np.inf)
            dec[:, self.models.classes_] = raw
        return dec.reshape(n, v, -1)
