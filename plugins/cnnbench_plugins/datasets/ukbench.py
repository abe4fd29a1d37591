"""``ukbench``: the University of Kentucky recognition benchmark (Nistér & Stewénius, CVPR 2006),
10200 images of 2550 objects, 4 images each.

Layout: ``full/ukbench00000.jpg … ukbench10199.jpg`` (the distributed ``ukbench.zip``); images
4k … 4k+3 show object k. Every image is a query. One stored split, ``all`` (id = file stem,
``label`` = the object number); ``extras("all")`` = ``{"ground_truth": {id: {"positives": the 4
images of its object, itself included, "junk": []}}, "queries": [all ids], "exclude_self": false}``:
the official score (top-4, "N-S score") counts the query itself among the 4 expected matches.
"""

from __future__ import annotations

import re

import numpy as np

from cnnbench import hookimpl
from cnnbench.dataset import Item, Trial, ids_of_files
from cnnbench.download import Download

from ._common import AnnotationError, RetrievalDataset, images_under, require_images

_NAME = re.compile(r"^ukbench(\d{5})$")


@hookimpl
def register_datasets(register):
    register("ukbench", UKBench, description="UKBench, 10200 images of 2550 objects, every image a query; top-4 score")


class UKBench(RetrievalDataset):
    name = "ukbench"
    folder = "ukbench"
    metric = "top4"
    splits = ("all",)
    description = "UKBench (Nistér & Stewénius 2006): 2550 objects x 4 images; every image queries; top-4 score"
    url = "https://vis.uky.edu/~stewe/ukbench/ (the authors' page; mirrors exist if it is offline)"
    layout = "  full/ukbench00000.jpg ... full/ukbench10199.jpg (groups of 4 consecutive images)"
    # The authors' server is often offline: the Internet Archive's copy (archive.org/details/ukbench,
    # which newer code fetches, e.g. iscc-bench's ukbench reader) first, then the authors' page. No
    # checksum or size is published.
    downloads = (Download("https://archive.org/download/ukbench/ukbench.zip", None,
                          mirrors=("http://vis.uky.edu/~stewe/ukbench/ukbench.zip",)),)

    def required_paths(self):
        return [self.root / "full"]

    def _images(self):
        self.check()
        out = []
        for p in ids_of_files(require_images(images_under(self.root / "full"), self.root / "full", "ukbench")).values():
            m = _NAME.match(p.stem)
            if not m:
                raise AnnotationError(f"ukbench: {p} is not named ukbenchNNNNN.jpg")
            out.append((p, int(m.group(1)) // 4))
        return out

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        return [Item(p.stem, str(p), group) for p, group in self._images()]

    def extras(self, split: str) -> dict:
        self._require_split(split)
        groups: dict[int, list[str]] = {}
        for p, g in self._images():
            groups.setdefault(g, []).append(p.stem)
        gt = {i: {"positives": ids, "junk": []} for ids in groups.values() for i in ids}
        return {"ground_truth": dict(sorted(gt.items())), "queries": sorted(gt), "exclude_self": False}

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        return [Trial("default", {"all": None}, {"all": None})]
