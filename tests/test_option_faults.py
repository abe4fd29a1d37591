"""Bad plugin options and bad image folders: each is one UserError naming the option (or the folder,
the class), never a traceback from deep inside and never a silently wrong result."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.dataset import seeded_per_class_split
from cnnbench.errors import CnnbenchError, UserError
from cnnbench.head import FeatureSet

from conftest import write_image

# (kind, plugin, options, text the message must contain)
BAD_OPTIONS = [
    # -- svm head
    ("head", "svm", {"C": -1}, "svm: C"),
    ("head", "svm", {"C": 0}, "svm: C"),
    ("head", "svm", {"C": "abc"}, "svm: C"),
    ("head", "svm", {"C": float("nan")}, "svm: C"),
    ("head", "svm", {"C": True}, "svm: C"),
    ("head", "svm", {"power": -1}, "svm: power"),
    ("head", "svm", {"power": 0}, "svm: power"),
    ("head", "svm", {"power": "two"}, "svm: power"),
    ("head", "svm", {"loss": "bogus"}, "svm: loss"),
    ("head", "svm", {"C_grid": []}, "svm: C_grid"),
    ("head", "svm", {"C_grid": [0.1, -1]}, "svm: C_grid[1]"),
    ("head", "svm", {"C_grid": [0, 1]}, "svm: C_grid[0]"),
    ("head", "svm", {"C_grid": [0.1, "x"]}, "svm: C_grid[1]"),
    ("head", "svm", {"C_grid": {"a": 1}}, "svm: C_grid"),
    ("head", "svm", {"cv_folds": 1}, "svm: cv_folds"),
    ("head", "svm", {"cv_folds": 0}, "svm: cv_folds"),
    ("head", "svm", {"cv_folds": 2.5}, "svm: cv_folds"),
    ("head", "svm", {"cv_folds": "abc"}, "svm: cv_folds"),
    ("head", "svm", {"max_iter": 0}, "svm: max_iter"),
    ("head", "svm", {"max_iter": "many"}, "svm: max_iter"),
    ("head", "svm", {"tol": 0}, "svm: tol"),
    ("head", "svm", {"tol": "x"}, "svm: tol"),
    ("head", "svm", {"seed": -1}, "svm: seed"),
    ("head", "svm", {"seed": "x"}, "svm: seed"),
    ("head", "svm", {"smooth": 0}, "svm: smooth"),
    ("head", "svm", {"smooth": "x"}, "svm: smooth"),
    ("head", "svm", {"solver": "sgd"}, "svm: solver"),
    ("head", "svm", {"multiclass": "ova"}, "svm: multiclass"),
    ("head", "svm", {"view_pooling": "mean"}, "svm: view_pooling"),
    ("head", "svm", {"ap": "11pt"}, "svm: ap"),
    ("head", "svm", {"class_weight": "equal"}, "svm: class_weight"),
    ("head", "svm", {"device": "gpu0"}, "svm: device"),
    ("head", "svm", {"device": "meta"}, "svm: device"),
    ("head", "svm", {"device": 3}, "svm: device"),
    # -- l2 head
    ("head", "l2", {"pca_dim": "bogus"}, "l2: pca_dim"),
    ("head", "l2", {"pca_dim": 0}, "l2: pca_dim"),
    ("head", "l2", {"pca_dim": -5}, "l2: pca_dim"),
    ("head", "l2", {"pca_dim": True}, "l2: pca_dim"),
    ("head", "l2", {"index": "bogus"}, "l2: index"),
    ("head", "l2", {"query_batch": 0}, "l2: query_batch"),
    ("head", "l2", {"query_batch": "x"}, "l2: query_batch"),
    ("head", "l2", {"levels": [4]}, "l2: levels"),
    ("head", "l2", {"levels": [4, 3, 2]}, "l2: levels"),
    ("head", "l2", {"levels": [4, 0]}, "l2: levels[1]"),
    ("head", "l2", {"levels": ["a", 3]}, "l2: levels[0]"),
    ("head", "l2", {"levels": "x"}, "l2: levels"),
    ("head", "l2", {"faiss_min_database": 0}, "l2: faiss_min_database"),
    ("head", "l2", {"faiss_min_database": "lots"}, "l2: faiss_min_database"),
    ("head", "l2", {"faiss_index": ""}, "l2: faiss_index"),
    ("head", "l2", {"power": -1}, "l2: power"),
    ("head", "l2", {"power": 0}, "l2: power"),
    ("head", "l2", {"whiten": "yes"}, "l2: whiten"),
    ("head", "l2", {"multi_vector": "max"}, "l2: multi_vector"),
    ("head", "l2", {"pca_fit": "paris.txt"}, "l2: pca_fit"),
    ("head", "l2", {"pca_fit": 5}, "l2: pca_fit"),
    ("head", "l2", {"pca_layer": ""}, "l2: pca_layer"),
    ("head", "l2", {"exclude_self": "maybe"}, "l2: exclude_self"),
    # -- data sets
    ("dataset", "imagefolder", {"train_per_class": "abc"}, "imagefolder: train_per_class"),
    ("dataset", "imagefolder", {"train_per_class": 0}, "imagefolder: train_per_class"),
    ("dataset", "imagefolder", {"train_per_class": -1}, "imagefolder: train_per_class"),
    ("dataset", "imagefolder", {"train_per_class": 2.5}, "imagefolder: train_per_class"),
    ("dataset", "imagefolder", {"test_per_class": 0}, "imagefolder: test_per_class"),
    ("dataset", "imagefolder", {"test_per_class": -2}, "imagefolder: test_per_class"),
    ("dataset", "imagefolder", {"test_per_class": "rest"}, "imagefolder: test_per_class"),
    ("dataset", "imagefolder", {"seeds": "x"}, "imagefolder: seeds"),
    ("dataset", "imagefolder", {"seeds": []}, "imagefolder: seeds"),
    ("dataset", "imagefolder", {"seeds": [0, 0]}, "imagefolder: seeds"),
    ("dataset", "imagefolder", {"seeds": [-1]}, "imagefolder: seeds[0]"),
    ("dataset", "imagefolder", {"seeds": {"a": 1}}, "imagefolder: seeds"),
    ("dataset", "imagefolder", {"name": "a/b"}, "imagefolder: name"),
    ("dataset", "imagefolder", {"name": 5}, "imagefolder: name"),
    ("dataset", "caltech101", {"train_per_class": "abc"}, "caltech101: train_per_class"),
    ("dataset", "caltech101", {"test_per_class": 0}, "caltech101: test_per_class"),
    ("dataset", "caltech101", {"seeds": []}, "caltech101: seeds"),
    ("dataset", "caltech101", {"background": "yes"}, "caltech101: background"),
    ("dataset", "flowers17", {"seeds": "x"}, "flowers17: seeds"),
    ("dataset", "flowers17", {"seeds": []}, "flowers17: seeds"),
    ("dataset", "flowers17", {"train_on": "val"}, "flowers17: train_on"),
    ("dataset", "flowers102", {"train_on": "all"}, "flowers102: train_on"),
    ("dataset", "digits", {"seed": "x"}, "digits: seed"),
    ("dataset", "digits", {"seed": -1}, "digits: seed"),
    ("dataset", "digits", {"test_fraction": 0}, "digits: test_fraction"),
    ("dataset", "digits", {"test_fraction": 1}, "digits: test_fraction"),
    ("dataset", "digits", {"test_fraction": 1.5}, "digits: test_fraction"),
    ("dataset", "digits", {"test_fraction": -0.1}, "digits: test_fraction"),
    ("dataset", "digits", {"test_fraction": "half"}, "digits: test_fraction"),
    ("dataset", "digits", {"test_fraction": 0.001}, "digits: test_fraction"),  # 2 test images for 10 classes
    ("dataset", "cub200", {"use_boxes": "maybe"}, "cub200: use_boxes"),
    ("dataset", "h3d-attributes", {"use_boxes": "no"}, "h3d-attributes: use_boxes"),
    ("dataset", "oxford5k-subset", {"query_image": "ignore"}, "oxford5k-subset: query_image"),
    ("dataset", "uiuc-attributes", {"test_set": "voc"}, "uiuc-attributes: test_set"),
    ("dataset", "uiuc-attributes", {"use_boxes": 2}, "uiuc-attributes: use_boxes"),
    # -- keys nobody reads (typos)
    ("head", "svm", {"Cee": 1}, "svm: unknown key 'Cee'"),
    ("head", "l2", {"pca_dims": 8}, "l2: unknown key 'pca_dims' (did you mean 'pca_dim'?)"),
    ("dataset", "imagefolder", {"trian_per_class": 3}, "did you mean 'train_per_class'"),
    ("dataset", "voc2007", {"bogus": 1}, "voc2007: unknown key 'bogus'"),
    ("dataset", "scene15", {"bogus": 1}, "scene15: unknown key 'bogus'"),
    ("dataset", "paris6k", {"bogus": 1}, "paris6k: unknown key 'bogus'"),
    ("dataset", "holidays", {"bogus": 1}, "holidays: unknown key 'bogus'"),
]


@pytest.mark.parametrize("kind, name, opts, where", BAD_OPTIONS,
                         ids=[f"{n}-{'-'.join(f'{k}={v!r}' for k, v in o.items())}" for _, n, o, _ in BAD_OPTIONS])
def test_bad_option_is_one_user_error_naming_it(kind, name, opts, where):
    with pytest.raises(UserError) as err:
        if "name" in opts:  # create()'s own ``name`` parameter would clash with the option; call the factory
            plugins.lookup(kind, name)[0].factory(**opts)
        else:
            plugins.create(kind, name, **opts)
    msg = str(err.value)
    assert where in msg and "\n" not in msg, msg
    assert "expected" in msg or "known keys" in msg, msg  # says what is allowed


@pytest.mark.parametrize("kind, name, opts", [
    ("head", "svm", {"C": 0.2}), ("head", "svm", {"C": "2"}), ("head", "svm", {"C": 1, "C_grid": []}),
    ("head", "svm", {"C_grid": 0.5, "cv_folds": 2}), ("head", "svm", {"power": 2, "class_weight": None}),
    ("head", "svm", {"device": "cuda", "solver": "liblinear"}),  # the device is unused by liblinear
    ("head", "l2", {"pca_dim": None, "levels": None}), ("head", "l2", {"pca_dim": "8", "levels": [2, 2]}),
    ("head", "l2", {"pca_fit": "features/x/paris6k/database.h5", "exclude_self": True}),
    ("dataset", "imagefolder", {"train_per_class": "5", "test_per_class": -1, "seeds": 3}),
    ("dataset", "caltech101", {"test_per_class": -1, "background": 1}),
    ("dataset", "digits", {"test_fraction": 0.25, "seed": 3}),
])
def test_good_options_still_build(kind, name, opts):
    plugins.create(kind, name, **opts)


@pytest.mark.parametrize("name", ["svm", "logreg", "knn"])
def test_device_auto_takes_a_gpu_when_there_is_one_and_records_the_one_it_took(name):
    import torch

    head = plugins.create("head", name, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert head.device == expected and head.params["device"] == expected


def test_typed_values_are_recorded():
    head = plugins.create("head", "svm", C="2", cv_folds=3.0)
    assert head.C == 2.0 and head.cv_folds == 3 and head.params["C"] == 2.0
    ds = plugins.create("dataset", "imagefolder", train_per_class="5", seeds=3)
    assert ds.train_per_class == 5 and ds.seeds == [3]


# -- errors at evaluation time that stem from the data or the options ------------------------------------


def _fs(counts, dim=6, seed=0, classes=None):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.standard_normal((len(y), dim)).astype(np.float32) + y[:, None]
    return FeatureSet(x, y, np.array([f"i{k}" for k in range(len(y))], dtype=object),
                      classes or [f"c{k}" for k in range(len(counts))])


def test_svm_cross_validation_on_a_too_small_class_names_it():
    train = _fs([5, 1, 5], classes=["cat", "dog", "eel"])
    with pytest.raises(UserError, match=r"class 'dog' has 1 .*cv_folds.*set a fixed C"):
        plugins.create("head", "svm", C_grid=[1.0]).evaluate(train, train, "multiclass")
    # with a fixed C there is no cross-validation, and the same data are fine
    assert "accuracy" in plugins.create("head", "svm", C=1.0).evaluate(train, train, "multiclass")


def test_svm_multilabel_cross_validation_needs_as_many_images_as_folds():
    rng = np.random.default_rng(0)
    y = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8)
    fs = FeatureSet(rng.standard_normal((3, 4)).astype(np.float32), y, np.array(list("abc"), dtype=object), ["p", "q"])
    with pytest.raises(UserError, match="cv_folds"):
        plugins.create("head", "svm", cv_folds=5).evaluate(fs, fs, "multilabel", metric="mAP")


def test_heads_refuse_the_wrong_kind_of_data_set_and_one_class_training():
    fs = _fs([4, 4])
    with pytest.raises(UserError, match="svm.*retrieval.*l2"):
        plugins.create("head", "svm", C=1.0).evaluate(fs, fs, "retrieval")
    with pytest.raises(UserError, match="l2.*multilabel.*svm"):
        plugins.create("head", "l2").evaluate(fs, fs, "multilabel")
    one = _fs([6], classes=["only"])
    with pytest.raises(UserError, match="'only'"):
        plugins.create("head", "svm", C=1.0).evaluate(one, one, "multiclass")


def test_l2_a_bad_faiss_index_is_a_user_error():
    flat = _fs([5, 5], dim=8)
    pytest.importorskip("faiss")
    with pytest.raises(UserError, match="faiss_index: 'NoSuchIndex'"):
        plugins.create("head", "l2", index="faiss", faiss_index="NoSuchIndex").evaluate(flat, flat, "multiclass")


def test_split_helper_names_the_class_and_says_what_to_do():
    labels = np.array([0] * 5 + [1] * 2)
    with pytest.raises(UserError, match=r"class 'tulip' has 2 images, fewer than the 3 .*lower train_per_class"):
        seeded_per_class_split(labels, [3, -1], 0, class_names=["rose", "tulip"], hint="lower train_per_class")
    with pytest.raises(UserError, match=r"class 1 has 2 images, fewer than the 3"):
        seeded_per_class_split(labels, [3, -1], 0)
    with pytest.raises(UserError, match=r"class 'tulip' has 2 images; the protocol needs more than 2"):
        seeded_per_class_split(labels, [2, 50], 0, last_at_most=True, class_names=["rose", "tulip"])


def test_annotation_error_prints_as_one_line():
    from cnnbench_plugins.datasets._common import AnnotationError, bad_line

    err = bad_line(Path("x/labels.txt"), 3, "a b c", "'<image> x y w h'")
    assert isinstance(err, AnnotationError) and isinstance(err, CnnbenchError) and isinstance(err, ValueError)
    assert "x/labels.txt, line 3" in str(err)


# -- image folders --------------------------------------------------------------------------------------


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            write_image(root / name / f"{k}.png", seed=10 * c + k, size=(8, 8))
    return root


def _imagefolder(root: Path, **opts):
    return plugins.create("dataset", "imagefolder", path=root, **opts)


def test_unreadable_class_folder_is_named(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    locked = root / "b"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that read a chmod 000 folder anyway (root)")
        with pytest.raises(UserError, match=re.escape(str(locked)) + ".*permission denied"):
            _imagefolder(root, train_per_class=1).items("all")
    finally:
        locked.chmod(0o755)


def test_unreadable_folder_is_named_even_as_root(tmp_path, monkeypatch):
    """The same path without relying on file permissions (which root ignores)."""
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    real = Path.iterdir

    def iterdir(self):
        if self == root / "b":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(UserError, match=re.escape(str(root / "b")) + ".*permission denied"):
        _imagefolder(root, train_per_class=1).items("all")


def test_test_class_missing_from_train_names_class_folder_and_training_classes(tmp_path):
    _folder(tmp_path / "train", {"a": 2, "b": 2})
    _folder(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(UserError) as err:
        _imagefolder(tmp_path).items("test")
    msg = str(err.value)
    assert "'c'" in msg and str(tmp_path / "test" / "c") in msg and "a, b" in msg, msg


def test_class_smaller_than_train_per_class_names_class_count_and_option(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 4, "b": 1, "c": 4})
    with pytest.raises(UserError, match=r"class 'b' has 1 image\(s\).*train_per_class: 2"):
        _imagefolder(root, train_per_class=2).items("all")
    with pytest.raises(UserError, match=r"class 'a' has 4 image\(s\).*train_per_class \+ test_per_class: 3 \+ 2"):
        _imagefolder(_folder(tmp_path / "other", {"a": 4, "b": 6}), train_per_class=3, test_per_class=2).items("all")


def test_class_too_small_after_extraction_skips_is_named_at_trial_time(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    ds = _imagefolder(root, train_per_class=2, seeds=[0])
    assert len(ds.items("all")) == 6
    labels = np.array([0, 0, 0, 1])  # two of b's images were unreadable and skipped
    with pytest.raises(UserError, match=r"class 'b' has 1 images.*lower train_per_class \(now 2\)"):
        ds.trials({"all": labels})


@pytest.mark.parametrize("layout", ["empty", "loose images", "empty class folders", "empty test classes"])
def test_empty_image_folders_are_refused(tmp_path, layout):
    root = tmp_path / "imgs"
    root.mkdir()
    split = "all"
    if layout == "loose images":
        write_image(root / "x.png", 0, size=(8, 8))
    elif layout == "empty class folders":
        (root / "a").mkdir()
        (root / "b").mkdir()
    elif layout == "empty test classes":
        _folder(root / "train", {"a": 2, "b": 2})
        (root / "test" / "a").mkdir(parents=True)
        split = "test"
    with pytest.raises(UserError, match="no images found under " + re.escape(str(root))):
        _imagefolder(root, train_per_class=1).items(split)


def test_empty_training_class_of_a_fixed_split_is_refused(tmp_path):
    _folder(tmp_path / "train", {"a": 2, "b": 0})
    _folder(tmp_path / "test", {"a": 1, "b": 1})
    with pytest.raises(UserError, match=r"class 'b' has no training images"):
        _imagefolder(tmp_path).items("train")


def test_valid_image_folder_is_unchanged(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 4})
    ds = _imagefolder(root, train_per_class=2, seeds=[0, 1])
    items = ds.items("all")
    assert [i.id for i in items][:3] == ["a/0.png", "a/1.png", "a/2.png"] and ds.classes == ["a", "b"]
    trials = ds.trials({"all": np.array([i.label for i in items])})
    assert [t.name for t in trials] == ["seed0", "seed1"] and all(len(t.train["all"]) == 4 for t in trials)


def test_retrieval_folder_without_images_is_refused(tmp_path):
    (tmp_path / "holidays" / "jpg").mkdir(parents=True)
    with pytest.raises(UserError, match="holidays: no images found under"):
        plugins.create("dataset", "holidays", data_root=tmp_path).items("all")


def test_recursive_image_search_names_an_unreadable_sub_folder(tmp_path, monkeypatch):
    """Paris6k's landmark sub-folders: a recursive walk must not skip an unreadable one silently."""
    from cnnbench_plugins.datasets._common import images_under

    write_image(tmp_path / "jpg" / "paris" / "louvre" / "paris_louvre_000000.jpg", 0, size=(8, 8))
    write_image(tmp_path / "jpg" / "paris" / "defense" / "paris_defense_000000.jpg", 1, size=(8, 8))
    assert len(images_under(tmp_path / "jpg", recursive=True)) == 2
    locked = tmp_path / "jpg" / "paris" / "defense"
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UserError, match=re.escape(str(locked)) + ".*Permission denied"):
        images_under(tmp_path / "jpg", recursive=True)


def test_oxford_style_database_without_images_is_refused(tmp_path):
    root = tmp_path / "paris6k"
    (root / "jpg" / "paris").mkdir(parents=True)
    (root / "gt").mkdir()
    with pytest.raises(UserError, match="paris6k: no images found under " + re.escape(str(root / "jpg"))):
        plugins.create("dataset", "paris6k", data_root=tmp_path).items("database")
