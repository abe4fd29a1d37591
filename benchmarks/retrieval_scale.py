"""Retrieval at gallery scale: exact search against a compressed FAISS index (IVF + PQ codes,
candidates re-ranked exactly from the HDF5 feature file), on real descriptors (by hand, then through
the product's ``distractors`` option), then on 1M synthetic ones.

    python benchmarks/retrieval_scale.py [--data ../shared/data] [--cache features/_bench_distractors]
        [--distractors 1000] [--levels 2] [--n 1000000] [--skip-real] [--skip-product] [--skip-synthetic]

Each part (and each index kind of part (c)) runs in a fresh process, so each peak memory is its own.

(a) oxford5k-subset with spatial search (every sub-patch of every database image indexed), the
spatial sub-patches of ``--distractors`` Flowers-17 and 15-Scene images (a seeded sample) added to
the database as distractors. Features: effnet-lite0, extracted once into ``--cache``. Exact spatial
search against the default compressed index of :func:`cnnbench.ann.default_factory`.
(c) The product path on the same files: :func:`cnnbench.evaluate.evaluate` on the cached Oxford
features, evaluated with ``EvalOptions(distractors=<part (a)'s distractor file>)`` (appended to the
database at evaluation, :mod:`cnnbench.retrieval`), the l2 head once with ``index: exact`` and once
with ``index: faiss`` (part (a)'s factory, ``--nprobe``, ``--candidates``), ``pca_dim: null`` (part (a)
ranks plain L2-normalised descriptors; the head's default PCA-whitening would not compare): mAP,
peak memory and seconds of each. With FAISS the product ranks the Oxford database exactly and
indexes only the distractors, so no database image goes unranked (part (a) cuts each ranking where
its index's candidates end). The distractor set is declared ``task = "retrieval"`` (as revisitop1m
is): the product refuses the features of a data set of another task, and a cache written before
that is extracted again.
(b) The same kind of index on ``--n`` seeded synthetic 500-d float32 vectors (generated chunk by
chunk and written to an HDF5 file, never held whole): build seconds, bytes per vector, peak memory,
and the projection to 30M patch vectors (R1M spatial search).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: ``VmHWM`` of ``/proc/self/status`` where there is one.
    Not ``getrusage(RUSAGE_SELF).ru_maxrss`` on Linux: a child started by fork + exec inherits its
    parent's peak there (the peak of the forked copy is kept across exec), so every part would report
    at least the parent's (whose extraction loads the backbone) instead of its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB (macOS: bytes)


def _sample_dataset(datasets, n: int, seed: int):
    """A seeded sample of ``n`` images drawn evenly from ``datasets`` (name, dataset, split) as one data set."""
    from cnnbench.dataset import Dataset, Item

    items = []
    rng = np.random.default_rng(seed)
    pools = [(name, [it for s in splits for it in ds.items(s)]) for name, ds, splits in datasets]
    total = sum(len(p) for _, p in pools)
    n = total if n is None else min(n, total)
    for name, pool in pools:  # in proportion to each data set's size
        pick = rng.permutation(len(pool))[:round(n * len(pool) / total)]
        items += [Item(f"{name}/{pool[k].id}", pool[k].image, 0) for k in sorted(pick)]

    class Distractors(Dataset):
        name = "bench-distractors"
        splits = ("all",)
        # declared as the product's distractor sets are (revisitop1m): open_distractors refuses the
        # features of a data set whose task is not retrieval (Dataset's default is multiclass)
        task = "retrieval"
        distractor_set = True

        @property
        def classes(self):
            return ["distractor"]

        def items(self, split):
            return items

    return Distractors()


def _stored_task(path: Path) -> str | None:
    import h5py

    with h5py.File(path, "r") as f:
        task = f.attrs.get("task")
    return task.decode() if isinstance(task, bytes) else task


def extract_all(data: str, cache: str, n_distractors: int | None, levels: int, seed: int) -> dict[str, Path]:
    """Spatial effnet-lite0 features of the Oxford subset (database, queries) and of the distractors."""
    from cnnbench import plugins
    from cnnbench.extract import extract_split
    from cnnbench.settings import ExtractSettings

    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = plugins.create("backbone", "effnet-lite0")
    settings = ExtractSettings(views="spatial", spatial_levels=levels)
    data = Path(data)
    ox = plugins.create("dataset", "oxford5k-subset", path=str(data / "oxford5k-subset"))
    paths = {}
    for split in ("database", "queries"):
        paths[split] = cache_dir / f"oxford5k-subset-L{levels}" / f"{split}.h5"
        paths[split].parent.mkdir(parents=True, exist_ok=True)
        extract_split(backbone, ox, split, paths[split], settings, progress=False)
    if n_distractors != 0:
        dis = _sample_dataset([("flowers17", plugins.create("dataset", "flowers17", path=str(data / "flowers17")), ("all",)),
                               ("scene15", plugins.create("dataset", "scene15", path=str(data / "scene15")),
                                ("train", "test"))], n_distractors, seed)
        paths["distractors"] = cache_dir / f"distractors-L{levels}-n{n_distractors or 'all'}-s{seed}.h5"
        t0 = time.perf_counter()
        # a cache written before the set declared its task says "multiclass"; the task is not part of
        # the extraction signature, so only overwriting rewrites it (the product refuses it otherwise)
        stale = paths["distractors"].exists() and _stored_task(paths["distractors"]) != dis.task
        extract_split(backbone, dis, "all", paths["distractors"], settings, progress=False, overwrite=stale)
        print(f"distractor features: {paths['distractors']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return paths


class Concat:
    """Row sources one after the other (the Oxford database, then the distractors), as one source."""

    def __init__(self, sources):
        self.sources = sources
        self.offsets = np.cumsum([0] + [s.shape[0] for s in sources])
        self.shape = (int(self.offsets[-1]), *sources[0].shape[1:])

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.sources)

    def chunks(self, size: int | None = None):
        for s in self.sources:
            yield from s.chunks(size)

    def images(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.shape[1:]), np.float32)
        for k, s in enumerate(self.sources):
            sel = (idx >= self.offsets[k]) & (idx < self.offsets[k + 1])
            if sel.any():
                out[sel] = s.images(idx[sel] - self.offsets[k])
        return out


def part_real(args) -> None:
    """(a): Oxford subset + distractors, spatial search, exact vs the default compressed index."""
    from cnnbench import ann, store
    from cnnbench.head import l2_normalize
    from cnnbench.metrics import retrieval_scores
    from cnnbench.retrieval import rank_database

    ox_dir, dis_path = _paths(args)
    db_path = ox_dir / "database.h5"
    queries = store.read(ox_dir / "queries.h5")
    gt = queries.extras["ground_truth"]
    q = l2_normalize(np.asarray(queries.features, np.float32))
    import h5py

    def read_ids(path):
        with h5py.File(path, "r") as f:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in f["ids"][()]]

    ids = read_ids(db_path) + read_ids(dis_path)
    src = Concat([ann.H5Rows(db_path, transform=l2_normalize), ann.H5Rows(dis_path, transform=l2_normalize)])
    n_img, p, dim = src.shape
    print(f"(a) oxford5k-subset, spatial search (levels 1-{args.levels}: {p} patches per image, {dim}-d effnet-lite0 "
          f"pre_logits, L2-normalised): {src.offsets[1]} database images + {n_img - src.offsets[1]} distractors "
          f"(Flowers-17, 15-Scene) = {src.n_rows} patch vectors; {len(q)} queries", flush=True)

    def mean_ap(order, dist=None):
        """mAP %; with ``dist``, each ranking cut where the index's candidates end (positives it did
        not propose count as never found: no credit from the arbitrary order of the rest)."""
        aps = []
        for i, qid in enumerate(queries.ids):
            row = order[i] if dist is None else order[i][np.isfinite(dist[i])]
            ap, _ = retrieval_scores(row[None], ids, [qid], gt,
                                     exclude_self_default=bool(queries.extras.get("exclude_self", False)))
            aps.append(ap[0])
        return 100 * float(np.nanmean(aps))

    factory = _factory(args)  # = args.factory or ann.default_factory(src.n_rows, dim, flat_below=0)
    t0 = time.perf_counter()
    index = ann.build_index(src, factory, seed=args.seed, nprobe=args.nprobe)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    order_ix, dist_ix = ann.search_spatial(index, q, src, k=n_img, candidates=args.candidates)
    search_ix = time.perf_counter() - t0
    peak_ix = peak_rss_mb()
    bpv = ann.index_bytes(index) / src.n_rows
    del index
    t0 = time.perf_counter()
    db = src.images(np.arange(n_img))  # exact: the whole gallery as float32
    order_ex, _ = rank_database(q, db)
    search_ex = time.perf_counter() - t0
    print(f"index: {factory}, nprobe {args.nprobe}, {args.candidates} candidate patches per query patch, "
          f"exact re-ranking of their images from the HDF5 files; built in {build_s:.1f} s")
    print(f"mAP exact: {mean_ap(order_ex):.2f}")
    print(f"mAP index: {mean_ap(order_ix, dist_ix):.2f}")
    print(f"images re-ranked per query: {np.isfinite(dist_ix).sum(1).mean():.0f} of {n_img} (the rest: not ranked)")
    print(f"index bytes per vector: {bpv:.1f} (float32: {4 * dim})")
    print(f"peak resident memory: index {peak_ix:.0f} MB, after exact {peak_rss_mb():.0f} MB "
          f"(gallery as float32: {db.nbytes / 2**20:.0f} MB)")
    print(f"search seconds: exact {search_ex:.2f}, index {search_ix:.2f} (incl. re-ranking reads)")
    top10 = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(order_ex, order_ix)])
    print(f"top-10 overlap index vs exact: {100 * top10:.1f} %", flush=True)


def _paths(args) -> tuple[Path, Path]:
    """The cached Oxford feature folder and distractor file of part (a)."""
    cache = Path(args.cache)
    return (cache / f"oxford5k-subset-L{args.levels}",
            cache / f"distractors-L{args.levels}-n{args.distractors or 'all'}-s{args.seed}.h5")


def _factory(args) -> str:
    """Part (a)'s index: ``--factory``, else the default compressed one for all its patch vectors
    (Oxford database + distractors)."""
    from cnnbench import ann

    if args.factory:
        return args.factory
    ox_dir, dis_path = _paths(args)
    sources = [ann.H5Rows(ox_dir / "database.h5"), ann.H5Rows(dis_path)]
    try:
        return ann.default_factory(sum(s.n_rows for s in sources), sources[0].shape[-1], flat_below=0)
    finally:
        for s in sources:
            s.close()


def product_head_params(args, index: str) -> dict:
    """The l2 head's options of part (c): no PCA (like part (a)), part (a)'s index settings."""
    return {"pca_dim": None, "index": index, "index_factory": _factory(args), "nprobe": args.nprobe,
            "candidates": args.candidates, "seed": args.seed}


def part_product(args, index: str) -> None:
    """(c), one index kind per process: the product path, ``cnnbench.evaluate.evaluate`` on the
    Oxford subset with the evaluation option ``distractors`` naming part (a)'s distractor file."""
    from cnnbench import plugins
    from cnnbench.evaluate import evaluate
    from cnnbench.recipes import EvalOptions

    ox_dir, dis_path = _paths(args)
    dataset = plugins.create("dataset", "oxford5k-subset", path=str(Path(args.data) / "oxford5k-subset"))
    head = plugins.create("head", "l2", **product_head_params(args, index))
    from cnnbench import ann

    build = ann.build_index
    built = []

    def timed_build(*a, **k):  # looked up on the module when called: times the index build inside evaluate
        t = time.perf_counter()
        try:
            return build(*a, **k)
        finally:
            built.append(time.perf_counter() - t)

    ann.build_index = timed_build
    before = peak_rss_mb()
    t0 = time.perf_counter()
    result = evaluate(ox_dir, dataset, head, "l2", evaluation=EvalOptions(distractors=str(dis_path)))
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    m = result["metrics"]
    label = "exact" if index == "exact" else "index"
    print(f"mAP {label} (cnnbench evaluate + distractors): {100 * m['mAP']:.2f}")
    print(f"peak resident memory {label} (cnnbench evaluate + distractors): {peak:.0f} MB "
          f"({before:.0f} MB before evaluate: interpreter, imports)")
    print(f"seconds {label} (cnnbench evaluate + distractors): {seconds:.2f} (whole evaluate: reading the feature "
          f"files, {'loading the distractors, ' if index == 'exact' else f'building the index over the distractors ({sum(built):.1f} s), '}"
          f"ranking, scoring; {int(result['trials'][0].get('n_queries', 0))} queries, {result['trials'][0]['n_train']} database rows "
          f"+ {result['provenance']['distractors']['rows']} distractors)", flush=True)


def _synthetic_file(path: Path, n: int, dim: int, seed: int, chunk: int = 50_000) -> None:
    """``n`` seeded clustered vectors (1000 Gaussian clusters), written chunk by chunk."""
    import h5py

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["default_layer"] = "x"
        ds = f.create_dataset("features/x", shape=(n, dim), dtype="f4", chunks=(min(n, 16), dim))  # small: re-ranking reads single rows
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            ds[s:s + m] = centers[rng.integers(0, 1000, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)


def part_synthetic(args) -> None:
    """(b): the same kind of index on ``--n`` synthetic 500-d vectors streamed from an HDF5 file."""
    import tempfile

    from cnnbench import ann

    dim = 500
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "synthetic.h5"
        t0 = time.perf_counter()
        _synthetic_file(path, args.n, dim, args.seed)
        gen_s = time.perf_counter() - t0
        src = ann.H5Rows(path)
        factory = args.factory or ann.default_factory(args.n, dim)
        t0 = time.perf_counter()
        index = ann.build_index(src, factory, seed=args.seed, nprobe=args.nprobe)
        build_s = time.perf_counter() - t0
        bpv = ann.index_bytes(index) / args.n
        rng = np.random.default_rng(args.seed + 1)
        qrows = np.sort(rng.choice(args.n, 100, replace=False))
        q = src.images(qrows) + 0.1 * rng.standard_normal((100, dim), dtype=np.float32)
        t0 = time.perf_counter()
        order, _ = ann.search(index, q, src, k=10, rerank=args.rerank)
        search_s = time.perf_counter() - t0
        peak = peak_rss_mb()
        # exact top-10 by streaming the file (for the recall only; it never holds the gallery either)
        best_d, best_i = np.full((100, 10), np.inf, np.float32), np.zeros((100, 10), np.int64)
        start = 0
        for chunk in src.chunks():
            d = ((q * q).sum(1)[:, None] + (chunk * chunk).sum(1) - 2 * q @ chunk.T)
            d_all = np.concatenate([best_d, d], 1)
            i_all = np.concatenate([best_i, np.arange(start, start + len(chunk))[None].repeat(100, 0)], 1)
            o = np.argsort(d_all, 1, kind="stable")[:, :10]
            best_d, best_i = np.take_along_axis(d_all, o, 1), np.take_along_axis(i_all, o, 1)
            start += len(chunk)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(order, best_i)])
        src.close()
    gb = 1e9
    print(f"(b) {args.n:,} synthetic {dim}-d float32 vectors (seed {args.seed}, written in chunks in {gen_s:.0f} s)")
    print(f"index: {factory}, nprobe {args.nprobe}, rerank {args.rerank}; build seconds: {build_s:.1f}")
    print(f"index bytes per vector: {bpv:.1f} (float32: {4 * dim})")
    print(f"peak resident memory: {peak / 1024:.2f} GB (exact needs the gallery as float32: {args.n * dim * 4 / gb:.2f} GB)")
    print(f"search seconds: {search_s:.2f} for 100 queries (recall@10 vs exact: {100 * recall:.0f} %)")
    n30 = 30_000_000
    print(f"projection to {n30:,} patch vectors: index {n30 * bpv / gb:.1f} GB (float32: {n30 * 4 * dim / gb:.0f} GB), "
          f"build ~{build_s * n30 / args.n / 60:.0f} min at this rate", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache", default="features/_bench_distractors")
    ap.add_argument("--distractors", type=int, default=None, help="distractor images (default: every one)")
    ap.add_argument("--levels", type=int, default=2, help="spatial pyramid levels of every image (2: 5 patches)")
    ap.add_argument("--factory", default=None, help="FAISS factory string (default: ann.default_factory, compressed)")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=500,
                    help="patches per query patch (100 re-ranks ~210 images per query and loses 0.7 mAP points)")
    ap.add_argument("--rerank", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors of part (b)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for part (b)'s temporary HDF5 file")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-product", action="store_true", help="skip part (c), cnnbench evaluate + distractors")
    ap.add_argument("--part", choices=("a", "b", "c-exact", "c-faiss"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "a":
        return part_real(args)
    if args.part == "b":
        return part_synthetic(args)
    if args.part in ("c-exact", "c-faiss"):
        return part_product(args, args.part[2:])
    import subprocess
    import sys

    # each part (and each index kind of part (c)) in its own process, so each peak memory is its own
    if not (args.skip_real and args.skip_product):
        extract_all(args.data, args.cache, args.distractors, args.levels, args.seed)
    if not args.skip_real:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", "a"], check=True)
    if not args.skip_product:
        ox_dir, dis_path = _paths(args)
        params = product_head_params(args, "exact|faiss")
        print(f"(c) the product path: cnnbench.evaluate.evaluate({ox_dir}, oxford5k-subset with distractors={dis_path}, "
              f"l2 head, 'l2'), each index kind in a fresh process; head options {params}. pca_dim: null (no PCA): "
              "part (a) ranks plain L2-normalised descriptors, and the head's default (pca_dim: auto, PCA-whitening to "
              "500 fitted on the database) would not compare. index: faiss indexes the distractors only, with part "
              "(a)'s factory; the Oxford database is ranked exactly", flush=True)
        for index in ("exact", "faiss"):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", f"c-{index}"], check=True)
    if not args.skip_synthetic:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", "b"], check=True)


if __name__ == "__main__":
    main()
