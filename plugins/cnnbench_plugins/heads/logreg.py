"""``logreg``: the linear probe of today's frozen-feature papers, logistic regression on L2-normalised
features.

Protocol (CLIP's and DINO's linear-probe evaluation, as cnnbench reads it; the same feature
treatment as the ``svm`` head, so the two compare the loss and nothing else):

* features: signed power ``sign(x)|x|^power`` (``power``; 1 = off), then L2-normalised;
* multi-class data sets: multinomial logistic regression (softmax cross-entropy), the objective of
  scikit-learn's ``LogisticRegression(C)``: C Σ_i CE_i + ½‖W‖², intercept not penalised (two-class
  sets: the binary model, as scikit-learn fits them). Scores: ``accuracy`` and
  ``mean_class_accuracy`` of the argmax of the logits;
* multi-label data sets (VOC 2007, UIUC, H3D): one binary logistic regression per class
  (one-vs-rest); images labelled -1 for a class (VOC "difficult") are left out of that class's
  training and scoring. Scores: ``mAP`` (VOC 2007 11-point AP; ``ap: exact`` for non-interpolated),
  ``mean_auc``, and the per-class ``AP/<class>``;
* C: fixed (``C``) or chosen from ``C_grid`` on training images only, by ``cv_folds``-fold
  cross-validation (stratified for multi-class, seeded by ``seed``; folds split images, never the
  views of one image), scored with the data set's metric (ties go to the smaller C); then refitted
  on the whole training selection with the chosen C. A data set whose protocol names a validation
  split (``Trial.validation``: Flowers-102's ``val``) has C chosen on it instead (fitted on the
  rest of the training selection, ``tune_on: auto``; ``tune_on: cv`` cross-validates anyway),
  then refitted on train+val, as the ``svm`` head does. Per trial the chosen ``C`` and the score at
  every grid value (``cv_score@C=<c>``) are diagnostics, kept in the run record;
* views: features (N, V, D) give one training row per view; at test time an image's logits are
  summed over its views (``view_pooling: sum``) or maxed (``max``), as the ``svm`` head does;
* solver: ``batched`` (:mod:`cnnbench.logreg`: full-batch L-BFGS in torch in preconditioned
  coordinates, all cross-validation folds in the same matrix products, warm starts along the
  ascending C grid (each from the secant of the last two solutions in log C), the final fit started
  from the folds' mean solution at the chosen C; ``device`` cpu/cuda, or auto: a GPU when there is one) or ``sklearn``
  (``LogisticRegression``, lbfgs, in float64, fold by fold: the reference); ``auto`` (default) is
  ``batched``. Both minimise the same objective and stop by the same rule, scikit-learn's: no entry
  of the gradient of the mean loss (+ ‖W‖²/(2Cn)) above ``tol``, or ``max_iter`` iterations;
* ``tol`` defaults to 1e-6, not scikit-learn's 1e-4: on L2-normalised features 1e-4 stops large-C
  fits far from the optimum, at a point that depends on the path each solver took. Measured by
  ``python benchmarks/probe_speed.py --features features/effnet-lite0/digits --sklearn-threads 1``
  (effnet-lite0 digits features, 2 CPU cores): with ``--tol 1e-4`` the two solvers choose different
  C (1000 vs 10000) and differ by 1.0 point of test accuracy; at 1e-6 their CV scores, chosen C
  and test accuracy (93.88 %) agree. ``C_grid`` reaches 10⁴ because unit-length features need
  large C: those digits features choose C = 10⁴;
* speed, ``python benchmarks/probe_speed.py --sklearn-threads 1`` (3060 x 1280, 102 classes, 3-fold
  CV over the default grid, 2 CPU cores; each solver at its fastest thread count): batched 3.9 s
  against ``LogisticRegression`` + ``GridSearchCV`` 27.0 s (6.9x), same chosen C, same test
  accuracy (82.45 %); with one thread each (``--threads 1``) 6.0 s against 27.1 s (4.5x); on the
  digits features 0.9 s against 5.5 s (6.3x).
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
    c_grid,
    check_device,
    classifier_outcomes,
    classifier_scores,
    count_outputs,
)

log = logging.getLogger("cnnbench.heads.logreg")


@hookimpl
def register_heads(register):
    register("logreg", LogisticRegressionHead,
             description="logistic regression on L2-normalised features (multinomial / one-vs-rest multi-label), "
                         "C by k-fold CV, view pooling")


def cv_score_name(C: float) -> str:
    """The diagnostic holding the cross-validated score at grid value ``C``."""
    return f"cv_score@C={C:g}"


@dataclass(frozen=True)
class LogRegOptions(ProbeOptions):
    """The logreg head's options (the C and feature options are :class:`ProbeOptions`'); its C grid
    reaches 10⁴, since unit-length features need large C (the module docstring's measurement)."""

    C_grid: tuple[float, ...] = O.option((0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
                                         "the C values cross-validation chooses from", check=c_grid)
    C: float | None = O.option(None, "a fixed C, the inverse regularisation strength (null: choose it from C_grid)",
                               min=C_MIN, max=C_MAX,
                               fix="C is the inverse regularisation strength (larger: weaker penalty); leave C unset "
                                   "(null) to choose it from C_grid by cross-validation")
    power: float = O.option(1.0, "signed power sign(x)|x|^power before L2 normalisation (1: off)", min=0,
                            min_exclusive=True, fix="the signed power transform sign(x)|x|^power; 1 turns it off")
    max_iter: int = O.option(1000, "the most L-BFGS iterations per fit", min=1, max=MAX_ITER,
                             fix="the most L-BFGS iterations per fit")
    tol: float = O.option(1e-6, "a fit stops when no gradient entry of the mean loss exceeds tol (scikit-learn's rule)",
                          min=0, min_exclusive=True,
                          fix="a fit stops when no gradient entry of the mean loss exceeds tol (scikit-learn's rule; "
                              "default 1e-6)")
    solver: Literal["auto", "batched", "sklearn"] = O.option("auto", "batched (torch L-BFGS, all folds at once), "
                                                                     "sklearn (LogisticRegression, the reference), "
                                                                     "or auto (batched)")


class LogisticRegressionHead(ClassifierHead):
    name = "logreg"
    example_C = 10.0
    diagnostics = ("C",)
    Options = LogRegOptions

    def setup(self) -> None:
        self.solver = "batched" if self.opts.solver == "auto" else self.opts.solver
        self.params["device"] = self.device = check_device("logreg: device", self.opts.device,
                                                           used=self.solver == "batched")
        self.C_grid = sorted(set(self.opts.C_grid))  # ascending, for warm starts along the path
        if self.C is None:  # the score at every grid value is a per-trial detail of the run record
            self.diagnostics = ("C", *(cv_score_name(c) for c in self.C_grid))

    # -- features, folds, scores ----------------------------------------------------------------------
    def _model(self, task: str, n_outputs: int):
        return (_BatchedModel if self.solver == "batched" else _SklearnModel)(self, task, n_outputs)

    # -- the protocol -----------------------------------------------------------------------------------
    def choose_C(self, X: np.ndarray, y: np.ndarray, task: str, metric: str, n_outputs: int,
                 classes: list[str], validation: np.ndarray | None = None) -> tuple[float, dict[float, float], object]:
        """k-fold CV over the C grid on training images (N, V, D); returns (best C, {C: mean score},
        the model, already holding the training rows, for the final fit)."""
        folds = self._folds(y, task, classes, validation)
        n, v, _ = X.shape
        member = np.zeros((n, len(folds)), dtype=np.float32)
        for p, (tr, _) in enumerate(folds):
            member[tr, p] = 1.0
        model = self._model(task, n_outputs)
        model.start(X.reshape(n * v, -1), np.repeat(y, v, axis=0))
        rows = np.repeat(member, v, axis=0)
        scores: dict[float, list[float]] = {c: [] for c in self.C_grid}
        for c in self.C_grid:  # ascending: each fit warm-starts from the previous one
            model.fit(c, rows)
            for p, (_, va) in enumerate(folds):
                dec = self._pool(model.decision(X[va].reshape(len(va) * v, -1), p).reshape(len(va), v, -1))
                scores[c].append(classifier_scores(task, dec, y[va], self.ap)[metric])
        mean = {c: float(np.nanmean(s)) for c, s in scores.items()}
        best = max(self.C_grid, key=lambda c: (mean[c], -c))
        return best, mean, model

    def decision_values(self, train: FeatureSet, test: FeatureSet, task: str, *,
                        metric: str | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """Fit on ``train`` (C chosen on it alone) and return the test images' pooled logits (N, K)
        with the diagnostics (chosen C, CV scores). Reads ``test.features`` only: no test label
        can reach a fitted parameter."""
        if task not in self.tasks:
            raise UserError(f"logreg: the logreg head handles multiclass and multilabel data sets, not a {task} one; "
                            "use the l2 head for retrieval data sets")
        metric = self.primary_metric_for(task, metric)
        Xtr, Xte = self._prepare(train.features), self._prepare(test.features)
        ytr = np.asarray(train.labels)
        for which, fs in (("training", train), ("test", test)):
            if len(fs) == 0:
                raise UserError(f"logreg: the trial's {which} selection holds no images; check the data set's split "
                                "options and that its feature files are not empty")
        n_outputs = count_outputs("logreg", task, train, ytr)
        info: dict[str, float] = {}
        n, v, _ = Xtr.shape
        if self.C is not None:
            C, warm = float(self.C), None
            model = self._model(task, n_outputs)
            model.start(Xtr.reshape(n * v, -1), np.repeat(ytr, v, axis=0))
        else:
            C, cv, model = self.choose_C(Xtr, ytr, task, metric, n_outputs, list(train.classes), train.validation)
            info.update({cv_score_name(c): s for c, s in cv.items()})
            warm = model.fold_mean(C)  # the folds' mean solution at C: a start close to the final one
        model.fit(C, np.ones((n * v, 1), dtype=np.float32), warm)
        m, vt, _ = Xte.shape
        dec = self._pool(model.decision(Xte.reshape(m * vt, -1), 0).reshape(m, vt, -1))
        return dec, {"C": C, **info}

    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        dec, info = self.decision_values(train, test, task, metric=metric)
        yte = np.asarray(test.labels)
        out = classifier_scores(task, dec, yte, self.ap, list(test.classes))
        return {**out, **info, OUTCOMES: classifier_outcomes(task, dec, yte, test.ids, self.ap)}


class _BatchedModel:
    """All problems (CV folds) in :class:`cnnbench.logreg.BatchedLogisticRegression`, warm starts along C."""

    def __init__(self, head: LogisticRegressionHead, task: str, n_outputs: int):
        from cnnbench.logreg import BatchedLogisticRegression

        self.lr = BatchedLogisticRegression(loss="ovr" if task == "multilabel" else "multinomial", tol=head.tol,
                                            max_iter=head.max_iter, device=head.device)
        self.n_outputs = n_outputs
        self.path: dict[float, object] = {}

    def start(self, X: np.ndarray, y: np.ndarray) -> None:
        """The training rows (features and labels), put in the solver's coordinates once."""
        self.X, self.y, self.last = self.lr.prepare(X), y, []

    def fit(self, C: float, rows: np.ndarray, warm=None) -> None:
        """Fit the problems of ``rows`` (N, P), warm-started from ``warm``, else from the solutions
        at the previous values of C for these rows: the last one, moved along the secant of the last
        two in log C (the path W(C) is smooth, and this start is nearer the next solution than the
        last one). A warm start moves where L-BFGS starts, not where it ends."""
        if warm is None and self.last and self.last[-1][1].shape[0] != rows.shape[1]:
            self.last = []  # other problems: no path to follow
        if warm is None and len(self.last) == 2:
            (c0, w0), (c1, w1) = self.last
            warm = w1 + (w1 - w0) * (np.log(C / c1) / np.log(c1 / c0))
        elif warm is None and self.last:
            warm = self.last[-1][1]
        self.lr.fit(self.X, self.y, C, rows=rows, n_classes=self.n_outputs, warm_start=warm)
        self.path[C] = self.lr.coef
        self.last = [*self.last[-1:], (C, self.lr.coef)]
        if not self.lr.converged.all():
            log.warning("logreg: C=%g: %d of %d fits stopped before reaching tol=%g (max_iter %d)", C,
                        int((~self.lr.converged).sum()), len(self.lr.converged), self.lr.tol, self.lr.max_iter)

    def fold_mean(self, C: float):
        return self.path[C].mean(0, keepdim=True)

    def decision(self, X: np.ndarray, problem: int) -> np.ndarray:
        return self.lr.decision_function(X, problem)


class _SklearnModel:
    """scikit-learn's LogisticRegression (lbfgs), problem by problem: the reference solver."""

    def __init__(self, head: LogisticRegressionHead, task: str, n_outputs: int):
        self.head, self.task, self.n_outputs = head, task, n_outputs

    def start(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X.astype(np.float64), y  # float32 input would be solved in float32

    def _fit_one(self, X: np.ndarray, y: np.ndarray, C: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, tol=self.head.tol, max_iter=self.head.max_iter).fit(X, y)

    def fit(self, C: float, rows: np.ndarray, warm=None) -> None:
        from sklearn.exceptions import ConvergenceWarning

        self.models = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for p in range(rows.shape[1]):
                keep = rows[:, p] > 0
                X, y = self.X[keep], self.y[keep]
                if self.task == "multilabel":  # one binary model per column, on its labelled rows
                    cols = []
                    for k in range(y.shape[1]):
                        lab = y[:, k] >= 0
                        yk = y[lab, k]
                        cols.append(self._fit_one(X[lab], yk, C) if len(np.unique(yk)) == 2 else None)
                    self.models.append(cols)
                else:
                    self.models.append(self._fit_one(X, y, C))

    def fold_mean(self, C: float):
        return None

    def decision(self, X: np.ndarray, problem: int) -> np.ndarray:
        model = self.models[problem]
        if isinstance(model, list):
            return np.stack([m.decision_function(X) if m is not None else np.zeros(len(X)) for m in model], 1)
        raw = model.decision_function(X)
        if raw.ndim == 1:  # binary: logit z of classes_[1]; ∓z/2 keeps the softmax equal to the sigmoid
            raw = np.stack([-raw / 2, raw / 2], 1)
        dec = np.full((len(X), self.n_outputs), -np.inf)
        dec[:, model.classes_] = raw
        return dec
