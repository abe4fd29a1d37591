"""``imagefolder``: any folder with one sub-folder per class.

With ``train/`` and ``test/`` sub-folders those are the splits. Otherwise every image goes into one
stored split ``all`` and the protocol draws, per seed, ``train_per_class`` training images per class
(the rest, or at most ``test_per_class``, for testing), like Caltech-101's "30 per class" protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, Item, Trial, class_folders, list_images, seeded_per_class_split


@hookimpl
def register_datasets(register):
    register("imagefolder", ImageFolder, description="a folder of class folders (optional train/ and test/)")


class ImageFolder(Dataset):
    name = "imagefolder"
    task = "multiclass"
    metric = "mean_class_accuracy"
    folder = "imagefolder"
    description = "one folder per class; train/ and test/ if present, else seeded per-class splits"
    layout = "  <Class>/<image>.jpg ...            (split by seed), or\n  train/<Class>/*.jpg and test/<Class>/*.jpg"
    url = "your own images"

    def __init__(self, data_root=None, path=None, train_per_class: int = 30, test_per_class: int = -1,
                 seeds=(0, 1, 2), name: str | None = None):
        super().__init__(data_root, path)
        self.train_per_class, self.test_per_class = int(train_per_class), int(test_per_class)
        self.seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
        if name:
            self.name = name
        self._classes: list[str] | None = None

    @property
    def has_fixed_split(self) -> bool:
        return self.root is not None and (self.root / "train").is_dir() and (self.root / "test").is_dir()

    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train", "test") if self.has_fixed_split else ("all",)

    def options(self) -> dict:
        if self.has_fixed_split:
            return {"path": str(self.root)}
        return {"path": str(self.root), "train_per_class": self.train_per_class,
                "test_per_class": self.test_per_class, "seeds": self.seeds}

    def _class_root(self) -> Path:
        self.check()
        return self.root / "train" if self.has_fixed_split else self.root

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = [p.name for p in class_folders(self._class_root())]
        return self._classes

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        base = self.root / split if self.has_fixed_split else self.root
        index = {c: k for k, c in enumerate(self.classes)}
        items = []
        for folder in class_folders(base):
            if folder.name not in index:
                raise ValueError(f"{folder}: class {folder.name!r} is not among the training classes {self.classes}")
            for path in list_images(folder):
                items.append(Item(f"{folder.name}/{path.name}", str(path), index[folder.name]))
        return items

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        if self.has_fixed_split:
            return super().trials(labels)
        out = []
        for seed in self.seeds:
            train, test = seeded_per_class_split(labels["all"], [self.train_per_class, self.test_per_class], seed)
            out.append(Trial(f"seed{seed}", {"all": train}, {"all": test}))
        return out
