"""Decoding and preprocessing: one implementation, grey made colour, bad files named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnbench.backbone import Preprocess
from cnnbench.images import ImageDecodeError, load_image, preprocess

from conftest import write_image


def test_grey_images_and_arrays_become_three_channels(tmp_path):
    path = write_image(tmp_path / "g.png", 1, mode="L")
    assert load_image(path).mode == "RGB"
    assert np.asarray(load_image(np.zeros((8, 8), np.uint8))).shape == (8, 8, 3)


def test_corrupt_and_truncated_files_name_the_path(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        load_image(bad)
    good = write_image(tmp_path / "ok.jpg", 2, size=(200, 150)).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(cut)


def test_center_crop_takes_the_middle_after_resizing_the_short_side():
    # 400x200 image: left half black, right half white, a red 20 px column at the centre
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[:, 200:] = 255
    arr[:, 190:210] = (255, 0, 0)
    pp = Preprocess(input_size=100, resize_size=100, interpolation="nearest")
    out = preprocess(Image.fromarray(arr), pp)
    assert out.shape == (100, 100, 3)
    # short side 200 -> 100, so the image is 200x100 and the crop is columns 50..150 of it
    assert tuple(out[50, 50]) == (255, 0, 0)
    assert tuple(out[50, 10]) == (0, 0, 0) and tuple(out[50, 90]) == (255, 255, 255)


def test_full_crop_warps_the_whole_image():
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[:, :100] = 255  # the left quarter is white
    out = preprocess(Image.fromarray(arr), Preprocess(input_size=40, crop="full", interpolation="nearest"))
    assert out[:, :10].min() == 255 and out[:, 11:].max() == 0


def test_box_is_cropped_before_resizing():
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[20:40, 60:80] = 200
    out = preprocess(Image.fromarray(arr), Preprocess(input_size=8, crop="full", interpolation="nearest"),
                     box=(60, 20, 80, 40))
    assert out.min() == 200
