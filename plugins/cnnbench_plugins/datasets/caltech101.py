"""``caltech101``: Caltech-101 (Fei-Fei, Fergus & Perona, 2004), 101 object classes + background.

Layout as distributed: ``101_ObjectCategories/<class>/image_NNNN.jpg`` (102 folders with
``BACKGROUND_Google``). Protocol (DeCAF and the usual Caltech-101 setting): per seed, 30 random
training images per class and up to 50 of the remaining ones for testing; mean class accuracy,
averaged over seeds. ``background`` (default off) keeps ``BACKGROUND_Google`` as a 102nd class.
Everything is stored once in split ``all``; seeds only re-partition stored rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, Trial, class_folders, list_images, seeded_per_class_split
from cnnbench.download import Download
from cnnbench.errors import CnnbenchError, UserError

from . import _common
from ._common import require_images


BACKGROUND = "BACKGROUND_Google"


@hookimpl
def register_datasets(register):
    register("caltech101", Caltech101, description="Caltech-101, 30 train / up to 50 test per class, seeded; mean class accuracy")


@dataclass(frozen=True)
class Caltech101Options(DatasetOptions):
    """The seeded per-class split; the defaults are DeCAF's setting."""

    train_per_class: int = O.option(30, "training images drawn per class and seed", check=_common.train_per_class)
    test_per_class: int = O.option(50, "test images per class, at most, from the rest (-1: all the rest)",
                                   check=_common.test_per_class)
    seeds: tuple[int, ...] = O.option((0, 1, 2), "one trial per seed (distinct integers >= 0)", check=_common.seeds)
    background: bool = O.option(False, "keep BACKGROUND_Google as a 102nd class")


class Caltech101(Dataset):
    name = "caltech101"
    task = "multiclass"
    metric = "mean_class_accuracy"
    splits = ("all",)
    folder = "caltech101"
    description = "Caltech-101: seeded 30 train / up to 50 test per class, mean over seeds; background optional"
    url = "https://data.caltech.edu/records/mzrjq-6wc02"
    layout = "  101_ObjectCategories/<class>/image_0001.jpg ...  (101 classes + BACKGROUND_Google)"
    # the zip holds caltech-101/101_ObjectCategories.tar.gz, unpacked in turn (images_root finds it there).
    # The authors' Caltech DATA record; only an MD5 of the zip is published (3138e192…, in R's torchvision
    # package, caltech101_dataset), no SHA-256, so it is not pinned.
    downloads = (Download("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", None,
                          inner=("caltech-101/101_ObjectCategories.tar.gz",)),)

    Options = Caltech101Options

    def setup(self) -> None:
        self.seeds = list(self.opts.seeds)  # callers read a list, as before the options were declared

    @property
    def images_root(self):
        """``101_ObjectCategories`` under the root (or under ``caltech-101/``, as the zip unpacks)."""
        direct = self.root / "101_ObjectCategories"
        nested = self.root / "caltech-101" / "101_ObjectCategories"
        return nested if not direct.exists() and nested.exists() else direct

    def required_paths(self):
        return [self.images_root]

    @property
    def classes(self) -> list[str]:
        self.check()
        names = [p.name for p in class_folders(self.images_root) if self.background or p.name != BACKGROUND]
        if not names:
            raise UserError(f"caltech101: no images found under {self.images_root}: it has no class folders; "
                            f"expected\n{self.layout}")
        return names

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        items = []
        for k, name in enumerate(self.classes):
            items.extend(Item(f"{name}/{p.name}", str(p), k) for p in list_images(self.images_root / name))
        require_images(items, self.images_root, "caltech101")
        counts = np.bincount([i.label for i in items], minlength=len(self.classes))
        k = int(counts.argmin())
        if counts[k] <= self.train_per_class:
            raise UserError(f"caltech101: class {self.classes[k]!r} has {counts[k]} image(s) in "
                            f"{self.images_root / self.classes[k]}; train_per_class: {self.train_per_class} needs at "
                            f"least {self.train_per_class + 1} (one left for testing); lower train_per_class")
        return items

    def _class_names(self) -> list[str] | None:
        try:
            return self.classes
        except (CnnbenchError, OSError):
            return None

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        names = self._class_names()
        hint = (f"caltech101: lower train_per_class (now {self.train_per_class}); every class keeps at least one "
                "test image")
        out = []
        for seed in self.seeds:
            train, test = seeded_per_class_split(np.asarray(labels["all"]), [self.train_per_class, self.test_per_class],
                                                 seed, last_at_most=True, class_names=names, hint=hint)
            out.append(Trial(f"seed{seed}", {"all": train}, {"all": test}))
        return out
