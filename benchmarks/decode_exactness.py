"""Exact vs fast (JPEG draft mode) decoding: speed and metric change, side by side in one run.

    python benchmarks/decode_exactness.py [--limit 256] [--repeat 3] [--backbone effnet-lite0]
        [--oxford ../shared/data/oxford5k-subset] [--flowers ../shared/data/flowers17/jpg] [--workdir DIR]

``fast_decode`` lets libjpeg scale a photo by 1/2, 1/4 or 1/8 in the DCT domain while both sides stay
at least the model's resize size (256 for effnet-lite0), before the usual bicubic resize. Pillow picks
the largest s in {8, 4, 2} with s <= min(width // 256, height // 256): a photo is only drafted when
its SHORT side is at least 2 x 256 = 512 px (twice the resize size, not twice the 224 input).

For each photo size, measured side by side (exact and fast interleaved, best of ``--repeat``):
  (1) speed: images/s of the decode path alone (``load_views`` in one thread: decode + resize +
      crop; per CPU-second of that thread and per wall second) and of the whole extraction
      (``extract_split``, JPEG -> HDF5, default settings but ``fast_decode``; per wall second, also
      without the fixed cost of one call, and per CPU-second of all threads), and the fast/exact ratios;
  (2) what changes: how many photos were drafted (and at which scale), the model-input pixel
      difference (uint8) and the feature difference; for the Oxford subset, retrieval mAP on all 1008
      database images (``oxford5k-subset`` data set, whole database images, cropped queries; ``l2``
      head as ``cnnbench evaluate`` builds it, PCA-whitening 500 fitted on the database, and plain L2).

Photo sizes: Flowers-17 (short side 256: never drafted), the Oxford subset (longest side 512, short
side <= 386: never drafted either, no photo of it is square), and the Oxford photos upscaled x2
(longest side 1024, the size of the original Oxford5k photos: drafted at 1/2) and x4 (longest side
2048, camera-size photos: drafted at 1/4). The upscaled copies are written once, to a temporary folder,
with PIL (bicubic, JPEG quality 90, 4:2:0), as STAND-INS for full-size photos: they decode like 1024/2048
px JPEGs, but hold no detail finer than the 512-px originals, so their fast-vs-exact differences may
understate those of real full-size photos (measured elsewhere on real 1024-px Holidays photos: whole-image
mAP 81.0 fast vs 81.7 exact). The x2 copy of the whole subset is a data set of its own (``oxford5k-subset``
pointed at it, query boxes scaled x2); the x4 copy holds only the ``--limit`` photos of the speed test.

Measured here (``python benchmarks/decode_exactness.py``, effnet-lite0, ONNX Runtime, 2 CPU cores,
256 photos per size), fast/exact, in two runs whose control rows (Flowers, 512 px: the same work in
both modes) read 0.97-1.01x: "free", other jobs light (Flowers extracted at 158/s), and "busy",
another extraction holding about one core all along (Flowers at 52/s):

    photos                      drafted         decode, 1 thread       extract, wall: free   | busy
    Flowers-17, short 256 px    none            0.99-1.00x             0.99x                 | 1.01x
    Oxford subset, long 512 px  none            0.97-1.00x             0.98x                 | 0.99x
    Oxford x2, long 1024 px     253 at 1/2      2.12x (119 -> 252/s)   1.47x (79 -> 116/s)   | 1.20x (37 -> 44/s)
    Oxford x4, long 2048 px     253 at 1/4 (*)  4.25x (36 -> 151/s)    2.91x (31 -> 91/s)    | 1.89x (21 -> 40/s)

  (*) and 3 at 1/2 (short side under 1024 px). With free cores, exact extraction of big photos is
  decode-bound (one decode thread on 2 cores: about 35 photos/s at 2048 px), so the gain comes near the
  decode gain; with busy cores everything is CPU-bound and the gain falls to the ratio of CPU time per
  photo (1.2-1.3x, 1.9-2.2x). Decode ratios were stable over 6 runs (2.05-2.23x, 3.96-4.31x); read the
  extraction ratios only when the control rows say about 1.00x (they reached 1.28x in noisier runs).
  What changes (x2 / x4): model-input pixels |fast - exact| mean 0.48 / 0.54 grey levels, 99th
  percentile 3, max 13 / 15, 60 / 58 % of values equal; features (pre_logits) relative L2 difference
  4.1 / 4.7 % on average (max 12.5 / 8.4 %), cosine >= 0.992. At 512 px and on Flowers-17 nothing is
  drafted: features bit-identical.
  oxford5k-subset mAP (approximate gt, 10 queries), exact -> fast: 512 px 24.25 -> 24.25 (identical);
  x2 stand-in 23.96 -> 24.31 (+0.35 points; plain L2 26.65 -> 26.83, +0.18). For scale: the x2 copies'
  own exact features differ from the 512-px originals' by 7.1 % (relative L2), more than fast decoding
  moves them, and with 10 queries a few tenths of a point are noise: the stand-ins bound the size of the
  change, not its sign (real 1024-px Holidays photos: -0.7 points).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cnnbench import plugins, store
from cnnbench.dataset import Dataset, Item
from cnnbench.evaluate import evaluate
from cnnbench.extract import extract_split
from cnnbench.images import load_views
from cnnbench.settings import ExtractSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


class Files(Dataset):
    """A list of JPEGs as a one-split data set (ids = file names)."""

    name = "bench-files"
    splits = ("all",)

    def __init__(self, paths):
        super().__init__()
        self.paths = list(paths)

    @property
    def classes(self):
        return ["x"]

    def items(self, split):
        return [Item(p.name, str(p), 0) for p in self.paths]


def extract(backbone, dataset, split: str, out: Path, fast: bool, batch_size: int) -> float:
    """The one call into the extraction engine (adapt here when its signature changes); seconds."""
    settings = ExtractSettings(batch_size=batch_size, fast_decode=fast)
    t0 = time.perf_counter()
    extract_split(backbone, dataset, split, out, settings, progress=False, overwrite=True)
    return time.perf_counter() - t0


# -- photos -------------------------------------------------------------------------------------------


def upscale_one(src: Path, dst: Path, factor: int) -> None:
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC).save(dst, quality=90)


def upscaled(paths: list[Path], folder: Path, factor: int) -> list[Path]:
    """Copies of ``paths`` scaled by ``factor`` in ``folder`` (written once; two threads)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / p.name for p in paths]
    todo = [(s, d) for s, d in zip(paths, out) if not d.exists()]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda sd: upscale_one(sd[0], sd[1], factor), todo))
    return out


def oxford_copy(src: Path, dst: Path, factor: int) -> Path:
    """The whole Oxford subset upscaled by ``factor``, with queries.json's boxes scaled to match."""
    upscaled(sorted((src / "jpg").glob("*.jpg")), dst / "jpg", factor)
    queries = json.loads((src / "queries.json").read_text())
    for q in queries:
        q["bbox"] = [v * factor for v in q["bbox"]]
    (dst / "queries.json").write_text(json.dumps(queries, indent=1))
    return dst


def spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` paths evenly spaced over the sorted list (every building, not the first few)."""
    if n >= len(paths):
        return list(paths)
    return [paths[int(k)] for k in np.linspace(0, len(paths) - 1, n).round()]


# -- measurements -------------------------------------------------------------------------------------


def draft_scale(path: Path, resize: int) -> int:
    """The DCT scale denominator libjpeg uses for this photo under fast_decode (1 = none): the same
    ``draft`` request as :func:`cnnbench.images.load_image`, read from the header (nothing decoded)."""
    from PIL import Image

    with Image.open(path) as img:
        width = img.width
        img.draft("RGB", (resize, resize))
        return round(width / img.width)


def drafted(scales: list[int]) -> str:
    """e.g. ``255 at 1/4, 1 at 1/2`` or ``none``."""
    counts = {s: scales.count(s) for s in sorted(set(scales), reverse=True) if s > 1}
    return ", ".join(f"{n} at 1/{s}" for s, n in counts.items()) or "none"


def speeds(backbone, paths, work: Path, repeat: int, batch_size: int, fixed: float) -> dict:
    """Best images/s over ``repeat`` rounds, exact and fast interleaved (alternating which goes first,
    so both see the same machine load): the decode path alone, per CPU-second of its one thread and
    per wall second; the whole extraction per wall second (end to end, and without the per-call fixed
    cost ``fixed``) and per CPU-second of the process (all threads; ONNX Runtime does not spin). CPU
    time hardly depends on what else runs on the machine, wall time does. Also the decode pass's model
    inputs, per mode."""
    pp = backbone.preprocess
    n = len(paths)
    best = {k: {} for k in ("decode_cpu", "decode_wall", "extract", "extract_net", "extract_cpu")}
    views = {}

    def keep(key, fast, rate):
        best[key][fast] = max(best[key].get(fast, 0.0), rate)

    for r in range(repeat):
        for fast in ((False, True) if r % 2 == 0 else (True, False)):
            c0, t0 = time.thread_time(), time.perf_counter()
            out = [load_views(p, pp, fast_decode=fast) for p in paths]
            keep("decode_cpu", fast, n / (time.thread_time() - c0))
            keep("decode_wall", fast, n / (time.perf_counter() - t0))
            views[fast] = np.concatenate(out)
            c0 = time.process_time()
            seconds = extract(backbone, Files(paths), "all", work / f"speed-{'fast' if fast else 'exact'}.h5", fast,
                              batch_size)
            keep("extract_cpu", fast, n / (time.process_time() - c0))
            keep("extract", fast, n / seconds)
            keep("extract_net", fast, n / max(seconds - fixed, 1e-9))
    return {**best, "views": views}


def feature_diff(a_path: Path, b_path: Path) -> dict:
    a, b = store.read(a_path), store.read(b_path)
    order = {i: k for k, i in enumerate(b.ids)}
    fa, fb = a.features, b.features[[order[i] for i in a.ids]]
    d = np.abs(fa - fb)
    rel = np.linalg.norm(fa - fb, axis=1) / np.maximum(np.linalg.norm(fa, axis=1), 1e-12)
    cos = (fa * fb).sum(1) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    return {"max": float(d.max()), "mean": float(d.mean()), "scale": float(np.abs(fa).mean()),
            "rel_mean": float(rel.mean()), "rel_max": float(rel.max()), "cos_min": float(cos.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oxford", type=Path, default=SHARED / "oxford5k-subset")
    ap.add_argument("--flowers", type=Path, default=SHARED / "flowers17" / "jpg")
    ap.add_argument("--limit", type=int, default=256, help="images per photo size for the speed test")
    ap.add_argument("--repeat", type=int, default=3, help="speed: best of this many interleaved rounds")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="effnet-lite0")
    ap.add_argument("--workdir", type=Path, help="keep the upscaled copies and features here (default: a temp dir)")
    ap.add_argument("--no-metric", action="store_true", help="speed and differences only, no retrieval mAP")
    args = ap.parse_args()
    for need in (args.oxford / "queries.json", args.flowers):
        if not need.exists():
            raise SystemExit(f"{need} not found: this benchmark needs ../shared/data (or --oxford/--flowers)")

    t_start = time.perf_counter()
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="cnnbench-decode-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    backbone = plugins.create("backbone", args.backbone)
    pp = backbone.preprocess
    print(f"{args.backbone} (resize {pp.resize_size}, crop {pp.input_size}, {pp.interpolation}), "
          f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}), torch {torch.__version__}, workdir {work}")

    ox_all = sorted((args.oxford / "jpg").glob("*.jpg"))
    ox_sub = spread(ox_all, args.limit)
    t0 = time.perf_counter()
    ox2 = oxford_copy(args.oxford, work / "oxford-x2", 2) if not args.no_metric else None
    sub2 = upscaled(ox_sub, work / "oxford-x2" / "jpg", 2)
    sub4 = upscaled(ox_sub, work / "oxford-x4-subset", 4)
    print(f"upscaled copies (PIL bicubic, JPEG q90) written in {time.perf_counter() - t0:.0f} s: "
          f"{'1008' if ox2 else len(sub2)} x2, {len(sub4)} x4")

    sizes = [
        ("Flowers-17, short side 256", spread(sorted(args.flowers.glob("*.jpg")), args.limit)),
        ("Oxford subset, long side 512", ox_sub),
        ("Oxford x2 (stand-in), long side 1024", sub2),
        ("Oxford x4 (stand-in), long side 2048", sub4),
    ]
    # warm-up: ONNX export / runtime threads, both decode modes; then the fixed cost of one call
    # (building and checking the runtime, the HDF5 file), measured on a single image
    for fast in (False, True):
        extract(backbone, Files(sizes[0][1][:args.batch_size]), "all", work / "warm.h5", fast, args.batch_size)
    fixed = float(np.median([extract(backbone, Files(sizes[0][1][:1]), "all", work / "one.h5", False,
                                     args.batch_size) for _ in range(3)]))
    print(f"extraction runtime: {store.open_info(work / 'warm.h5').attrs.get('runtime')}")

    # -- (1) speed and differences per photo size -------------------------------------------------------
    rows = []
    for label, paths in sizes:
        scales = [draft_scale(p, pp.resize_size) for p in paths]
        sp = speeds(backbone, paths, work, args.repeat, args.batch_size, fixed)
        views = sp.pop("views")
        px = np.abs(views[True].astype(np.int16) - views[False].astype(np.int16))
        fd = feature_diff(work / "speed-exact.h5", work / "speed-fast.h5")
        rows.append((label, len(paths), drafted(scales), sp, px, fd))
        print(f"  measured {label}: {len(paths)} images ({time.perf_counter() - t_start:.0f} s so far)", flush=True)

    print(f"\n(1) speed, images/s, best of {args.repeat} rounds, exact and fast interleaved. Flowers and 512 px do "
          f"the same work in both modes: their ratios show the measurement noise")
    print(f"  decode = load_views alone (decode + resize + crop), one thread; extract = extract_split, JPEG -> HDF5, "
          f"default settings but fast_decode ({os.cpu_count()} cores, decode threads = half of them); net = without "
          f"the fixed cost of one call ({fixed:.2f} s, measured on 1 image); per CPU-s: all threads' CPU time")
    print(f"{'photos':37s} {'n':>4s}  {'drafted':22s}|{'decode/CPU-s':>13s} {'fast':>6s} {'ratio':>6s} {'wall':>6s} "
          f"|{'extract/s':>10s} {'fast':>5s} {'ratio':>6s} {'net':>6s} |{'per CPU-s':>10s} {'fast':>5s} {'ratio':>6s}")
    for label, n, dr, sp, _, _ in rows:
        dc, dw, ew, en, ec = (tuple(sp[k][f] for f in (False, True))
                              for k in ("decode_cpu", "decode_wall", "extract", "extract_net", "extract_cpu"))
        print(f"{label:37s} {n:4d}  {dr:22s}|{dc[0]:13.1f} {dc[1]:6.1f} {dc[1] / dc[0]:5.2f}x {dw[1] / dw[0]:5.2f}x "
              f"|{ew[0]:10.1f} {ew[1]:5.1f} {ew[1] / ew[0]:5.2f}x {en[1] / en[0]:5.2f}x |{ec[0]:10.1f} {ec[1]:5.1f} "
              f"{ec[1] / ec[0]:5.2f}x")
    print("\n    what fast decoding changes (same images): model-input pixels (uint8, |fast - exact|) and "
          "features (pre_logits)")
    print(f"{'photos':37s} {'px mean':>8s} {'px p99':>7s} {'px max':>7s} {'px =':>6s}   {'feat max':>9s} "
          f"{'feat mean':>10s} {'(|f| mean)':>10s} {'rel L2 mean':>11s} {'rel max':>8s} {'cos min':>8s}")
    for label, _, _, _, px, fd in rows:
        print(f"{label:37s} {px.mean():8.3f} {np.percentile(px, 99):7.0f} {px.max():7d} {100 * (px == 0).mean():5.1f}%"
              f"   {fd['max']:9.2e} {fd['mean']:10.2e} {fd['scale']:10.2e} {fd['rel_mean']:11.2e} "
              f"{fd['rel_max']:8.2e} {fd['cos_min']:8.5f}")

    if args.no_metric:
        print(f"\ntotal {time.perf_counter() - t_start:.0f} s (load average now {os.getloadavg()[0]:.1f})")
        return

    # -- (2) retrieval mAP, whole database images, all 1008 images ---------------------------------------
    heads = [("l2 (cnnbench evaluate: PCA-whitening 500)", {}), ("l2, pca_dim null (plain L2)", {"pca_dim": None})]
    print("\n(2) oxford5k-subset (approximate gt), 1008 database images, 10 queries: mAP %, exact vs fast decoding")
    print("    (the queries are cropped to their box and never drafted: only database features change)")
    results = []
    for tag, label, root in (("x1", "Oxford subset, long side 512", args.oxford),
                             ("x2", "Oxford x2 (stand-in), long side 1024", ox2)):
        ds = plugins.create("dataset", "oxford5k-subset", path=root)
        db_items = ds.items("database")
        n_db, scales = len(db_items), [draft_scale(Path(i.image), pp.resize_size) for i in db_items]
        maps = {}
        for fast in (False, True):
            out = work / f"features-{tag}-{'fast' if fast else 'exact'}"
            extract(backbone, ds, "database", out / "database.h5", fast, args.batch_size)
            extract(backbone, ds, "queries", out / "queries.h5", fast, args.batch_size)
            for name, opts in heads:
                rec = evaluate(out, ds, plugins.create("head", "l2", **opts), "l2")
                maps[name, fast] = 100 * rec["metrics"]["mAP"]
        fd = feature_diff(work / f"features-{tag}-exact" / "database.h5", work / f"features-{tag}-fast" / "database.h5")
        results.append((label, n_db, drafted(scales), maps, fd))
        print(f"  measured {label} ({time.perf_counter() - t_start:.0f} s so far)", flush=True)
    for label, n_db, dr, maps, fd in results:
        print(f"  {label}: database photos drafted: {dr} of {n_db}")
        print(f"    features |fast - exact|: max {fd['max']:.2e}, mean {fd['mean']:.2e} (|f| mean {fd['scale']:.2e}); "
              f"relative L2 mean {fd['rel_mean']:.2e}, max {fd['rel_max']:.2e}; cosine min {fd['cos_min']:.5f}")
        for name, _ in heads:
            e, f = maps[name, False], maps[name, True]
            print(f"    {name:45s} exact {e:6.2f}   fast {f:6.2f}   fast - exact {f - e:+6.2f} points")
    ref = feature_diff(work / "features-x1-exact" / "database.h5", work / "features-x2-exact" / "database.h5")
    print(f"  for scale: exact features of the x2 copies vs of the 512-px originals (upscale, JPEG q90, exact decode "
          f"and downscale): |diff| max {ref['max']:.2e}, mean {ref['mean']:.2e}; "
          f"relative L2 mean {ref['rel_mean']:.2e}, max {ref['rel_max']:.2e}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
