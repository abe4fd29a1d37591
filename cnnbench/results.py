"""What a result is, and its files: one module writes them and reads them back.

:class:`Result` is the typed record of one evaluation (backbone, data set, recipe, head; its
:class:`Score` s, each knowing its metric, class, kNN k and few-shot k; trials, draws, options,
provenance): :mod:`cnnbench.compare`, :mod:`cnnbench.show` and the intervals read its fields, and
the grammar of the score names on disk (``AP/<class>``, ``<metric>@k=<k>``, ``<metric>@<k>shot``,
``<name>_std``) lives here only (:func:`score_name`, :func:`parse_score_name`).

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
:func:`read_outcomes` its outcomes; :func:`load` both, as one :class:`Result`.
"""

from __future__ import annotations

import json
import math
import os
import dataclasses
from pathlib import Path
from typing import Iterable

from . import outcomes as OUTCOMES
from .errors import CnnbenchError
from .jsonio import (ResultError, atomic_write_text, beside, describe, dumps, file_fingerprint, fingerprint, parse,
                     read_bytes, write_json)
from .recipes import BUILTIN as BUILTIN_RECIPES
from .recipes import DEFAULT as DEFAULT_RECIPE
from .scores import STD_SUFFIX, parse_score_name, score_name, split_shots

@dataclasses.dataclass(frozen=True)
class Score:
    """One number of a result (a mean over the protocol's trials, or draws), with what it is of."""

    name: str  # its key in the files
    value: float
    std: float | None = None  # its spread over trials or draws, where there are several
    metric: str = ""  # accuracy, mAP, mAP_medium, AP (of one class) …
    of_class: str | None = None  # a per-class breakdown (AP of one class)
    k: int | None = None  # the k of a k-NN vote
    shots: int | None = None  # a few-shot point: k training images per class

    @classmethod
    def of(cls, name: str, value: float, std: float | None = None) -> "Score":
        metric, of_class, k, shots = parse_score_name(name)
        return cls(name, float(value), None if std is None else float(std), metric, of_class, k, shots)

    @property
    def full_data(self) -> bool:
        """A score of the whole training set: not a per-class breakdown, not a few-shot point."""
        return self.of_class is None and self.shots is None


@dataclasses.dataclass(frozen=True)
class Result:
    """One evaluation, typed: what it is of, its scores, and where every number came from. The
    files on disk (:func:`write_results`) are its flat projection; :meth:`from_record` reads the
    dict :func:`evaluate` returns and :func:`read_results` gives back, checked (:func:`check_record`)."""

    backbone: str
    dataset: str
    head: str
    recipe: str
    scores: tuple[Score, ...]
    layer: str | None = None
    task: str | None = None
    primary_metric: str | None = None
    recipe_spec: dict = dataclasses.field(default_factory=dict)
    trials: tuple[dict, ...] = ()
    fewshot: dict | None = None
    head_params: dict = dataclasses.field(default_factory=dict)
    dataset_options: dict = dataclasses.field(default_factory=dict)
    skipped_images: int = 0
    provenance: dict = dataclasses.field(default_factory=dict)
    path: str | None = None  # the metrics file it was read from (None: not read from files)
    record: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # as read, for writers

    @classmethod
    def from_record(cls, record: dict, source: str | os.PathLike | None = None, *, checked: bool = False) -> "Result":
        """``checked``: ``record`` is :func:`read_results`' (checked there), not to be checked again."""
        rec = dict(record) if checked else check_record(dict(record), source or record.get("_path") or "a result")
        metrics, std = rec.get("metrics", {}), dict(rec.get("std") or {})
        spreads = {n for n in metrics if n.endswith(STD_SUFFIX) and n[: -len(STD_SUFFIX)] in metrics}
        for name in spreads:  # a flat metrics file's <name>_std, not yet split off: the spread of <name>
            std.setdefault(name[: -len(STD_SUFFIX)], metrics[name])
        scores = tuple(Score.of(name, value, std.get(name)) for name, value in metrics.items() if name not in spreads)
        return cls(rec["backbone"], rec["dataset"], rec["head"], rec["recipe"], scores, rec.get("layer"),
                   rec.get("task"), rec.get("primary_metric"), rec.get("recipe_spec") or {},
                   tuple(rec.get("trials") or ()), rec.get("fewshot"), rec.get("head_params") or {},
                   rec.get("dataset_options") or {}, int(rec.get("skipped_images") or 0), rec.get("provenance") or {},
                   rec.get("_path") if source is None else str(source), rec)

    # -- reading its fields ------------------------------------------------------------------------
    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.name == name), None)

    @property
    def primary(self) -> str | None:
        """The name of the score the paper reports for this data set (else the first one)."""
        return self.primary_metric or next((s.name for s in self.scores), None)

    def full_data_scores(self) -> list[Score]:
        return [s for s in self.scores if s.full_data]

    def fewshot_points(self, metric: str) -> list[Score]:
        """The few-shot scores of ``metric`` (a full-data score's name), by increasing shots."""
        return sorted((s for s in self.scores if s.shots is not None and score_name(
            s.metric, of_class=s.of_class, k=s.k) == metric), key=lambda s: s.shots)

    def per_trial(self, score: Score) -> list[float | None]:
        """The score's value in each trial of the protocol (few-shot: in each draw of its k)."""
        if score.shots is not None:
            base = score_name(score.metric, of_class=score.of_class, k=score.k)
            return [d.get(base) for d in (self.fewshot or {}).get("draws", []) if d.get("shots") == score.shots]
        return [t.get(score.name) for t in self.trials]

    @property
    def distractors(self) -> str | None:
        """The distractor set appended to the database (revisitop1m), or None."""
        extra = self.provenance.get("distractors") or {}
        return extra.get("dataset") or extra.get("option") or None

    @property
    def dataset_label(self) -> str:
        """``roxford5k+revisitop1m`` for a result with distractors: its own column, not the plain one's."""
        return f"{self.dataset}+{self.distractors}" if self.distractors else self.dataset


def load(metrics_path: str | os.PathLike) -> Result | None:
    """The result whose metrics file is ``metrics_path`` (None: the file is JSON of something else)."""
    record = read_results(metrics_path)
    return None if record is None else Result.from_record(record, metrics_path, checked=True)


def as_results(records: Iterable[dict | Result]) -> list[Result]:
    """Results from records (as :func:`read_results` gives them, with ``_path``) or results."""
    return [r if isinstance(r, Result) else Result.from_record(r) for r in records]


RUN_SUFFIX = ".run.json"  # metrics/<backbone>/<dataset>/<recipe>/<head>.json -> <head>.run.json beside it
UNIT = "unit"  # the run record's key for the size and SHA-256 of the metrics and outcomes files written with it
MAX_RECORD_BYTES = 64 << 20  # metrics files and run records: cnnbench writes kilobytes (few-shot draws: a few MB)
# distributions whose version can change the numbers; alternatives name the same package

def result_path(metrics_dir: str | os.PathLike, backbone: str, dataset: str, recipe: str, head: str) -> Path:
    """Where a result's metrics file goes: ``<metrics_dir>/<backbone>/<dataset>/<recipe>/<head>.json``."""
    from .dataset import folder_name  # a name that holds a path (wds:/data/x) is still one folder

    return Path(metrics_dir) / backbone / folder_name(dataset) / recipe / f"{head}.json"


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
        bases = {p[0] for p in map(split_shots, metrics) if p}
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
