"""FAISS galleries (cnnbench.ann): Flat ranks as exact search does, whole-image and spatial (ties
included), IVF-PQ with exact re-ranking recovers the exact top-k, the HDF5 streaming path, the
default index by size, and a bad factory string as a one-line error naming the option."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cnnbench import plugins
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet
from cnnbench.retrieval import rank_database

ann = pytest.importorskip("cnnbench.ann")
pytest.importorskip("faiss")


def _grid(shape, seed):
    """Small integers / 4: every distance is exact in float32 and ties are frequent, so rankings
    must agree exactly (no rounding can hide a tie-order difference)."""
    return (np.random.default_rng(seed).integers(-2, 3, size=shape) / 4).astype(np.float32)


def test_flat_ranks_as_exact_search_whole_image_with_ties():
    db = _grid((300, 6), 0)
    db[150:] = db[:150]  # duplicated rows: exact ties, ordered by database row
    q = np.concatenate([_grid((20, 6), 1), db[:5]])
    exact_o, exact_d = rank_database(q, db)
    o, d = rank_database(q, db, index="faiss", faiss_index="Flat")
    np.testing.assert_array_equal(o, exact_o)
    np.testing.assert_allclose(d, exact_d, rtol=1e-6)
    o10, _ = rank_database(q, db, index="faiss", faiss_index="Flat", top_k=10, rerank=50)
    np.testing.assert_array_equal(o10, exact_o[:, :10])


def test_flat_ranks_as_exact_spatial_search_with_enough_candidates():
    db = _grid((60, 5, 4), 2)
    db[30:] = db[:30]
    q = _grid((8, 3, 4), 3)
    exact_o, exact_d = rank_database(q, db)
    o, d = rank_database(q, db, index="faiss", faiss_index="Flat", candidates=60 * 5)
    np.testing.assert_array_equal(o, exact_o)
    np.testing.assert_allclose(d, exact_d, rtol=1e-6)
    # fewer candidates: a full ranking still lists every image once, the proposed ones first
    o_few, _ = rank_database(q, db, index="faiss", faiss_index="Flat", candidates=3)
    assert all(sorted(row) == list(range(60)) for row in o_few)


def _clustered(n, dim, seed, centers=40):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 3
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def test_ivf_pq_with_rerank_recovers_the_exact_top_k():
    db = _clustered(6000, 32, 4)
    q = db[::300] + 0.1 * np.random.default_rng(5).standard_normal((20, 32)).astype(np.float32)
    exact, _ = rank_database(q, db, top_k=10)
    o, _ = rank_database(q, db, index="faiss", faiss_index="IVF64,PQ8", top_k=10, nprobe=16, rerank=200)
    np.testing.assert_array_equal(o, exact)
    src = ann.ArrayRows(db)
    idx = ann.build_index(src, "IVF64,PQ8", nprobe=16)
    assert ann.index_bytes(idx) / len(db) < 4 * 32 / 4  # codes + ids, well under float32


def test_hdf5_streaming_build_and_rerank_match_in_memory(tmp_path):
    db = _clustered(3000, 16, 6).reshape(1000, 3, 16)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.attrs["default_layer"] = "x"
        f.create_dataset("features/x", data=db, chunks=(64, 3, 16))
    src = ann.H5Rows(path)
    assert src.shape == (1000, 3, 16) and src.n_rows == 3000
    idx = ann.build_index(src, "Flat")
    q = db[:7, :2] + 0.01
    o, _ = ann.search_spatial(idx, q, src, k=1000, candidates=3000)
    exact, _ = rank_database(q, db)
    np.testing.assert_array_equal(o[:, :20], exact[:, :20])
    np.testing.assert_array_equal(src.images(np.array([5, 2, 5])), db[[5, 2, 5]])
    src.close()


def test_hdf5_rows_take_their_shape_from_the_transform(tmp_path):
    """A transform that averages the views (l2's multi_vector: mean) or keeps some of them gives the
    source its shape: chunks, re-ranking reads and the index all see the transformed rows."""
    db = _clustered(600, 8, 7).reshape(200, 3, 8)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.attrs["default_layer"] = "x"
        f.create_dataset("features/x", data=db)
    mean = ann.H5Rows(path, transform=lambda a: np.asarray(a, np.float32).mean(axis=1))
    assert mean.shape == (200, 8) and mean.n_rows == 200
    assert sum(len(c) for c in mean.chunks(size=50)) == 200
    np.testing.assert_allclose(mean.images(np.array([3, 1])), db[[3, 1]].mean(axis=1), rtol=1e-6)
    assert mean.images(np.array([], dtype=np.int64)).shape == (0, 8)
    two = ann.H5Rows(path, transform=lambda a: np.asarray(a, np.float32)[:, :2])
    assert two.shape == (200, 2, 8) and sum(len(c) for c in two.chunks(size=40)) == 400
    mean.close()
    two.close()


def test_default_factory_by_size():
    assert ann.default_factory(99_999, 500) == "Flat"
    f = ann.default_factory(1_000_000, 500)
    assert f == "IVF4096,PQ125"
    assert ann.default_factory(30_000_000, 1280) == "IVF16384,PQ320"
    for n, dim in [(100_000, 500), (1_000_000, 1280), (200_000, 7)]:
        m = int(ann.default_factory(n, dim).split("PQ")[1])
        assert dim % m == 0 and m * 8 <= 4 * dim  # codes at least 8x smaller than float32


def test_a_bad_factory_string_is_a_one_line_error_naming_the_option():
    with pytest.raises(UserError, match=r"^l2: faiss_index: 'IVFx,Nope' is not a FAISS index factory") as e:
        rng = np.random.default_rng(0)
        fs = FeatureSet(rng.standard_normal((10, 8)).astype(np.float32), np.repeat([0, 1], 5),
                        np.array([f"i{k}" for k in range(10)], dtype=object), ["a", "b"])
        plugins.create("head", "l2", index="faiss", faiss_index="IVFx,Nope").evaluate(fs, fs, "multiclass")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="l2: nprobe"):
        plugins.create("head", "l2", nprobe=0)


def test_l2_head_spatial_search_on_faiss_scores_as_exact():
    rng = np.random.default_rng(7)
    db = rng.standard_normal((40, 5, 8)).astype(np.float32)
    ids = np.array([f"d{k}" for k in range(40)], dtype=object)
    q = db[:4, :3] + 0.05 * rng.standard_normal((4, 3, 8)).astype(np.float32)
    gt = {f"q{k}": {"positives": [f"d{k}", f"d{k + 20}"], "junk": []} for k in range(4)}
    database = FeatureSet(db, np.zeros(40, int), ids, ["x"])
    queries = FeatureSet(q, np.zeros(4, int), np.array([f"q{k}" for k in range(4)], dtype=object), ["x"],
                         {"ground_truth": gt})
    exact = plugins.create("head", "l2", pca_dim=None).evaluate(database, queries, "retrieval", metric="mAP")
    viaf = plugins.create("head", "l2", pca_dim=None, index="faiss", candidates=200).evaluate(
        database, queries, "retrieval", metric="mAP")
    assert viaf["mAP"] == pytest.approx(exact["mAP"])
