"""Per-item outcomes: what a head keeps of each test image (or query) of a trial.

A mean over a few hundred test images is not a result until it comes with its uncertainty, and
two backbones scored on the same images are compared pair by pair, not number by number. Both
need each item's outcome, not only the mean; so a head returns an :class:`Outcomes` under the key
``"outcomes"`` beside its numbers, and :func:`cnnbench.evaluate.write_results` keeps them in a
sidecar ``<head>.outcomes.json`` next to the metrics (not in the metrics file: ``dvc metrics``
makes a column of every number). :mod:`cnnbench.stats` recomputes a metric on any resample of the
items from them (bootstrap intervals, paired tests); ``cnnbench show`` draws the rankings.

What an item's outcome is depends on how its metric is computed:

* ``values[m]``: one number per item whose mean (NaN items left out) *is* the metric ``m``:
  a retrieval query's AP (``mAP``, ``mAP_medium``…), its top-4 count / 4 (``top4``), a test
  image's 0/1 nearest-neighbour hit (``nn_accuracy``).
* ``labels`` + ``predictions`` (multi-class): ``accuracy`` and ``mean_class_accuracy``.
* ``labels`` + ``decisions`` (multi-label, (N, C)): ``mAP`` (``ap``: voc07 or exact) and ``mean_auc``,
  recomputed per class on the resample.
* ``ranking``: the first database ids per query (retrieval), for pictures; not a metric.

A head without outcomes still works: its numbers get intervals only where the protocol has
several trials.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .jsonio import atomic_write_text, beside

KEY = "outcomes"  # where a head's evaluate() puts its Outcomes
SUFFIX = ".outcomes.json"  # metrics/<backbone>/<dataset>/<head>.json -> <head>.outcomes.json
FORMAT = 1
RANKING_DEPTH = 10  # database ids kept per query: what `cnnbench show` draws


@dataclass
class Outcomes:
    ids: list[str]
    labels: np.ndarray | None = None  # (N,) class ids, or (N, C) 1/0/-1 for multi-label
    predictions: np.ndarray | None = None  # (N,) predicted class ids (multi-class)
    decisions: np.ndarray | None = None  # (N, C) decision values (multi-label)
    ap: str = "voc07"  # how mAP is computed from decisions: voc07 (11-point) or exact
    values: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (N,) per-item values
    ranking: list[list[str]] | None = None  # per item, the first RANKING_DEPTH database ids

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        n = len(self.ids)
        for name in ("labels", "predictions", "decisions"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v)
                if len(v) != n:
                    raise ValueError(f"outcomes: {name} has {len(v)} rows for {n} items")
                setattr(self, name, v)
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}
        for k, v in self.values.items():
            if v.shape != (n,):
                raise ValueError(f"outcomes: values[{k!r}] has shape {v.shape} for {n} items")
        if self.ranking is not None and len(self.ranking) != n:
            raise ValueError(f"outcomes: ranking has {len(self.ranking)} rows for {n} items")

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        """Equal items and outcomes (NaN equal to NaN): two runs of a deterministic head compare equal."""
        if not isinstance(other, Outcomes):
            return NotImplemented
        same = (lambda a, b: (a is None and b is None)
                or (a is not None and b is not None and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")))
        return (self.ids == other.ids and self.ap == other.ap and self.ranking == other.ranking
                and all(same(getattr(self, n), getattr(other, n)) for n in ("labels", "predictions", "decisions"))
                and self.values.keys() == other.values.keys()
                and all(np.array_equal(v, other.values[k], equal_nan=True) for k, v in self.values.items()))

    __hash__ = None  # mutable, like the arrays it holds

    def subset(self, rows) -> "Outcomes":
        """The outcomes of ``rows`` (item positions, in that order)."""
        rows = [int(k) for k in rows]
        if rows == list(range(len(self))):
            return self
        r = np.asarray(rows, dtype=np.int64)
        pick = (lambda v: None if v is None else v[r])
        return Outcomes([self.ids[k] for k in rows], labels=pick(self.labels), predictions=pick(self.predictions),
                        decisions=pick(self.decisions), ap=self.ap, values={k: v[r] for k, v in self.values.items()},
                        ranking=None if self.ranking is None else [self.ranking[k] for k in rows])

    def metrics(self) -> list[str]:
        """The metrics these outcomes can recompute."""
        names = list(self.values)
        if self.predictions is not None and self.labels is not None:
            names += ["accuracy", "mean_class_accuracy"]
        if self.decisions is not None and self.labels is not None:
            names += ["mAP", "mean_auc"]
        return sorted(set(names))

    def metric(self, name: str, rows: np.ndarray | None = None) -> float:
        """Metric ``name`` on the items ``rows`` (a resample: indices, repeats allowed; None: all)."""
        from . import metrics as M

        if name in self.values:
            v = self.values[name] if rows is None else self.values[name][rows]
            v = v[~np.isnan(v)]
            return float(v.mean()) if len(v) else float("nan")
        take = (lambda a: a) if rows is None else (lambda a: a[rows])
        if name in ("accuracy", "mean_class_accuracy") and self.predictions is not None:
            fn = M.accuracy if name == "accuracy" else M.mean_class_accuracy
            return fn(take(self.labels), take(self.predictions))
        if name in ("mAP", "mean_auc") and self.decisions is not None:
            dec, lab = take(self.decisions), take(self.labels)
            return M.multilabel_map(dec, lab, self.ap)[0] if name == "mAP" else M.mean_auc(dec, lab)[0]
        raise KeyError(name)

    def to_json(self) -> dict:
        out: dict = {"ids": self.ids}
        for name in ("labels", "predictions"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v.astype(np.int64).tolist()
        if self.decisions is not None:
            out["decisions"] = np.asarray(self.decisions, np.float32).tolist()  # float32: what heads compute in
            out["ap"] = self.ap
        if self.values:
            out["values"] = {k: [None if np.isnan(x) else float(x) for x in v] for k, v in self.values.items()}
        if self.ranking is not None:
            out["ranking"] = [[str(i) for i in r] for r in self.ranking]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Outcomes":
        values = {k: np.array([np.nan if x is None else x for x in v], dtype=np.float64)
                  for k, v in data.get("values", {}).items()}
        return cls(ids=data["ids"], labels=_array(data.get("labels")), predictions=_array(data.get("predictions")),
                   decisions=_array(data.get("decisions"), np.float32), ap=data.get("ap", "voc07"), values=values,
                   ranking=data.get("ranking"))


def _array(v, dtype=None):
    return None if v is None else np.asarray(v, dtype=dtype)


def path_for(metrics_path: str | os.PathLike) -> Path:
    """``.../svm.json`` -> ``.../svm.outcomes.json``."""
    return beside(metrics_path, SUFFIX)


def write(path: str | os.PathLike, per_trial: list[tuple[str, Outcomes]], *, backbone=None, dataset=None,
          head=None) -> Path:
    """One file per result: every trial's outcomes, in trial order. Compact JSON (one item per
    line would be 10x larger), sorted keys, no timestamps: the same run writes the same bytes."""
    data = {"format": FORMAT, "backbone": backbone, "dataset": dataset, "head": head,
            "trials": [{"trial": name, **o.to_json()} for name, o in per_trial]}
    return atomic_write_text(path, json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


def read(path: str | os.PathLike) -> list[tuple[str, Outcomes]]:
    """Every trial's outcomes from a sidecar written by :func:`write`; ``ValueError`` on anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable outcomes file ({exc}); rerun `cnnbench evaluate` for this result") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("trials"), list):
        raise ValueError(f"{path}: not an outcomes file of format {FORMAT}; rerun `cnnbench evaluate` for this result")
    try:
        return [(str(t["trial"]), Outcomes.from_json(t)) for t in data["trials"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: damaged outcomes file ({exc}); rerun `cnnbench evaluate` for this result") from None
