"""``digits``: scikit-learn's bundled 1797 real handwritten digits (8x8 grey), so the whole pipeline
runs offline anywhere. Split: stratified, seeded, half train and half test."""

from __future__ import annotations

import math

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, Item
from cnnbench.errors import UserError

from ._common import refuse_unknown


@hookimpl
def register_datasets(register):
    register("digits", Digits, description="scikit-learn's 1797 handwritten digits, 10 classes (bundled, offline)")


N_IMAGES, N_CLASSES = 1797, 10


def _test_fraction(value) -> float:
    """Strictly between 0 and 1, and leaving each split at least one image per class (the split is stratified)."""
    lo, hi = N_CLASSES / N_IMAGES, 1 - N_CLASSES / N_IMAGES
    allowed = f"a number between 0 and 1 (exclusive) leaving both splits one image per class, i.e. {lo:.4f} to {hi:.4f}"
    frac = O.as_float("digits: test_fraction", value, min=0, min_exclusive=True, fix="the share of images used for "
                      "testing, e.g. 0.5")
    n_test = math.ceil(frac * N_IMAGES)  # scikit-learn's train_test_split rounds the test share up
    if frac >= 1 or n_test < N_CLASSES or N_IMAGES - n_test < N_CLASSES:
        raise UserError(f"digits: test_fraction: {value!r} is not allowed; expected {allowed}; e.g. 0.5")
    return frac


class Digits(Dataset):
    name = "digits"
    task = "multiclass"
    metric = "accuracy"
    splits = ("train", "test")
    description = "UCI/scikit-learn handwritten digits, 8x8 grey, 10 classes; seeded stratified 50/50 split"
    url = "bundled with scikit-learn (sklearn.datasets.load_digits)"

    def __init__(self, data_root=None, path=None, seed: int = 0, test_fraction: float = 0.5, **unknown):
        refuse_unknown("digits", unknown, Digits.__init__)
        super().__init__(data_root, path)
        self.seed = O.as_int("digits: seed", seed, min=0, max=2**32 - 1)
        self.test_fraction = _test_fraction(test_fraction)
        self._cache: dict[str, list[Item]] | None = None

    @property
    def classes(self) -> list[str]:
        return [str(d) for d in range(10)]

    def options(self) -> dict:
        return {"seed": self.seed, "test_fraction": self.test_fraction}

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        if self._cache is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            data = load_digits()
            images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
            index = np.arange(len(images))
            train, test = train_test_split(
                index, test_size=self.test_fraction, random_state=self.seed, stratify=data.target
            )
            self._cache = {
                name: [Item(f"digit-{i:04d}", images[i], int(data.target[i])) for i in sorted(idx)]
                for name, idx in (("train", train), ("test", test))
            }
        return self._cache[split]
