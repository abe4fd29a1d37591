"""What a data set plugin provides: items per stored split, and the evaluation protocol.

A data set knows a layout on disk and a protocol; it never touches a model. Splits are what gets
extracted (one feature file each); :meth:`Dataset.trials` says how stored splits are combined into
train/test for evaluation. It works from the labels and ids stored in the feature files, so seeded
re-splits (e.g. Flowers-17's three random 40/20/20 splits) need no re-extraction.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .errors import MissingDataError, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
TASKS = ("multiclass", "multilabel", "retrieval")

ImageSource = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class Item:
    """One image: a file path or an in-memory uint8 array (H, W) or (H, W, 3)."""

    id: str
    image: ImageSource = field(repr=False)
    label: int | tuple[int, ...] = -1  # class id; for multi-label, one int per class (1, 0, -1 = ignore)
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class Trial:
    """One train/test evaluation: row indices per stored split (``None`` means all rows)."""

    name: str
    train: dict[str, np.ndarray | None]
    test: dict[str, np.ndarray | None]
    # stored splits of ``train`` that are the data set's official validation set (Flowers-102's
    # ``val``): heads choose hyperparameters on them, then refit on all of ``train``
    validation: tuple[str, ...] = ()


class Dataset:
    """Base class for data-set plugins. Subclasses set the class attributes and implement ``items``."""

    name: str = ""
    task: str = "multiclass"
    metric: str = "mean_class_accuracy"  # the metric the paper reports for this kind of data set
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""
    url: str = ""  # where the user gets the data
    layout: str = ""  # the expected layout under ``root``, shown when files are missing
    folder: str = ""  # default folder under the data root; empty for data sets that need no files
    box_scale: float = 1.0  # items' boxes are enlarged by this factor before cropping (CUB, H3D: 1.5)
    box_scale_fixed: bool = False  # the protocol fixes box_scale (revisited Oxford/Paris): no override
    downloads: tuple = ()  # cnnbench.download.Download entries: the official files, for `cnnbench datasets download`
    fewshot = None  # a cnnbench.fewshot.FewShot when the options ``shots`` (…) are given; see __init_subclass__
    distractors: str | None = None  # retrieval: the ``distractors`` option (cnnbench.retrieval.Distractors)
    distractor_set: bool = False  # a set only ever appended to others' databases (revisitop1m): no distractors

    def __init_subclass__(cls, **kwargs) -> None:
        """Every data set accepts the few-shot options (``shots``, ``shots_trials``, ``shots_seed``,
        :mod:`cnnbench.fewshot`) and ``distractors`` (retrieval data sets: a feature file or data set
        appended to the database at evaluation, :class:`cnnbench.retrieval.Distractors`) beside its
        own: they are taken off before its constructor runs, so no plugin needs to know them, and its
        signature shows them. Neither enters :meth:`options`, which is part of every feature file's
        signature: they change how stored features are evaluated, not the features, so giving them
        re-extracts nothing; the run record keeps them (``fewshot``, ``provenance.distractors``)."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _accepting_fewshot(cls.__dict__["__init__"])

    def __init__(self, data_root: str | os.PathLike | None = None, path: str | os.PathLike | None = None) -> None:
        """``path`` names the data set's own folder; otherwise it is ``data_root/<folder>``."""
        if path is not None:
            self.root: Path | None = Path(path)
        elif self.folder:
            self.root = Path(data_root if data_root is not None else default_data_root()) / self.folder
        else:
            self.root = None

    # -- what subclasses implement ------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        raise NotImplementedError

    def items(self, split: str) -> Sequence[Item]:
        raise NotImplementedError

    def required_paths(self) -> list[Path]:
        """Files or folders that must exist; checked by :meth:`check` before anything runs."""
        return [self.root] if self.root is not None else []

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        """Default protocol: train on ``train``, test on ``test``."""
        return [Trial("default", {"train": None}, {"test": None})]

    def options(self) -> dict:
        """The protocol options in force, recorded with the results."""
        return {}

    def extras(self, split: str) -> dict:
        """Per-split structures the heads need besides labels, stored as JSON in the feature file
        (``/extras/<name>``) and handed to heads as ``FeatureSet.extras``. They refer to images by
        id, so they stay valid when an unreadable image is skipped. For retrieval data sets:
        ``{"ground_truth": {query_id: {"positives": [db ids], "junk": [db ids]}}}``."""
        return {}

    # -- shared behaviour -------------------------------------------------------------------------
    def present(self) -> bool:
        try:
            self.check()
        except MissingDataError:
            return False
        return True

    def check(self) -> None:
        for path in self.required_paths():
            if not path.exists():
                raise MissingDataError(
                    f"data set {self.name!r}: {path} does not exist.\n"
                    f"Expected layout under {self.root}:\n{self.layout or '(see the plugin docs)'}\n"
                    f"Get it from: {self.url or '(see the plugin docs)'}\n"
                    "Point cnnbench at the folder that holds it with --data-root, CNNBENCH_DATA or "
                    "params.yaml's data_root."
                )

    def _require_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"data set {self.name!r} has splits {list(self.splits)}, not {split!r}")


GENERIC_KEYS = ("distractors",)  # besides cnnbench.fewshot.KEYS: options every data set accepts


def _accepting_fewshot(init):
    """``init`` that also takes the few-shot options and ``distractors``; the outermost constructor
    checks and keeps them."""
    from . import fewshot as F

    if getattr(init, "_takes_fewshot", False):
        return init

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        given = {k: kwargs.pop(k) for k in F.KEYS if k in kwargs}
        distractors = kwargs.pop("distractors", None)
        init(self, *args, **kwargs)
        if distractors is not None:
            self.distractors = _distractors_option(self, distractors)
        if given:  # an inner (super().__init__) call never gets them: the outer one took them off
            name = getattr(self, "name", "") or type(self).__name__
            spec = F.parse(name, **given)
            if spec is not None and getattr(self, "task", "multiclass") != "multiclass":
                raise UserError(f"{name}: shots: few-shot evaluation draws k images per class, which needs a "
                                f"multi-class data set; {name} is {self.task}; leave shots out")
            self.fewshot = spec

    sig = inspect.signature(init)
    params = list(sig.parameters.values())
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in (*F.KEYS, *GENERIC_KEYS)
             if k not in sig.parameters]
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    wrapper.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
    wrapper._takes_fewshot = True
    return wrapper


def _distractors_option(dataset: "Dataset", value) -> str:
    """``distractors``: a data-set name or the path of a feature file / folder, for a retrieval data set."""
    name = getattr(dataset, "name", "") or type(dataset).__name__
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not (isinstance(value, str) and value.strip()):
        raise UserError(f"{name}: distractors: {value!r} is not allowed; expected a data-set name (revisitop1m), a "
                        "feature file (features/<backbone>/revisitop1m/database.h5) or its folder")
    if getattr(dataset, "distractor_set", False):
        raise UserError(f"{name}: distractors: {name} is itself a distractor set; give distractors={name} to the "
                        "retrieval data set you evaluate (roxford5k, rparis6k, oxford5k, paris6k, holidays, …)")
    if getattr(dataset, "task", "multiclass") != "retrieval":
        raise UserError(f"{name}: distractors: distractor images are appended to a retrieval database; {name} is a "
                        f"{dataset.task} data set; leave distractors out")
    return value.strip()


Dataset.__init__ = _accepting_fewshot(Dataset.__init__)


def default_data_root() -> Path:
    """``$CNNBENCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("CNNBENCH_DATA", "data"))


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder``; a folder that cannot be read is the user's to fix, named in one line."""
    try:
        return list(folder.iterdir())
    except PermissionError as exc:
        raise UserError(f"cannot read the folder {folder}: permission denied; make it readable "
                        f"(e.g. chmod -R u+rX {str(folder)!r}) or move it out of the data set") from exc
    except NotADirectoryError as exc:
        raise UserError(f"{folder} is a file, not a folder; the data set expects a folder there") from exc


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in a stable (sorted) order."""
    return sorted(p for p in folder_entries(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in folder_entries(root) if p.is_dir() and not p.name.startswith("."))


def _class_label(cls, class_names: Sequence[str] | None) -> str:
    k = int(cls)
    if class_names is not None and 0 <= k < len(class_names):
        return repr(class_names[k])
    return str(k)


def seeded_per_class_split(
    labels: np.ndarray, counts: Sequence[int], seed: int, *, last_at_most: bool = False,
    class_names: Sequence[str] | None = None, hint: str = "",
) -> list[np.ndarray]:
    """Split row indices per class into consecutive parts of ``counts`` images (a count of -1 means
    "the rest"), with a seeded permutation per class. With ``last_at_most`` the last count is a cap
    (Caltech-101: 30 training images, then up to 50 test images), and every class must keep at least
    one image for it. Returns one sorted index array per part.

    A class too small for the split raises :class:`~cnnbench.errors.UserError` naming the class
    (by its name in ``class_names`` when given, indexed by label) and its size; ``hint`` says what to
    do (e.g. which option to lower)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in counts]
    tail = f"; {hint}" if hint else ""
    positive = [c for c in (counts[:-1] if last_at_most else counts) if c > 0]
    needed = sum(positive) + (1 if last_at_most else 0)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for k, n in enumerate(counts):
            if n < 0:
                stop = len(idx)
            elif last_at_most and k == len(counts) - 1:
                if start >= len(idx):
                    raise UserError(f"class {_class_label(cls, class_names)} has {len(idx)} images; the protocol "
                                    f"needs more than {start}{tail}")
                stop = min(len(idx), start + n)
            else:
                stop = start + n
                if stop > len(idx):
                    raise UserError(f"class {_class_label(cls, class_names)} has {len(idx)} images, fewer than the "
                                    f"{needed} the split asks for{tail}")
            parts[k].extend(idx[start:stop].tolist())
            start = stop
    return [np.array(sorted(p), dtype=np.int64) for p in parts]
