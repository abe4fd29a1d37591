"""Decoding and preprocessing: the single implementation of :class:`~cnnbench.backbone.Preprocess`.

Everything that turns a file or array into model input lives here, so that extraction, tests and
benchmarks all feed a model identical pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .backbone import Preprocess
from .dataset import ImageSource

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageDecodeError(Exception):
    """An image could not be read; the message names the source."""


def load_image(source: ImageSource) -> Image.Image:
    """Open a file or wrap an array as an RGB image (grey and palette images become 3-channel)."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            raise ImageDecodeError(f"in-memory image must be uint8, got {arr.dtype}")
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3)):
            img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr)
        else:
            raise ImageDecodeError(f"in-memory image must be (H, W) or (H, W, 3), got shape {arr.shape}")
        return img.convert("RGB")
    path = Path(os.fspath(source))
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here and not later
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc


def preprocess(img: Image.Image, pp: Preprocess, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize/crop to the model's input; returns uint8 (input_size, input_size, 3)."""
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(img.width, max(x2, x1 + 1)), min(img.height, max(y2, y1 + 1))
        img = img.crop((x1, y1, x2, y2))
    resample = _RESAMPLE[pp.interpolation]
    size = pp.input_size
    if pp.crop == "full":
        img = img.resize((size, size), resample)
    else:
        w, h = img.size
        scale = pp.resize_size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.array(img, dtype=np.uint8)  # a writable copy, safe to hand to torch
    if arr.shape != (size, size, 3):  # pragma: no cover - PIL guarantees this for RGB
        raise ImageDecodeError(f"preprocessing produced shape {arr.shape}")
    return arr


def load_and_preprocess(source: ImageSource, pp: Preprocess, box=None) -> np.ndarray:
    return preprocess(load_image(source), pp, box)


def normalize(batch_uint8, pp: Preprocess):
    """uint8 (N, H, W, 3) torch tensor -> float32 (N, 3, H, W) in channels-last memory, normalised."""
    import torch

    x = batch_uint8.permute(0, 3, 1, 2).float()  # NHWC storage == channels-last NCHW, no copy of layout
    mean = torch.tensor(pp.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(pp.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
