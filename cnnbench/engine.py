"""The seam between the extraction engines and the one loop that writes what they make.

An :class:`Engine` (the local one, :mod:`cnnbench.local_engine`; Ray's, :mod:`cnnbench.ray_engine`)
turns items into :class:`Batch` es, in item order; :func:`cnnbench.extract.extract_split` alone writes
them (skips, the store, the progress bar, the interruption message), whichever engine made them.
What both engines compute with lives here too (the device, the runtime, the forward pass), so both
store the same rows.

Free of torch at import: Ray's decode workers import this module (through :mod:`cnnbench.ray_engine`),
and they never load torch.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from .dataset import Item
from .errors import CnnbenchError
from .settings import ExtractSettings, check_precision, resolve_device

if TYPE_CHECKING:
    import torch

    from .backbone import Backbone

log = logging.getLogger("cnnbench.extract")


@dataclass
class Batch:
    """One model batch: ``items[start:next_item]`` of the split, as the images read (one feature row
    each, in order) and the ones skipped (id, why)."""

    start: int
    next_item: int
    items: list[Item]
    features: dict[str, np.ndarray]
    skipped: list[tuple[str, str]]


@dataclass
class Run:
    """An engine's batches for one split, and what the file records of how they were made."""

    batches: Iterator[Batch]
    runtime: str  # the runtime that made the features (final once the batches are done)
    details: dict = field(default_factory=dict)  # engine-specific, kept in ExtractResult.details


class Engine(Protocol):
    """Where the work runs. :func:`cnnbench.extract.engine_for` picks one per command."""

    name: str  # the --engine value
    tag: str  # what the progress bar adds to its label

    def session(self) -> AbstractContextManager:
        """What every split of a command shares (one Ray connection)."""

    def run(self, backbone: Backbone, items: Sequence[Item], start: int,
            settings: ExtractSettings) -> AbstractContextManager[Run]:
        """Batches of ``items`` from ``start`` on, with resolved ``settings``: ready (runtime built,
        cluster reached) on entering, everything released on leaving."""


class EngineFailed(CnnbenchError):
    """A worker failed mid-run; the writing loop adds what is kept and how to resume."""


def runtime_device(device: str | None, precision: str) -> torch.device:
    """The device a runtime runs on, checked against the precision: the local engine's, once per
    command, and each Ray actor's own."""
    dev = resolve_device(device)
    check_precision(precision, dev)
    return dev


def build_runtime(backbone: Backbone, settings: ExtractSettings, device: torch.device, threads: int | None = None):
    """The checked runtime both engines extract with (a Ray worker builds its own, once)."""
    import torch

    from . import runtime as runtimes

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
    backbone.to(device)
    return runtimes.build(backbone, list(settings.layers), settings.pooling, settings.runtime, device,
                          autocast_dtype=autocast_dtype, threads=threads,
                          batch_size=settings.images_per_batch * len(settings.view_names))


def forward_batch(rt, batch: np.ndarray, settings: ExtractSettings, device: torch.device) -> dict[str, np.ndarray]:
    """Features of a decoded batch (B, V, H, W, 3), per layer: (B, D), or (B, V, D) with views. All
    views of the batch go through the model together. Both engines call this, so both store the same rows."""
    import torch

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


def _forward(rt, x: torch.Tensor) -> list[torch.Tensor]:
    """Run a batch; on a GPU out-of-memory error, run it again in halves (and remember nothing: the
    next batch tries the full size again, which is right when memory was only briefly short)."""
    import torch

    try:
        return rt(x)
    except torch.cuda.OutOfMemoryError:
        if len(x) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(x) // 2
        log.warning("GPU out of memory on a batch of %d inputs: splitting it (lower --batch-size)", len(x))
        return [torch.cat(parts) for parts in zip(_forward(rt, x[:half]), _forward(rt, x[half:]))]
