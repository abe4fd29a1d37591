"""Decoding and preprocessing: the single implementation of :class:`~cnnbench.preprocess.Preprocess`.

Everything that turns a file or array into model input lives here, so that extraction, tests and
benchmarks all feed a model identical pixels.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dataset import EncodedImage, ImageSource
from .preprocess import Preprocess

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

# The only formats opened, by Pillow's names, whatever a file's name says (Pillow identifies files by
# their content). Left to itself Image.open tries every format Pillow knows: EPS hands the file to
# Ghostscript (an interpreter of a programming language), and rare parsers that take any bytes (TGA,
# SPIDER, IM, PCD) are attack surface no data set needs. These are libraries linked into Pillow, none
# calls another program. A multi-picture JPEG (phones, 3D cameras) opens as "MPO" through JPEG's own
# parser; PPM covers PGM and PBM.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

# A progressive JPEG is decoded scan by scan, each scan a pass over all the image's coefficients, and a
# scan can be 12 bytes long: a 1.2 MB file of 100,000 scans took 11 s to decode (a photo that size:
# 20 ms). libjpeg's own progression writes 10 scans for a colour image and encoders a few dozen at
# most, so a progressive JPEG file with more start-of-scan markers than this is refused before decoding
# (a baseline scan codes every block, so its cost follows its size).
MAX_JPEG_SCANS = 256


class ImageDecodeError(Exception):
    """An image could not be read; the message names the source."""


def load_image(source: ImageSource, draft_size: int | None = None, *, max_pixels: int | None = MAX_PIXELS,
               exif_orientation: bool = True) -> Image.Image:
    """Open a file or wrap an array as an 8-bit RGB image, as a person sees it.

    Files are opened only in :data:`ALLOWED_FORMATS`, identified by their content; any other format
    is refused by name before its parser runs.

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
    encoded = source if isinstance(source, EncodedImage) else None
    if encoded is not None and encoded.load is not None:  # read now, once: the checks below look at the bytes
        try:
            encoded = EncodedImage(encoded.name, encoded.read())
        except Exception as exc:  # noqa: BLE001 - any failure to read one image skips that image only
            raise ImageDecodeError(f"{encoded.name}: its bytes could not be read: {type(exc).__name__}: {exc}") from exc
    path = Path(os.fspath(source)) if encoded is None else source.name  # what messages name
    if encoded is not None and not encoded.data:  # a sample or row without an image: its name says why
        raise ImageDecodeError(f"{path}: no image data")
    try:
        img = _open(path, encoded)
        with img:
            width, height = img.size  # from the header: nothing is decoded yet
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
                    f"pixels (a guard against image bombs); not decoded. To decode it, raise extract.max_pixels "
                    f"in params.yaml or --max-pixels (null in params.yaml: no limit)")
            if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
                _refuse_many_scans(path, encoded)
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


def _open(path: Path | str, encoded: EncodedImage | None = None) -> Image.Image:
    """Read the header of a file (or of ``encoded``'s bytes) in one of :data:`ALLOWED_FORMATS`; one in
    another format Pillow knows is refused by name, without running that format's parser."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path if encoded is None else io.BytesIO(encoded.data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        allowed = ", ".join(ALLOWED_FORMATS)
        other = " or ".join(_other_formats(path, encoded))
        if not other:
            raise ImageDecodeError(f"{path}: not an image cnnbench can read: its content is none of {allowed} "
                                   f"(or its header is damaged)") from None
        raise ImageDecodeError(
            f"{path}: format {other} is not allowed (cnnbench opens only {allowed}, whatever the file's name "
            f"says: other formats may hand the file to another program, as EPS does to Ghostscript); not "
            f"opened. Convert it to PNG or JPEG, or remove it from the data set") from None


def _other_formats(path: Path | str, encoded: EncodedImage | None = None) -> list[str]:
    """The formats, outside the allowed ones, whose signature the file's first bytes carry (the test
    Pillow itself starts with: no parser runs). Signatures overlap (XBM's and XPM's), and formats
    without one match another's (a TGA file may start like a CUR)."""
    Image.init()  # every format's signature test, not only the common ones
    if encoded is not None:
        prefix = encoded.data[:16]
    else:
        with open(path, "rb") as f:
            prefix = f.read(16)
    found = []
    for name, (_, accept) in Image.OPEN.items():
        if name not in ALLOWED_FORMATS and accept is not None:
            try:
                hit = accept(prefix)
            except Exception:  # noqa: BLE001 - a signature test failing on odd bytes is no match
                continue
            if hit and not isinstance(hit, str):  # a str is Pillow's "support not installed" note
                found.append(name)
    return found


def _refuse_many_scans(path: Path | str, encoded: EncodedImage | None = None) -> None:
    """Count a JPEG file's start-of-scan markers (FF DA: entropy-coded data never holds one, as it
    writes FF as FF 00), at most up to :data:`MAX_JPEG_SCANS`, without reading the file into memory."""
    if encoded is not None:
        if _scans_over_limit(encoded.data):
            raise _many_scans(path)
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if not _scans_over_limit(data):
            return
    raise _many_scans(path)


def _scans_over_limit(data) -> bool:
    at = -1
    for _ in range(MAX_JPEG_SCANS + 1):
        at = data.find(b"\xff\xda", at + 1)
        if at < 0:
            return False
    return True


def _many_scans(path) -> ImageDecodeError:
    return ImageDecodeError(f"{path}: a JPEG with more than {MAX_JPEG_SCANS} scans (encoders write a few dozen at "
                            f"most; each costs a pass over the whole image: a guard against decoding bombs); not "
                            f"decoded. Re-encode it (e.g. as a baseline JPEG) or remove it from the data set")


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


def preprocess(img: Image.Image, pp: Preprocess, box: tuple[float, float, float, float] | None = None, *,
               max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Resize/crop to the model's input; returns uint8 (input_size, input_size, 3). The resized image is
    held to ``max_pixels`` before it is built (see :func:`check_built`)."""
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
        check_built(f"resizing a {w}x{h} image to {new_short} px on its short side", nw, nh, max_pixels)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    arr = np.array(img, dtype=np.uint8)  # a writable copy, safe to hand to torch
    if arr.shape != (size, size, 3):  # pragma: no cover - PIL guarantees this for RGB
        raise ImageDecodeError(f"preprocessing produced shape {arr.shape}")
    return arr


def check_built(what: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse, before it is allocated, an image whose size follows from the file's shape rather than
    from its pixel count: the file's header is held to ``max_pixels``, and so is everything built from
    it. Otherwise a 475-byte 1x100000 PNG (10^5 pixels, under any cap) resized to 256 px on its short
    side becomes 256x25,600,000 pixels (20 GB of RGB), and its level-1 spatial patch, a square padded
    around it, 100000x100000. Under the default cap this admits a 1024:1 image at short side 256, and
    spatial patches of photos up to 8192 px on their long side. ``max_pixels=None`` leaves Pillow's own
    limit on the file, so it bounds what is built too (``2 * Image.MAX_IMAGE_PIXELS``, 179 MP)."""
    budget = max_pixels
    if budget is None and Image.MAX_IMAGE_PIXELS:  # Pillow's own limit may be lifted too: then none
        budget = 2 * Image.MAX_IMAGE_PIXELS
    if budget is not None and width * height > budget:
        limit, or_raise = (("max_pixels", ", or raise extract.max_pixels in params.yaml or --max-pixels")
                           if max_pixels is not None else ("Pillow's own limit (max_pixels is null)", ""))
        raise ImageDecodeError(
            f"{what} would build a {width}x{height} image = {width * height:,} pixels, over the limit of "
            f"{budget:,} pixels ({limit}, which bounds every image built from a file as well as the file: a "
            f"guard against extreme shapes); not built. Crop the image (or its box) to a less extreme "
            f"shape{or_raise}")


def crop_box(img: Image.Image, box) -> Image.Image:
    """The pixels of a box (x1, y1, x2, y2), clipped to the image, at least 1 px wide and high.
    A box entirely outside the image fails to preprocess, so the extraction skips (and records) the item."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(img.width, max(x2, x1 + 1)), min(img.height, max(y2, y1 + 1))
    return img.crop((x1, y1, x2, y2))


def load_and_preprocess(source: ImageSource, pp: Preprocess, box=None, *, max_pixels: int | None = MAX_PIXELS,
                        exif_orientation: bool = True) -> np.ndarray:
    return preprocess(load_image(source, max_pixels=max_pixels, exif_orientation=exif_orientation), pp, box,
                      max_pixels=max_pixels)


def load_views(source: ImageSource, pp: Preprocess, box=None, *, box_scale: float = 1.0, mode: str = "none",
               angles=None, levels: int = 4, fast_decode: bool = False, max_pixels: int | None = MAX_PIXELS,
               exif_orientation: bool = True) -> np.ndarray:
    """Decode, crop the (enlarged) box if any, and make the views: uint8 (V, size, size, 3).

    ``fast_decode`` uses JPEG draft mode for whole-image views; ``max_pixels`` and
    ``exif_orientation``: see :func:`load_image` (boxes are in the coordinates of the image as
    oriented, so the orientation must match the one the annotations were made on); ``max_pixels``
    bounds the images the views are built from too (:func:`check_built`)."""
    draft = pp.resize_size if fast_decode and mode == "none" and box is None and pp.crop == "center" else None
    img = load_image(source, draft, max_pixels=max_pixels, exif_orientation=exif_orientation)
    if box is not None:
        img = crop_box(img, enlarge_box(box, box_scale, img.width, img.height))
    return make_views(img, pp, mode, angles=DEFAULT_ROTATIONS if angles is None else angles, levels=levels,
                      max_pixels=max_pixels)


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


def _crop(img: Image.Image, name: str, box: Box, max_pixels: int | None) -> Image.Image:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    check_built(f"the view {name} of a {img.width}x{img.height} image", x2 - x1, y2 - y1, max_pixels)
    return img.crop((x1, y1, x2, y2))  # PIL pads regions outside the image with black


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
               levels: int = 4, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """All views of one image, each preprocessed for the model: uint8 (V, size, size, 3). Each image
    built on the way is held to ``max_pixels`` (:func:`check_built`)."""
    if mode == "none":
        return preprocess(img, pp, max_pixels=max_pixels)[None]
    w, h = img.size
    if mode == "jitter16":
        if len(angles) != 2:
            raise ValueError(f"jitter16 needs exactly 2 rotation angles, got {list(angles)}")

        def base():  # one at a time: 16 full-size views at once would hold 10 images' worth of pixels
            yield img
            yield from (_crop(img, n, b, max_pixels) for n, b in jitter_crops(w, h))
            yield from (img.rotate(float(a), resample=Image.Resampling.BICUBIC) for a in angles)  # same size

        pairs = [(preprocess(v, pp, max_pixels=max_pixels),
                  preprocess(v.transpose(Image.Transpose.FLIP_LEFT_RIGHT), pp, max_pixels=max_pixels)) for v in base()]
        return np.stack([view for view, _ in pairs] + [flipped for _, flipped in pairs])
    if mode == "spatial":
        square = replace(pp, crop="full")  # patches are square: resize, no warp
        return np.stack([preprocess(_crop(img, n, b, max_pixels), square, max_pixels=max_pixels)
                         for n, b in spatial_patches(w, h, levels)])
    raise ValueError(f"views must be one of {VIEW_MODES}, got {mode!r}")
