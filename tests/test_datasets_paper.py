"""The paper's data sets, each read from a small fixture written in its official layout and format.

Every test reads like the protocol it checks: which images form each split, what each label row
means, which box an item carries, and which ids a query's ground truth lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnbench import plugins, store
from cnnbench.errors import MissingDataError
from cnnbench.settings import ExtractSettings
from conftest import write_image

PAPER_SETS = ["voc2007", "mit67", "cub200", "flowers102", "uiuc-attributes", "h3d-attributes", "oxford5k",
              "paris6k", "sculptures6k", "holidays", "ukbench", "caltech101", "oxford5k-subset"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _touch_image(path: Path, seed: int = 0) -> Path:
    return write_image(path, seed, size=(48, 40))


def _labels(items) -> np.ndarray:
    return np.array([i.label for i in items])


# -- every data set ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_SETS)
def test_every_paper_data_set_is_registered_and_names_what_is_missing(tmp_path, name):
    ds = plugins.create("dataset", name, data_root=tmp_path)
    assert ds.task in ("multiclass", "multilabel", "retrieval") and ds.metric and ds.folder and ds.url and ds.layout
    assert ds.root == tmp_path / ds.folder
    assert not ds.present()
    with pytest.raises(MissingDataError) as err:
        ds.check()
    msg = str(err.value)
    assert repr(name) in msg and str(ds.root) in msg and ds.layout.splitlines()[0].strip()[:20] in msg


def test_each_data_set_reports_the_metric_the_paper_uses():
    metric = {name: plugins.create("dataset", name).metric for name in PAPER_SETS}
    assert metric == {
        "voc2007": "mAP", "mit67": "mean_class_accuracy", "cub200": "accuracy", "flowers102": "mean_class_accuracy",
        "uiuc-attributes": "mean_auc", "h3d-attributes": "mAP", "oxford5k": "mAP", "paris6k": "mAP",
        "sculptures6k": "mAP", "holidays": "mAP", "ukbench": "top4", "caltech101": "mean_class_accuracy",
        "oxford5k-subset": "mAP",
    }


def test_pinned_hashes_are_sha256_and_unpinned_ones_are_none():
    for name in PAPER_SETS:
        for d in plugins.create("dataset", name).downloads:
            assert d.url.startswith(("http://", "https://", "ftp://")) and d.name
            assert d.sha256 is None or (len(d.sha256) == 64 and int(d.sha256, 16) >= 0)


# -- PASCAL VOC 2007 -----------------------------------------------------------------------------------


def _voc_xml(objects: list[tuple[str, int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
        for n, d in objects
    )
    return (f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>"
            f"<size><width>48</width><height>40</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


@pytest.fixture
def voc_root(tmp_path) -> Path:
    voc = tmp_path / "voc2007" / "VOCdevkit" / "VOC2007"
    annotations = {
        "000005": [("chair", 0), ("chair", 1)],
        "000007": [("car", 0)],
        "000009": [("horse", 0), ("person", 0), ("person", 1)],
        "000001": [("dog", 0), ("person", 0)],
        "000002": [("train", 0)],
        "000004": [("car", 1), ("car", 1)],
    }
    for i, objs in annotations.items():
        _write(voc / "Annotations" / f"{i}.xml", _voc_xml(objs))
        _touch_image(voc / "JPEGImages" / f"{i}.jpg", int(i))
    _write(voc / "ImageSets" / "Main" / "trainval.txt", "000009\n000005\n000007\n")
    _write(voc / "ImageSets" / "Main" / "test.txt", "000001\n000002\n000004\n")
    return tmp_path


def test_voc2007_labels_mark_present_absent_and_difficult_only(voc_root):
    ds = plugins.create("dataset", "voc2007", data_root=voc_root)
    assert ds.task == "multilabel" and len(ds.classes) == 20 and ds.splits == ("trainval", "test")
    trainval = ds.items("trainval")
    assert [i.id for i in trainval] == ["000005", "000007", "000009"]  # sorted, from ImageSets/Main
    c = {n: k for k, n in enumerate(ds.classes)}
    rows = {i.id: i.label for i in trainval}
    assert rows["000005"][c["chair"]] == 1  # one clear chair beats a difficult one
    assert rows["000009"][c["person"]] == 1 and rows["000009"][c["horse"]] == 1
    assert sum(v != 0 for v in rows["000009"]) == 2
    test = {i.id: i.label for i in ds.items("test")}
    assert test["000004"][c["car"]] == -1, "only difficult cars: ignored by the metric"
    assert test["000004"].count(0) == 19 and test["000002"][c["train"]] == 1
    assert all(i.box is None and Path(i.image).name == f"{i.id}.jpg" for i in trainval)
    assert [t.name for t in ds.trials({})] == ["default"] and ds.trials({})[0].test == {"test": None}


def test_voc2007_reports_a_missing_annotation_by_file(voc_root):
    (voc_root / "voc2007/VOCdevkit/VOC2007/Annotations/000007.xml").unlink()
    with pytest.raises(ValueError, match=r"000007\.xml"):
        plugins.create("dataset", "voc2007", data_root=voc_root).items("trainval")


def test_multilabel_rows_and_ground_truth_reach_the_hdf5_files(voc_root, tmp_path, tiny):
    from cnnbench.extract import extract_split

    ds = plugins.create("dataset", "voc2007", data_root=voc_root)
    extract_split(tiny, ds, "test", tmp_path / "f" / "test.h5", ExtractSettings(workers=1), progress=False)
    fs = store.read(tmp_path / "f" / "test.h5")
    assert fs.labels.shape == (3, 20) and fs.labels.dtype == np.int8
    assert fs.labels[list(fs.ids).index("000004"), ds.classes.index("car")] == -1
    assert fs.classes == ds.classes


def test_retrieval_ground_truth_reaches_the_hdf5_file(oxford_root, tmp_path, tiny):
    from cnnbench.extract import extract_split

    for name in ("all_souls_000013", "radcliffe_camera_000519"):  # full-size query images, so the boxes fit
        write_image(oxford_root / "oxford5k" / "jpg" / f"{name}.jpg", 1, size=(700, 960))
    ds = plugins.create("dataset", "oxford5k", data_root=oxford_root)
    extract_split(tiny, ds, "queries", tmp_path / "f" / "queries.h5", ExtractSettings(workers=1), progress=False)
    fs = store.read(tmp_path / "f" / "queries.h5")
    assert list(fs.ids) == ["all_souls_1", "radcliffe_camera_1"]
    assert fs.extras["ground_truth"]["all_souls_1"] == {"positives": ["all_souls_000013", "all_souls_000026", "oxford_000317"],
                                                         "junk": ["all_souls_000051"]}


# -- MIT Indoor 67 ------------------------------------------------------------------------------------


def test_mit67_uses_the_official_train_and_test_lists(tmp_path):
    root = tmp_path / "mit67"
    for rel in ("kitchen/int474.jpg", "kitchen/k2.jpg", "bakery/bakery_1.jpg", "bakery/b2.jpg", "airport_inside/a.jpg",
                "airport_inside/b.jpg"):
        _touch_image(root / "Images" / rel)
    _write(root / "TrainImages.txt", "kitchen/int474.jpg\r\nbakery/bakery_1.jpg\r\nairport_inside/a.jpg\r\n")
    _write(root / "TestImages.txt", "kitchen/k2.jpg\nbakery/b2.jpg\nairport_inside/b.jpg\n")
    ds = plugins.create("dataset", "mit67", data_root=tmp_path)
    assert ds.classes == ["airport_inside", "bakery", "kitchen"]
    train, test = ds.items("train"), ds.items("test")
    assert [(i.id, i.label) for i in train] == [("airport_inside/a.jpg", 0), ("bakery/bakery_1.jpg", 1), ("kitchen/int474.jpg", 2)]
    assert [(i.id, i.label) for i in test] == [("airport_inside/b.jpg", 0), ("bakery/b2.jpg", 1), ("kitchen/k2.jpg", 2)]
    assert Path(test[1].image) == root / "Images" / "bakery" / "b2.jpg"


# -- CUB-200-2011 ---------------------------------------------------------------------------------------


def test_cub200_split_labels_and_boxes_from_the_official_files(tmp_path):
    base = tmp_path / "cub200" / "CUB_200_2011"
    names = {1: "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
             2: "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
             3: "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"}
    _write(base / "images.txt", "".join(f"{k} {v}\n" for k, v in names.items()))
    _write(base / "image_class_labels.txt", "1 1\n2 1\n3 2\n")
    _write(base / "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    _write(base / "train_test_split.txt", "1 0\n2 1\n3 1\n")
    _write(base / "bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 139.0 30.0 153.0 264.0\n3 14.0 112.0 388.0 186.0\n")
    (base / "images").mkdir()
    ds = plugins.create("dataset", "cub200", data_root=tmp_path)
    assert ds.classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    train, test = ds.items("train"), ds.items("test")
    assert [i.id for i in train] == [names[2], names[3]] and [i.label for i in train] == [0, 1]
    assert [i.id for i in test] == [names[1]]
    assert test[0].box == (60.0, 27.0, 385.0, 331.0), "x, y, w, h -> x1, y1, x1 + w, y1 + h"
    assert Path(test[0].image) == base / "images" / names[1]
    assert plugins.create("dataset", "cub200", data_root=tmp_path, use_boxes=False).items("test")[0].box is None


# -- Oxford Flowers 102 -----------------------------------------------------------------------------------


def test_flowers102_reads_the_official_mat_files(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "flowers102"
    (root / "jpg").mkdir(parents=True)
    labels = np.array([[77, 77, 1, 1, 102, 102, 5, 5]], dtype=np.uint8)  # as distributed: a 1 x N row, classes 1..102
    savemat(root / "imagelabels.mat", {"labels": labels})
    savemat(root / "setid.mat", {"trnid": np.array([[3, 1]], dtype=np.uint16), "valid": np.array([[2, 4]], dtype=np.uint16),
                                 "tstid": np.array([[8, 5, 6, 7]], dtype=np.uint16)})
    ds = plugins.create("dataset", "flowers102", data_root=tmp_path)
    assert len(ds.classes) == 102 and ds.splits == ("train", "val", "test")
    train = ds.items("train")
    assert [(i.id, i.label) for i in train] == [("image_00001", 76), ("image_00003", 0)]
    assert Path(train[0].image) == root / "jpg" / "image_00001.jpg"
    assert [i.id for i in ds.items("val")] == ["image_00002", "image_00004"]
    assert [i.label for i in ds.items("test")] == [101, 101, 4, 4]
    assert ds.trials({})[0].train == {"train": None, "val": None}
    assert plugins.create("dataset", "flowers102", data_root=tmp_path, train_on="train").trials({})[0].train == {"train": None}


# -- UIUC attributes (aPascal / aYahoo) --------------------------------------------------------------------


def _attr_line(image: str, cls: str, box, ones) -> str:
    values = ["1" if k in ones else "0" for k in range(64)]
    return " ".join([image, cls, *(str(v) for v in box), *values]) + "\n"


@pytest.fixture
def uiuc_root(tmp_path) -> Path:
    root = tmp_path / "uiuc-attributes"
    data = root / "attribute_data"
    _write(data / "attribute_names.txt", "".join(f"attr{k}\n" for k in range(64)))
    _write(data / "apascal_train.txt",
           _attr_line("2008_000008.jpg", "horse", (53, 87, 471, 420), {0, 5}) +
           _attr_line("2008_000008.jpg", "person", (158, 44, 289, 167), {1}) +
           _attr_line("2008_000015.jpg", "bottle", (209, 1, 328, 369), set()))
    _write(data / "apascal_test.txt", _attr_line("2008_000009.jpg", "cow", (1, 2, 3, 4), {63}))
    _write(data / "ayahoo_test.txt", _attr_line("donkey_100.jpg", "donkey", (5, 6, 70, 80), {2, 3}))
    (root / "VOCdevkit" / "VOC2008" / "JPEGImages").mkdir(parents=True)
    (root / "ayahoo_test_images").mkdir()
    return tmp_path


def test_uiuc_attributes_one_item_per_object_with_its_box_and_64_attributes(uiuc_root):
    ds = plugins.create("dataset", "uiuc-attributes", data_root=uiuc_root)
    assert ds.task == "multilabel" and ds.classes == [f"attr{k}" for k in range(64)]
    train = ds.items("train")
    assert [i.id for i in train] == ["2008_000008.jpg#1", "2008_000008.jpg#2", "2008_000015.jpg#1"]
    assert train[0].box == (53.0, 87.0, 471.0, 420.0) and train[1].box == (158.0, 44.0, 289.0, 167.0)
    assert len(train[0].label) == 64 and [k for k, v in enumerate(train[0].label) if v] == [0, 5]
    assert sum(train[2].label) == 0
    assert Path(train[0].image) == uiuc_root / "uiuc-attributes/VOCdevkit/VOC2008/JPEGImages/2008_000008.jpg"
    assert ds.items("test")[0].label[63] == 1
    yahoo = plugins.create("dataset", "uiuc-attributes", data_root=uiuc_root, test_set="ayahoo").items("test")
    assert [i.id for i in yahoo] == ["donkey_100.jpg#1"] and Path(yahoo[0].image).parent.name == "ayahoo_test_images"


def test_uiuc_attributes_a_malformed_line_names_file_and_line(uiuc_root):
    path = uiuc_root / "uiuc-attributes/attribute_data/apascal_test.txt"
    path.write_text(path.read_text() + "2008_000010.jpg cat 1 2 3\n")
    with pytest.raises(ValueError, match=r"apascal_test\.txt, line 2"):
        plugins.create("dataset", "uiuc-attributes", data_root=uiuc_root).items("test")


# -- H3D / poselets attributes ------------------------------------------------------------------------------


def test_h3d_attributes_map_yes_no_unspecified_and_person_boxes(tmp_path):
    root = tmp_path / "h3d-attributes"
    _write(root / "train" / "labels.txt",
           "0001.jpg 10 20 30 40 1 -1 0 -1 1 -1 -1 1 1\n"
           "0002.jpg NaN NaN NaN NaN -1 1 -1 0 0 0 0 0 0\n")
    _write(root / "test" / "labels.txt", "0005.jpg 1.5 2.5 10 20 0 0 0 0 0 0 0 0 1\n")
    ds = plugins.create("dataset", "h3d-attributes", data_root=tmp_path)
    assert ds.classes[0] == "is_male" and len(ds.classes) == 9
    train = ds.items("train")
    assert [i.id for i in train] == ["train/0001.jpg", "train/0002.jpg"]
    assert train[0].label == (1, 0, -1, 0, 1, 0, 0, 1, 1), "1 yes -> 1, -1 no -> 0, 0 unspecified -> -1 (ignored)"
    assert train[0].box == (10.0, 20.0, 40.0, 60.0), "x, y, w, h -> x1, y1, x2, y2"
    assert train[1].box is None, "NaN box: the whole image"
    test = ds.items("test")
    assert test[0].box == (1.5, 2.5, 11.5, 22.5) and test[0].label[-1] == 1
    assert Path(test[0].image) == root / "test" / "0005.jpg"


# -- Oxford5k / Paris6k / Sculptures6k ------------------------------------------------------------------------


def _oxford_gt(gt: Path, query: str, line: str, good, ok, junk) -> None:
    _write(gt / f"{query}_query.txt", line + "\n")
    for kind, names in (("good", good), ("ok", ok), ("junk", junk)):
        _write(gt / f"{query}_{kind}.txt", "".join(f"{n}\n" for n in names))


@pytest.fixture
def oxford_root(tmp_path) -> Path:
    root = tmp_path / "oxford5k"
    for k, name in enumerate(["all_souls_000013", "all_souls_000026", "all_souls_000051", "oxford_000317",
                              "radcliffe_camera_000519", "radcliffe_camera_000031", "magdalen_000078"]):
        _touch_image(root / "jpg" / f"{name}.jpg", k)
    _oxford_gt(root / "gt", "all_souls_1", "oxc1_all_souls_000013 136.5 34.1 648.5 955.7",
               good=["all_souls_000013", "all_souls_000026"], ok=["oxford_000317"], junk=["all_souls_000051"])
    _oxford_gt(root / "gt", "radcliffe_camera_1", "oxc1_radcliffe_camera_000519 212.0 53.0 640.0 830.0",
               good=[], ok=["radcliffe_camera_000031"], junk=[])
    return tmp_path


def test_oxford5k_database_queries_with_boxes_and_good_ok_positives(oxford_root):
    ds = plugins.create("dataset", "oxford5k", data_root=oxford_root)
    assert ds.splits == ("database", "queries") and ds.task == "retrieval"
    db = ds.items("database")
    assert [i.id for i in db] == sorted(i.id for i in db) and len(db) == 7
    queries = ds.items("queries")
    assert [q.id for q in queries] == ["all_souls_1", "radcliffe_camera_1"]
    assert queries[0].box == (136.5, 34.1, 648.5, 955.7)
    assert Path(queries[0].image).name == "all_souls_000013.jpg", "the oxc1_ prefix is not part of the file name"
    gt = ds.extras("queries")["ground_truth"]
    assert gt["all_souls_1"] == {"positives": ["all_souls_000013", "all_souls_000026", "oxford_000317"],
                                 "junk": ["all_souls_000051"]}
    assert gt["radcliffe_camera_1"]["positives"] == ["radcliffe_camera_000031"]
    assert ds.extras("database") == {}
    (trial,) = ds.trials({"database": np.full(7, -1), "queries": np.full(2, -1)})
    assert trial.train == {"database": None} and trial.test == {"queries": None}


def test_a_query_on_an_image_not_in_the_database_is_an_error(oxford_root):
    (oxford_root / "oxford5k/jpg/radcliffe_camera_000519.jpg").unlink()
    with pytest.raises(ValueError, match="radcliffe_camera_000519"):
        plugins.create("dataset", "oxford5k", data_root=oxford_root).items("queries")


def test_paris6k_finds_images_in_landmark_subfolders(tmp_path):
    root = tmp_path / "paris6k"
    for name in ("paris_defense_000605", "paris_defense_000041", "paris_eiffel_000000"):
        landmark = name.split("_")[1]
        _touch_image(root / "jpg" / "paris" / landmark / f"{name}.jpg")
    _oxford_gt(root / "gt", "defense_1", "paris_defense_000605 6.0 190.0 1018.0 674.0",
               good=["paris_defense_000041"], ok=[], junk=["paris_eiffel_000000"])
    ds = plugins.create("dataset", "paris6k", data_root=tmp_path)
    assert [i.id for i in ds.items("database")] == ["paris_defense_000041", "paris_defense_000605", "paris_eiffel_000000"]
    (q,) = ds.items("queries")
    assert q.id == "defense_1" and q.box == (6.0, 190.0, 1018.0, 674.0) and Path(q.image).name == "paris_defense_000605.jpg"
    assert ds.extras("queries")["ground_truth"]["defense_1"] == {"positives": ["paris_defense_000041"], "junk": ["paris_eiffel_000000"]}


def test_sculptures6k_reads_oxford_style_ground_truth(tmp_path):
    root = tmp_path / "sculptures6k"
    for name in ("moore_00001", "moore_00002", "moore_00003"):
        _touch_image(root / "jpg" / f"{name}.jpg")
    _oxford_gt(root / "gt", "king_and_queen_1", "moore_00001 1 2 30 40", good=["moore_00002"], ok=["moore_00003"], junk=[])
    ds = plugins.create("dataset", "sculptures6k", data_root=tmp_path)
    assert ds.extras("queries")["ground_truth"]["king_and_queen_1"]["positives"] == ["moore_00002", "moore_00003"]


# -- Holidays / UKBench --------------------------------------------------------------------------------------


def test_holidays_groups_by_file_name_and_excludes_each_query_from_its_results(tmp_path):
    root = tmp_path / "holidays"
    for name in ("100000", "100001", "100002", "100100", "100101", "100200"):
        (root / "jpg").mkdir(parents=True, exist_ok=True)
        (root / "jpg" / f"{name}.jpg").write_bytes(b"")
    ds = plugins.create("dataset", "holidays", data_root=tmp_path)
    assert ds.splits == ("all",)
    items = ds.items("all")
    assert [(i.id, i.label) for i in items] == [("100000", 1), ("100001", 0), ("100002", 0), ("100100", 1),
                                               ("100101", 0), ("100200", 1)]
    extras = ds.extras("all")
    assert extras["exclude_self"] is True and extras["queries"] == ["100000", "100100", "100200"]
    assert extras["ground_truth"]["100000"] == {"positives": ["100001", "100002"], "junk": []}
    assert extras["ground_truth"]["100200"]["positives"] == []
    (trial,) = ds.trials({"all": _labels(items)})
    assert trial.train == {"all": None} and list(trial.test["all"]) == [0, 3, 5]


def test_holidays_refuses_a_group_without_its_query_image(tmp_path):
    (tmp_path / "holidays" / "jpg").mkdir(parents=True)
    (tmp_path / "holidays" / "jpg" / "100301.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="100300.jpg"):
        plugins.create("dataset", "holidays", data_root=tmp_path).items("all")


def test_ukbench_groups_of_four_and_every_image_is_a_query(tmp_path):
    full = tmp_path / "ukbench" / "full"
    full.mkdir(parents=True)
    for k in range(8):
        (full / f"ukbench{k:05d}.jpg").write_bytes(b"")
    ds = plugins.create("dataset", "ukbench", data_root=tmp_path)
    items = ds.items("all")
    assert [i.label for i in items] == [0, 0, 0, 0, 1, 1, 1, 1]
    extras = ds.extras("all")
    assert extras["exclude_self"] is False and len(extras["queries"]) == 8
    assert extras["ground_truth"]["ukbench00005"]["positives"] == [f"ukbench0000{k}" for k in (4, 5, 6, 7)], \
        "top-4 counts the query itself"
    assert ds.trials({"all": _labels(items)})[0].test == {"all": None}


# -- Caltech-101 --------------------------------------------------------------------------------------------


def test_caltech101_30_train_up_to_50_test_seeded_with_optional_background(tmp_path):
    root = tmp_path / "caltech101" / "101_ObjectCategories"
    for cls, n in (("accordion", 55), ("Faces", 100), ("inline_skate", 31), ("BACKGROUND_Google", 40)):
        (root / cls).mkdir(parents=True)
        for k in range(1, n + 1):
            (root / cls / f"image_{k:04d}.jpg").write_bytes(b"")
    ds = plugins.create("dataset", "caltech101", data_root=tmp_path, seeds=[0, 1])
    assert ds.classes == ["Faces", "accordion", "inline_skate"]
    labels = _labels(ds.items("all"))
    assert len(labels) == 186
    t0, t1 = ds.trials({"all": labels})
    train, test = t0.train["all"], t0.test["all"]
    assert np.bincount(labels[train]).tolist() == [30, 30, 30]
    assert np.bincount(labels[test]).tolist() == [50, 25, 1], "up to 50 test images: the rest when fewer"
    assert not set(train) & set(test)
    assert not np.array_equal(train, t1.train["all"])
    again = plugins.create("dataset", "caltech101", data_root=tmp_path, seeds=[0]).trials({"all": labels})[0]
    assert np.array_equal(again.train["all"], train), "seeded: the same split every time"
    with_bg = plugins.create("dataset", "caltech101", data_root=tmp_path, background=True)
    assert "BACKGROUND_Google" in with_bg.classes and len(with_bg.items("all")) == 226


# -- oxford5k-subset (the real files) --------------------------------------------------------------------------


def test_oxford5k_subset_on_the_real_files(shared_data):
    ds = plugins.create("dataset", "oxford5k-subset", data_root=shared_data)
    db, queries = ds.items("database"), ds.items("queries")
    assert len(db) == 1008 and len(queries) == 10
    raw = {q["id"]: q for q in json.loads((shared_data / "oxford5k-subset" / "queries.json").read_text())}
    ids = {i.id for i in db}
    gt = ds.extras("queries")["ground_truth"]
    assert sorted(gt) == sorted(raw) == [q.id for q in queries]
    for q in queries:
        assert q.box == tuple(raw[q.id]["bbox"]) and Path(q.image).name == raw[q.id]["query"]
        assert gt[q.id]["positives"] and set(gt[q.id]["positives"]) <= ids and gt[q.id]["junk"] == []
        # as in the official Oxford gt, the query's own full image is a positive of its (cropped) query
        own = Path(raw[q.id]["query"]).stem
        assert gt[q.id]["positives"] == sorted({Path(n).stem for n in raw[q.id]["relevant"]} | {own})
