"""A complete third-party cnnbench plugin in one file.

It registers ``colorhist``: a joint RGB histogram (``bins``³ cells, L1-normalised), the kind of
hand-crafted global descriptor that CNN features replaced. It has no weights, so it runs anywhere,
and it shows everything a backbone plugin provides: a model, its preprocessing, named layers.

Install it next to cnnbench (``pip install ./examples/cnnbench-colorhist``) and
``cnnbench plugins`` lists it; ``cnnbench extract --backbone colorhist ...`` uses it.
"""

import torch
from torch import nn

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, Preprocess


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


def build(bins: int = 8) -> Backbone:
    return Backbone(
        name="colorhist",
        model=ColorHistogram(int(bins)),
        preprocess=PREPROCESS,
        default_layer="hist",
        layers={"hist": "hist"},
        weights="none (hand-crafted)",
        description=f"joint RGB histogram, {bins}^3 bins",
    )


@hookimpl
def register_backbones(register):
    register("colorhist", build, description="joint RGB colour histogram (example third-party plugin)")
