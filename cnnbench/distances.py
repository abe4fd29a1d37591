"""The L2 distances every search ranks by, exact or through a FAISS index (:mod:`cnnbench.retrieval`,
:mod:`cnnbench.ann`): one definition, so a re-ranked FAISS candidate scores exactly as the exact path
scores it. Plugins import them from :mod:`cnnbench.retrieval`."""

from __future__ import annotations

import numpy as np


def sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows of a (..., M, D) and b (K, D)."""
    d = (a * a).sum(-1)[..., None] + (b * b).sum(-1) - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def pairwise_distance(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """L2 distances (Q, N) between single descriptors (Q, D) and (N, D)."""
    return np.sqrt(sq_dist(np.asarray(queries, np.float32), np.asarray(database, np.float32)))


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
    d = np.sqrt(sq_dist(q, db.reshape(n * pd, dim)))  # (Q, Pq, N*Pd)
    d = d.reshape(q.shape[0], q.shape[1], n, pd).min(axis=3).mean(axis=1)
    return d[0] if single else d
