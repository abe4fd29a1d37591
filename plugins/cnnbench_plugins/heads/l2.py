"""``l2``: retrieval by L2 distance, as Razavian et al. 2014 publish it.

Descriptors: L2-normalise → PCA to ``pca_dim`` (paper: 500; clipped to what the fitting set
allows; skipped by ``auto`` on a small fitting set, see the end) → whitening → L2-normalise →
signed power ``power`` (paper's retrieval: a signed power transform; 1 = off). See
:mod:`cnnbench.retrieval`.

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

  - ``mAP_medium`` (``roxford5k``, ``rparis6k``: the revisited protocol, Radenović et al. 2018),
    or any ground truth whose entries carry ``"easy"`` and ``"hard"``: scored as revisitop's
    ``compute_map`` (:func:`cnnbench.metrics.revisited_scores`) in the Easy, Medium and Hard
    settings, reported as ``mAP_easy``, ``mAP_medium``, ``mAP_hard`` and ``mP@1_<setting>``,
    ``mP@5_<setting>``, ``mP@10_<setting>`` (fractions); ``mAP_medium`` is the primary metric. No
    plain ``mAP`` is reported there: it would read like the original protocol's, which it is not.
    Queries are not database images, so ``exclude_self`` has nothing to exclude.

  Queries without a ground-truth entry are skipped; positives absent from the database (images
  skipped at extraction) still count in ``|positives|``, as compute_ap counts every listed image.

``pca_fit`` names the descriptors PCA/whitening is fitted on: ``database`` (default: the
retrieval database, i.e. the train selection; unsupervised, and the usual choice when no
independent set is at hand), ``queries`` (the test selection), or the path of a feature file
(``.h5``: another split of the same data set, ``features/<backbone>/<dataset>/<split>.h5``, or
another data set's features, e.g. Paris6k's for Oxford5k: the independent-set protocol);
``pca_layer`` picks its layer. A head sees only the trial's two selections, so splits other
than the database and the queries are named by their file.

Spatial search: features with a view axis (N, V, D). Spatial sub-patches are recognised by their
stored names (``FeatureSet.views``: ``l{level}_r{row}_c{col}``), so the pyramid depth of each side
is the one it was extracted with (``extract.spatial_levels``; paper: 4 for the database, 3 for the
queries): ``levels: null`` (default) uses every stored level, ``levels: [h_database, h_queries]``
keeps the first levels of each side (an override for experiments; deeper than stored is an error).
The distance is :func:`cnnbench.retrieval.spatial_distance` (min over database patches, mean over
query patches). Any other view axis (the 16 jittered views the paper uses for Holidays and
UKBench, or views without names) is used as is with the same distance; ``levels`` does not apply.
``multi_vector: mean`` instead averages the views into one descriptor.

Large galleries: ``index: faiss`` (or ``auto`` with a database of at least ``faiss_min_database``
images) searches with a FAISS index (:mod:`cnnbench.ann`): ``index_factory`` (former name
``faiss_index``, still accepted; both given and different is an error) is a FAISS factory string,
or ``auto`` (default): ``Flat`` (exact) below 100k indexed vectors, ``IVF{4·sqrt(N)},PQ{D/4}`` (PQ
codes ≥ 8x smaller than float32) from there on, trained on a seeded sample (``train_size``,
``seed``) and searched with ``nprobe`` lists. The index only proposes candidates: ``rerank`` per
query (whole-image search), or for spatial search ``candidates`` patches per query patch, whose
images are re-scored exactly with the spatial distance; so ``Flat`` ranks exactly as ``index:
exact`` does. Database images no candidate named follow the re-ranked ones in database order.

Distractors (R1M): a retrieval data set's ``distractors`` option (:class:`cnnbench.retrieval.Distractors`)
reaches the head in the database's ``extras``; its images follow the database's rows, never count
as positives, and appear in the rankings by their ids. PCA-whitening is fitted on the real database
only (revisitop's convention), then applied to the distractors chunk by chunk as they are read. The
database size that ``index: auto`` compares with ``faiss_min_database`` counts them. With FAISS the
real database is ranked exactly and the distractors are streamed from their file into the index
(never held whole as float32 under a compressed factory), their candidates re-scored from the file;
with ``index: exact`` they are loaded whole (:func:`cnnbench.retrieval.rank_with_distractors`).

PCA-whitening on small sets. Whitening divides each principal component by the square root of its
eigenvalue, so components estimated from too few descriptors (noise) get the same weight as real
ones: a 163-image Holidays set scored 53.2 % mAP with ``pca_dim: auto`` (500) against 81.0 % without
PCA, silently. The rule: a fitting set is *small* when it has fewer than ``MIN_FIT_PER_DIM`` (2)
descriptors per requested dimension (rows: images, or images x views). Then ``pca_dim: auto`` skips
PCA (the plain L2 descriptors are ranked), and an explicit ``pca_dim`` is honoured (clipped to the
set's rank, as always); both say so in a warning and in the diagnostics ``pca_small_set`` (1/0),
``pca_fit_size`` (descriptors fitted on; 0 without PCA) and ``pca_dim_used``. Sets of 1000
descriptors or more (Oxford5k, Paris6k, Holidays' 1491 images, UKBench) keep the paper's PCA 500.

Chosen by measurement (``python benchmarks/pca_small_sets.py --features /tmp/l2feat``, after
``cnnbench extract -b effnet-lite0 -d oxford5k-subset --data-root ../shared/data --out /tmp/l2feat``):
l2 mAP % on databases of n images holding every query's positives, PCA fitted on the database,
mean over 5 seeds (std 0.3-2.9; 10 queries, approximate ground truth):

=====================================  =====  =====  =====  =====  =====  ======
variant                                n=100    160    200    300    500    1008
=====================================  =====  =====  =====  =====  =====  ======
no PCA                                  50.3   45.2   43.0   39.7   34.3    26.8
PCA 500, plain whitening (before)       37.3   32.5   30.0   26.5   20.3    24.3
``auto`` now (no PCA when small)        50.3   45.2   43.0   39.7   34.3    24.3
dimension capped to n/2                 46.1   41.0   40.7   36.4   30.8    24.3
dimension capped to n/4                 46.9   40.3   36.9   35.4   32.5    26.1
500, power-law whitening (λ^-1/4)       45.3   40.8   38.9   35.2   32.3    27.9
500, shrinkage (λ + 5·mean λ)           47.5   41.9   40.3   36.4   33.3    27.3
500, Ledoit-Wolf shrinkage              38.2   33.9   31.7   28.5   25.2    24.4
capped to n/2 + power-law (λ^-1/4)      49.2   43.5   41.8   38.6   34.3    27.9
500, no whitening                       47.7   42.2   40.2   37.0   32.6    25.9
=====================================  =====  =====  =====  =====  =====  ======

No cap, eigenvalue floor or shrinkage beat skipping PCA on any small set (the best, a cap plus
power-law whitening, stays 1-2 points below, within noise), so ``auto`` skips it: the simplest rule,
and on a small set exactly the plain L2 baseline. Between the two regimes plain PCA 500 still costs
6.7 points at n = 700 and 5.1 at n = 900 (``--sizes 700 900 --seeds 3``), 2.5 at 1008.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.errors import UserError
from cnnbench.head import FeatureSet, Head, l2_normalize, load_features
from cnnbench.metrics import (
    REVISITED_SETTINGS,
    ranked_average_precision,
    retrieval_scores,
    revisited_scores,
)
from cnnbench.outcomes import KEY as OUTCOMES
from cnnbench.outcomes import RANKING_DEPTH, Outcomes
from cnnbench.retrieval import (
    DISTRACTORS_KEY,
    Whitening,
    check_factory,
    rank_database,
    rank_with_distractors,
    spatial_view_levels,
)

from ._common import MAX_CHUNK

log = logging.getLogger("cnnbench.heads.l2")
MAX_CANDIDATES = 100_000  # FAISS results per query (rerank, candidates): queries x candidates ids and scores

AUTO_PCA_DIM = 500  # pca_dim: auto on retrieval data sets (the paper's)
MIN_FIT_PER_DIM = 2  # fewer fitting descriptors per PCA dimension: a small set (see the module docstring)
REVISITED_KAPPAS = (1, 5, 10)  # mP@k of the revisited protocol, as revisitop reports them


class PcaFitMissing(UserError, FileNotFoundError):
    """The ``pca_fit`` feature file does not exist (a :class:`FileNotFoundError` too, for library callers)."""


@hookimpl
def register_heads(register):
    register("l2", L2RetrievalHead,
             description="retrieval by L2 distance (PCA-whitened, spatial search); Oxford AP, Holidays mAP, UKBench top-4")


def _pca_dim(name: str, value) -> int | str:
    """``auto`` or a number of dimensions (null, no PCA, is let through before this check)."""
    if value == "auto":
        return value
    return O.as_int(name, value, min=1, fix=f"or 'auto' ({AUTO_PCA_DIM} for retrieval data sets, no PCA for class "
                                            "data sets), or null for no PCA")


def _pca_fit(name: str, value) -> str:
    if not (value in ("database", "queries") or (isinstance(value, str) and value.endswith((".h5", ".hdf5")))):
        raise UserError(f"{name}: {value!r} is not allowed; expected 'database', 'queries' or the path of a .h5 "
                        "feature file")
    return value


def _pca_layer(name: str, value) -> str:
    if not (isinstance(value, str) and value):
        raise UserError(f"{name}: {value!r} is not allowed; expected a layer name of the pca_fit feature file, or "
                        "null for its default layer")
    return value


def _factory(name: str, value):
    """index_factory and faiss_index are checked together, in :meth:`L2Options.check`: which of the two
    names was given decides the name an error uses, and two different values are refused first."""
    return value


def _levels(name: str, value) -> tuple[int, int]:
    if len(O.as_list(name, value, allow_scalar=False)) != 2:
        raise UserError(f"{name}: {value!r} is not allowed; expected [h_database, h_queries], two pyramid depths >= 1 "
                        "(paper: [4, 3]), or null for the levels each side was extracted with")
    h_database, h_queries = O.int_list(name, value, min=1, min_len=2)  # at most the stored ones (_views)
    return h_database, h_queries


@dataclasses.dataclass(frozen=True)
class L2Options(O.Options):
    """The l2 head's options (the module docstring says what each does)."""

    query_batch: int = O.option(1024, "queries ranked at once", min=1, max=MAX_CHUNK,
                                fix="the number of queries ranked at once (default 1024); lower it to save memory")
    pca_dim: int | str | None = O.option("auto", f"PCA dimensions; auto: {AUTO_PCA_DIM} on retrieval data sets "
                                                 "(none on a small fitting set), no PCA on class data sets; null: "
                                                 "no PCA", check=_pca_dim)
    whiten: bool = O.option(True, "whiten the PCA components")
    power: float = O.option(1.0, "signed power sign(x)|x|^power of the descriptors (1: off)", min=0,
                            min_exclusive=True, fix="the signed power transform sign(x)|x|^power; 1 turns it off")
    pca_fit: str = O.option("database", "what PCA-whitening is fitted on: database, queries, or a .h5 feature file",
                            check=_pca_fit)
    pca_layer: str | None = O.option(None, "the layer of the pca_fit feature file (null: its default layer)",
                                     check=_pca_layer)
    index: Literal["exact", "faiss", "auto"] = O.option("exact", "exact search, a FAISS index, or auto (FAISS from "
                                                                 "faiss_min_database images on)")
    faiss_min_database: int = O.option(100_000, "the database size from which index: auto uses FAISS", min=1,
                                       fix="the database size from which index: auto uses FAISS")
    index_factory: str | None = O.option(None, "a FAISS index factory string (Flat, IVF1024,PQ125, ...), or auto "
                                               "(default; null too): chosen by database size", check=_factory)
    faiss_index: str | None = O.option(None, "index_factory's former name, still accepted", check=_factory,
                                       record=False)  # folded into index_factory by check()
    nprobe: int = O.option(32, "the IVF lists visited per query", min=1,
                           fix="the IVF lists visited per query (default 32)")
    rerank: int = O.option(1000, "candidates per query re-scored exactly with index: faiss", min=1,
                           max=MAX_CANDIDATES,
                           fix="the candidates per query re-scored exactly with index: faiss (default 1000)")
    candidates: int = O.option(500, "patches retrieved per query patch in spatial search with index: faiss", min=1,
                               max=MAX_CANDIDATES, fix="the patches retrieved per query patch in spatial search with "
                                                       "index: faiss (default 500)")
    train_size: int | None = O.option(None, "the vectors a FAISS index is trained on (null: 32 per IVF list)", min=1,
                                      fix="the vectors a FAISS index is trained on, or null for 32 per IVF list")
    seed: int = O.option(0, "the seed of the FAISS training sample", min=0, fix="the seed of the FAISS training sample")
    levels: tuple[int, ...] | None = O.option(None, "[h_database, h_queries]: the spatial pyramid levels kept "
                                                    "(null: the stored ones)", check=_levels)
    multi_vector: Literal["min_mean", "mean"] = O.option("min_mean", "views: spatial distance (min over database "
                                                                     "patches, mean over query patches), or mean: one "
                                                                     "averaged descriptor")
    exclude_self: bool | None = O.option(None, "remove the query from its ranking (null: as the ground truth says)")

    def check(self, owner: str) -> "L2Options":
        """index_factory is the documented name (issue 13), faiss_index its first name, still accepted:
        two different values are refused, an error names the one given. The copy holds the factory in
        index_factory (``auto``: neither given), and faiss_index only where it was the name used."""
        given, former = self.index_factory, self.faiss_index
        name = f"{owner}: faiss_index" if given is None and former is not None else f"{owner}: index_factory"
        if given is not None and former is not None and given != former:
            raise UserError(f"{owner}: index_factory: {given!r} and faiss_index: {former!r} name the same option "
                            "(faiss_index is its former name); give only index_factory")
        factory = given if given is not None else former if former is not None else "auto"
        if not (isinstance(factory, str) and factory):
            raise UserError(f"{name}: {factory!r} is not allowed; expected a FAISS index factory string such as "
                            "'Flat' (exact) or 'IVF1024,PQ125', or 'auto' (chosen by database size)")
        return dataclasses.replace(self, index_factory=factory, faiss_index=former if given is None else None)


class L2RetrievalHead(Head):
    name = "l2"
    tasks = ("multiclass", "retrieval")
    primary_metric = "mAP"
    takes_distractors = True  # streams a retrieval database's distractors (cnnbench.retrieval.Distractors)
    diagnostics = ("top4_score", "n_queries", "pca_dim_used", "pca_fit_size", "pca_small_set",
                   *(f"n_queries_{s}" for s in REVISITED_SETTINGS))
    Options = L2Options

    def setup(self) -> None:
        # errors name the option given: faiss_index is left set only when it was that one (L2Options.check)
        self._factory_option = "l2: faiss_index" if self.opts.faiss_index is not None else "l2: index_factory"
        self._levels_warned = False

    def primary_metric_for(self, task: str, metric: str | None) -> str:
        if task == "retrieval" and metric in ("top4", "mAP_medium"):
            return metric
        return "mAP"

    # -- descriptors ---------------------------------------------------------------------------------
    def _patches(self, fs: FeatureSet, side: int, rows=None) -> np.ndarray:
        """Descriptors of ``fs`` (optionally its ``rows``) for search: (N, D), or (N, V, D) with the
        spatial levels kept for ``side`` (0: database, 1: queries), as the stored view names say."""
        x = np.asarray(fs.features, dtype=np.float32)
        if rows is not None:
            x = x[rows]
        return self._views(x, fs.views, side)

    def _views(self, x: np.ndarray, views, side: int) -> np.ndarray:
        """:meth:`_patches` on an array whose view axis is named by ``views`` (a distractor chunk too)."""
        if x.ndim == 2:
            return x
        if x.ndim != 3:
            raise UserError(f"l2: features must be (N, D) or (N, V, D), got shape {x.shape}; "
                            "extract a pooled layer (pooling avg or max)")
        if views is not None and len(views) != x.shape[1]:
            raise UserError(f"l2: the features have {x.shape[1]} views but {len(views)} view names; "
                            "re-extract the feature file")
        level_of = spatial_view_levels(views)
        if level_of is not None and self.levels is not None:
            want, stored = self.levels[side], int(level_of.max())
            if want > stored:
                which = "database" if side == 0 else "query"
                raise UserError(f"l2: levels: {list(self.levels)} asks for {want} pyramid levels of the {which} "
                                f"images, extracted with {stored}; extract with spatial_levels: {want} or set "
                                "levels: null to use the stored ones")
            x = x[:, level_of <= want]
        elif self.levels is not None and not self._levels_warned:
            self._levels_warned = True  # once per head, not per side and trial
            names = "unnamed" if views is None else ", ".join(map(str, views[:3])) + ", …"
            log.warning("l2: levels: %s ignored: the features' %d views are not spatial sub-patches (%s)",
                        list(self.levels), x.shape[1], names)
        if self.multi_vector == "mean" or x.shape[1] == 1:
            return l2_normalize(l2_normalize(x).mean(axis=1))
        return x

    def _whitening(self, database: np.ndarray, queries: np.ndarray, task: str) -> tuple[Whitening, dict[str, float]]:
        """The fitted PCA-whitening and its diagnostics; on a small fitting set, the rule of the module
        docstring (auto: no PCA; an explicit pca_dim: kept), said on the terminal and in the metrics."""
        auto = self.pca_dim == "auto"
        dim = (AUTO_PCA_DIM if task == "retrieval" else None) if auto else self.pca_dim
        if dim is None:
            return Whitening(None, self.whiten, self.power).fit(database[:1]), {"pca_fit_size": 0.0, "pca_small_set": 0.0}
        if self.pca_fit == "database":
            fit_on = database
        elif self.pca_fit == "queries":
            fit_on = queries
        else:
            path = Path(self.pca_fit)
            if not path.exists():
                raise PcaFitMissing(f"l2: pca_fit: {path} does not exist; extract it first or use pca_fit: database")
            fit_on = load_features(path, self.pca_layer).features
        if fit_on.shape[-1] != database.shape[-1]:
            raise UserError(f"l2: pca_fit descriptors have {fit_on.shape[-1]} dimensions, the features {database.shape[-1]}; "
                            "use a feature file of the same backbone and layer")
        n_fit = int(np.prod(np.shape(fit_on)[:-1]))
        small = n_fit < MIN_FIT_PER_DIM * dim
        info = {"pca_fit_size": float(n_fit), "pca_small_set": float(small)}
        if small and auto:
            log.warning("l2: pca_dim: auto: %d descriptors (pca_fit: %s) are too few to fit PCA-whitening to %d "
                        "dimensions (at least %d wanted); PCA skipped, as measured safest; set pca_dim to force it, "
                        "or fit on a larger set (pca_fit: <features>.h5)", n_fit, self.pca_fit, dim, MIN_FIT_PER_DIM * dim)
            return Whitening(None, self.whiten, self.power).fit(database[:1]), info
        if n_fit < 2:
            raise UserError(f"l2: PCA (pca_dim: {self.pca_dim}) needs at least 2 descriptors to fit, pca_fit: "
                            f"{self.pca_fit} gives {n_fit}; set pca_dim: null to skip PCA, or fit on another set")
        if small:
            log.warning("l2: pca_dim: %d fitted on only %d descriptors (pca_fit: %s; at least %d wanted): "
                        "whitening that few amplifies noise and can cost much of the mAP; kept as asked, pca_dim: auto or null "
                        "skips PCA on small sets", dim, n_fit, self.pca_fit, MIN_FIT_PER_DIM * dim)
        return Whitening(dim, self.whiten, self.power).fit(fit_on), info

    def _index(self, n_database: int, spatial: bool, dim: int) -> str:
        """``exact`` or ``faiss`` for this database (``auto``: by size); a bad ``index_factory`` fails here, early."""
        index = self.index
        if index == "auto":
            index = "faiss" if n_database >= self.faiss_min_database else "exact"
        if index == "faiss":
            try:
                import faiss  # noqa: F401
            except ImportError:
                raise UserError("l2: index: faiss needs the faiss-cpu package (pip install faiss-cpu); "
                                "or use index: exact") from None
            if self.index_factory != "auto":
                check_factory(self.index_factory, dim, self._factory_option)
        return index

    def _rank(self, queries: np.ndarray, database: np.ndarray) -> np.ndarray:
        index = self._index(len(database), database.ndim == 3, database.shape[-1])
        order, _ = rank_database(queries, database, index=index, batch=self.query_batch, faiss_index=self.index_factory,
                                 nprobe=self.nprobe, rerank=self.rerank, candidates=self.candidates,
                                 train_size=self.train_size, seed=self.seed)
        return order

    def _rank_with_distractors(self, q: np.ndarray, db: np.ndarray, distractors, w: Whitening) -> np.ndarray:
        """The database, then the distractors (rows ``len(db) + j``), ranked for every query. The
        distractor vectors are read from their file in chunks, each given the database's descriptor
        pipeline (views kept, whitening): with ``index: exact`` (or a small set under ``auto``) they are
        loaded whole; with FAISS they are streamed into the index and only candidates read back, so a
        compressed index never holds them as float32 (:func:`cnnbench.retrieval.rank_with_distractors`)."""
        index = self._index(len(db) + len(distractors), db.ndim == 3, db.shape[-1])
        source = distractors.rows(lambda block: w.transform(self._views(block, distractors.views, 0)))
        try:
            if source.shape[1:] != db.shape[1:]:
                raise UserError(f"l2: distractors: {distractors.path} gives descriptors of shape {source.shape[1:]}, the "
                                f"database {db.shape[1:]}; extract them with the same --views and --levels")
            return rank_with_distractors(q, db, source, index=index, index_factory=self.index_factory,
                                         batch=self.query_batch, nprobe=self.nprobe, rerank=self.rerank,
                                         candidates=self.candidates, train_size=self.train_size, seed=self.seed)
        finally:
            source.close()

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
        db_raw = self._patches(train, 0)
        x_raw = self._patches(test, 0)
        w, pca = self._whitening(db_raw, x_raw, "multiclass")
        X = w.transform(x_raw)
        order = self._rank(X, X)
        # drop the query itself from its ranking
        rows = np.arange(n)[:, None]
        order = order[order != rows].reshape(n, n - 1)  # a full ranking lists every image once
        rel = y[order] == y[:, None]
        ap = ranked_average_precision(rel)
        kept = Outcomes(test.ids, labels=y, values={"mAP": ap, "nn_accuracy": rel[:, 0].astype(np.float64)},
                        ranking=_ranking(order, test.ids))
        return {"mAP": float(np.nanmean(ap)), "nn_accuracy": float(rel[:, 0].mean()),
                "pca_dim_used": float(w.out_dim or X.shape[-1]), **pca, OUTCOMES: kept}

    def _evaluate_retrieval(self, database: FeatureSet, queries: FeatureSet, metric: str) -> dict[str, float]:
        if metric not in ("mAP", "top4", "mAP_medium"):
            raise UserError(f"l2: retrieval metric must be 'mAP' (Oxford/Paris/Holidays AP), 'top4' (UKBench) or "
                            f"'mAP_medium' (revisited Oxford/Paris), got the data set's metric {metric!r}")
        gt = queries.extras.get("ground_truth")
        if not gt:
            raise UserError("l2: a retrieval data set must give extras['ground_truth'] = {query_id: {'positives': [...], "
                            "'junk': [...]}} in its test (queries) split; this one has none")
        revisited = _revisited(gt, metric)
        q_rows = [i for i, qid in enumerate(queries.ids) if qid in gt]
        if not q_rows:
            raise UserError(f"l2: none of the {len(queries)} query ids appears in the ground truth "
                            f"(e.g. {list(gt)[:3]}); do the queries split and the ground truth use the same ids?")
        if len(q_rows) < len(queries):
            log.warning("l2: %d of %d queries have no ground truth and are skipped", len(queries) - len(q_rows), len(queries))
        db_raw = self._patches(database, 0)
        q_raw = self._patches(queries, 1, q_rows)
        if (db_raw.ndim == 3) != (q_raw.ndim == 3):
            raise UserError(f"l2: database features {db_raw.shape} and query features {q_raw.shape} must both have a "
                            "view axis or neither")
        w, pca = self._whitening(db_raw, q_raw, "retrieval")  # fitted on the real database, never on distractors
        db, q = w.transform(db_raw), w.transform(q_raw)
        distractors = database.extras.get(DISTRACTORS_KEY)
        db_ids = database.ids
        if distractors is None:
            order = self._rank(q, db)
        else:
            order = self._rank_with_distractors(q, db, distractors, w)
            db_ids = np.concatenate([np.asarray(database.ids, dtype=object), distractors.ids])  # never a positive
        query_ids = [queries.ids[r] for r in q_rows]
        ranking = _ranking(order, db_ids)
        if revisited:
            scores, values = _revisited_metrics(order, db_ids, query_ids, gt)
            return {**scores, "pca_dim_used": float(w.out_dim or db.shape[-1]), **pca,
                    OUTCOMES: Outcomes(query_ids, values=values, ranking=ranking)}
        ap, top4 = retrieval_scores(order, db_ids, query_ids, gt,
                                    exclude_self=self.exclude_self,
                                    exclude_self_default=bool(queries.extras.get("exclude_self", False)))
        aps = ap[~np.isnan(ap)]
        if not len(aps):
            raise UserError("l2: no query has a positive in the ground truth (or none of its positives was "
                            "extracted); check the data set's ground-truth files")
        out = {"mAP": float(np.mean(aps)), "n_queries": float(len(aps)), "pca_dim_used": float(w.out_dim or db.shape[-1]),
               **pca}
        values = {"mAP": ap}
        if metric == "top4":
            score = float(np.mean(top4))
            out.update({"top4": score / 4.0, "top4_score": score})
            values["top4"] = top4 / 4.0
        out[OUTCOMES] = Outcomes(query_ids, values=values, ranking=ranking)
        return out


def _ranking(order: np.ndarray, database_ids) -> list[list[str]]:
    """Each query's first database ids (what ``cnnbench show`` draws)."""
    ids = np.asarray(database_ids)
    return [[str(i) for i in ids[row[:RANKING_DEPTH]]] for row in np.asarray(order)]


def _revisited(gt: dict, metric: str) -> bool:
    """Whether the ground truth is the revisited protocol's: every entry carries ``easy`` and ``hard``
    (a data set whose metric is ``mAP_medium`` must give them)."""
    has = [("easy" in e and "hard" in e) for e in gt.values() if isinstance(e, dict)]
    if any(has) and not all(has):
        raise UserError(f"l2: {has.count(False)} of {len(has)} ground-truth entries lack 'easy'/'hard' while the others "
                        "have them; a revisited data set gives both for every query (re-extract its queries split)")
    if metric == "mAP_medium" and not (has and all(has)):
        raise UserError("l2: the data set's metric is 'mAP_medium' (revisited protocol) but its ground truth has no "
                        "'easy'/'hard' lists; re-extract the queries split with the revisited data set")
    return bool(has) and all(has)


def _revisited_metrics(order: np.ndarray, database_ids, query_ids, gt: dict) -> tuple[dict[str, float], dict]:
    """``mAP_<setting>``, ``mP@<k>_<setting>`` and ``n_queries_<setting>`` for Easy, Medium and Hard,
    and the per-query values they are means of (NaN: the query has no positive in that setting)."""
    scores = revisited_scores(order, database_ids, query_ids, gt, REVISITED_KAPPAS)
    if not scores["medium"]["n_queries"]:
        raise UserError("l2: no query has a positive (easy or hard) in the ground truth, or none of them was "
                        "extracted; check the data set's ground-truth file")
    out: dict[str, float] = {}
    values: dict[str, np.ndarray] = {}
    for setting in REVISITED_SETTINGS:
        res = scores[setting]
        out[f"mAP_{setting}"] = res["mAP"]
        values[f"mAP_{setting}"] = res["ap"]
        for t, k in enumerate(REVISITED_KAPPAS):
            out[f"mP@{k}_{setting}"] = res[f"mP@{k}"]
            values[f"mP@{k}_{setting}"] = np.where(np.isnan(res["ap"]), np.nan, res["precision"][:, t])
        out[f"n_queries_{setting}"] = float(res["n_queries"])
    out["n_queries"] = float(scores["medium"]["n_queries"])
    return out, values
