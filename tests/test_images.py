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


def test_preprocessing_equals_torchvision_reference_on_real_photos(shared_data):
    from torchvision import transforms

    pp = Preprocess(input_size=224, resize_size=256, interpolation="bicubic")
    reference = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
    ])
    paths = sorted((shared_data / "flowers17" / "jpg").glob("*.jpg"))[::150]
    paths += sorted((shared_data / "oxford5k-subset" / "jpg").glob("*.jpg"))[:4]
    for path in paths:
        ours = preprocess(load_image(path), pp)
        ref = np.asarray(reference(Image.open(path).convert("RGB")))
        np.testing.assert_array_equal(ours, ref, err_msg=str(path))
        # draft mode only kicks in on photos at least twice the target size: none of these
        np.testing.assert_array_equal(preprocess(load_image(path, draft_size=256), pp), ours)


def test_jpeg_draft_on_a_big_photo_stays_within_two_grey_levels(shared_data, tmp_path):
    src = sorted((shared_data / "oxford5k-subset" / "jpg").glob("*.jpg"))[0]
    big = tmp_path / "big.jpg"
    Image.open(src).convert("RGB").resize((1536, 1152), Image.Resampling.BICUBIC).save(big, quality=92)
    pp = Preprocess(input_size=224, resize_size=256)
    full = preprocess(load_image(big), pp).astype(float)
    fast = preprocess(load_image(big, draft_size=256), pp).astype(float)
    assert np.abs(full - fast).mean() < 2.0
