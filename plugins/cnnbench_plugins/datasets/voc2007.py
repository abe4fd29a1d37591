"""``voc2007``: PASCAL VOC 2007 classification (Everingham et al.), 20 classes, multi-label.

Layout as distributed (``VOCtrainval_06-Nov-2007.tar`` and ``VOCtest_06-Nov-2007.tar`` both unpack
into ``VOCdevkit/VOC2007/``): ``ImageSets/Main/{trainval,test}.txt`` give the official splits
(5011 / 4952 images), ``Annotations/<id>.xml`` the objects, ``JPEGImages/<id>.jpg`` the images.

Labels: one row of 20 per image, built from the XML like the devkit's classification ground truth:
1 if the class has a non-difficult object in the image, -1 if its only objects are "difficult"
(ignored by the VOC metric), 0 if absent. Metric: mAP (VOC07 11-point AP), trained on trainval,
tested on test; the whole image is used (no boxes).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, DatasetOptions, Item, Trial, paths_inside, unique_ids
from cnnbench.download import Download

from ._common import AnnotationError, read_lines

CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

# The official host (torchvision's datasets/voc.py and prototype/datasets/_builtin/voc.py fetch from it),
# then the pjreddie.com mirror that TensorFlow Datasets fetches (url_checksums/voc.txt); SHA-256 and
# size as published there and in torchvision's prototype voc.py (same bytes on both hosts).
_VOC_HOST = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
_VOC_MIRROR = "http://pjreddie.com/media/files/"


@hookimpl
def register_datasets(register):
    register("voc2007", VOC2007, description="PASCAL VOC 2007, 20 classes multi-label, trainval/test; mAP")


class VOC2007(Dataset):
    name = "voc2007"
    task = "multilabel"
    metric = "mAP"
    splits = ("trainval", "test")
    folder = "voc2007"
    description = "PASCAL VOC 2007 classification: 5011 trainval / 4952 test, 20 classes, difficult ignored; mAP"
    url = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
    layout = ("  VOCdevkit/VOC2007/ImageSets/Main/trainval.txt, test.txt\n"
              "  VOCdevkit/VOC2007/Annotations/000001.xml ...\n"
              "  VOCdevkit/VOC2007/JPEGImages/000001.jpg ...")
    downloads = (
        Download(_VOC_HOST + "VOCtrainval_06-Nov-2007.tar",
                 "7d8cd951101b0957ddfd7a530bdc8a94f06121cfc1e511bb5937e973020c7508",
                 mirrors=(_VOC_MIRROR + "VOCtrainval_06-Nov-2007.tar",), size=460_032_000),
        Download(_VOC_HOST + "VOCtest_06-Nov-2007.tar",
                 "6836888e2e01dca84577a849d339fa4f73e1e4f135d312430c4856b5609b4892",
                 mirrors=(_VOC_MIRROR + "VOCtest_06-Nov-2007.tar",), size=451_020_800),
    )

    Options = DatasetOptions  # the official trainval/test split: nothing to choose but where it lives

    @property
    def voc(self) -> Path:
        """``VOCdevkit/VOC2007`` under the root; the root itself if it is already that folder."""
        nested = self.root / "VOCdevkit" / "VOC2007"
        return self.root if not nested.exists() and (self.root / "Annotations").exists() else nested

    @property
    def classes(self) -> list[str]:
        return list(CLASSES)

    def required_paths(self):
        v = self.voc
        return [v / "ImageSets" / "Main", v / "Annotations", v / "JPEGImages"]

    def label(self, image_id: str, path: Path | None = None) -> tuple[int, ...]:
        """The 20-class label row of one image, from ``Annotations/<id>.xml`` (or ``path``)."""
        path = self.voc / "Annotations" / f"{image_id}.xml" if path is None else path
        if not path.is_file():
            raise AnnotationError(f"voc2007: {path} is missing (image {image_id} is listed in ImageSets/Main)")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise AnnotationError(f"voc2007: {path} is not valid XML: {exc}") from exc
        row = [0] * len(CLASSES)
        index = {c: k for k, c in enumerate(CLASSES)}
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise AnnotationError(f"voc2007: {path}: unknown class {name!r}")
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            k = index[name]
            if not difficult:
                row[k] = 1
            elif row[k] == 0:
                row[k] = -1
        return tuple(row)

    def ids(self, split: str) -> list[str]:
        """The image ids of ``ImageSets/Main/<split>.txt``, sorted: unique, and none in the other split."""
        lists = self.voc / "ImageSets" / "Main"
        ids = unique_ids(read_lines(lists / f"{split}.txt", f"voc2007 {split} list"), annotation=lists / f"{split}.txt",
                         what="image id", entry="line")
        other = next(s for s in self.splits if s != split)
        if (lists / f"{other}.txt").is_file():
            shared = sorted(set(ids) & set(read_lines(lists / f"{other}.txt", f"voc2007 {other} list")))
            if shared:
                raise AnnotationError(f"voc2007: {lists / 'test.txt'} shares {len(shared)} image(s) with "
                                      f"{lists / 'trainval.txt'} (e.g. {shared[0]!r}); a test image must not be "
                                      "trained on: get ImageSets/Main again")
        return sorted(ids)

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        ids = self.ids(split)
        listed = self.voc / "ImageSets" / "Main" / f"{split}.txt"
        xmls = paths_inside(self.root, [f"{i}.xml" for i in ids], annotation=listed, base=self.voc / "Annotations")
        jpgs = paths_inside(self.root, [f"{i}.jpg" for i in ids], annotation=listed, base=self.voc / "JPEGImages")
        return [Item(i, str(jpg), self.label(i, xml)) for i, xml, jpg in zip(ids, xmls, jpgs)]

    def trials(self, labels):
        return [Trial("default", {"trainval": None}, {"test": None})]
