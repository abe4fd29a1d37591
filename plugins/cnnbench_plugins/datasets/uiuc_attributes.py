"""``uiuc-attributes``: the aPascal / aYahoo attribute data (Farhadi et al., CVPR 2009), 64 binary
attributes per object, multi-label.

Layout as distributed: ``attribute_data.tar.gz`` gives ``attribute_data/apascal_train.txt``,
``apascal_test.txt``, ``ayahoo_test.txt`` and ``attribute_names.txt`` (64 names, one a line); the
aPascal images are VOC 2008 trainval's ``VOCdevkit/VOC2008/JPEGImages/``, the aYahoo ones come in
``ayahoo_test_images.tar.gz`` (``ayahoo_test_images/``).

Each line of a data file is one object: ``<image> <class> <x1> <y1> <x2> <y2> <64 values 0/1>``
(the format the authors' ``read_att_data.m`` reads: two strings, then 4 + 64 numbers). Each object is
one item, id ``<image>#<k>`` (its k-th object in that file), with its box; the label is the row of 64
attributes. Splits: ``train`` = aPascal train (6340 objects), ``test`` = aPascal test (6355), or
aYahoo test (2644) with ``test_set: ayahoo``. Metric: mean AUC over the attributes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, check_box, paths_inside
from cnnbench.download import Download

from ._common import AnnotationError, bad_line, numbered_lines, read_lines

N_ATTRIBUTES = 64
FILES = {"train": "apascal_train.txt", "apascal": "apascal_test.txt", "ayahoo": "ayahoo_test.txt"}


@hookimpl
def register_datasets(register):
    register("uiuc-attributes", UIUCAttributes, description="aPascal/aYahoo 64 attributes per object box; mean AUC")


@dataclass(frozen=True)
class UIUCAttributesOptions(DatasetOptions):
    test_set: Literal["apascal", "ayahoo"] = O.option("apascal", "the test objects: aPascal test (6355), or aYahoo "
                                                                 "test (2644)")
    use_boxes: bool = O.option(True, "crop each object to its box; false: the whole image")


class UIUCAttributes(Dataset):
    name = "uiuc-attributes"
    task = "multilabel"
    metric = "mean_auc"
    splits = ("train", "test")
    folder = "uiuc-attributes"
    description = "aPascal/aYahoo (Farhadi et al. 2009): 64 attributes per object box; train aPascal train; mean AUC"
    url = "https://vision.cs.uiuc.edu/attributes/"
    layout = ("  attribute_data/apascal_train.txt, apascal_test.txt, ayahoo_test.txt, attribute_names.txt\n"
              "  VOCdevkit/VOC2008/JPEGImages/2008_000008.jpg ...   (VOC 2008 trainval, aPascal images)\n"
              "  ayahoo_test_images/<image>.jpg ...                 (aYahoo images, only for test_set=ayahoo)")
    # The authors' page (other projects fetch the two archives over http://, kept as the fallback
    # should the old server's TLS fail); no checksum is published for them. VOC 2008 trainval from the
    # official host, SHA-256 as published in torchvision's prototype/datasets/_builtin/voc.py
    # (_TRAIN_VAL_ARCHIVES["2008"]); no size is published.
    downloads = (
        Download("https://vision.cs.uiuc.edu/attributes/attribute_data.tar.gz", None,
                 mirrors=("http://vision.cs.uiuc.edu/attributes/attribute_data.tar.gz",)),
        Download("https://vision.cs.uiuc.edu/attributes/ayahoo_test_images.tar.gz", None,
                 mirrors=("http://vision.cs.uiuc.edu/attributes/ayahoo_test_images.tar.gz",)),
        Download("http://host.robots.ox.ac.uk/pascal/VOC/voc2008/VOCtrainval_14-Jul-2008.tar",
                 "7f0ca53c1b5a838fbe946965fc106c6e86832183240af5c88e3f6c306318d42e"),
    )

    Options = UIUCAttributesOptions

    @property
    def data_dir(self) -> Path:
        return self.root / "attribute_data"

    def image_dir(self, split: str) -> Path:
        if split == "test" and self.test_set == "ayahoo":
            return self.root / "ayahoo_test_images"
        return self.root / "VOCdevkit" / "VOC2008" / "JPEGImages"

    def _file(self, split: str) -> Path:
        return self.data_dir / FILES["train" if split == "train" else self.test_set]

    def required_paths(self):
        return [self.data_dir / "attribute_names.txt", self._file("train"), self._file("test"),
                self.image_dir("train"), self.image_dir("test")]

    @property
    def classes(self) -> list[str]:
        path = self.data_dir / "attribute_names.txt"
        names = read_lines(path, "uiuc-attributes attribute names")
        if len(names) != N_ATTRIBUTES:
            raise AnnotationError(f"{path}: expected {N_ATTRIBUTES} attribute names, found {len(names)}")
        return names

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        path, folder = self._file(split), self.image_dir(split)
        seen: Counter = Counter()
        rows = []
        for n, line in numbered_lines(path, "uiuc-attributes data file"):
            parts = line.split()
            if len(parts) != 2 + 4 + N_ATTRIBUTES:
                raise bad_line(path, n, line, f"'<image> <class> x1 y1 x2 y2' and {N_ATTRIBUTES} attribute values")
            try:
                raw = [float(v) for v in parts[6:]]
            except ValueError:
                raw = [math.nan]
            if any(v not in (0, 1) for v in raw):
                raise bad_line(path, n, line, "attribute values 0 or 1")
            box = check_box(parts[2:6], annotation=path, entry=f"line {n}", text=True) if self.use_boxes else None
            rows.append((parts[0], box, tuple(int(v) for v in raw)))
        images = paths_inside(self.root, [image for image, _, _ in rows], annotation=path, base=folder)
        items = []
        for (image, box, values), file in zip(rows, images):
            seen[image] += 1
            items.append(Item(f"{image}#{seen[image]}", str(file), values, box))
        return items
