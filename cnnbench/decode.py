"""Decoding a batch of items into model inputs: the one function both engines decode with.

Free of torch on purpose: Ray decode workers import this module (and :mod:`cnnbench.preprocess`,
:mod:`cnnbench.settings`) only, so they start fast and stay small.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .dataset import Item
from .images import ImageDecodeError, load_views
from .preprocess import Preprocess
from .settings import ExtractSettings


def decode_batch(items: Sequence[Item], preprocess: Preprocess, settings: ExtractSettings):
    """Decode and make views for a batch (resolved ``settings``): uint8 (B, V, H, W, 3). Unreadable
    images are returned in ``skipped``, never raised. Both engines call this, so both see the same pixels."""
    arrays, ok, skipped = [], [], []
    for item in items:
        try:
            arrays.append(load_views(item.image, preprocess, item.box, box_scale=settings.box_scale,
                                     mode=settings.views, angles=settings.rotation_angles,
                                     levels=settings.spatial_levels, fast_decode=settings.fast_decode,
                                     max_pixels=settings.max_pixels, exif_orientation=settings.exif_orientation))
            ok.append(item)
        except Exception as exc:  # noqa: BLE001 - any decoder failure skips this one image only
            skipped.append((item.id, skip_reason(item, exc)))
    size = preprocess.input_size
    batch = np.stack(arrays) if arrays else np.zeros((0, len(settings.view_names), size, size, 3), np.uint8)
    return batch, ok, skipped


def skip_reason(item: Item, exc: BaseException) -> str:
    """Why ``item`` was skipped: one line naming it once, never without a reason. Our own decode errors
    say what went wrong in their message; any other exception is named by its type too, which is all
    some carry (``str(MemoryError())`` is empty)."""
    what = _describe(item)
    text = " ".join(str(exc).split())
    if not isinstance(exc, ImageDecodeError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if text.startswith(what) else f"{what}: {text}"


def _describe(item: Item) -> str:
    return str(item.image) if not isinstance(item.image, np.ndarray) else f"item {item.id}"
