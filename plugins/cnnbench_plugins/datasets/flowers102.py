"""``flowers102``: Oxford 102 Category Flower Dataset (Nilsback & Zisserman, ICVGIP 2008), 8189 images.

Layout as distributed: ``102flowers.tgz`` unpacks to ``jpg/image_00001.jpg … image_08189.jpg``;
``imagelabels.mat`` holds ``labels`` (1 x 8189, classes 1..102) and ``setid.mat`` the official split
as 1-based image numbers: ``trnid`` (1020, 10 per class), ``valid`` (1020) and ``tstid`` (6149).
Stored splits ``train``, ``val``, ``test``; the protocol trains on train + val (``train_on:
trainval``, the paper's setting) or on train only, and tests on test. With ``trainval`` the heads
choose C on ``val`` (fitted on ``train``: the split Nilsback & Zisserman made for it), then refit
on both; with ``train`` only, by cross-validation on it. Metric: mean class accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Dataset, DatasetOptions, Item, Trial
from cnnbench.download import Download

from ._common import AnnotationError

_HOST = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
SETS = {"train": "trnid", "val": "valid", "test": "tstid"}


def _loadmat(path) -> dict:
    """The variables of a MATLAB file; a damaged or foreign file is one line naming it."""
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, TypeError, OSError… on a damaged file
        raise AnnotationError(f"flowers102: {path} is not a readable MATLAB file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); get it again from {_HOST}") from None


@hookimpl
def register_datasets(register):
    register("flowers102", Flowers102, description="Oxford Flowers-102, official setid.mat split (1020/1020/6149); mean class accuracy")


@dataclass(frozen=True)
class Flowers102Options(DatasetOptions):
    """What the classifier is fitted on (the test split is always ``tstid``)."""

    train_on: Literal["train", "trainval"] = O.option("trainval", "fit on train only (C by cross-validation), or "
                                                                  "on train + val (C chosen on val; the paper's)")


class Flowers102(Dataset):
    name = "flowers102"
    task = "multiclass"
    metric = "mean_class_accuracy"
    splits = ("train", "val", "test")
    folder = "flowers102"
    description = "Oxford 102 flowers: official trnid/valid/tstid (1020/1020/6149); mean class accuracy"
    url = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    layout = "  jpg/image_00001.jpg ... jpg/image_08189.jpg\n  imagelabels.mat  (labels)\n  setid.mat        (trnid, valid, tstid)"
    # URL, SHA-256 and size as published in TensorFlow Datasets' url_checksums/oxford_flowers102.txt
    # (the same host; no mirror is published).
    downloads = (
        Download(_HOST + "102flowers.tgz", "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
                 size=344_862_509),
        Download(_HOST + "imagelabels.mat", "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d",
                 size=502),
        Download(_HOST + "setid.mat", "46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd",
                 size=14_989),
    )

    Options = Flowers102Options

    def setup(self) -> None:
        self._mats: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    def required_paths(self):
        return [self.root / "jpg", self.root / "imagelabels.mat", self.root / "setid.mat"]

    def _load(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self._mats is None:
            self.check()
            labels_mat = _loadmat(self.root / "imagelabels.mat")
            if "labels" not in labels_mat:
                raise AnnotationError(f"flowers102: {self.root / 'imagelabels.mat'} has no 'labels' variable")
            labels = np.asarray(labels_mat["labels"]).ravel().astype(np.int64)
            setid = _loadmat(self.root / "setid.mat")
            sets = {}
            for split, key in SETS.items():
                if key not in setid:
                    raise AnnotationError(f"flowers102: {self.root / 'setid.mat'} has no {key!r} variable")
                ids = np.sort(np.asarray(setid[key]).ravel().astype(np.int64))
                if ids.size and (ids.min() < 1 or ids.max() > len(labels)):
                    raise AnnotationError(f"flowers102: setid.mat {key} refers to images outside 1..{len(labels)}")
                twice = ids[1:][ids[1:] == ids[:-1]]
                if twice.size:
                    raise AnnotationError(f"flowers102: {self.root / 'setid.mat'}: {key} lists image {int(twice[0])} "
                                          "twice; get setid.mat again")
                for other, earlier in sets.items():
                    shared = np.intersect1d(ids, earlier)
                    if shared.size:
                        raise AnnotationError(f"flowers102: {self.root / 'setid.mat'}: {key} and {SETS[other]} share "
                                              f"{shared.size} image(s) (e.g. {int(shared[0])}); a test image must not "
                                              "be trained on: get setid.mat again")
                sets[split] = ids
            if labels.size and (labels.min() < 1 or labels.max() > 102):
                raise AnnotationError(f"flowers102: {self.root / 'imagelabels.mat'}: labels must lie in 1..102")
            self._mats = (labels, sets)
        return self._mats

    @property
    def classes(self) -> list[str]:
        return [f"{k:03d}" for k in range(1, 103)]  # the archive names no classes, only numbers 1..102

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        labels, sets = self._load()
        return [Item(f"image_{i:05d}", str(self.root / "jpg" / f"image_{i:05d}.jpg"), int(labels[i - 1] - 1))
                for i in sets[split]]

    def trials(self, labels):
        if self.train_on == "trainval":  # choose hyperparameters on val, then refit on train + val
            return [Trial("default", {"train": None, "val": None}, {"test": None}, validation=("val",))]
        return [Trial("default", {"train": None}, {"test": None})]
