"""``cub200``: Caltech-UCSD Birds-200-2011 (Wah et al. 2011), 200 species, 11788 images.

Layout as distributed (``CUB_200_2011.tgz`` unpacks to ``CUB_200_2011/``): ``images.txt``
(``<image_id> <path>``), ``image_class_labels.txt`` (``<image_id> <class_id>``), ``classes.txt``
(``<class_id> <name>``), ``train_test_split.txt`` (``<image_id> <1 = train, 0 = test>``, 5994 / 5794),
``bounding_boxes.txt`` (``<image_id> <x> <y> <width> <height>``) and ``images/<path>``.

Each item carries its bird box as x1, y1, x2, y2 = x, y, x + width, y + height (``use_boxes``, on
by default as in the paper); the extraction engine enlarges and crops it. Metric: accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, check_box, paths_inside, unique_ids
from cnnbench.download import Download

from ._common import AnnotationError, bad_line, numbered_lines

FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", "bounding_boxes.txt")


@hookimpl
def register_datasets(register):
    register("cub200", CUB200, description="CUB-200-2011 birds, official train/test split, bounding boxes; accuracy")


@dataclass(frozen=True)
class CUB200Options(DatasetOptions):
    use_boxes: bool = O.option(True, "crop each image to its bird box, enlarged (the paper's setting); false: "
                                     "the whole image")


class CUB200(Dataset):
    name = "cub200"
    task = "multiclass"
    metric = "accuracy"
    splits = ("train", "test")
    folder = "cub200"
    box_scale = 1.5  # the paper crops the given box enlarged by 150 %
    description = "Caltech-UCSD Birds-200-2011: 5994 train / 5794 test, 200 species, with boxes; accuracy"
    url = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
    layout = ("  CUB_200_2011/images.txt, image_class_labels.txt, classes.txt,\n"
              "  CUB_200_2011/train_test_split.txt, bounding_boxes.txt\n"
              "  CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg ...")
    # The authors' Caltech DATA record 65de6-vp158 (linked from the url above). SHA-256 and size of
    # CUB_200_2011.tgz as published in TensorFlow Datasets' url_checksums/caltech_birds2011.txt and
    # torchvision's prototype/datasets/_builtin/cub200.py (both fetch it from a Google Drive copy).
    downloads = (Download("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                          "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081", size=1_150_585_339),)

    Options = CUB200Options

    def setup(self) -> None:
        self._table: dict | None = None

    @property
    def base(self) -> Path:
        nested = self.root / "CUB_200_2011"
        return self.root if not nested.exists() and (self.root / "images.txt").exists() else nested

    def required_paths(self):
        return [self.base / "images", *(self.base / f for f in FILES)]

    def _columns(self, name: str, n: int) -> dict[int, list[str]]:
        """``<image_id or class_id> <n values>`` lines as {id: values}."""
        path = self.base / name
        out: dict[int, list[str]] = {}
        first: dict[int, int] = {}
        for k, line in numbered_lines(path, f"cub200 {name}"):
            parts = line.split(maxsplit=n) if n == 1 else line.split()
            if len(parts) != n + 1 or not parts[0].isdigit():
                raise bad_line(path, k, line, f"'<id>' and {n} value(s)")
            key = int(parts[0])
            if key in first:
                raise AnnotationError(f"{path}, line {k}: id {key} is given twice (first on line {first[key]}); each id "
                                      "has one line: get CUB_200_2011.tgz again")
            first[key] = k
            out[key] = parts[1:]
        return out

    def _load(self) -> dict:
        if self._table is None:
            self.check()
            self._table = {
                "images": self._columns("images.txt", 1),
                "labels": self._columns("image_class_labels.txt", 1),
                "classes": self._columns("classes.txt", 1),
                "split": self._columns("train_test_split.txt", 1),
                "boxes": self._columns("bounding_boxes.txt", 4),
            }
            t = self._table
            for key, name in (("labels", "image_class_labels.txt"), ("split", "train_test_split.txt"),
                              ("boxes", "bounding_boxes.txt")):
                missing = sorted(set(t["images"]) - set(t[key]))
                if missing:
                    raise AnnotationError(f"cub200: image ids {missing[:5]} of images.txt have no line in "
                                          f"{self.base / name}")
                unknown = sorted(set(t[key]) - set(t["images"]))
                if unknown:  # a truncated images.txt would silently drop those images
                    raise AnnotationError(f"cub200: {self.base / name} has image ids {unknown[:5]} that "
                                          f"{self.base / 'images.txt'} does not list; get CUB_200_2011.tgz again")
            bad = sorted(i for i, v in t["split"].items() if v[0] not in ("0", "1"))
            if bad:
                raise AnnotationError(f"cub200: {self.base / 'train_test_split.txt'}: image {bad[0]} has "
                                      f"{t['split'][bad[0]][0]!r}; expected 1 (train) or 0 (test)")
            rels = [t["images"][i][0] for i in sorted(t["images"])]
            t["paths"] = dict(zip(sorted(t["images"]), paths_inside(
                self.root, rels, annotation=self.base / "images.txt", base=self.base / "images")))
            unique_ids(rels, annotation=self.base / "images.txt", what="image path")
        return self._table

    @property
    def classes(self) -> list[str]:
        c = self._load()["classes"]
        return [c[k][0] for k in sorted(c)]

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        t = self._load()
        class_ids = sorted(t["classes"])
        index = {cid: k for k, cid in enumerate(class_ids)}
        want = "1" if split == "train" else "0"
        items = []
        for image_id in sorted(t["images"]):
            if t["split"][image_id][0] != want:
                continue
            rel = t["images"][image_id][0]
            box = None
            if self.use_boxes:
                box = check_box(t["boxes"][image_id], annotation=self.base / "bounding_boxes.txt",
                                entry=f"image {image_id}", xywh=True, text=True)
            label = t["labels"][image_id][0]
            cid = int(label) if label.isdigit() else None
            if cid not in index:
                raise AnnotationError(f"cub200: {self.base / 'image_class_labels.txt'}: image {image_id} has class "
                                      f"{label!r}, not a class id of classes.txt")
            items.append(Item(rel, str(t["paths"][image_id]), index[cid], box))
        return items
