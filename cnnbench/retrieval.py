"""Retrieval building blocks as Razavian et al. 2014 publish them.

* :class:`Whitening`: L2-normalise → PCA (``dim``, clipped to what the fitting set allows) →
  whitening (each component divided by the square root of its eigenvalue) → L2-normalise →
  signed power ``sign(x) |x|^power``. The paper applies the power last and does not normalise
  again; neither does this (distances are true L2 distances, so nothing assumes unit length).
* :func:`spatial_distance`: the spatial search distance (with :func:`pairwise_distance`, from
  :mod:`cnnbench.distances`, which :mod:`cnnbench.ann` re-scores candidates with too). Each image
  carries P sub-patches (or views); the distance from a query sub-patch to a database image is
  the minimum L2 distance over that image's sub-patches, and the query-to-image distance is the
  mean over the query's sub-patches. :func:`spatial_view_levels` reads the pyramid level of each
  sub-patch from the stored view names (``l{level}_r{row}_c{col}``), so a head can keep the levels
  it wants.
* :func:`rank_database`: every query's database ranking (ascending distance), by an exact
  batched matrix product (default) or a FAISS index (``faiss-cpu``, :mod:`cnnbench.ann`: compressed
  above 100k vectors, candidates re-ranked exactly) for large databases, whole-image or spatial.
* :class:`Distractors`, :func:`open_distractors`, :func:`rank_with_distractors`: a distractor set
  (R1M) appended to a retrieval database at evaluation, streamed from its feature file into a
  FAISS index when a compressed one is chosen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .distances import pairwise_distance, spatial_distance, sq_dist  # noqa: F401 (the first two: plugin surface)
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
        o, d = _topk(np.sqrt(sq_dist(queries[s:s + batch], database)), k)
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


# -- distractors (R1M) -----------------------------------------------------------------------------------

DISTRACTORS_KEY = "distractors"  # FeatureSet.extras of a database: the Distractors appended to it


class Distractors:
    """A distractor feature file (e.g. ``features/<backbone>/revisitop1m/database.h5``) appended to a
    retrieval database at evaluation, after the real database rows: the ``distractors`` option of
    every retrieval data set (revisitop's R1M protocol).

    Opened by :func:`open_distractors`, which checks it against the database (backbone and weights,
    layer, dimension, views, ids) so a mismatch is one line before anything is ranked. Only the ids
    are held; the vectors are read from the file when ranking: streamed in chunks into a FAISS index
    (:meth:`rows`, :func:`rank_with_distractors`), or loaded whole for exact search (:meth:`load`).
    A head that does not know distractors gets them concatenated to the database (:meth:`append_to`).
    """

    def __init__(self, path: Path, layer: str, option: str, ids: np.ndarray, shape: tuple[int, ...],
                 views: list[str] | None, info):
        self.path, self.layer, self.option = path, layer, option
        self.ids, self.shape, self.views, self.info = ids, shape, views, info

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, transform=None):
        """The vectors as an :class:`cnnbench.ann.H5Rows` (read in slices, ``transform`` applied to
        each); a non-finite value is a one-line error naming the file."""
        from . import ann
        from .errors import StoreError

        def checked(block):
            block = np.asarray(block, dtype=np.float32)
            if not np.isfinite(block).all():
                raise StoreError(f"distractors: {self.path} holds non-finite features; extract it again (--overwrite)")
            return transform(block) if transform is not None else block

        return ann.H5Rows(self.path, self.layer, checked)

    def load(self, transform=None) -> np.ndarray:
        """Every vector at once, float32 (exact search only: a million images is gigabytes)."""
        source = self.rows(transform)
        try:
            if not len(self):
                return np.zeros(source.shape, np.float32)
            return np.concatenate(list(source.chunks())).reshape(source.shape)
        finally:
            source.close()

    def append_to(self, database, head=None):
        """The trial's database with the distractors after its rows: kept aside in ``extras`` for a
        head that says it streams them (``takes_distractors``, the l2 head), concatenated otherwise."""
        from .head import FeatureSet

        self.check_against(database)
        if getattr(head, "takes_distractors", False):
            return FeatureSet(database.features, database.labels, database.ids, database.classes,
                              {**database.extras, DISTRACTORS_KEY: self}, database.views)
        labels = np.asarray(database.labels)
        filler = np.full((len(self),) + labels.shape[1:], -1, dtype=labels.dtype)
        return FeatureSet(np.concatenate([np.asarray(database.features, np.float32), self.load()]),
                          np.concatenate([labels, filler]),
                          np.concatenate([np.asarray(database.ids, dtype=object), self.ids]),
                          database.classes, database.extras, database.views)

    def check_against(self, database) -> None:
        """Same dimension and views as the trial's database, else one line saying what to extract."""
        from .errors import UserError

        shape = np.shape(database.features)
        if len(shape) != len(self.shape) or shape[-1] != self.shape[-1]:
            raise UserError(f"distractors: {self.path} holds features of shape (N, {', '.join(map(str, self.shape[1:]))}), "
                            f"the database (N, {', '.join(map(str, shape[1:]))}); extract the distractors with the same "
                            "backbone, layer and --views as the database")
        if (self.views or None) != (list(database.views) if database.views is not None else None) or \
                (len(shape) == 3 and shape[1] != self.shape[1]):
            raise UserError(f"distractors: {self.path} has the views {_views_text(self.views)}, the database "
                            f"{_views_text(database.views)}; extract the distractors with the same --views and --levels "
                            "as the database")

    def provenance(self) -> dict:
        """The option, the file and the data set it holds (compare names the column after it), and
        what every feature file's provenance says (:meth:`cnnbench.store.StoreInfo.provenance`)."""
        return {"option": self.option, "path": str(self.path), "layer": self.layer,
                "dataset": self.info.attrs.get("dataset"), **self.info.provenance()}


def _views_text(views) -> str:
    if views is None:
        return "none (one vector per image)"
    views = list(views)
    return f"{len(views)} ({', '.join(map(str, views[:3]))}{', …' if len(views) > 3 else ''})"


def distractors_path(option: str, features_dir) -> tuple[Path, str | None]:
    """The feature file a ``distractors`` value names, and the data-set name when it is one: a path
    ending in ``.h5``/``.hdf5``; a folder (its ``database.h5``); else a data-set name, whose features
    sit beside the evaluated data set's, under the same features key (the same views):
    ``<features_dir>/../../<name>/<key>/database.h5`` for ``features_dir`` =
    ``features/<backbone>/<dataset>/<key>``."""
    value = str(option)
    path = Path(value).expanduser()
    if path.suffix.lower() in (".h5", ".hdf5"):
        return path, None
    if path.is_dir() or "/" in value or os.sep in value:
        return path / "database.h5", None
    features_dir = Path(features_dir)
    return features_dir.parent.parent / value / features_dir.name / "database.h5", value


def open_distractors(dataset, features_dir, infos: dict, sets: dict, layer: str | None = None,
                     option: str | None = None) -> Distractors | None:
    """The evaluation option ``distractors`` (``option``: :attr:`cnnbench.recipes.EvalOptions.distractors`)
    opened and checked against the data set's stored features (``infos``: split ->
    :class:`cnnbench.store.StoreInfo`; ``sets``: split -> FeatureSet), or None without it. Every
    mismatch is one :class:`~cnnbench.errors.UserError` line naming the file and the fix."""
    import json

    from . import store
    from .errors import StoreError, UserError

    if option is None:
        return None
    path, name = distractors_path(option, features_dir)
    info = infos[dataset.splits[0]]
    backbone = info.attrs.get("backbone")
    layer = layer or info.attrs.get("default_layer")
    label = f"{dataset.name}: distractors: {option}"
    if not path.exists():
        sig = json.loads(info.attrs.get("signature") or "{}")
        flags = f" --views {sig['views']}" if sig.get("views") not in (None, "none") else ""
        flags += f" --layer {layer}" if layer and layer != info.attrs.get("default_layer") else ""
        make = (f"cnnbench extract -b {backbone} -d {name}{flags}" if name else
                f"cnnbench extract -b {backbone} -d revisitop1m{flags} --out {path.parent}")
        raise UserError(f"{label}: {path} does not exist; extract the distractor set once with `{make}` (same backbone, "
                        "layer and --views as the database)")
    try:
        dinfo = store.open_info(path)
    except StoreError as exc:
        raise UserError(f"{label}: {exc}") from None
    if dinfo.attrs.get("task") not in (None, "retrieval"):
        raise UserError(f"{label}: {path} holds features of a {dinfo.attrs.get('task')} data set; name the features of a "
                        "distractor set (revisitop1m; a data set of your own declares task = 'retrieval' and is "
                        "extracted again with --overwrite)")
    store.check_features(dinfo, {"backbone": backbone, "weights_sha256": info.attrs.get("weights_sha256") or None},
                   "the database holds", f"extract the distractors with `cnnbench extract -b {backbone} -d "
                   f"{name or 'revisitop1m'}` (the same weights)", label=f"{label}: ")
    if layer not in dinfo.layers:
        raise UserError(f"{label}: {path} has no layer {layer!r} (it holds {dinfo.layers}); extract the distractors "
                        f"with --layer {layer}, or evaluate a layer both files hold")

    ids, shape = store.read_ids(path, layer)
    views = json.loads(dinfo.attrs["view_names"]) if len(shape) == 3 and dinfo.attrs.get("view_names") else None
    ours = set()
    for fs in sets.values():
        ours.update(map(str, fs.ids))
    clash = [i for i in ids if i in ours]
    if clash:
        raise UserError(f"{label}: {len(clash)} image ids of {path} are also ids of {dataset.name} (e.g. {clash[0]!r}); "
                        "distractors must be other images: name the features of a distractor set (revisitop1m)")
    return Distractors(path, layer, str(option), ids, shape, views, dinfo)


def rank_with_distractors(queries: np.ndarray, database: np.ndarray, distractors, *, index: str = "exact",
                          index_factory: str = "auto", batch: int = 256, nprobe: int | None = None,
                          rerank: int | None = None, candidates: int | None = None, train_size: int | None = None,
                          seed: int = 0) -> np.ndarray:
    """Rank the database rows, then the distractors' (row ``len(database) + j``), for every query.

    ``distractors``: a row source (:class:`cnnbench.ann.H5Rows` with the head's descriptor transform).
    ``exact``: every distractor loaded (float32, the whole set in memory) and ranked with the
    database as one array. ``faiss``: the database (in memory anyway) is ranked exactly; the
    distractors are streamed chunk by chunk into a FAISS index (``index_factory``; ``auto`` by the
    number of distractor vectors: IVF-PQ codes at R1M scale), whose candidates are re-scored exactly
    from the file; both merge by distance (ties: database first, then by row), so with ``Flat`` the
    ranking equals the exact one. Distractors no candidate named follow, unranked, after every scored
    row: they never precede a database image, so only the scored prefix is returned (every database
    row and each query's candidates), which is all the metrics read.
    """
    from . import ann

    queries, database = np.asarray(queries, np.float32), np.asarray(database, np.float32)
    n_db, n_dis = len(database), distractors.shape[0]
    spatial = database.ndim == 3
    if index == "exact" or n_dis == 0:
        rest = np.concatenate(list(distractors.chunks())) if n_dis else np.zeros((0,) + database.shape[1:], np.float32)
        full = np.concatenate([database, rest.reshape((n_dis,) + tuple(distractors.shape[1:]))])
        return rank_database(queries, full, index="exact", batch=batch)[0]
    order_db, dist_db = rank_database(queries, database, index="exact", batch=batch)
    factory = ann.default_factory(distractors.n_rows, distractors.shape[-1]) if index_factory == "auto" else index_factory
    idx = ann.build_index(distractors, factory, train_size=train_size, seed=seed,
                          nprobe=ann.DEFAULT_NPROBE if nprobe is None else nprobe)
    if spatial:
        c = ann.DEFAULT_CANDIDATES if candidates is None else candidates
        k = min(n_dis, c * queries.shape[1])
        order, dist = ann.search_spatial(idx, queries, distractors, k, c)
    else:
        r = ann.DEFAULT_RERANK if rerank is None else rerank
        order, dist = ann.search(idx, queries, distractors, min(n_dis, r), r, batch)
    rows = np.concatenate([order_db, order + n_db], axis=1)
    pick = np.argsort(np.concatenate([dist_db, dist], axis=1), axis=1, kind="stable")
    return np.take_along_axis(rows, pick, axis=1)
