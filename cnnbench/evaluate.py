"""Evaluation: feature files + data-set protocol + head -> a metrics file and a run record.

Needs nothing but the feature files: labels and ids come from them, and the data set's
:meth:`~cnnbench.dataset.Dataset.trials` only re-partitions stored rows.

:func:`write_results` writes three files per (backbone, data set, recipe, head), one unit, at
``metrics/<backbone>/<dataset>/<recipe>/`` (:func:`result_path`):

``<head>.json``, the **metrics**: one flat object of numbers, each the mean over the protocol's
trials, plus ``<name>_std`` (their standard deviation) when there are several trials::

    {"accuracy": 0.947, "accuracy_std": 0.004, "mean_class_accuracy": 0.946, "mean_class_accuracy_std": 0.005}

With the evaluation option ``shots`` (:mod:`cnnbench.fewshot`, :class:`cnnbench.recipes.EvalOptions`) it also holds ``<metric>@<k>shot`` and
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
from. Backbone, data set, recipe (``recipe``, and its resolved contents ``recipe_spec``; a record
without them is of recipe ``cnn``), head, layer, task, primary metric, every trial's results, breakdowns,
head parameters, data-set options, skipped images, and ``provenance``: package versions, the
distribution and version of the plugin behind the backbone, the data set and the head, and per
feature file its runtime and the SHA-256 of its extraction signature. Sorted keys and no
timestamps: the same run writes the same bytes, so DVC sees no change where there is none.
Written last, it holds the size and SHA-256 of the other two and of its own fields (``unit``): it
commits the unit, so files of two evaluations (a run killed between two writes, a file copied in)
are never read as one, and an edited record is seen as edited.

:func:`read_results` reads a unit back, checked (and the single-file records of cnnbench 0.1);
:func:`read_outcomes` its outcomes. Feature files are checked against what was asked for before
anything is fitted (:func:`cnnbench.store.check_features`): a file of another data set, split or
backbone is one line.
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
from .errors import CnnbenchError, UserError
from .head import FeatureSet, Head
from .recipes import BUILTIN as BUILTIN_RECIPES
from .recipes import DEFAULT as DEFAULT_RECIPE
from .recipes import EvalOptions, Recipe
from .jsonio import (ResultError, atomic_write_text, beside, describe, dumps, file_fingerprint, fingerprint, parse,
                     read_bytes, write_json)

RUN_SUFFIX = ".run.json"  # metrics/<backbone>/<dataset>/<recipe>/<head>.json -> <head>.run.json beside it
STD_SUFFIX = "_std"
UNIT = "unit"  # the run record's key for the size and SHA-256 of the metrics and outcomes files written with it
MAX_RECORD_BYTES = 64 << 20  # metrics files and run records: cnnbench writes kilobytes (few-shot draws: a few MB)
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
SHARED = ("backbone", "backbone_plugin", "weights_sha256", "preprocess", "pooling", "views", "precision",
          "fast_decode", "exif_orientation", "max_pixels", "rotation_angles", "dataset_options")


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


def result_path(metrics_dir: str | os.PathLike, backbone: str, dataset: str, recipe: str, head: str) -> Path:
    """Where a result's metrics file goes: ``<metrics_dir>/<backbone>/<dataset>/<recipe>/<head>.json``."""
    return Path(metrics_dir) / backbone / dataset / recipe / f"{head}.json"


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
    """Write one result's three files: the outcomes and the metrics first, the run record last,
    holding the size and SHA-256 of the other two (and of its own fields) under ``unit``. The run record commits the unit: a
    run killed in between leaves files that are not those its run record was written with, and
    :func:`read_results` refuses them. Returns the metrics and run-record paths."""
    metrics_path = Path(metrics_path)
    if metrics_path.name.endswith(RUN_SUFFIX):
        raise CnnbenchError(f"{metrics_path}: a metrics file may not end in {RUN_SUFFIX!r}, which names run records; "
                            "rename the head")
    numbers, run = split_record(record)
    outcomes_text = OUTCOMES.dumps(record.get("outcomes", []), backbone=record.get("backbone"),
                                   dataset=record.get("dataset"), head=record.get("head"))
    metrics_text = dumps(numbers)
    atomic_write_text(OUTCOMES.path_for(metrics_path), outcomes_text)
    atomic_write_text(metrics_path, metrics_text)
    run = json.loads(dumps(run))  # as it reads back: its digest is that of what a reader sees
    run[UNIT] = {"metrics": fingerprint(metrics_text.encode()), "outcomes": fingerprint(outcomes_text.encode()),
                 "run": _sealed(run)}
    return metrics_path, write_json(run_record_path(metrics_path), run)


def _sealed(run: dict) -> dict:
    """The fingerprint of a run record's own fields (``unit`` left out): an edit is seen as one."""
    return fingerprint(dumps({k: v for k, v in run.items() if k != UNIT}).encode())


def read_results(metrics_path: str | os.PathLike) -> dict | None:
    """The record :func:`evaluate` returned (its outcomes aside: :func:`read_outcomes`), from a
    result's three files, or from a single-file record of cnnbench 0.1. None: the file is JSON of
    something else. Every fault is one :class:`~cnnbench.jsonio.ResultError` line naming the files
    and the ``cnnbench evaluate`` to rerun (:func:`_read_unit`, :func:`check_record`)."""
    path = Path(metrics_path)
    if path.name.endswith((RUN_SUFFIX, OUTCOMES.SUFFIX)):
        return None
    run_path = run_record_path(path)
    if not run_path.exists() and not OUTCOMES.path_for(path).exists():
        return _read_unclaimed(path)
    numbers, run = _read_unit(path)
    spreads = {n for n in numbers if n.endswith(STD_SUFFIX) and n[: -len(STD_SUFFIX)] in numbers}
    record = {k: v for k, v in run.items() if k not in ("breakdown", "breakdown_std", "non_finite_metrics", UNIT)}
    parts = {}
    for name in ("breakdown", "breakdown_std"):
        parts[name] = run.get(name, {})
        if not isinstance(parts[name], dict):
            raise ResultError(f"{run_path}: {name!r} is {describe(parts[name])}, not an object of numbers; "
                              f"{rerun_hint(path, run)}")
    record["metrics"] = {**{k: v for k, v in numbers.items() if k not in spreads}, **parts["breakdown"]}
    record["std"] = {**{k[: -len(STD_SUFFIX)]: numbers[k] for k in spreads}, **parts["breakdown_std"]}
    return check_record(record, run_path)


def _read_unit(path: Path) -> tuple[dict[str, float], dict]:
    """(the metrics file's numbers, the run record) of one result, once its three files are there,
    none is larger than cnnbench writes, and the metrics and outcomes files are the ones the run
    record was written with (their size and SHA-256, :func:`write_results`); the outcomes file is
    hashed in blocks, and not read at all when its size already differs."""
    run_path, side = run_record_path(path), OUTCOMES.path_for(path)
    fix = rerun_hint(path)
    for part in (path, run_path, side):
        if not part.exists():
            others = " and ".join(p.name for p in (path, run_path, side) if p != part)
            raise ResultError(f"{part} is missing beside {others} (an evaluation was interrupted, or it was "
                              f"deleted); {fix}")
    raw = read_bytes(path, MAX_RECORD_BYTES, fix)
    run = parse(read_bytes(run_path, MAX_RECORD_BYTES, fix), run_path, fix)
    if not isinstance(run, dict):
        raise ResultError(f"{run_path} holds {describe(run)}, not a run record; {fix}")
    fix = rerun_hint(path, run)
    unit = run.get(UNIT)
    if unit is None:
        raise ResultError(f"{run_path} was written by an older cnnbench, without the sizes and SHA-256 that tie it "
                          f"to {path.name} and {side.name}; {fix}")
    prints = [unit.get(k) if isinstance(unit, dict) else None for k in ("metrics", "outcomes", "run")]
    if not all(isinstance(p, dict) and isinstance(p.get("bytes"), int) for p in prints):
        raise ResultError(f"{run_path}: its {UNIT!r} is not the sizes and SHA-256 cnnbench writes; {fix}")
    if _sealed(run) != prints[2]:
        raise ResultError(f"{run_path} was changed after evaluate wrote it (its fields are not those it was sealed "
                          f"with); {fix}")
    for part, want, actual in ((path, prints[0], fingerprint(raw)),
                               (side, prints[1], file_fingerprint(side, prints[1]["bytes"]))):
        if actual != want:
            raise ResultError(f"{path.name}, {run_path.name} and {side.name} in {path.parent} do not belong together: "
                              f"{part.name} is not the file {run_path.name} was written with (an evaluation was "
                              f"interrupted, or a file was replaced); {fix}")
    numbers = parse(raw, path, fix)
    if not isinstance(numbers, dict):
        raise ResultError(f"{path} holds {describe(numbers)}, not an object of numbers; {fix}")
    for name, value in numbers.items():
        if not _is_number(value) or not math.isfinite(value):
            raise ResultError(f"{path}: {name!r} is {describe(value)}, not a finite number; {fix}")
    return numbers, run


def _read_unclaimed(path: Path) -> dict | None:
    """A JSON file that no run record or outcomes file claims: a single-file record of cnnbench 0.1
    (checked), a metrics file whose run record is gone (refused), else None (anybody's JSON). One
    that cannot be read raises a plain ``ValueError``: it may be anybody's, so callers may skip it."""
    fix = rerun_hint(path)
    try:
        data = parse(read_bytes(path, MAX_RECORD_BYTES, fix), path, fix)
    except ResultError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict) or not data:
        return None
    if isinstance(data.get("metrics"), dict) and {"backbone", "dataset", "head"} <= data.keys():
        return check_record(data, path)
    if all(_is_number(v) for v in data.values()):
        raise ResultError(f"{path}: no run record {run_record_path(path).name} beside it, so its numbers cannot be "
                          f"placed in a table; {fix}")
    return None


def read_outcomes(metrics_path: str | os.PathLike, record: dict) -> list:
    """Every trial's outcomes (:mod:`cnnbench.outcomes`) of the result :func:`read_results` read from
    ``metrics_path`` as ``record`` ([] for a single-file record, which kept none); one line when the
    file is of another backbone, data set or head than its run record."""
    side = OUTCOMES.path_for(metrics_path)
    if not side.exists() and not run_record_path(metrics_path).exists():
        return []
    fix = rerun_hint(Path(metrics_path), record)
    who, trials = OUTCOMES.load(side, fix)
    theirs = {k: record.get(k) for k in who}
    if who != theirs:
        field = next(k for k in who if who[k] != theirs[k])
        raise ResultError(f"{side} holds the outcomes of {field} {who[field]!r}, its run record "
                          f"{run_record_path(metrics_path).name} is of {theirs[field]!r}: they do not belong "
                          f"together; {fix}")
    return trials


def check_record(record: dict, source: str | os.PathLike) -> dict:
    """``record``, once every field a reader uses has the type :func:`evaluate` writes: names are
    text, metrics and spreads numbers, trials and few-shot draws lists of objects whose scores are
    numbers. Else one :class:`~cnnbench.jsonio.ResultError` line naming ``source`` and the field
    (a string score, ``trials: "x"``), so that no reader drops or misreads it without a word."""
    from .fewshot import split_metric_name

    fix = rerun_hint(Path(source), record)

    def bad(field: str, value, wanted: str):
        return ResultError(f"{source}: {field} is {describe(value)}, not {wanted}; {fix}")

    for key in ("backbone", "dataset", "head"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise bad(repr(key), record.get(key), "a name")
    for key in ("layer", "primary_metric", "task", "recipe"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise bad(repr(key), record[key], "a name")
    if record.get("recipe") == "":
        raise bad("'recipe'", "", "a name")
    if record.get("recipe_spec") is not None and not isinstance(record["recipe_spec"], dict):
        raise bad("'recipe_spec'", record["recipe_spec"], "an object")
    if record.get("recipe") is None:  # written before recipes: one view, each head's options, as `cnn` is
        record["recipe"] = DEFAULT_RECIPE
        record.setdefault("recipe_spec", BUILTIN_RECIPES[DEFAULT_RECIPE].to_json())
    for key in ("metrics", "std"):
        values = record.get(key, {})
        if not isinstance(values, dict):
            raise bad(repr(key), values, "an object of numbers")
        for name, v in values.items():
            if not _is_number(v):
                raise bad(f"{key}[{name!r}]", v, "a number")
    metrics = record.get("metrics", {})

    def scores(field: str, rows, names) -> None:
        if not isinstance(rows, list):
            raise bad(repr(field), rows, "a list")
        for k, row in enumerate(rows):
            if not isinstance(row, dict):
                raise bad(f"{field}[{k}]", row, "an object")
            for name in names(row):
                if row.get(name) is not None and not _is_number(row[name]):
                    raise bad(f"{field}[{k}][{name!r}]", row[name], "a number")

    scores("trials", record.get("trials", []), lambda row: metrics)
    fewshot = record.get("fewshot")
    if fewshot is not None:
        if not isinstance(fewshot, dict):
            raise bad("'fewshot'", fewshot, "an object")
        bases = {p[0] for p in map(split_metric_name, metrics) if p}
        scores("fewshot.draws", fewshot.get("draws", []), lambda row: ["shots", *bases])
    provenance = record.get("provenance", {})
    extra = provenance.get("distractors") if isinstance(provenance, dict) else None
    if not isinstance(provenance, dict) or not isinstance(extra or {}, dict):
        raise bad("'provenance'", provenance, "an object")
    for key in ("dataset", "option"):
        if (extra or {}).get(key) is not None and not isinstance(extra[key], str):
            raise bad(f"provenance.distractors[{key!r}]", extra[key], "a name")
    return record


def rerun_hint(path: Path, record: dict | None = None) -> str:
    """What to do about a broken result: the evaluate that writes it again (by its record's names
    where they are text, else by the metrics folder's layout, ``<backbone>/<dataset>/<recipe>/<head>.json``,
    or ``<backbone>/<dataset>/<head>.json`` of older results when the folder is no built-in recipe)."""
    names = [(record or {}).get(k) for k in ("backbone", "dataset", "head", "recipe")]
    if not all(isinstance(n, str) and n for n in names[:3]):
        up = path.parent.name in BUILTIN_RECIPES
        parents = path.parents[1:] if up else path.parents
        names = [parents[1].name if len(parents) > 1 else "", parents[0].name, path.name[: -len(".json")],
                 path.parent.name if up else None]
    if not all(names[:3]):
        return "rerun `cnnbench evaluate` for this result"
    recipe = f" --recipe {names[3]}" if isinstance(names[3], str) and names[3] != DEFAULT_RECIPE else ""
    return f"rerun `cnnbench evaluate -b {names[0]} -d {names[1]}{recipe} --head {names[2]}` (or `dvc repro`)"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
