"""``l2``: retrieval by L2 distance, as Razavian et al. 2014 publish it.

Descriptors: L2-normalise → PCA to ``pca_dim`` (paper: 500; clipped to what the fitting set
allows) → whitening → L2-normalise → signed power ``power`` (paper's retrieval: a signed power
transform; 1 = off). See :mod:`cnnbench.retrieval`.

Two kinds of data set:

* ``multiclass`` (as before): every test image queries all the other test images; an image of
  the same class is relevant; the query itself is excluded. Non-interpolated mAP and
  nearest-neighbour accuracy. ``pca_dim: auto`` means *no PCA* here (so results stay those of the
  plain L2 baseline); give a number to use the retrieval pipeline.
* ``retrieval``: the database is the trial's train selection, the queries its test selection;
  the test FeatureSet's ``extras["ground_truth"]`` maps query id → ``{"positives": [...],
  "junk": [...]}`` (database ids). ``pca_dim: auto`` means 500. Metrics per the data set's
  ``metric`` (passed by :func:`cnnbench.evaluate.evaluate`):

  - ``mAP`` (Oxford5k, Paris6k, Sculptures6k, Holidays): AP exactly as Oxford's ``compute_ap.cpp``
    (positives = good + ok, junk ignored, trapezoid rule over recall). When the query image is
    itself a database image and the ground truth says ``"exclude_self": true`` (per query, or at
    the top level of ``extras``; Holidays), it is removed from the ranking, as Holidays' own
    evaluation does. The ``exclude_self`` parameter overrides the ground truth.
  - ``top4`` (UKBench): the number of positives among the first 4 results, averaged over queries,
    reported as a fraction of 4 (the paper's %); ``top4_score`` (0-4) is a per-trial diagnostic.
    UKBench counts the query itself as one of its 4 images: a query found in the database and not
    excluded counts as a positive even if the ground truth lists only the other three.

  Queries without a ground-truth entry are skipped; positives absent from the database (images
  skipped at extraction) still count in ``|positives|``, as compute_ap counts every listed image.

``pca_fit`` names the descriptors PCA/whitening is fitted on: ``database`` (default: the
retrieval database, i.e. the train selection; unsupervised, and the usual choice when no
independent set is at hand), ``queries`` (the test selection), or the path of a feature file
(``.h5``: another split of the same data set, ``features/<backbone>/<dataset>/<split>.h5``, or
another data set's features, e.g. Paris6k's for Oxford5k: the independent-set protocol);
``pca_layer`` picks its layer. A head sees only the trial's two selections, so splits other
than the database and the queries are named by their file.

Spatial search: features with a patch axis (N, P, D). When P is the size of a spatial pyramid
(1, 5, 14, 30 … patches: levels 1..h, order level 1, level 2 row-major, …), ``levels`` =
[h_database, h_queries] (paper: [4, 3]) keeps the first levels of each side; the distance is
:func:`cnnbench.retrieval.spatial_distance` (min over database patches, mean over query patches).
Any other P (e.g. the 16 jittered views, which the paper uses for Holidays and UKBench) is used
as is with the same distance. ``multi_vector: mean`` instead averages the patches into one
descriptor. Spatial search is exact; ``index: faiss`` (or ``auto`` with a database of at least
``faiss_min_database`` images) indexes single-descriptor databases with FAISS (``faiss_index``,
a factory string; ``Flat`` is exact and ranks as the exact search does).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench.head import FeatureSet, Head, l2_normalize
from cnnbench.metrics import _trapezoid_ap, ranked_average_precision
from cnnbench.retrieval import Whitening, pyramid_levels, pyramid_size, rank_database

log = logging.getLogger("cnnbench.heads.l2")


@hookimpl
def register_heads(register):
    register("l2", L2RetrievalHead,
             description="retrieval by L2 distance (PCA-whitened, spatial search); Oxford AP, Holidays mAP, UKBench top-4")


class L2RetrievalHead(Head):
    name = "l2"
    tasks = ("multiclass", "retrieval")
    primary_metric = "mAP"
    diagnostics = ("top4_score", "n_queries", "pca_dim_used")

    def __init__(self, query_batch: int = 1024, pca_dim: int | str | None = "auto", whiten: bool = True,
                 power: float = 1.0, pca_fit: str = "database", pca_layer: str | None = None,
                 index: str = "exact", faiss_min_database: int = 100_000, faiss_index: str = "Flat",
                 levels: list[int] | tuple[int, int] | None = (4, 3), multi_vector: str = "min_mean",
                 exclude_self: bool | None = None):
        super().__init__(query_batch=query_batch, pca_dim=pca_dim, whiten=whiten, power=power, pca_fit=pca_fit,
                         pca_layer=pca_layer, index=index, faiss_min_database=faiss_min_database,
                         faiss_index=faiss_index, levels=None if levels is None else list(levels),
                         multi_vector=multi_vector, exclude_self=exclude_self)
        if not (pca_dim in ("auto", None) or (isinstance(pca_dim, int) and pca_dim > 0)):
            raise ValueError(f"l2: pca_dim must be 'auto', null (no PCA) or a positive integer, got {pca_dim!r}")
        if index not in ("exact", "faiss", "auto"):
            raise ValueError(f"l2: index must be 'exact', 'faiss' or 'auto', got {index!r}")
        if multi_vector not in ("min_mean", "mean"):
            raise ValueError(f"l2: multi_vector must be 'min_mean' (the paper's spatial search) or 'mean', got {multi_vector!r}")
        if levels is not None and (len(levels) != 2 or min(int(v) for v in levels) < 1):
            raise ValueError(f"l2: levels must be [h_database, h_queries] with h >= 1 (paper: [4, 3]), got {levels!r}")
        if pca_fit not in ("database", "queries") and not str(pca_fit).endswith((".h5", ".hdf5")):
            raise ValueError(f"l2: pca_fit must be 'database', 'queries' or the path of a .h5 feature file, got {pca_fit!r}")
        self.query_batch, self.pca_dim, self.whiten, self.power = int(query_batch), pca_dim, bool(whiten), float(power)
        self.pca_fit, self.pca_layer, self.index = pca_fit, pca_layer, index
        self.faiss_min_database, self.faiss_index = int(faiss_min_database), faiss_index
        self.levels = None if levels is None else (int(levels[0]), int(levels[1]))
        self.multi_vector, self.exclude_self = multi_vector, exclude_self

    def primary_metric_for(self, task: str, metric: str | None) -> str:
        return "top4" if task == "retrieval" and metric == "top4" else "mAP"

    # -- descriptors ---------------------------------------------------------------------------------
    def _patches(self, x: np.ndarray, side: int) -> np.ndarray:
        """Keep the configured pyramid levels of (N, P, D) features (side 0: database, 1: queries)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            return x
        if x.ndim != 3:
            raise ValueError(f"l2: features must be (N, D) or (N, P, D), got shape {x.shape}")
        h = pyramid_levels(x.shape[1])
        if self.levels is not None and h is not None and x.shape[1] > 1:
            want = self.levels[side]
            if want > h:
                which = "database" if side == 0 else "query"
                raise ValueError(f"l2: levels asks for {want} pyramid levels of the {which} images but the features "
                                 f"hold {h} ({x.shape[1]} patches); extract more levels or set levels: [..]")
            x = x[:, : pyramid_size(want)]
        if self.multi_vector == "mean" or x.shape[1] == 1:
            return l2_normalize(l2_normalize(x).mean(axis=1))
        return x

    def _whitening(self, database: np.ndarray, queries: np.ndarray, task: str) -> Whitening:
        dim = self.pca_dim
        if dim == "auto":
            dim = 500 if task == "retrieval" else None
        w = Whitening(dim, self.whiten, self.power)
        if dim is None:
            return w.fit(database[:1])
        if self.pca_fit == "database":
            fit_on = database
        elif self.pca_fit == "queries":
            fit_on = queries
        else:
            from cnnbench import store

            path = Path(self.pca_fit)
            if not path.exists():
                raise FileNotFoundError(f"l2: pca_fit file {path} does not exist; extract it first or use pca_fit: database")
            fit_on = store.read(path, self.pca_layer).features
        if fit_on.shape[-1] != database.shape[-1]:
            raise ValueError(f"l2: pca_fit descriptors have {fit_on.shape[-1]} dimensions, the features {database.shape[-1]}; "
                             "use a feature file of the same backbone and layer")
        return w.fit(fit_on)

    def _index(self, n_database: int, spatial: bool) -> str:
        if self.index == "auto":
            return "faiss" if n_database >= self.faiss_min_database and not spatial else "exact"
        return self.index

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        if task == "multiclass":
            return self._evaluate_classes(train, test)
        if task == "retrieval":
            return self._evaluate_retrieval(train, test, metric or "mAP")
        raise ValueError(f"l2 head handles multiclass and retrieval data sets, not {task!r}")

    def _evaluate_classes(self, train: FeatureSet, test: FeatureSet) -> dict[str, float]:
        y = np.asarray(test.labels)
        n = len(y)
        if n < 2:
            raise ValueError("l2 retrieval needs at least two test images")
        db_raw = self._patches(train.features, 0)
        x_raw = self._patches(test.features, 0)
        w = self._whitening(db_raw, x_raw, "multiclass")
        X = w.transform(x_raw)
        index = self._index(n, X.ndim == 3)
        order, _ = rank_database(X, X, index=index, batch=self.query_batch, faiss_index=self.faiss_index)
        # drop the query itself from its ranking
        rows = np.arange(n)[:, None]
        order = order[order != rows].reshape(n, n - 1)  # a full ranking lists every image once
        rel = y[order] == y[:, None]
        ap = ranked_average_precision(rel)
        return {"mAP": float(np.nanmean(ap)), "nn_accuracy": float(rel[:, 0].mean())}

    def _evaluate_retrieval(self, database: FeatureSet, queries: FeatureSet, metric: str) -> dict[str, float]:
        if metric not in ("mAP", "top4"):
            raise ValueError(f"l2: retrieval metric must be 'mAP' (Oxford/Paris/Holidays AP) or 'top4' (UKBench), "
                             f"got the data set's metric {metric!r}")
        gt = queries.extras.get("ground_truth")
        if not gt:
            raise ValueError("l2: a retrieval data set must give extras['ground_truth'] = {query_id: {'positives': [...], "
                             "'junk': [...]}} in its test (queries) split; this one has none")
        q_rows = [i for i, qid in enumerate(queries.ids) if qid in gt]
        if not q_rows:
            raise ValueError(f"l2: none of the {len(queries)} query ids appears in the ground truth "
                             f"(e.g. {list(gt)[:3]}); do the queries split and the ground truth use the same ids?")
        if len(q_rows) < len(queries):
            log.warning("l2: %d of %d queries have no ground truth and are skipped", len(queries) - len(q_rows), len(queries))
        db_raw = self._patches(database.features, 0)
        q_raw = self._patches(np.asarray(queries.features)[q_rows], 1)
        if (db_raw.ndim == 3) != (q_raw.ndim == 3):
            raise ValueError(f"l2: database features {db_raw.shape} and query features {q_raw.shape} must both have a "
                             "patch axis or neither")
        w = self._whitening(db_raw, q_raw, "retrieval")
        db, q = w.transform(db_raw), w.transform(q_raw)
        order, _ = rank_database(q, db, index=self._index(len(db), db.ndim == 3), batch=self.query_batch,
                                 faiss_index=self.faiss_index)
        db_ids = np.asarray(database.ids)
        pos_in_db = {i: k for k, i in enumerate(db_ids)}
        default_exclude = bool(queries.extras.get("exclude_self", False))
        n_db = len(db_ids)
        aps, top4 = [], []
        for row, r in enumerate(q_rows):
            qid = queries.ids[r]
            entry = gt[qid]
            positives = set(entry.get("positives", []))
            junk = set(entry.get("junk", []))
            excl = self.exclude_self if self.exclude_self is not None else bool(entry.get("exclude_self", default_exclude))
            if excl:
                junk.add(qid)
                positives.discard(qid)
            # boolean lookups over database rows: vectorised per query (UKBench: 10k x 10k)
            is_junk = np.zeros(n_db, dtype=bool)
            is_junk[[pos_in_db[i] for i in junk if i in pos_in_db]] = True
            is_pos = np.zeros(n_db, dtype=bool)
            is_pos[[pos_in_db[i] for i in positives if i in pos_in_db]] = True
            ranked = order[row][~is_junk[order[row]]]
            hit = is_pos[ranked]
            if positives:
                aps.append(_trapezoid_ap(hit, len(positives)))
            if metric == "top4":
                if qid in pos_in_db and not excl:
                    is_pos[pos_in_db[qid]] = True  # UKBench: the query is one of its object's 4 images
                top4.append(int(is_pos[ranked[:4]].sum()))
        if not aps:
            raise ValueError("l2: no query has a positive in the ground truth")
        out = {"mAP": float(np.mean(aps)), "n_queries": float(len(aps)), "pca_dim_used": float(w.out_dim or db.shape[-1])}
        if metric == "top4":
            score = float(np.mean(top4))
            out.update({"top4": score / 4.0, "top4_score": score})
        return out

