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


@pytest.mark.slow
def test_dvc_repro_runs_offline_then_only_what_changed(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc("init", "-q", cwd=tmp_path)
    _dvc("config", "core.analytics", "false", cwd=tmp_path)

    first = _dvc("repro", cwd=tmp_path)
    assert "Running stage 'extract@effnet-lite0-digits'" in first
    svm = json.loads((tmp_path / "metrics/effnet-lite0/digits/svm.json").read_text())
    assert svm["metrics"]["accuracy"] > 0.90
    assert "effnet-lite0" in (tmp_path / "reports/compare.md").read_text()

    assert "Running stage" not in _dvc("repro", cwd=tmp_path)

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["head_options"]["svm"]["C_grid"] = [1.0, 10.0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    third = _dvc("repro", cwd=tmp_path)
    ran = sorted(line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage"))
    assert ran == ["compare", "evaluate@effnet-lite0-digits-svm"]

    table = run_cli("compare", cwd=tmp_path).stdout
    assert "effnet-lite0" in table and "digits" in table


@pytest.mark.slow
def test_effnet_on_flowers17_beats_85_percent_mean_class_accuracy(shared_data, tmp_path):
    run_cli("evaluate", "--backbone", "effnet-lite0", "--dataset", "flowers17", "--head", "svm",
            "--data-root", str(shared_data), cwd=tmp_path)
    record = json.loads((tmp_path / "metrics/effnet-lite0/flowers17/svm.json").read_text())
    assert len(record["trials"]) == 3
    assert record["metrics"]["mean_class_accuracy"] > 0.85
    assert Path(tmp_path / "features/effnet-lite0/flowers17/all.h5").exists()
