"""What a data set plugin provides: items per stored split, and the evaluation protocol.

A data set knows a layout on disk and a protocol; it never touches a model. Splits are what gets
extracted (one feature file each); :meth:`Dataset.trials` says how stored splits are combined into
train/test for evaluation. It works from the labels and ids stored in the feature files, so seeded
re-splits (e.g. Flowers-17's three random 40/20/20 splits) need no re-extraction.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from . import options as O
from .errors import MissingDataError, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
TASKS = ("multiclass", "multilabel", "retrieval")



@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes (a Hugging Face parquet cell, a WebDataset sample), decoded by the same
    decoder as a file; ``name`` says where it came from in messages (``hf:user/set@rev train[12]``).
    ``load``: a picklable callable that reads the bytes when the image is decoded, so a split of a
    large set is never held in memory at once (``data`` is then unused); ``source``: the file it
    reads them from, which every machine that decodes must see (a Ray node checks it is there)."""

    name: str
    data: bytes = field(default=b"", repr=False)
    load: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    source: str | None = None

    def __str__(self) -> str:
        return self.name

    def read(self) -> bytes:
        return self.data if self.load is None else self.load()


ImageSource = Union[str, os.PathLike, np.ndarray, EncodedImage]


@dataclass(frozen=True)
class Item:
    """One image: a file path, an image file's bytes (:class:`EncodedImage`) or an in-memory uint8
    array (H, W) or (H, W, 3)."""

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


@dataclass(frozen=True)
class DatasetOptions(O.Options):
    """What every data set takes: where it lives (neither enters a signature: moving a data set
    changes no result). A data set's own ``Options`` extend this class."""

    data_root: str | None = O.option(None, "the folder holding the data sets (default: --data-root, "
                                     "$CNNBENCH_DATA, params.yaml's data_root)", check=O.as_path, record=False)
    path: str | None = O.option(None, "this data set's own folder (default: <data_root>/<folder>)",
                                check=O.as_path, record=False)


class Dataset(O.Configured):
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
    # a set only ever appended to others' databases (revisitop1m): the evaluation option ``distractors``
    # (cnnbench.recipes.EvalOptions) may not name it as the evaluated set
    distractor_set: bool = False

    def __init__(self, data_root: str | os.PathLike | None = None, path: str | os.PathLike | None = None, *,
                 options: "O.Options | None" = None, **given) -> None:
        """``path`` names the data set's own folder; otherwise it is ``data_root/<folder>``.

        A data set that declares ``Options`` (a subclass of :class:`DatasetOptions`) is built from
        them: ``cnnbench.plugins.create`` hands them over parsed (``data_root`` and ``path`` among
        them), a direct call has its keywords parsed here; they then read as attributes
        (``self.train_on``) and :meth:`options` records them. Without ``Options``, a subclass keeps
        its own constructor and calls this one with ``data_root`` and ``path``."""
        located = {k: v for k, v in (("data_root", data_root), ("path", path)) if v is not None}
        declared = self._bind_options(options, {**given, **located}) if O.options_of(type(self)) else None
        if declared is not None:
            data_root, path = declared.data_root, declared.path
        elif given:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(given)}")
        if path is not None:
            self.root: Path | None = Path(path)
        elif self.folder:
            self.root = Path(data_root if data_root is not None else default_data_root()) / self.folder
        else:
            self.root = None
        if declared is not None:
            self.setup()

    def setup(self) -> None:
        """Derive what the declared options imply, once ``root`` is known (caches start empty here)."""

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
        """The protocol options in force, recorded with the results (the declared ``Options`` but
        where the data set lives)."""
        opts = self.__dict__.get("opts")
        return opts.recorded() if opts is not None else {}


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
            if not path.exists():  # the first line says it all (a `dvc repro` stops on it); the layout follows
                get = (f"get it with `cnnbench datasets download {self.name}`" if self.downloads else
                       f"no automatic download: unpack it there from {self.url or '(see the plugin docs)'}")
                raise MissingDataError(
                    f"data set {self.name!r} is not in {self.root} ({path} does not exist): {get}, or point "
                    "cnnbench at the folder that holds it with --data-root, CNNBENCH_DATA or params.yaml's data_root.\n"
                    f"Expected layout under {self.root}:\n{self.layout or '(see the plugin docs)'}\n"
                    f"Get it from: {self.url or '(see the plugin docs)'}"
                )

    def _require_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"data set {self.name!r} has splits {list(self.splits)}, not {split!r}")


# -- what an annotation file may say --------------------------------------------------------------
# Every data set reads its annotation files (lists, ground truth, labels) through these, so a path that
# leads out of the data set's folder, a box that is not a box, or two entries with one id are refused
# the same way everywhere, in one line naming the file, the entry and what to do.


class AnnotationError(UserError):
    """An annotation file (image list, label file, ground truth) says something its format does not
    allow: the message names the file and the entry. A :class:`~cnnbench.errors.UserError`, so the
    command line prints it as one line; still a ``ValueError`` for library callers."""


GET_AGAIN = "correct the entry, or get the file again from the data set's source"


def paths_inside(root: str | os.PathLike, entries: Iterable[str], *, annotation: str | os.PathLike,
                 base: str | os.PathLike | None = None) -> list[Path]:
    """``base / entry`` for each relative path an annotation file gives (``base`` defaults to ``root``,
    the data set's folder), each checked to stay inside the data set: an absolute path, a ``..`` or a
    symbolic link that leads out of both ``root`` and ``base`` (each as resolved: the data set's
    folder, or ``jpg/`` under it, may itself be a link the user made) is an :class:`AnnotationError`
    naming ``annotation`` and the entry. Nothing is read; a file that does not exist passes (the
    caller says it is missing). Folders are resolved once each, so a million entries cost one
    ``lstat`` each."""
    root = Path(root)
    base = root if base is None else Path(base)
    allowed = (os.path.realpath(root), os.path.realpath(base))
    folders: dict[str, str] = {}
    out = []
    for entry in entries:
        if not isinstance(entry, str) or not entry or "\0" in entry:
            raise AnnotationError(f"{annotation}: the entry {entry!r} is not a file path; {GET_AGAIN}")
        if os.path.isabs(entry) or entry.startswith("\\") or entry[1:2] == ":":  # also C:\… and \\host\…
            raise AnnotationError(f"{annotation}: the entry {entry!r} is an absolute path; entries name files inside "
                                  f"the data set's folder {base}, relative to it: {GET_AGAIN}")
        path = base / entry
        folder, leaf = os.path.split(os.fspath(path))
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        real = os.path.join(folders[folder], leaf)
        if leaf in ("", ".", "..") or os.path.islink(real):
            real = os.path.realpath(real)
        if not any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in allowed):
            lexical = os.path.normpath(os.path.join(os.path.realpath(base), entry))
            if any(lexical == a or lexical.startswith(a.rstrip(os.sep) + os.sep) for a in allowed):
                raise AnnotationError(
                    f"{annotation}: the entry {entry!r} leads out of the data set's folder {root} through a symbolic "
                    f"link (to {real}); keep the images inside the folder (a link to the whole data-set folder, or to "
                    f"{base}, is fine), or remove the link")
            raise AnnotationError(f"{annotation}: the entry {entry!r} names {real}, outside the data set's folder "
                                  f"{root}; entries may only name files inside it: {GET_AGAIN}")
        out.append(path)
    return out


def path_inside(root: str | os.PathLike, entry: str, *, annotation: str | os.PathLike,
                base: str | os.PathLike | None = None) -> Path:
    """One entry of :func:`paths_inside`."""
    return paths_inside(root, [entry], annotation=annotation, base=base)[0]


def check_box(box, *, annotation: str | os.PathLike, entry: str, name: str = "box", xywh: bool = False,
              text: bool = False, negative: bool = False) -> tuple[float, float, float, float]:
    """A box from an annotation file as ``(x1, y1, x2, y2)`` floats: four finite numbers with x1 < x2
    and y1 < y2, none below 0 (``negative`` allows boxes that start left of or above the image;
    the engine clips them). ``xywh``: the file gives x, y, width, height (CUB, H3D). ``text``: the
    values are the tokens of a text line (parsed as numbers). Anything else is an
    :class:`AnnotationError` naming ``annotation``, the ``entry`` and the box."""
    form = "x, y, width, height" if xywh else "x1, y1, x2, y2"
    rule = "width and height > 0" if xywh else "x1 < x2 and y1 < y2"

    def bad(reason: str) -> AnnotationError:
        shown = repr(box)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return AnnotationError(f"{annotation}: {entry}: {name} must be four numbers {form} (finite, {rule}"
                               f"{'' if negative else ', none below 0'}), got {shown}: {reason}; {GET_AGAIN}")

    if isinstance(box, (str, bytes)) or not isinstance(box, Iterable):
        raise bad("not a list of four numbers")
    values = list(box)
    if len(values) != 4:
        raise bad(f"{len(values)} values")
    nums = []
    for v in values:
        if text and isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise bad(f"{v!r} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise bad(f"{v!r} is not a number")
        v = float(v)
        if not math.isfinite(v):
            raise bad(f"{v} is not a finite number")
        nums.append(v)
    x1, y1, a, b = nums
    x2, y2 = (x1 + a, y1 + b) if xywh else (a, b)
    if not (x1 < x2 and y1 < y2):
        raise bad("the box is empty or inverted")
    if not negative and min(x1, y1) < 0:
        raise bad("it starts outside the image")
    return (x1, y1, x2, y2)


def unique_ids(ids: Iterable, *, annotation: str | os.PathLike, what: str = "id", entry: str = "entry") -> list[str]:
    """``ids`` (one per entry of an annotation file, in order), each a non-empty string, none twice;
    else an :class:`AnnotationError` naming ``annotation``, the id and its entries (1-based)."""
    seen: dict[str, int] = {}
    for k, i in enumerate(ids, 1):
        if not isinstance(i, str) or not i.strip():
            raise AnnotationError(f"{annotation}: {entry} {k}: the {what} {i!r} is not a name (a non-empty string); "
                                  f"{GET_AGAIN}")
        if i in seen:
            raise AnnotationError(f"{annotation}: the {what} {i!r} is given twice ({entry} {seen[i]} and {k}); every "
                                  f"{what} must be unique (a repeat would be counted twice or hide the other): remove "
                                  "or rename one")
        seen[i] = k
    return list(seen)


def ids_of_files(paths: Iterable[Path], *, key=lambda p: p.stem) -> dict[str, Path]:
    """``{id: path}`` for image files whose id is ``key(path)`` (the file name without its extension);
    two files with one id (``x.jpg`` beside ``x.png``) are an :class:`AnnotationError` naming both,
    since keeping either would silently drop the other."""
    out: dict[str, Path] = {}
    for p in paths:
        k = key(p)
        if k in out:
            raise AnnotationError(f"two images have the id {k!r}: {out[k]} and {p} (ids are file names without their "
                                  "extension); rename or remove one")
        out[k] = p
    return out


def default_data_root() -> Path:
    """``$CNNBENCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("CNNBENCH_DATA", "data"))


_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:=@-]*")


def folder_name(name: str) -> str:
    """A data set's name as a folder (``features/<backbone>/<here>/``, ``metrics/…``): the name itself
    when it is one already (every named data set, ``wds:wds_voc2007``), or two nested folders for a
    ``<namespace>/<name>`` name (``hf:user/set``: a hub repo), so that dvc.yaml's ``${item.dataset}``
    paths stay right; else, for a name that holds a path or a URL (``wds:/data/voc``), its characters
    outside letters, digits and ``._+:=@-`` as ``_``, then ``-`` and 8 hex of the name's SHA-256, so
    two names never share a folder."""
    parts = name.split("/")
    if len(parts) <= 2 and all(_FOLDER_NAME.fullmatch(p) and ".." not in p for p in parts):
        return name
    slug = re.sub(r"[^A-Za-z0-9._+:=@-]+", "_", name).strip("._")[:64]
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


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
