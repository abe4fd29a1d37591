"""Evaluation: feature files + data-set protocol + head -> a result (:mod:`cnnbench.results`).

Needs nothing but the feature files: labels and ids come from them, and the data set's
:meth:`~cnnbench.dataset.Dataset.trials` only re-partitions stored rows. Feature files are checked
against what was asked for before anything is fitted (:func:`cnnbench.store.check_features`): a
file of another data set, split or backbone is one line. What a result is, and its files, are
:mod:`cnnbench.results`' (``write_results``, ``read_results`` are re-exported here).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from pathlib import Path

import numpy as np

from . import __version__
from . import outcomes as OUTCOMES
from .dataset import Dataset
from .errors import CnnbenchError, UserError
from .head import FeatureSet, Head
from .recipes import DEFAULT as DEFAULT_RECIPE
from .recipes import EvalOptions, Recipe
from .settings import FEATURE_KEYS
from .results import (MAX_RECORD_BYTES, RUN_SUFFIX, STD_SUFFIX, UNIT, check_record, read_outcomes,  # noqa: F401
                      read_results, rerun_hint, result_path, run_record_path, split_record, write_results)

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
             layer: str | None = None, *, backbone: str | None = None, expected: dict | None = None,
             check_ids: bool = False, evaluation: EvalOptions | None = None, recipe: Recipe | None = None) -> dict:
    """Run every trial of the data set's protocol. Returns the run record plus ``metrics`` and
    ``std`` (means and spreads over trials, breakdowns included), the shape :func:`read_results`
    gives back; :func:`write_results` splits it into the files. ``backbone``: the name the user
    asked for (default: the feature files' ``backbone``), used to find its plugin.

    Every feature file is checked first (:func:`cnnbench.store.check_features`): it is of this data
    set, this split and ``backbone``, of the same backbone, weights and settings as the other splits,
    and holds the ``expected`` attributes (the caller's knowledge, e.g. the weights' digest); with
    ``check_ids`` its images (stored and skipped) are the ones the data set lists now (other data-set
    options, an image added since: other images). ``evaluation``: the few-shot draws and distractors
    (:class:`cnnbench.recipes.EvalOptions`; default: ``recipe``'s, else none); ``recipe``: the
    recipe the result is of, named with its contents in the record (``recipe``, ``recipe_spec``)."""
    from . import store  # here, not at the top: compare reads results without h5py

    evaluation = evaluation or (recipe.evaluation if recipe is not None else EvalOptions())
    evaluation.check_for(dataset, f"recipe {recipe.name}" if recipe is not None else "evaluation")

    features_dir = Path(features_dir)
    infos = {split: store.open_info(features_dir / f"{split}.h5") for split in dataset.splits}
    info = infos[dataset.splits[0]]
    backbone = backbone or info.attrs.get("backbone")
    named = f" --recipe {recipe.name}" if recipe is not None and recipe.name != DEFAULT_RECIPE else ""
    fix = (f"extract them again (`cnnbench extract -b {backbone} -d {dataset.name}{named} --overwrite`) or point "
           f"--features at the folder that holds them")
    for split, i in infos.items():
        store.check_features(i, {"dataset": dataset.name, "split": split, "backbone": backbone, **(expected or {})},
                       "evaluate asked for", fix)
        store.check_features(i, {k: info.attrs.get(k) for k in SHARED}, f"{info.path.name} holds", fix)
    sets = {split: store.read(info.path, layer) for split, info in infos.items()}
    if check_ids:
        for split, i in infos.items():
            _check_ids(i, sets[split].ids, [item.id for item in dataset.items(split)], fix)
    trials = dataset.trials({split: fs.labels for split, fs in sets.items()})
    from .retrieval import open_distractors

    distractors = open_distractors(dataset, features_dir, infos, sets, layer, evaluation.distractors)  # R1M, or None
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
    fewshot = evaluation.fewshot
    extra = {"recipe": recipe.name, "recipe_spec": recipe.to_json()} if recipe is not None else {}
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


# what every split of one evaluation shares: one backbone with one set of weights, one preprocessing and
# the same extraction settings (view names and box scale may differ: retrieval queries have their own)
SHARED = ("backbone", "backbone_plugin", "weights_sha256", "preprocess",
          *(k for k in FEATURE_KEYS if k not in ("layers", "spatial_levels", "box_scale")), "dataset_options")


def _check_ids(info, stored, listed: list[str], fix: str) -> None:
    """The images of a feature file (rows and skipped ones) are those the data set lists for its split."""
    from .store import read_skipped

    have = set(map(str, stored)) | {sid for sid, _ in read_skipped(info.path)}
    want = set(listed)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        some = "; ".join(f"{len(ids)} {what}, e.g. {ids[0]!r}" for ids, what in
                         ((missing, "it lacks"), (extra, "the data set no longer lists")) if ids)
        raise UserError(f"feature file {info.path} holds {len(have)} images, but the data set lists {len(want)} for "
                        f"{info.attrs.get('split')!r} now ({some}): the features are stale or of other data-set "
                        f"options (-D); {fix}")


def _fewshot(sets: dict[str, FeatureSet], trials, dataset: Dataset, head: Head, spec) -> tuple[dict, dict, dict]:
    """Every trial x every k x every draw (:mod:`cnnbench.fewshot`): k training images per class, the
    trial's test images. Returns the means and spreads over draws (and trials) per ``<metric>@<k>shot``,
    and the run record's ``fewshot`` entry: the options and every draw's scores and drawn-ids hash."""
    from . import fewshot as F

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


# -- the three files: one unit ---------------------------------------------------------------------------


