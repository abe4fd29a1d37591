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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from . import runtime as runtimes
from .backbone import POOLINGS, Backbone
from .dataset import Dataset, Item
from .errors import StoreError, UserError
from .images import MAX_PIXELS, VIEW_MODES, load_views, view_names
from .settings import PRECISIONS, check_precision, resolve_device
from .store import StoreWriter, open_info, verify

log = logging.getLogger("cnnbench.extract")


@dataclass
class ExtractResult:
    path: Path
    written: int
    skipped: list[tuple[str, str]]
    seconds: float
    resumed_from: int = 0
    cached: bool = False

    @property
    def images_per_s(self) -> float:
        return (self.written + len(self.skipped)) / self.seconds if self.seconds > 0 else float("nan")


def default_workers() -> int:
    """Decode threads: one per two cores, at least one (the model keeps the rest busy)."""
    return max(1, (os.cpu_count() or 2) // 2)


def pick_device(device: str | None = None) -> torch.device:
    return resolve_device(device)


@dataclass(frozen=True)
class ViewConfig:
    """Which views of each image go through the model, and how images are decoded (see
    :mod:`cnnbench.images`)."""

    mode: str = "none"  # none | jitter16 | spatial
    angles: tuple[float, ...] = (-5.0, 5.0)  # jitter16 rotations, degrees
    levels: int = 4  # spatial: levels 1..levels, sum of l² patches
    box_scale: float = 1.0  # boxes enlarged by this factor
    fast_decode: bool = True  # JPEG draft mode for big photos (see cnnbench.images.load_image)
    max_pixels: int | None = MAX_PIXELS  # larger images are skipped undecoded (image bombs)
    exif_orientation: bool = True  # turn photos the way their EXIF tag says (as a person sees them)

    def __post_init__(self) -> None:
        if self.mode not in VIEW_MODES:
            raise UserError(f"views must be one of {VIEW_MODES}, got {self.mode!r}")
        if self.mode == "jitter16" and len(self.angles) != 2:
            raise UserError(f"rotation_angles: jitter16 needs exactly 2 angles, got {list(self.angles)}")
        if self.levels < 1:
            raise UserError(f"spatial_levels must be at least 1, got {self.levels}")
        if not self.box_scale > 0:
            raise UserError(f"box_scale must be positive, got {self.box_scale}")

    @property
    def names(self) -> list[str]:
        return view_names(self.mode, self.levels)


def decode_batch(items: Sequence[Item], backbone: Backbone, views: ViewConfig = ViewConfig()):
    """Decode and make views for a batch: uint8 (B, V, H, W, 3). Unreadable images are returned in
    ``skipped``, never raised."""
    arrays, ok, skipped = [], [], []
    for item in items:
        try:
            arrays.append(load_views(item.image, backbone.preprocess, item.box, box_scale=views.box_scale,
                                     mode=views.mode, angles=views.angles, levels=views.levels,
                                     fast_decode=views.fast_decode, max_pixels=views.max_pixels,
                                     exif_orientation=views.exif_orientation))
            ok.append(item)
        except Exception as exc:  # noqa: BLE001 - any decoder failure skips this one image only
            skipped.append((item.id, f"{_describe(item)}: {exc}"))
    size = backbone.preprocess.input_size
    batch = np.stack(arrays) if arrays else np.zeros((0, len(views.names), size, size, 3), np.uint8)
    return batch, ok, skipped


def _describe(item: Item) -> str:
    return str(item.image) if not isinstance(item.image, np.ndarray) else f"item {item.id}"


def signature(backbone: Backbone, dataset: Dataset, split: str, items: Sequence[Item], layers, pooling,
              views: ViewConfig = ViewConfig()) -> dict:
    """What the features depend on. The weights enter by the digest of their tensors, not by a path:
    a weights file replaced at the same path re-extracts, the same weights moved elsewhere do not."""
    ids_hash = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()
    view_sig = {} if views.mode == "none" else {"view_mode": views.mode, "view_names": views.names}
    if views.mode == "jitter16":
        view_sig["rotation_angles"] = list(views.angles)
    if any(i.box is not None for i in items):
        view_sig["box_scale"] = views.box_scale
    if not views.fast_decode:
        view_sig["fast_decode"] = False
    return {
        **view_sig,
        "max_pixels": views.max_pixels,
        "exif_orientation": views.exif_orientation,
        "backbone": backbone.name,
        "weights_sha256": backbone.weights_digest(),
        "layers": list(layers),
        "pooling": pooling,
        "preprocess": backbone.preprocess.to_json(),
        "dataset": dataset.name,
        "dataset_options": dataset.options(),
        "split": split,
        "n_items": len(items),
        "ids_sha256": ids_hash,
        "cnnbench_version": __version__,
    }


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


def _up_to_date(out_path: Path, sig_text: str, items: Sequence[Item]) -> int | None:
    """Number of rows when ``out_path`` is complete, intact, made with ``sig_text`` and none of the
    images it skipped has changed since; else ``None`` (extract again)."""
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


def extract_split(
    backbone: Backbone,
    dataset: Dataset,
    split: str,
    out_path: str | os.PathLike,
    *,
    layers: Sequence[str] | None = None,
    pooling: str = "avg",
    batch_size: int = 64,
    workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    views: str = "none",
    rotation_angles: Sequence[float] = (-5.0, 5.0),
    spatial_levels: int = 4,
    box_scale: float | None = None,
    precision: str = "fp32",
    runtime: str = "auto",
    fast_decode: bool = True,
    max_pixels: int | None = MAX_PIXELS,
    exif_orientation: bool = True,
) -> ExtractResult:
    """Extract one split of ``dataset`` into ``out_path`` (an ``.h5`` file).

    With ``views`` other than ``"none"`` every image gives V model inputs (16 for ``jitter16``, the sum
    of l² for ``spatial``) and features are stored as (N, V, D); ``batch_size`` counts model inputs,
    so a batch holds ``batch_size // V`` images, all of whose views go through the model together.
    ``box_scale`` (default: the data set's) enlarges item boxes before cropping. ``runtime`` is
    ``auto`` (fastest exact one), ``eager``, ``compile`` or ``onnx`` (see :mod:`cnnbench.runtime`).
    ``overwrite`` extracts again and discards a partial file instead of resuming it.
    """
    out_path = Path(out_path)
    layers = list(layers) if layers else [backbone.default_layer]
    for layer in layers:
        backbone.resolve_layer(layer)  # fail before any work on an unknown layer
    if pooling not in POOLINGS:
        raise UserError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    view_cfg = ViewConfig(views, tuple(float(a) for a in rotation_angles), int(spatial_levels),
                          float(dataset.box_scale if box_scale is None else box_scale), bool(fast_decode),
                          max_pixels, bool(exif_orientation))
    dev = pick_device(device)
    check_precision(precision, dev)
    n_views = len(view_cfg.names)
    images_per_batch = max(1, batch_size // n_views) if n_views > 1 else batch_size
    items = list(dataset.items(split))
    if not items:
        raise UserError(f"data set {dataset.name!r} split {split!r} has no images "
                        f"(looked under {dataset.root or 'its bundled data'}); check the data root and the layout")
    sig = signature(backbone, dataset, split, items, layers, pooling, view_cfg)
    if precision != "fp32":
        sig["precision"] = precision
    sig_text = json.dumps(sig, sort_keys=True, default=str)

    if out_path.exists() and not overwrite:
        n = _up_to_date(out_path, sig_text, items)
        if n is not None:
            return ExtractResult(out_path, n, [], 0.0, cached=True)

    writer = StoreWriter(out_path, sig, expected_ids=[i.id for i in items], fresh=overwrite)
    try:
        if not overwrite and out_path.exists():  # another run may have finished it while we waited
            n = _up_to_date(out_path, sig_text, items)
            if n is not None:
                writer.close()
                return ExtractResult(out_path, n, [], 0.0, cached=True)
        return _run(backbone, dataset, split, items, writer, sig, layers, pooling, view_cfg, images_per_batch,
                    workers or default_workers(), dev, precision, runtime, progress)
    finally:
        writer.close()


def _run(backbone, dataset, split, items, writer, sig, layers, pooling, view_cfg, images_per_batch, workers, dev,
         precision, runtime, progress) -> ExtractResult:
    """Decode ahead, run the model, stream rows into ``writer``, commit."""
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    backbone.to(dev)
    n_views = len(view_cfg.names)
    start = writer.next_item
    if start:
        log.warning("resuming %s from item %d of %d", writer.partial, start, len(items))
    rt = runtimes.build(backbone, layers, pooling, runtime, dev, autocast_dtype=autocast_dtype)
    skipped_all: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    bar = _progress(len(items), start, f"{backbone.name} {dataset.name}/{split}", progress)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnbench-decode") as pool:
            pending: deque = deque()
            starts = iter(range(start, len(items), images_per_batch))

            def submit_next() -> bool:
                s = next(starts, None)
                if s is None:
                    return False
                pending.append((s, pool.submit(decode_batch, items[s : s + images_per_batch], backbone, view_cfg)))
                return True

            for _ in range(workers + 1):
                submit_next()
            try:
                while pending:
                    s, fut = pending.popleft()
                    batch, ok, skipped = fut.result()
                    submit_next()
                    feats: dict[str, np.ndarray] = {}
                    if len(ok):
                        x = torch.from_numpy(batch.reshape((-1,) + batch.shape[2:]))  # all views in one batch
                        if dev.type == "cuda":
                            x = x.pin_memory()
                        feats = {k: v.cpu().numpy() for k, v in zip(layers, _forward(rt, x))}
                        if view_cfg.mode != "none":
                            feats = {k: v.reshape(len(ok), n_views, -1) for k, v in feats.items()}
                    for sid, why in skipped:
                        log.warning("skipping unreadable image %s", why)
                    skipped_all.extend(skipped)
                    writer.append([i.id for i in ok], _labels(ok), feats, next_item=s + len(ok) + len(skipped),
                                  skipped=skipped)
                    bar.update(len(ok) + len(skipped))
            except BaseException:
                for _, fut in pending:  # do not decode what will never be written
                    fut.cancel()
                raise
        n_skipped = writer.n_skipped
        if n_skipped == len(items):
            first = skipped_all[0][1] if skipped_all else "see the earlier run's warnings"
            writer.discard()
            raise StoreError(f"none of the {len(items)} images of {dataset.name}/{split} could be read (first: "
                             f"{first}); nothing was written. Check the data root and the images")
        skipped_ids = writer.skipped_ids()
        by_id = {i.id: i for i in items}
        attrs = {
            **sig,
            "signature": json.dumps(sig, sort_keys=True, default=str),
            "default_layer": layers[0],
            "task": dataset.task,
            "views": view_cfg.names,
            "runtime": rt.name,
            "classes": list(dataset.classes),
            "n_skipped": n_skipped,
            "weights": backbone.weights,
            "skipped_sources": {sid: source_state(by_id[sid]) for sid in skipped_ids if sid in by_id},
        }
        writer.commit(attrs, dataset.extras(split))
    except KeyboardInterrupt:
        log.warning("interrupted: %s keeps the %d items done; run the same command to resume", writer.partial,
                    writer.kept)
        raise
    finally:
        bar.close()
        rt.close()
    seconds = time.perf_counter() - t0
    return ExtractResult(writer.path, len(items) - len(skipped_all) - start, skipped_all, seconds, resumed_from=start)


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


def _labels(items: Sequence[Item]) -> np.ndarray:
    """(B,) int64 class ids, or (B, C) int8 for multi-label items."""
    if items and isinstance(items[0].label, (tuple, list, np.ndarray)):
        return np.asarray([i.label for i in items], dtype=np.int8)
    return np.asarray([i.label for i in items], dtype=np.int64)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
