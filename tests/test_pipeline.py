"""End to end, as a user runs it: `dvc repro` with the shipped params, then the CLI on real photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli

DVC = [sys.executable, "-m", "dvc"]


def _dvc(*args, cwd):
    # the stages call `cnnbench`: make the one installed beside this Python the one found
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run([*DVC, *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _stale(cwd) -> list[str]:
    """Stage names `dvc status` reports as changed (its output lists each as ``name:``)."""
    out = _dvc("status", cwd=cwd)
    return sorted(line.strip()[:-1] for line in out.splitlines() if line and not line[0].isspace() and line.endswith(":"))


def _touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


@pytest.mark.slow
def test_dvc_repro_runs_offline_then_only_what_changed(tmp_path):
    """The shipped dvc.yaml on a copy of the code (the stages depend on it), with one backbone."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "cnnbench", tmp_path / "cnnbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["backbones"] = ["effnet-lite0"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc("init", "-q", cwd=tmp_path)
    _dvc("config", "core.analytics", "false", cwd=tmp_path)

    first = _dvc("repro", cwd=tmp_path)
    assert "Running stage 'extract@effnet-lite0-digits'" in first
    # recipe cnn: one view, features/<backbone>/<dataset>/none/, metrics/<backbone>/<dataset>/cnn/
    assert sorted(p.name for p in (tmp_path / "features/effnet-lite0/digits").iterdir()) == ["none"]
    assert (tmp_path / "features/effnet-lite0/digits/none/train.h5").exists()
    run = json.loads((tmp_path / "metrics/effnet-lite0/digits/cnn/svm.run.json").read_text())
    assert run["recipe"] == "cnn" and run["recipe_spec"]["extract"] == {}
    assert "effnet-lite0" in (tmp_path / "reports/compare.md").read_text()
    assert "Running stage" not in _dvc("repro", cwd=tmp_path)

    # a head's code: exactly its evaluations (and compare, downstream) are stale
    svm_py = tmp_path / "plugins/cnnbench_plugins/heads/svm.py"
    before = svm_py.read_text()
    _touch(svm_py)
    assert _stale(tmp_path) == ["evaluate@effnet-lite0-digits-svm"]
    svm_py.write_text(before)

    # another data set's options: the digits stages stay up to date
    params["dataset_options"]["flowers17"]["train_on"] = "train"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale(tmp_path) == []

    # another recipe: every extraction and evaluation is of another result (compare follows once they ran)
    params["recipe"] = "cnnaug"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale(tmp_path) == ["evaluate@effnet-lite0-digits-knn", "evaluate@effnet-lite0-digits-l2",
                                "evaluate@effnet-lite0-digits-logreg", "evaluate@effnet-lite0-digits-svm",
                                "extract@effnet-lite0-digits"]
    params["recipe"] = "cnn"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale(tmp_path) == []

    # where extraction runs (both engines write the same bytes): nothing is stale
    params["extract"].update(engine="ray", ray_address="auto", num_workers=4, gpus_per_worker=0.5, threads_per_worker=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stale(tmp_path) == []

    # the engine's code: every extraction is stale
    extract_py = tmp_path / "cnnbench/extract.py"
    before = extract_py.read_text()
    _touch(extract_py)
    assert _stale(tmp_path) == ["extract@effnet-lite0-digits"]
    extract_py.write_text(before)

    # an SVM parameter: only that evaluation reruns, then compare
    params["head_options"]["svm"]["C_grid"] = [1.0, 10.0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _dvc("repro", cwd=tmp_path)
    ran = sorted(line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage"))
    assert ran == ["compare", "evaluate@effnet-lite0-digits-svm"]

    table = run_cli("compare", cwd=tmp_path).stdout
    assert "effnet-lite0" in table and "digits" in table


def test_params_yaml_has_options_for_every_listed_plugin():
    """dvc.yaml scopes options per item (dataset_options.<name>…): each listed name needs an entry."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for names, section in (("backbones", "backbone_options"), ("datasets", "dataset_options"), ("heads", "head_options")):
        missing = [n for n in params[names] if n not in (params.get(section) or {})]
        assert not missing, f"params.yaml {section} lacks entries for {missing}"


@pytest.mark.slow
def test_effnet_on_flowers17_beats_85_percent_mean_class_accuracy(shared_data, tmp_path):
    run_cli("evaluate", "--backbone", "effnet-lite0", "--dataset", "flowers17", "--head", "svm",
            "--data-root", str(shared_data), cwd=tmp_path)
    metrics = json.loads((tmp_path / "metrics/effnet-lite0/flowers17/cnn/svm.json").read_text())
    run = json.loads((tmp_path / "metrics/effnet-lite0/flowers17/cnn/svm.run.json").read_text())
    assert len(run["trials"]) == 3 and metrics["mean_class_accuracy"] > 0.85
    assert all(isinstance(v, float) for v in metrics.values())  # numbers only: dvc metrics show tabulates them
    assert Path(tmp_path / "features/effnet-lite0/flowers17/none/all.h5").exists()
