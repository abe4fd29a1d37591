"""Fetch a data set's official archives, verify them, and unpack them safely under the data root.

Archives come from third-party servers, so nothing in them is trusted: the bytes are hashed while
they stream to disk (SHA-256, when the plugin pins one), and every archive entry is checked before
anything is written. Absolute paths, ``..`` components, links that point outside the target, and
device files or FIFOs are refused with an error naming the entry. Extraction goes into a temporary
folder beside the target and is moved into place only once it completed, so an interrupted or
refused download never leaves a half-unpacked data set behind.

Links. Several archives are often unpacked into one folder (Holidays, Paris 6k, UIUC attributes),
and a link harmless in its own archive can be turned outward by a link from another one
(``t -> s/../..`` stays inside until ``s`` becomes a link), so checking a link's text is not enough:

* a symlink may go up (``..``) only at the start of its target (``../../jpg/a.jpg``, not
  ``s/../../jpg``): going up then walks real folders, whatever links other archives add;
* after unpacking, every symlink's real destination (``os.path.realpath``, links to links
  included) must lie inside the temporary folder, and no unpacked file may share its inode with a
  file outside it; a hard link must name a regular file stored earlier in the same archive;
* merging never writes through a link: where the data set's folder already has a symlink and the
  archive has a folder, the archive is refused before anything is moved (replace the link by a
  real folder); where the archive has a file, the link itself is replaced, never what it points
  to. The target folder itself may be a link (to another disk, say): that is the user's choice.
* merging never deletes a folder: where the data set's folder has a folder and the archive a file
  or link of the same name (or the other way round), the archive is refused before anything is
  moved. Only a file (or link) is replaced, by the archive's file of the same name.

Limits. A small archive can unpack to more than the disk holds (a decompression bomb), so the
declared sizes (tar headers, the zip directory) and the entries are counted before anything is
written, and zip entries are held to their declared size while written (zip sizes can lie). The
defaults, ``MAX_UNPACKED_BYTES`` (512 GiB) and ``MAX_ENTRIES`` (2 million) per archive, leave room
for the largest data sets (R1M, ImageNet: tens of GB and about a million files). With the default
size cap an archive may also unpack to at most ``MAX_RATIO`` (100) times its own size or
``RATIO_FLOOR`` (1 GiB), whichever is more: images barely compress, so image archives are near
1:1, and the floor lets small, very compressible annotation archives through. An explicit
``max_bytes`` replaces both (the caller vouches for the archive); ``cnnbench datasets download``
exposes the caps as ``--max-unpacked-size`` and ``--max-entries``.

A truncated or corrupt archive, or a full disk, is one error naming the archive, not a traceback.
"""

from __future__ import annotations

import errno
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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CnnbenchError

try:  # an optional part of CPython
    import lzma
except ImportError:  # pragma: no cover
    lzma = None

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
        if getattr(exc, "errno", None) == errno.ENOSPC:
            raise DownloadError(f"no space left on device while downloading {url} into {dest.parent}; free some "
                                "space and run again") from exc
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

MAX_UNPACKED_BYTES = 512 << 30  # per archive; see the module docstring
MAX_ENTRIES = 2_000_000
MAX_RATIO = 100  # unpacked bytes per archive byte, with the default size cap only
RATIO_FLOOR = 1 << 30  # archives may always unpack to this much, however well they compress
_TRAILER_READ = 16 << 20  # tar padding read after the last entry, so compressors check their CRC
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile) + ((lzma.LZMAError,) if lzma else ())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class _Budget:
    """Adds up an archive's entries and unpacked bytes, refusing it as soon as a cap is crossed (before
    the entry is written, so a decompression bomb costs header reads, not disk)."""

    def __init__(self, archive: Path, max_bytes: int | None, max_entries: int | None):
        self.archive = archive
        self.size = archive.stat().st_size
        self.max_entries = MAX_ENTRIES if max_entries is None else max_entries
        self.max_bytes = MAX_UNPACKED_BYTES if max_bytes is None else max_bytes
        # the ratio guard backs the default only: an explicit cap is the caller vouching for the archive
        self.ratio_cap = max(RATIO_FLOOR, MAX_RATIO * self.size) if max_bytes is None else None
        self.entries = self.bytes = 0

    def add(self, size: int) -> None:
        self.entries += 1
        self.bytes += size
        if self.entries > self.max_entries:
            raise DownloadError(
                f"{self.archive}: holds more than {self.max_entries:,} entries (max_entries={self.max_entries}); "
                "if you trust it, raise the limit with --max-entries on `cnnbench datasets download` (max_entries= "
                "in Python)")
        if self.bytes > self.max_bytes:
            raise DownloadError(
                f"{self.archive}: would unpack to more than {_human(self.max_bytes)} (max_bytes={self.max_bytes}); if "
                "you trust it, raise the limit with --max-unpacked-size on `cnnbench datasets download` (max_bytes= in "
                "Python)")
        if self.ratio_cap is not None and self.bytes > self.ratio_cap:
            raise DownloadError(
                f"{self.archive}: a {_human(self.size)} file that would unpack to more than "
                f"{_human(self.ratio_cap)} (over {MAX_RATIO}:1, the mark of a decompression bomb); if you trust it, "
                "give an explicit limit with --max-unpacked-size on `cnnbench datasets download` (max_bytes= in "
                "Python), which replaces this guard")


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


def _goes_up_midway(link_target: str) -> bool:
    """A ``..`` after a folder name (``s/../..``): where it leads depends on whether ``s`` is a link,
    which another archive unpacked into the same folder can decide, so no text check can vouch for it."""
    named = False
    for part in link_target.split("/"):
        if part == "..":
            if named:
                return True
        elif part not in ("", "."):
            named = True
    return False


def _check_tar_member(archive: Path, m: tarfile.TarInfo) -> None:
    rel = _check_name(archive, m.name)
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        raise DownloadError(f"{archive.name}: refused entry {m.name!r}: device file or FIFO")
    if m.issym():
        if m.linkname.startswith("/") or not _inside(posixpath.join(posixpath.dirname(rel), m.linkname)):
            raise DownloadError(f"{archive.name}: refused entry {m.name!r}: symlink to {m.linkname!r} "
                                "points outside the archive")
        if _goes_up_midway(m.linkname):
            raise DownloadError(f"{archive.name}: refused entry {m.name!r}: symlink to {m.linkname!r} goes up ('..') "
                                "after a folder name, so other links could lead it outside the archive")
    elif m.islnk():
        if m.linkname.startswith("/") or ".." in m.linkname.split("/"):
            raise DownloadError(f"{archive.name}: refused entry {m.name!r}: hard link to {m.linkname!r} "
                                "points outside the archive")
    elif not (m.isfile() or m.isdir()):
        raise DownloadError(f"{archive.name}: refused entry {m.name!r}: unsupported entry type {m.type!r}")


class _Names:
    """The paths an archive stores, so that each names one thing: a path stored twice as a file (which
    copy is the data set's?), as a file and a folder, or under a file, or a file with no name (``.``)
    is refused before anything is written, with the entry's name (not a temporary path's error)."""

    def __init__(self, archive: Path):
        self.archive, self.kinds = archive, {}  # path -> True (folder) / False (file or link)

    def add(self, raw: str, rel: str, is_dir: bool) -> None:
        def refuse(why: str) -> DownloadError:
            return DownloadError(f"{self.archive.name}: refused entry {raw!r}: {why}; the archive is corrupt or forged")

        if not rel:
            if is_dir:
                return
            raise refuse("it names no file (only '.' or '/')")
        parts = rel.split("/")
        for k in range(1, len(parts)):
            parent = "/".join(parts[:k])
            if self.kinds.setdefault(parent, True) is False:
                raise refuse(f"it lies under {parent!r}, which the archive stores as a file")
        before = self.kinds.get(rel)
        if before is not None and not (before and is_dir):
            raise refuse("the archive stores this path twice" if before == is_dir else
                         "the archive stores this path both as a file and as a folder")
        self.kinds[rel] = is_dir


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> bool:
    """Check every member, then unpack; returns whether there were hard links (whose inodes are then
    checked on disk)."""
    with tarfile.open(archive, "r:*") as tar:
        members: list[tarfile.TarInfo] = []
        links: set[str] = set()
        files: dict[str, int] = {}  # regular files so far, by path: the only valid hard-link targets
        names = _Names(archive)
        for m in tar:  # lazily, so a bomb's giant first header stops us before its data is read
            _check_tar_member(archive, m)
            rel = _check_name(archive, m.name)
            parents = rel.split("/")[:-1]
            # an entry under a link could escape through it (link chains defeat lexical checks)
            for k in range(1, len(parents) + 1):
                if "/".join(parents[:k]) in links:
                    raise DownloadError(f"{archive.name}: refused entry {m.name!r}: it lies under the link "
                                        f"{'/'.join(parents[:k])!r}")
            names.add(m.name, rel, m.isdir())
            size = m.size if m.isfile() else 0
            if m.islnk():
                target = "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
                if target not in files:  # a link to a link would be followed by os.link
                    raise DownloadError(f"{archive.name}: refused entry {m.name!r}: hard link to {m.linkname!r}, "
                                        "which is not a regular file stored earlier in the archive")
                size = files[target]  # unpacked as a copy where the file system has no hard links
            budget.add(size)
            if m.isfile() or m.islnk():
                files[rel] = size
            else:
                files.pop(rel, None)
            if m.issym() or m.islnk():
                links.add(rel)
            members.append(m)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(dest, members=members, **kwargs)
        except getattr(tarfile, "FilterError", ()) as exc:  # a second line of defence; our checks come first
            raise DownloadError(f"{archive.name}: refused entry: {exc}") from exc
        # tarfile stops at the end-of-archive marker, before gzip/bz2/xz check their CRC at the end of
        # the stream: read the padding left so a corrupt file is an error (bounded: trailing junk is ignored)
        left = _TRAILER_READ
        while left > 0 and (block := tar.fileobj.read(min(CHUNK, left))):
            left -= len(block)
    return any(m.islnk() for m in members)


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = _Names(archive)
        for info in infos:
            rel = _check_name(archive, info.filename)
            names.add(info.filename, rel, info.is_dir())
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
            budget.add(0 if info.is_dir() else info.file_size)
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
                written = 0
                while block := src.read(CHUNK):
                    written += len(block)  # the declared size was budgeted; hold the entry to it
                    if written > info.file_size:
                        raise DownloadError(
                            f"{archive}: entry {info.filename!r} unpacks to more than the {info.file_size:,} bytes "
                            "it declares; the archive is corrupt or forged. Delete it and download again")
                    out.write(block)


def _check_unpacked(archive: Path, root: Path, *, hard_links: bool = True) -> None:
    """Second line of defence, on what is really on disk: every symlink must resolve inside ``root``
    (links to links included), and no file may share its inode with a file outside ``root``."""
    real_root = os.path.realpath(root)
    shared: dict[tuple[int, int], list] = {}  # inode -> [links seen here, st_nlink, a path]
    folders = [str(root)]
    while folders:
        with os.scandir(folders.pop()) as it:
            for e in it:
                if e.is_symlink():
                    real = os.path.realpath(e.path)
                    if os.path.commonpath([real_root, real]) != real_root:
                        rel = Path(e.path).relative_to(root).as_posix()
                        raise DownloadError(f"{archive.name}: refused entry {rel!r}: symlink to "
                                            f"{os.readlink(e.path)!r} really leads outside the archive")
                elif e.is_dir(follow_symlinks=False):
                    folders.append(e.path)
                elif hard_links:
                    st = e.stat(follow_symlinks=False)
                    if st.st_nlink > 1:
                        shared.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, e.path])[0] += 1
    for seen, nlink, path in shared.values():
        if seen < nlink:
            rel = Path(path).relative_to(root).as_posix()
            raise DownloadError(f"{archive.name}: refused entry {rel!r}: it is a hard link to a file outside the "
                                "archive")


def _corrupt(archive: Path, exc: BaseException) -> str:
    return f"{archive} is truncated or corrupt ({exc or type(exc).__name__}); delete it and download again"


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *, max_bytes: int | None = None,
                    max_entries: int | None = None) -> Path:
    """Unpack ``archive`` (tar of any compression, or zip) into ``dest``, safely and atomically:
    every entry is checked first, the content goes to a temporary folder beside ``dest``, and is
    merged into ``dest`` only when extraction finished. Returns ``dest``.

    ``max_bytes`` / ``max_entries`` cap the unpacked size and the number of entries; ``None`` means
    ``MAX_UNPACKED_BYTES`` with the compression-ratio guard, and ``MAX_ENTRIES`` (module docstring)."""
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the data set folder's mode when renamed into place
    try:
        budget = _Budget(archive, max_bytes, max_entries)
        hard_links = False
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, budget)
        elif tarfile.is_tarfile(archive):
            hard_links = _extract_tar(archive, tmp, budget)
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive, or it is truncated; delete it and "
                                "download again")
        _check_unpacked(archive, tmp, hard_links=hard_links)
        _check_merge(archive, tmp, dest)
        _merge_into(tmp, dest)
    except DownloadError:
        raise
    except NotImplementedError as exc:  # zipfile: a compression method it cannot read
        raise DownloadError(f"{archive}: {exc}; unpack it by hand into {dest}") from exc
    except _CORRUPT as exc:
        raise DownloadError(_corrupt(archive, exc)) from exc
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise DownloadError(f"no space left on device while unpacking {archive} into {dest}; free space and "
                                "run again") from exc
        if exc.errno is not None and exc.filename is not None:  # the file system refused, not the data
            raise DownloadError(f"could not unpack {archive} into {dest}: {exc.strerror}: {exc.filename}") from exc
        raise DownloadError(_corrupt(archive, exc)) from exc  # gzip's bad CRC, bz2's bad stream …
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _check_merge(archive: Path, src: Path, dest: Path, top: Path | None = None) -> None:
    """Refuse, before anything is moved, to merge a folder of the archive over a link or a file in
    ``dest`` (merging would write wherever the link points), or a file or link of the archive over a
    folder in ``dest`` (merging would delete the folder, which holds what the user put there: merging
    only replaces files by files). ``dest`` itself may be a link to a folder."""
    top = src if top is None else top
    if dest.is_symlink() and not dest.exists():
        raise DownloadError(f"cannot unpack {archive.name} into {dest}: it is a symbolic link to "
                            f"{os.readlink(dest)!r}, which does not exist (a disk not mounted?); fix or remove it")
    if not dest.exists():
        return
    if not dest.is_dir():
        folder = "a folder" if src == top else f"the folder {src.relative_to(top).as_posix()!r}"
        raise DownloadError(f"cannot unpack {archive.name} into {dest}: it is a file where the archive has {folder}; "
                            "nothing was changed: move the file away and run again")
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_symlink() or not entry.is_dir():
            if target.is_dir() and not target.is_symlink():
                raise DownloadError(f"cannot unpack {archive.name} into {dest}: the archive has a "
                                    f"{'link' if entry.is_symlink() else 'file'} {entry.relative_to(top).as_posix()!r} "
                                    f"where {target} is a folder, and unpacking never deletes a folder; nothing was "
                                    "changed: move or rename the folder and run again")
            continue  # os.replace swaps a file or link for a file or link, never writing through it
        if target.is_symlink():
            raise DownloadError(f"cannot unpack {archive.name} into {target}: it is a symbolic link (to "
                                f"{os.readlink(target)!r}) where the archive has a folder, and nothing is written "
                                "through links; replace the link by a real folder and run again")
        _check_merge(archive, entry, target, top)


def _merge_into(src: Path, dest: Path) -> None:
    """Move ``src``'s content into ``dest``: whole folders are renamed when ``dest`` lacks them,
    otherwise merged file by file (e.g. VOC's trainval and test archives share VOCdevkit/VOC2007).
    Never through a link below ``dest``, and never over a folder (``_check_merge`` ran first; these
    checks only stand guard should ``dest`` change in between)."""
    if not os.path.lexists(dest):
        os.replace(src, dest)
        src.mkdir()  # the caller removes it
        return
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_symlink():
                raise DownloadError(f"will not merge {entry.name!r} into the symbolic link {target}")
            if target.is_dir():
                _merge_into(entry, target)
                continue
        if target.is_dir() and not target.is_symlink():
            raise DownloadError(f"will not replace the folder {target} by the archive's {entry.name!r}; move or "
                                "rename the folder and run again")
        os.replace(entry, target)


# -- one data set ------------------------------------------------------------------------------------


def download_dataset(dataset, *, keep_archives: bool = False, progress: bool = True,
                     warn: Callable[[str], None] = print, fetch_fn=fetch, max_bytes: int | None = None,
                     max_entries: int | None = None) -> Path:
    """Download and unpack every file the data set declares (``dataset.downloads``) into its folder.
    ``max_bytes`` / ``max_entries`` cap each archive (inner ones too), as in :func:`extract_archive`."""
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
            extract_archive(path, target, max_bytes=max_bytes, max_entries=max_entries)
            if not keep_archives:
                path.unlink(missing_ok=True)
            for rel in d.inner:
                nested = target / rel
                if not nested.is_file():
                    raise DownloadError(f"{d.name} did not contain {rel!r}; the archive's layout changed. "
                                        f"Unpack it by hand into {root}:\n{dataset.layout}")
                extract_archive(nested, nested.parent, max_bytes=max_bytes, max_entries=max_entries)
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
