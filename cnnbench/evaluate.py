"""Evaluation: feature files + data-set protocol + head -> a metrics file and a run record.

Needs nothing but the feature files: labels and ids come from them, and the data set's
:meth:`~cnnbench.dataset.Dataset.trials` only re-partitions stored rows.

:func:`write_results` writes two files per (backbone, data set, head):

``<head>.json``, the **metrics**: one flat object of numbers, each the mean over the protocol's
trials, plus ``<name>_std`` (their standard deviation) when there are several trials::

    {"accuracy": 0.947, "accuracy_std": 0.004, "mean_class_accuracy": 0.946, "mean_class_accuracy_std": 0.005}

With the data-set option ``shots`` (:mod:`cnnbench.fewshot`) it also holds ``<metric>@<k>shot`` and
``<metric>@<k>shot_std`` per k: the mean and spread over every seeded draw of every trial; the run
record's ``fewshot`` keeps the options and each draw's scores and drawn-ids SHA-256.

Flat, because ``dvc metrics show`` makes a column of every numeric leaf of every metrics file:
flat names give one column per metric, the same column for the same metric on every data set,
and nothing else, so the table reads as results. Left out, because each would be a column of its
own: per-class breakdowns (``AP/<class>``: dozens per data set), diagnostics (the chosen C),
counts, and a mean that is not finite (JSON has no NaN; its trials stay in the run record).

``<head>.outcomes.json``, the **outcomes** (:mod:`cnnbench.outcomes`): what the head kept of each
test item per trial (its 0/1 hit, decision values, a query's AP and first results), from which
``cnnbench compare`` draws bootstrap intervals and paired tests and ``cnnbench show`` its pictures.
Always written (with no trials for a head that keeps none), so DVC can declare it.

``<head>.run.json``, the **run record**, beside it: what the numbers are and where they came
from. Backbone, data set, head, layer, task, primary metric, every trial's results, breakdowns,
head parameters, data-set options, skipped images, and ``provenance``: package versions, the
distribution and version of the plugin behind the backbone, the data set and the head, and per
feature file its runtime and the SHA-256 of its extraction signature. Sorted keys and no
timestamps: the same run writes the same bytes, so DVC sees no change where there is none.

:func:`read_results` reads the pair back (and the single-file records of older versions).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
from pathlib import Path

import numpy as np

from . import __version__
from . import outcomes as OUTCOMES
from .dataset import Dataset
from .errors import CnnbenchError
from .head import FeatureSet, Head
from .jsonio import beside, write_json

RUN_SUFFIX = ".run.json"  # metrics/<backbone>/<dataset>/<head>.json -> <head>.run.json beside it
STD_SUFFIX = "_std"
# distributions whose version can change the numbers; alternatives name the same package
VERSIONED = {"torch": ("torch",), "timm": ("timm",), "open_clip_torch": ("open_clip_torch",),
             "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "numpy": ("numpy",),
             "scikit-learn": ("scikit-learn",), "h5py": ("h5py",)}


def _gather(sets: dict[str, FeatureSet], selection: dict[str, np.ndarray | None],
            validation: tuple[str, ...] = ()) -> FeatureSet:
    """The selected rows of the stored splits, in order; rows of the ``validation`` splits marked."""
    parts, marks = [], []
    for split, index in selection.items():
        fs = sets[split]
        parts.append(fs if index is None else fs.subset(index))
        marks.append(np.full(len(parts[-1]), split in validation))
    mask = np.concatenate(marks) if validation else None
    if mask is not None and (mask.all() or not mask.any()):
        mask = None  # nothing left to fit on, or nothing to validate on: cross-validation instead
    if len(parts) == 1:
        return parts[0] if mask is None else dataclasses.replace(parts[0], validation=mask)
    return FeatureSet(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.ids for p in parts]),
        parts[0].classes,
        {k: v for p in parts for k, v in p.extras.items()},
        parts[0].views,
        mask,
    )


def evaluate(features_dir: str | os.PathLike, dataset: Dataset, head: Head, head_name: str,
             layer: str | None = None, *, backbone: str | None = None) -> dict:
    """Run every trial of the data set's protocol. Returns the run record plus ``metrics`` and
    ``std`` (means and spreads over trials, breakdowns included), the shape :func:`read_results`
    gives back; :func:`write_results` splits it into the two files. ``backbone``: the name the
    user asked for (default: the feature files' ``backbone``), used to find its plugin."""
    from . import store  # here, not at the top: compare reads results without h5py

    features_dir = Path(features_dir)
    infos = {split: store.open_info(features_dir / f"{split}.h5") for split in dataset.splits}
    sets = {split: store.read(info.path, layer) for split, info in infos.items()}
    info = infos[dataset.splits[0]]
    backbone = backbone or info.attrs.get("backbone")
    trials = dataset.trials({split: fs.labels for split, fs in sets.items()})
    from .retrieval import open_distractors

    distractors = open_distractors(dataset, features_dir, infos, sets, layer)  # option `distractors` (R1M), or None
    per_trial, kept = [], []
    for trial in trials:
        train, test = _gather(sets, trial.train, trial.validation), _gather(sets, trial.test)
        if distractors is not None:  # appended after the database rows (streamed by heads that can)
            train = distractors.append_to(train, head)
        scores = dict(head.evaluate(train, test, dataset.task, metric=dataset.metric))
        outcome = scores.pop(OUTCOMES.KEY, None)
        if isinstance(outcome, OUTCOMES.Outcomes):
            kept.append((trial.name, outcome))
        per_trial.append({"trial": trial.name, "n_train": len(train), "n_test": len(test), **scores})
    skip = {"n_train", "n_test", *head.diagnostics}
    keys = [k for k, v in per_trial[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip]
    means = {k: float(np.mean([t[k] for t in per_trial])) for k in keys}
    spread = {k: float(np.std([t[k] for t in per_trial])) for k in keys} if len(per_trial) > 1 else {}
    skipped = sum(i.attrs.get("n_skipped", 0) for i in infos.values())
    fewshot = getattr(dataset, "fewshot", None)
    extra = {}
    if fewshot is not None:
        shot_means, shot_spread, extra["fewshot"] = _fewshot(sets, trials, dataset, head, fewshot)
        means.update(shot_means)
        spread.update(shot_spread)
    return {
        "backbone": backbone,
        "layer": layer or info.attrs.get("default_layer"),
        "dataset": dataset.name,
        "head": head_name,
        "task": dataset.task,
        "primary_metric": _primary_metric(head, dataset),
        "metrics": means,
        "std": spread,
        "trials": per_trial,
        "head_params": head.params,
        "dataset_options": dataset.options(),
        "skipped_images": int(skipped),
        "outcomes": kept,
        "provenance": {
            "versions": package_versions(),
            "plugins": {"backbone": _plugin("backbone", backbone), "dataset": _plugin("dataset", dataset.name, dataset),
                        "head": _plugin("head", head_name, head)},
            "features_dir": str(features_dir),
            "features": {split: i.provenance() for split, i in infos.items()},
            **({"distractors": distractors.provenance()} if distractors is not None else {}),
        },
        **extra,
    }


def _fewshot(sets: dict[str, FeatureSet], trials, dataset: Dataset, head: Head, spec) -> tuple[dict, dict, dict]:
    """Every trial x every k x every draw (:mod:`cnnbench.fewshot`): k training images per class, the
    trial's test images. Returns the means and spreads over draws (and trials) per ``<metric>@<k>shot``,
    and the run record's ``fewshot`` entry: the options and every draw's scores and drawn-ids hash."""
    from . import fewshot as F
    from .errors import UserError

    draws = []
    for trial in trials:
        pool = _gather(sets, trial.train)
        test = _gather(sets, trial.test)
        required = np.unique(test.labels) if np.asarray(test.labels).ndim == 1 else None
        sizes = {split: len(fs) for split, fs in sets.items()}
        for k in spec.shots:
            for t in range(spec.trials):
                positions = F.draw(pool.labels, k, spec.seed, t, trial=trial.name, required=required,
                                   class_names=list(pool.classes), dataset=dataset.name)
                train = _gather(sets, F.select(trial.train, sizes, positions))
                try:
                    scores = dict(head.evaluate(train, test, dataset.task, metric=dataset.metric))
                    scores.pop(OUTCOMES.KEY, None)  # intervals of few-shot numbers come from the draws
                except UserError as exc:
                    raise UserError(f"{dataset.name}: {k}-shot draw {t} of trial {trial.name!r}: {exc}") from exc
                draws.append({"trial": trial.name, "shots": k, "draw": t, "n_train": len(train), "n_test": len(test),
                              "ids_sha256": F.ids_sha256(train.ids), **scores})
    skip = {"n_train", "n_test", "shots", "draw", *head.diagnostics}
    means, spread = {}, {}
    for k in spec.shots:
        mine = [d for d in draws if d["shots"] == k]
        keys = [n for n, v in mine[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and n not in skip and "/" not in n]
        for n in keys:
            values = [d[n] for d in mine]
            means[F.metric_name(n, k)] = float(np.mean(values))
            if len(values) > 1:
                spread[F.metric_name(n, k)] = float(np.std(values))
    return means, spread, {**spec.as_dict(), "draws": draws}


def _primary_metric(head: Head, dataset: Dataset) -> str | None:
    fn = getattr(head, "primary_metric_for", None)
    if callable(fn):
        return fn(dataset.task, dataset.metric)
    return head.primary_metric or dataset.metric


# -- provenance ------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """cnnbench's version and those of the packages that compute features and scores (None: not installed)."""
    versions: dict[str, str | None] = {"cnnbench": __version__}
    for key, dists in VERSIONED.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def _plugin(kind: str, name: str | None, obj: object = None) -> dict:
    """Who provides ``name``: its plugin, distribution and version. An object built by
    :func:`cnnbench.plugins.create` says so itself (``plugin_origin``), so a data set that renamed
    itself (``imagefolder``'s ``name`` option) is still found; otherwise the name is looked up."""
    from . import plugins

    origin = getattr(obj, "plugin_origin", None)
    if not isinstance(origin, dict) and name:
        try:
            reg, _ = plugins.lookup(kind, name)
            origin = {"plugin": reg.plugin, "distribution": reg.distribution, "version": reg.version}
        except CnnbenchError:  # unknown, or claimed by two plugins: say nothing rather than guess
            origin = None
    origin = origin or {}
    return {"name": name, **{k: origin.get(k) or None for k in ("plugin", "distribution", "version")}}


# -- the two files ---------------------------------------------------------------------------------------


def run_record_path(metrics_path: str | os.PathLike) -> Path:
    """``.../svm.json`` -> ``.../svm.run.json``."""
    return beside(metrics_path, RUN_SUFFIX)


def split_record(record: dict) -> tuple[dict[str, float], dict]:
    """(metrics numbers, run record) from what :func:`evaluate` returns; see the module docstring."""
    numbers: dict[str, float] = {}
    non_finite = []
    for name, value in record.get("metrics", {}).items():
        if "/" in name:
            continue  # a breakdown: run record only
        if not math.isfinite(value):
            non_finite.append(name)
            continue
        numbers[name] = float(value)
        spread = record.get("std", {}).get(name)
        if spread is not None and math.isfinite(spread):
            numbers[name + STD_SUFFIX] = float(spread)
    run = {k: v for k, v in record.items() if k not in ("metrics", "std", "outcomes")}
    run["breakdown"] = {k: v for k, v in record.get("metrics", {}).items() if "/" in k}
    run["breakdown_std"] = {k: v for k, v in record.get("std", {}).items() if "/" in k}
    run["non_finite_metrics"] = non_finite
    return numbers, run


def write_results(record: dict, metrics_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the metrics file at ``metrics_path`` and the run record beside it (:func:`run_record_path`);
    returns both paths. The run record goes first, so a metrics file never lacks its record."""
    metrics_path = Path(metrics_path)
    if metrics_path.name.endswith(RUN_SUFFIX):
        raise CnnbenchError(f"{metrics_path}: a metrics file may not end in {RUN_SUFFIX!r}, which names run records; "
                            "rename the head")
    numbers, run = split_record(record)
    OUTCOMES.write(OUTCOMES.path_for(metrics_path), record.get("outcomes", []), backbone=record.get("backbone"),
                   dataset=record.get("dataset"), head=record.get("head"))
    run_path = write_json(run_record_path(metrics_path), run)
    return write_json(metrics_path, numbers), run_path


def read_results(metrics_path: str | os.PathLike) -> dict | None:
    """The record :func:`evaluate` returned, from a metrics file and its run record (or from a
    single-file record of an older cnnbench). None: the file is not a metrics file. A metrics file
    without its run record raises ``ValueError``: its numbers cannot be placed in a table."""
    path = Path(metrics_path)
    if path.name.endswith(RUN_SUFFIX):
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("metrics"), dict) and {"backbone", "dataset", "head"} <= data.keys():
        return data  # one file per result, as cnnbench 0.1 wrote it
    if not data or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
        return None
    run_path = run_record_path(path)
    if not run_path.exists():
        raise ValueError(f"no run record {run_path.name} beside it; rerun `cnnbench evaluate` for this result")
    run = json.loads(run_path.read_text())
    spreads = {n for n in data if n.endswith(STD_SUFFIX) and n[: -len(STD_SUFFIX)] in data}
    record = {k: v for k, v in run.items() if k not in ("breakdown", "breakdown_std", "non_finite_metrics")}
    record["metrics"] = {**{k: v for k, v in data.items() if k not in spreads}, **run.get("breakdown", {})}
    record["std"] = {**{k[: -len(STD_SUFFIX)]: data[k] for k in spreads}, **run.get("breakdown_std", {})}
    return record
