"""Decoding and preprocessing: the single implementation of :class:`~cnnbench.backbone.Preprocess`.

Everything that turns a file or array into model input lives here, so that extraction, tests and
benchmarks all feed a model identical pixels.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dataset import ImageSource

if TYPE_CHECKING:  # annotations only: importing the backbone module would load torch for every command
    from .backbone import Preprocess

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

# Files larger than this many pixels (read from the header) are refused before decoding: image bombs.
# 2**26 ~ 67.1 MP admits every photo of the paper's data sets (all under 10 MP), 48/50/64-MP phone
# photos (a "64 MP" sensor writes 9248x6936 = 64.1 MP) and 61-MP full-frame cameras, while one
# decoded image stays near 200 MB of RGB per decode thread. Pillow itself only warns up to 179 MP.
MAX_PIXELS = 1 << 26

# Image.open warns (DecompressionBombWarning) above Pillow's own limit (89 MP), a new message per size,
# i.e. one warning per big file. max_pixels decides about those files (refused by default, decoded when
# the user raised or lifted the cap), so the warning is silenced while the header is read.
# warnings.catch_warnings is process-global and decoding is threaded, hence the lock (headers are cheap).
_OPEN_LOCK = threading.Lock()

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageDecodeError(Exception):
    """An image could not be read; the message names the source."""


def load_image(source: ImageSource, draft_size: int | None = None, *, max_pixels: int | None = MAX_PIXELS,
               exif_orientation: bool = True) -> Image.Image:
    """Open a file or wrap an array as an 8-bit RGB image, as a person sees it.

    ``draft_size``: let the JPEG decoder scale down by 2, 4 or 8 in the DCT domain while both sides
    stay at least this large (much faster on big photos; pixels then differ slightly from a full
    decode followed by resizing: mean absolute difference about 1 grey level).
    ``max_pixels``: refuse files whose header says width x height is larger, before decoding
    (``None``: no cap of ours; Pillow still refuses above ``2 * Image.MAX_IMAGE_PIXELS``).
    ``exif_orientation``: turn photos the way their EXIF orientation tag says (phones store them
    sideways and tag them).
    Modes: grey, palette, bilevel, CMYK become RGB; alpha is dropped (what torchvision's loader does);
    16-bit grey is scaled to 8 bits (see :func:`_to_rgb`). In-memory arrays (uint8, or uint16 scaled
    the same way) are taken as they are: no size cap, no orientation."""
    if isinstance(source, np.ndarray):
        return _array_to_image(source)
    path = Path(os.fspath(source))
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size  # from the header: nothing is decoded yet
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
                    f"pixels (a guard against image bombs); not decoded. To decode it, raise extract.max_pixels "
                    f"in params.yaml or --max-pixels (null in params.yaml: no limit)")
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))  # a square request: the same scale either way up
            img.load()  # decode now, so truncated files fail here and not later
            if exif_orientation:
                _exif_transpose(img)
            return _to_rgb(img, path)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{path}: over Pillow's own decompression-bomb limit, not decoded ({exc})") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc


def _exif_transpose(img: Image.Image) -> None:
    """Apply the EXIF orientation tag in place. A malformed EXIF block leaves the image as stored:
    the pixels are fine, only the tag is unreadable, and skipping the photo would lose it."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many types on bad data
        pass


def _to_rgb(img: Image.Image, path) -> Image.Image:
    """8-bit RGB from any decoded mode. ``convert("RGB")`` clips 16-bit grey at 255 (a 16-bit scan
    turns white), so 16-bit values are scaled by 255/65535, rounded. Mode ``I`` (32-bit integers) is
    how Pillow opens 16-bit PGM/PPM (stretched to 0..65535), so it is scaled the same way when its
    values fit in 16 bits and refused otherwise; ``F`` (float) has no known range and is refused.
    16-bit RGB(A) PNGs arrive as 8-bit RGB(A) already (Pillow 13 keeps the high byte: within 1 of
    rounding)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        arr = np.asarray(img)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageDecodeError(f"{path}: 32-bit integer image with values {arr.min()}..{arr.max()}: "
                                   f"no known range to scale to 8 bits; convert it to an 8- or 16-bit image")
        return Image.fromarray(_scale16(arr)).convert("RGB")
    if mode == "F":
        raise ImageDecodeError(f"{path}: floating-point image (mode F): no known range to scale to 8 bits; "
                               f"convert it to an 8- or 16-bit image")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # P -> RGB directly warns about byte transparency; same RGB values
    return img.convert("RGB")


def _scale16(arr: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 = 255 * 257)."""
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype == np.uint16:
        arr = _scale16(arr)
    elif arr.dtype != np.uint8:
        raise ImageDecodeError(f"in-memory image must be uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3)):
        return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr).convert("RGB")
    raise ImageDecodeError(f"in-memory image must be (H, W) or (H, W, 3), got shape {arr.shape}")


def preprocess(img: Image.Image, pp: Preprocess, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize/crop to the model's input; returns uint8 (input_size, input_size, 3)."""
    if box is not None:
        img = crop_box(img, box)
    resample = _RESAMPLE[pp.interpolation]
    size = pp.input_size
    if pp.crop == "full":
        img = img.resize((size, size), resample)
    else:  # the same arithmetic as torchvision's Resize(int) + CenterCrop, so pixels match it exactly
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = pp.resize_size, int(pp.resize_size * long / short)
        nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    arr = np.array(img, dtype=np.uint8)  # a writable copy, safe to hand to torch
    if arr.shape != (size, size, 3):  # pragma: no cover - PIL guarantees this for RGB
        raise ImageDecodeError(f"preprocessing produced shape {arr.shape}")
    return arr


def crop_box(img: Image.Image, box) -> Image.Image:
    """The pixels of a box (x1, y1, x2, y2), clipped to the image, at least 1 px wide and high.
    A box entirely outside the image fails to preprocess, so the extraction skips (and records) the item."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(img.width, max(x2, x1 + 1)), min(img.height, max(y2, y1 + 1))
    return img.crop((x1, y1, x2, y2))


def load_and_preprocess(source: ImageSource, pp: Preprocess, box=None, *, max_pixels: int | None = MAX_PIXELS,
                        exif_orientation: bool = True) -> np.ndarray:
    return preprocess(load_image(source, max_pixels=max_pixels, exif_orientation=exif_orientation), pp, box)


def load_views(source: ImageSource, pp: Preprocess, box=None, *, box_scale: float = 1.0, mode: str = "none",
               angles=None, levels: int = 4, fast_decode: bool = False, max_pixels: int | None = MAX_PIXELS,
               exif_orientation: bool = True) -> np.ndarray:
    """Decode, crop the (enlarged) box if any, and make the views: uint8 (V, size, size, 3).

    ``fast_decode`` uses JPEG draft mode for whole-image views; ``max_pixels`` and
    ``exif_orientation``: see :func:`load_image` (boxes are in the coordinates of the image as
    oriented, so the orientation must match the one the annotations were made on)."""
    draft = pp.resize_size if fast_decode and mode == "none" and box is None and pp.crop == "center" else None
    img = load_image(source, draft, max_pixels=max_pixels, exif_orientation=exif_orientation)
    if box is not None:
        img = crop_box(img, enlarge_box(box, box_scale, img.width, img.height))
    return make_views(img, pp, mode, angles=DEFAULT_ROTATIONS if angles is None else angles, levels=levels)


def normalize(batch_uint8, pp: Preprocess):
    """uint8 (N, H, W, 3) torch tensor -> float32 (N, 3, H, W) in channels-last memory, normalised."""
    import torch

    x = batch_uint8.permute(0, 3, 1, 2).float()  # NHWC storage == channels-last NCHW, no copy of layout
    mean = torch.tensor(pp.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(pp.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


# -- views: the paper's jittering (CNNaug) and spatial-search sub-patches --------------------------------

VIEW_MODES = ("none", "jitter16", "spatial")
DEFAULT_ROTATIONS = (-5.0, 5.0)  # the paper used "2 rotations" without giving angles; ours, a parameter

Box = tuple[float, float, float, float]


def enlarge_box(box: Box, factor: float, width: int, height: int) -> Box:
    """Scale a box about its centre by ``factor`` (the paper enlarges CUB/H3D boxes by 1.5), clipped."""
    x1, y1, x2, y2 = box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    return (max(0.0, cx - hw), max(0.0, cy - hh), min(float(width), cx + hw), min(float(height), cy + hh))


def jitter_crops(width: int, height: int) -> list[tuple[str, Box]]:
    """The paper's 5 crops: 4 corners and the centre, each 2/3 of each side, i.e. 4/9 of the area."""
    cw, ch = width * 2 / 3, height * 2 / 3
    return [
        ("crop_tl", (0.0, 0.0, cw, ch)),
        ("crop_tr", (width - cw, 0.0, float(width), ch)),
        ("crop_bl", (0.0, height - ch, cw, float(height))),
        ("crop_br", (width - cw, height - ch, float(width), float(height))),
        ("crop_c", ((width - cw) / 2, (height - ch) / 2, (width + cw) / 2, (height + ch) / 2)),
    ]


def spatial_patches(width: int, height: int, levels: int) -> list[tuple[str, Box]]:
    """Spatial search: at level l (1..levels) an l x l grid of regions, each covered by the smallest
    square containing it (centred on the region, so neighbours overlap and nothing is warped; a square
    that leaves the image is padded). Order: level 1, then level 2 row-major, … (sum of l² patches)."""
    out = []
    for level in range(1, levels + 1):
        rw, rh = width / level, height / level
        side = max(rw, rh)
        for row in range(level):
            for col in range(level):
                cx, cy = (col + 0.5) * rw, (row + 0.5) * rh
                out.append((f"l{level}_r{row}_c{col}", (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
    return out


def _crop(img: Image.Image, box: Box) -> Image.Image:
    return img.crop(tuple(int(round(v)) for v in box))  # PIL pads regions outside the image with black


def view_names(mode: str, levels: int = 4) -> list[str]:
    if mode == "none":
        return ["image"]
    if mode == "jitter16":
        base = ["image"] + [n for n, _ in jitter_crops(3, 3)] + ["rot_a", "rot_b"]
        return base + [f"flip_{n}" for n in base]
    if mode == "spatial":
        return [n for n, _ in spatial_patches(1, 1, levels)]
    raise ValueError(f"views must be one of {VIEW_MODES}, got {mode!r}")


def make_views(img: Image.Image, pp: Preprocess, mode: str = "none", *, angles=DEFAULT_ROTATIONS,
               levels: int = 4) -> np.ndarray:
    """All views of one image, each preprocessed for the model: uint8 (V, size, size, 3)."""
    if mode == "none":
        return preprocess(img, pp)[None]
    w, h = img.size
    if mode == "jitter16":
        if len(angles) != 2:
            raise ValueError(f"jitter16 needs exactly 2 rotation angles, got {list(angles)}")
        base = [img] + [_crop(img, b) for _, b in jitter_crops(w, h)]
        base += [img.rotate(float(a), resample=Image.Resampling.BICUBIC) for a in angles]
        views = base + [v.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for v in base]
        return np.stack([preprocess(v, pp) for v in views])
    if mode == "spatial":
        square = replace(pp, crop="full")  # patches are square: resize, no warp
        return np.stack([preprocess(_crop(img, b), square) for _, b in spatial_patches(w, h, levels)])
    raise ValueError(f"views must be one of {VIEW_MODES}, got {mode!r}")
