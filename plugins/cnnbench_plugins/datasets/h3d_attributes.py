"""``h3d-attributes``: the "poselets attributes" data set of Bourdev, Maji & Malik (ICCV 2011),
8035 people with 9 binary attributes, multi-label (the paper's "H3D" attribute benchmark).

Format (documented here; established from public code that reads the distributed ``labels.txt``,
not checked against the archive itself): ``attributes_dataset.tgz`` holds ``train/`` (4013 people)
and ``test/`` (4022), each with its images and a ``labels.txt`` of one person per line::

    <image> <x> <y> <width> <height> <is_male> <has_long_hair> <has_glasses> <has_hat>
            <has_t-shirt> <has_long_sleeves> <has_shorts> <has_jeans> <has_long_pants>

Attribute values are 1 (yes), -1 (no), 0 (unspecified). They are stored as 1, 0 and -1 (ignored by
the metric), the project's multi-label convention. The person box (x, y, w, h) becomes
x1, y1, x2, y2 = x, y, x + w, y + h; four ``NaN`` mean "no box" (the whole image), and a box that
is partly NaN, empty or inverted is refused (it may start above or left of the image: the engine
clips it). Lines starting with ``#`` are skipped. Item id: ``<split>/<image>`` (``#k`` appended for a repeated image). The box
is enlarged by the extraction engine (the paper enlarges it by 150 %). Metric: mAP.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, check_box, paths_inside
from cnnbench.download import Download

from ._common import bad_line, numbered_lines

ATTRIBUTES = ["is_male", "has_long_hair", "has_glasses", "has_hat", "has_t-shirt", "has_long_sleeves",
              "has_shorts", "has_jeans", "has_long_pants"]
_VALUE = {1: 1, -1: 0, 0: -1}  # official -> stored


def _is_nan(token: str) -> bool:
    try:
        return math.isnan(float(token))
    except ValueError:
        return False


@hookimpl
def register_datasets(register):
    register("h3d-attributes", H3DAttributes, description="Bourdev et al. 2011 people, 9 attributes, person boxes; mAP")


@dataclass(frozen=True)
class H3DAttributesOptions(DatasetOptions):
    use_boxes: bool = O.option(True, "crop each person to its box, enlarged (the paper's setting); false: the "
                                     "whole image")


class H3DAttributes(Dataset):
    name = "h3d-attributes"
    task = "multilabel"
    metric = "mAP"
    splits = ("train", "test")
    folder = "h3d-attributes"
    box_scale = 1.5  # the paper crops the given box enlarged by 150 %
    description = "Poselets attributes (Bourdev et al. 2011): 4013 train / 4022 test people, 9 attributes; mAP"
    url = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/shape/poselets/ (the poselets project; the "
           "archive is attributes_dataset.tgz)")
    layout = ("  train/labels.txt, train/<image>.jpg ...\n"
              "  test/labels.txt, test/<image>.jpg ...\n"
              "  labels.txt line: <image> x y w h <9 values 1/-1/0>")
    # Berkeley's poselets project folder, where other projects fetch the archive (e.g. the READMEs of
    # ankurgupta7/fast-rcnn-attributes and of arXiv 2202.04136's code), then the authors' old page.
    # No checksum or size is published.
    downloads = (Download("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/shape/poselets/"
                          "attributes_dataset.tgz", None,
                          mirrors=("http://www.cs.berkeley.edu/~lbourdev/poselets/attributes_dataset.tgz",)),)

    Options = H3DAttributesOptions

    @property
    def base(self):
        nested = self.root / "attributes_dataset"
        return nested if not (self.root / "train").exists() and nested.exists() else self.root

    def required_paths(self):
        return [self.base / s / "labels.txt" for s in self.splits]

    @property
    def classes(self) -> list[str]:
        return list(ATTRIBUTES)

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        path = self.base / split / "labels.txt"
        seen: Counter = Counter()
        rows = []
        for n, line in numbered_lines(path, "h3d-attributes labels"):
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 1 + 4 + len(ATTRIBUTES):
                raise bad_line(path, n, line, f"'<image> x y w h' and {len(ATTRIBUTES)} values")
            try:
                raw = [float(v) for v in parts[5:]]
            except ValueError:
                raw = [math.nan]
            if any(v not in _VALUE for v in raw):
                raise bad_line(path, n, line, "attribute values 1, -1 or 0")
            box = None
            if self.use_boxes and not all(_is_nan(v) for v in parts[1:5]):  # four NaN: no box
                # person bounds may reach past the image's top or left edge; the engine clips them
                box = check_box(parts[1:5], annotation=path, entry=f"line {n}", xywh=True, text=True, negative=True)
            rows.append((parts[0], box, tuple(_VALUE[int(v)] for v in raw)))
        images = paths_inside(self.root, [image for image, _, _ in rows], annotation=path, base=self.base / split)
        items = []
        for (image, box, label), file in zip(rows, images):
            seen[image] += 1
            item_id = f"{split}/{image}" + (f"#{seen[image]}" if seen[image] > 1 else "")
            items.append(Item(item_id, str(file), label, box))
        return items
