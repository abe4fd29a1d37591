"""Recipes: the paper's method rows (CNN-SVM, CNN-ss, CNNaug-SVM / CNNaug-ss) as named, declared data.

A recipe is everything that turns a backbone's features into one of the paper's numbers besides the
head itself: extraction overrides (``views``, ``spatial_levels``, ``box_scale``, …: the fields of
:class:`~cnnbench.settings.ExtractSettings` that change the features), head-option overrides per head
(``svm: {power: 2}``) and evaluation options (:class:`EvalOptions`: few-shot draws, distractors).
A result is (backbone, data set, recipe, head, layer): ``metrics/<backbone>/<dataset>/<recipe>/<head>.json``.
A feature file is named by what was extracted, not by the recipe: ``features/<backbone>/<dataset>/
<features_key>/<split>.h5`` (:meth:`Recipe.features_key`), so two recipes with the same extraction
share one file.

Precedence, lowest first: ``params.yaml`` (``extract:``, ``head_options:``), the recipe (its
per-data-set replacement when it has one), the command line (extraction flags, ``-H``, ``-E``).
Users declare their own recipes under ``recipes:`` in ``params.yaml``, checked as the file is read
(:func:`check_user`); ``recipe:`` names the one ``dvc repro`` and the command line use by default.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from . import fewshot as F
from . import options as O
from .errors import UserError

DEFAULT = "cnn"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a recipe names a folder of results
SECTIONS = ("extract", "heads", "evaluation")  # what a recipe sets, and what ``datasets:`` may replace
KEYS = ("description", *SECTIONS, "datasets", "paper_row")  # a user recipe's keys in params.yaml


@dataclass(frozen=True)
class EvalOptions:
    """How stored features are evaluated, beyond the head: one parsed object, handed to
    :func:`cnnbench.evaluate.evaluate` as one argument. None of it enters a feature file's
    signature: giving it re-extracts nothing; the run record keeps it (``fewshot``,
    ``provenance.distractors``, ``recipe_spec``).

    ``shots``: images per class of each few-shot draw (:mod:`cnnbench.fewshot`; () = no few-shot),
    ``shots_trials`` draws per k, ``shots_seed`` their seed; ``distractors``: a data-set name
    (``revisitop1m``) or a feature file / folder appended to a retrieval database
    (:class:`cnnbench.retrieval.Distractors`)."""

    shots: tuple[int, ...] = ()
    shots_trials: int = F.DEFAULT_TRIALS
    shots_seed: int = 0
    distractors: str | None = None

    def __post_init__(self) -> None:
        self._check("evaluation")

    def _check(self, where: str) -> None:
        """Checks of :mod:`cnnbench.fewshot` (one place for the bounds), values normalised in place."""
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalise once
        stray = {k: getattr(self, k) for k, d in (("shots_trials", F.DEFAULT_TRIALS), ("shots_seed", 0))
                 if getattr(self, k) != d}
        shots = None if self.shots is None or (isinstance(self.shots, (list, tuple)) and not self.shots) else self.shots
        spec = F.parse(where, shots, **stray) if shots is not None or stray else None
        put("shots", spec.shots if spec else ())
        if spec:
            put("shots_trials", spec.trials)
            put("shots_seed", spec.seed)
        if self.distractors is not None:
            value = self.distractors
            if not (isinstance(value, str) and value.strip()):
                raise UserError(f"{where}: distractors: {O.show(value)} is not allowed; expected a data-set name "
                                "(revisitop1m), a feature file (features/<backbone>/revisitop1m/none/database.h5) "
                                "or its folder")
            put("distractors", value.strip())

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, where: str, values: Any, base: "EvalOptions | None" = None) -> "EvalOptions":
        """``values`` (a recipe's ``evaluation:``, or ``-E`` pairs) over ``base``, checked, errors
        naming ``where``. ``shots: null`` turns few-shot off; ``shots: []`` is refused."""
        values = dict(O.mapping(where, values or {}))
        O.unknown_keys(where, values, cls.keys())
        merged = {**(base.to_json() if base else {}), **values}
        if "shots" in values and values["shots"] is None:  # off: the base's draws go with it
            merged.update(shots=None, **{k: v for k, v in (("shots_trials", F.DEFAULT_TRIALS), ("shots_seed", 0))
                                         if k not in values})
        elif "shots" in values and values["shots"] == []:
            O.int_list(f"{where}: shots", [])  # the fewshot module's own refusal of an empty list
        stray = [k for k in ("shots_trials", "shots_seed") if k in values]
        if not merged.get("shots") and stray:
            F.parse(where, None, **{k: values[k] for k in stray})  # "given without shots"
        opts = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(opts, f.name, merged.get(f.name, f.default))
        opts._check(where)
        return opts

    def to_json(self) -> dict[str, Any]:
        return {"shots": list(self.shots), "shots_trials": self.shots_trials, "shots_seed": self.shots_seed,
                "distractors": self.distractors}

    @property
    def fewshot(self) -> F.FewShot | None:
        """The few-shot spec of :func:`cnnbench.evaluate._fewshot`, or None."""
        return F.FewShot(self.shots, self.shots_trials, self.shots_seed) if self.shots else None

    def check_for(self, dataset, where: str = "evaluation") -> None:
        """What only the data set tells: few-shot needs a multi-class set, distractors a retrieval
        set that is not itself a distractor set. One line naming ``where`` (the recipe, or -E)."""
        name = getattr(dataset, "name", "") or type(dataset).__name__
        task = getattr(dataset, "task", "multiclass")
        if self.shots and task != "multiclass":
            raise UserError(f"{where}: shots: few-shot evaluation draws k images per class, which needs a multi-class "
                            f"data set; {name} is {task}; leave shots out")
        if self.distractors is None:
            return
        if getattr(dataset, "distractor_set", False):
            raise UserError(f"{where}: distractors: {name} is itself a distractor set; give distractors={name} to the "
                            "retrieval data set you evaluate (roxford5k, rparis6k, oxford5k, paris6k, holidays, …)")
        if task != "retrieval":
            raise UserError(f"{where}: distractors: distractor images are appended to a retrieval database; {name} is a "
                            f"{task} data set; leave distractors out")


@dataclass(frozen=True)
class Recipe:
    """One method row of the paper's table, as data. ``extract``: ExtractSettings overrides (only
    fields that change the features); ``heads``: option overrides per head name; ``evaluation``:
    :class:`EvalOptions`; ``datasets``: per-data-set replacements of those three sections (a
    section given there replaces the recipe's whole section for that data set); ``paper_row``: the
    row of :data:`cnnbench.paper.ROWS` its results are compared with (None: CNN-SVM's)."""

    name: str
    description: str = ""
    extract: Mapping[str, Any] = field(default_factory=dict)
    heads: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluation: EvalOptions = field(default_factory=EvalOptions)
    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    paper_row: str | None = None

    def for_dataset(self, dataset_name: str) -> "Recipe":
        """This recipe with ``dataset_name``'s replacements applied (and no ``datasets`` left)."""
        rep = self.datasets.get(dataset_name) or {}
        return replace(self, extract=rep.get("extract", self.extract), heads=rep.get("heads", self.heads),
                       evaluation=rep.get("evaluation", self.evaluation), datasets={})

    def features_key(self, dataset_name: str, base: Mapping[str, Any] | None = None) -> str:
        """The folder of the feature set this recipe extracts for ``dataset_name``: its views mode
        (over ``base``, params.yaml's ``extract:``), plus ``-`` and 8 hex of the SHA-256 of its other
        extraction overrides (canonical JSON, values as ExtractSettings normalises them) if any."""
        extract = self.for_dataset(dataset_name).extract
        views = extract.get("views", (base or {}).get("views", "none"))
        others = sorted(k for k in extract if k != "views")
        if not others:
            return views
        from .settings import ExtractSettings

        normal = ExtractSettings.from_mapping({}, extract).to_json()
        text = json.dumps({k: normal[k] for k in others}, sort_keys=True, separators=(",", ":"))
        return f"{views}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    def head_options(self, head_name: str) -> dict[str, Any]:
        return dict(self.heads.get(head_name) or {})

    def with_overrides(self, *, extract: Mapping[str, Any] | None = None, heads: Mapping[str, Mapping] | None = None,
                       evaluation: Mapping[str, Any] | None = None, where: str = "-E") -> "Recipe":
        """The recipe as it runs, with the command line's overrides folded in (so the run record's
        ``recipe_spec`` says what ran); ``extract``: flags given (None values are not given)."""
        extract = {**self.extract, **{k: v for k, v in (extract or {}).items() if v is not None}}
        check_extract(where, extract)
        merged = {h: {**self.head_options(h), **o} for h, o in (heads or {}).items()}
        return replace(self, extract=extract, heads={**self.heads, **merged},
                       evaluation=EvalOptions.from_mapping(where, evaluation, self.evaluation) if evaluation
                       else self.evaluation)

    def to_json(self) -> dict[str, Any]:
        """The contents, plain JSON (for the run record's ``recipe_spec`` and ``cnnbench recipes``)."""
        return {"name": self.name, "description": self.description, "paper_row": self.paper_row,
                "extract": dict(self.extract), "heads": {h: dict(o) for h, o in self.heads.items()},
                "evaluation": self.evaluation.to_json(),
                "datasets": {d: {k: (v.to_json() if isinstance(v, EvalOptions) else v) for k, v in rep.items()}
                             for d, rep in self.datasets.items()}}


def check_extract(where: str, extract: Any) -> dict[str, Any]:
    """A recipe's extraction overrides: fields of ExtractSettings that change the features, each
    checked by ExtractSettings itself (so ``views: bogus`` is refused as ``--views bogus`` is)."""
    from .settings import FEATURE_KEYS, ExtractSettings

    extract = dict(O.mapping(f"{where}: extract", extract))
    speed = sorted(k for k in extract if k in ExtractSettings.keys() and k not in FEATURE_KEYS)
    if speed:
        raise UserError(f"{where}: extract: {', '.join(speed)} only change{'s' if len(speed) == 1 else ''} how fast "
                        "features are made, not the features; set it in params.yaml's extract: or by its flag")
    O.unknown_keys(f"{where}: extract", extract, list(FEATURE_KEYS))
    try:
        ExtractSettings.from_mapping({}, extract)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return extract


def _heads(where: str, heads: Any) -> dict[str, dict]:
    """Head-option overrides: a mapping per head name (the options are checked as the head is built)."""
    heads = dict(O.mapping(f"{where}: heads", heads or {}))
    for name, opts in heads.items():
        heads[name] = dict(O.mapping(f"{where}: heads.{name}", opts or {}))
    return heads


def parse(name: str, spec: Any, where: str) -> Recipe:
    """A recipe from its params.yaml mapping, every section checked (errors name ``where``)."""
    spec = dict(O.mapping(where, spec or {}))
    O.unknown_keys(where, spec, list(KEYS))
    if not isinstance(spec.get("description", ""), str):
        raise UserError(f"{where}: description: {O.show(spec['description'])} is not allowed; expected text")
    row = spec.get("paper_row")
    if row is not None:
        from .paper import ROWS

        O.one_of(f"{where}: paper_row", row, list(ROWS))
    datasets = {}
    for ds, rep in dict(O.mapping(f"{where}: datasets", spec.get("datasets") or {})).items():
        at = f"{where}: datasets.{ds}"
        rep = dict(O.mapping(at, rep or {}))
        O.unknown_keys(at, rep, list(SECTIONS))
        datasets[ds] = _sections(at, rep)
    return Recipe(name, spec.get("description", ""), **_sections(where, spec, full=True), datasets=datasets,
                  paper_row=row)


def _sections(where: str, spec: dict, full: bool = False) -> dict[str, Any]:
    """The checked sections of ``spec``; ``full``: every section (empty when absent)."""
    out = {}
    if full or "extract" in spec:
        out["extract"] = check_extract(where, spec.get("extract") or {})
    if full or "heads" in spec:
        out["heads"] = _heads(where, spec.get("heads"))
    if full or "evaluation" in spec:
        out["evaluation"] = EvalOptions.from_mapping(f"{where}: evaluation", spec.get("evaluation") or {})
    return out


_JITTER = ("the paper's CNNaug: 16 views per image (the image, 5 crops of 4/9 of its area, 2 rotations, "
           "and the mirror of each), \"train on all views; at test time sum the SVM responses of an image's views\" "
           "(view_pooling: sum, the svm's default), with \"a signed component-wise power transform (power 2)\"")
BUILTIN: dict[str, Recipe] = {r.name: r for r in (
    Recipe("cnn", "CNN-SVM / CNN (whole image): \"whole image resized to the network input\", one feature per "
           "image, each head's own defaults; the paper's CNN-SVM row and its retrieval row \"CNN, whole image\"",
           paper_row="paper: OverFeat CNN-SVM"),
    Recipe("cnnaug", f"CNNaug-SVM: {_JITTER}. The rotation angles are not published: extract.rotation_angles "
           "(default ±5°) is our choice. The power is the svm's option (logreg and knn have none: they run on the views as they are)",
           extract={"views": "jitter16"}, heads={"svm": {"power": 2.0}},
           paper_row="paper: OverFeat CNNaug-SVM"),
    Recipe("cnn-ss", "CNN-ss, spatial search: \"at level l an image gives l² overlapping equal sub-patches\", "
           "\"h = 4 for reference images and 3 for queries\" (extract.spatial_levels' default), distance = mean over "
           "query patches of the min over database patches; the l2 head's defaults otherwise. Used on every "
           "retrieval set the paper reports CNN-ss for, Holidays and UKBench included",
           extract={"views": "spatial"}, paper_row="paper: OverFeat CNN-ss"),
    Recipe("cnnaug-ss", "CNNaug-ss: spatial search as cnn-ss with the CNNaug signed power 2 on the l2 head's "
           "descriptors (the paper names \"a signed power transform\" for retrieval without its power: 2, CNNaug's, is "
           "our choice); \"Holidays and UKBench use the classification jittering instead\": on those two the 16 "
           "jittered views of cnnaug replace the sub-patches",
           extract={"views": "spatial"}, heads={"l2": {"power": 2.0}},
           datasets={ds: {"extract": {"views": "jitter16"}} for ds in ("holidays", "ukbench")},
           paper_row="paper: OverFeat CNNaug-SVM"),
)}


def names(params: Mapping[str, Any] | None = None) -> list[str]:
    """Built-in recipes, then the user's (params.yaml ``recipes:``)."""
    return [*BUILTIN, *((params or {}).get("recipes") or {})]


def resolve(name: str, params: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe ``name``: a built-in, or one of params.yaml's ``recipes:``."""
    if name in BUILTIN:
        return BUILTIN[name]
    user = (params or {}).get("recipes") or {}
    if not isinstance(name, str) or name not in user:
        import difflib

        known = names(params)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"recipe {name!r}: no such recipe{hint}; known: {', '.join(known)} (built in, or declared "
                        "under recipes: in params.yaml; `cnnbench recipes` lists them)")
    return parse(name, user[name], f"recipes.{name}")


def check_user(recipes: Any, source: str) -> dict[str, Any]:
    """params.yaml's ``recipes:``, each checked as the file is read; a built-in name may not be reused
    (one name, one meaning: a result labelled ``cnnaug`` is the paper's CNNaug)."""
    recipes = dict(O.mapping(f"{source}: recipes", recipes or {}))
    folded: dict[str, str] = {n: n for n in BUILTIN}  # one folder per name, on case-blind disks too
    for name in recipes:
        if not isinstance(name, str) or not _NAME.match(name):
            raise UserError(f"{source}: recipes: {name!r} is not a recipe name; use letters, digits, '-', '_' and "
                            "'.', starting with a letter or digit (it names a folder of results)")
        if name.lower() in folded:
            other = folded[name.lower()]
            what = f"{other} is a built-in recipe" if other in BUILTIN else f"it differs from {other!r} only in case"
            raise UserError(f"{source}: recipes.{name}: {what} (one folder of results per recipe, on every disk); "
                            f"give yours another name, e.g. my-{name}")
        folded[name.lower()] = name
        parse(name, recipes[name], f"{source}: recipes.{name}")
    return recipes
