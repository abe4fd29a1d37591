"""The extraction engine: batches stream to HDF5, bad images are skipped and recorded, runs resume."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cnnbench import plugins, store
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings
from cnnbench.images import load_and_preprocess, normalize


def _folder(root):
    return plugins.create("dataset", "imagefolder", path=root, train_per_class=2, seeds=[0])


def test_unreadable_images_are_skipped_recorded_and_the_run_goes_on(tiny, image_folder, tmp_path, caplog):
    ds = _folder(image_folder)
    res = extract_split(tiny, ds, "all", tmp_path / "all.h5", ExtractSettings(batch_size=4), progress=False)
    assert res.written == 18 and sorted(s[0] for s in res.skipped) == ["b/corrupt.jpg", "b/truncated.jpg"]
    assert "corrupt.jpg" in caplog.text
    fs = store.read(res.path)
    assert fs.features.shape == (18, 8) and "b/corrupt.jpg" not in set(fs.ids)
    assert [s[0] for s in store.read_skipped(res.path)] == ["b/corrupt.jpg", "b/truncated.jpg"]
    info = store.open_info(res.path)
    assert info.attrs["backbone"] == "tiny" and info.attrs["dataset"] == "imagefolder"
    assert info.attrs["n_skipped"] == 2 and "mean" in info.attrs["preprocess"]


def test_features_equal_a_direct_forward_and_files_are_reproducible(tiny, image_folder, tmp_path):
    ds = _folder(image_folder)
    a = extract_split(tiny, ds, "all", tmp_path / "a.h5", ExtractSettings(batch_size=5, workers=2), progress=False).path
    b = extract_split(tiny, ds, "all", tmp_path / "b.h5", ExtractSettings(batch_size=5, workers=1), progress=False).path
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    fs = store.read(a)
    item = next(i for i in ds.items("all") if i.id == fs.ids[3])
    x = torch.from_numpy(load_and_preprocess(item.image, tiny.preprocess)[None])
    with torch.inference_mode():
        direct = tiny.features(normalize(x, tiny.preprocess), ["act"])["act"].numpy()
    np.testing.assert_allclose(fs.features[3], direct[0], atol=1e-4)  # any runtime: within 1e-4 of eager


def test_an_up_to_date_file_is_not_extracted_again(tiny, image_folder, tmp_path):
    ds = _folder(image_folder)
    extract_split(tiny, ds, "all", tmp_path / "a.h5", progress=False)
    assert extract_split(tiny, ds, "all", tmp_path / "a.h5", progress=False).cached
    assert not extract_split(tiny, ds, "all", tmp_path / "a.h5", ExtractSettings(layers=["logits"]), progress=False).cached


def test_interrupted_extraction_resumes_and_gives_the_same_file(tiny, image_folder, tmp_path, monkeypatch):
    ds = _folder(image_folder)
    ref = extract_split(tiny, ds, "all", tmp_path / "ref.h5", ExtractSettings(batch_size=4), progress=False).path
    target = tmp_path / "t.h5"
    from cnnbench import extract as engine

    real_build = engine.runtimes.build

    def build_dying_runtime(*a, **k):
        rt, calls = real_build(*a, **k), {"n": 0}
        real_call = rt.__call__

        def dies_on_third_batch(x):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real_call(x)

        rt.__call__ = dies_on_third_batch
        return _Callable(rt)

    class _Callable:
        def __init__(self, rt):
            self.rt, self.name = rt, rt.name

        def __call__(self, x):
            return self.rt.__call__(x)

        def close(self):
            self.rt.close()

    monkeypatch.setattr(engine.runtimes, "build", build_dying_runtime)
    with pytest.raises(KeyboardInterrupt):
        extract_split(tiny, ds, "all", target, ExtractSettings(batch_size=4), progress=False)
    assert not target.exists() and store.partial_path(target).exists()
    monkeypatch.setattr(engine.runtimes, "build", real_build)
    res = extract_split(tiny, ds, "all", target, ExtractSettings(batch_size=4), progress=False)
    assert res.resumed_from == 8
    assert target.read_bytes() == ref.read_bytes()


def test_multiple_layers_from_one_pass(tiny, image_folder, tmp_path):
    ds = _folder(image_folder)
    res = extract_split(tiny, ds, "all", tmp_path / "m.h5", ExtractSettings(layers=["act", "logits"]), progress=False)
    assert store.read(res.path, "logits").features.shape == (18, 4)
    assert store.read(res.path).features.shape == (18, 8)  # the first layer is the default
    with pytest.raises(ValueError, match="no layer 'nope'"):
        extract_split(tiny, ds, "all", tmp_path / "n.h5", ExtractSettings(layers=["nope"]), progress=False)
