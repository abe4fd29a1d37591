"""Evaluation: feature files + data-set protocol + head -> one small metrics record.

Needs nothing but the feature files: labels and ids come from them, and the data set's
:meth:`~cnnbench.dataset.Dataset.trials` only re-partitions stored rows.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np

from . import __version__, store
from .dataset import Dataset
from .head import FeatureSet, Head


def _gather(sets: dict[str, FeatureSet], selection: dict[str, np.ndarray | None]) -> FeatureSet:
    parts = []
    for split, index in selection.items():
        fs = sets[split]
        parts.append(fs if index is None else fs.subset(index))
    if len(parts) == 1:
        return parts[0]
    return FeatureSet(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.ids for p in parts]),
        parts[0].classes,
        {k: v for p in parts for k, v in p.extras.items()},
        parts[0].views,
    )


def evaluate(features_dir: str | os.PathLike, dataset: Dataset, head: Head, head_name: str,
             layer: str | None = None) -> dict:
    """Run every trial of the data set's protocol; returns the record written as metrics JSON."""
    features_dir = Path(features_dir)
    infos = {split: store.open_info(features_dir / f"{split}.h5") for split in dataset.splits}
    sets = {split: store.read(info.path, layer) for split, info in infos.items()}
    info = infos[dataset.splits[0]]
    trials = dataset.trials({split: fs.labels for split, fs in sets.items()})
    per_trial = []
    extra = {"metric": dataset.metric} if _accepts_metric(head) else {}
    for trial in trials:
        train, test = _gather(sets, trial.train), _gather(sets, trial.test)
        scores = head.evaluate(train, test, dataset.task, **extra)
        per_trial.append({"trial": trial.name, "n_train": len(train), "n_test": len(test), **scores})
    skip = {"n_train", "n_test", *head.diagnostics}
    keys = [k for k, v in per_trial[0].items() if isinstance(v, (int, float)) and k not in skip]
    metrics = {k: float(np.mean([t[k] for t in per_trial])) for k in keys}
    spread = {k: float(np.std([t[k] for t in per_trial])) for k in keys} if len(per_trial) > 1 else {}
    skipped = sum(i.attrs.get("n_skipped", 0) for i in infos.values())
    return {
        "backbone": info.attrs.get("backbone"),
        "layer": layer or info.attrs.get("default_layer"),
        "dataset": dataset.name,
        "head": head_name,
        "task": dataset.task,
        "primary_metric": _primary_metric(head, dataset),
        "metrics": metrics,
        "std": spread,
        "trials": per_trial,
        "head_params": head.params,
        "dataset_options": dataset.options(),
        "skipped_images": int(skipped),
        "cnnbench_version": __version__,
    }


def _accepts_metric(head: Head) -> bool:
    """Whether ``head.evaluate`` takes the data set's metric name (keyword ``metric`` or ``**kwargs``)."""
    try:
        params = inspect.signature(head.evaluate).parameters
    except (TypeError, ValueError):
        return False
    return "metric" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _primary_metric(head: Head, dataset: Dataset) -> str | None:
    fn = getattr(head, "primary_metric_for", None)
    if callable(fn):
        return fn(dataset.task, dataset.metric)
    return head.primary_metric or dataset.metric
