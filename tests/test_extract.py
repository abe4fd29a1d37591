"""The extraction engine: batches stream to HDF5, bad images are skipped and recorded, runs resume."""

from __future__ import annotations

import contextlib
import hashlib
import itertools

import numpy as np
import pytest
import torch

from cnnbench import plugins, store
from cnnbench.engine import EngineFailed
from cnnbench.errors import CnnbenchError
from cnnbench.extract import engine_for, extract_split
from cnnbench.local_engine import LocalEngine
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
    from cnnbench import runtime as runtimes

    real_build = runtimes.build

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

    monkeypatch.setattr(runtimes, "build", build_dying_runtime)
    with pytest.raises(KeyboardInterrupt):
        extract_split(tiny, ds, "all", target, ExtractSettings(batch_size=4), progress=False)
    assert not target.exists() and store.partial_path(target).exists()
    monkeypatch.setattr(runtimes, "build", real_build)
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


# -- the one writing loop, whichever engine made the batches ----------------------------------------------


class _Swapped(LocalEngine):
    """The local engine with its first two batches handed over in the wrong order."""

    @contextlib.contextmanager
    def run(self, *args):
        with super().run(*args) as run:
            first, second = next(run.batches), next(run.batches)
            run.batches = itertools.chain([second, first], run.batches)
            yield run


class _FailsAfterTwo(LocalEngine):
    """The local engine whose worker dies after two batches, as a Ray worker may."""

    @contextlib.contextmanager
    def run(self, *args):
        with super().run(*args) as run:
            def two_then_fail(batches=run.batches):
                yield next(batches)
                yield next(batches)
                raise EngineFailed("the local engine failed in a worker: RuntimeError: boom")

            run.batches = two_then_fail()
            yield run


def test_batches_out_of_order_are_refused_and_nothing_is_stored_past_the_gap(tiny, image_folder, tmp_path):
    ds, settings = _folder(image_folder), ExtractSettings(batch_size=4)
    ref = extract_split(tiny, ds, "all", tmp_path / "ref.h5", settings, progress=False).path
    target = tmp_path / "t.h5"
    with pytest.raises(CnnbenchError, match="the local engine returned batch 4 where 0 was due; nothing after item 0"):
        extract_split(tiny, ds, "all", target, settings, progress=False, engine=_Swapped(settings))
    assert not target.exists()
    res = extract_split(tiny, ds, "all", target, settings, progress=False, engine=engine_for(settings))
    assert res.resumed_from == 0 and target.read_bytes() == ref.read_bytes()


def test_a_failed_worker_says_what_is_kept_and_the_rerun_resumes_from_there(tiny, image_folder, tmp_path):
    ds, settings = _folder(image_folder), ExtractSettings(batch_size=4)
    ref = extract_split(tiny, ds, "all", tmp_path / "ref.h5", settings, progress=False).path
    target = tmp_path / "t.h5"
    with pytest.raises(CnnbenchError, match=r"failed in a worker: RuntimeError: boom; 8 items are kept in .*t\.h5"
                                            r"\.partial; run the same command to resume$"):
        extract_split(tiny, ds, "all", target, settings, progress=False, engine=_FailsAfterTwo(settings))
    res = extract_split(tiny, ds, "all", target, settings, progress=False)
    assert res.resumed_from == 8 and target.read_bytes() == ref.read_bytes()
