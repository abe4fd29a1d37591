"""``flowers17``: the Oxford 17 Category Flower Dataset (Nilsback & Zisserman, 2006).

Layout: ``jpg/image_0001.jpg … image_1360.jpg``; labels come from file order (80 images per class,
class k = images 80k+1 … 80k+80). The official ``datasplits.mat`` is replaced by seeded random
splits of the official sizes, 40 train / 20 val / 20 test per class, averaged over seeds. cnnbench
trains on train+val (C is chosen by cross-validation inside it) and tests on test; ``train_on:
train`` uses the 40 training images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, Trial, seeded_per_class_split

from . import _common

CLASSES = [
    "Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip", "Fritillary",
    "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy",
]
PER_CLASS = 80


@hookimpl
def register_datasets(register):
    register("flowers17", Flowers17, description="Oxford Flowers-17, 17 classes x 80; seeded 40/20/20 splits")


@dataclass(frozen=True)
class Flowers17Options(DatasetOptions):
    """Which seeded 40/20/20 splits, and what the classifier is fitted on."""

    seeds: tuple[int, ...] = O.option((0, 1, 2), "one seeded split per seed (distinct integers >= 0)", check=_common.seeds)
    train_on: Literal["train", "trainval"] = O.option("trainval", "fit on the 40 training images per class, or on "
                                                                  "train + val (60)")


class Flowers17(Dataset):
    name = "flowers17"
    task = "multiclass"
    metric = "mean_class_accuracy"
    splits = ("all",)
    folder = "flowers17"
    description = "Oxford 17 flowers, 1360 images; 3 seeded 40/20/20 splits per class, mean class accuracy"
    url = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
    layout = "  jpg/image_0001.jpg ... jpg/image_1360.jpg"

    Options = Flowers17Options

    def setup(self) -> None:
        self.seeds = list(self.opts.seeds)  # callers read a list, as before the options were declared

    @property
    def classes(self) -> list[str]:
        return list(CLASSES)

    def required_paths(self):
        return [self.root / "jpg"]

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        n = PER_CLASS * len(CLASSES)
        return [
            Item(f"image_{i:04d}", str(self.root / "jpg" / f"image_{i:04d}.jpg"), (i - 1) // PER_CLASS)
            for i in range(1, n + 1)
        ]

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        n = PER_CLASS * len(CLASSES)
        out = []
        for seed in self.seeds:
            train, val, test = seeded_per_class_split(labels["all"], [40, 20, 20], seed, class_names=CLASSES,
                                                      hint=f"flowers17 needs all {PER_CLASS} images of every class "
                                                           f"(jpg/image_0001.jpg … image_{n:04d}.jpg); an image skipped as "
                                                           "unreadable at extraction counts as missing")
            fit = np.union1d(train, val) if self.train_on == "trainval" else train
            out.append(Trial(f"seed{seed}", {"all": fit}, {"all": test}))
        return out
