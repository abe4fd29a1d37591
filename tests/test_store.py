"""The HDF5 feature store: streamed, deterministic bytes, atomic, resumable."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from cnnbench import store
from cnnbench.errors import StoreError


def _write(path, batches, sig=None, attrs=None):
    w = store.StoreWriter(path, sig or {"k": 1})
    done = 0
    for ids, labels, feats in batches:
        done += len(ids)
        w.append(ids, labels, {"f": feats}, next_item=done)
    return w.commit(attrs or {"default_layer": "f", "layers": ["f"], "classes": ["a", "b"]})


def _batches(n=300, d=7, bs=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    for s in range(0, n, bs):
        yield [f"id{i}" for i in range(s, min(n, s + bs))], np.arange(s, min(n, s + bs)) % 2, x[s : s + bs]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_inputs_give_identical_bytes(tmp_path):
    a = _write(tmp_path / "a.h5", _batches())
    b = _write(tmp_path / "b.h5", _batches())
    assert sha(a) == sha(b)
    fs = store.read(a)
    assert fs.features.shape == (300, 7) and fs.features.dtype == np.float32
    assert list(fs.ids[:2]) == ["id0", "id1"] and fs.classes == ["a", "b"]
    with h5py.File(a) as f:
        assert f["features/f"].chunks is not None
        assert f.attrs["complete"]


def test_interrupted_write_leaves_no_final_file_and_resumes_to_the_same_bytes(tmp_path):
    reference = _write(tmp_path / "ref.h5", _batches())
    target = tmp_path / "t.h5"
    w = store.StoreWriter(target, {"k": 1})
    batches = list(_batches())
    done = 0
    for ids, labels, feats in batches[:2]:
        done += len(ids)
        w.append(ids, labels, {"f": feats}, next_item=done)
    w.close()  # the process dies here
    assert not target.exists() and store.partial_path(target).exists()
    with pytest.raises(StoreError, match="resume"):
        store.open_info(target)
    w = store.StoreWriter(target, {"k": 1})
    assert w.next_item == 128
    for ids, labels, feats in batches[2:]:
        done += len(ids)
        w.append(ids, labels, {"f": feats}, next_item=done)
    w.commit({"default_layer": "f", "layers": ["f"], "classes": ["a", "b"]})
    assert sha(target) == sha(reference)
    assert not store.partial_path(target).exists()


def test_a_partial_file_from_another_configuration_is_discarded(tmp_path):
    target = tmp_path / "t.h5"
    w = store.StoreWriter(target, {"k": 1})
    w.append(["x"], [0], {"f": np.zeros((1, 3), np.float32)}, next_item=1)
    w.close()
    assert store.StoreWriter(target, {"k": 2}).next_item == 0


def test_extras_and_multilabel_labels_round_trip(tmp_path):
    w = store.StoreWriter(tmp_path / "m.h5", {"k": 1})
    w.append(["a", "b"], np.array([[1, 0, -1], [0, 1, 1]], np.int8), {"f": np.ones((2, 2), np.float32)}, 2)
    gt = {"ground_truth": {"a": {"positives": ["b"], "junk": []}}}
    path = w.commit({"default_layer": "f", "layers": ["f"]}, gt)
    fs = store.read(path)
    assert fs.labels.tolist() == [[1, 0, -1], [0, 1, 1]] and fs.extras == gt
