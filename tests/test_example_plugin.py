"""The example third-party package, installed for real, adds a backbone and a head with no change to cnnbench."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import pytest

from cnnbench import plugins
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


@pytest.fixture(scope="module")
def colorhist_digits(installed_example, tmp_path_factory):
    """Digits through the example's backbone, extracted once by the command line."""
    out = tmp_path_factory.mktemp("features")
    run_cli("extract", "--backbone", "colorhist", "--dataset", "digits", "--out", str(out), "--no-progress",
            cwd=out, env_extra={"PYTHONPATH": str(installed_example)})
    return out


@pytest.fixture
def example_on_path(installed_example, monkeypatch):
    """The installed example visible to this process's entry points, as `pip install` would make it."""
    monkeypatch.syspath_prepend(str(installed_example))
    plugins.reset()
    yield installed_example
    sys.modules.pop("cnnbench_colorhist", None)


def test_example_plugin_is_listed_extracts_and_evaluates(installed_example, colorhist_digits, tmp_path):
    env = {"PYTHONPATH": str(installed_example)}
    listing = run_cli("plugins", env_extra=env).stdout
    assert "colorhist" in listing and "ncm" in listing and "cnnbench-colorhist" in listing
    layers = run_cli("layers", "colorhist", env_extra=env).stdout
    assert "hist" in layers
    with h5py.File(colorhist_digits / "train.h5") as f:
        assert f["features/hist"].shape == (898, 512)
        assert f.attrs["backbone"] == "colorhist"
    run_cli("evaluate", "--backbone", "colorhist", "--dataset", "digits", "--head", "ncm", "--features",
            str(colorhist_digits), "--out-dir", str(tmp_path / "m"), "--no-extract-missing", cwd=tmp_path,
            env_extra=env)
    from cnnbench.compare import load_records

    [record] = load_records(tmp_path / "m")
    assert record["head"] == "ncm" and record["primary_metric"] == "accuracy"
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_example_options_are_checked_like_built_in_ones(example_on_path):
    with pytest.raises(ValueError, match="ncm: normalize"):
        plugins.create("head", "ncm", normalize="maybe")
    with pytest.raises(ValueError, match="colorhist: bins"):
        plugins.create("backbone", "colorhist", bins=0)


def test_the_run_record_names_the_example_distribution_behind_backbone_and_head(example_on_path, colorhist_digits,
                                                                                 tmp_path):
    from cnnbench.evaluate import evaluate, write_results

    ds = plugins.create("dataset", "digits")
    record = evaluate(colorhist_digits, ds, plugins.create("head", "ncm"), "ncm")
    _, run_path = write_results(record, tmp_path / "m" / "ncm.json")
    who = json.loads(run_path.read_text())["provenance"]["plugins"]
    assert who["backbone"] == {"name": "colorhist", "plugin": "colorhist", "distribution": "cnnbench-colorhist",
                               "version": "0.1.0"}
    assert who["head"]["distribution"] == "cnnbench-colorhist"
    assert who["dataset"]["distribution"] == "cnnbench"
