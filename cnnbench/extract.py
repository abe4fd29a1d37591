"""Extraction: one split into one feature file, whichever engine does the work.

The engine (:func:`engine_for`: the local one or Ray's, behind :class:`cnnbench.engine.Engine`) makes
batches; :func:`extract_split` alone writes them: the skips, the rows, the progress bar, what an
interruption keeps. Rows stream into the HDF5 store batch by batch: memory stays flat in the number of
images, and an interrupted run resumes where it stopped, under either engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .backbone import Backbone
from .dataset import Dataset, EncodedImage, Item
from .engine import Engine, EngineFailed, build_runtime, forward_batch  # noqa: F401 - both once lived here
from .errors import CnnbenchError, StoreError, UserError
from .local_engine import LocalEngine, default_workers  # noqa: F401 - default_workers once lived here
from .settings import ExtractSettings
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
    if isinstance(item.image, EncodedImage):
        try:
            data = item.image.read()
        except Exception as exc:  # noqa: BLE001 - recorded as unreadable, like a file
            return f"unreadable:{type(exc).__name__}"
        return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
    path = Path(os.fspath(item.image))
    try:
        from .download import sha256_file

        return f"{path.stat().st_size}:{sha256_file(path)}"
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def engine_for(settings: ExtractSettings) -> Engine:
    """The engine ``settings.engine`` names: the one place it is chosen. The local one resolves its
    device as it is made, so a missing GPU is one line before any slow work."""
    if settings.engine == "ray":
        from .ray_engine import RayEngine  # Ray Data is imported only when asked for

        return RayEngine()
    return LocalEngine(settings)


def extract_split(backbone: Backbone, dataset: Dataset, split: str, out_path: str | os.PathLike,
                  settings: ExtractSettings | None = None, *, progress: bool = True,
                  overwrite: bool = False, engine: Engine | None = None) -> ExtractResult:
    """Extract one split of ``dataset`` into ``out_path`` (an ``.h5`` file), as ``settings`` say.

    With ``views`` other than ``"none"`` every image gives V model inputs (16 for ``jitter16``, the sum
    of l² for ``spatial``) and features are stored as (N, V, D); ``batch_size`` counts model inputs,
    so a batch holds ``batch_size // V`` images, all of whose views go through the model together.
    ``overwrite`` extracts again and discards partial work instead of resuming it. ``engine``: the
    one a command chose for all its splits (default: :func:`engine_for` ``settings``).
    """
    out_path = Path(out_path)
    settings = (settings or ExtractSettings()).resolve(split, dataset, backbone)
    engine = engine or engine_for(settings)
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
        skipped, runtime_name, details = _write(engine, backbone, f"{dataset.name}/{split}", items, writer, settings,
                                                progress)
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


def _write(engine: Engine, backbone: Backbone, what: str, items: Sequence[Item], writer: StoreWriter,
           settings: ExtractSettings, progress: bool) -> tuple[list[tuple[str, str]], str, dict]:
    """Stream the engine's batches into ``writer``, in order; returns this run's skips, the runtime
    and the engine's details."""
    start = expected = writer.next_item
    skipped_all: list[tuple[str, str]] = []
    with engine.run(backbone, items, start, settings) as run:
        bar = progress_bar(len(items), start, f"{backbone.name} {what}{engine.tag}", progress)
        try:
            for b in run.batches:
                if b.start != expected:
                    raise CnnbenchError(f"the {engine.name} engine returned batch {b.start} where {expected} was due; "
                                        f"nothing after item {expected} was written. Run the same command again")
                for _, why in b.skipped:
                    log.warning("skipping unreadable image %s", why)
                skipped_all.extend(b.skipped)
                writer.append([i.id for i in b.items], labels_array(b.items), b.features, next_item=b.next_item,
                              skipped=b.skipped)
                bar.update(b.next_item - b.start)
                expected = b.next_item
        except KeyboardInterrupt:
            log.warning("interrupted: %s keeps the %d items done; run the same command to resume", writer.partial,
                        writer.kept)
            raise
        except EngineFailed as exc:
            raise CnnbenchError(f"{exc}; {writer.kept} items are kept in {writer.partial}; run the same command to "
                                "resume") from exc
        finally:
            bar.close()
    return skipped_all, run.runtime, run.details


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


def labels_array(items: Sequence[Item]) -> np.ndarray:
    """(B,) int64 class ids, or (B, C) int8 for multi-label items."""
    if items and isinstance(items[0].label, (tuple, list, np.ndarray)):
        return np.asarray([i.label for i in items], dtype=np.int8)
    return np.asarray([i.label for i in items], dtype=np.int64)


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
