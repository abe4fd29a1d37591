"""How a model wants its pixels (like timm's ``pretrained_cfg``) and how its maps become vectors
(:data:`POOLINGS`), apart from the model: decode workers and the extraction settings need them
without loading torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

POOLINGS = ("avg", "max")  # how spatial maps become vectors (Backbone.features, ExtractSettings.pooling)


@dataclass(frozen=True)
class Preprocess:
    """How to turn an image into the model's input.

    ``crop="center"``: resize the short side to ``resize_size`` then take the central
    ``input_size`` square (the ImageNet evaluation convention, ``crop_pct = input/resize``).
    ``crop="full"``: warp the whole image to ``input_size`` square (the paper's "whole image
    resized to the network input").
    """

    input_size: int = 224
    resize_size: int = 256
    crop: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.crop not in ("center", "full"):
            raise ValueError(f"crop must be 'center' or 'full', got {self.crop!r}")
        if self.crop == "center" and self.resize_size < self.input_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than input_size {self.input_size}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest", "lanczos"):
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    @classmethod
    def from_timm_cfg(cls, cfg: dict, **overrides) -> "Preprocess":
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        crop_pct = float(cfg.get("crop_pct", 0.875) or 1.0)
        values = dict(
            input_size=size,
            resize_size=int(round(size / crop_pct)),
            interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
            mean=tuple(float(m) for m in cfg.get("mean", cls.mean)),
            std=tuple(float(s) for s in cfg.get("std", cls.std)),
        )
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
