"""FAISS indexes for large galleries: a compressed index whose candidates are re-ranked exactly.

At R1M scale the problem is memory, not speed (spatial search over R1M is ~30M patch vectors, 60 GB
as float32), so above :data:`FLAT_BELOW` vectors :func:`default_factory` picks an IVF index with PQ
codes (a few bytes per vector); each query takes ``rerank`` candidates from it and re-scores them
exactly from the original descriptors (an in-memory array or rows read back from the HDF5 feature
file), so only the candidates' order matters, not the codes' precision. ``Flat`` is exact: its
candidates are re-scored with the same distance as :func:`cnnbench.retrieval.rank_database`'s exact
path and ties ordered by database row, so it ranks exactly as that path does.

Sources of rows (:class:`ArrayRows`, :class:`H5Rows`) give the gallery in chunks (a seeded training
sample is drawn in one pass, then the index is filled chunk by chunk: a compressed index never
holds the gallery as float32) and read back the rows a re-ranking needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from .distances import spatial_distance, sq_dist
from .errors import UserError

FLAT_BELOW = 100_000  # default_factory: exact Flat below this many vectors, IVF-PQ from it on
DEFAULT_NPROBE = 32
DEFAULT_RERANK = 1000  # candidates re-scored exactly per query (whole-image search)
DEFAULT_CANDIDATES = 500  # patches per query patch (spatial search); 100 lost 0.7 mAP points (benchmarks/retrieval_scale.py)
CHUNK_FLOATS = 16 * 2**20  # a chunk read to fill an index: 64 MB of float32, whatever the dimension


def pq_subquantizers(dim: int) -> int:
    """PQ bytes per vector: the largest divisor of ``dim`` with at least 4 dimensions per byte (≥ 8x
    smaller than float32 with the ids), so each 8-bit sub-quantiser codes few enough dimensions to
    keep candidates recalled for the exact re-ranking."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def default_factory(n: int, dim: int, flat_below: int = FLAT_BELOW) -> str:
    """The index for ``n`` vectors of ``dim``: ``Flat`` (exact) below ``flat_below``, else
    ``IVF{nlist},PQ{m}`` with nlist ≈ 4·sqrt(n) (a power of two) and m from :func:`pq_subquantizers`."""
    if n < flat_below:
        return "Flat"
    nlist = 2 ** max(4, round(math.log2(4 * math.sqrt(max(n, 1)))))
    return f"IVF{nlist},PQ{pq_subquantizers(dim)}"


def make_index(factory: str, dim: int, option: str = "faiss_index"):
    """An empty FAISS index from a factory string; a bad string is a one-line :class:`UserError`."""
    import faiss

    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_L2)
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a multi-line C++ message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{option}: {factory!r} is not a FAISS index factory string for {dim}-dimensional "
                        f"descriptors ({first[:160]}); use e.g. 'Flat' (exact), 'IVF1024,PQ125' or 'auto'") from None


class ArrayRows:
    """An in-memory gallery (N, D), or (N, P, D) patches flattened to N·P rows, as a row source."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float32)
        self.shape = x.shape
        self._rows = x.reshape(-1, x.shape[-1])

    @property
    def n_rows(self) -> int:
        return len(self._rows)

    def chunks(self, size: int | None = None) -> Iterator[np.ndarray]:
        size = size or max(1, CHUNK_FLOATS // self.shape[-1])
        for s in range(0, self.n_rows, size):
            yield self._rows[s:s + size]

    def images(self, idx: np.ndarray) -> np.ndarray:
        """Descriptors of the given images (first axis), (k, D) or (k, P, D)."""
        return self._rows.reshape(self.shape)[np.asarray(idx)]


class H5Rows:
    """A feature file's ``features/<layer>`` dataset, (N, D) or (N, P, D), read in slices with h5py.

    ``transform`` (e.g. L2 normalisation, a fitted :class:`cnnbench.retrieval.Whitening`'s
    ``transform``) is applied to every block read, so the index and the re-ranking see the same
    descriptors; it may change the dimension and the view axis (keep some views, or average them),
    so :attr:`shape` is that of the transformed rows."""

    def __init__(self, path, layer: str | None = None, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        import h5py

        self._file = h5py.File(path, "r")
        if layer is None:
            layer = self._file.attrs.get("default_layer") or next(iter(self._file["features"]))
        self._ds = self._file[f"features/{layer}"]
        self.transform = transform or (lambda a: np.asarray(a, dtype=np.float32))
        first = self.transform(self._ds[:1]) if self._ds.shape[0] else np.zeros((0,) + self._ds.shape[1:], np.float32)
        self.shape = (self._ds.shape[0],) + tuple(first.shape[1:])

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1]))

    def chunks(self, size: int | None = None) -> Iterator[np.ndarray]:
        size = size or max(1, CHUNK_FLOATS // self.shape[-1])  # rows
        per = max(1, size // (self.shape[1] if len(self.shape) == 3 else 1))  # images per chunk
        for s in range(0, self.shape[0], per):
            block = self.transform(self._ds[s:s + per])
            yield block.reshape(-1, block.shape[-1])

    def images(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return np.zeros((0,) + tuple(self.shape[1:]), np.float32)
        uniq, inv = np.unique(idx, return_inverse=True)  # h5py reads increasing indices only
        return self.transform(self._ds[uniq])[inv]

    def close(self) -> None:
        self._file.close()


def _sample(source, train_size: int, seed: int) -> np.ndarray:
    """A seeded sample of ``train_size`` rows, drawn in one pass over the source's chunks."""
    n = source.n_rows
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(train_size, n), replace=False))
    out, start = [], 0
    for chunk in source.chunks():
        lo, hi = np.searchsorted(pick, [start, start + len(chunk)])
        out.append(chunk[pick[lo:hi] - start])
        start += len(chunk)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def build_index(source, factory: str, *, train_size: int | None = None, seed: int = 0, nprobe: int = DEFAULT_NPROBE,
                option: str = "faiss_index"):
    """A filled FAISS index over every row of ``source`` (rows numbered in source order).

    Trained (when the index needs it) on a seeded sample of ``train_size`` rows (default: 32 per IVF
    list and at least 256·39 for the PQ codebooks, capped at the gallery), then filled chunk by chunk."""
    import faiss

    dim = source.shape[-1]
    index = make_index(factory, dim, option)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        for part in (index, ivf):  # polysemous codes are not searched here; their training costs 10x the rest
            part = faiss.downcast_index(part) if part is not None else None
            if hasattr(part, "do_polysemous_training"):
                part.do_polysemous_training = False
            if hasattr(part, "use_precomputed_table"):  # nlist·m·256 floats (0.5 GB at 1M), for speed only
                part.use_precomputed_table = -1
        if train_size is None:
            train_size = max(32 * (ivf.nlist if ivf is not None else 1), 256 * 39)
        index.train(_sample(source, train_size, seed))
    for chunk in source.chunks():
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    set_nprobe(index, nprobe)
    return index


def set_nprobe(index, nprobe: int) -> None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)


def index_bytes(index) -> int:
    """Bytes of the serialised index (codes, ids, quantiser, codebooks)."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def _full(order_head: np.ndarray, n: int, k: int) -> np.ndarray:
    """The re-ranked candidates, then (when a ranking of ``k`` > candidates is asked) the remaining
    database rows in database order: the index did not rank them."""
    if len(order_head) >= k:
        return order_head[:k]
    rest = np.ones(n, dtype=bool)
    rest[order_head] = False
    return np.concatenate([order_head, np.flatnonzero(rest)[:k - len(order_head)]])


def search(index, queries: np.ndarray, source, k: int, rerank: int = DEFAULT_RERANK,
           batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image search: ``rerank`` (at least ``k``) candidates per query from the index, re-scored
    exactly against ``source``'s rows, ties by database row; (order (Q, k), distance (Q, k)), the
    distance ``inf`` past the candidates."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = source.shape[0]
    k = max(1, min(int(k), n))
    r = max(k, min(int(rerank), n)) if index.ntotal > 0 else 0
    orders, dists = np.empty((len(queries), k), np.int64), np.full((len(queries), k), np.inf, np.float32)
    for s in range(0, len(queries), batch):
        q = queries[s:s + batch]
        _, cand = index.search(q, r)
        for i, c in enumerate(cand):
            c = np.unique(c[c >= 0])  # sorted: ties fall back to database order below
            d = np.sqrt(sq_dist(q[i:i + 1], source.images(c)))[0]
            o = np.argsort(d, kind="stable")
            orders[s + i] = _full(c[o], n, k)
            dists[s + i, :min(k, len(c))] = d[o][:k]
    return orders, dists


def search_spatial(index, queries: np.ndarray, source, k: int, candidates: int = DEFAULT_CANDIDATES,
                   batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Spatial search: ``index`` holds every sub-patch of every database image (row = image·P + patch,
    ``source`` (N, P, D)). Each query patch (queries (Q, Pq, D)) takes ``candidates`` patches; their
    images are re-scored exactly with :func:`cnnbench.distances.spatial_distance` (min over an image's
    patches, mean over the query's) and ranked, ties by database order; (order (Q, k), distance)."""
    queries = np.asarray(queries, dtype=np.float32)
    n, p = source.shape[0], source.shape[1]
    k = max(1, min(int(k), n))
    c = max(1, min(int(candidates), index.ntotal))
    orders, dists = np.empty((len(queries), k), np.int64), np.full((len(queries), k), np.inf, np.float32)
    for s in range(0, len(queries), batch):
        q = queries[s:s + batch]
        _, hits = index.search(np.ascontiguousarray(q.reshape(-1, q.shape[-1])), c)
        hits = hits.reshape(len(q), -1)
        for i in range(len(q)):
            imgs = np.unique(hits[i][hits[i] >= 0] // p)
            d = spatial_distance(q[i], source.images(imgs))
            o = np.argsort(d, kind="stable")
            orders[s + i] = _full(imgs[o], n, k)
            dists[s + i, :min(k, len(imgs))] = d[o][:k]
    return orders, dists
