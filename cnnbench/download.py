"""Fetch a data set's official archives, verify them, and unpack them safely under the data root.

Archives come from third-party servers, so nothing in them is trusted: the bytes are hashed while
they stream to disk (SHA-256, when the plugin pins one), and every archive entry is checked before
anything is written. Absolute paths, ``..`` components, links that point outside the target, and
device files or FIFOs are refused with an error naming the entry. Extraction goes into a temporary
folder beside the target and is moved into place only once it completed, so an interrupted or
refused download never leaves a half-unpacked data set behind.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CnnbenchError

CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


class DownloadError(CnnbenchError):
    """A download failed, did not match its pinned checksum, or held an unsafe archive entry."""


@dataclass(frozen=True)
class Download:
    """One file a data set is distributed as.

    ``sha256``: the published checksum, or ``None`` when none is published (a warning says the file
    is not pinned). ``subdir``: where under the data set's folder the file (or the archive's
    content) goes. ``extract``: unpack archives (``.tar``, ``.tgz``, ``.zip`` …); other files are
    copied as they are. ``inner``: archives inside this one (paths relative to ``subdir``) that are
    unpacked in turn and then deleted (Caltech-101's zip holds ``101_ObjectCategories.tar.gz``).
    """

    url: str
    sha256: str | None = None
    filename: str = ""
    subdir: str = ""
    extract: bool = True
    inner: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.filename or posixpath.basename(urllib.parse.urlparse(self.url).path) or "download"

    @property
    def is_archive(self) -> bool:
        return self.extract and self.name.lower().endswith(ARCHIVE_SUFFIXES)


# -- fetching --------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: str | os.PathLike, sha256: str | None = None, *, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``dest``, hashing as it goes; the file appears under ``dest`` only if the
    checksum matches (or none is pinned). An existing ``dest`` with the right checksum is reused."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and sha256 and sha256_file(dest) == sha256.lower():
        return dest
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = resp.headers.get("Content-Length")
            bar = tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=dest.name, disable=not progress, dynamic_ncols=True)
            with bar:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as exc:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {exc}. Check the address and your connection, "
                            f"or fetch it by hand into {dest.parent}.") from exc
    digest = h.hexdigest()
    if sha256 and digest != sha256.lower():
        tmp.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: expected SHA-256 {sha256.lower()}, got {digest}. The file is "
            "corrupt or not the published one; it was deleted. Try again, or report it if it persists."
        )
    os.replace(tmp, dest)
    return dest


# -- safe extraction -------------------------------------------------------------------------------


def _check_name(archive: Path, name: str) -> str:
    """The entry's normalised relative path; refuses absolute paths and ``..`` components."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or raw.startswith("//"):
        raise DownloadError(f"{archive.name}: refused entry {name!r}: absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"{archive.name}: refused entry {name!r}: '..' path component")
    return "/".join(parts)


def _inside(rel_target: str) -> bool:
    norm = posixpath.normpath(rel_target)
    return not (norm == ".." or norm.startswith("../") or norm.startswith("/"))


def _check_tar_member(archive: Path, m: tarfile.TarInfo) -> None:
    rel = _check_name(archive, m.name)
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        raise DownloadError(f"{archive.name}: refused entry {m.name!r}: device file or FIFO")
    if m.issym():
        if m.linkname.startswith("/") or not _inside(posixpath.join(posixpath.dirname(rel), m.linkname)):
            raise DownloadError(f"{archive.name}: refused entry {m.name!r}: symlink to {m.linkname!r} "
                                "points outside the archive")
    elif m.islnk():
        if m.linkname.startswith("/") or not _inside(m.linkname):
            raise DownloadError(f"{archive.name}: refused entry {m.name!r}: hard link to {m.linkname!r} "
                                "points outside the archive")
    elif not (m.isfile() or m.isdir()):
        raise DownloadError(f"{archive.name}: refused entry {m.name!r}: unsupported entry type {m.type!r}")


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        links: set[str] = set()
        for m in members:
            _check_tar_member(archive, m)
            rel = _check_name(archive, m.name)
            parents = rel.split("/")[:-1]
            # an entry under a link could escape through it (link chains defeat lexical checks)
            for k in range(1, len(parents) + 1):
                if "/".join(parents[:k]) in links:
                    raise DownloadError(f"{archive.name}: refused entry {m.name!r}: it lies under the link "
                                        f"{'/'.join(parents[:k])!r}")
            if m.issym() or m.islnk():
                links.add(rel)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(dest, members=members, **kwargs)
        except tarfile.FilterError as exc:  # a second line of defence; our checks come first
            raise DownloadError(f"{archive.name}: refused entry: {exc}") from exc


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            rel = _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                if target.startswith("/") or not _inside(posixpath.join(posixpath.dirname(rel), target)):
                    raise DownloadError(f"{archive.name}: refused entry {info.filename!r}: symlink to "
                                        f"{target!r} points outside the archive")
                raise DownloadError(f"{archive.name}: refused entry {info.filename!r}: symlinks in zip "
                                    "archives are not supported")
            if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                raise DownloadError(f"{archive.name}: refused entry {info.filename!r}: device file or FIFO")
        for info in infos:
            rel = _check_name(archive, info.filename)
            if not rel:
                continue
            target = dest / rel
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``archive`` (tar of any compression, or zip) into ``dest``, safely and atomically:
    every entry is checked first, the content goes to a temporary folder beside ``dest``, and is
    merged into ``dest`` only when extraction finished. Returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
        else:
            raise DownloadError(f"{archive}: neither a tar nor a zip archive; delete it and download again")
        _merge_into(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _merge_into(src: Path, dest: Path) -> None:
    """Move ``src``'s content into ``dest``: whole folders are renamed when ``dest`` lacks them,
    otherwise merged file by file (e.g. VOC's trainval and test archives share VOCdevkit/VOC2007)."""
    if not dest.exists():
        os.replace(src, dest)
        src.mkdir()  # the caller removes it
        return
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge_into(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)


# -- one data set ------------------------------------------------------------------------------------


def download_dataset(dataset, *, keep_archives: bool = False, progress: bool = True,
                     warn: Callable[[str], None] = print, fetch_fn=fetch) -> Path:
    """Download and unpack every file the data set declares (``dataset.downloads``) into its folder."""
    downloads = list(getattr(dataset, "downloads", None) or [])
    if dataset.root is None:
        raise DownloadError(f"data set {dataset.name!r} needs no files (it is bundled)")
    if not downloads:
        raise DownloadError(
            f"data set {dataset.name!r} has no automatic download; get it from {dataset.url or '(see its docs)'} "
            f"and unpack it into {dataset.root} with this layout:\n{dataset.layout}"
        )
    root = Path(dataset.root)
    cache = root.parent / ".downloads" / dataset.name
    for d in downloads:
        if not d.sha256:
            warn(f"warning: {d.name}: no published SHA-256 is pinned for {d.url}; the file is not verified")
        path = fetch_fn(d.url, cache / d.name, d.sha256, progress=progress)
        target = root / d.subdir if d.subdir else root
        if d.is_archive:
            extract_archive(path, target)
            if not keep_archives:
                path.unlink(missing_ok=True)
            for rel in d.inner:
                nested = target / rel
                if not nested.is_file():
                    raise DownloadError(f"{d.name} did not contain {rel!r}; the archive's layout changed. "
                                        f"Unpack it by hand into {root}:\n{dataset.layout}")
                extract_archive(nested, nested.parent)
                nested.unlink()
        else:
            target.mkdir(parents=True, exist_ok=True)
            (shutil.copyfile if keep_archives else shutil.move)(path, target / d.name)
    try:
        cache.rmdir()
        cache.parent.rmdir()
    except OSError:
        pass
    return root
