"""``digits``: scikit-learn's bundled 1797 real handwritten digits (8x8 grey), so the whole pipeline
runs offline anywhere. Split: stratified, seeded, half train and half test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item
from cnnbench.errors import UserError


@hookimpl
def register_datasets(register):
    register("digits", Digits, description="scikit-learn's 1797 handwritten digits, 10 classes (bundled, offline)")


N_IMAGES, N_CLASSES = 1797, 10


def _test_fraction(name: str, value) -> float:
    """Strictly between 0 and 1, and leaving each split at least one image per class (the split is stratified)."""
    lo, hi = N_CLASSES / N_IMAGES, 1 - N_CLASSES / N_IMAGES
    allowed = f"a number between 0 and 1 (exclusive) leaving both splits one image per class, i.e. {lo:.4f} to {hi:.4f}"
    example = f"e.g. {DigitsOptions.default('test_fraction')}"
    frac = O.as_float(name, value, min=0, min_exclusive=True, fix=f"the share of images used for testing, {example}")
    n_test = math.ceil(frac * N_IMAGES)  # scikit-learn's train_test_split rounds the test share up
    if frac >= 1 or n_test < N_CLASSES or N_IMAGES - n_test < N_CLASSES:
        raise UserError(f"{name}: {value!r} is not allowed; expected {allowed}; {example}")
    return frac


@dataclass(frozen=True)
class DigitsOptions(DatasetOptions):
    """The split of the 1797 images: stratified by class, seeded."""

    seed: int = O.option(0, "seed of the stratified train/test split", min=0, max=2**32 - 1)
    test_fraction: float = O.option(0.5, "the share of images used for testing (each split keeps every class)",
                                    check=_test_fraction)


class Digits(Dataset):
    name = "digits"
    task = "multiclass"
    metric = "accuracy"
    splits = ("train", "test")
    description = "UCI/scikit-learn handwritten digits, 8x8 grey, 10 classes; seeded stratified 50/50 split"
    url = "bundled with scikit-learn (sklearn.datasets.load_digits)"

    Options = DigitsOptions

    def setup(self) -> None:
        self._cache: dict[str, list[Item]] | None = None

    @property
    def classes(self) -> list[str]:
        return [str(d) for d in range(10)]

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
