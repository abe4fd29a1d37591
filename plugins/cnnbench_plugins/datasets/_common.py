"""Helpers shared by the paper's data sets: reading annotation files with errors that name the file,
and the Oxford-style retrieval protocol (Oxford5k, Paris6k, Sculptures6k share one ground-truth format).
What an entry may say (paths inside the data set, boxes, unique ids) is decided once, in
:mod:`cnnbench.dataset` (``paths_inside``, ``check_box``, ``unique_ids``, ``ids_of_files``), the
plugin surface, so third-party data sets check their files the same way.

Not a plugin itself (no entry point): each data set keeps its own module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbench import options as O
from cnnbench.dataset import (IMAGE_EXTENSIONS, AnnotationError, Dataset, DatasetOptions, Item, Trial, check_box,
                              folder_entries, ids_of_files)
from cnnbench.errors import MissingDataError, UserError


def numbered_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the non-empty lines of a UTF-8 text file (a byte-order mark
    and CRLF line ends are fine). A missing or unreadable file raises :class:`MissingDataError`; text
    that is not UTF-8 an :class:`AnnotationError` naming the line: a name decoded by guesswork would
    never match the file it names."""
    if not path.is_file():
        raise MissingDataError(f"{what}: {path} does not exist; is the data set fully unpacked?")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MissingDataError(f"{what}: cannot read {path}: {exc.strerror or exc}; make it readable "
                               f"(chmod u+r {str(path)!r})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise AnnotationError(f"{path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); convert the file "
                              f"to UTF-8 (e.g. iconv -f latin1 -t utf-8), or get it again") from None
    return [(n, line.strip()) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def read_lines(path: Path, what: str) -> list[str]:
    """The non-empty, stripped lines of :func:`numbered_lines`."""
    return [line for _, line in numbered_lines(path, what)]


def bad_line(path: Path, lineno: int, line: str, expected: str) -> AnnotationError:
    return AnnotationError(f"{path}, line {lineno}: expected {expected}, got {line[:120]!r}")


def images_under(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (and sub-folders if ``recursive``), sorted by relative path. A folder
    that cannot be read raises :class:`~cnnbench.errors.UserError` naming it (a recursive search
    does not skip it silently)."""
    if recursive:
        def unreadable(exc: OSError) -> None:
            raise UserError(f"cannot read the folder {exc.filename or folder}: {exc.strerror or exc}; make it "
                            f"readable (e.g. chmod -R u+rX {str(folder)!r}) or move it out of the data set") from exc

        it = (Path(top) / name for top, _, files in os.walk(folder, onerror=unreadable) for name in files)
    else:
        it = iter(folder_entries(folder))
    return sorted((p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(folder).as_posix())


def require_images(found: list, folder: Path, dataset: str) -> list:
    """``found`` if it is not empty; an empty data set must not be extracted into an empty feature file."""
    if not found:
        raise UserError(f"{dataset}: no images found under {folder} (image files end in "
                        f"{', '.join(IMAGE_EXTENSIONS)}); check the folder, or point the data set elsewhere "
                        "(--data-root / path)")
    return found


# -- retrieval ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalOptions(DatasetOptions):
    """What every retrieval data set takes: where it lives, nothing else (the protocol is fixed by
    the ground truth); a data set with protocol options (``oxford5k-subset``'s ``query_image``)
    extends this class."""


class RetrievalDataset(Dataset):
    """Two stored splits: ``database`` (the images searched) and ``queries`` (query images, with
    their query box); ``extras("queries")`` holds the ground truth by image id. One trial: train =
    the database, test = the queries. Distractors (R1M) are not a data-set option but an evaluation
    one (``-E distractors=revisitop1m``; :class:`cnnbench.retrieval.Distractors`): a distractor
    feature file appended to the database at evaluation."""

    Options = RetrievalOptions
    task = "retrieval"
    metric = "mAP"
    splits = ("database", "queries")

    @property
    def classes(self) -> list[str]:
        return []

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        return [Trial("default", {"database": None}, {"queries": None})]


@dataclass(frozen=True)
class OxfordQuery:
    id: str  # e.g. "all_souls_1"
    image: str  # database id of the query image, e.g. "all_souls_000013"
    box: tuple[float, float, float, float]
    good: tuple[str, ...]
    ok: tuple[str, ...]
    junk: tuple[str, ...]


_GT_NAME = re.compile(r"^(?P<query>.+_\d+)_query\.txt$")


def parse_oxford_gt(gt_dir: Path, prefixes: tuple[str, ...] = ("oxc1_",)) -> list[OxfordQuery]:
    """Read ``<name>_<n>_{query,good,ok,junk}.txt`` (Philbin et al. 2007's format), sorted by query id.

    A query file holds one line ``<prefix><image> x1 y1 x2 y2``; the lists hold one image name per
    line (no extension). ``prefixes`` are stripped from the query image name (Oxford's ``oxc1_``)."""
    if not gt_dir.is_dir():
        raise MissingDataError(f"ground-truth folder {gt_dir} does not exist")
    queries = []
    for path in sorted(gt_dir.iterdir()):
        m = _GT_NAME.match(path.name)
        if not m:
            continue
        qid = m.group("query")
        lines = read_lines(path, "query file")
        if len(lines) != 1:
            raise bad_line(path, 1, " | ".join(lines), "exactly one line '<image> x1 y1 x2 y2'")
        parts = lines[0].split()
        if len(parts) != 5:
            raise bad_line(path, 1, lines[0], "'<image> x1 y1 x2 y2'")
        image = parts[0]
        for prefix in prefixes:
            if image.startswith(prefix):
                image = image[len(prefix):]
                break
        box = check_box(parts[1:], annotation=path, entry=f"line 1 ({lines[0][:60]!r})", text=True)
        good, ok, junk = (_gt_list(gt_dir, qid, kind) for kind in ("good", "ok", "junk"))
        queries.append(OxfordQuery(qid, Path(image).stem, box, good, ok, junk))  # type: ignore[arg-type]
    if not queries:
        raise MissingDataError(f"{gt_dir} holds no '<name>_<n>_query.txt' ground-truth files")
    return queries


def _gt_list(gt_dir: Path, qid: str, kind: str) -> tuple[str, ...]:
    """Image ids of ``<qid>_<kind>.txt`` (one name a line), sorted."""
    lines = read_lines(gt_dir / f"{qid}_{kind}.txt", f"{kind} list of query {qid}")
    return tuple(sorted(Path(line.split()[0]).stem for line in lines))


class OxfordStyleRetrieval(RetrievalDataset):
    """Oxford5k's protocol: the database is every image under ``jpg/`` (sub-folders included, as in
    Paris6k's archive), ids are file stems; each ``gt/*_query.txt`` is one query, cropped to its box;
    positives are good + ok, junk is ignored by the metric."""

    image_dir = "jpg"
    gt_dir = "gt"
    query_prefixes: tuple[str, ...] = ("oxc1_",)

    def setup(self) -> None:
        super().setup()
        self._db: dict[str, Path] | None = None
        self._queries: list[OxfordQuery] | None = None

    def required_paths(self):
        return [self.root / self.image_dir, self.root / self.gt_dir]

    def database(self) -> dict[str, Path]:
        if self._db is None:
            self.check()
            folder = self.root / self.image_dir
            self._db = ids_of_files(require_images(images_under(folder, recursive=True), folder, self.name))
        return self._db

    def queries(self) -> list[OxfordQuery]:
        if self._queries is None:
            self.check()
            self._queries = parse_oxford_gt(self.root / self.gt_dir, self.query_prefixes)
            db = self.database()
            for q in self._queries:
                if q.image not in db:
                    raise AnnotationError(f"{self.name}: query {q.id} uses image {q.image!r}, which is not "
                                          f"under {self.root / self.image_dir}")
                if not (q.good or q.ok):  # its AP is undefined: the mean would silently leave it out
                    gt = self.root / self.gt_dir
                    raise AnnotationError(f"{gt / f'{q.id}_good.txt'} and {q.id}_ok.txt list no image: query {q.id} "
                                          "has no positives; get the ground-truth files again")
        return self._queries

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        db = self.database()
        if split == "database":
            return [Item(i, str(p)) for i, p in db.items()]
        return [Item(q.id, str(db[q.image]), box=q.box) for q in self.queries()]

    def extras(self, split: str) -> dict:
        self._require_split(split)
        if split != "queries":
            return {}
        return {"ground_truth": {q.id: {"positives": sorted(set(q.good) | set(q.ok)), "junk": list(q.junk)}
                                 for q in self.queries()}}


# -- options -----------------------------------------------------------------------------------------


def seeds_option(dataset: str, value) -> list[int]:
    """``seeds``: one seed or a non-empty list of distinct seeds (integers >= 0), one trial each."""
    seeds = O.int_list(f"{dataset}: seeds", value, min=0, min_len=1)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{dataset}: seeds: {value!r} is not allowed; expected distinct seeds (a repeated seed "
                        "repeats the same trial and skews the mean and spread); e.g. [0, 1, 2]")
    return seeds


def per_class_option(dataset: str, key: str, value, *, rest: bool) -> int:
    """A number of images per class (>= 1); with ``rest``, -1 means "all the remaining ones"."""
    allowed = "an integer >= 1" + (", or -1 for all the remaining images" if rest else "")
    try:
        n = O.as_int(f"{dataset}: {key}", value, min=-1 if rest else 1)
    except UserError:
        n = None
    if n is None or n == 0:
        raise UserError(f"{dataset}: {key}: {value!r} is not allowed; expected {allowed} (images per class)")
    return n


def seeds(name: str, value) -> tuple[int, ...]:
    """:func:`seeds_option` as a declared option's ``check=`` (``name`` is ``"<data set>: seeds"``)."""
    return tuple(seeds_option(name.rsplit(": ", 1)[0], value))


def train_per_class(name: str, value) -> int:
    """:func:`per_class_option` as a ``check=``: training images per class."""
    return per_class_option(*name.rsplit(": ", 1), value, rest=False)


def test_per_class(name: str, value) -> int:
    """:func:`per_class_option` as a ``check=``: test images per class, -1 for all the remaining ones."""
    return per_class_option(*name.rsplit(": ", 1), value, rest=True)
