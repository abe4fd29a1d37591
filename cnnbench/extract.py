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
from .backbone import Backbone
from .dataset import Dataset, Item
from .images import load_and_preprocess, normalize
from .store import StoreWriter, open_info

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
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def decode_batch(items: Sequence[Item], backbone: Backbone):
    """Decode and preprocess a batch; unreadable images are returned in ``skipped``, never raised."""
    arrays, ok, skipped = [], [], []
    for item in items:
        try:
            arrays.append(load_and_preprocess(item.image, backbone.preprocess, item.box))
            ok.append(item)
        except Exception as exc:  # noqa: BLE001 - any decoder failure skips this one image only
            skipped.append((item.id, f"{_describe(item)}: {exc}"))
    size = backbone.preprocess.input_size
    batch = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return batch, ok, skipped


def _describe(item: Item) -> str:
    return str(item.image) if not isinstance(item.image, np.ndarray) else f"item {item.id}"


def signature(backbone: Backbone, dataset: Dataset, split: str, items: Sequence[Item], layers, pooling) -> dict:
    ids_hash = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()
    return {
        "backbone": backbone.name,
        "weights": backbone.weights,
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
) -> ExtractResult:
    """Extract one split of ``dataset`` into ``out_path`` (an ``.h5`` file)."""
    out_path = Path(out_path)
    layers = list(layers) if layers else [backbone.default_layer]
    for layer in layers:
        backbone.resolve_layer(layer)  # fail before any work on an unknown layer
    items = list(dataset.items(split))
    sig = signature(backbone, dataset, split, items, layers, pooling)

    if out_path.exists() and not overwrite:
        try:
            info = open_info(out_path)
            if info.attrs.get("signature") == json.dumps(sig, sort_keys=True, default=str):
                return ExtractResult(out_path, info.n, [], 0.0, cached=True)
        except Exception:  # noqa: BLE001 - unreadable or stale: extract again
            pass

    dev = pick_device(device)
    backbone.to(dev)
    if dev.type == "cpu":
        backbone.model.to(memory_format=torch.channels_last)
    workers = workers or default_workers()
    writer = StoreWriter(out_path, sig)
    start = writer.next_item
    if start:
        log.warning("resuming %s from item %d of %d", out_path, start, len(items))
    skipped_all: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    bar = _progress(len(items), start, f"{backbone.name} {dataset.name}/{split}", progress)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnbench-decode") as pool:
            pending: deque = deque()
            starts = iter(range(start, len(items), batch_size))

            def submit_next() -> bool:
                s = next(starts, None)
                if s is None:
                    return False
                pending.append((s, pool.submit(decode_batch, items[s : s + batch_size], backbone)))
                return True

            for _ in range(workers + 1):
                submit_next()
            while pending:
                s, fut = pending.popleft()
                batch, ok, skipped = fut.result()
                submit_next()
                feats: dict[str, np.ndarray] = {}
                if len(ok):
                    x = torch.from_numpy(batch)
                    if dev.type == "cuda":
                        x = x.pin_memory().to(dev, non_blocking=True)
                    with torch.inference_mode():
                        out = backbone.features(normalize(x, backbone.preprocess), layers, pooling)
                    feats = {k: v.float().cpu().numpy() for k, v in out.items()}
                for sid, why in skipped:
                    log.warning("skipping unreadable image %s", why)
                skipped_all.extend(skipped)
                writer.append(
                    [i.id for i in ok],
                    _labels(ok),
                    feats,
                    next_item=s + len(ok) + len(skipped),
                    skipped=skipped,
                )
                bar.update(len(ok) + len(skipped))
        attrs = {
            **sig,
            "signature": json.dumps(sig, sort_keys=True, default=str),
            "default_layer": layers[0],
            "task": dataset.task,
            "classes": list(dataset.classes),
            "n_skipped": _count_skipped(writer),
        }
        writer.commit(attrs, dataset.extras(split))
    except KeyboardInterrupt:
        writer.close()
        log.warning("interrupted: %s keeps the %d items done; run the same command to resume", writer.partial, writer_progress(writer))
        raise
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return ExtractResult(out_path, len(items) - len(skipped_all) - start, skipped_all, seconds, resumed_from=start)


def writer_progress(writer: StoreWriter) -> int:
    try:
        import h5py

        with h5py.File(writer.partial, "r") as f:
            return int(f.attrs["next_item"])
    except Exception:  # noqa: BLE001
        return 0


def _count_skipped(writer: StoreWriter) -> int:
    f = writer._f
    return int(f["skipped_ids"].shape[0]) if f is not None and "skipped_ids" in f else 0


def _labels(items: Sequence[Item]) -> np.ndarray:
    """(B,) int64 class ids, or (B, C) int8 for multi-label items."""
    if items and isinstance(items[0].label, (tuple, list, np.ndarray)):
        return np.asarray([i.label for i in items], dtype=np.int8)
    return np.asarray([i.label for i in items], dtype=np.int64)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
