"""HDF5 feature store: one file per (backbone, data set, split).

Layout::

    /ids                 (N,) utf-8     image ids, in data-set order
    /labels              (N,) int64     class ids (or (N, C) for multi-label: 1 yes, 0 no, -1 ignore)
    /features/<layer>    (N, D) float32 one data set per requested layer, chunked;
                         (N, V, D) when jittered views are stored (attr ``views`` names them)
    /skipped_ids         (M,) utf-8     images that could not be decoded
    /skipped_errors      (M,) utf-8     why
    /extras/<name>       utf-8 JSON     per-split structures from the data set (e.g. retrieval ground truth)
    attrs                backbone, layers, default_layer, preprocess, pooling, weights, dataset,
                         split, task, classes, options, cnnbench_version, complete

Writing is streamed into ``<name>.partial`` (which also records progress, so an interrupted
extraction resumes where it stopped), then copied in a fixed order into a fresh file that is
renamed over the target: identical inputs give byte-identical files, and a file that exists
under its final name is always complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import StoreError
from .head import FeatureSet

_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20


def _chunk_rows(dim: int) -> int:
    return int(max(16, min(1024, _CHUNK_BYTES // (4 * max(dim, 1)))))


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class StoreWriter:
    """Append batches; :meth:`commit` makes the file appear atomically under its final name.

    ``signature`` identifies the extraction (backbone, layers, preprocessing, data set, split…);
    a ``.partial`` file with the same signature is resumed, one with another is discarded.
    """

    def __init__(self, path: str | os.PathLike, signature: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        self.signature = json.dumps(signature, sort_keys=True, default=str)
        self._f: h5py.File | None = None
        self.resumed_from = 0
        if self.partial.exists():
            try:
                f = h5py.File(self.partial, "a")
                if f.attrs.get("signature") == self.signature:
                    self._f = f
                    self.resumed_from = int(f.attrs["next_item"])
                else:
                    f.close()
            except (OSError, KeyError):
                pass
            if self._f is None:
                self.partial.unlink()
        if self._f is None:
            self._f = h5py.File(self.partial, "w")
            self._f.attrs["signature"] = self.signature
            self._f.attrs["next_item"] = 0

    @property
    def next_item(self) -> int:
        """Index of the first data-set item not yet written (skipped items count as written)."""
        return int(self._f.attrs["next_item"])

    @property
    def n_skipped(self) -> int:
        """Images recorded as undecodable so far (this run and any run it resumes)."""
        return int(self._f["skipped_ids"].shape[0]) if "skipped_ids" in self._f else 0

    def _append(self, name: str, rows: np.ndarray, dtype) -> None:
        f = self._f
        if name not in f:
            shape = rows.shape[1:]
            chunks = (_chunk_rows(int(np.prod(shape)) if shape else 1),) + shape
            f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype, chunks=chunks)
        ds = f[name]
        n = ds.shape[0]
        ds.resize(n + len(rows), axis=0)
        ds[n:] = rows

    def append(self, ids, labels, features: dict[str, np.ndarray], next_item: int, skipped=()) -> None:
        """Write one batch. ``skipped`` is a list of (id, error) for images that failed to decode."""
        if len(ids):
            self._append("ids", np.asarray(ids, dtype=object), _STR)
            self._append("labels", np.asarray(labels), np.asarray(labels).dtype)
            for layer, feats in features.items():
                self._append(f"features/{layer}", np.asarray(feats, dtype=np.float32), np.float32)
        if skipped:
            self._append("skipped_ids", np.asarray([s[0] for s in skipped], dtype=object), _STR)
            self._append("skipped_errors", np.asarray([s[1] for s in skipped], dtype=object), _STR)
        self._f.attrs["next_item"] = int(next_item)
        self._f.flush()

    def commit(self, attrs: dict[str, Any], extras: dict[str, Any] | None = None) -> Path:
        """Copy the partial file into a fresh deterministic file and rename it into place."""
        src = self._f
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w", libver="earliest") as dst:
                names = [n for n in ("ids", "labels") if n in src]
                if "features" in src:
                    names += [f"features/{k}" for k in sorted(src["features"])]
                names += [n for n in ("skipped_ids", "skipped_errors") if n in src]
                for name in names:
                    _copy_dataset(src[name], dst, name)
                if "ids" not in src:  # every image failed: keep the file valid and explicit
                    dst.create_dataset("ids", shape=(0,), dtype=_STR, track_times=False)
                for key in sorted(extras or {}):
                    text = json.dumps(extras[key], sort_keys=True, default=str)
                    dst.create_dataset(f"extras/{key}", data=text, dtype=_STR, track_times=False)
                for key in sorted(attrs):
                    dst.attrs[key] = _attr(attrs[key])
                dst.attrs["complete"] = True
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.close()
        self.partial.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _copy_dataset(src: h5py.Dataset, dst: h5py.File, name: str) -> None:
    out = dst.create_dataset(
        name, shape=src.shape, maxshape=(None,) + src.shape[1:], dtype=src.dtype, chunks=src.chunks,
        track_times=False,
    )
    step = (src.chunks[0] if src.chunks else 1024) * 8
    for start in range(0, src.shape[0], step):
        out[start : start + step] = src[start : start + step]


def _attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return ""
    return value


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class StoreInfo:
    path: Path
    attrs: dict[str, Any]
    n: int

    @property
    def layers(self) -> list[str]:
        return json.loads(self.attrs["layers"])

    @property
    def classes(self) -> list[str]:
        return json.loads(self.attrs.get("classes", "[]"))


def open_info(path: str | os.PathLike) -> StoreInfo:
    path = Path(path)
    if not path.exists():
        hint = " (an interrupted extraction left a .partial file; rerun extract to resume)" if partial_path(path).exists() else ""
        raise StoreError(f"feature file {path} does not exist{hint}; run `cnnbench extract` first")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            n = f["ids"].shape[0]
    except OSError as exc:
        raise StoreError(f"feature file {path} is not a readable HDF5 file ({exc}); delete it and extract again") from exc
    if not attrs.get("complete"):
        raise StoreError(f"feature file {path} is incomplete; delete it and extract again")
    return StoreInfo(path, attrs, n)


def read(path: str | os.PathLike, layer: str | None = None) -> FeatureSet:
    info = open_info(path)
    layer = layer or info.attrs["default_layer"]
    with h5py.File(info.path, "r") as f:
        if f"features/{layer}" not in f:
            raise StoreError(f"{info.path} has no layer {layer!r}; it holds {info.layers}")
        feats = f[f"features/{layer}"][()]
        labels = f["labels"][()] if "labels" in f else np.full(info.n, -1)
        ids = np.array([s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]], dtype=object)
        extras = {k: json.loads(_text(f["extras"][k][()])) for k in f["extras"]} if "extras" in f else {}
    return FeatureSet(feats, labels, ids, info.classes, extras)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_skipped(path: str | os.PathLike) -> list[tuple[str, str]]:
    with h5py.File(path, "r") as f:
        if "skipped_ids" not in f:
            return []
        return [(_text(a), _text(b)) for a, b in zip(f["skipped_ids"][()], f["skipped_errors"][()])]
