"""``roxford5k`` and ``rparis6k``: revisited Oxford and Paris (Radenović, Iscen, Tolias, Avrithis, Chum,
"Revisiting Oxford and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018).

Since 2018 instance retrieval is reported on these, not on the 2007/2008 ground truth: the
annotation was redone (many original labels were wrong), 15 harder queries were added (70 per
data set) and every result is given in three settings, Easy, Medium and Hard (see
:func:`cnnbench.metrics.revisited_scores`; the l2 head reports ``mAP_easy`` … ``mP@10_hard``).

Layout, as revisitop's own scripts make it: ``<data root>/roxford5k/jpg/<name>.jpg`` (the Oxford
Buildings images) and ``<data root>/roxford5k/gnd_roxford5k.pkl``; the same for ``rparis6k``
(``gnd_rparis6k.pkl``). revisitop moves the Paris images out of their landmark folders; images
still in the archives' ``paris/<landmark>/`` folders under ``jpg/`` are found too.

The ground-truth pickle holds ``{"imlist": [database names], "qimlist": [query names], "gnd": [one
dict per query: "bbx": [x1, y1, x2, y2], "easy", "hard", "junk": indices into imlist]}``. A pickle
can run code when it is loaded, so it is read by an unpickler that refuses every global: only
lists, dicts, tuples, numbers, strings, booleans and None can be built (revisitop's protocol-2
pickles hold plain lists; a file with numpy arrays, or any other object, is refused in one line),
and then the structure is checked (keys, index ranges, four-number boxes).

Protocol. Splits ``database`` (every ``imlist`` image, id = its name) and ``queries`` (every
``qimlist`` image, id = its name). Query images are not database images: they are their own
split and never ranked. Each query is cropped to its ``bbx`` before anything else, always (the
engine crops ``Item.box``; this data set's ``box_scale`` is 1.0, so the crop is the box itself, as
revisitop's ``example_process_images`` crops with PIL); results without the crop differ by
several mAP points, so the crop is part of the protocol, recorded in :meth:`options` (hence in
every feature file's signature) and the boxes in the queries file's extras (``query_boxes``).
Ground truth (``extras("queries")``), by database id: ``{"easy", "hard", "junk"}`` as distributed,
plus ``positives`` = easy + hard and ``junk``, the Medium setting, for code that knows only the
original protocol.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

from cnnbench import hookimpl
from cnnbench.dataset import Item, check_box, ids_of_files, paths_inside
from cnnbench.download import Download
from cnnbench.errors import MissingDataError

from ._common import AnnotationError, RetrievalDataset, images_under

MAX_GND_BYTES = 64 << 20  # the official files are well under 1 MB; a pickle's size bounds what it builds


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain data only: every global (class, function, ``os.system``, numpy's reconstructors) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names the global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it uses a persistent id")


def load_plain_pickle(path: Path) -> object:
    """The object in a pickle of plain data (lists, dicts, tuples, numbers, strings, booleans, None);
    anything else is an :class:`AnnotationError` naming the file, without running any of its code."""
    try:
        size = path.stat().st_size
        if size > MAX_GND_BYTES:
            raise AnnotationError(f"{path}: {size} bytes is too large for a revisitop ground-truth pickle (at most "
                                  f"{MAX_GND_BYTES}); download gnd_*.pkl again")
        data = path.read_bytes()
    except OSError as exc:
        raise MissingDataError(f"cannot read {path}: {exc.strerror or exc}; is the data set fully downloaded?") from exc
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - whatever a hostile or broken file raises, one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnnotationError(f"{path} is not a plain revisitop ground-truth pickle ({reason}); only lists, dicts, "
                              "numbers and strings are read (numpy arrays and other objects are refused: unpickling "
                              "them can run code); use revisitop's gnd_*.pkl, or re-save it with plain lists") from None


@dataclass(frozen=True)
class RevisitedQuery:
    name: str  # qimlist entry: the query image
    box: tuple[float, float, float, float]
    easy: tuple[str, ...]  # database names, in the file's order
    hard: tuple[str, ...]
    junk: tuple[str, ...]


@dataclass(frozen=True)
class RevisitedGroundTruth:
    imlist: tuple[str, ...]
    queries: tuple[RevisitedQuery, ...]


def parse_gnd(path: Path) -> RevisitedGroundTruth:
    """Read and check a revisitop ``gnd_<name>.pkl``; every fault is one line naming the file."""
    raw = load_plain_pickle(path)

    def bad(what: str) -> AnnotationError:
        return AnnotationError(f"{path}: {what}; this is not a revisitop ground-truth file (download gnd_*.pkl again)")

    if not isinstance(raw, dict):
        raise bad(f"expected a dict with imlist, qimlist and gnd, got {type(raw).__name__}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in raw]
    if missing:
        raise bad(f"the dict lacks {missing}")
    imlist, qimlist, gnd = raw["imlist"], raw["qimlist"], raw["gnd"]
    for key, names in (("imlist", imlist), ("qimlist", qimlist)):
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
            raise bad(f"{key} must be a list of image names (strings)")
        if not names:
            raise bad(f"{key} is empty")
    seen: set[str] = set()
    for name in imlist:
        if name in seen:
            raise bad(f"imlist names {name!r} twice")
        seen.add(name)
    if not isinstance(gnd, (list, tuple)) or len(gnd) != len(qimlist):
        raise bad(f"gnd must be a list of one dict per query ({len(qimlist)} in qimlist)")
    n = len(imlist)
    queries = []
    for q, (name, entry) in enumerate(zip(qimlist, gnd)):
        where = f"gnd[{q}] (query {name!r})"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be a dict with bbx, easy, hard and junk")
        absent = [k for k in ("bbx", "easy", "hard", "junk") if k not in entry]
        if absent:
            raise bad(f"{where} lacks {absent}")
        box = check_box(entry["bbx"], annotation=path, entry=where, name="bbx")
        lists = {}
        for key in ("easy", "hard", "junk"):
            idx = entry[key]
            if not isinstance(idx, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
                raise bad(f"{where}: {key} must be a list of integer indices into imlist")
            out_of_range = [i for i in idx if not 0 <= i < n]
            if out_of_range:
                raise bad(f"{where}: {key} index {out_of_range[0]} is outside imlist (0..{n - 1})")
            lists[key] = tuple(imlist[i] for i in idx)
        queries.append(RevisitedQuery(name, box, **lists))  # type: ignore[arg-type]
    return RevisitedGroundTruth(tuple(imlist), tuple(queries))


class RevisitedRetrieval(RetrievalDataset):
    """The revisited protocol on revisitop's layout; subclasses name the folder and the files."""

    metric = "mAP_medium"  # what the l2 head reports first and compare shows (with mAP_hard)
    box_scale = 1.0  # queries are cropped to their box exactly, never enlarged
    box_scale_fixed = True  # extract.box_scale / --box-scale may not change it (refused in one line)
    image_dir = "jpg"
    gnd_name = ""  # gnd_<name>.pkl

    def setup(self) -> None:
        super().setup()
        self._gt: RevisitedGroundTruth | None = None
        self._paths: dict[str, Path] | None = None

    def required_paths(self):
        return [self.root / self.image_dir, self.root / self.gnd_name]

    def options(self) -> dict:
        # Not options a user gives (none is declared beyond where the data lives) but the protocol's fixed
        # choices, recorded so that every feature file's signature says its queries were cropped to bbx.
        return {**super().options(), "protocol": "revisited", "query_crop": "bbx"}

    def ground_truth(self) -> RevisitedGroundTruth:
        if self._gt is None:
            self.check()
            self._gt = parse_gnd(self.root / self.gnd_name)
        return self._gt

    def _image_paths(self) -> dict[str, Path]:
        """Every imlist and qimlist name -> its file: ``jpg/<name>.jpg`` (revisitop's flat layout), else
        a file of that name in a sub-folder of ``jpg/`` (the Paris archives as unpacked)."""
        if self._paths is None:
            gt = self.ground_truth()
            folder, gnd = self.root / self.image_dir, self.root / self.gnd_name
            names = list(dict.fromkeys([*gt.imlist, *(q.name for q in gt.queries)]))
            paths = dict(zip(names, paths_inside(self.root, [f"{n}.jpg" for n in names], annotation=gnd, base=folder)))
            absent = [n for n, p in paths.items() if not p.is_file()]
            if absent:  # in a landmark folder: exactly one file of that name, and it too inside the data set
                wanted = set(absent)
                found = ids_of_files(p for p in images_under(folder, recursive=True) if p.stem in wanted)
                inside = paths_inside(self.root, [p.relative_to(folder).as_posix() for p in found.values()],
                                      annotation=gnd, base=folder)
                paths.update(zip(found, inside))
                absent = [n for n in absent if n not in found]
            if absent:
                raise MissingDataError(
                    f"data set {self.name!r}: {len(absent)} of the {len(paths)} images that {self.gnd_name} lists are not "
                    f"under {folder} (e.g. {', '.join(absent[:3])}); unpack the images there.\n"
                    f"Expected layout under {self.root}:\n{self.layout}\nGet it from: {self.url}")
            self._paths = paths
        return self._paths

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        gt, paths = self.ground_truth(), self._image_paths()
        if split == "database":
            return [Item(n, str(paths[n])) for n in gt.imlist]
        return [Item(qid, str(paths[q.name]), box=q.box) for qid, q in zip(self.query_ids(), gt.queries)]

    def query_ids(self) -> list[str]:
        """The query image names; a name repeated in qimlist gets ``#2``, ``#3``… (ids must be unique)."""
        seen: dict[str, int] = {}
        ids = []
        for q in self.ground_truth().queries:
            seen[q.name] = seen.get(q.name, 0) + 1
            ids.append(q.name if seen[q.name] == 1 else f"{q.name}#{seen[q.name]}")
        return ids

    def extras(self, split: str) -> dict:
        self._require_split(split)
        if split != "queries":
            return {}
        gt = {}
        boxes = {}
        for qid, q in zip(self.query_ids(), self.ground_truth().queries):
            gt[qid] = {"positives": [*q.easy, *q.hard], "junk": list(q.junk), "easy": list(q.easy), "hard": list(q.hard)}
            boxes[qid] = list(q.box)
        return {"ground_truth": gt, "query_boxes": boxes}


class ROxford5k(RevisitedRetrieval):
    name = "roxford5k"
    folder = "roxford5k"
    gnd_name = "gnd_roxford5k.pkl"
    description = "Revisited Oxford (Radenović et al. 2018): 4993 images, 70 cropped queries; Easy/Medium/Hard mAP, mP@k"
    url = ("images: https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz, ground truth: "
           "http://cmp.felk.cvut.cz/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl")
    layout = ("  jpg/all_souls_000000.jpg ... (oxbuild_images-v1.tgz, unpacked flat)\n"
              "  gnd_roxford5k.pkl (revisitop's ground truth: imlist, qimlist, gnd)")
    # As revisitop's python/download.py fetches them (commit bc5c086): the face-blurred -v1 images it
    # switched to in June 2022, and its ground truth. No checksum or size is published, no mirror.
    downloads = (
        Download("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz", None, subdir="jpg"),
        Download("http://cmp.felk.cvut.cz/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl", None),
    )


class RParis6k(RevisitedRetrieval):
    name = "rparis6k"
    folder = "rparis6k"
    gnd_name = "gnd_rparis6k.pkl"
    description = "Revisited Paris (Radenović et al. 2018): 6322 images, 70 cropped queries; Easy/Medium/Hard mAP, mP@k"
    url = ("images: https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz and paris_2-v1.tgz, "
           "ground truth: http://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl")
    layout = ("  jpg/paris_defense_000000.jpg ... (paris_1-v1.tgz, paris_2-v1.tgz; flat as revisitop unpacks them, or "
              "in their paris/<landmark>/ folders)\n"
              "  gnd_rparis6k.pkl (revisitop's ground truth: imlist, qimlist, gnd)")
    # As revisitop's python/download.py fetches them (commit bc5c086). No checksum or size is published.
    downloads = (
        Download("https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz", None, subdir="jpg"),
        Download("https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz", None, subdir="jpg"),
        Download("http://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl", None),
    )


class _Registration:
    """One entry point per data set (``roxford5k``, ``rparis6k`` in pyproject.toml), as effnet-lite does."""

    def __init__(self, cls: type[RevisitedRetrieval]):
        self.cls = cls

    @hookimpl
    def register_datasets(self, register):
        register(self.cls.name, self.cls, description=self.cls.description)


roxford5k = _Registration(ROxford5k)
rparis6k = _Registration(RParis6k)
