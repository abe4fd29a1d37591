"""``holidays``: INRIA Holidays (Jégou et al., ECCV 2008), 1491 images in 500 groups.

Layout: ``jpg/NNNNMM.jpg`` (from ``jpg1.tar.gz`` and ``jpg2.tar.gz``). The group is the file name
without its last two digits; ``NNNN00.jpg`` is the query of group ``NNNN`` and the group's other
images are its positives.

Design: queries are database images, so there is one stored split, ``all`` (id = file stem, and
``label`` = 1 for the 500 query images, 0 otherwise, so that the protocol can select query rows from
the stored labels alone). ``extras("all")`` holds ``{"ground_truth": {query_id: {"positives": [...],
"junk": []}}, "queries": [ids], "exclude_self": true}``: each query searches the whole split with
itself removed from its own ranking, as the official evaluation does. The trial: train = all rows
(the database), test = the query rows.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench.dataset import Item, Trial, ids_of_files
from cnnbench.download import Download

from ._common import AnnotationError, RetrievalDataset, images_under, require_images


@hookimpl
def register_datasets(register):
    register("holidays", Holidays, description="INRIA Holidays, 1491 images, 500 queries (query excluded); mAP")


class Holidays(RetrievalDataset):
    name = "holidays"
    folder = "holidays"
    splits = ("all",)
    description = "INRIA Holidays (Jégou et al. 2008): 1491 images, 500 groups, NNNN00 is the query; mAP"
    url = "https://lear.inrialpes.fr/people/jegou/data.php"
    layout = "  jpg/100000.jpg, jpg/100001.jpg, ... (query 100000 = first image of group 1000)"
    # INRIA's FTP, as the authors' data page gives it (reported unstable, and FTP cannot resume here),
    # then INRIA's HTTP copy that other scripts fetch (pascal.inrialpes.fr/data/holidays/). No checksum
    # or size is published.
    downloads = (
        Download("ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg1.tar.gz", None,
                 mirrors=("http://pascal.inrialpes.fr/data/holidays/jpg1.tar.gz",)),
        Download("ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg2.tar.gz", None,
                 mirrors=("http://pascal.inrialpes.fr/data/holidays/jpg2.tar.gz",)),
    )

    def required_paths(self):
        return [self.root / "jpg"]

    def _images(self) -> dict[str, Path]:
        """``{id: file}``: one file per id (``100000.jpg`` beside ``100000.png`` is refused)."""
        self.check()
        return ids_of_files(require_images(images_under(self.root / "jpg"), self.root / "jpg", "holidays"))

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for p in self._images().values():
            if not (p.stem.isdigit() and len(p.stem) >= 3):
                raise AnnotationError(f"holidays: {p} is not named NNNNMM.jpg (group number + index)")
            groups[p.stem[:-2]].append(p.stem)
        for g, ids in groups.items():
            if f"{g}00" not in ids:
                raise AnnotationError(f"holidays: group {g} has no query image {g}00.jpg in {self.root / 'jpg'}")
        return dict(sorted(groups.items()))

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self._groups()
        return [Item(i, str(p), 1 if i.endswith("00") else 0) for i, p in self._images().items()]

    def extras(self, split: str) -> dict:
        self._require_split(split)
        gt = {f"{g}00": {"positives": [i for i in ids if i != f"{g}00"], "junk": []}
              for g, ids in self._groups().items()}
        return {"ground_truth": gt, "queries": sorted(gt), "exclude_self": True}

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        return [Trial("default", {"all": None}, {"all": np.flatnonzero(np.asarray(labels["all"]) == 1)})]
