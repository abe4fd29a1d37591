"""Speed and accuracy of the logreg head's batched solver against scikit-learn's LogisticRegression + GridSearchCV.

The problem of ``benchmarks/svm_speed.py`` (its ``make_data``: a Caltech-101-sized set, 3060 training
images, 1280-d non-negative L2-normalised features, 102 classes, 20 test images per class, seeded),
or real features with ``--features DIR`` (a folder holding ``train.h5`` and ``test.h5``, as
``cnnbench extract`` writes them). Both sides run the same 3-fold stratified CV (same seed, so the
same folds) over the same C grid, scored by accuracy, then refit on the whole training set with the
chosen C; both minimise the same objective and stop by the same rule (max |gradient of the mean
loss| <= tol). One after the other in this process (same machine, same load).

    python benchmarks/probe_speed.py [--tol 1e-6] [--grid 0.1,1,10,100,1000,10000] [--device cpu|cuda]
        [--noise 2.0] [--features features/effnet-lite0/digits] [--threads 1] [--sklearn-threads 1]

Threads matter on a small shared machine: scikit-learn's lbfgs here is fastest with one thread (see
below), the torch solver with all cores; ``--threads 1`` gives both one thread, ``--sklearn-threads 1``
gives each its fastest setting.

Measured here (2 CPU cores, shared), the default problem: ``--sklearn-threads 1`` (each side at its
fastest): LogisticRegression + GridSearchCV 27.0 s, 82.45 %, C=10; logreg head 3.9 s, 82.45 %, C=10
(6.9x, +0.00 points). ``--threads 1``: 27.1 s vs 6.0 s (4.5x, +0.00 points). Default threads:
58.4 s vs 3.5 s (16.9x; scikit-learn is slower with two threads than with one here).
``--features features/effnet-lite0/digits --sklearn-threads 1``: 5.5 s vs 0.9 s (6.3x), both 93.88 %,
C=10⁴; with ``--tol 1e-4`` the two disagree (C=1000 vs 10⁴, 93.21 % vs 94.22 %).
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import numpy as np


def load(args):
    from cnnbench.head import FeatureSet, l2_normalize

    if args.features:
        from pathlib import Path

        from cnnbench.head import load_features

        train, test = (load_features(Path(args.features) / f"{s}.h5") for s in ("train", "test"))
        if train.features.ndim != 2:
            raise SystemExit("--features: this benchmark takes (N, D) features (one view per image)")
        for fs in (train, test):  # both sides see the same L2-normalised features
            fs.features = l2_normalize(fs.features)
        return train, test
    from svm_speed import make_data  # the svm benchmark's problem, seeded

    X, y, Xt, yt = make_data(noise=args.noise)
    ids = np.array([str(i) for i in range(len(y))], dtype=object)
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return FeatureSet(l2_normalize(X), y, ids, classes), FeatureSet(l2_normalize(Xt), yt, ids[: len(yt)], classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--grid", default="0.1,1,10,100,1000,10000")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--noise", type=float, default=2.0)
    ap.add_argument("--features", help="a folder with train.h5 and test.h5 (default: the synthetic problem)")
    ap.add_argument("--threads", type=int,
                    help="CPU threads of both sides (torch, BLAS, OpenMP); default: as installed")
    ap.add_argument("--sklearn-threads", type=int, help="CPU threads for scikit-learn alone (default: --threads)")
    args = ap.parse_args()
    sk_threads = args.sklearn_threads or args.threads
    grid = [float(c) for c in args.grid.split(",")]
    train, test = load(args)
    X, y, Xt, yt = train.features, train.labels, test.features, test.labels
    print(f"train {X.shape}, test {Xt.shape}, {len(np.unique(y))} classes, C grid {grid}, 3-fold CV, "
          f"tol {args.tol:g}, max_iter {args.max_iter}, threads: ours {args.threads or 'default'}, "
          f"scikit-learn {sk_threads or 'default'}")

    import torch
    from cnnbench_plugins.heads.logreg import LogisticRegressionHead
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from threadpoolctl import threadpool_limits

    def limited(n):  # BLAS and OpenMP of every library loaded by now (numpy, scipy, scikit-learn, torch)
        return threadpool_limits(n) if n else contextlib.nullcontext()

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    with limited(args.threads):
        torch.set_num_threads(args.threads or threads)
        head = LogisticRegressionHead(C_grid=grid, cv_folds=3, seed=0, tol=args.tol, max_iter=args.max_iter,
                                      solver="batched", device=args.device)
        ours = head.evaluate(train, test, "multiclass", metric="accuracy")
    t_ours = time.perf_counter() - t0

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), limited(sk_threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(LogisticRegression(tol=args.tol, max_iter=args.max_iter), {"C": grid},
                              cv=StratifiedKFold(3, shuffle=True, random_state=0), scoring="accuracy", n_jobs=1)
        search.fit(X, y)
    acc_sk = float(np.mean(search.predict(Xt) == yt))
    t_sk = time.perf_counter() - t0

    print(f"LogisticRegression + GridSearchCV : {t_sk:7.1f} s  test accuracy {100 * acc_sk:.2f} %  "
          f"C={search.best_params_['C']:g}")
    print(f"logreg head, batched solver       : {t_ours:7.1f} s  test accuracy {100 * ours['accuracy']:.2f} %  "
          f"C={ours['C']:g}")
    print(f"speed-up {t_sk / t_ours:.1f}x; accuracy gap (ours - scikit-learn) "
          f"{100 * (ours['accuracy'] - acc_sk):+.2f} points")
    cv_sk = dict(zip(grid, search.cv_results_["mean_test_score"]))
    print("CV accuracy per C (ours / scikit-learn): "
          + ", ".join(f"{c:g}: {100 * ours[f'cv_score@C={c:g}']:.2f} / {100 * cv_sk[c]:.2f}" for c in grid))


if __name__ == "__main__":
    main()
