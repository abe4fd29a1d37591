"""Fault-injection findings on data-set layouts and annotation files: boxes that are not boxes, ids
given twice, two files taken for one image, classes without test images, and list files as editors
and other systems write them (BOM, CRLF, blank lines, Latin-1).

Each fixture is written in tmp_path in the data set's official format, with one entry broken the way
a careless edit, a broken copy or a hostile download would break it. Every fault is one line naming
the annotation file and the entry (a ``UserError``, which the command line prints without a
traceback). Entries that lead out of the data set are security faults: tests/test_security_faults.py,
case 3.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_datasets_paper import _touch_image as _image
from test_datasets_paper import _write
from test_revisited import DB, GND, QUERIES, write_revisitop

from cnnbench import plugins
from cnnbench.errors import UserError

XY = "0 0 20 16"  # a box inside every fixture image (48 x 40)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# -- small official layouts, one entry given by the test ----------------------------------------------------


def _voc2007(data, entry):
    voc = data / "voc2007" / "VOCdevkit" / "VOC2007"
    xml = "<annotation><object><name>dog</name><difficult>0</difficult></object></annotation>"
    for i in ("000001", "000002"):
        _write(voc / "Annotations" / f"{i}.xml", xml)
        _image(voc / "JPEGImages" / f"{i}.jpg")
    _write(voc / "ImageSets" / "Main" / "trainval.txt", f"000001\n{entry}\n")
    _write(voc / "ImageSets" / "Main" / "test.txt", "000002\n")
    return plugins.create("dataset", "voc2007", data_root=data), "trainval", voc / "ImageSets/Main/trainval.txt"


def _cub200(data, entry, box="0 0 20 16"):
    base = data / "cub200" / "CUB_200_2011"
    _image(base / "images" / "001.A" / "a.jpg")
    _write(base / "images.txt", f"1 001.A/a.jpg\n2 {entry}\n")
    _write(base / "image_class_labels.txt", "1 1\n2 1\n")
    _write(base / "classes.txt", "1 001.A\n")
    _write(base / "train_test_split.txt", "1 1\n2 1\n")
    _write(base / "bounding_boxes.txt", f"1 0 0 20 16\n2 {box}\n")
    return plugins.create("dataset", "cub200", data_root=data), "train", base / "images.txt"


def _mit67(data, entry):
    root = data / "mit67"
    for name in ("a", "b"):
        _image(root / "Images" / "cls" / f"{name}.jpg")
    _write(root / "TrainImages.txt", f"cls/a.jpg\n{entry}\n")
    _write(root / "TestImages.txt", "cls/b.jpg\n")
    return plugins.create("dataset", "mit67", data_root=data), "train", root / "TrainImages.txt"


def _uiuc(data, entry, box=XY):
    root = data / "uiuc-attributes"
    line = lambda image, b: f"{image} cat {b} " + " ".join(["1"] + ["0"] * 63) + "\n"  # noqa: E731
    _write(root / "attribute_data" / "attribute_names.txt", "".join(f"a{k}\n" for k in range(64)))
    for name in ("apascal_test.txt", "ayahoo_test.txt"):
        _write(root / "attribute_data" / name, line("2008_000002.jpg", XY))
    _write(root / "attribute_data" / "apascal_train.txt", line("2008_000001.jpg", XY) + line(entry, box))
    _image(root / "VOCdevkit" / "VOC2008" / "JPEGImages" / "2008_000001.jpg")
    (root / "ayahoo_test_images").mkdir()
    return (plugins.create("dataset", "uiuc-attributes", data_root=data), "train",
            root / "attribute_data" / "apascal_train.txt")


def _h3d(data, entry, box="0 0 20 16"):
    root = data / "h3d-attributes"
    values = " 1 -1 0 1 1 1 1 1 1\n"
    _image(root / "train" / "0001.jpg")
    _write(root / "train" / "labels.txt", f"0001.jpg {XY}{values}{entry} {box}{values}")
    _write(root / "test" / "labels.txt", f"0002.jpg {XY}{values}")
    return plugins.create("dataset", "h3d-attributes", data_root=data), "train", root / "train" / "labels.txt"


def _revisitop1m(data, entry):
    root = data / "revisitop1m"
    _image(root / "jpg" / "a.jpg")
    _write(root / "revisitop1m.txt", f"a.jpg\n{entry}\n")
    return plugins.create("dataset", "revisitop1m", data_root=data), "database", root / "revisitop1m.txt"


def _roxford5k(data, entry):
    write_revisitop(data)
    gnd = data / "roxford5k" / "gnd_roxford5k.pkl"
    imlist = list(DB)
    imlist[3] = entry
    gnd.write_bytes(pickle.dumps({"imlist": imlist, "qimlist": list(QUERIES), "gnd": GND}, protocol=2))
    return plugins.create("dataset", "roxford5k", data_root=data), "database", gnd


# name, builder, the folder its entries are relative to, and whether the plugin appends ".jpg" itself
LISTS = [
    ("roxford5k", _roxford5k, "roxford5k/jpg", True),
    ("revisitop1m", _revisitop1m, "revisitop1m/jpg", False),
    ("voc2007", _voc2007, "voc2007/VOCdevkit/VOC2007/JPEGImages", True),
    ("cub200", _cub200, "cub200/CUB_200_2011/images", False),
    ("mit67", _mit67, "mit67/Images", False),
    ("uiuc-attributes", _uiuc, "uiuc-attributes/VOCdevkit/VOC2008/JPEGImages", False),
    ("h3d-attributes", _h3d, "h3d-attributes/train", False),
]


# -- boxes and ids: one validator ------------------------------------------------------------------------


def _subset(data: Path, queries, images=("q.jpg", "r.jpg", "s.jpg")) -> Path:
    root = data / "oxford5k-subset"
    for k, name in enumerate(images):
        _image(root / "jpg" / name, k)
    _write(root / "queries.json", json.dumps(queries))
    return root / "queries.json"


def _query(qid="q1", query="q.jpg", bbox=(2.0, 3.0, 30.0, 20.0), relevant=("r.jpg",)):
    return {"id": qid, "query": query, "bbox": list(bbox) if isinstance(bbox, tuple) else bbox,
            "relevant": list(relevant) if isinstance(relevant, tuple) else relevant}


@pytest.mark.parametrize("queries, says", [
    ([_query("q1"), _query("q1", relevant=["s.jpg"])], r"the query id 'q1' is given twice \(query 1 and 2\)"),
    ([_query(bbox=(float("nan"), 3.0, 30.0, 20.0))], r"query 1 \('q1'\): bbox must be four numbers.*nan is not a finite"),
    ([_query(bbox=(30.0, 3.0, 2.0, 20.0))], r"bbox must be four numbers .*: the box is empty or inverted"),
    ([_query(bbox=(-5.0, 3.0, 2.0, 20.0))], r"none below 0.*starts outside the image"),
    ([_query(bbox=("a", 3, 30, 20))], r"bbox .*'a' is not a number"),
    ([_query(bbox=None)], r"bbox .*got None: not a list of four numbers"),
    ([_query(bbox=[1, 2, 3])], r"bbox .*: 3 values"),
    ([_query(bbox=[True, 2, 30, 20])], r"True is not a number"),
    ([3], r"query 1 is 3, not an object with id, query, bbox and relevant"),
    ([_query(qid=7)], r"query 1: the query id 7 is not a name"),
    ([_query(relevant="r.jpg")], r"relevant must be a list of file names"),
    ([_query(query="../jpg/q.jpg")], r"'\.\./jpg/q\.jpg' is not a file name in jpg/"),
])
def test_oxford5k_subset_refuses_each_broken_query_in_one_line(tmp_path, queries, says):
    path = _subset(tmp_path, queries)
    with pytest.raises(UserError, match=says) as err:
        plugins.create("dataset", "oxford5k-subset", data_root=tmp_path).items("queries")
    assert _one_line(err).startswith(str(path))


def test_two_files_for_one_image_id_are_refused_not_one_silently_dropped(tmp_path):
    _subset(tmp_path, [_query()], images=("q.jpg", "r.jpg", "r.png"))
    with pytest.raises(UserError, match=r"two images have the id 'r': .*r\.jpg and .*r\.png") as err:
        plugins.create("dataset", "oxford5k-subset", data_root=tmp_path).items("database")
    _one_line(err)
    for name, folder, files in [("holidays", "jpg", ["100000.jpg", "100001.jpg", "100001.png"]),
                                ("ukbench", "full", ["ukbench00000.jpg", "ukbench00000.png"])]:
        for k, f in enumerate(files):
            _image(tmp_path / name / folder / f, k)
        with pytest.raises(UserError, match="two images have the id"):
            plugins.create("dataset", name, data_root=tmp_path).items("all")


def test_a_valid_subset_still_gives_each_query_its_box_and_positives(tmp_path):
    _subset(tmp_path, [_query("q2", relevant=["s.jpg"]), _query("q1", bbox=[2, 3, 30, 20])])
    ds = plugins.create("dataset", "oxford5k-subset", data_root=tmp_path)
    assert [(q.id, q.box) for q in ds.items("queries")] == [("q1", (2.0, 3.0, 30.0, 20.0)), ("q2", (2.0, 3.0, 30.0, 20.0))]
    assert ds.extras("queries")["ground_truth"]["q2"] == {"positives": ["q", "s"], "junk": []}


@pytest.mark.parametrize("name, build, box, entry", [
    ("cub200", lambda d, b: _cub200(d, "001.A/b.jpg", box=b), "5 5 -3 10", "image 2"),  # negative width
    ("h3d-attributes", lambda d, b: _h3d(d, "0002.jpg", box=b), "5 nan 10 10", "line 2"),  # partly NaN
    ("uiuc-attributes", lambda d, b: _uiuc(d, "2008_000003.jpg", box=b), "30 5 10 20", "line 2"),  # x1 > x2
])
def test_every_data_set_with_boxes_refuses_a_box_that_is_not_one(tmp_path, name, build, box, entry):
    ds, split, _ = build(tmp_path, box)
    with pytest.raises(UserError, match=rf"^{tmp_path}/{name}/.*: {entry}: box must be four numbers") as err:
        ds.items(split)
    _one_line(err)


def test_an_oxford_query_file_with_an_inverted_box_is_refused(tmp_path):
    root = tmp_path / "oxford5k"
    _image(root / "jpg" / "all_souls_000013.jpg")
    _write(root / "gt" / "all_souls_1_query.txt", "oxc1_all_souls_000013 300 34.1 136.5 955.7\n")
    for kind in ("good", "ok", "junk"):
        _write(root / "gt" / f"all_souls_1_{kind}.txt", "")
    with pytest.raises(UserError, match=r"all_souls_1_query\.txt: line 1 .*empty or inverted"):
        plugins.create("dataset", "oxford5k", data_root=tmp_path).items("queries")


def test_a_query_without_positives_is_refused_not_left_out_of_the_mean(tmp_path):
    root = tmp_path / "oxford5k"
    _image(root / "jpg" / "all_souls_000013.jpg")
    _write(root / "gt" / "all_souls_1_query.txt", "oxc1_all_souls_000013 1 2 30 20\n")
    for kind in ("good", "ok", "junk"):  # a truncated download: every list empty
        _write(root / "gt" / f"all_souls_1_{kind}.txt", "\n")
    with pytest.raises(UserError, match=r"all_souls_1_good\.txt and all_souls_1_ok\.txt list no image"):
        plugins.create("dataset", "oxford5k", data_root=tmp_path).items("queries")
    _subset(tmp_path, [_query(relevant=[])])
    with pytest.raises(UserError, match=r"relevant is empty, and with query_image: junk the query has no positives"):
        plugins.create("dataset", "oxford5k-subset", data_root=tmp_path, query_image="junk").items("queries")
    assert plugins.create("dataset", "oxford5k-subset", data_root=tmp_path).items("queries")  # its own image counts


def test_revisitop_refuses_a_bbx_that_starts_outside_the_image(tmp_path):
    write_revisitop(tmp_path, gnd=[dict(GND[0], bbx=[-4.0, 3.6, 50.2, 41.5]), GND[1]])
    with pytest.raises(UserError, match=r"gnd\[0\] \(query 'all_souls_000013'\): bbx .*none below 0"):
        plugins.create("dataset", "roxford5k", data_root=tmp_path).items("queries")


def test_the_validators_for_plugin_authors():
    from cnnbench.dataset import AnnotationError, check_box, ids_of_files, unique_ids

    assert check_box([1, 2, 3, 4], annotation="f", entry="e") == (1.0, 2.0, 3.0, 4.0)
    assert check_box(["1", "2", "3", "4"], annotation="f", entry="e", xywh=True, text=True) == (1.0, 2.0, 4.0, 6.0)
    assert check_box(np.array([-1.0, 0, 3, 4]), annotation="f", entry="e", negative=True) == (-1.0, 0.0, 3.0, 4.0)
    with pytest.raises(AnnotationError, match=r"^f: e: box must be"):
        check_box(["1", "2", "3", "4"], annotation="f", entry="e")  # text tokens only when the caller says so
    assert unique_ids(["a", "b"], annotation="f") == ["a", "b"]
    with pytest.raises(AnnotationError, match=r"f: the id 'a' is given twice \(line 1 and 3\)"):
        unique_ids(["a", "b", "a"], annotation="f", entry="line")
    assert ids_of_files([Path("x/a.jpg"), Path("y/b.png")]) == {"a": Path("x/a.jpg"), "b": Path("y/b.png")}


@pytest.mark.parametrize("name, build, says", [
    ("voc2007", lambda d: _voc2007(d, "000001"), r"trainval\.txt: the image id '000001' is given twice \(line 1 and 2\)"),
    ("mit67", lambda d: _mit67(d, "cls/a.jpg"), r"TrainImages\.txt: the image 'cls/a\.jpg' is given twice"),
    ("cub200", lambda d: _cub200(d, "001.A/a.jpg"), r"images\.txt: the image path '001\.A/a\.jpg' is given twice"),
])
def test_an_image_listed_twice_is_refused_not_counted_twice(tmp_path, name, build, says):
    ds, split, _ = build(tmp_path)
    with pytest.raises(UserError, match=says) as err:
        ds.items(split)
    _one_line(err)


# -- empty classes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault, state", [("empty folder", "holds no image files"),
                                          ("a file in its place", "is a file, not a folder of images"),
                                          ("no folder", "does not exist")])
def test_a_test_class_without_images_is_refused_before_anything_is_extracted(tmp_path, fault, state):
    for split, n in (("train", 2), ("test", 1)):
        for c in "abc":
            for k in range(n):
                _image(tmp_path / split / c / f"{k}.jpg", k)
    (tmp_path / "test" / "c" / "0.jpg").unlink()
    if fault != "empty folder":
        (tmp_path / "test" / "c").rmdir()
    if fault == "a file in its place":
        (tmp_path / "test" / "c").write_text("oops")
    ds = plugins.create("dataset", "imagefolder", path=tmp_path)
    for split in ("train", "test"):  # refused before train/ is extracted, not after
        with pytest.raises(UserError, match=rf"class 'c' has no test images \(.*test/c {state}\)") as err:
            plugins.create("dataset", "imagefolder", path=tmp_path).items(split)
        _one_line(err)
    assert ds.splits == ("train", "test")


def test_mit67_refuses_a_class_with_training_images_but_no_test_images(tmp_path):
    ds, _, _ = _mit67(tmp_path, "other/x.jpg")
    with pytest.raises(UserError, match=r"class 'other' has train images in .*TrainImages\.txt but none in "):
        ds.items("test")


# -- list files as other tools write them -----------------------------------------------------------------


def test_a_byte_order_mark_and_crlf_line_ends_are_read_as_the_official_file(tmp_path):
    ds, split, listed = _voc2007(tmp_path, "000002")
    (listed.parent / "test.txt").write_text("")
    listed.write_bytes("\ufeff000001\r\n000002\r\n".encode("utf-8"))
    assert [i.id for i in ds.items(split)] == ["000001", "000002"]


def test_an_error_names_the_real_line_when_the_file_has_blank_lines(tmp_path):
    ds, split, listed = _cub200(tmp_path, "001.A/a.jpg")
    listed.write_text("1 001.A/a.jpg\n\n\n2\n")
    with pytest.raises(UserError, match=r"images\.txt, line 4: expected"):
        ds.items(split)


def test_a_list_that_is_not_utf8_is_one_line_naming_the_file_and_line(tmp_path):
    ds, split, listed = _mit67(tmp_path, "cls/b.jpg")
    listed.write_bytes(b"cls/a.jpg\ncls/caf\xe9.jpg\n")
    with pytest.raises(UserError, match=r"TrainImages\.txt, line 2: not UTF-8 text \(byte 0xe9\)") as err:
        ds.items(split)
    _one_line(err)


# -- lists that disagree ------------------------------------------------------------------------------------


def test_cub200_refuses_a_truncated_image_list_and_a_split_value_that_is_neither(tmp_path):
    ds, split, listed = _cub200(tmp_path, "001.A/a.jpg")
    listed.write_text("1 001.A/a.jpg\n")  # image 2 is still in every other file
    with pytest.raises(UserError, match=r"_2011/\w+\.txt has image ids \[2\] that .*images\.txt does not list"):
        ds.items(split)
    ds, split, listed = _cub200(tmp_path, "001.A/b.jpg")
    (listed.parent / "train_test_split.txt").write_text("1 1\n2 2\n")
    with pytest.raises(UserError, match=r"image 2 has '2'; expected 1 \(train\) or 0 \(test\)"):
        plugins.create("dataset", "cub200", data_root=tmp_path).items(split)
    (listed.parent / "train_test_split.txt").write_text("1 1\n2 1\n")
    (listed.parent / "image_class_labels.txt").write_text("1 1\n2 x\n")
    with pytest.raises(UserError, match=r"image 2 has class 'x', not a class id of classes\.txt"):
        plugins.create("dataset", "cub200", data_root=tmp_path).items(split)


def test_a_test_image_that_is_also_a_training_image_is_refused(tmp_path):
    ds, split, listed = _voc2007(tmp_path, "000002")
    with pytest.raises(UserError, match=r"test\.txt shares 1 image\(s\) with .*trainval\.txt \(e\.g\. '000002'\)"):
        ds.items(split)


def _flowers(tmp_path, trnid, valid, tstid):
    from scipy.io import savemat

    root = tmp_path / "flowers102"
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    savemat(root / "imagelabels.mat", {"labels": np.array([[1, 1, 2, 2, 3, 3]])})
    savemat(root / "setid.mat", {"trnid": np.array([trnid]), "valid": np.array([valid]), "tstid": np.array([tstid])})
    return plugins.create("dataset", "flowers102", data_root=tmp_path)


def test_flowers102_refuses_overlapping_or_repeated_splits_and_a_damaged_mat_file(tmp_path):
    with pytest.raises(UserError, match=r"tstid and trnid share 1 image\(s\) \(e\.g\. 1\)"):
        _flowers(tmp_path, [1, 3], [2, 4], [5, 1]).items("test")
    with pytest.raises(UserError, match=r"trnid lists image 3 twice"):
        _flowers(tmp_path, [1, 3, 3], [2, 4], [5, 6]).items("train")
    (tmp_path / "flowers102" / "setid.mat").write_bytes(b"MATLAB 5.0 MAT-file, damaged" + b"\0" * 40)
    with pytest.raises(UserError, match=r"setid\.mat is not a readable MATLAB file") as err:
        plugins.create("dataset", "flowers102", data_root=tmp_path).items("train")
    _one_line(err)


def test_an_image_name_found_in_two_landmark_folders_is_refused_not_picked(tmp_path):
    write_revisitop(tmp_path, "rparis6k", nested=True)
    jpg = tmp_path / "rparis6k" / "jpg"
    (jpg / "paris" / "other").mkdir()
    (jpg / "paris" / "landmark" / f"{DB[4]}.jpg").rename(jpg / "paris" / "other" / f"{DB[4]}.jpg")
    _image(jpg / "paris" / "landmark" / f"{DB[4]}.jpg", 9)
    with pytest.raises(UserError, match=rf"two images have the id '{DB[4]}'"):
        plugins.create("dataset", "rparis6k", data_root=tmp_path).items("database")
