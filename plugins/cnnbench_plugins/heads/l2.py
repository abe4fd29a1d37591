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
from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, Head, l2_normalize
from cnnbench.metrics import _trapezoid_ap, ranked_average_precision
from cnnbench.retrieval import Whitening, pyramid_levels, pyramid_size, rank_database

from ._common import refuse_unknown

log = logging.getLogger("cnnbench.heads.l2")


class PcaFitMissing(UserError, FileNotFoundError):
    """The ``pca_fit`` feature file does not exist (a :class:`FileNotFoundError` too, for library callers)."""


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
                 exclude_self: bool | None = None, **unknown):
        refuse_unknown("l2", unknown, L2RetrievalHead.__init__)
        query_batch = O.as_int("l2: query_batch", query_batch, min=1,
                               fix="the number of queries ranked at once (default 1024); lower it to save memory")
        if pca_dim not in ("auto", None):
            pca_dim = O.as_int("l2: pca_dim", pca_dim, min=1,
                               fix="or 'auto' (500 for retrieval data sets, no PCA for class data sets), or null "
                                   "for no PCA")
        whiten = O.as_bool("l2: whiten", whiten)
        power = O.as_float("l2: power", power, min=0, min_exclusive=True,
                           fix="the signed power transform sign(x)|x|^power; 1 turns it off")
        if not (pca_fit in ("database", "queries") or (isinstance(pca_fit, str) and pca_fit.endswith((".h5", ".hdf5")))):
            raise UserError(f"l2: pca_fit: {pca_fit!r} is not allowed; expected 'database', 'queries' or the path of "
                            "a .h5 feature file")
        if pca_layer is not None and not (isinstance(pca_layer, str) and pca_layer):
            raise UserError(f"l2: pca_layer: {pca_layer!r} is not allowed; expected a layer name of the pca_fit "
                            "feature file, or null for its default layer")
        index = O.one_of("l2: index", index, ("exact", "faiss", "auto"))
        faiss_min_database = O.as_int("l2: faiss_min_database", faiss_min_database, min=1,
                                      fix="the database size from which index: auto uses FAISS")
        if not (isinstance(faiss_index, str) and faiss_index):
            raise UserError(f"l2: faiss_index: {faiss_index!r} is not allowed; expected a FAISS index factory string "
                            "such as 'Flat' (exact) or 'IVF256,Flat'")
        if levels is not None:
            if len(O.as_list("l2: levels", levels, allow_scalar=False)) != 2:
                raise UserError(f"l2: levels: {levels!r} is not allowed; expected [h_database, h_queries], two "
                                "pyramid depths >= 1 (paper: [4, 3]), or null to use every patch")
            levels = O.int_list("l2: levels", levels, min=1, min_len=2)
        multi_vector = O.one_of("l2: multi_vector", multi_vector, ("min_mean", "mean"))
        if exclude_self is not None:
            exclude_self = O.as_bool("l2: exclude_self", exclude_self)
        super().__init__(query_batch=query_batch, pca_dim=pca_dim, whiten=whiten, power=power, pca_fit=pca_fit,
                         pca_layer=pca_layer, index=index, faiss_min_database=faiss_min_database,
                         faiss_index=faiss_index, levels=levels, multi_vector=multi_vector, exclude_self=exclude_self)
        self.query_batch, self.pca_dim, self.whiten, self.power = query_batch, pca_dim, whiten, power
        self.pca_fit, self.pca_layer, self.index = pca_fit, pca_layer, index
        self.faiss_min_database, self.faiss_index = faiss_min_database, faiss_index
        self.levels = None if levels is None else (levels[0], levels[1])
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
            raise UserError(f"l2: features must be (N, D) or (N, P, D), got shape {x.shape}; "
                            "extract a pooled layer (pooling avg or max)")
        h = pyramid_levels(x.shape[1])
        if self.levels is not None and h is not None and x.shape[1] > 1:
            want = self.levels[side]
            if want > h:
                which = "database" if side == 0 else "query"
                raise UserError(f"l2: levels asks for {want} pyramid levels of the {which} images but the features "
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
                raise PcaFitMissing(f"l2: pca_fit: {path} does not exist; extract it first or use pca_fit: database")
            fit_on = store.read(path, self.pca_layer).features
        n_fit = int(np.prod(np.shape(fit_on)[:-1]))
        if n_fit < 2:
            raise UserError(f"l2: PCA (pca_dim: {self.pca_dim}) needs at least 2 descriptors to fit, pca_fit: "
                            f"{self.pca_fit} gives {n_fit}; set pca_dim: null to skip PCA, or fit on another set")
        if fit_on.shape[-1] != database.shape[-1]:
            raise UserError(f"l2: pca_fit descriptors have {fit_on.shape[-1]} dimensions, the features {database.shape[-1]}; "
                            "use a feature file of the same backbone and layer")
        return w.fit(fit_on)

    def _index(self, n_database: int, spatial: bool, dim: int) -> str:
        index = self.index
        if index == "auto":
            index = "faiss" if n_database >= self.faiss_min_database and not spatial else "exact"
        elif index == "faiss" and spatial:
            raise UserError("l2: index: 'faiss' cannot search patch features (spatial search or views) and runs "
                            "exactly only; use index: exact (or auto), or multi_vector: mean for one descriptor per image")
        if index == "faiss":
            try:
                import faiss
            except ImportError:
                raise UserError("l2: index: faiss needs the faiss-cpu package (pip install faiss-cpu); "
                                "or use index: exact") from None
            try:
                faiss.index_factory(dim, self.faiss_index, faiss.METRIC_L2)
            except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a C++ message
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"l2: faiss_index: {self.faiss_index!r} is not a FAISS index factory string for "
                                f"{dim}-dimensional descriptors ({first}); use e.g. 'Flat' (exact)") from None
        return index

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *, metric: str | None = None) -> dict[str, float]:
        if task == "multiclass":
            return self._evaluate_classes(train, test)
        if task == "retrieval":
            return self._evaluate_retrieval(train, test, metric or "mAP")
        raise UserError(f"l2: the l2 head handles multiclass and retrieval data sets, not a {task} one; "
                        "use the svm head for multilabel data sets")

    def _evaluate_classes(self, train: FeatureSet, test: FeatureSet) -> dict[str, float]:
        y = np.asarray(test.labels)
        n = len(y)
        if n < 2:
            raise UserError(f"l2: ranking the test images against each other needs at least two test images, "
                            f"the trial has {n}; check the data set's split options")
        db_raw = self._patches(train.features, 0)
        x_raw = self._patches(test.features, 0)
        w = self._whitening(db_raw, x_raw, "multiclass")
        X = w.transform(x_raw)
        index = self._index(n, X.ndim == 3, X.shape[-1])
        order, _ = rank_database(X, X, index=index, batch=self.query_batch, faiss_index=self.faiss_index)
        # drop the query itself from its ranking
        rows = np.arange(n)[:, None]
        order = order[order != rows].reshape(n, n - 1)  # a full ranking lists every image once
        rel = y[order] == y[:, None]
        ap = ranked_average_precision(rel)
        return {"mAP": float(np.nanmean(ap)), "nn_accuracy": float(rel[:, 0].mean())}

    def _evaluate_retrieval(self, database: FeatureSet, queries: FeatureSet, metric: str) -> dict[str, float]:
        if metric not in ("mAP", "top4"):
            raise UserError(f"l2: retrieval metric must be 'mAP' (Oxford/Paris/Holidays AP) or 'top4' (UKBench), "
                            f"got the data set's metric {metric!r}")
        gt = queries.extras.get("ground_truth")
        if not gt:
            raise UserError("l2: a retrieval data set must give extras['ground_truth'] = {query_id: {'positives': [...], "
                            "'junk': [...]}} in its test (queries) split; this one has none")
        q_rows = [i for i, qid in enumerate(queries.ids) if qid in gt]
        if not q_rows:
            raise UserError(f"l2: none of the {len(queries)} query ids appears in the ground truth "
                            f"(e.g. {list(gt)[:3]}); do the queries split and the ground truth use the same ids?")
        if len(q_rows) < len(queries):
            log.warning("l2: %d of %d queries have no ground truth and are skipped", len(queries) - len(q_rows), len(queries))
        db_raw = self._patches(database.features, 0)
        q_raw = self._patches(np.asarray(queries.features)[q_rows], 1)
        if (db_raw.ndim == 3) != (q_raw.ndim == 3):
            raise UserError(f"l2: database features {db_raw.shape} and query features {q_raw.shape} must both have a "
                            "patch axis or neither")
        w = self._whitening(db_raw, q_raw, "retrieval")
        db, q = w.transform(db_raw), w.transform(q_raw)
        order, _ = rank_database(q, db, index=self._index(len(db), db.ndim == 3, db.shape[-1]), batch=self.query_batch,
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
            raise UserError("l2: no query has a positive in the ground truth (or none of its positives was "
                            "extracted); check the data set's ground-truth files")
        out = {"mAP": float(np.mean(aps)), "n_queries": float(len(aps)), "pca_dim_used": float(w.out_dim or db.shape[-1])}
        if metric == "top4":
            score = float(np.mean(top4))
            out.update({"top4": score / 4.0, "top4_score": score})
        return out

