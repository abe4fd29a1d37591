"""Fault-injection findings on decoding: image bombs, EXIF orientation, 16-bit and unusual modes."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnbench.backbone import Preprocess
from cnnbench.images import MAX_PIXELS, ImageDecodeError, load_image, load_views


def _png(path, width: int, height: int, bit_depth: int, colour_type: int, rows: np.ndarray):
    """A PNG written byte by byte, for layouts Pillow cannot save (16-bit RGB/RGBA)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# -- image bombs -------------------------------------------------------------------------------------


def test_the_default_cap_admits_modern_phone_photos():
    assert MAX_PIXELS >= 9248 * 6936  # a "64 MP" phone sensor
    assert MAX_PIXELS < 13000 * 13000  # the 481 KB PNG of the fault report


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 100)).save(path)  # 20,000 px: a bomb for a 10,000 px cap
    assert load_image(path, max_pixels=None).size == (200, 100)
    assert load_image(path, max_pixels=20_000).size == (200, 100)  # the cap itself is allowed

    def no_decoding(self):
        raise AssertionError("decoded an image over the cap")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageDecodeError) as err:
        load_image(path, max_pixels=10_000)
    message = str(err.value)
    for part in ("bomb.png", "200x100", "10,000", "max_pixels", "--max-pixels"):
        assert part in message, message
    pp = Preprocess(input_size=16, resize_size=16)
    with pytest.raises(ImageDecodeError, match="200x100"):
        load_views(path, pp, max_pixels=10_000)


def test_an_image_over_the_cap_is_a_recorded_skip(tmp_path):
    from cnnbench.dataset import Item
    from cnnbench.decode import decode_batch
    from cnnbench.settings import ExtractSettings

    from conftest import tiny_backbone

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.new("RGB", (200, 100)).save(big)
    Image.new("RGB", (50, 40)).save(small)
    items = [Item(id="big", image=big), Item(id="small", image=small)]
    batch, ok, skipped = decode_batch(items, tiny_backbone().preprocess, ExtractSettings(max_pixels=10_000, box_scale=1.0, spatial_levels=4))
    assert [i.id for i in ok] == ["small"] and batch.shape[0] == 1
    assert skipped[0][0] == "big" and "200x100" in skipped[0][1]


def test_pillows_own_bomb_check_gives_no_warning_and_no_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # Pillow: warn above 5,000 px, refuse above 10,000
    warned, refused = tmp_path / "warned.png", tmp_path / "refused.png"
    Image.new("L", (80, 80)).save(warned)  # 6,400 px
    Image.new("L", (200, 100)).save(refused)  # 20,000 px
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(warned, max_pixels=None).size == (80, 80)
        with pytest.raises(ImageDecodeError, match="refused.png.*decompression-bomb"):
            load_image(refused, max_pixels=None)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# -- EXIF orientation --------------------------------------------------------------------------------


def _upright(height: int, width: int) -> np.ndarray:
    """A tall picture with 4 flat-coloured quadrants (a 4:4:4 JPEG keeps flat 8x8 blocks nearly exact)."""
    arr = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    arr[:h, :w], arr[:h, w:], arr[h:, :w], arr[h:, w:] = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)
    return arr


# orientation tag -> how the camera stored the upright picture (the viewer undoes it)
_STORED = {6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1), 3: lambda a: a[::-1, ::-1]}


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_shows_the_photo_upright(tmp_path, orientation):
    upright = _upright(64, 32)
    stored = np.ascontiguousarray(_STORED[orientation](upright))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, subsampling=0, exif=exif)

    seen = np.asarray(load_image(path))
    assert seen.shape == upright.shape
    assert np.abs(seen.astype(int) - upright).max() <= 8  # JPEG noise only: the quadrants are in place

    as_stored = np.asarray(load_image(path, exif_orientation=False))
    assert as_stored.shape == stored.shape
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.ascontiguousarray(
        {6: np.rot90(as_stored, -1), 8: np.rot90(as_stored, 1), 3: as_stored[::-1, ::-1]}[orientation]))


@pytest.mark.parametrize("orientation", [6, 8])
def test_draft_mode_then_orientation(tmp_path, orientation):
    upright = _upright(320, 160)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "big.jpg"
    stored = np.ascontiguousarray(_STORED[orientation](upright))
    Image.fromarray(stored).save(path, quality=95, subsampling=0, exif=exif)
    # the short side is 160: draft size 64 allows 1/2 (80 >= 64) but not 1/4 (40), whichever way up
    img = load_image(path, draft_size=64)
    assert img.size == (80, 160)
    half = upright[::2, ::2].astype(int)
    assert np.abs(np.asarray(img).astype(int) - half)[4:-4, 4:-4].max() <= 12
    pp = Preprocess(input_size=32, resize_size=64)
    views = load_views(path, pp, fast_decode=True)
    assert views.shape == (1, 32, 32, 3)
    # the centre crop straddles the four quadrants as they are upright: red top left, yellow bottom right
    assert np.abs(views[0, 2, 2].astype(int) - (250, 0, 0)).max() <= 12
    assert np.abs(views[0, -3, -3].astype(int) - (250, 250, 0)).max() <= 12


def test_unreadable_exif_leaves_the_image_as_stored(tmp_path, monkeypatch):
    from cnnbench import images

    def broken(img, *, in_place):
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", broken)
    path = tmp_path / "a.jpg"
    Image.new("RGB", (30, 20)).save(path)
    assert load_image(path).size == (30, 20)


# -- bit depths and modes ----------------------------------------------------------------------------


def _expected8(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(float) * 255 / 65535)


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    out = np.asarray(load_image(path)).astype(int)
    assert out.shape == (256, 256, 3) and (out[..., 0] == out[..., 2]).all()
    assert np.abs(out[..., 0] - _expected8(values)).max() <= 1
    assert (out == 255).mean() < 0.01  # before the fix: 99.6 % white


def test_sixteen_bit_pgm_opened_as_mode_I_is_scaled(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=">u2")
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 4 1 65535\n" + values.tobytes())
    assert Image.open(path).mode == "I"
    assert np.abs(np.asarray(load_image(path))[0, :, 1] - _expected8(values[0])).max() <= 1


def test_sixteen_bit_colour_png_is_within_one_level(tmp_path):
    rgb = np.zeros((2, 8, 3), ">u2")
    rgb[..., 0] = np.arange(8) * 9362
    rgb[..., 1] = 65535
    rgb[..., 2] = 32767
    out = np.asarray(load_image(_png(tmp_path / "rgb16.png", 8, 2, 16, 2, rgb))).astype(int)
    assert np.abs(out - _expected8(rgb)).max() <= 1
    rgba = np.concatenate([rgb, np.full((2, 8, 1), 65535, ">u2")], axis=2).astype(">u2")
    out = np.asarray(load_image(_png(tmp_path / "rgba16.png", 8, 2, 16, 6, rgba))).astype(int)
    assert out.shape == (2, 8, 3) and np.abs(out - _expected8(rgb)).max() <= 1


def test_images_without_a_known_range_are_refused_by_name(tmp_path):
    wide = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 1 << 20]], np.int32)).save(wide)
    with pytest.raises(ImageDecodeError, match="int32.tif.*32-bit integer"):
        load_image(wide)
    floats = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5]], np.float32)).save(floats)
    with pytest.raises(ImageDecodeError, match="float.tif.*floating-point"):
        load_image(floats)


def _palette_with_alpha_bytes():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.info["transparency"] = bytes([0, 128])  # a tRNS chunk with partial alpha: "bytes" transparency
    return img


@pytest.mark.parametrize("name, make, suffix, expected", [
    ("LA", lambda: Image.new("LA", (4, 4), (100, 0)), "png", (100, 100, 100)),
    ("RGBA", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "png", (10, 20, 30)),
    ("P+tRNS", _palette_with_alpha_bytes, "png", (0, 0, 255)),
    ("1", lambda: Image.new("1", (4, 4), 1), "png", (255, 255, 255)),
    ("CMYK", lambda: Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "jpg", (255, 0, 0)),
    ("L", lambda: Image.new("L", (4, 4), 77), "png", (77, 77, 77)),
])
def test_modes_become_rgb_without_warnings(tmp_path, name, make, suffix, expected):
    path = tmp_path / f"img.{suffix}"
    make().save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = load_image(path)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img)[1, 1].astype(int) - expected).max() <= 2, name  # JPEG: a level or two


def test_uint16_arrays_are_scaled_like_files():
    values = np.array([[0, 257, 32767, 65535]], np.uint16)
    out = np.asarray(load_image(values))
    assert out.shape == (1, 4, 3) and out[0, :, 0].tolist() == [0, 1, 127, 255]
    with pytest.raises(ImageDecodeError, match="uint8 or uint16"):
        load_image(np.zeros((2, 2), np.float32))
