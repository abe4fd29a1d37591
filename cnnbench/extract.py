"""The extraction engine: the only place that decodes images, batches them and runs a backbone.

Decoding runs in a small thread pool a few batches ahead of the model (PIL releases the GIL while
decoding and resizing), so the forward pass rarely waits. Rows stream into the HDF5 store batch by
batch: memory stays flat in the number of images, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from . import runtime as runtimes
from .backbone import Backbone
from .dataset import Dataset, Item
from .decode import decode_batch
from .errors import StoreError, UserError
from .settings import ExtractSettings, check_precision, resolve_device
from .store import StoreWriter, clear_leftovers, open_info, verify

log = logging.getLogger("cnnbench.extract")


@dataclass
class ExtractResult:
    path: Path
    written: int
    skipped: list[tuple[str, str]]
    seconds: float
    resumed_from: int = 0
    cached: bool = False
    details: dict = field(default_factory=dict)  # engine-specific: {"ray": RayRun} (timings per batch)

    @property
    def images_per_s(self) -> float:
        return (self.written + len(self.skipped)) / self.seconds if self.seconds > 0 else float("nan")


def default_workers() -> int:
    """Decode threads: one per two cores, at least one (the model keeps the rest busy)."""
    return max(1, (os.cpu_count() or 2) // 2)


def forward_batch(rt, batch: np.ndarray, settings: ExtractSettings, device: torch.device) -> dict[str, np.ndarray]:
    """Features of a decoded batch (B, V, H, W, 3), per layer: (B, D), or (B, V, D) with views. All
    views of the batch go through the model together. Both engines call this, so both store the same rows."""
    if not len(batch):
        return {}
    flat = batch.reshape((-1,) + batch.shape[2:])
    x = torch.from_numpy(flat if flat.flags.writeable and flat.flags.c_contiguous else flat.copy())  # Ray's are read-only
    if device.type == "cuda":
        x = x.pin_memory()
    feats = {k: v.cpu().numpy() for k, v in zip(settings.layers, _forward(rt, x))}
    if settings.views != "none":
        feats = {k: v.reshape(len(batch), len(settings.view_names), -1) for k, v in feats.items()}
    return feats


def signature(backbone: Backbone, dataset: Dataset, split: str, items: Sequence[Item],
              settings: ExtractSettings) -> dict:
    """What the features depend on, from resolved ``settings``. The weights enter by the digest of
    their tensors, not by a path (a file replaced in place re-extracts, a moved one does not), and
    the plugins by their distribution and version (upgrading a plugin package re-extracts)."""
    ids_hash = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()
    return {
        **settings.signature(has_boxes=any(i.box is not None for i in items)),
        "backbone": backbone.name,
        "backbone_plugin": _origin(backbone),
        "weights_sha256": backbone.weights_digest(),
        "preprocess": backbone.preprocess.to_json(),
        "dataset": dataset.name,
        "dataset_plugin": _origin(dataset),
        "dataset_options": dataset.options(),
        "split": split,
        "n_items": len(items),
        "ids_sha256": ids_hash,
        "cnnbench_version": __version__,
    }


def _origin(obj) -> str:
    """``distribution version`` of the plugin that built ``obj`` (set by :func:`cnnbench.plugins.create`)."""
    o = getattr(obj, "plugin_origin", None) or {}
    return f"{o.get('distribution', '')} {o.get('version', '')}".strip()


def source_state(item: Item) -> str:
    """Size and SHA-256 of an image file (content, not mtime, so identical inputs give identical
    files): recorded for skipped images, so fixing one makes the features stale."""
    if isinstance(item.image, np.ndarray):
        return "in-memory"
    path = Path(os.fspath(item.image))
    try:
        from .download import sha256_file

        return f"{path.stat().st_size}:{sha256_file(path)}"
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def extract_split(backbone: Backbone, dataset: Dataset, split: str, out_path: str | os.PathLike,
                  settings: ExtractSettings | None = None, *, progress: bool = True,
                  overwrite: bool = False) -> ExtractResult:
    """Extract one split of ``dataset`` into ``out_path`` (an ``.h5`` file), as ``settings`` say.

    With ``views`` other than ``"none"`` every image gives V model inputs (16 for ``jitter16``, the sum
    of l² for ``spatial``) and features are stored as (N, V, D); ``batch_size`` counts model inputs,
    so a batch holds ``batch_size // V`` images, all of whose views go through the model together.
    ``overwrite`` extracts again and discards partial work instead of resuming it.
    """
    out_path = Path(out_path)
    settings = (settings or ExtractSettings()).resolve(split, dataset, backbone)
    if settings.engine == "local":  # Ray workers pick their own device (GPU when given --gpus-per-worker)
        device = resolve_device(settings.device)
        check_precision(settings.precision, device)
    items = list(dataset.items(split))
    if not items:
        raise UserError(f"data set {dataset.name!r} split {split!r} has no images "
                        f"(looked under {dataset.root or 'its bundled data'}); check the data root and the layout")
    sig = signature(backbone, dataset, split, items, settings)
    sig_text = json.dumps(sig, sort_keys=True, default=str)
    if not overwrite and (n := _up_to_date(out_path, sig_text, items)) is not None:
        clear_leftovers(out_path, sig)  # a run killed between its final rename and its cleanup
        return ExtractResult(out_path, n, [], 0.0, cached=True)
    writer = StoreWriter(out_path, sig, expected_ids=[i.id for i in items], fresh=overwrite)
    try:
        if not overwrite and (n := _up_to_date(out_path, sig_text, items)) is not None:
            writer.discard()  # another run finished it meanwhile: what this one resumed or began is not needed
            return ExtractResult(out_path, n, [], 0.0, cached=True)
        start, t0 = writer.next_item, time.perf_counter()
        if start:
            log.warning("resuming %s from item %d of %d", writer.partial, start, len(items))
        what = f"{dataset.name}/{split}"
        if settings.engine == "ray":
            from . import ray_engine

            ray_run = ray_engine.run(backbone, what, items, writer, settings, progress)
            skipped, runtime_name, details = ray_run.skipped, ray_run.runtime, {"ray": ray_run}
        else:
            rt = build_runtime(backbone, settings, device)
            try:
                skipped = _pipeline(backbone, what, items, writer, settings, rt, device, progress)
            finally:
                rt.close()
            runtime_name, details = rt.name, {}
        _commit(writer, backbone, dataset, split, items, settings, sig, runtime_name, skipped)
        return ExtractResult(out_path, len(items) - len(skipped) - start, skipped, time.perf_counter() - t0,
                             resumed_from=start, details=details)
    finally:
        writer.close()


# -- the three phases: is it done, run it, commit it --------------------------------------------------


def _up_to_date(out_path: Path, sig_text: str, items: Sequence[Item]) -> int | None:
    """Number of rows when ``out_path`` is complete, intact, made with ``sig_text`` and none of the
    images it skipped has changed since; else ``None`` (extract again)."""
    if not out_path.exists():
        return None
    try:
        info = open_info(out_path)
    except StoreError:
        return None
    if info.attrs.get("signature") != sig_text:
        return None
    recorded = json.loads(info.attrs.get("skipped_sources", "{}") or "{}")
    if recorded:
        by_id = {i.id: i for i in items}
        for sid, state in recorded.items():
            if sid not in by_id or source_state(by_id[sid]) != state:
                log.info("%s: skipped image %s changed since; extracting again", out_path, sid)
                return None
    verify(out_path)  # a corrupt file is an error to report, not "up to date"
    return info.n


def build_runtime(backbone: Backbone, settings: ExtractSettings, device: torch.device, threads: int | None = None):
    """The checked runtime both engines extract with (a Ray worker builds its own, once)."""
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
    backbone.to(device)
    return runtimes.build(backbone, list(settings.layers), settings.pooling, settings.runtime, device,
                          autocast_dtype=autocast_dtype, threads=threads,
                          batch_size=settings.images_per_batch * len(settings.view_names))


def _pipeline(backbone: Backbone, what: str, items: Sequence[Item], writer: StoreWriter,
              settings: ExtractSettings, rt, device: torch.device, progress: bool) -> list[tuple[str, str]]:
    """Decode ahead in threads, run the model, stream rows into ``writer``; returns this run's skips."""
    per_batch = settings.images_per_batch
    workers = settings.workers or default_workers()
    start = writer.next_item
    skipped_all: list[tuple[str, str]] = []
    bar = progress_bar(len(items), start, f"{backbone.name} {what}", progress)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnbench-decode") as pool:
            pending: deque = deque()
            starts = iter(range(start, len(items), per_batch))

            def submit_next() -> None:
                s = next(starts, None)
                if s is not None:
                    pending.append((s, pool.submit(decode_batch, items[s : s + per_batch], backbone.preprocess, settings)))

            for _ in range(workers + 1):
                submit_next()
            try:
                while pending:
                    s, fut = pending.popleft()
                    batch, ok, skipped = fut.result()
                    submit_next()
                    feats = forward_batch(rt, batch, settings, device)
                    for _, why in skipped:
                        log.warning("skipping unreadable image %s", why)
                    skipped_all.extend(skipped)
                    writer.append([i.id for i in ok], labels_array(ok), feats, next_item=s + len(ok) + len(skipped),
                                  skipped=skipped)
                    bar.update(len(ok) + len(skipped))
            except BaseException:
                for _, fut in pending:  # do not decode what will never be written
                    fut.cancel()
                raise
    except KeyboardInterrupt:
        log.warning("interrupted: %s keeps the %d items done; run the same command to resume", writer.partial,
                    writer.kept)
        raise
    finally:
        bar.close()
    return skipped_all


def _commit(writer: StoreWriter, backbone: Backbone, dataset: Dataset, split: str, items: Sequence[Item],
            settings: ExtractSettings, sig: dict, runtime_name: str, skipped: list) -> None:
    """Write the final file, unless no image at all could be read (then nothing claims to be done)."""
    n_skipped = writer.n_skipped
    if n_skipped == len(items):
        first = skipped[0][1] if skipped else "see the earlier run's warnings"
        writer.discard()
        raise StoreError(f"none of the {len(items)} images of {dataset.name}/{split} could be read (first: "
                         f"{first}); nothing was written. Check the data root and the images")
    by_id = {i.id: i for i in items}
    attrs = {
        **sig,
        "signature": json.dumps(sig, sort_keys=True, default=str),
        "default_layer": settings.layers[0],
        "task": dataset.task,
        "runtime": runtime_name,
        "classes": list(dataset.classes),
        "n_skipped": n_skipped,
        "weights": backbone.weights,
        "skipped_sources": {sid: source_state(by_id[sid]) for sid in writer.skipped_ids() if sid in by_id},
    }
    writer.commit(attrs, dataset.extras(split))


def _forward(rt, x: torch.Tensor) -> list[torch.Tensor]:
    """Run a batch; on a GPU out-of-memory error, run it again in halves (and remember nothing: the
    next batch tries the full size again, which is right when memory was only briefly short)."""
    try:
        return rt(x)
    except torch.cuda.OutOfMemoryError:
        if len(x) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(x) // 2
        log.warning("GPU out of memory on a batch of %d inputs: splitting it (lower --batch-size)", len(x))
        return [torch.cat(parts) for parts in zip(_forward(rt, x[:half]), _forward(rt, x[half:]))]


def labels_array(items: Sequence[Item]) -> np.ndarray:
    """(B,) int64 class ids, or (B, C) int8 for multi-label items."""
    if items and isinstance(items[0].label, (tuple, list, np.ndarray)):
        return np.asarray([i.label for i in items], dtype=np.int8)
    return np.asarray([i.label for i in items], dtype=np.int64)


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
