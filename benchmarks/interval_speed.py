"""Bootstrap intervals of a multi-label mAP: resamples scored from per-image counts (cnnbench.stats)
against recomputing the metric on each resample's rows (Outcomes.metric), side by side in one run.

    python benchmarks/interval_speed.py [--images 4952] [--classes 20] [--resamples 1000] [--ap voc07]

A VOC 2007-sized test set (4952 images, 20 classes, about 7 % positives per class) with seeded
synthetic decision values. Prints both timings, their ratio, and the largest difference between the
two (0 up to rounding: the count-based scoring is exact where scores are not tied).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4952)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--ap", choices=("voc07", "exact"), default="voc07")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from cnnbench import stats
    from cnnbench.outcomes import Outcomes

    rng = np.random.default_rng(args.seed)
    labels = (rng.random((args.images, args.classes)) < 0.07).astype(int)
    decisions = labels + rng.normal(0, 0.7, labels.shape)
    o = Outcomes([str(k) for k in range(args.images)], labels=labels, decisions=decisions, ap=args.ap)
    idx = np.random.default_rng([args.seed, 0]).integers(0, args.images, (args.resamples, args.images))

    t0 = time.perf_counter()
    rows = np.array([o.metric("mAP", r) for r in idx])
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = stats._fast(o, "mAP", idx)
    t_counts = time.perf_counter() - t0
    print(f"{args.resamples} bootstrap resamples of {args.ap} mAP, {args.images} images x {args.classes} classes")
    print(f"resampled rows (Outcomes.metric): {t_rows:.2f} s")
    print(f"per-image counts (stats):         {t_counts:.2f} s")
    print(f"ratio: {t_rows / t_counts:.1f}x")
    print(f"largest difference: {np.abs(rows - counts).max():.1e}")


if __name__ == "__main__":
    main()
