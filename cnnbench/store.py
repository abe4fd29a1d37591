"""HDF5 feature store: one file per (backbone, data set, split).

Layout::

    /ids                 (N,) utf-8     image ids, in data-set order
    /labels              (N,) int64     class ids (or (N, C) for multi-label: 1 yes, 0 no, -1 ignore)
    /features/<layer>    (N, D) float32 one data set per requested layer, chunked;
                         (N, V, D) when views are stored (attr ``view_names`` names them)
    /skipped_ids         (M,) utf-8     images that could not be decoded
    /skipped_errors      (M,) utf-8     why
    /extras/<name>       utf-8 JSON     per-split structures from the data set (e.g. retrieval ground truth)
    attrs                backbone, layers, default_layer, preprocess, pooling, weights, dataset,
                         split, task, classes, options, cnnbench_version, checksums, complete

Writing is streamed into ``<name>.partial/`` (plain append-only files that also record progress and
checksums, so an interrupted extraction resumes where it stopped: :mod:`cnnbench.partial`), then
written in a fixed order into a fresh HDF5 file that is verified and renamed over the target:
identical inputs give byte-identical files, and a file that exists under its final name is always
complete. Partial work lives where nothing deletes it (:func:`work_dir`: inside a DVC repository
that is not the output's folder, which ``dvc repro`` deletes before it runs a stage).

Trust nothing on disk. Numeric data sets carry HDF5's Fletcher-32 checksum per chunk and string
data sets a SHA-256 in the ``checksums`` attribute, so a flipped byte is found on reading
(:func:`verify`); features must be finite. Partial work is resumed from its last batch whose
checksums hold, once its lengths and ids (in data-set order) check out; whatever a failed write (a
full disk) left beyond the recorded progress is cut. One run at a time writes an output: the writer
holds ``<name>.lock`` beside the partial work (an ``flock``, released by the kernel if the process
dies; the file itself is removed by the next run on that output).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from .errors import PluginError, StoreError, UserError
from .featureset import FeatureSet
from .partial import PartialRows, signature_of
from .partial import discard as discard_partial

log = logging.getLogger("cnnbench.store")

_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20
_ROW_SETS = ("ids", "labels")  # plus features/<layer>: one row per stored image
_SKIP_SETS = ("skipped_ids", "skipped_errors")
WORK_DIR = Path(".cnnbench") / "partial"  # under a DVC repository's root


def _chunk_rows(dim: int) -> int:
    return int(max(16, min(1024, _CHUNK_BYTES // (4 * max(dim, 1)))))


def work_dir(path: Path) -> Path:
    """Where the partial work and the lock of output ``path`` live: beside it, or, when it lies in
    a DVC repository, under the repository's ``.cnnbench/partial/`` at the output folder's path
    (``dvc repro`` deletes a stage's outputs, the folder with them, before it runs the stage; that
    folder is git- and dvc-ignored). Either way a run by hand and one by ``dvc repro`` share it."""
    folder = Path(os.path.abspath(path.parent))
    for root in (folder, *folder.parents):
        if (root / ".dvc").is_dir():
            return root / WORK_DIR / folder.relative_to(root)
    return path.parent


def partial_path(path: Path) -> Path:
    return work_dir(path) / (path.name + ".partial")


def lock_path(path: Path) -> Path:
    return work_dir(path) / (path.name + ".lock")


def is_disk_full(exc: BaseException) -> bool:
    """A full disk: ``OSError(ENOSPC)``, or HDF5's RuntimeError whose text carries ``errno = 28``."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "errno = 28" in str(exc) or "No space left" in str(exc)


class DiskFullError(StoreError):
    """The disk filled while writing; what was flushed before is kept for the next run."""


def _fix_hint(path: Path) -> str:
    return f"delete {path} (or run extract with --overwrite) and extract again"


# -- one writer per output -----------------------------------------------------------------------


class OutputLock:
    """``<name>.lock``, held with ``flock`` while a run writes ``<name>``: a second run on the same
    output is refused in one line instead of deleting or corrupting the first one's partial file.
    The kernel drops the lock when its process dies, so a killed run never leaves a stale lock."""

    def __init__(self, path: Path):
        self.target, self.path = path, lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                if is_disk_full(exc):
                    raise
                raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}; check the folder's permissions") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise StoreError(
                        f"another cnnbench run ({holder or 'unknown process'}) is writing {self.target}; "
                        "wait for it to finish (or stop it) and run the same command again"
                    ) from None
                raise StoreError(f"cannot lock {self.path}: {exc}; check the folder's permissions") from exc
            # the holder we waited on may have removed the file: lock the file that is there now
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # still holding it: nobody can lock the old inode in between
            finally:
                os.close(self._fd)
                self._fd = None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


class StoreWriter:
    """Append batches; :meth:`commit` makes the file appear atomically under its final name.

    ``signature`` identifies the extraction (backbone, layers, preprocessing, data set, split…);
    partial work (``<name>.partial/``, see :mod:`cnnbench.partial`) with the same signature is
    resumed once it passes :meth:`_check_resumed`, any other is discarded (``fresh=True`` discards it
    always: ``extract --overwrite``). ``expected_ids``: every item's id in data-set order, to check
    resumed rows against.
    """

    def __init__(self, path: str | os.PathLike, signature: dict[str, Any], *,
                 expected_ids: Sequence[str] | None = None, fresh: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        self.signature = json.dumps(signature, sort_keys=True, default=str)
        self._source = signature  # names the backbone and data set in messages
        self.expected_ids = list(expected_ids) if expected_ids is not None else None
        self._rows: PartialRows | None = None
        self._lock = OutputLock(self.path).acquire()
        try:
            _remove_leftover_tmp_files(self.path)
            if not fresh:
                self._rows = self._try_resume()
            if self._rows is None:
                self._rows = PartialRows.create(self.partial, self.signature)
        except BaseException:
            self.close()
            raise
        self.kept = self.next_item  # items safely on disk (updated after every recorded batch)

    def _try_resume(self) -> PartialRows | None:
        if not self.partial.is_dir():
            return None
        try:
            rows = PartialRows.reopen(self.partial, self.signature)
            if rows is not None:
                self._check_resumed(rows)
            return rows
        except Exception as exc:  # noqa: BLE001 - damaged partial work: we hold the lock, so it is nobody's
            log.warning("discarding %s, it cannot be resumed safely: %s", self.partial, exc)
            return None

    def _check_resumed(self, rows: PartialRows) -> None:
        """Lengths agree and the ids are the data set's first items in order (the bytes were checked
        against their checksums as the partial work was reopened)."""
        n_rows, n_skipped = rows.rows("ids"), rows.rows("skipped_ids")
        if n_rows + n_skipped != rows.next_item:
            raise ValueError(f"{n_rows} rows + {n_skipped} skipped != {rows.next_item} items done")
        for name in rows.columns:
            want = n_skipped if name.startswith("skipped_") else n_rows
            if rows.rows(name) != want:
                raise ValueError(f"{name} has {rows.rows(name)} rows, not {want}")
        if self.expected_ids is not None:
            if rows.next_item > len(self.expected_ids):
                raise ValueError(f"{rows.next_item} items done, but the data set has {len(self.expected_ids)}")
            skipped = set(rows.text("skipped_ids"))
            expected = [i for i in self.expected_ids[: rows.next_item] if i not in skipped]
            if rows.text("ids") != expected or len(skipped) != n_skipped:
                raise ValueError("its ids are not the data set's first items in order")

    @property
    def next_item(self) -> int:
        """Index of the first data-set item not yet written (skipped items count as written)."""
        return self._rows.next_item

    @property
    def n_skipped(self) -> int:
        """Images recorded as undecodable so far (this run and any run it resumes)."""
        return self._rows.rows("skipped_ids")

    def skipped_ids(self) -> list[str]:
        return self._rows.text("skipped_ids")

    def append(self, ids, labels, features: dict[str, np.ndarray], next_item: int, skipped=()) -> None:
        """Write one batch. ``skipped`` is a list of (id, error) for images that failed to decode.

        Non-finite features are refused (nothing of the batch is written). A full disk raises
        :class:`DiskFullError`; the batches recorded before it are kept for the next run."""
        features = {k: np.asarray(v, dtype=np.float32) for k, v in features.items()}
        self._check_row_shapes(features, labels, len(ids), next_item)
        for layer, feats in features.items():
            bad = ~np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
            if bad.any():
                which = [ids[i] for i in np.flatnonzero(bad)[:5]]
                raise StoreError(
                    f"layer {layer!r} gave non-finite features (NaN or inf) for {int(bad.sum())} image(s), e.g. "
                    f"{which}; nothing of this batch was written. Check the weights and --precision (fp16 overflows)"
                )
        batch: dict[str, Any] = {}
        if len(ids):
            batch["ids"] = [str(i) for i in ids]
            batch["labels"] = np.asarray(labels)
            batch.update({f"features/{k}": v for k, v in features.items()})
        if skipped:
            batch["skipped_ids"] = [s[0] for s in skipped]
            batch["skipped_errors"] = [s[1] for s in skipped]
        try:
            self._rows.append(batch, next_item)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(
                    f"no space left on the device holding {self.partial.parent}; {self.kept} images are kept in "
                    f"{self.partial}: free some space and run the same command to resume"
                ) from exc
            raise StoreError(f"writing {self.partial} failed ({exc}); {self.kept} images are kept in it: "
                             "run the same command to resume") from exc
        self.kept = int(next_item)

    def _check_row_shapes(self, features: dict[str, np.ndarray], labels, n: int, next_item: int) -> None:
        """Every batch's rows have the shape of the rows before it: a backbone whose feature size
        changes from one batch to the next (or a data set whose labels do) is refused in one line,
        before anything of the batch is written."""
        if not n:
            return
        given = {f"features/{k}": v.shape[1:] for k, v in features.items()}
        given["labels"] = np.shape(labels)[1:]
        for name, shape in given.items():
            col = self._rows.columns.get(name)
            if col is None or tuple(shape) == col.shape:
                continue
            layer = name.partition("/")[2]
            what = (f"backbone {self._source.get('backbone', '?')!r} layer {layer!r} gave features" if layer
                    else f"data set {self._source.get('dataset', '?')!r} gave labels")
            raise PluginError(
                f"{what} of shape {_shape(shape)} for items {self.next_item}-{int(next_item) - 1}, but "
                f"{_shape(col.shape)} for the {col.rows} before: every image must give one shape (a bug in the "
                f"plugin, {self._source.get('backbone_plugin' if layer else 'dataset_plugin') or 'in-process'}); "
                f"nothing of this batch was written and the {self.kept} items done are kept in {self.partial}"
            )

    def commit(self, attrs: dict[str, Any], extras: dict[str, Any] | None = None) -> Path:
        """Write the final file from the partial columns, in a fixed order, verify it and rename it
        into place. The free space is checked first: HDF5 does not survive a full disk gracefully."""
        rows = self._rows
        rows.close()
        need = int(rows.nbytes() * 1.1) + (1 << 20)
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise DiskFullError(f"not enough space to write {self.path} ({free >> 20} MiB free, about {need >> 20} MiB "
                                f"needed); all {self.kept} images are kept in {self.partial}: free some space and run "
                                "the same command")
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w", libver="earliest") as dst:
                names = [n for n in _ROW_SETS if n in rows.columns]
                names += sorted(n for n in rows.columns if n.startswith("features/"))
                names += [n for n in _SKIP_SETS if n in rows.columns]
                for name in names:
                    _write_column(rows, name, dst)
                if "ids" not in rows.columns:  # every image failed: keep the file valid and explicit
                    dst.create_dataset("ids", shape=(0,), dtype=_STR, track_times=False)
                for key in sorted(extras or {}):
                    text = json.dumps(extras[key], sort_keys=True, default=str)
                    dst.create_dataset(f"extras/{key}", data=text, dtype=_STR, track_times=False)
                for key in sorted(attrs):
                    dst.attrs[key] = _attr(attrs[key])
                dst.attrs["checksums"] = json.dumps(_string_digests(dst), sort_keys=True)
                dst.attrs["complete"] = True
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            verify(tmp)
            os.replace(tmp, self.path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, ValueError):  # a column read back does not match its checksum
                raise StoreError(f"the partial work in {self.partial} was damaged on disk after it was written "
                                 f"({exc}); nothing was committed: run the same command to compute the damaged "
                                 "rows again") from exc
            if isinstance(exc, Exception) and is_disk_full(exc):
                raise DiskFullError(f"no space left on the device holding {self.path.parent} while writing "
                                    f"{self.path}; all {self.kept} images are kept in {self.partial}: free some "
                                    "space and run the same command") from exc
            raise
        self.discard()
        return self.path

    def discard(self) -> None:
        """Forget the partial work (a run that processed nothing must not leave any to resume)."""
        self.close()
        discard_partial(self.partial)

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None
        self._lock.release()


def _write_column(rows: PartialRows, name: str, dst: h5py.File) -> None:
    """One column into the final file, chunked as the row size says, checksummed where HDF5 can."""
    col = rows.columns[name]
    if col.kind == "text":
        values = rows.text(name)
        chunks = (_chunk_rows(1),)
        out = dst.create_dataset(name, shape=(len(values),), maxshape=(None,), dtype=_STR, chunks=chunks,
                                 track_times=False)
        step = chunks[0] * 8
        for start in range(0, len(values), step):
            out[start : start + step] = np.asarray(values[start : start + step], dtype=object)
        return
    dtype = np.dtype(col.dtype)
    chunks = (_chunk_rows(int(np.prod(col.shape)) if col.shape else 1),) + col.shape
    out = dst.create_dataset(name, shape=(col.rows,) + col.shape, maxshape=(None,) + col.shape, dtype=dtype,
                             chunks=chunks, track_times=False, fletcher32=True)
    step = chunks[0] * 8
    start = 0
    for block in rows.blocks(name, step):  # to its end: the checksum is checked there
        out[start : start + len(block)] = block
        start += len(block)


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape) or "()"


def _remove_leftover_tmp_files(path: Path) -> None:
    """A run killed during :meth:`StoreWriter.commit` leaves ``<name>.tmp-<pid>``; call it holding the lock."""
    for tmp in path.parent.glob(path.name + ".tmp-*"):
        log.info("removing %s, left by an interrupted commit", tmp)
        tmp.unlink(missing_ok=True)


def clear_leftovers(path: str | os.PathLike, signature: dict[str, Any]) -> None:
    """What a run killed after its final rename (or during another's commit) left beside a complete
    ``path``: partial work with the same signature, a commit's temporary file and the lock file.
    Removed when no run holds the lock; a run that does keeps its files."""
    path = Path(path)
    partial, text = partial_path(path), json.dumps(signature, sort_keys=True, default=str)
    if not (partial.exists() or lock_path(path).exists() or any(path.parent.glob(path.name + ".tmp-*"))):
        return
    try:
        lock = OutputLock(path).acquire()
    except StoreError:
        return  # a live run (or a folder we may not write): its files are its own
    try:
        _remove_leftover_tmp_files(path)
        if partial.is_dir() and signature_of(partial) == text:
            log.info("removing %s: %s is complete", partial, path)
            discard_partial(partial)
    finally:
        lock.release()


def _string_digests(f: h5py.File) -> dict[str, str]:
    """SHA-256 of every string data set (HDF5's filters cannot checksum variable-length strings)."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and h5py.check_string_dtype(obj.dtype) is not None:
            h = hashlib.sha256()
            values = obj[()] if obj.shape == () else obj[()].tolist()
            for v in (values if isinstance(values, list) else [values]):
                h.update(_text(v).encode())
                h.update(b"\0")
            out[name] = h.hexdigest()

    f.visititems(visit)
    return out


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

    def provenance(self) -> dict:
        """What a result records of the feature file it was computed from: rows, runtime, weights
        digest and the SHA-256 of its extraction signature."""
        signature = self.attrs.get("signature")
        if isinstance(signature, str):
            signature = signature.encode()
        return {
            "rows": int(self.n),
            "runtime": self.attrs.get("runtime"),
            "signature_sha256": hashlib.sha256(signature).hexdigest() if signature is not None else None,
            "weights_sha256": self.attrs.get("weights_sha256"),
        }


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ValueError…
        raise StoreError(f"feature file {path} is not a readable HDF5 file ({str(exc).splitlines()[0]}); "
                         f"{_fix_hint(path)}") from exc


def open_info(path: str | os.PathLike) -> StoreInfo:
    path = Path(path)
    if not path.exists():
        hint = " (an interrupted extraction left a .partial file; rerun extract to resume)" if partial_path(path).exists() else ""
        raise StoreError(f"feature file {path} does not exist{hint}; run `cnnbench extract` first")
    try:
        with _open(path) as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            n = f["ids"].shape[0]
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"feature file {path} is damaged ({str(exc).splitlines()[0]}); {_fix_hint(path)}") from exc
    if not attrs.get("complete"):
        raise StoreError(f"feature file {path} is incomplete; {_fix_hint(path)}")
    return StoreInfo(path, attrs, n)


def check_features(info: StoreInfo, expected: dict, asked: str, fix: str, label: str = "") -> None:
    """One line when a feature file does not hold what was asked for: the first of its ``expected``
    attributes (fields of the extraction signature: backbone, weights_sha256, dataset, split…; None
    is not checked) it holds otherwise, named with what the file holds and what ``asked``
    (``evaluate asked for``, ``the database holds``) wants; then ``fix``."""
    for field, want in expected.items():
        if want is None:
            continue
        held, want = info.attrs.get(field), _attr(want)
        if held != want:
            raise UserError(f"{label}feature file {info.path} holds {field} {_shown(held)}, but {asked} "
                            f"{_shown(want)}; {fix}")


def _shown(value) -> str:
    if value in (None, ""):
        return "none"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…'"


def _check_strings(f: h5py.File) -> None:
    expected = json.loads(f.attrs.get("checksums", "{}") or "{}")
    if not expected:
        raise ValueError("it carries no checksums (written by an older cnnbench)")
    actual = _string_digests(f)
    for name, digest in expected.items():
        if actual.get(name) != digest:
            raise ValueError(f"{name} does not match its checksum")


def _check_rows(name: str, block: np.ndarray, start: int = 0) -> None:
    finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} row {start + int(np.flatnonzero(~finite)[0])} is not finite")


def _checked(path: Path, fn):
    """Run ``fn(open file)``; any h5py failure (a Fletcher-32 mismatch is an OSError) becomes one line."""
    try:
        with _open(path) as f:
            return fn(f)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"feature file {path} is corrupt ({str(exc).splitlines()[0]}); {_fix_hint(path)}") from exc


def verify(path: str | os.PathLike) -> StoreInfo:
    """Read every byte of a finished file back: Fletcher-32 per chunk, SHA-256 of the strings, finite
    features, consistent lengths. Memory stays flat (chunk by chunk). Raises :class:`StoreError`."""
    info = open_info(path)

    def check(f: h5py.File) -> None:
        _check_strings(f)
        for name in [f"features/{k}" for k in f.get("features", {})] + (["labels"] if "labels" in f else []):
            ds = f[name]
            if ds.shape[0] != info.n:
                raise ValueError(f"{name} has {ds.shape[0]} rows for {info.n} ids")
            step = (ds.chunks[0] if ds.chunks else 1024) * 8
            for start in range(0, ds.shape[0], step):
                block = ds[start : start + step]
                if name != "labels":
                    _check_rows(name, block, start)

    _checked(info.path, check)
    return info


def read(path: str | os.PathLike, layer: str | None = None) -> FeatureSet:
    """All rows of one layer, checked as they are read (checksums, finite values, lengths)."""
    info = open_info(path)
    layer = layer or info.attrs["default_layer"]

    def load(f: h5py.File) -> FeatureSet:
        if f"features/{layer}" not in f:
            raise StoreError(f"{info.path} has no layer {layer!r}; it holds {info.layers}")
        _check_strings(f)
        feats = f[f"features/{layer}"][()]
        _check_rows(f"features/{layer}", feats)
        labels = f["labels"][()] if "labels" in f else np.full(info.n, -1)
        if len(feats) != info.n or len(labels) != info.n:
            raise ValueError(f"{len(feats)} feature rows and {len(labels)} labels for {info.n} ids")
        ids = np.array([_text(s) for s in f["ids"][()]], dtype=object)
        extras = {k: json.loads(_text(f["extras"][k][()])) for k in f["extras"]} if "extras" in f else {}
        views = json.loads(info.attrs["view_names"]) if feats.ndim == 3 and info.attrs.get("view_names") else None
        return FeatureSet(feats, labels, ids, info.classes, extras, views)

    return _checked(info.path, load)


def read_ids(path: str | os.PathLike, layer: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The ids of a feature file (checksums checked) and the shape of one layer, without its
    features: what a distractor set of a million images is opened with before it is streamed."""
    info = open_info(path)

    def load(f: h5py.File) -> tuple[np.ndarray, tuple[int, ...]]:
        if f"features/{layer}" not in f:
            raise StoreError(f"{info.path} has no layer {layer!r}; it holds {info.layers}")
        _check_strings(f)
        return np.array([_text(s) for s in f["ids"][()]], dtype=object), tuple(f[f"features/{layer}"].shape)

    return _checked(info.path, load)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_skipped(path: str | os.PathLike) -> list[tuple[str, str]]:
    with _open(Path(path)) as f:
        if "skipped_ids" not in f:
            return []
        return [(_text(a), _text(b)) for a, b in zip(f["skipped_ids"][()], f["skipped_errors"][()])]
