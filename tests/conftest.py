"""Shared fixtures: the real data in ../shared/data (skipped when absent) and small models."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnbench import hookimpl, plugins
from cnnbench.backbone import Backbone, Preprocess

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNNBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a checkout without ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def effnet() -> Backbone:
    return plugins.create("backbone", "effnet-lite0")


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees the installed plugins only, whatever an earlier test registered."""
    plugins.reset()
    yield
    plugins.reset()


class TinyNet(nn.Module):
    """A small deterministic CNN: enough to exercise extraction without a real model's cost."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def tiny_backbone() -> Backbone:
    return Backbone("tiny", TinyNet(), Preprocess(input_size=32, resize_size=36), default_layer="act",
                    layers={"logits": ""}, weights="seed0")


@pytest.fixture
def tiny() -> Backbone:
    return tiny_backbone()


class TinyPlugin:
    """The tiny backbone as an in-process plugin (``plugins.register_plugin(TinyPlugin(), name=...)``)."""

    @hookimpl
    def register_backbones(self, register):
        register("tiny", lambda **kw: tiny_backbone())


def write_image(path: Path, seed: int, size=(40, 30), mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 classes x 6 images, with one corrupt and one truncated JPEG in class 'b'."""
    root = tmp_path / "folder"
    for c, name in enumerate("abc"):
        for k in range(6):
            write_image(root / name / f"{k}.jpg", seed=10 * c + k, mode="L" if k == 0 else "RGB")
    (root / "b" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "a" / "1.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


def run_cli(*args: str, cwd: Path | None = None, env_extra: dict | None = None, check: bool = True):
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "cnnbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"cnnbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_tar(path: Path, entries: list, mode: str = "w:gz") -> Path:
    """A tar archive of ``TarInfo`` entries (links) and ``(name, bytes)`` files, in the order given."""
    with tarfile.open(path, mode) as tar:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tar.addfile(e)
            else:
                name, data = e
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def tar_link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """Digits through the tiny backbone: real feature files (train.h5, test.h5), in seconds."""
    from cnnbench.extract import extract_split

    out = tmp_path_factory.mktemp("tiny-digits-features")
    ds = plugins.create("dataset", "digits")
    for split in ds.splits:
        extract_split(tiny_backbone(), ds, split, out / f"{split}.h5", progress=False)
    return out
