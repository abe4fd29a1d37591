"""Atomic, deterministic JSON files (sorted keys, no timestamps), and reading them back bounded.

Writing: :func:`write_json` / :func:`atomic_write_text` (UTF-8, fsync, rename; a failure leaves no
half file). A folder that cannot be made or written (a path component that is a file, a read-only
folder) is one :class:`WriteError` line; a full disk stays an ``OSError(ENOSPC)``,
which the command line explains. Reading: :func:`read_bytes` refuses a file larger than its writer
writes before reading any of it, and :func:`parse` turns bad JSON into one :class:`ResultError` line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import CnnbenchError, UserError


class ResultError(CnnbenchError, ValueError):
    """A result file (metrics, run record, outcomes) that is missing, damaged, larger than cnnbench
    writes, or does not belong with the files beside it; the message names the files and the
    ``cnnbench evaluate`` to rerun. A ``ValueError`` too, as the readers raised before."""


class WriteError(UserError, OSError):
    """A file or folder cannot be written (a path component is a file, no permission, a read-only
    disk): one line naming it. An ``OSError`` too, so callers that fall back on one keep doing so."""


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, dumps(data))


def dumps(data: Any) -> str:
    """The text :func:`write_json` writes (indented, sorted keys, newline at the end)."""
    return json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n"


def beside(path: str | os.PathLike, suffix: str) -> Path:
    """The file that goes with a ``.json`` file: ``.../svm.json`` + ``.run.json`` -> ``.../svm.run.json``."""
    path = Path(path)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + suffix)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    writable_dir(path.parent, create=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a file behind
        if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
            raise WriteError(f"cannot write {path}: {exc.strerror or exc}; choose a folder you can write to") from exc
        raise
    return path


def writable_dir(folder: str | os.PathLike, *, create: bool = False) -> Path:
    """``folder``, checked (and made, with ``create``) before any work is spent on what goes in it: a
    path component that is a file, or a folder that cannot be written, is one line naming it. Without
    ``create`` nothing is made: the nearest existing folder above must be writable."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise WriteError(f"cannot write into {folder}: {existing} is a file, not a folder; choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write into {folder}: {existing} is not writable; choose a folder you can write to")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            raise WriteError(f"cannot make the folder {folder}: {exc.strerror or exc}; choose another folder") from exc
    return folder


# -- reading, bounded ------------------------------------------------------------------------------------


def read_bytes(path: str | os.PathLike, limit: int, fix: str) -> bytes:
    """The bytes of ``path``, refused (one :class:`ResultError` line ending in ``fix``) when it is
    missing, unreadable or over ``limit`` bytes: the size is checked before anything is read."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (reading one waits for a writer for ever), a device
            raise ResultError(f"{path} is not a regular file; {fix}")
        size = st.st_size
        if size <= limit:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
            size = len(data)
    except OSError as exc:
        raise ResultError(f"{path} cannot be read ({exc.strerror or exc}); {fix}") from None
    if size > limit:
        raise ResultError(f"{path} is {_size(size)}, more than cnnbench writes there (at most {_size(limit)}); {fix}")
    return data


def parse(data: bytes, path: str | os.PathLike, fix: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path} is not valid JSON ({exc}); {fix}") from None
    except RecursionError:
        raise ResultError(f"{path} nests deeper than any file cnnbench writes; {fix}") from None


def fingerprint(data: bytes) -> dict:
    """What a run record keeps of a file written with it: its size and SHA-256."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_fingerprint(path: str | os.PathLike, size: int | None = None) -> dict | None:
    """:func:`fingerprint` of a file, read in blocks (memory stays flat); None when ``size`` is given
    and the file has another size (no need to read it to know it differs) or when it cannot be read."""
    h, n = hashlib.sha256(), 0
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return None
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                n += len(block)
    except OSError:
        return None
    return {"bytes": n, "sha256": h.hexdigest()}


def describe(v) -> str:
    """What a JSON value is, in words, for a message (``text``, ``a list of 3``, ``the number 5``)."""
    if isinstance(v, list):
        return f"a list of {len(v)}"
    return {dict: "an object", str: "text", bool: "true/false", type(None): "null"}.get(type(v), f"the number {v!r}")


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 1 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
