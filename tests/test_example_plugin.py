"""The example third-party package, installed for real, adds a backbone with no change to cnnbench."""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(ROOT / "examples" / "cnnbench-colorhist")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def test_example_plugin_is_listed_and_extracts(installed_example, tmp_path):
    env = {"PYTHONPATH": str(installed_example)}
    listing = run_cli("plugins", env_extra=env).stdout
    assert "colorhist" in listing and "cnnbench-colorhist" in listing
    layers = run_cli("layers", "colorhist", env_extra=env).stdout
    assert "hist" in layers
    run_cli("extract", "--backbone", "colorhist", "--dataset", "digits", "--out", str(tmp_path / "f"),
            "--no-progress", cwd=tmp_path, env_extra=env)
    with h5py.File(tmp_path / "f" / "train.h5") as f:
        assert f["features/hist"].shape == (898, 512)
        assert f.attrs["backbone"] == "colorhist"
