"""Helpers shared by the heads (not a plugin itself: no entry point)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.head import Head, l2_normalize
from cnnbench.metrics import accuracy, mean_auc, mean_class_accuracy, multilabel_map
from cnnbench.outcomes import Outcomes
from cnnbench.retrieval import signed_power
from cnnbench.scores import score_name

log = logging.getLogger("cnnbench.heads")
MULTILABEL_METRICS = ("mAP", "mean_auc")
MULTICLASS_METRICS = ("accuracy", "mean_class_accuracy")


def classifier_scores(task: str, dec: np.ndarray, y: np.ndarray, ap: str = "voc07",
                      classes=()) -> dict[str, float]:
    """What the classification heads report from decision values (N, C): mAP (``ap``: voc07 or
    exact), mean AUC and per-class AP (``AP/<class>``, by its name in ``classes``, else its index)
    for multi-label sets; accuracy and mean class accuracy else."""
    if task == "multilabel":
        m, per_class = multilabel_map(dec, y, ap)
        auc, _ = mean_auc(dec, y)
        named = lambda i: classes[i] if i < len(classes) else str(i)  # noqa: E731
        return {"mAP": m, "mean_auc": auc,
                **{score_name("AP", of_class=named(i)): float(v) for i, v in enumerate(per_class)}}
    pred = dec.argmax(1)
    return {"accuracy": accuracy(y, pred), "mean_class_accuracy": mean_class_accuracy(y, pred)}


def classifier_outcomes(task: str, dec: np.ndarray, y: np.ndarray, ids, ap: str = "voc07") -> Outcomes:
    """What a classifier keeps per test image (:mod:`cnnbench.outcomes`): its prediction (multi-class)
    or its decision values (multi-label), from which intervals and paired tests recompute the metric."""
    if task == "multilabel":
        return Outcomes(ids, labels=y, decisions=dec, ap=ap)
    return Outcomes(ids, labels=y, predictions=np.asarray(dec).argmax(1))


def count_outputs(head: str, task: str, train, y_train: np.ndarray, y_test: np.ndarray | None = None) -> int:
    """Outputs a classifier needs (classes, or labels of a multi-label set), after checking that the
    labels have the task's shape and that there is something to learn; one line otherwise."""
    if task == "multilabel":
        if y_train.ndim != 2:
            raise UserError(f"{head}: a multilabel data set needs (N, C) labels, got shape {y_train.shape}; "
                            "were these features extracted for this data set?")
        return int(y_train.shape[1])
    if y_train.ndim != 1:
        raise UserError(f"{head}: a multiclass data set needs (N,) class ids, got shape {y_train.shape}; "
                        "were these features extracted for this data set?")
    if len(np.unique(y_train)) < 2:
        cls = int(y_train[0])
        name = repr(train.classes[cls]) if 0 <= cls < len(train.classes) else f"#{cls}"
        raise UserError(f"{head}: the training images are all of one class ({name}); a classifier needs "
                        "at least 2 classes with training images")
    top = [int(y_train.max()) + 1] + ([int(y_test.max()) + 1] if y_test is not None and len(y_test) else [])
    return max(len(train.classes), *top)


# The range of C for the linear probes. Both batched solvers work in float32 products: at C = 10⁶ the
# loss terms of the SVM's Newton steps already outweigh the identity by 10⁶ (float32 keeps 7 digits),
# past 3.4·10³⁸ they overflow (C = 1e308 turned every weight into NaN after 100 Newton steps of work),
# and a huge C reads as "converged" at the first step, since the stopping rule scales with C. Every
# published value (0.2, 2) and the default grids (0.01 .. 10⁴) lie two decades inside.
C_MIN, C_MAX = 1e-6, 1e6
MAX_ITER = 100_000  # solver iterations per fit (svm and logreg max_iter): 10x and 100x their defaults
MAX_CHUNK = 16384  # rows compared at once (knn's chunk_size, l2's query_batch): a chunk x database
# matrix of float32; 16384 rows against the 1M images of R1M are already 64 GiB


def c_grid(name: str, value) -> tuple[float, ...]:
    """C_grid's values, each a C in range; may be empty only beside a fixed C (checked in :meth:`ProbeOptions.check`)."""
    return tuple(O.float_list(name, value, min=C_MIN, max=C_MAX, min_len=0))


@dataclass(frozen=True)
class ProbeOptions(O.Options):
    """How the linear probes (svm, logreg) get C and treat features; each probe's ``Options`` extends
    this with its own solver options and its own ``C_grid`` default. ``tune_on``: auto = the data
    set's validation split where it has one (Flowers-102's ``val``), else cross-validation on the
    training images; cv = always the latter."""

    C_grid: tuple[float, ...] = O.option((0.01, 0.1, 1.0, 10.0, 100.0), "the C values cross-validation chooses from",
                                         check=c_grid)
    C: float | None = O.option(None, "a fixed C (null: choose it from C_grid)", min=C_MIN, max=C_MAX)
    cv_folds: int = O.option(3, "cross-validation folds over the training images", min=2,
                             fix="cross-validation splits the training images into that many folds; "
                                 "or set a fixed C to skip it")
    seed: int = O.option(0, "seed of the cross-validation folds", min=0, max=2**32 - 1)
    tune_on: Literal["auto", "cv"] = O.option("auto", "auto: the data set's validation split where it has one, "
                                                      "else cross-validation; cv: always cross-validation")
    power: float = O.option(1.0, "signed power sign(x)|x|^power before L2 normalisation (1: off; CNNaug: 2)", min=0,
                            min_exclusive=True,
                            fix="the signed power transform sign(x)|x|^power; 1 turns it off, the paper's CNNaug uses 2")
    view_pooling: Literal["sum", "max"] = O.option("sum", "how an image's views' decision values combine (paper: sum)")
    ap: Literal["voc07", "exact"] = O.option("voc07", "mAP as VOC 2007's 11-point AP, or the exact (non-interpolated) AP")
    device: str = O.option("cpu", "torch device of the batched solver (cpu, cuda, cuda:N, mps, or auto)",
                           check=lambda name, value: device_name(name, value))

    def check(self, owner: str):
        if self.C is None and not self.C_grid:
            default = ", ".join(f"{c:g}" for c in type(self).default("C_grid"))
            raise UserError(f"{owner}: C_grid: [] is not allowed; expected a non-empty list of positive numbers to "
                            f"choose C from by cross-validation (default [{default}]); or set a fixed C")
        return None


def device_name(name: str, value) -> str:
    """A device option as given, checked to name a torch device (resolved later, where it is used)."""
    check_device(name, value, used=False)
    return value


def check_device(name: str, value, used: bool) -> str:
    """A torch device name (``cpu``, ``cuda``, ``cuda:1``), or ``auto``: a CUDA device when there is one,
    else the CPU; a CUDA device must exist when the batched solver runs. Returns the device to use.
    (The heads default to ``cpu``: the same numbers on every machine; a GPU changes the last digits.)"""
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(value) if isinstance(value, str) and value else None
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{name}: {value!r} is not allowed; expected a torch device: 'cpu', 'cuda', 'cuda:<n>', 'mps' "
                        "or 'auto' (a GPU when there is one)")
    if used and dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{name}: {value!r}: no CUDA device is available here; use device: cpu")
    if used and dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{name}: {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); pick one of them or use device: cpu")
    if used and dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{name}: {value!r}: no Apple MPS device is available here; use device: cpu")
    return value


class ClassifierHead(Head):
    """What the classification heads share: the data set's metric when it is one they score; for
    the linear probes (svm, logreg) also the feature transform, pooling over views and the
    cross-validation folds C is chosen on (they set ``power``, ``view_pooling``, ``cv_folds``, ``seed``,
    ``tune_on``)."""

    tasks = ("multiclass", "multilabel")
    example_C = 1.0  # named in the error when there are too few images to cross-validate

    def primary_metric_for(self, task: str, metric: str | None) -> str:
        allowed = MULTILABEL_METRICS if task == "multilabel" else MULTICLASS_METRICS
        return metric if metric in allowed else allowed[0]

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        """(N, D) or (N, V, D) → power transform, L2-normalise; always (N, V, D)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3:
            raise UserError(f"{self.name}: features must be (N, D) or (N, V, D), got shape {x.shape}; "
                            "extract a pooled layer (pooling avg or max)")
        return l2_normalize(signed_power(x, self.power))

    def _pool(self, dec: np.ndarray) -> np.ndarray:
        return dec.sum(axis=1) if self.view_pooling == "sum" else dec.max(axis=1)

    def _folds(self, y: np.ndarray, task: str, classes: list[str] | None = None,
               validation: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Where C is chosen, never on the test split: the data set's own validation split when it has
        one (``validation``, a row mask of the training selection; ``tune_on: auto``), as one fold
        (fit on the rest, score on it); else seeded folds over images (stratified for multi-class)."""
        from sklearn.model_selection import KFold, StratifiedKFold

        if validation is not None and getattr(self, "tune_on", "auto") == "auto":
            return [(np.flatnonzero(~validation), np.flatnonzero(validation))]
        if self.cv_folds > len(y):
            raise UserError(f"{self.name}: cv_folds: {self.cv_folds} is not allowed with these {len(y)} training "
                            f"images; expected at most {len(y)} (each fold holds images; the default is 3), or set a "
                            f"fixed C (e.g. -H C={self.example_C:g}) to skip cross-validation")
        if task == "multiclass":
            present, counts = np.unique(y, return_counts=True)
            smallest = int(counts.argmin())
            folds = min(self.cv_folds, int(counts[smallest]))
            warned = self.__dict__.setdefault("_folds_warned", set())
            if 2 <= folds < self.cv_folds and folds not in warned:  # once per size, not once per few-shot draw
                warned.add(folds)
                log.warning("%s: cv_folds: %d lowered to %d, the training images of the smallest class", self.name,
                            self.cv_folds, folds)
            if folds < 2:
                cls = int(present[smallest])
                name = repr(classes[cls]) if classes is not None and 0 <= cls < len(classes) else f"#{cls}"
                raise UserError(f"{self.name}: cross-validation to choose C needs at least 2 training images per "
                                f"class; class {name} has {int(counts[smallest])} (cv_folds: {self.cv_folds}); add "
                                f"training images to that class, or set a fixed C (e.g. -H C={self.example_C:g}) to "
                                "skip cross-validation")
            return list(StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y))
        return list(KFold(self.cv_folds, shuffle=True, random_state=self.seed).split(np.zeros(len(y))))
