"""The paper's views: 16 jittered views (CNNaug), spatial-search sub-patches, enlarged boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnbench import store
from cnnbench.backbone import Preprocess
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings
from cnnbench.images import enlarge_box, jitter_crops, make_views, spatial_patches, view_names

from conftest import tiny_backbone


def test_five_crops_are_four_ninths_at_the_corners_and_centre():
    w, h = 90, 60
    crops = dict(jitter_crops(w, h))
    for name, (x1, y1, x2, y2) in crops.items():
        assert (x2 - x1) * (y2 - y1) == pytest.approx(4 / 9 * w * h), name
    assert crops["crop_tl"][:2] == (0, 0) and crops["crop_br"][2:] == (w, h)
    assert crops["crop_tr"] == (30, 0, 90, 40) and crops["crop_bl"] == (0, 20, 60, 60)
    assert crops["crop_c"] == (15, 10, 75, 50)


def _quadrants(size=90):
    """An image whose 3x3 blocks each have a distinct grey level, so a crop's content is predictable."""
    arr = np.zeros((size, size, 3), np.uint8)
    for r in range(3):
        for c in range(3):
            arr[r * 30 : (r + 1) * 30, c * 30 : (c + 1) * 30] = 20 * (3 * r + c) + 10
    return Image.fromarray(arr)


def test_sixteen_views_show_the_expected_pixels():
    pp = Preprocess(input_size=60, resize_size=60, crop="full", interpolation="nearest")
    views = make_views(_quadrants(), pp, "jitter16", angles=(-5, 5))
    names = view_names("jitter16")
    assert views.shape == (16, 60, 60, 3) and len(names) == 16
    v = dict(zip(names, views))
    # the top-left crop covers blocks (0..1, 0..1): its top-left pixel is block 0, bottom-right block 4
    assert v["crop_tl"][0, 0, 0] == 10 and v["crop_tl"][-1, -1, 0] == 90
    assert v["crop_br"][0, 0, 0] == 90 and v["crop_br"][-1, -1, 0] == 170
    assert v["crop_c"][30, 30, 0] == 90  # the centre block
    # mirrors: the flipped top-right crop looks like the top-right crop read right to left
    np.testing.assert_array_equal(v["flip_crop_tr"], v["crop_tr"][:, ::-1])
    np.testing.assert_array_equal(v["flip_image"], v["image"][:, ::-1])
    # rotations keep the centre and differ from the image near the border
    assert v["rot_a"][30, 30, 0] == 90 and not np.array_equal(v["rot_a"], v["image"])


def test_spatial_patches_cover_each_grid_cell_with_the_smallest_square():
    patches = spatial_patches(120, 60, levels=3)
    assert len(patches) == 1 + 4 + 9
    name, (x1, y1, x2, y2) = patches[0]
    assert name == "l1_r0_c0" and (x2 - x1, y2 - y1) == (120, 120) and (x1 + x2) / 2 == 60  # square, padded
    level2 = patches[1:5]
    for _, (x1, y1, x2, y2) in level2:
        assert x2 - x1 == y2 - y1 == 60  # region 60x30 -> square 60
    assert level2[1][1] == (60, -15, 120, 45)  # row 0, col 1, centred on its region


def test_box_enlargement_is_about_the_centre_and_clipped():
    assert enlarge_box((40, 40, 60, 60), 1.5, 100, 100) == (35, 35, 65, 65)
    assert enlarge_box((0, 0, 20, 20), 1.5, 100, 100) == (0, 0, 25, 25)


def test_jittered_extraction_stores_a_view_axis(image_folder, tmp_path):
    from cnnbench import plugins

    ds = plugins.create("dataset", "imagefolder", path=image_folder, train_per_class=2)
    res = extract_split(tiny_backbone(), ds, "all", tmp_path / "j.h5", ExtractSettings(views="jitter16", batch_size=32), progress=False)
    fs = store.read(res.path)
    assert fs.features.shape == (18, 16, 8)
    info = store.open_info(res.path)
    assert info.attrs["views"] == "jitter16" and len(store.json.loads(info.attrs["view_names"])) == 16
    plain = store.read(extract_split(tiny_backbone(), ds, "all", tmp_path / "p.h5", progress=False).path)
    np.testing.assert_allclose(fs.features[:, 0], plain.features, atol=1e-5)  # view 0 is the image itself
