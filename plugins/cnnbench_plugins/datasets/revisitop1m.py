"""``revisitop1m``: the one million distractor images of the revisited Oxford and Paris benchmark
(R1M; Radenović, Iscen, Tolias, Avrithis, Chum, CVPR 2018).

Not a benchmark of its own: its features are extracted once (``cnnbench extract -b BACKBONE -d
revisitop1m``, into ``features/<backbone>/revisitop1m/database.h5``) and appended to the database
of a retrieval data set at evaluation with that data set's ``distractors`` option
(``cnnbench evaluate -b BACKBONE -d roxford5k -E distractors=revisitop1m``; see
:mod:`cnnbench.retrieval`'s :class:`~cnnbench.retrieval.Distractors`). Evaluating it alone is
refused: it has no queries and no ground truth.

Layout, as revisitop's ``download.py`` (``download_distractors``) makes it:
``<data root>/revisitop1m/jpg/...`` (the 100 archives ``jpg/revisitop1m.{1..100}.tar.gz`` unpacked)
and ``<data root>/revisitop1m/revisitop1m.txt``, the image list: one path relative to ``jpg/`` a
line (1,001,001 lines). As in revisitop's ``configdataset``, a name without an extension means
``<name>.jpg``. One stored split, ``database``, in the list's order; an image's id is its line of
the list (names must be unique: a repeated one is refused, since distractor ids must not collide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, DatasetOptions, Item, Trial, paths_inside
from cnnbench.download import Download
from cnnbench.errors import MissingDataError, UserError

from ._common import AnnotationError, numbered_lines

URL_BASE = "http://ptak.felk.cvut.cz/revisitop/revisitop1m/"
N_ARCHIVES = 100


@hookimpl
def register_datasets(register):
    register("revisitop1m", Revisitop1M,
             description="R1M: 1M distractor images for roxford5k/rparis6k (-E distractors=revisitop1m); not evaluated alone")


class Revisitop1M(Dataset):
    Options = DatasetOptions  # where it lives, nothing else: no queries, no protocol (and no distractors of its own)
    name = "revisitop1m"
    folder = "revisitop1m"
    task = "retrieval"
    metric = "mAP_medium"
    splits = ("database",)
    distractor_set = True  # appended to other data sets; it takes no distractors itself
    list_name = "revisitop1m.txt"
    description = ("revisitop 1M distractors (Radenović et al. 2018): 1,001,001 images appended to a retrieval "
                   "database with -E distractors=revisitop1m")
    url = (f"{URL_BASE}revisitop1m.txt (image list) and {URL_BASE}jpg/revisitop1m.1.tar.gz ... "
           f"revisitop1m.{N_ARCHIVES}.tar.gz (images; as revisitop's download.py fetches them)")
    layout = ("  revisitop1m.txt (one image path relative to jpg/ a line)\n"
              "  jpg/... (the 100 archives jpg/revisitop1m.{1..100}.tar.gz unpacked here)")
    # As revisitop's python/download.py (download_distractors) fetches them; no checksums are published for
    # these files: None (the download is still made safely)
    downloads = (Download(f"{URL_BASE}revisitop1m.txt", None),
                 *(Download(f"{URL_BASE}jpg/revisitop1m.{k}.tar.gz", None, subdir="jpg") for k in range(1, N_ARCHIVES + 1)))

    def setup(self) -> None:
        super().setup()
        self._names: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        return []

    def required_paths(self):
        return [self.root / "jpg", self.root / self.list_name]

    def names(self) -> list[str]:
        """The image list, in its order; a repeated name is an :class:`AnnotationError` naming the file."""
        if self._names is None:
            self.check()
            path = self.root / self.list_name
            lines = numbered_lines(path, "revisitop1m image list")
            if not lines:
                raise AnnotationError(f"{path} lists no images; download {URL_BASE}{self.list_name} again")
            seen: dict[str, int] = {}
            for lineno, name in lines:
                if name in seen:
                    raise AnnotationError(f"{path}, line {lineno}: {name!r} is listed twice (first on line "
                                          f"{seen[name]}); distractor ids must be unique: download the list again")
                seen[name] = lineno
            self._names = list(seen)
        return self._names

    def image_paths(self, names: list[str]) -> list[Path]:
        """``jpg/<name>``, or ``jpg/<name>.jpg`` when the name has no extension (revisitop's rule); each
        inside the data set's folder (:func:`cnnbench.dataset.paths_inside`)."""
        return paths_inside(self.root, [n if Path(n).suffix else f"{n}.jpg" for n in names],
                            annotation=self.root / self.list_name, base=self.root / "jpg")

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        names = self.names()
        paths = self.image_paths(names)
        absent = [n for n, p in zip(names, paths) if not p.is_file()]
        if absent:
            raise MissingDataError(
                f"data set {self.name!r}: {len(absent)} of the {len(names)} images that {self.list_name} lists are not "
                f"under {self.root / 'jpg'} (e.g. {', '.join(absent[:3])}); unpack every archive there.\n"
                f"Expected layout under {self.root}:\n{self.layout}\nGet it from: {self.url}")
        return [Item(n, str(p)) for n, p in zip(names, paths)]

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        raise UserError("revisitop1m is a distractor set, not a benchmark (no queries, no ground truth): extract it "
                        "once, then evaluate a retrieval data set with it, e.g. cnnbench evaluate -d roxford5k "
                        "-E distractors=revisitop1m")
