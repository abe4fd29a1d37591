"""The work in progress of one extraction: ``<name>.partial/``, plain append-only files.

Why not HDF5 for this part: a write that fails half way (a full disk) leaves an HDF5 file whose
library state is broken; closing it fails and the process can crash at exit. Plain files fail
cleanly, and recovering them is simple: ``progress.json`` (replaced atomically after every batch)
says how many batches are recorded, and ``batches.log`` (append-only, one line a batch) what every
column held after each of them: rows, bytes and the CRC-32 of all its bytes so far. A resumed run
cuts whatever a failed or killed write left beyond that, checks every batch's bytes against its
checksum, and goes on from the last batch that checks out (a flipped byte, a copy cut short: the
batches from there are computed again, never committed). The HDF5 file is written once, at the
end, from columns whose checksums are checked again as they are read
(:meth:`cnnbench.store.StoreWriter.commit`).

Columns are either arrays (fixed dtype and row shape, raw bytes) or text (one JSON string a line).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PROGRESS = "progress.json"
BATCHES = "batches.log"
FORMAT = 2  # progress.json without it (or with another value) was written by another cnnbench: not resumed

log = logging.getLogger("cnnbench.partial")


@dataclass
class Column:
    kind: str  # "array" | "text"
    rows: int = 0
    nbytes: int = 0
    dtype: str = ""
    shape: tuple[int, ...] = ()
    crc: int = 0  # CRC-32 of the column's first ``nbytes`` bytes

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.shape))) if self.kind == "array" else 0

    def layout(self) -> dict:
        """What never changes once the column exists (in ``progress.json``)."""
        return {"kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_layout(cls, d: dict) -> "Column":
        return cls(d["kind"], dtype=d.get("dtype", ""), shape=tuple(int(s) for s in d.get("shape", ())))


def _file(folder: Path, name: str) -> Path:
    return folder / (name.replace("/", "__") + ".bin")


class PartialRows:
    """Columns appended batch by batch; what is recorded is what is safely on disk."""

    def __init__(self, folder: Path, signature: str, layouts: dict[str, dict] | None = None):
        self.folder = folder
        self.signature = signature
        self.next_item = 0
        self.batches = 0
        self.log_bytes = 0
        self.columns = {k: Column.from_layout(v) for k, v in (layouts or {}).items()}
        self._handles: dict[str, Any] = {}

    # -- creating and reopening ----------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, signature: str) -> "PartialRows":
        discard(folder)
        folder.mkdir(parents=True)
        rows = cls(folder, signature)
        (folder / BATCHES).touch()
        rows._save_state()
        return rows

    @staticmethod
    def read_state(folder: Path) -> dict:
        """``progress.json``; raises ``ValueError`` when it is unreadable or of another format."""
        try:
            state = json.loads((folder / PROGRESS).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"its progress record is unreadable ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("it was written by another version of cnnbench")
        return state

    @classmethod
    def reopen(cls, folder: Path, signature: str) -> "PartialRows | None":
        """The partial work if it was made with ``signature``, cut back to its last batch whose
        checksums hold; ``None`` if it was made with another. Raises ``ValueError`` when its records
        are unreadable."""
        state = cls.read_state(folder)
        if state.get("signature") != signature:
            return None
        try:
            rows = cls(folder, signature, state["columns"])
            recorded, log_bytes = int(state["batches"]), int(state["log_bytes"])
            if recorded < 0 or log_bytes < 0:
                raise ValueError(f"{recorded} batches, {log_bytes} bytes")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"its progress record is malformed ({exc!r})") from exc
        rows._recover(recorded, log_bytes)
        return rows

    def _recover(self, recorded: int, log_bytes: int) -> None:
        """Go back to the last recorded batch whose bytes all check out, and cut everything after it
        (a failed or killed write appends bytes that were never recorded)."""
        ends, states = [], []  # byte offset in batches.log after each batch, and the columns then
        with open(self.folder / BATCHES, "rb") as fh:
            text = fh.read(log_bytes)
        at = 0
        for line in text.splitlines(keepends=True)[:recorded]:
            state = _parse_batch(line, self.columns)
            if state is None:
                break
            at += len(line)
            ends.append(at)
            states.append(state)
        good = self._good_batches(states)
        if good < recorded:
            log.warning("%s: the work from item %d on does not match its checksums (damaged on disk); it is cut "
                        "and computed again", self.folder, states[good - 1][0] if good else 0)
        self._set(states[good - 1] if good else (0, {}))
        self.batches, self.log_bytes = good, ends[good - 1] if good else 0
        os.truncate(self.folder / BATCHES, self.log_bytes)
        for name, col in list(self.columns.items()):
            path = _file(self.folder, name)
            if col.rows == 0 and good < recorded:
                del self.columns[name]
                path.unlink(missing_ok=True)
            elif path.exists() and path.stat().st_size > col.nbytes:
                os.truncate(path, col.nbytes)
        if good < recorded:
            self._save_state()

    def _good_batches(self, states: list[tuple[int, dict]]) -> int:
        """How many of ``states`` (in order) the column files hold with matching checksums."""
        good = len(states)
        for name, col in self.columns.items():
            path = _file(self.folder, name)
            size = path.stat().st_size if path.exists() else 0
            rows, nbytes, crc = 0, 0, 0
            with open(path if path.exists() else os.devnull, "rb") as fh:
                for k, (_, cols) in enumerate(states[:good]):
                    r, n, c = cols.get(name, (0, 0, 0))
                    if (r, n) == (rows, nbytes) and c == crc:
                        continue  # the column is not in this batch
                    if n < nbytes or r < rows or n > size:
                        good = k
                        break
                    data = fh.read(n - nbytes)
                    if (zlib.crc32(data, crc) != c or (col.kind == "array" and n - nbytes != (r - rows) * col.row_bytes)
                            or (col.kind == "text" and data.count(b"\n") != r - rows)):
                        good = k
                        break
                    rows, nbytes, crc = r, n, c
        return good

    def _set(self, state: tuple[int, dict]) -> None:
        self.next_item = state[0]
        for name, col in self.columns.items():
            col.rows, col.nbytes, col.crc = state[1].get(name, (0, 0, 0))

    # -- writing -------------------------------------------------------------------------------------
    def append(self, batch: dict[str, Any], next_item: int) -> None:
        """Append rows to columns (arrays, or lists of str), then record the new state. If anything
        fails, the recorded state still describes the previous batch (and the columns are cut back)."""
        new = {k: Column(**vars(c)) for k, c in self.columns.items()}
        try:
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
                col.crc = zlib.crc32(data, col.crc)
            line = (json.dumps([int(next_item), {k: [c.rows, c.nbytes, c.crc] for k, c in sorted(new.items())}])
                    + "\n").encode()
            self._handle_of_log().write(line)
            for h in self._handles.values():
                h.flush()
            previous, self.columns = self.columns, new
            try:
                self._save_state(self.batches + 1, self.log_bytes + len(line))
            except BaseException:
                self.columns = previous
                raise
        except BaseException:
            self._cut_back()
            raise
        self.next_item, self.batches, self.log_bytes = int(next_item), self.batches + 1, self.log_bytes + len(line)

    def _cut_back(self) -> None:
        """After a failed append: drop what it wrote, so the next batch goes where the records say."""
        self.close()
        for name, col in [(BATCHES, None), *self.columns.items()]:
            path = self.folder / BATCHES if col is None else _file(self.folder, name)
            try:
                if path.exists():
                    os.truncate(path, self.log_bytes if col is None else col.nbytes)
            except OSError:
                pass  # cut on the next reopen
        for name in [n for n in os.listdir(self.folder) if n.endswith(".bin")]:
            if not any(_file(self.folder, k).name == name for k in self.columns):
                (self.folder / name).unlink(missing_ok=True)  # a column this batch began

    def _handle(self, name: str):
        if name not in self._handles:
            self._handles[name] = open(_file(self.folder, name), "ab")
        return self._handles[name]

    def _handle_of_log(self):
        if BATCHES not in self._handles:  # not a column name: those end in .bin
            self._handles[BATCHES] = open(self.folder / BATCHES, "ab")
        return self._handles[BATCHES]

    def _save_state(self, batches: int | None = None, log_bytes: int | None = None) -> None:
        state = {"format": FORMAT, "signature": self.signature,
                 "batches": self.batches if batches is None else batches,
                 "log_bytes": self.log_bytes if log_bytes is None else log_bytes,
                 "columns": {k: c.layout() for k, c in sorted(self.columns.items())}}
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

    def blocks(self, name: str, step: int) -> Iterator[np.ndarray]:
        """An array column, ``step`` rows at a time, from the first; raises ``ValueError`` at the end
        if the bytes read do not match the column's checksum."""
        col, crc = self.columns[name], 0
        with open(_file(self.folder, name), "rb") as fh:
            for start in range(0, col.rows, step):
                count = min(step, col.rows - start) * int(np.prod(col.shape))
                flat = np.fromfile(fh, dtype=np.dtype(col.dtype), count=count)
                crc = zlib.crc32(flat, crc)
                yield flat.reshape((-1,) + col.shape)
        _check_crc(name, crc, col.crc)

    def text(self, name: str) -> list[str]:
        if name not in self.columns:
            return []
        col = self.columns[name]
        with open(_file(self.folder, name), "rb") as fh:
            data = fh.read(col.nbytes)
        _check_crc(name, zlib.crc32(data), col.crc)
        lines = data.decode().splitlines()
        if len(lines) != col.rows:
            raise ValueError(f"{name}: {len(lines)} lines, {col.rows} recorded")
        return [json.loads(line) for line in lines]

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())


def _parse_batch(line: bytes, columns: dict[str, Column]) -> tuple[int, dict] | None:
    """One line of ``batches.log`` as (next item, {column: (rows, bytes, crc)}); ``None`` if damaged."""
    try:
        next_item, cols = json.loads(line)
        cols = {str(k): tuple(int(x) for x in v) for k, v in cols.items()}
        if any(k not in columns or len(v) != 3 for k, v in cols.items()):
            return None
        return int(next_item), cols
    except (ValueError, TypeError, AttributeError):
        return None


def _check_crc(name: str, actual: int, recorded: int) -> None:
    if actual != recorded:
        raise ValueError(f"{name} does not match its checksum (damaged on disk after it was written)")


def signature_of(folder: Path) -> str | None:
    """The signature partial work was made with; ``None`` if it is unreadable or of another format."""
    try:
        return PartialRows.read_state(folder).get("signature")
    except ValueError:
        return None


def discard(folder: Path) -> None:
    """Remove partial work (a folder, or a single file left by an older cnnbench)."""
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    else:
        folder.unlink(missing_ok=True)
