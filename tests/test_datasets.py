"""Data-set plugins: layouts, labels and seeded splits, on fixtures and on the real files."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.dataset import seeded_per_class_split
from cnnbench.errors import MissingDataError


def test_digits_is_a_fixed_seeded_stratified_split():
    ds = plugins.create("dataset", "digits")
    train, test = ds.items("train"), ds.items("test")
    assert len(train) + len(test) == 1797 and abs(len(train) - len(test)) <= 1
    assert not {i.id for i in train} & {i.id for i in test}
    assert np.bincount([i.label for i in train]).min() >= 85
    assert [i.id for i in plugins.create("dataset", "digits").items("test")] == [i.id for i in test]
    assert train[0].image.dtype == np.uint8 and train[0].image.max() > 200


def test_seeded_per_class_split_is_disjoint_sized_and_repeatable():
    labels = np.repeat(np.arange(3), 10)
    a, b, rest = seeded_per_class_split(labels, [4, 2, -1], seed=7)
    assert [len(a), len(b), len(rest)] == [12, 6, 12]
    assert len(set(a) | set(b) | set(rest)) == 30
    assert np.all(np.bincount(labels[a]) == 4)
    assert np.array_equal(a, seeded_per_class_split(labels, [4, 2, -1], seed=7)[0])
    assert not np.array_equal(a, seeded_per_class_split(labels, [4, 2, -1], seed=8)[0])
    with pytest.raises(ValueError, match="fewer"):
        seeded_per_class_split(labels, [11], seed=0)


def test_imagefolder_with_and_without_train_test_folders(tmp_path, image_folder):
    ds = plugins.create("dataset", "imagefolder", path=image_folder, train_per_class=2, seeds=[0, 1])
    assert ds.splits == ("all",) and ds.classes == ["a", "b", "c"]
    items = ds.items("all")
    assert len(items) == 20  # 18 images + the corrupt and truncated files (skipped later, by extraction)
    labels = np.array([i.label for i in items])
    trials = ds.trials({"all": labels})
    assert [t.name for t in trials] == ["seed0", "seed1"]
    assert len(trials[0].train["all"]) == 6 and len(trials[0].test["all"]) == 14

    fixed = tmp_path / "fixed"
    for split in ("train", "test"):
        for name in ("x", "y"):
            (fixed / split / name).mkdir(parents=True)
            from conftest import write_image

            write_image(fixed / split / name / "1.png", 1)
    ds = plugins.create("dataset", "imagefolder", path=fixed)
    assert ds.splits == ("train", "test") and [i.label for i in ds.items("test")] == [0, 1]


def test_missing_data_names_the_data_set_the_path_and_the_layout(tmp_path):
    ds = plugins.create("dataset", "flowers17", data_root=tmp_path)
    assert not ds.present()
    with pytest.raises(MissingDataError) as err:
        ds.check()
    msg = str(err.value)
    assert "flowers17" in msg and str(tmp_path / "flowers17" / "jpg") in msg and "image_0001.jpg" in msg
    assert "robots.ox.ac.uk" in msg


def test_flowers17_real_files_and_protocol(shared_data):
    ds = plugins.create("dataset", "flowers17", data_root=shared_data)
    items = ds.items("all")
    assert len(items) == 1360 and all(i.label == (int(i.id[6:]) - 1) // 80 for i in items)
    trials = ds.trials({"all": np.array([i.label for i in items])})
    assert len(trials) == 3
    train, test = trials[0].train["all"], trials[0].test["all"]
    assert len(train) == 17 * 60 and len(test) == 17 * 20 and not set(train) & set(test)


def test_scene15_real_files(shared_data):
    ds = plugins.create("dataset", "scene15", data_root=shared_data)
    assert len(ds.classes) == 15
    assert len(ds.items("train")) == 1500 and len(ds.items("test")) == 2985
