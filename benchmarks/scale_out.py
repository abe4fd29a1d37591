"""The Ray engine against the local engine, side by side in one run on the same real JPEGs.

    python benchmarks/scale_out.py [--images 512] [--repeats 3] [--batch-size 64]

Extracts the same Flowers-17 photos (../shared/data, or --folder) with effnet-lite0, ``--repeats``
times each, with
  (a) the local engine (decode threads + the model, on this machine's cores);
  (b) the Ray engine on a Ray instance on this machine (the same cores), with its default one
      model thread per CPU reserved, and with as many model threads as the local engine uses;
  (c) the Ray engine on a simulated two-node cluster (``ray.cluster_utils.Cluster``: the same
      cores split into two 1-CPU nodes, 2 workers x 0.5 CPU);
and prints, per configuration, the median images/s end to end (what a user waits for, worker
start-up included; not the start of the Ray instance itself, which a cluster pays once) and in
steady state (every batch after the first, timed where both engines hand a batch to the store),
their ratios to the local engine, the fixed cost this implies (start-up; on a 2-core machine the
decode tasks that run ahead also slow the actors' start), and whether the files are byte-identical. Then, from the per-batch timings the Ray engine records
(decode task, model actor, driver write, pixel bytes through the object store), the projected
throughput on N such workers and which stage limits it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported (it reads this once)

import numpy as np  # noqa: E402

from cnnbench import plugins  # noqa: E402
from cnnbench.extract import extract_split  # noqa: E402
from cnnbench.settings import ExtractSettings  # noqa: E402
from cnnbench.store import StoreWriter  # noqa: E402
from extract_throughput import Files  # noqa: E402  (this folder: the benchmarks' list-of-JPEGs data set)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "flowers17" / "jpg"
NETWORK_BYTES_PER_S = 1.25e9  # 10 Gbit/s, for the transfer line of the projection


def timed_runs(backbone, data: Files, out: Path, settings: ExtractSettings, repeats: int):
    """``repeats`` fresh extractions; returns ([(wall seconds, result, arrival times)], file sha256).
    Arrivals are the moments each batch is handed to the store, taken the same way for both engines."""
    runs = []
    for _ in range(repeats):
        arrivals: list[float] = []
        real_append = StoreWriter.append

        def append(self, ids, *a, **k):
            arrivals.append(time.perf_counter())
            return real_append(self, ids, *a, **k)

        StoreWriter.append = append
        try:
            t0 = time.perf_counter()
            res = extract_split(backbone, data, "all", out, settings, progress=False, overwrite=True)
            wall = time.perf_counter() - t0
        finally:
            StoreWriter.append = real_append
        runs.append((wall, res, [t - t0 for t in arrivals]))
    return runs, hashlib.sha256(out.read_bytes()).hexdigest()


def rates(runs, n: int, batch: int) -> tuple[float, float, float]:
    """Median images/s end to end; in steady state (every batch after the first, over the time from
    the first batch's arrival to the last's: start-up is over, and batches released together by the
    ordered output are spread over the whole run); and the fixed cost in seconds this implies (wall
    time minus n images at the steady rate)."""
    end_to_end = statistics.median(n / wall for wall, _, _ in runs)
    steady = [batch * (len(arr) - 1) / max(1e-9, arr[-1] - arr[0]) for _, _, arr in runs]
    steady_rate = statistics.median(steady)
    fixed = statistics.median(wall - n / steady_rate for wall, _, _ in runs)
    return end_to_end, steady_rate, fixed


def ray_local(cpus: int):
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    return ray, None


def ray_two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster.wait_for_nodes()
    return ray, cluster


def projection(runs, cpus_per_worker: float, decode_cpus_per_worker: float):
    """Projected images/s on N workers, each with its own model CPU(s) and decode CPU(s) (nodes
    shaped like this run's), from the per-batch timings of the Ray runs."""
    decode = model = write = images = pixel_bytes = 0.0
    for _, res, _ in runs:
        r = res.details["ray"]
        decode, model, write = decode + sum(r.decode_s), model + sum(r.model_s), write + sum(r.write_s)
        images, pixel_bytes = images + sum(r.images), pixel_bytes + r.pixel_bytes
    per_image = {"decode": decode / images, "model": model / images, "driver write": write / images}
    print(f"\nper image, measured: decode {per_image['decode'] * 1e3:.1f} ms CPU (a task), model "
          f"{per_image['model'] * 1e3:.1f} ms (an actor of {cpus_per_worker:g} CPU), driver write "
          f"{per_image['driver write'] * 1e3:.2f} ms, {pixel_bytes / images / 1e3:.0f} kB of pixels through the "
          "object store")
    transfer_limit = NETWORK_BYTES_PER_S / (pixel_bytes / images)
    print(f"projection: N workers of {cpus_per_worker:g} CPU, each with {decode_cpus_per_worker:g} CPU for "
          "decoding beside it (this machine's shape), one driver")
    print(f"{'N':>5} {'decode':>10} {'model':>10} {'driver':>10} {'transfer':>10} {'images/s':>10}  limited by")
    for n in (1, 2, 4, 8, 16, 64, 256):
        limits = {
            "decode": n * decode_cpus_per_worker / per_image["decode"],
            "model": n / per_image["model"],
            "driver": 1 / per_image["driver write"],
            "transfer": transfer_limit,  # if decoding and the model sit on different nodes
        }
        name = min(limits, key=limits.get)
        print(f"{n:>5} " + " ".join(f"{v:>10.0f}" for v in limits.values()) + f" {limits[name]:>10.0f}  {name}")
    print("(transfer: pixels at 10 Gbit/s, only when decode tasks and actors are on different nodes; "
          "model on a GPU worker is far faster, so decode CPUs per GPU decide there)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    args = ap.parse_args()
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    if len(paths) < args.images:
        sys.exit(f"{args.folder}: {len(paths)} JPEGs, {args.images} asked for (--folder, --images)")
    n = len(paths)
    logging.getLogger("cnnbench").setLevel(logging.ERROR)
    backbone = plugins.create("backbone", "effnet-lite0")
    data = Files(paths)
    cores = os.cpu_count() or 2
    results, hashes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = {"batch_size": args.batch_size}
        runs, hashes["local"] = timed_runs(backbone, data, tmp / "local.h5", ExtractSettings(**base), args.repeats)
        results["local engine"] = runs

        ray, _ = ray_local(cores)
        try:
            runs, hashes["ray"] = timed_runs(backbone, data, tmp / "ray.h5", ExtractSettings(engine="ray", **base),
                                             args.repeats)
            results[f"ray, this machine ({cores} CPU)"] = runs
            # the local engine runs the model on every core beside its decode thread: the same here
            same = ExtractSettings(engine="ray", threads_per_worker=cores, **base)
            runs, hashes["ray-threads"] = timed_runs(backbone, data, tmp / "ray-threads.h5", same, args.repeats)
            results[f"  same, {cores} model threads"] = runs
        finally:
            ray.shutdown()

        ray, cluster = ray_two_nodes()
        try:
            two = ExtractSettings(engine="ray", num_workers=2, cpus_per_worker=0.5, **base)
            runs, hashes["cluster"] = timed_runs(backbone, data, tmp / "cluster.h5", two, args.repeats)
            results["ray, 2 nodes x 1 CPU (2 x 0.5)"] = runs
        finally:
            ray.shutdown()
            cluster.shutdown()

    local_e2e, local_steady, _ = rates(results["local engine"], n, args.batch_size)
    print(f"{n} Flowers-17 JPEGs, effnet-lite0, batch {args.batch_size}, median of {args.repeats}, {cores} cores")
    print(f"{'configuration':<34} {'end to end':>12} {'ratio':>7} {'steady':>10} {'ratio':>7} {'fixed':>7}")
    for name, runs in results.items():
        e2e, steady, fixed = rates(runs, n, args.batch_size)
        print(f"{name:<34} {e2e:>7.1f} im/s {e2e / local_e2e:>7.2f} {steady:>5.1f} im/s {steady / local_steady:>7.2f} "
              f"{fixed:>6.1f}s")
    print("(steady: every batch after the first, over the time from the first batch's arrival to the last's;\n"
          " with several workers the ordered output can hold the first batch back and release several\n"
          " together, which makes their steady figure an upper bound)")
    same = len(set(hashes.values())) == 1
    print(f"files byte-identical to the local engine: {'yes' if same else 'NO'} ({hashes['local'][:16]})")
    ray_runs = results[f"ray, this machine ({cores} CPU)"]
    plan = ray_runs[0][1].details["ray"].plan
    projection(ray_runs, plan.cpus_per_worker, max(1.0, cores - plan.workers * plan.cpus_per_worker) / plan.workers)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
