"""Extraction on a Ray cluster with Ray Data (``--engine ray``): the same bytes as the local engine.

The pipeline is the local engine's, spread out:

* one row per model batch: the batches the local engine makes (``batch_size // views`` images),
  counted from the same resume point, so a run interrupted under either engine resumes under either,
  with any number of workers;
* decoding and views in Ray tasks (:func:`cnnbench.decode.decode_batch`, the local engine's function;
  those workers never load torch);
* the backbone in a pool of actors; each builds its runtime once with
  :func:`cnnbench.engine.build_runtime` (the same choice of runtime and the same exactness check) and
  runs :func:`cnnbench.engine.forward_batch`;
* rows come back to the driver in order (``preserve_order``) as :class:`cnnbench.engine.Batch` es, which
  the one writing loop both engines share (:func:`cnnbench.extract.extract_split`) puts into the same
  :class:`~cnnbench.store.StoreWriter`, which alone writes the file. The workers write nothing.

A killed actor is restarted by Ray and its batch retried (Ray Data's actor defaults: unlimited
restarts and task retries); a killed decode task is retried (Ray's default for tasks: 3 times). Nothing reaches the
store twice, because the driver appends batch ``s`` only once, in order.

Why pipelines stalled (issue 12): a Ray Data *read* task (``ray.data.range``) asks for a whole CPU;
when the model actors hold every CPU on every node (2 x 1 CPU on a 2-CPU machine; 2 x 0.5 CPU on two
1-CPU nodes), that task is counted as running by Ray Data but can never be scheduled by Ray, and the
pipeline waits forever. So: rows come from ``from_items`` (no read task), decode tasks ask for
``min(1, cpus_per_worker)`` CPUs, and :func:`plan` refuses a worker count that leaves no room to
decode, in one line, before anything starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .dataset import Item
from .decode import decode_batch
from .engine import Batch, EngineFailed, Run
from .errors import CnnbenchError, UserError
from .preprocess import Preprocess
from .settings import ExtractSettings

if TYPE_CHECKING:  # decode workers import this module: no torch at import time
    from .backbone import Backbone

log = logging.getLogger("cnnbench.ray")

RAY_REQUIREMENT = "ray[data]==2.60.0"
WORKER_BASE_MEMORY = 384 * 2**20  # a Ray worker process with torch and cnnbench imported
STALL_WARNING_S = float(os.environ.get("CNNBENCH_RAY_STALL_S", "600"))


# -- how many workers, with what ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    decode_cpus: float  # what one decode task reserves
    threads: int  # intra-op threads of each actor's runtime

    def describe(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.workers} model worker(s) x ({self.cpus_per_worker:g} CPU{gpu}, {self.threads} thread(s)), "
                f"decode tasks {self.decode_cpus:g} CPU each")


def plan(settings: ExtractSettings, nodes: Sequence[dict]) -> Plan:
    """Workers and reservations for a cluster whose alive nodes have ``nodes`` resources
    (``{"CPU": 2.0, "GPU": 1.0}`` each). Refuses, in one line, what could not run or would stall."""
    cpw, gpw = settings.cpus_per_worker, settings.gpus_per_worker
    total_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    shape = ", ".join(f"{n.get('CPU', 0):g} CPU" + (f" + {n['GPU']:g} GPU" if n.get("GPU") else "") for n in nodes)
    where = f"the Ray cluster has {len(nodes)} node(s): {shape or 'none'}"
    if gpw > 0 and total_gpu == 0:
        raise UserError(f"extract.gpus_per_worker (--gpus-per-worker) is {gpw:g}, but {where}: no GPU; "
                        "use --gpus-per-worker 0 for CPU workers, or add GPU nodes")
    if not any(n.get("CPU", 0.0) >= cpw and n.get("GPU", 0.0) >= gpw for n in nodes):
        raise UserError(f"no node can hold one worker of {cpw:g} CPU and {gpw:g} GPU ({where}); "
                        "lower --cpus-per-worker / --gpus-per-worker")
    decode_cpus = min(1.0, cpw) if cpw > 0 else 1.0
    workers = settings.num_workers
    if workers == 0:  # one per GPU share; on CPUs, half the cores for the model (the local engine's split)
        workers = int(total_gpu // gpw) if gpw > 0 else max(1, int(total_cpu / 2 // cpw))
    need_cpu = workers * cpw + decode_cpus
    if need_cpu > total_cpu + 1e-9:
        raise UserError(f"{workers} worker(s) x {cpw:g} CPU leave no CPU to decode images on ({where}; decoding "
                        f"needs {decode_cpus:g} more); use --num-workers {max(1, int((total_cpu - decode_cpus) // cpw))} "
                        f"or a smaller --cpus-per-worker")
    if gpw > 0 and workers * gpw > total_gpu + 1e-9:
        raise UserError(f"{workers} worker(s) x {gpw:g} GPU is more than the {total_gpu:g} GPU(s) of the cluster "
                        f"({where}); use --num-workers {int(total_gpu // gpw)}")
    return Plan(workers, cpw, gpw, decode_cpus, threads=settings.threads_per_worker or max(1, math.floor(cpw)))


# -- connecting ------------------------------------------------------------------------------------


def import_ray(starting_local: bool):
    """Ray, or one line saying what to install. Token authentication is chosen here, deliberately,
    for an instance this process starts (it listens on the machine's address): ``RAY_AUTH_MODE=token``
    unless the user set a mode. It must be in the environment before Ray is imported, since Ray reads
    it once at import."""
    if starting_local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError(f"--engine ray needs Ray Data, which is not installed: pip install 'cnnbench[ray]' "
                        f"(or pip install '{RAY_REQUIREMENT}'); or use --engine local") from None
    return ray


_held = 0  # depth of held() blocks: a connection made inside one stays open until it ends
_owned = False  # this process made the current connection (so it closes it)


@contextmanager
def held():
    """Keep a connection made inside this block open until the block ends: one Ray start for all
    the splits of a command, and none at all when every split is already up to date."""
    global _held, _owned
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0 and _owned:
            _owned = False
            sys.modules["ray"].shutdown()


@contextmanager
def connect(address: str | None):
    """A Ray connection for one run: the one already open (tests, notebooks, :func:`held`), else
    ``address`` (``auto``: the cluster ``ray start`` made here; ``host:port``; ``ray://host:port``),
    else a new instance on this machine, closed afterwards (or at the end of :func:`held`)."""
    global _owned
    ray = import_ray(starting_local=address is None)
    if ray.is_initialized():
        yield ray
        return
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address is None:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)  # ray.init's exits at once; cnnbench's keeps the work
    except Exception as exc:  # noqa: BLE001 - ConnectionError, auth errors, bad addresses: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        target = f"the Ray cluster at {address!r}" if address else "a Ray instance on this machine"
        raise UserError(f"could not start or reach {target}: {first.rstrip('.')}. Start a cluster with `ray start --head` "
                        "(README: On a cluster); a cluster with token authentication also needs its token here "
                        "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)") from None
    _owned = True
    try:
        yield ray
    finally:
        if not _held:
            _owned = False
            ray.shutdown()


# -- the workers -----------------------------------------------------------------------------------


def _decode_row(row: dict, *, preprocess: Preprocess, settings: ExtractSettings, cwd: str) -> dict:
    """A Ray task: one model batch's images decoded (the local engine's function), with relative
    paths read from the driver's working directory, as the local engine reads them."""
    items: list[Item] = pickle.loads(row["items"])
    t0 = time.perf_counter()
    with _working_dir(cwd):
        _check_visible(items)
        batch, ok, skipped = decode_batch(items, preprocess, settings)
    ok_ids = {it.id for it in ok}
    return {"start": row["start"], "n": len(items), "pixels": batch,
            "ok": np.asarray([j for j, it in enumerate(items) if it.id in ok_ids], dtype=np.int64),
            "skipped": json.dumps(skipped), "decode_s": time.perf_counter() - t0}


@contextmanager
def _working_dir(path: str):
    """Decode tasks run one at a time in a worker process, so changing its directory is safe."""
    before = os.getcwd()
    if path == before or not os.path.isdir(path):
        yield
        return
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _check_visible(items: Sequence[Item]) -> None:
    """The driver listed these files, so one missing here means this node does not see the data root
    (it is not shared): an error, not a skipped image, or a cluster would write a file of skips."""
    for item in items:
        path = item.image if isinstance(item.image, (str, os.PathLike)) else getattr(item.image, "source", None)
        if path is not None and not os.path.exists(path):
            import socket

            raise FileNotFoundError(
                f"{os.fspath(path)} is not visible on Ray node {socket.gethostname()}, though the driver "
                "listed it: every node must see the data root (and the Hugging Face cache) at the same path "
                "(a shared file system; README: On a cluster)")


class _ModelWorker:
    """A Ray actor: builds the runtime once, then turns decoded batches into features."""

    def __init__(self, backbone_box: list, settings: ExtractSettings, gpus: float, threads: int):
        import ray
        import torch

        from .engine import build_runtime, runtime_device

        backbone: Backbone = ray.get(backbone_box[0])
        # with a GPU share, Ray has set CUDA_VISIBLE_DEVICES to this actor's GPU
        self.device = runtime_device("cuda" if gpus > 0 else "cpu", settings.precision)
        if gpus == 0:
            torch.set_num_threads(threads)
        self.settings = settings
        self.node = ray.get_runtime_context().get_node_id()
        self.rt = build_runtime(backbone, settings, self.device, threads=threads)

    def __call__(self, batch: dict) -> dict:
        from .engine import forward_batch

        pixels = _one(batch["pixels"])
        t0 = time.perf_counter()
        feats = forward_batch(self.rt, pixels, self.settings, self.device)
        out = {k: batch[k] for k in ("start", "n", "ok", "skipped", "decode_s")}
        out["model_s"] = np.asarray([time.perf_counter() - t0])
        out["pixel_bytes"] = np.asarray([pixels.nbytes])
        out["runtime"] = np.asarray([self.rt.name])
        out["node"] = np.asarray([self.node])
        for i, layer in enumerate(self.settings.layers):
            out[f"f{i}"] = feats[layer][None] if layer in feats else np.zeros((1, 0, 0), np.float32)
        return out


def _decode_memory(per_batch: int, settings: ExtractSettings, preprocess: Preprocess) -> int:
    """Bytes a decode task holds at most: a worker process with torch loaded, its batch of views twice
    over, and one photo at the pixel cap (Ray Data's memory check measured 391 MiB for 64 Flowers-17
    images at the default cap, under this reservation)."""
    batch = per_batch * len(settings.view_names) * preprocess.input_size ** 2 * 3
    photo = 3 * (settings.max_pixels or 2**26)
    return int(WORKER_BASE_MEMORY + 2 * batch + photo)


def _one(column):
    """The single row of a batch of one (a variable-shaped tensor column may arrive as objects)."""
    return np.asarray(column[0])


# -- the driver ------------------------------------------------------------------------------------


@dataclass
class RayRun:
    """How a run was spread out (its plan) and per-batch timings (seconds) for
    ``benchmarks/scale_out.py``: decoding (in a task), the model (in an actor), the driver's write."""

    plan: Plan
    decode_s: list[float] = field(default_factory=list)
    model_s: list[float] = field(default_factory=list)
    write_s: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    pixel_bytes: int = 0  # decoded pixels that went through the object store to the actors


class RayEngine:
    """Ray Data on a Ray cluster (``--engine ray``): the local engine's batches, spread out."""

    name, tag = "ray", " (ray)"

    def session(self):
        return held()

    @contextmanager
    def run(self, backbone: Backbone, items: Sequence[Item], start: int, settings: ExtractSettings):
        with connect(settings.ray_address) as ray:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            p = plan(settings, nodes)
            log.info("ray engine: %s", p.describe())
            with _pipeline(ray, p, backbone, items, start, settings) as run:
                yield run


@contextmanager
def _pipeline(ray, p: Plan, backbone: Backbone, items: Sequence[Item], start: int, settings: ExtractSettings):
    from ray.data import DataContext

    per_batch = settings.images_per_batch
    rows = [{"start": s, "items": pickle.dumps(list(items[s : s + per_batch]), protocol=5)}
            for s in range(start, len(items), per_batch)]
    timings = RayRun(p)
    run = Run(iter(()), "eager", {"ray": timings})
    if not rows:
        yield run
        return
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True  # rows reach the store in the local engine's order
    ctx.enable_progress_bars = False  # the driver draws one bar, as the local engine does
    # Ray Data logs a worker's error (with its traceback) before raising it; the error is reported
    # once, in one line, by the writing loop. -v shows Ray Data's own log.
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    data_log.setLevel(logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL)
    backbone_ref = ray.put(backbone)  # kept alive here: restarted actors fetch it again
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # no read task (see the module docstring)
    # the memory reservation also keeps decoding out of the actors (Ray Data fuses maps whose
    # reservations are equal, and decoding inside the actor would no longer overlap the model)
    ds = ds.map(_decode_row, fn_kwargs={"preprocess": backbone.preprocess, "settings": settings, "cwd": os.getcwd()},
                num_cpus=p.decode_cpus, memory=_decode_memory(per_batch, settings, backbone.preprocess))
    ds = ds.map_batches(_ModelWorker, batch_size=1, batch_format="numpy", zero_copy_batch=True,
                        fn_constructor_kwargs={"backbone_box": [backbone_ref], "settings": settings,
                                               "gpus": p.gpus_per_worker, "threads": p.threads},
                        compute=ray.data.ActorPoolStrategy(size=p.workers),
                        num_cpus=p.cpus_per_worker, num_gpus=p.gpus_per_worker or None)
    watch = _StallWatch(ray, p)
    run.batches = _batches(ray, ds, items, settings, run, watch)
    try:
        yield run
    finally:
        run.batches.close()
        watch.stop()
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        data_log.setLevel(saved_level)


def _batches(ray, ds, items: Sequence[Item], settings: ExtractSettings, run: Run, watch: _StallWatch):
    """The pipeline's rows as batches, with their timings; the runtime once all have come."""
    timings: RayRun = run.details["ray"]
    runtimes: set[str] = set()
    nodes: Counter[str] = Counter()
    try:
        for row in ds.iter_rows():
            watch.tick()
            s, n = int(row["start"]), int(row["n"])
            ok = [items[s + int(j)] for j in np.asarray(row["ok"]).reshape(-1)]
            skipped = [tuple(x) for x in json.loads(row["skipped"])]
            feats = {layer: np.asarray(row[f"f{i}"]) for i, layer in enumerate(settings.layers)} if ok else {}
            runtimes.add(str(np.asarray(row["runtime"]).reshape(-1)[0]))
            nodes[str(np.asarray(row["node"]).reshape(-1)[0])] += 1
            timings.decode_s.append(float(np.asarray(row["decode_s"]).reshape(-1)[0]))
            timings.model_s.append(float(np.asarray(row["model_s"]).reshape(-1)[0]))
            timings.pixel_bytes += int(np.asarray(row["pixel_bytes"]).reshape(-1)[0])
            timings.images.append(n)
            t0 = time.perf_counter()
            yield Batch(s, s + n, ok, feats, skipped)
            timings.write_s.append(time.perf_counter() - t0)  # the time the driver took to write it
    except ray.exceptions.RayError as exc:
        raise EngineFailed(f"the ray engine failed in a worker: {_summary(exc)}") from exc
    log.info("ray engine: batches per node: %s", ", ".join(f"{k[:8]}… {v}" for k, v in sorted(nodes.items())))
    if len(runtimes) > 1:
        raise CnnbenchError(f"the Ray workers extracted with different runtimes ({', '.join(sorted(runtimes))}), so "
                            "the file would mix them; install the same packages on every node (onnxruntime) or "
                            "pass --runtime eager. Nothing was written")
    run.runtime = runtimes.pop() if runtimes else "eager"


def _summary(exc: BaseException) -> str:
    """The worker's own error, in one line. Ray hands the driver a RayTaskError(UserCodeException)
    whose text carries the worker's traceback; the original exception object does not travel."""
    import re

    for line in str(exc).splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.+)$", line.strip())
        if m and not m.group(1).startswith("ray.") and "UserCodeException" not in m.group(1):
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class _StallWatch:
    """Warns once when no batch has finished for a long time, with what Ray has free: a pipeline
    whose reservations leave nothing to run on waits silently otherwise."""

    def __init__(self, ray, p: Plan, after_s: float = STALL_WARNING_S):
        self.ray, self.plan, self.after_s = ray, p, after_s
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="cnnbench-ray-stall")
        self._thread.start()

    def tick(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(30.0, self.after_s / 4)):
            idle = time.monotonic() - self.last
            if idle > self.after_s:
                try:
                    free = self.ray.available_resources()
                except Exception:  # noqa: BLE001 - a warning must never fail the run
                    free = {}
                log.warning("ray engine: no batch finished for %.0f s (%s; free now: %s). If nothing is running, "
                            "the workers' reservations leave no room: lower --num-workers or --cpus-per-worker",
                            idle, self.plan.describe(), {k: v for k, v in free.items() if k in ("CPU", "GPU")})
                return
