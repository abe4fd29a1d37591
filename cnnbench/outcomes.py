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

from .jsonio import ResultError, atomic_write_text, beside, describe, parse, read_bytes

KEY = "outcomes"  # where a head's evaluate() puts its Outcomes
SUFFIX = ".outcomes.json"  # metrics/<backbone>/<dataset>/<head>.json -> <head>.outcomes.json
FORMAT = 1
RANKING_DEPTH = 10  # database ids kept per query: what `cnnbench show` draws
# the largest outcomes file read: the largest cnnbench writes for the paper's data sets are a few MB
# (VOC 2007: 4,952 images x 20 decision values); a file past it is refused before it is read
MAX_BYTES = 256 << 20
RERUN = "rerun `cnnbench evaluate` for this result"


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
        """From what :meth:`to_json` wrote; ``ValueError`` naming the field when a field has another
        type or shape than it writes (string predictions, a ranking that is a number, ids that are not
        text), so that no number is ever computed from it."""
        if not isinstance(data, dict):
            raise ValueError(f"a trial is {describe(data)}, not an object")
        ids = data.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"'ids' is {describe(ids)}, not a list of ids")
        raw_values = data.get("values", {})
        if not isinstance(raw_values, dict):
            raise ValueError(f"'values' is {describe(raw_values)}, not an object")
        values = {k: _numbers(f"values[{k!r}]", [np.nan if x is None else x for x in _list(v, f"values[{k!r}]")],
                              "if", np.float64, 1, finite=False) for k, v in raw_values.items()}
        ranking = data.get("ranking")
        if ranking is not None:
            if not isinstance(ranking, list) or not all(isinstance(r, list) and all(isinstance(i, str) for i in r)
                                                         for r in ranking):
                raise ValueError(f"'ranking' is {describe(ranking)}, not one list of database ids per item")
            longest = max(map(len, ranking), default=0)
            if longest > RANKING_DEPTH:
                raise ValueError(f"'ranking' holds {longest} ids for one item; cnnbench keeps {RANKING_DEPTH}")
        ap = data.get("ap", "voc07")
        if ap not in ("voc07", "exact"):
            raise ValueError(f"'ap' is {ap!r}, not 'voc07' or 'exact'")
        labels, predictions, decisions = (data.get(k) for k in ("labels", "predictions", "decisions"))
        out = cls(ids=ids, labels=None if labels is None else _numbers("labels", labels, "i", np.int64, (1, 2)),
                  predictions=None if predictions is None else _numbers("predictions", predictions, "i", np.int64, 1),
                  decisions=None if decisions is None else _numbers("decisions", decisions, "if", np.float32, 2),
                  ap=ap, values=values, ranking=ranking)
        if (out.predictions is not None or out.decisions is not None) and out.labels is None:
            raise ValueError("it has predictions or decisions but no 'labels'")
        if out.decisions is not None and out.labels.shape != out.decisions.shape:
            raise ValueError(f"'labels' has shape {out.labels.shape}, 'decisions' {out.decisions.shape}")
        if out.predictions is not None and out.labels.ndim != 1:
            raise ValueError(f"'labels' has shape {out.labels.shape} beside predictions; one class id per item")
        return out


def _list(v, name: str) -> list:
    if not isinstance(v, list):
        raise ValueError(f"'{name}' is {describe(v)}, not a list")
    return v


def _numbers(name: str, v, kinds: str, dtype, ndim, finite: bool = True) -> np.ndarray:
    """``v`` as an array of ``dtype``, refused unless every element is a JSON number of ``kinds``
    (``i`` integers, ``f`` floats; never text or true/false: numpy would turn "1" into 1)."""
    try:
        a = np.asarray(v)
    except ValueError:  # ragged
        raise ValueError(f"'{name}' is ragged (rows of different lengths)") from None
    if a.size == 0:
        return a.astype(dtype)
    if a.dtype.kind not in kinds or a.dtype == object:
        what = {"U": "text", "b": "true/false", "O": "mixed values"}.get(a.dtype.kind, f"{a.dtype} values")
        raise ValueError(f"'{name}' holds {what}, not {'integers' if kinds == 'i' else 'numbers'}")
    if a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"'{name}' has shape {a.shape}")
    a = a.astype(dtype)
    if a.dtype.kind == "f" and (np.isinf(a).any() or (finite and np.isnan(a).any())):
        raise ValueError(f"'{name}' holds values that are not finite")
    return a


def path_for(metrics_path: str | os.PathLike) -> Path:
    """``.../svm.json`` -> ``.../svm.outcomes.json``."""
    return beside(metrics_path, SUFFIX)


def dumps(per_trial: list[tuple[str, Outcomes]], *, backbone=None, dataset=None, head=None) -> str:
    """The text of one outcomes file: every trial's outcomes, in trial order, and who they are of.
    Compact JSON (one item per line would be 10x larger), sorted keys, no timestamps: the same run
    writes the same bytes."""
    data = {"format": FORMAT, "backbone": backbone, "dataset": dataset, "head": head,
            "trials": [{"trial": name, **o.to_json()} for name, o in per_trial]}
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def write(path: str | os.PathLike, per_trial: list[tuple[str, Outcomes]], **who) -> Path:
    """:func:`dumps` into ``path``, atomically (``who``: backbone, dataset, head)."""
    return atomic_write_text(path, dumps(per_trial, **who))


def load(path: str | os.PathLike, fix: str = RERUN) -> tuple[dict, list[tuple[str, Outcomes]]]:
    """(who: backbone, dataset and head, every trial's outcomes) from a file :func:`write` wrote;
    :class:`~cnnbench.jsonio.ResultError` (one line naming the file and ending in ``fix``) on
    anything else. A file over :data:`MAX_BYTES` is refused before it is read."""
    path = Path(path)
    data = parse(read_bytes(path, MAX_BYTES, fix), path, fix)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("trials"), list):
        raise ResultError(f"{path}: not an outcomes file of format {FORMAT}; {fix}")
    who = {k: data.get(k) for k in ("backbone", "dataset", "head")}
    trials = []
    for k, t in enumerate(data["trials"]):
        name = t.get("trial") if isinstance(t, dict) else None
        try:
            if not isinstance(name, str):
                raise ValueError(f"its 'trial' is {describe(name)}, not a name")
            trials.append((name, Outcomes.from_json(t)))
        except ValueError as exc:
            raise ResultError(f"{path}: trial {k} ({name if isinstance(name, str) else '?'}): {exc}; {fix}") from None
    return who, trials


def read(path: str | os.PathLike, fix: str = RERUN) -> list[tuple[str, Outcomes]]:
    """Every trial's outcomes from a file :func:`write` wrote (see :func:`load`)."""
    return load(path, fix)[1]
