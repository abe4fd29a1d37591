"""A complete third-party cnnbench plugin in one file, using only the plugin surface (docs/plugins.md).

It registers two things:

* the backbone ``colorhist``: a joint RGB histogram (``bins``³ cells, L1-normalised), the kind of
  hand-crafted global descriptor that CNN features replaced. It has no weights, so it runs
  anywhere, and it shows everything a backbone provides: a model, its preprocessing, named layers;
* the head ``ncm``: nearest class mean, the simplest classifier on frozen features. It shows what
  a head provides: declared options, ``evaluate`` with the data set's ``metric``, named scores.

Each declares its options once, as an :class:`cnnbench.options.Options` dataclass: cnnbench checks
what the user gives against it (``-B bins=0`` and ``-B bns=4`` are refused, naming the option) and
``cnnbench plugins colorhist`` lists it.

Install it next to cnnbench (``pip install ./examples/cnnbench-colorhist``) and ``cnnbench plugins``
lists it; ``cnnbench extract --backbone colorhist ...`` and ``cnnbench evaluate --head ncm ...`` use it.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.backbone import Backbone, Preprocess
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, Head, l2_normalize
from cnnbench.metrics import accuracy, mean_class_accuracy


class ColorHistogram(nn.Module):
    def __init__(self, bins: int = 8):
        super().__init__()
        self.bins = bins
        self.quantize = nn.Identity()  # named stages, so `cnnbench layers colorhist` has something to show
        self.hist = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x is normalised with mean 0, std 1 (see PREPROCESS), so it holds pixel values in [0, 1]
        q = self.quantize((x.clamp(0, 1) * (self.bins - 1e-4)).long())
        cell = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]
        counts = torch.zeros(x.shape[0], self.bins**3, device=x.device)
        counts.scatter_add_(1, cell.flatten(1), torch.ones_like(cell.flatten(1), dtype=counts.dtype))
        return self.hist(counts / counts.sum(dim=1, keepdim=True))


PREPROCESS = Preprocess(input_size=128, resize_size=128, crop="full", interpolation="bilinear",
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass(frozen=True)
class ColorHistogramOptions(O.Options):
    bins: int = O.option(8, "histogram cells per colour channel (bins³ in all)", min=1, max=64,
                         fix="the histogram has bins³ cells; 8 gives 512")


def build(options: ColorHistogramOptions = ColorHistogramOptions()) -> Backbone:
    bins = options.bins
    return Backbone(
        name="colorhist",
        model=ColorHistogram(bins),
        preprocess=PREPROCESS,
        default_layer="hist",
        layers={"hist": "hist"},
        weights="none (hand-crafted)",
        description=f"joint RGB histogram, {bins}^3 bins",
    )


@dataclass(frozen=True)
class NearestClassMeanOptions(O.Options):
    normalize: bool = O.option(True, "L2-normalise the features before taking the class means")


class NearestClassMean(Head):
    """Each class is the mean of its training features; a test image gets the class of the closest mean."""

    name = "ncm"
    tasks = ("multiclass",)  # `cnnbench evaluate` skips this head on other data sets, saying so
    Options = NearestClassMeanOptions  # Head parses them, reads them as attributes and records them

    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        # `metric` is the data set's (e.g. "accuracy"); this head reports both scores whatever it is
        if train.features.ndim == 3:  # (N, V, D): several views per image; average them
            train = FeatureSet(train.features.mean(1), train.labels, train.ids, train.classes)
            test = FeatureSet(test.features.mean(1), test.labels, test.ids, test.classes)
        xtr, xte = train.features, test.features
        if self.normalize:
            xtr, xte = l2_normalize(xtr), l2_normalize(xte)
        present = np.unique(train.labels)
        if len(present) < 2:
            raise UserError("ncm: the training images are all of one class; a classifier needs at least 2")
        means = np.stack([xtr[train.labels == c].mean(0) for c in present])
        distance = (xte**2).sum(1, keepdims=True) - 2 * xte @ means.T + (means**2).sum(1)
        pred = present[distance.argmin(1)]
        return {"accuracy": accuracy(test.labels, pred), "mean_class_accuracy": mean_class_accuracy(test.labels, pred)}


@hookimpl
def register_backbones(register):
    register("colorhist", build, options=ColorHistogramOptions,
             description="joint RGB colour histogram (example third-party plugin)")


@hookimpl
def register_heads(register):
    register("ncm", NearestClassMean, description="nearest class mean (example third-party plugin)")
