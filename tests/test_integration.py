"""Data set -> extraction -> HDF5 -> head -> metrics record, for the multi-label and retrieval paths
(the fixtures are the official formats from test_datasets_paper.py)."""

from __future__ import annotations

import math

from cnnbench import plugins
from cnnbench.evaluate import evaluate
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings

from conftest import write_image
from test_datasets_paper import oxford_root, voc_root  # noqa: F401 - fixtures


def test_voc2007_multilabel_end_to_end(voc_root, tmp_path, tiny):  # noqa: F811
    ds = plugins.create("dataset", "voc2007", data_root=voc_root)
    for split in ds.splits:
        extract_split(tiny, ds, split, tmp_path / f"{split}.h5", progress=False)
    record = evaluate(tmp_path, ds, plugins.create("head", "svm", C=1.0), "svm")
    assert record["primary_metric"] == "mAP" and record["task"] == "multilabel"
    assert 0.0 <= record["metrics"]["mAP"] <= 1.0 and not math.isnan(record["metrics"]["mAP"])


def test_oxford5k_retrieval_end_to_end_with_spatial_search(oxford_root, tmp_path, tiny):  # noqa: F811
    for name in ("all_souls_000013", "radcliffe_camera_000519"):  # full-size query images: the boxes fit
        write_image(oxford_root / "oxford5k" / "jpg" / f"{name}.jpg", 1, size=(700, 960))
    ds = plugins.create("dataset", "oxford5k", data_root=oxford_root)
    results = {}
    for views in ("none", "spatial"):
        out = tmp_path / views
        for split in ds.splits:
            extract_split(tiny, ds, split, out / f"{split}.h5", ExtractSettings(views=views, spatial_levels=2), progress=False)
        head = plugins.create("head", "l2", pca_dim=None, levels=[2, 2])
        results[views] = evaluate(out, ds, head, "l2")
    for record in results.values():
        assert record["primary_metric"] == "mAP" and 0.0 < record["metrics"]["mAP"] <= 1.0
    # the stored view names decide the levels: by default, the 2 each side was extracted with
    default = evaluate(tmp_path / "spatial", ds, plugins.create("head", "l2", pca_dim=None), "l2")
    assert default["metrics"] == results["spatial"]["metrics"] and default["head_params"]["levels"] is None
    # a few database images: pca_dim auto skips PCA, and the trial says why (not a metric)
    auto = evaluate(tmp_path / "none", ds, plugins.create("head", "l2"), "l2")
    assert auto["metrics"] == results["none"]["metrics"] and auto["trials"][0]["pca_small_set"] == 1.0
