"""`dvc repro` over the hub's families: a Hugging Face repo (from the local hub cache, offline) and
WebDataset shards, listed in params.yaml like any data set, with the shipped dvc.yaml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from test_hf_datasets import fabricate_hub_snapshot
from test_hf_datasets import write_set as write_hf_set
from test_paper_preset import TINY_PLUGIN
from test_pipeline import _dvc
from test_plugin_faults import _install
from test_wds_datasets import write_set as write_wds_set

HF_NAME, WDS_NAME = "hf:tinyorg/colours", "wds:wds_colours"


def _ran(out: str) -> list[str]:
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


@pytest.mark.slow
def test_dvc_repro_runs_a_hub_repo_and_webdataset_shards_then_nothing(tmp_path, monkeypatch):
    repo, data = tmp_path / "repo", tmp_path / "data"
    hub = tmp_path / "hf" / "hub"
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", str(hub)),
                       ("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets")),
                       ("CNNBENCH_CACHE", str(tmp_path / "cache"))):
        monkeypatch.setenv(key, value)
    fabricate_hub_snapshot(hub, "tinyorg/colours", write_hf_set(tmp_path / "colours_hf"))
    write_wds_set(data / "wds_colours")

    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "cnnbench", repo / "cnnbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", repo / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(data_root=str(data), backbones=["tiny"], datasets=[HF_NAME, WDS_NAME], heads=["svm", "knn"],
                  backbone_options={"tiny": {}}, dataset_options={HF_NAME: {}, WDS_NAME: {}})
    params["extract"].update(runtime="eager", workers=1, batch_size=16)
    params["head_options"]["svm"].update(C=1.0)  # a fixed C: a few training images per class
    params["compare"] = {"bootstrap": 100}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "tiny-backbone", "tiny_backbone_plugin", TINY_PLUGIN.format(tests=str(ROOT / "tests")), "tiny")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc("init", "-q", cwd=repo)
    _dvc("config", "core.analytics", "false", cwd=repo)

    first = _ran(_dvc("repro", cwd=repo))
    assert len([s for s in first if s.startswith("extract@")]) == 2 and "compare" in first
    # a hub repo's features and results are two nested folders, the ones dvc.yaml's ${item.dataset} names
    info = repo / "features" / "tiny" / "hf:tinyorg" / "colours" / "none" / "test.h5"
    assert info.exists() and (repo / "features" / "tiny" / WDS_NAME / "none" / "test.h5").exists()
    for name in (HF_NAME, WDS_NAME):
        for head in ("svm", "knn"):
            metrics = json.loads((repo / "metrics" / "tiny" / name / "cnn" / f"{head}.json").read_text())
            assert 0.0 <= metrics["mean_class_accuracy" if name == WDS_NAME else "accuracy"] <= 1.0
    table = (repo / "reports" / "compare.md").read_text()
    assert HF_NAME in table and WDS_NAME in table
    assert _ran(_dvc("repro", cwd=repo)) == []  # nothing changed: nothing runs
