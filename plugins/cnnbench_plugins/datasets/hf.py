"""``hf:`` data sets: any Hugging Face image data set, read with the ``datasets`` library.

Names:

* ``hf:<repo>`` or ``hf:<repo>@<revision>`` (``hf:user/set``, ``hf:user/set@3f2c…``): from the local
  hub cache when it holds a snapshot (what ``hf download --repo-type dataset user/set`` or
  ``snapshot_download`` leave there; the commit is the snapshot's), else through
  ``datasets.load_dataset_builder(repo)``: with ``HF_HUB_OFFLINE=1`` that is the copy a former
  ``load_dataset`` left in ``HF_DATASETS_CACHE``, online the hub. A named revision must be the
  cached commit (or a prefix of it) or, in the hub cache, a branch or tag it records.
* ``hf:<folder>``: a data set in the hub's layout on disk (``data/<split>-*.parquet``, a README's
  ``configs:``, or any layout ``load_dataset(<folder>)`` reads, an image folder too). A folder is
  one under the data root (``hf:my_set`` reads ``<data_root>/my_set`` when that folder exists), or
  a path (``hf:/data/my_set``, ``./``, ``../``, ``~/``). ``-D path=<folder>`` reads a folder under a
  repo's name (``hf:user/set -D path=data/user-set``, a local copy).

Features and results go to one folder per name, :func:`cnnbench.dataset.folder_name`'s
(``features/<b>/hf:user_set-<8 hex>/none/``): a name with a ``/`` is not a folder name.

Options (``-D`` / ``dataset_options``; :class:`HFOptions`): ``config`` (load_dataset's ``name=``),
``splits``, ``image``, ``label``, ``id``, ``box``, ``task``. Schema, read from the ``Features``:

* **multiclass**: one label column: a ``ClassLabel`` (class names from it), an integer (classes
  ``0``…``max``) or a string (classes: the names found, sorted). Default column: ``label``, else the
  one ``ClassLabel`` column.
* **multilabel**: one column of a list of ``ClassLabel`` (``Sequence(ClassLabel)``): 1 for each class
  listed, 0 for the others; a list of integers with ``task: multilabel``; or several 0/1 columns
  (``label: [smiling, glasses]``, bool or integer, -1 = ignore): one class each, named by the column.
* **retrieval** (splits ``database`` and ``queries``, or ``query``; or ``splits: {database: …,
  queries: …}``): no labels; each query row has ``positives``, a list of database ids (at least
  one), and may have ``junk`` (left out of the ranking; never also a positive); the database's rows
  leave both empty (a configuration's splits share one set of columns). A database id is its ``id``
  cell, or without an ``id`` column its row index (an integer in ``positives``, or
  ``<split>/<row>``). Scored by the ``l2`` head: mAP as Oxford's ``compute_ap``.

``splits`` maps cnnbench's stored splits to the set's: default ``train`` and ``test`` (else
``validation``); ``{train: train+validation, test: test}`` joins splits. Item ids are the ``id``
column's cells (default: the column ``id`` if there is one; unique in a split), else
``<split>/<row>``. ``box``: a column of ``[x1, y1, x2, y2]`` (pixels) to crop each image to.

Images are never decoded by ``datasets``: each row's stored bytes (the ``Image`` column read raw, as
``Image(decode=False)`` gives them, or a ``binary`` column) become a
:class:`cnnbench.dataset.EncodedImage` that cnnbench's own decoder opens like a file (same formats,
same size guards). A cell holding only a file path (an image-folder set) names the file, which
must lie inside the data set. A row without an image is a skipped image with its reason.
Every stored split's labels, ids, boxes and ground truth are read and checked first
(:meth:`HFDataset.check`), so a bad cell stops the run before any split is extracted; a split's
image bytes are read when it is extracted, and held in memory meanwhile. As with ``load_dataset``,
the first read of a folder or snapshot converts it into ``HF_DATASETS_CACHE`` (Arrow files).

Identity: the recorded options hold ``repo``, ``revision`` (the commit, when known) and
``fingerprints``: per stored split the number, bytes and SHA-256 of its source files (the hub
cache's blobs are named by their SHA-256, so a snapshot is not read again). Not
``Dataset._fingerprint``: for local files it hashes their path and modification time, so a copy or
a ``touch`` would re-extract, and a run record would differ from machine to machine.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import (AnnotationError, Dataset, DatasetOptions, EncodedImage, Item, Trial, check_box,
                              default_data_root)
from cnnbench.errors import MissingDataError, UserError

CLASSIFICATION = ("train", "test")
RETRIEVAL = ("database", "queries")
METRICS = {"multiclass": "accuracy", "multilabel": "mAP", "retrieval": "mAP"}
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+$")


@hookimpl
def register_datasets(register):
    register("hf:", hf_dataset, prefix=True, options=HFOptions,
             description="any Hugging Face image data set: hf:<repo>[@<revision>] (hub cache, offline too) or "
                         "hf:<folder> in the hub's layout")


def _splits_option(name: str, value) -> dict:
    """``{train: <split>, test: <split>}`` or ``{database: <split>, queries: <split>}``, each a split
    name of the set or several joined by ``+``."""
    value = O.mapping(name, value)
    if value and sorted(value) not in (sorted(CLASSIFICATION), sorted(RETRIEVAL)):
        raise UserError(f"{name}: {O.show(value)} is not allowed; expected {{train: <split>, test: <split>}} or, for "
                        "retrieval, {database: <split>, queries: <split>} (e.g. {train: train, test: validation})")
    for key, split in value.items():
        parts = split.split("+") if isinstance(split, str) else [None]
        if not all(isinstance(p, str) and _SPLIT.match(p) for p in parts):
            raise UserError(f"{name}: {key}: {O.show(split)} is not allowed; expected a split name of the data set, or "
                            "several joined by '+' (train+validation); slices such as train[:10%] are not supported")
    return value


def _columns_option(name: str, value) -> tuple[str, ...]:
    cols = tuple(O.str_list(name, value))
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise UserError(f"{name}: the column {twice[0]!r} is named twice; name each label column once")
    return cols


@dataclass(frozen=True)
class HFOptions(DatasetOptions):
    """Which of the set's configuration, splits and columns cnnbench reads (see the module docstring)."""

    config: str | None = O.option(None, "the set's configuration (subset), as load_dataset's name=")
    splits: dict = O.option({}, "the set's split for each stored split: {train: …, test: …} (default train, and "
                            "test or else validation) or {database: …, queries: …}; '+' joins splits",
                            check=_splits_option)
    image: str | None = O.option(None, "the image column (default: the one column of type Image)")
    label: tuple[str, ...] | None = O.option(None, "the label column, or several 0/1 columns for multi-label "
                                             "(default: 'label', else the one ClassLabel column)",
                                             check=_columns_option)
    id: str | None = O.option(None, "a column of unique image ids (default: 'id' if there is one, else "
                              "<split>/<row>)")
    box: str | None = O.option(None, "a column of boxes to crop each image to: x1, y1, x2, y2 in pixels")
    task: Literal["auto", "multiclass", "multilabel", "retrieval"] = O.option(
        "auto", "the task (default: from the splits and the label column's type)")

    def check(self, owner: str) -> None:
        keys = set(self.splits)
        if self.task == "retrieval" and keys and keys != set(RETRIEVAL):
            raise UserError(f"{owner}: task retrieval reads the splits database and queries, but splits names "
                            f"{', '.join(sorted(keys))}; give splits: {{database: …, queries: …}}")
        if self.task in ("multiclass", "multilabel") and keys == set(RETRIEVAL):
            raise UserError(f"{owner}: task {self.task} reads the splits train and test, but splits names database and "
                            "queries (a retrieval set); give splits: {train: …, test: …} or task: retrieval")
        retrieval = self.task == "retrieval" or keys == set(RETRIEVAL)
        if retrieval and self.label is not None:
            raise UserError(f"{owner}: label: a retrieval set has no labels (queries name their positives); leave "
                            "label out")
        return None


def hf_dataset(spec: str, *, options: HFOptions) -> "HFDataset":
    return HFDataset(spec, options=options)


# -- where the data comes from ------------------------------------------------------------------------


@dataclass
class _Source:
    """A resolved set: the ``datasets`` builder, and what it was resolved to."""

    builder: Any
    root: Path | None  # the folder read (a local folder or a hub snapshot); None: datasets' own cache
    repo: str | None
    revision: str | None
    trusted: tuple[str, ...] = ()  # real folders an image cell's file path may lie in


@dataclass
class _Split:
    """One stored split's rows as read without their image bytes (ids, labels, boxes, the files that
    cells name, the ground truth): all checked before anything is extracted."""

    ids: list[str]
    labels: list
    boxes: list
    where: list[str]  # "<split>[<row>]" of each row, for messages
    files: list[str | None]  # the image file a cell names instead of bytes (inside the data set), else None
    ground_truth: dict = field(default_factory=dict)


def _resolved(getter):
    """A property read from the data: an ``AttributeError`` inside it must not fall through to
    :meth:`Dataset.__getattr__`, which would answer with the option of the same name (``splits``,
    ``task``) instead of the resolved value."""

    def get(self):
        try:
            return getter(self)
        except AttributeError as exc:
            raise RuntimeError(f"{getter.__name__}: {exc}") from exc

    get.__name__, get.__doc__ = getter.__name__, getter.__doc__
    return property(get)


@contextlib.contextmanager
def _quiet():
    """``datasets`` logs and draws progress bars while it prepares; the command line has its own."""
    import datasets.utils as hf_utils
    from datasets.utils import logging as hf_logging

    level, off = hf_logging.get_verbosity(), hf_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_utils.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if not off:
            hf_utils.enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join((text[0] if text else type(exc).__name__).split())


def _offline() -> bool:
    import huggingface_hub.constants as hub

    return bool(hub.HF_HUB_OFFLINE)


def _hub_cache() -> str:
    import huggingface_hub.constants as hub

    return str(hub.HF_HUB_CACHE)


def _datasets_cache() -> str:
    import datasets.config

    return str(datasets.config.HF_DATASETS_CACHE)


class HFDataset(Dataset):
    """One ``hf:`` set; nothing is read until it is used (``cnnbench datasets`` builds it)."""

    Options = HFOptions
    description = "a Hugging Face data set (hub cache or a folder in the hub's layout)"
    url = "https://huggingface.co/datasets (fetch once: hf download --repo-type dataset <repo>)"
    layout = ("  data/<split>-00000-of-0000N.parquet ...   (the hub's layout: one or more files per split), or any\n"
              "  layout datasets.load_dataset(<folder>) reads (README.md configs:, <split>/<class>/<image> ...)")

    def __init__(self, spec: str, *, options: HFOptions | None = None, **given) -> None:
        self.name = f"hf:{spec}"
        self.spec = spec
        super().__init__(options=options, **given)

    def setup(self) -> None:
        self.repo, self.revision, self.local = self._parse(self.spec)
        self.root = Path(self.local) if self.local is not None else None
        self._source: _Source | None = None
        self._tables: dict[str, list[tuple[str, Any]]] | None = None  # stored split -> [(set's split, Dataset)]
        self._schema: dict | None = None
        self._read: dict[str, _Split] = {}
        self._identity: dict | None = None

    def _parse(self, spec: str) -> tuple[str | None, str | None, str | None]:
        """(repo, revision, local folder) that the name (and ``path``) say, checked as text only."""
        if not spec.strip() or "\0" in spec:
            raise UserError(f"{self.name}: name a Hugging Face data set after hf: (hf:<namespace>/<name>, "
                            "hf:<namespace>/<name>@<revision>) or a folder (hf:/data/my_set)")
        if self.opts.path is not None:  # a local copy, under the repo's name
            repo, revision = self._repo_id(spec, strict=False)
            return repo, revision, self.opts.path
        if spec.startswith(("/", "./", "../", "~")):
            return None, None, os.path.abspath(os.path.expanduser(spec))
        data_root = Path(self.opts.data_root) if self.opts.data_root is not None else default_data_root()
        if "@" not in spec and (data_root / spec).is_dir():
            return None, None, str(data_root / spec)
        repo, revision = self._repo_id(spec, strict=True)
        return repo, revision, None

    def _repo_id(self, spec: str, *, strict: bool) -> tuple[str | None, str | None]:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        repo, _, revision = spec.partition("@")
        try:
            validate_repo_id(repo)
        except HFValidationError:
            if not strict:
                return None, None
            raise UserError(f"{self.name}: {repo!r} is neither a Hugging Face repo id (<namespace>/<name>: letters, "
                            f"digits, '-', '_', '.') nor a folder (under the data root, or a path starting with /, ./, "
                            f"../ or ~); e.g. hf:clip-benchmark/wds_vtab-flowers or hf:/data/my_set") from None
        if "@" in spec and not re.fullmatch(r"[A-Za-z0-9._/-]+", revision):
            raise UserError(f"{self.name}: revision {revision!r} is not a commit, branch or tag name; e.g. "
                            f"hf:{repo}@main or hf:{repo}@<commit sha>")
        return repo, (revision or None)

    # -- resolving the source -------------------------------------------------------------------
    def required_paths(self) -> list[Path]:
        return [self.root] if self.local is not None else []

    def _resolve(self) -> _Source:
        if self._source is not None:
            return self._source
        if self.local is not None:
            folder = Path(self.local)
            if not folder.is_dir():
                raise MissingDataError(
                    f"{self.name}: {folder} is not a folder; put the data set there in the hub's layout "
                    f"(data/<split>-*.parquet …; e.g. `hf download --repo-type dataset <repo> --local-dir "
                    f"{folder}`), "
                    "or name another (hf:<folder under the data root>, hf:/absolute/path, -D path=…)")
            builder = self._builder(str(folder))
            self._source = _Source(builder, folder, self.repo, self.revision, (os.path.realpath(folder),))
            return self._source
        snapshot = self._snapshot()
        if snapshot is not None:
            builder = self._builder(str(snapshot))
            repo_dir = snapshot.parent.parent  # datasets--<ns>--<name>: snapshots/ link into its blobs/
            self._source = _Source(builder, snapshot, self.repo, snapshot.name,
                                   (os.path.realpath(snapshot), os.path.realpath(repo_dir)))
            return self._source
        builder = self._builder(self.repo, revision=self.revision)
        commit = builder.hash if isinstance(builder.hash, str) and _SHA.match(builder.hash) else None
        if self.revision and self.revision != "main" and not (commit and commit.startswith(self.revision)):
            raise MissingDataError(
                f"{self.name}: the cached copy in {_datasets_cache()} is of commit {commit or '(unknown)'}, not "
                f"{self.revision!r}; fetch that revision (`hf download --repo-type dataset {self.repo} --revision "
                f"{self.revision}`), or name the cached one")
        self._source = _Source(builder, None, self.repo, commit, (os.path.realpath(_datasets_cache()),))
        return self._source

    def _snapshot(self) -> Path | None:
        """The hub cache's snapshot of the repo at the revision (default: main), if it holds one."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            with _quiet():
                return Path(snapshot_download(self.repo, repo_type="dataset", revision=self.revision,
                                              local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            pass
        if self.revision and re.fullmatch(r"[0-9a-f]{7,39}", self.revision):  # a short commit, as git shows it
            snapshots = Path(_hub_cache()) / f"datasets--{self.repo.replace('/', '--')}" / "snapshots"
            found = sorted(p for p in snapshots.glob(f"{self.revision}*") if p.is_dir() and _SHA.match(p.name))
            if len(found) == 1:
                return found[0]
        return None

    def _builder(self, path: str, revision: str | None = None):
        import datasets

        try:
            with _quiet():
                builder = datasets.load_dataset_builder(path, name=self.opts.config, revision=revision)
                builder.download_and_prepare()
            return builder
        except ValueError as exc:  # an unknown config (the message lists the known ones), a bad split
            raise UserError(f"{self.name}: {_first_line(exc)}") from exc
        except (ConnectionError, FileNotFoundError) as exc:
            if self.local is not None:
                raise MissingDataError(f"{self.name}: datasets cannot read {path}: {_first_line(exc)}; expected a "
                                       f"data set in the hub's layout there:\n{self.layout}") from exc
            if _offline():
                raise MissingDataError(
                    f"{self.name}: not in the local Hugging Face caches ({_hub_cache()}, {_datasets_cache()}) and "
                    f"HF_HUB_OFFLINE is set, so it cannot be fetched; fetch it once online (`hf download "
                    f"--repo-type dataset {self.repo}`), or point -D path= at a local copy") from exc
            raise MissingDataError(f"{self.name}: {_first_line(exc)}; check the name on "
                                   "https://huggingface.co/datasets (a private set needs `hf auth login`)") from exc
        except datasets.exceptions.DatasetsError as exc:
            raise UserError(f"{self.name}: datasets cannot prepare it: {_first_line(exc)}") from exc

    # -- the splits -----------------------------------------------------------------------------
    def _split_map(self) -> dict[str, list[str]]:
        """Stored split -> the set's splits (in order), checked against the splits it has."""
        source = self._resolve()
        have = list((source.builder.info.splits or {}).keys()) or list(source.builder.config.data_files or {})
        given = self.opts.splits
        if given:
            wanted = {k: v.split("+") for k, v in given.items()}
        elif self.opts.task == "retrieval" or (self.opts.task == "auto" and "database" in have
                                               and ("queries" in have or "query" in have)):
            if "database" not in have or not ({"queries", "query"} & set(have)):
                raise UserError(f"{self.name}: a retrieval set needs splits database and queries; it has "
                                f"{', '.join(have)}: map them with -D splits='{{database: …, queries: …}}'")
            wanted = {"database": ["database"], "queries": ["queries" if "queries" in have else "query"]}
        else:
            test = next((s for s in ("test", "validation") if s in have), None)
            if "train" not in have or test is None:
                raise UserError(f"{self.name}: it has the splits {', '.join(have)}, not train and test (or "
                                f"validation); map them with -D splits='{{train: {have[0]}, test: {have[-1]}}}'")
            wanted = {"train": ["train"], "test": [test]}
        for key, names in wanted.items():
            for n in names:
                if n not in have:
                    raise UserError(f"{self.name}: splits: {key}: the set has no split {n!r}; its splits are "
                                    f"{', '.join(have)}")
        order = RETRIEVAL if set(wanted) == set(RETRIEVAL) else CLASSIFICATION
        return {k: wanted[k] for k in order}

    def _datasets(self) -> dict[str, list[tuple[str, Any]]]:
        if self._tables is None:
            source = self._resolve()
            with _quiet():
                self._tables = {k: [(n, source.builder.as_dataset(split=n)) for n in names]
                                for k, names in self._split_map().items()}
        return self._tables

    @_resolved
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        keys = set(self.opts.splits)
        if keys:
            return RETRIEVAL if keys == set(RETRIEVAL) else CLASSIFICATION
        if self.opts.task == "retrieval":
            return RETRIEVAL
        if self.opts.task in ("multiclass", "multilabel"):
            return CLASSIFICATION
        return tuple(self._split_map())

    @_resolved
    def task(self) -> str:  # type: ignore[override]
        if self.opts.task != "auto":
            return self.opts.task
        return self._resolve_schema()["task"]

    @_resolved
    def metric(self) -> str:  # type: ignore[override]
        return METRICS[self.task]

    @_resolved
    def classes(self) -> list[str]:
        return list(self._resolve_schema()["classes"])

    def trials(self, labels):
        if self.splits == RETRIEVAL:
            return [Trial("default", {"database": None}, {"queries": None})]
        return super().trials(labels)

    # -- the columns ----------------------------------------------------------------------------
    def _resolve_schema(self) -> dict:
        """Which columns are the image, the labels, the ids and the boxes; the task and the classes."""
        if self._schema is not None:
            return self._schema
        tables = self._datasets()
        features = next(iter(tables.values()))[0][1].features  # one configuration: one schema for all its splits
        image = self._image_column(features)
        for option, col in (("id", self.opts.id), ("box", self.opts.box)):
            if col is not None:
                self._require_column(features, col, option)
        ids = self.opts.id or ("id" if "id" in features else None)
        schema: dict[str, Any] = {"image": image, "id": ids, "box": self.opts.box, "labels": (), "kind": None,
                                  "classes": []}
        if set(tables) == set(RETRIEVAL):
            self._require_column(features, "positives", "positives (a retrieval set's ground truth)")
            schema["task"] = "retrieval"
        else:
            schema.update(self._label_schema(features))
            if schema["classes"] is None or schema["kind"] == "str":
                self._class_names_from_rows(schema)
        self._schema = schema
        return schema

    def _columns_text(self, features) -> str:
        return ", ".join(f"{c} ({_kind(f)})" for c, f in features.items())

    def _require_column(self, features, col: str, option: str) -> None:
        if col not in features:
            raise UserError(f"{self.name}: {option}: there is no column {col!r}; the columns are "
                            f"{self._columns_text(features)}")

    def _image_column(self, features) -> str:
        from datasets import Image, Value

        if self.opts.image is not None:
            col = self.opts.image
            self._require_column(features, col, "image")
            f = features[col]
            if not (isinstance(f, Image) or (isinstance(f, Value) and f.dtype in ("binary", "large_binary"))):
                raise UserError(f"{self.name}: image: the column {col!r} is {_kind(f)}, not an image (Image, or "
                                f"binary bytes of an image file); the columns are {self._columns_text(features)}")
            return col
        found = [c for c, f in features.items() if isinstance(f, Image)]
        if len(found) != 1:
            what = "no column of type Image" if not found else f"{len(found)} image columns ({', '.join(found)})"
            raise UserError(f"{self.name}: it has {what}; name the image column with -D image=<column> (the columns "
                            f"are {self._columns_text(features)})")
        return found[0]

    def _label_schema(self, features) -> dict:
        """The label columns' kind (classlabel, int, str, list, multi) and the task they give."""
        from datasets import ClassLabel

        cols = self.opts.label
        if cols is None:
            auto = [c for c in ("label", "labels") if c in features] or [
                c for c, f in features.items() if isinstance(f, ClassLabel) or isinstance(_inner(f), ClassLabel)]
            if len(auto) != 1:
                raise UserError(f"{self.name}: {'no' if not auto else 'more than one'} label column found; name it "
                                f"with -D label=<column> (several 0/1 columns: -D label=[a,b]); the columns are "
                                f"{self._columns_text(features)}")
            cols = (auto[0],)
        for col in cols:
            self._require_column(features, col, "label")
        wanted = self.opts.task
        if len(cols) > 1:
            for col in cols:
                f = features[col]
                if not (isinstance(f, ClassLabel) or _dtype(f) == "bool" or _is_int(f)):
                    raise self._wrong_type(col, f, features, "a 0/1 column (bool or integer) for each class")
            if wanted == "multiclass":
                raise UserError(f"{self.name}: task multiclass: several label columns ({', '.join(cols)}) are a "
                                "multi-label set, one class per column; name one column, or task: multilabel")
            return {"labels": cols, "kind": "multi", "task": "multilabel", "classes": list(cols)}
        col, f = cols[0], features[cols[0]]
        inner = _inner(f)
        if inner is not None:
            if isinstance(inner, ClassLabel):
                kind, classes = "list", list(inner.names)
            elif _is_int(inner) and wanted == "multilabel":
                kind, classes = "list", None
            elif _is_int(inner):
                raise UserError(f"{self.name}: label: the column {col!r} is {_kind(f)}: if these are class ids, give "
                                "-D task=multilabel (classes 0…max); a list of ClassLabel names its classes")
            else:
                raise self._wrong_type(col, f, features, "a list of ClassLabel (multi-label)")
            if wanted == "multiclass":
                raise UserError(f"{self.name}: task multiclass: the label column {col!r} is {_kind(f)}, a multi-label "
                                "column; leave task out, or name a single-label column")
            return {"labels": (col,), "kind": kind, "task": "multilabel", "classes": classes}
        if isinstance(f, ClassLabel):
            kind, classes = "classlabel", list(f.names)
        elif _is_int(f):
            kind, classes = "int", None
        elif _dtype(f) in ("string", "large_string"):
            kind, classes = "str", None
        else:
            raise self._wrong_type(col, f, features, "a ClassLabel, an integer or a string (one class per image), or a "
                                   "list of ClassLabel (multi-label)")
        if wanted == "multilabel":
            raise UserError(f"{self.name}: task multilabel: the label column {col!r} is {_kind(f)}, one class per "
                            "image; name several 0/1 columns or a list column, or leave task out")
        return {"labels": (col,), "kind": kind, "task": "multiclass", "classes": classes}

    def _wrong_type(self, col: str, f, features, wanted: str) -> UserError:
        return UserError(f"{self.name}: label: the column {col!r} is {_kind(f)}, not {wanted}; name another with "
                         f"-D label=<column> (the columns are {self._columns_text(features)})")

    # -- the rows -------------------------------------------------------------------------------
    def check(self) -> None:
        """The set resolved and every stored split's rows read and checked (labels, ids, boxes, the
        ground truth, files named by cells), so that a mistake stops before any split is extracted."""
        self._resolve()
        for split in self.splits:
            self._split(split)

    def items(self, split: str) -> list[Item]:
        """The rows with their images: each image's stored bytes are read from the (memory-mapped)
        Arrow files when it is decoded, so a split is never held in memory at once."""
        self._require_split(split)
        rows, col = self._split(split), self._resolve_schema()["image"]
        items, r = [], 0
        for hub_split, ds in self._datasets()[split]:
            view = ds.with_format("arrow").select_columns([col])
            source = next((f["filename"] for f in ds.cache_files), None)  # the Arrow file it is read from
            for row, size in enumerate(_image_sizes(ds, col)):
                where = f"{self.name} {rows.where[r]}"
                if size:
                    image = EncodedImage(where, load=functools.partial(_cell_bytes, view, col, row), source=source)
                elif rows.files[r] is not None:
                    image = rows.files[r]
                else:  # the decoder skips it, with this reason
                    image = EncodedImage(f"{where} (no image: its {col!r} cell is empty)", b"")
                items.append(Item(rows.ids[r], image, rows.labels[r], rows.boxes[r]))
                r += 1
        return items

    def extras(self, split: str) -> dict:
        self._require_split(split)
        if split != "queries":
            return {}
        return {"ground_truth": self._split("queries").ground_truth}

    def _split(self, split: str) -> _Split:
        if split not in self._read:
            self._read[split] = self._read_split(split, self._resolve_schema())
        return self._read[split]

    def _class_names_from_rows(self, schema: dict) -> None:
        """Classes of an integer column (``0``…``max``) or a string column (sorted), over both splits."""
        col, values = schema["labels"][0], set()
        for parts in self._datasets().values():
            for name, ds in parts:
                for v in _column(ds, col):
                    if schema["kind"] == "list":
                        values.update(x for x in (v or ()) if x is not None)
                    elif v is not None:
                        values.add(v)
        if schema["kind"] == "str":
            schema["classes"] = sorted(values)
        else:
            top = max(values, default=-1)
            if top < 0:
                raise UserError(f"{self.name}: label: the column {col!r} holds no class id >= 0; name the label column "
                                "with -D label=<column>")
            schema["classes"] = [str(k) for k in range(int(top) + 1)]

    def _read_split(self, split: str, schema: dict) -> _Split:
        source = self._resolve()
        rows = _Split([], [], [], [], [])
        gt_rows = []
        id_col, box_col = schema["id"], schema["box"]
        for hub_split, ds in self._datasets()[split]:
            n = len(ds)
            where, start = [f"{hub_split}[{k}]" for k in range(n)], len(rows.ids)
            rows.where += where
            rows.ids += ([f"{hub_split}/{k}" for k in range(n)] if id_col is None else
                         [self._id(v, w, id_col) for v, w in zip(_column(ds, id_col), where)])
            rows.labels += self._labels(ds, hub_split, schema) if schema["task"] != "retrieval" else [-1] * n
            rows.boxes += [None if b is None else check_box(b, annotation=f"{self.name} {hub_split}",
                                                            entry=f"row {k} ({box_col})")
                           for k, b in enumerate(_column(ds, box_col) if box_col else [None] * n)]
            rows.files += [None if p is None else self._file(p, f"{self.name} {w}", source)
                           for p, w in zip(_image_paths(ds, schema["image"]), where)]
            if split == "queries":
                junk = _column(ds, "junk") if "junk" in ds.features else [None] * n
                gt_rows += zip(rows.ids[start:], where, _column(ds, "positives"), junk)
        seen: dict[str, str] = {}
        for i, w in zip(rows.ids, rows.where):
            if i in seen:
                raise AnnotationError(f"{self.name}: the id {i!r} of {w} is also the id of {seen[i]} (column "
                                      f"{id_col!r}); ids must be unique in a stored split: fix the column, or leave "
                                      "-D id out (ids <split>/<row>)")
            seen[i] = w
        if split == "queries":
            rows.ground_truth = self._ground_truth(gt_rows, schema)
        return rows

    def _id(self, value, where: str, col: str) -> str:
        if value is None or isinstance(value, (bytes, dict, list, float)) or str(value).strip() == "":
            raise AnnotationError(f"{self.name} {where}: the id column {col!r} holds {O.show(value)}, not an id (a "
                                  "non-empty string or an integer); fix the cell, or leave -D id out (ids "
                                  "<split>/<row>)")
        return str(value)

    def _file(self, path: str, where: str, source: _Source) -> str:
        """The file a cell names instead of bytes (an image-folder set); it must lie inside the set."""
        full = path if os.path.isabs(path) or source.root is None else os.path.join(source.root, path)
        real = os.path.realpath(full)
        if not any(real == t or real.startswith(t.rstrip(os.sep) + os.sep) for t in source.trusted):
            raise AnnotationError(f"{where}: the image cell names the file {path!r}, outside the data set "
                                  f"({source.root or _datasets_cache()}); a cell's file must lie inside it: fix the "
                                  "set, or store the image's bytes in the cell")
        return full

    def _labels(self, ds, hub_split: str, schema: dict) -> list:
        kind, cols, classes = schema["kind"], schema["labels"], schema["classes"]
        where = f"{self.name} {hub_split}"
        if kind == "multi":
            columns = [_column(ds, c) for c in cols]
            out = []
            for k, row in enumerate(zip(*columns)):
                for c, v in zip(cols, row):
                    if v is None or int(v) not in (-1, 0, 1):
                        raise AnnotationError(f"{where}[{k}]: the label column {c!r} holds {O.show(v)}; each class's "
                                              "column holds 1 (present), 0 (absent) or -1 (ignored)")
                out.append(tuple(int(v) for v in row))
            return out
        col = cols[0]
        values = _column(ds, col)
        if kind == "list":
            out = []
            for k, v in enumerate(values):
                if v is None:
                    raise self._no_label(where, k, col)
                bad = [x for x in v if x is None or not 0 <= x < len(classes)]
                if bad:
                    raise AnnotationError(f"{where}[{k}]: the label column {col!r} lists {O.show(bad[0])}, not a class "
                                          f"id 0…{len(classes) - 1}; fix the row")
                present = set(v)
                out.append(tuple(1 if c in present else 0 for c in range(len(classes))))
            return out
        index = {c: k for k, c in enumerate(classes)} if kind == "str" else None
        out = []
        for k, v in enumerate(values):
            if v is None or (kind != "str" and v < 0):
                raise self._no_label(where, k, col)
            if kind == "str":
                out.append(index[v])
            elif v >= len(classes):
                raise AnnotationError(f"{where}[{k}]: the label column {col!r} holds {v}, not a class id 0…"
                                      f"{len(classes) - 1}; fix the row")
            else:
                out.append(int(v))
        return out

    def _no_label(self, where: str, k: int, col: str) -> AnnotationError:
        return AnnotationError(f"{where}[{k}]: no label in the column {col!r} (empty, or -1: an unlabelled split, "
                               "as competition test sets are); map labelled splits with -D "
                               "splits='{train: …, test: …}'")

    def _ground_truth(self, rows, schema: dict) -> dict:
        """``{query id: {positives, junk}}`` in database ids (an integer: a database row, without ids)."""
        db_parts = self._datasets()["database"]
        db_ids = set(self._split("database").ids)
        by_row = schema["id"] is None and len(db_parts) == 1
        gt = {}
        for qid, where, pos, junk in rows:
            lists = {}
            for what, values in (("positives", pos), ("junk", junk)):
                if values is None:
                    values = []
                if not isinstance(values, list):
                    values = [values]
                out = []
                for v in values:
                    ref = f"{db_parts[0][0]}/{v}" if by_row and isinstance(v, int) else str(v)
                    if ref not in db_ids:
                        example = next(iter(db_ids), "?")
                        raise AnnotationError(f"{self.name} {where}: {what} names {O.show(v)}, which is not a database "
                                              f"id (ids look like {example!r}); fix the query's {what}")
                    out.append(ref)
                lists[what] = sorted(set(out))
            both = sorted(set(lists["positives"]) & set(lists["junk"]))
            if both:
                raise AnnotationError(f"{self.name} {where}: {both[0]!r} is both among the positives and the junk; "
                                      "junk images are left out of the ranking, so it could never be found: keep it "
                                      "in one list")
            if not lists["positives"]:  # its AP is undefined: the mean would silently leave it out
                raise AnnotationError(f"{self.name} {where}: the query has no positives; every query needs at least "
                                      "one database id in its positives")
            gt[qid] = lists
        return gt

    # -- identity -------------------------------------------------------------------------------
    def options(self) -> dict:
        """The declared options, the repo, its commit and each stored split's source files' digest."""
        if self._identity is None:
            source = self._resolve()
            self._identity = {
                "repo": source.repo,
                "revision": source.revision,
                "fingerprints": {split: self._fingerprint(parts, source) for split, parts in self._datasets().items()},
            }
        return {**super().options(), **self._identity}

    def _fingerprint(self, parts, source: _Source) -> dict:
        """``{files, bytes, sha256}`` of a stored split's source files: the SHA-256 over one
        ``<name> <size> <sha256>`` line per file, in order."""
        data_files = source.builder.config.data_files or {}
        rows = []
        for hub_split, ds in parts:
            files = list(data_files.get(hub_split) or []) or [c["filename"] for c in ds.cache_files]
            for f in files:
                rows.append(_file_digest(str(f), source.root))
        text = "".join(f"{name} {size} {digest}\n" for name, size, digest in rows)
        return {"files": len(rows), "bytes": sum(r[1] for r in rows),
                "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _file_digest(path: str, root: Path | None) -> tuple[str, int, str]:
    """(name, size, SHA-256) of one file; a hub-cache blob is named by its SHA-256 already."""
    name = os.path.basename(path)
    if root is not None:
        with contextlib.suppress(ValueError):
            name = Path(path).relative_to(root).as_posix()
    size = os.path.getsize(path)
    if os.path.islink(path):
        blob = os.path.basename(os.path.realpath(path))
        if _SHA256.match(blob):
            return name, size, blob
    with open(path, "rb") as f:
        return name, size, hashlib.file_digest(f, "sha256").hexdigest()


def _arrow(ds, col: str):
    """One column as Arrow holds it: what ``Image(decode=False)`` gives, without ``datasets`` decoding."""
    return ds.with_format("arrow").select_columns([col])[:].column(col)


def _column(ds, col: str) -> list:
    return _arrow(ds, col).to_pylist()


def _image_sizes(ds, col: str) -> list:
    """The byte count of each image cell (0 or ``None`` where a cell holds no bytes), without reading
    the bytes: an ``Image`` column's ``bytes`` field, or a binary column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = _arrow(ds, col)
    return pc.binary_length(pc.struct_field(cells, "bytes") if pa.types.is_struct(cells.type) else cells).to_pylist()


def _cell_bytes(view, col: str, row: int) -> bytes:
    """One image cell's stored bytes (``view``: the split as Arrow, that column only), read when the
    image is decoded."""
    cell = view[row].column(col)[0].as_py()
    return bytes(cell["bytes"] if isinstance(cell, dict) else cell)


def _image_paths(ds, col: str) -> list:
    """The file path of each image cell that holds no bytes (``None`` elsewhere)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = _arrow(ds, col)
    if not pa.types.is_struct(cells.type):
        return [None] * len(cells)
    sizes = pc.binary_length(pc.struct_field(cells, "bytes")).to_pylist()
    return [p if p and not n else None for p, n in zip(pc.struct_field(cells, "path").to_pylist(), sizes)]


def _inner(f):
    """The item feature of a list column (``List``, ``LargeList``, ``Sequence``, ``[feature]``), else None."""
    from datasets import LargeList, List

    if isinstance(f, (List, LargeList)):
        return f.feature
    if isinstance(f, list) and len(f) == 1:
        return f[0]
    return None


def _dtype(f) -> str | None:
    from datasets import Value

    return f.dtype if isinstance(f, Value) else None


def _is_int(f) -> bool:
    return (_dtype(f) or "").startswith(("int", "uint"))


def _kind(f) -> str:
    """A column's type as a message names it."""
    from datasets import ClassLabel, Image

    if isinstance(f, ClassLabel):
        return f"ClassLabel ({f.num_classes} classes)"
    if isinstance(f, Image):
        return "Image"
    if _inner(f) is not None:
        return f"a list of {_kind(_inner(f))}"
    if _dtype(f) is not None:
        return _dtype(f)
    if isinstance(f, dict):
        return "a struct"
    return type(f).__name__
