"""The work in progress of one extraction: ``<name>.partial/``, plain append-only files.

Why not HDF5 for this part: a write that fails half way (a full disk) leaves an HDF5 file whose
library state is broken; closing it fails and the process can crash at exit. Plain files fail
cleanly, and recovering them is simple: ``progress.json`` (replaced atomically after every batch)
says how many rows and bytes of each column are valid, so a resumed run cuts whatever a failed or
killed write left beyond that, checks the rest, and goes on. The HDF5 file is written once, at the
end, from verified columns (:meth:`cnnbench.store.StoreWriter.commit`).

Columns are either arrays (fixed dtype and row shape, raw bytes) or text (one JSON string a line).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROGRESS = "progress.json"


@dataclass
class Column:
    kind: str  # "array" | "text"
    rows: int = 0
    nbytes: int = 0
    dtype: str = ""
    shape: tuple[int, ...] = ()

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.shape))) if self.kind == "array" else 0

    def to_json(self) -> dict:
        return {"kind": self.kind, "rows": self.rows, "nbytes": self.nbytes, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> "Column":
        return cls(d["kind"], int(d["rows"]), int(d["nbytes"]), d.get("dtype", ""), tuple(int(s) for s in d.get("shape", ())))


def _file(folder: Path, name: str) -> Path:
    return folder / (name.replace("/", "__") + ".bin")


class PartialRows:
    """Columns appended batch by batch; :attr:`state` is what is safely on disk."""

    def __init__(self, folder: Path, signature: str, state: dict[str, Any] | None = None):
        self.folder = folder
        self.signature = signature
        state = state or {"next_item": 0, "columns": {}}
        self.next_item = int(state["next_item"])
        self.columns = {k: Column.from_json(v) for k, v in state["columns"].items()}
        self._handles: dict[str, Any] = {}

    # -- creating and reopening ----------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, signature: str) -> "PartialRows":
        discard(folder)
        folder.mkdir(parents=True)
        rows = cls(folder, signature)
        rows._save_state()
        return rows

    @classmethod
    def reopen(cls, folder: Path, signature: str) -> "PartialRows | None":
        """The partial work if it was made with ``signature``; ``None`` if it was not. Raises
        ``ValueError`` when it is damaged beyond what :meth:`_recover` can cut away."""
        try:
            state = json.loads((folder / PROGRESS).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"its progress record is unreadable ({exc})") from exc
        if state.get("signature") != signature:
            return None
        rows = cls(folder, signature, state)
        rows._recover()
        return rows

    def _recover(self) -> None:
        """Cut every column back to its recorded length (a failed write may have appended more)."""
        for name, col in self.columns.items():
            path = _file(self.folder, name)
            size = path.stat().st_size if path.exists() else -1
            if size < col.nbytes:
                raise ValueError(f"{path.name} holds {max(size, 0)} bytes, {col.nbytes} recorded")
            if size > col.nbytes:
                os.truncate(path, col.nbytes)
            if col.kind == "array" and col.nbytes != col.rows * col.row_bytes:
                raise ValueError(f"{name}: {col.nbytes} bytes is not {col.rows} rows")

    # -- writing -------------------------------------------------------------------------------------
    def append(self, batch: dict[str, Any], next_item: int) -> None:
        """Append rows to columns (arrays, or lists of str), then record the new state. If anything
        fails, the recorded state still describes the previous batch."""
        new = {k: Column(**vars(c)) for k, c in self.columns.items()}
        for name, values in batch.items():
            if isinstance(values, np.ndarray):
                arr = np.ascontiguousarray(values)
                col = new.setdefault(name, Column("array", dtype=arr.dtype.str, shape=tuple(arr.shape[1:])))
                if col.kind != "array" or arr.dtype.str != col.dtype or tuple(arr.shape[1:]) != col.shape:
                    raise ValueError(f"{name}: rows of {arr.dtype} {arr.shape[1:]} do not match {col.dtype} {col.shape}")
                data = arr.tobytes()
            else:
                col = new.setdefault(name, Column("text"))
                data = "".join(json.dumps(str(v)) + "\n" for v in values).encode()
            self._handle(name).write(data)
            col.rows += len(values)
            col.nbytes += len(data)
        for h in self._handles.values():
            h.flush()
        previous, self.columns = self.columns, new
        try:
            self._save_state(next_item=int(next_item))
        except BaseException:
            self.columns = previous
            raise
        self.next_item = int(next_item)

    def _handle(self, name: str):
        if name not in self._handles:
            self._handles[name] = open(_file(self.folder, name), "ab")
        return self._handles[name]

    def _save_state(self, next_item: int | None = None) -> None:
        state = {"signature": self.signature, "next_item": self.next_item if next_item is None else next_item,
                 "columns": {k: c.to_json() for k, c in sorted(self.columns.items())}}
        tmp = self.folder / (PROGRESS + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(state, sort_keys=True))
            fh.flush()
        os.replace(tmp, self.folder / PROGRESS)

    def close(self) -> None:
        for h in self._handles.values():
            try:
                h.close()
            except OSError:
                pass  # data beyond the recorded state is cut on the next reopen
        self._handles = {}

    # -- reading -------------------------------------------------------------------------------------
    def rows(self, name: str) -> int:
        return self.columns[name].rows if name in self.columns else 0

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        col = self.columns[name]
        stop = col.rows if stop is None else min(stop, col.rows)
        start = max(0, min(start, stop))
        count = (stop - start) * int(np.prod(col.shape))
        with open(_file(self.folder, name), "rb") as fh:
            fh.seek(start * col.row_bytes)
            flat = np.fromfile(fh, dtype=np.dtype(col.dtype), count=count)
        return flat.reshape((stop - start,) + col.shape)

    def text(self, name: str) -> list[str]:
        if name not in self.columns:
            return []
        col = self.columns[name]
        with open(_file(self.folder, name), "rb") as fh:
            lines = fh.read(col.nbytes).decode().splitlines()
        if len(lines) != col.rows:
            raise ValueError(f"{name}: {len(lines)} lines, {col.rows} recorded")
        return [json.loads(line) for line in lines]

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())


def discard(folder: Path) -> None:
    """Remove partial work (a folder, or a single file left by an older cnnbench)."""
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    else:
        folder.unlink(missing_ok=True)
