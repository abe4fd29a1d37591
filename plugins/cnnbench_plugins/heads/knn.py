"""``knn``: weighted k-nearest-neighbour classification on L2-normalised features, as DINO evaluates.

Protocol (Caron et al. 2021, ``eval_knn.py``'s ``knn_classifier``, after Wu et al. 2018):

* features: L2-normalised, so the similarity s of a test and a training image is their cosine (a
  dot product). Features with views (N, V, D): each view is L2-normalised, the views of an image
  are averaged into one vector and that is L2-normalised again: a kNN compares images, one vote
  per training image (the ``svm`` head's per-view training has no kNN counterpart that keeps it);
* each test image's k most similar training images vote with weight exp(s / T); multi-class: the
  class with the largest total wins (ties: the lowest class index). Defaults k = 20, T = 0.07
  (DINO's). Weights are computed as exp((s - s_max) / T), s_max the query's best similarity:
  the same votes up to one factor per query (same argmax, same label averages), and no overflow
  at a small T;
* multi-label data sets (VOC 2007, UIUC, H3D): the score of class c is the weighted average of
  the neighbours' 0/1 labels for c, over the neighbours labelled for c (-1 ignored):
  Σ_j w_j [y_jc = 1] / Σ_j w_j [y_jc ≥ 0], 0 when none of the k is labelled. Scored like the
  ``svm`` head: ``mAP`` (VOC 2007 11-point AP; ``ap: exact`` for non-interpolated), ``mean_auc``,
  and the per-class ``AP/<class>``;
* ``k`` may be a list (DINO reports 10, 20, 100, 200): one top-k search of the largest k serves
  every k. The first k is the primary one, reported under the plain names (``accuracy``,
  ``mean_class_accuracy``; ``mAP``, ``mean_auc``, ``AP/<class>``); every k also gives
  ``<metric>@k=<k>``. A k above the number of training images uses them all (logged);
* nothing is fitted or chosen: test labels are read only to score;
* memory stays bounded: test images are searched ``chunk_size`` at a time (a chunk holds
  ``chunk_size`` x training-images similarities), in torch on ``device`` (cpu, cuda, or auto: a GPU when there is one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, l2_normalize
from cnnbench.outcomes import KEY as OUTCOMES
from cnnbench.scores import score_name

from ._common import (
    MAX_CHUNK,
    ClassifierHead,
    check_device,
    classifier_outcomes,
    classifier_scores,
)

log = logging.getLogger("cnnbench.heads.knn")
MAX_KS = 32  # neighbourhood sizes in one run: each keeps a (test images x classes) score matrix and its metrics


@hookimpl
def register_heads(register):
    register("knn", KNNHead,
             description="weighted k-nearest-neighbour vote on cosine similarity (DINO: k=20, T=0.07), "
                         "several k at once")


def at_k(metric: str, k: int) -> str:
    """The name of ``metric`` at neighbourhood size ``k``."""
    return score_name(metric, k=k)


def _k(name: str, value) -> int | tuple[int, ...]:
    """One neighbourhood size, or several (a list, repeats dropped: they add nothing), at most ``MAX_KS``."""
    ks = list(dict.fromkeys(O.int_list(name, value, min=1)))
    if len(ks) > MAX_KS:
        raise UserError(f"{name}: {len(ks)} values are not allowed; expected at most {MAX_KS} neighbourhood sizes, "
                        "e.g. [10, 20, 100, 200]")
    return tuple(ks) if isinstance(value, (list, tuple)) else ks[0]


def _device(name: str, value) -> str:
    """The torch device the search runs on (``auto`` resolved): the knn head always uses it."""
    return check_device(name, value, used=True)


@dataclass(frozen=True)
class KNNOptions(O.Options):
    """The knn head's options; ``k`` as given (one size, or a list: the first is the primary one)."""

    k: int | tuple[int, ...] = O.option(20, "neighbours that vote (DINO: 20), or a list of sizes scored at once "
                                            "(the first is the primary one)", check=_k)
    T: float = O.option(0.07, "the temperature of the vote weights exp(similarity / T) (DINO: 0.07)", min=0,
                        min_exclusive=True, fix="the temperature of the vote weights exp(similarity / T) (DINO: 0.07)")
    chunk_size: int = O.option(256, "test images searched at once (memory: chunk_size x training images)", min=1,
                               max=MAX_CHUNK, fix="the number of test images searched at once (default 256); lower "
                                                  "it to save memory")
    device: str = O.option("cpu", "torch device of the search (cpu, cuda, cuda:N, mps, or auto)", check=_device)
    ap: Literal["voc07", "exact"] = O.option("voc07", "mAP as VOC 2007's 11-point AP, or the exact "
                                                      "(non-interpolated) AP")


class KNNHead(ClassifierHead):
    name = "knn"
    Options = KNNOptions

    def setup(self) -> None:
        self.ks = list(self.k) if isinstance(self.k, tuple) else [self.k]
        self._warned: set[int] = set()

    @staticmethod
    def _prepare(features: np.ndarray) -> np.ndarray:
        """(N, D) → L2-normalised; (N, V, D) → views L2-normalised, averaged, L2-normalised."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 3:
            x = l2_normalize(x).mean(axis=1)
        if x.ndim != 2:
            raise UserError(f"knn: features must be (N, D) or (N, V, D), got shape {x.shape}; "
                            "extract a pooled layer (pooling avg or max)")
        return l2_normalize(x)

    def decision_values(self, train: FeatureSet, test: FeatureSet, task: str, *,
                        metric: str | None = None) -> dict[int, np.ndarray]:
        """{k: scores (N_test, K)}: the weighted votes (multi-class) or label averages (multi-label)
        of the k nearest training images. Reads ``test.features`` only."""
        import torch

        if task not in self.tasks:
            raise UserError(f"knn: the knn head handles multiclass and multilabel data sets, not a {task} one; "
                            "use the l2 head for retrieval data sets")
        for which, fs in (("training", train), ("test", test)):
            if len(fs) == 0:
                raise UserError(f"knn: the trial's {which} selection holds no images; check the data set's split "
                                "options and that its feature files are not empty")
        ytr = np.asarray(train.labels)
        if task == "multilabel" and ytr.ndim != 2:
            raise UserError(f"knn: a multilabel data set needs (N, C) labels, got shape {ytr.shape}; "
                            "were these features extracted for this data set?")
        if task == "multiclass" and ytr.ndim != 1:
            raise UserError(f"knn: a multiclass data set needs (N,) class ids, got shape {ytr.shape}; "
                            "were these features extracted for this data set?")
        dev = torch.device(self.device)
        Xtr = torch.as_tensor(self._prepare(train.features), device=dev)
        Xte = torch.as_tensor(self._prepare(test.features), device=dev)
        n = Xtr.shape[0]
        if max(self.ks) > n and n not in self._warned:  # once per size, not once per few-shot draw
            self._warned.add(n)
            log.warning("knn: k=%d exceeds the %d training images; every training image votes", max(self.ks), n)
        kmax = min(max(self.ks), n)
        if task == "multiclass":
            n_outputs = max(len(train.classes), int(ytr.max()) + 1)
            labels = torch.as_tensor(ytr, dtype=torch.long, device=dev)
        else:
            n_outputs = ytr.shape[1]
            positive = torch.as_tensor(ytr > 0, dtype=torch.float32, device=dev)
            labelled = torch.as_tensor(ytr >= 0, dtype=torch.float32, device=dev)
        out = {k: np.empty((len(Xte), n_outputs), dtype=np.float32) for k in self.ks}
        for start in range(0, len(Xte), self.chunk_size):
            sim = Xte[start:start + self.chunk_size] @ Xtr.T  # (c, N)
            top, idx = sim.topk(kmax, dim=1)  # most similar first
            w = torch.exp((top - top[:, :1]) / self.T)
            for k in self.ks:
                kk = min(k, kmax)
                if task == "multiclass":
                    votes = torch.zeros(len(sim), n_outputs, device=dev)
                    votes.scatter_add_(1, labels[idx[:, :kk]], w[:, :kk])
                else:
                    wk = w[:, :kk, None]
                    num = (wk * positive[idx[:, :kk]]).sum(1)
                    den = (wk * labelled[idx[:, :kk]]).sum(1)
                    votes = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
                out[k][start:start + len(sim)] = votes.cpu().numpy()
        return out


    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        decisions = self.decision_values(train, test, task, metric=metric)
        yte = np.asarray(test.labels)
        out: dict[str, float] = {}
        for i, k in enumerate(self.ks):
            scores = classifier_scores(task, decisions[k], yte, self.ap, list(test.classes))
            if i == 0:  # the primary k: plain names, and the per-class breakdown
                out.update(scores)
            out.update({at_k(n, k): v for n, v in scores.items() if "/" not in n})
        out[OUTCOMES] = classifier_outcomes(task, decisions[self.ks[0]], yte, test.ids, self.ap)  # the primary k
        return out
