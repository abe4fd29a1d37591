"""Retrieval building blocks as Razavian et al. 2014 publish them.

* :class:`Whitening`: L2-normalise → PCA (``dim``, clipped to what the fitting set allows) →
  whitening (each component divided by the square root of its eigenvalue) → L2-normalise →
  signed power ``sign(x) |x|^power``. The paper applies the power last and does not normalise
  again; neither does this (distances are true L2 distances, so nothing assumes unit length).
* :func:`spatial_distance`: the spatial search distance. Each image carries P sub-patches (or
  views); the distance from a query sub-patch to a database image is the minimum L2 distance over
  that image's sub-patches, and the query-to-image distance is the mean over the query's
  sub-patches. :func:`spatial_view_levels` reads the pyramid level of each sub-patch from the
  stored view names (``l{level}_r{row}_c{col}``), so a head can keep the levels it wants.
* :func:`rank_database`: every query's database ranking (ascending distance), by an exact
  batched matrix product (default) or a FAISS index (``faiss-cpu``, :mod:`cnnbench.ann`: compressed
  above 100k vectors, candidates re-ranked exactly) for large databases, whole-image or spatial.
"""

from __future__ import annotations

import re

import numpy as np

from .head import l2_normalize

SPATIAL_VIEW = re.compile(r"l(\d+)_r(\d+)_c(\d+)")  # a spatial sub-patch: level, row, column


def spatial_view_levels(views) -> np.ndarray | None:
    """Pyramid level of each view, when every name along the view axis is a spatial sub-patch.

    Spatial extraction names its views ``l{level}_r{row}_c{col}`` (``FeatureSet.views``), so the
    layout is read, not guessed from the number of patches. Returns an int array (V,), or None for
    unnamed views and for any other layout (e.g. jitter16's ``image``, ``crop_tl``, …).
    """
    if views is None or len(views) == 0:
        return None
    matches = [SPATIAL_VIEW.fullmatch(str(v)) for v in views]
    if not all(matches):
        return None
    return np.array([int(m.group(1)) for m in matches])


def signed_power(x: np.ndarray, power: float) -> np.ndarray:
    if power == 1:
        return x
    return (np.sign(x) * np.abs(x) ** power).astype(np.float32, copy=False)


class Whitening:
    """PCA + whitening fitted on one set of descriptors (rows); see the module docstring."""

    def __init__(self, dim: int | None = 500, whiten: bool = True, power: float = 1.0, eps: float = 1e-9):
        if dim is not None and int(dim) < 1:
            raise ValueError(f"PCA dimension must be a positive integer or None (no PCA), got {dim!r}")
        self.dim, self.whiten, self.power, self.eps = (None if dim is None else int(dim)), bool(whiten), float(power), float(eps)
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None  # (D, d), whitening folded in
        self.out_dim: int | None = None

    def fit(self, x: np.ndarray) -> "Whitening":
        x = l2_normalize(np.asarray(x, dtype=np.float32).reshape(-1, np.shape(x)[-1])).astype(np.float64)
        if self.dim is None:
            return self
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 descriptors to fit, got {n}; set pca_dim: null to skip PCA")
        self.mean = x.mean(axis=0)
        xc = x - self.mean
        # eigen-decomposition of the smaller Gram/covariance matrix
        if n < d:
            evals, u = np.linalg.eigh(xc @ xc.T)
            keep = evals > self.eps * max(evals.max(), self.eps)
            evals, u = evals[keep], u[:, keep]
            vecs = xc.T @ u / np.sqrt(evals)
        else:
            evals, vecs = np.linalg.eigh(xc.T @ xc)
            keep = evals > self.eps * max(evals.max(), self.eps)
            evals, vecs = evals[keep], vecs[:, keep]
        order = np.argsort(evals)[::-1][: self.dim]
        evals, vecs = evals[order] / (n - 1), vecs[:, order]
        self.out_dim = len(order)
        self.projection = (vecs / np.sqrt(evals + self.eps) if self.whiten else vecs).astype(np.float32)
        self.mean = self.mean.astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        shape = x.shape
        y = l2_normalize(x.reshape(-1, shape[-1]))
        if self.projection is not None:
            y = l2_normalize((y - self.mean) @ self.projection)
        y = signed_power(y, self.power)
        return np.ascontiguousarray(y.reshape(*shape[:-1], y.shape[-1]), dtype=np.float32)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows of a (..., M, D) and b (K, D)."""
    d = (a * a).sum(-1)[..., None] + (b * b).sum(-1) - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def pairwise_distance(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """L2 distances (Q, N) between single descriptors (Q, D) and (N, D)."""
    return np.sqrt(_sq_dist(np.asarray(queries, np.float32), np.asarray(database, np.float32)))


def spatial_distance(query_patches: np.ndarray, db_patches: np.ndarray) -> np.ndarray:
    """Spatial-search distance from queries to database images.

    ``query_patches``: (Pq, D) for one query or (Q, Pq, D); ``db_patches``: (N, Pd, D). Returns (N,)
    or (Q, N): ``mean over query patches of (min over an image's patches of the L2 distance)``.
    One matrix product per call; batch the queries to bound memory (Q·Pq·N·Pd floats).
    """
    q = np.asarray(query_patches, dtype=np.float32)
    db = np.asarray(db_patches, dtype=np.float32)
    single = q.ndim == 2
    if single:
        q = q[None]
    if q.ndim != 3 or db.ndim != 3 or q.shape[-1] != db.shape[-1]:
        raise ValueError(f"spatial_distance wants (Q, Pq, D) or (Pq, D) queries and (N, Pd, D) database "
                         f"patches with the same D; got {np.shape(query_patches)} and {np.shape(db_patches)}")
    n, pd, dim = db.shape
    d = np.sqrt(_sq_dist(q, db.reshape(n * pd, dim)))  # (Q, Pq, N*Pd)
    d = d.reshape(q.shape[0], q.shape[1], n, pd).min(axis=3).mean(axis=1)
    return d[0] if single else d


def rank_database(queries: np.ndarray, database: np.ndarray, index: str = "exact", batch: int = 256,
                  top_k: int | None = None, faiss_index: str = "auto", *, nprobe: int | None = None,
                  rerank: int | None = None, candidates: int | None = None, train_size: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rank database rows for every query by ascending distance; returns (order (Q, k), distance).

    ``index`` ``exact``: batched matrix product, stable sort (ties keep database order); 2-D inputs
    (one descriptor per image) use the L2 distance, 3-D inputs (sub-patches or views per image)
    :func:`spatial_distance`. ``faiss``: a FAISS index (``faiss_index``, a factory string, or
    ``auto``: :func:`cnnbench.ann.default_factory` by the number of indexed vectors) trained on a
    seeded sample (``train_size``, ``seed``), searched with ``nprobe``; its candidates (``rerank`` per
    query, or for patches ``candidates`` per query patch, their images) are re-scored exactly, so
    ``Flat`` ranks as ``exact`` does. ``top_k`` (default: the whole database) truncates the ranking;
    database rows the index did not propose follow the candidates in database order.
    """
    queries, database = np.asarray(queries, np.float32), np.asarray(database, np.float32)
    n = database.shape[0]
    k = n if top_k is None else max(1, min(int(top_k), n))
    spatial = queries.ndim == 3 or database.ndim == 3
    if spatial and queries.ndim != database.ndim:
        raise ValueError(f"queries {queries.shape} and database {database.shape}: both need a patch axis or neither")
    if index == "faiss":
        from . import ann

        source = ann.ArrayRows(database)
        factory = ann.default_factory(source.n_rows, database.shape[-1]) if faiss_index == "auto" else faiss_index
        idx = ann.build_index(source, factory, train_size=train_size, seed=seed,
                              nprobe=ann.DEFAULT_NPROBE if nprobe is None else nprobe)
        if spatial:
            return ann.search_spatial(idx, queries, source, k,
                                      ann.DEFAULT_CANDIDATES if candidates is None else candidates)
        return ann.search(idx, queries, source, k, ann.DEFAULT_RERANK if rerank is None else rerank, batch)
    if index != "exact":
        raise ValueError(f"index must be 'exact' or 'faiss', got {index!r}")
    if spatial:
        pq, pd = queries.shape[1], database.shape[1]
        step = max(1, int(batch * 64 * 1024 // max(1, pq * n * pd)))  # about batch·64k distances per step
        dist = np.concatenate([spatial_distance(queries[s:s + step], database) for s in range(0, len(queries), step)])
        return _topk(dist, k)
    orders, dists = [], []
    for s in range(0, len(queries), batch):
        o, d = _topk(np.sqrt(_sq_dist(queries[s:s + batch], database)), k)
        orders.append(o)
        dists.append(d)
    return np.concatenate(orders), np.concatenate(dists)


def check_factory(factory: str, dim: int, option: str = "faiss_index") -> None:
    """Fail early, with a one-line :class:`~cnnbench.errors.UserError` naming ``option``, on a FAISS
    factory string that cannot build an index of ``dim`` dimensions (plugins reach
    :mod:`cnnbench.ann` through here)."""
    from .ann import make_index

    make_index(factory, dim, option)


def _topk(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k < dist.shape[1]:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        sub = np.take_along_axis(dist, part, 1)
        o = np.lexsort((part, sub), axis=1)  # by distance, ties by database order
        order = np.take_along_axis(part, o, 1)
    else:
        order = np.argsort(dist, axis=1, kind="stable")
    return order, np.take_along_axis(dist, order, 1)
