"""PCA-whitening fitted on small retrieval databases: how much it costs, and what is safe instead.

The l2 head fits PCA-whitening on the retrieval database (``pca_fit: database``). With a few
hundred images, 500 whitened dimensions are mostly noise scaled up to unit variance (a 163-image
Holidays set: 53.2 % mAP against 81.0 % without PCA). This scores, on effnet-lite0 features of
``oxford5k-subset``, the whole database (1008 images) and smaller databases that keep every
query's positives (89 images) plus random others, several seeds each:

* through the head: no PCA (``pca_dim: null``), PCA 500 as the paper (``pca_dim: 500``: plain
  whitening, clipped to the fitting set's rank) and ``pca_dim: auto`` (the head's small-set rule);
* alternatives, computed here with :class:`cnnbench.retrieval.Whitening`'s eigenvectors: the
  dimension capped to a fraction of the set, power-law whitening (each component divided by
  ``eigenvalue ** (alpha / 2)``; alpha = 1 is plain whitening, 0 none), shrinkage of the
  eigenvalues towards their mean (``eigenvalue + beta * mean``; Ledoit-Wolf picks its own weight),
  and PCA without whitening.

    cnnbench extract -b effnet-lite0 -d oxford5k-subset --data-root ../shared/data --out /tmp/l2feat
    python benchmarks/pca_small_sets.py --features /tmp/l2feat [--sizes 100 160 200 300 500] [--seeds 5]

Approximate ground truth and 10 queries: differences of 1-2 points are noise (see the spread).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

# (name, pca dimension: an int or ("cap", k) for n_fit // k, whitening: ("power", alpha) | ("shrink", beta) | ("lw",))
ALTERNATIVES = [
    ("cap n/2", ("cap", 2), ("power", 1.0)),
    ("cap n/4", ("cap", 4), ("power", 1.0)),
    ("500, power-law whitening 0.5", 500, ("power", 0.5)),
    ("500, power-law whitening 0.25", 500, ("power", 0.25)),
    ("500, shrinkage beta 1", 500, ("shrink", 1.0)),
    ("500, shrinkage beta 5", 500, ("shrink", 5.0)),
    ("500, Ledoit-Wolf shrinkage", 500, ("lw",)),
    ("cap n/2, power-law whitening 0.5", ("cap", 2), ("power", 0.5)),
    ("500, no whitening", 500, ("power", 0.0)),
]


def variant_whitening(fit_on: np.ndarray, dim, how):
    """A fitted :class:`~cnnbench.retrieval.Whitening` whose per-component scaling is ``how``."""
    from cnnbench.head import l2_normalize
    from cnnbench.retrieval import Whitening

    n = len(fit_on)
    if isinstance(dim, tuple):
        dim = max(1, min(500, n // dim[1]))
    w = Whitening(dim, whiten=False).fit(fit_on)  # projection = unit eigenvectors, largest first
    xc = l2_normalize(fit_on).astype(np.float64) - w.mean
    lam = ((xc @ w.projection) ** 2).sum(0) / (n - 1)  # eigenvalues of the kept components
    if how[0] == "power":
        scale = lam ** (-how[1] / 2)
    elif how[0] == "shrink":
        scale = (lam + how[1] * lam.mean()) ** -0.5
    else:  # Ledoit-Wolf: (1 - rho) * covariance + rho * (trace / D) * identity
        from sklearn.covariance import ledoit_wolf_shrinkage

        rho = ledoit_wolf_shrinkage(xc, assume_centered=True)
        mu = (xc ** 2).sum() / (n - 1) / xc.shape[1]
        scale = ((1 - rho) * lam + rho * mu) ** -0.5
    w.projection = (w.projection * scale).astype(np.float32)
    return w


def alternative_map(db, queries, gt, dim, how) -> float:
    from cnnbench.metrics import retrieval_scores
    from cnnbench.retrieval import rank_database

    w = variant_whitening(db.features, dim, how)
    order, _ = rank_database(w.transform(queries.features), w.transform(db.features))
    ap, _ = retrieval_scores(order, db.ids, list(queries.ids), gt)
    return float(np.nanmean(ap))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="/tmp/l2feat", help="folder with database.h5 and queries.h5 of oxford5k-subset")
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 160, 200, 300, 500])
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    folder = Path(args.features)
    if not (folder / "database.h5").exists():
        raise SystemExit(f"{folder}/database.h5 not found; extract first:\n  cnnbench extract -b effnet-lite0 "
                         f"-d oxford5k-subset --data-root ../shared/data --out {folder}")
    from cnnbench import plugins
    from cnnbench.head import load_features

    logging.getLogger("cnnbench.heads.l2").setLevel(logging.ERROR)  # the small-set warnings, once per run
    db_all, queries = load_features(folder / "database.h5"), load_features(folder / "queries.h5")
    gt = queries.extras["ground_truth"]
    positive = np.isin(db_all.ids, sorted({p for e in gt.values() for p in e.get("positives", [])}))
    head_runs = [("no PCA (pca_dim: null)", {"pca_dim": None}), ("PCA 500, plain (pca_dim: 500)", {"pca_dim": 500}),
                 ("pca_dim: auto (the head's rule)", {"pca_dim": "auto"})]
    names = [n for n, _ in head_runs] + [n for n, _, _ in ALTERNATIVES]
    sizes = [n for n in args.sizes if positive.sum() < n < len(db_all)] + [len(db_all)]
    scores: dict[tuple[str, int], list[float]] = {}
    for n in sizes:
        for seed in range(args.seeds if n < len(db_all) else 1):
            rng = np.random.default_rng(seed)
            others = rng.choice(np.flatnonzero(~positive), n - positive.sum(), replace=False)
            db = db_all.subset(np.sort(np.concatenate([np.flatnonzero(positive), others])))
            for name, opts in head_runs:
                out = plugins.create("head", "l2", **opts).evaluate(db, queries, "retrieval", metric="mAP")
                scores.setdefault((name, n), []).append(out["mAP"])
            for name, dim, how in ALTERNATIVES:
                scores.setdefault((name, n), []).append(alternative_map(db, queries, gt, dim, how))
    print(f"oxford5k-subset (approximate gt), {db_all.features.shape[-1]}-d features, {len(queries)} queries: l2 mAP % "
          f"by database size (PCA fitted on the database; mean ± std over {args.seeds} seeds, one for the whole)")
    print(f"| {'variant':34s} | " + " | ".join(f"{n:>11d}" for n in sizes) + " |")
    print(f"|{'-' * 36}|" + "|".join("-" * 13 for _ in sizes) + "|")
    for name in names:
        cells = []
        for n in sizes:
            v = 100 * np.array(scores[(name, n)])
            cells.append(f"{v.mean():5.1f} ± {v.std():3.1f}" if len(v) > 1 else f"{v.mean():11.1f}")
        print(f"| {name:34s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
