"""Fetch a data set's official archives, verify them, and unpack them safely under the data root.

Archives come from third-party servers that stall, move and drop connections, so each file has
mirrors tried in order, an interrupted download resumes (HTTP ``Range``, only while the server's
validator says the file is unchanged), and a file appears under its name only once its size and
SHA-256 (when the plugin pins them) are verified; see "fetching" below. Nothing in an archive is
trusted either: every entry is checked before anything is written. Absolute paths, ``..``
components, links that point outside the target, and device files or FIFOs are refused with an
error naming the entry. Extraction goes into a temporary folder beside the target and is moved
into place only once it completed, so an interrupted or refused download never leaves a
half-unpacked data set behind.

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
import http.client
import json
import os
import posixpath
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import urllib.error
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

    ``url``, then ``mirrors``: where the file is, tried in that order (a 404, a 5xx, a timeout or
    a wrong file moves on to the next). ``sha256``: the published checksum, or ``None`` when none
    is published (a warning says the file is not pinned). ``size``: its size in bytes where a
    public source states it, checked before anything is unpacked and used to check free space
    first. ``subdir``: where under the data set's folder the file (or the archive's content) goes.
    ``extract``: unpack archives (``.tar``, ``.tgz``, ``.zip`` …); other files are copied as they
    are. ``inner``: archives inside this one (paths relative to ``subdir``) that are unpacked in
    turn and then deleted (Caltech-101's zip holds ``101_ObjectCategories.tar.gz``).
    """

    url: str
    sha256: str | None = None
    filename: str = ""
    subdir: str = ""
    extract: bool = True
    inner: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    size: int | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """Every address of the file, in the order they are tried."""
        return (self.url, *self.mirrors)

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)

    @property
    def host(self) -> str:
        """The host the first address names: where a download starts."""
        return host_of(self.url)

    @property
    def name(self) -> str:
        return self.filename or posixpath.basename(urllib.parse.urlparse(self.url).path) or "download"

    @property
    def is_archive(self) -> bool:
        return self.extract and self.name.lower().endswith(ARCHIVE_SUFFIXES)


# -- fetching --------------------------------------------------------------------------------------
#
# Academic servers stall, move and drop connections, so one file is fetched like this:
#   * its addresses (``Download.urls``) are tried in order; a 404/5xx, a timeout, a refused
#     redirect, the wrong size or the wrong checksum moves on to the next, with one line saying so;
#   * bytes go to ``<name>.part``, beside it ``<name>.part.json`` records the address and the
#     server's validator (a strong ETag, else Last-Modified). A lost connection resumes with
#     ``Range`` + ``If-Range``: a server that changed the file, or ignores ranges, answers with the
#     whole file, and the download starts over. The next run resumes a ``.part`` left by an
#     interruption (Ctrl-C, a dead network) in the same way;
#   * free space is checked against the expected size before the first byte is written;
#   * size and SHA-256 are verified before the ``.part`` is renamed to its name (atomically), so a
#     file under its real name is always whole; nothing is unpacked before that.
# urllib does the HTTP (and ftp://, file://); it never decodes a Content-Encoding, so the bytes
# hashed are the bytes served. Redirects are followed to http(s) addresses only.

DEFAULT_TIMEOUT = 60.0  # seconds without a byte before a server counts as stalled
RESUMES = 3  # reconnections per address after a lost connection (each must have made progress)
_READ = 256 << 10  # bytes per read from the network: the progress bar moves at least this often
_SCHEMES = ("http", "https", "ftp", "file")
_HEADERS = {"User-Agent": "cnnbench (python urllib)", "Accept-Encoding": "identity"}


class _Failed(Exception):
    """One address failed (one line, no address in it); the next mirror may work."""


class _RangeRefused(_Failed):
    """A 416 to a resumed request: the ``.part`` is already whole (the run ended before the rename) or
    longer than the file now is. Only a fresh download can tell which."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) addresses only: a server must not send us to ftp:// or file://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlparse(newurl).scheme.lower() not in ("http", "https"):
            raise _Failed(f"redirected to {newurl}, which is not an http(s) address: refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpOnlyRedirects)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def host_of(url: str) -> str:
    """The host (and port) a URL is fetched from, as messages and ``cnnbench datasets`` name it."""
    parts = urllib.parse.urlparse(url)
    return parts.netloc or ("local file" if parts.scheme == "file" else url)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def check_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Refuse to start writing ``need`` bytes of ``what`` into ``folder`` when the disk lacks them."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DownloadError(f"not enough free space for {what}: it needs {_human(need)} more and {folder} has "
                            f"{_human(free)} free; free some space or choose another --data-root, and run again")


class _Partial:
    """``<name>.part`` and its record ``<name>.part.json``: which address it came from, the server's
    validator for it, and the size announced. A ``.part`` without a usable record is never resumed."""

    def __init__(self, dest: Path):
        self.path = dest.with_name(dest.name + ".part")
        self.record = dest.with_name(dest.name + ".part.json")

    def load(self) -> dict:
        try:
            info = json.loads(self.record.read_text(encoding="utf-8"))
            return info if isinstance(info, dict) and self.path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def resumable_bytes(self, url: str) -> tuple[int, str | None]:
        """Bytes already there for ``url`` and the validator to resume them with (0, None: start over)."""
        info = self.load()
        validator = info.get("etag") or info.get("last_modified")
        if info.get("url") != url or not validator or not url.lower().startswith(("http:", "https:")):
            return 0, None
        return self.path.stat().st_size, validator

    def save(self, url: str, headers, total: int | None) -> None:
        etag = headers.get("ETag")
        info = {"url": url, "etag": etag if etag and not etag.startswith("W/") else None,  # weak ones cannot If-Range
                "last_modified": headers.get("Last-Modified"), "total": total}
        self.record.write_text(json.dumps(info), encoding="utf-8")

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); the total may be ``*`` (unknown)."""
    try:
        unit, spec = (value or "").split(" ", 1)
        span, total = spec.split("/", 1)
        return int(span.split("-", 1)[0]), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None, None


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(getattr(exc, "reason", None),
                                                                         (TimeoutError, socket.timeout))


def _open(url: str, have: int, validator: str | None, timeout: float):
    """The server's response for ``url`` (from byte ``have`` on, if it still is the file ``validator``
    names); every failure is a :class:`_Failed` line."""
    req = urllib.request.Request(url, headers=_HEADERS)
    if have:
        req.add_header("Range", f"bytes={have}-")
        req.add_header("If-Range", validator)
    try:
        return _opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            raise _RangeRefused(f"HTTP 416 {exc.reason}") from None
        if 300 <= exc.code < 400:
            raise _Failed(f"redirect refused ({exc.reason})") from None
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        if _is_timeout(exc):
            raise _Failed(f"timed out after {timeout:g} s waiting for {host_of(url)}") from None
        reason = getattr(exc, "reason", None) or exc
        raise _Failed(f"cannot reach {host_of(url)} ({reason})") from None


def _what_arrives(resp, have: int, *, name: str, host: str, warn: Callable[[str], None]) -> tuple[int, int | None]:
    """(the byte the response starts at, the file's total size or None) for a request made from
    byte ``have``: the rest of the file (206 from ``have``), or the whole of it (200)."""
    status = getattr(resp, "status", None) or 200  # file:// and ftp:// responses have none
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.strip().isdigit() else None
    start, total = _content_range(resp.headers.get("Content-Range"))
    if have and status == 206 and start == have:
        return have, total if total is not None else (have + length if length is not None else None)
    if status != 200:
        raise _Failed(f"unexpected HTTP {status} from {host}")
    if have:  # the server ignores ranges, or the file changed since (If-Range)
        warn(f"{name}: {host} sent the whole file again (it ignores ranges, or the file changed since the "
             "interrupted download); starting over")
    return 0, length


def _receive(resp, partial: _Partial, have: int, total: int | None, h, *, name: str, host: str, timeout: float,
             progress: bool) -> tuple[int, str | None, bool]:
    """Append the response to the ``.part`` (which holds ``have`` bytes, hashed into ``h``) with a
    progress bar; returns (bytes now held, why the transfer stopped early or None, whether it stalled).
    A full disk is a :class:`DownloadError` at once: no mirror can help."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
               disable=not progress, dynamic_ncols=True)
    with open(partial.path, "ab" if have else "wb") as out, bar:
        while True:
            try:
                block = resp.read(_READ)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if _is_timeout(exc):
                    return have, f"timed out after {timeout:g} s waiting for {host}", True
                return have, f"the connection to {host} broke ({exc or type(exc).__name__})", False
            if not block:
                return have, None, False
            try:
                out.write(block)
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise DownloadError(f"no space left on device while downloading {name} into "
                                        f"{partial.path.parent}; free some space and run again: the download "
                                        "resumes") from exc
                raise DownloadError(f"cannot write {partial.path}: {exc.strerror or exc}") from exc
            h.update(block)
            have += len(block)
            bar.update(len(block))


def _fetch_one(url: str, partial: _Partial, *, name: str, size: int | None, progress: bool, timeout: float,
               resumes: int, warn: Callable[[str], None]) -> str:
    """Download ``url`` into ``partial.path``, resuming where that is safe; returns the SHA-256 of the
    whole ``.part``, which holds exactly the bytes the server announced."""
    host = host_of(url)
    have, validator = partial.resumable_bytes(url)
    tries = 0
    while True:
        try:
            resp = _open(url, have, validator, timeout)
        except _RangeRefused:
            warn(f"{name}: {host} refuses to resume at byte {have:,} (HTTP 416); starting over")
            have, validator = 0, None
            continue
        with resp:
            have, total = _what_arrives(resp, have, name=name, host=host, warn=warn)
            if size is not None and total is not None and total != size:
                raise _Failed(f"{host} offers {total:,} bytes, not the {size:,} published: not the same file")
            if total is not None:
                check_free_space(partial.path.parent, total - have, name)
            h = hashlib.sha256()
            if have:
                with open(partial.path, "rb") as fh:
                    for block in iter(lambda: fh.read(CHUNK), b""):
                        h.update(block)
            partial.save(url, resp.headers, total)
            before = have
            have, lost, stalled = _receive(resp, partial, have, total, h, name=name, host=host, timeout=timeout,
                                           progress=progress)
        if total is not None and have > total:
            partial.discard()
            raise _Failed(f"{host} sent more than the {total:,} bytes it announced")
        if lost is None and total is not None and have < total:
            lost = f"the connection to {host} closed after {have:,} of {total:,} bytes"
        if lost is None:
            return h.hexdigest()
        # a lost connection: resume where it is safe, start over where it is not, give up on a stall
        tries += 1
        progressed = have > before
        have, validator = partial.resumable_bytes(url)
        if stalled or tries > resumes or not progressed:
            if not validator:
                partial.discard()  # nothing that could be resumed later
            raise _Failed(lost + (f" ({tries} tries)" if tries > 1 else ""))
        if have:
            warn(f"{name}: {lost}; resuming from byte {have:,} (try {tries + 1} of {resumes + 1})")
        else:
            warn(f"{name}: {lost}; starting over, {host} offers no way to resume (try {tries + 1} of {resumes + 1})")


def fetch(url: str, dest: str | os.PathLike, sha256: str | None = None, *, mirrors: tuple[str, ...] = (),
          size: int | None = None, progress: bool = True, timeout: float = DEFAULT_TIMEOUT, resumes: int = RESUMES,
          warn: Callable[[str], None] = _stderr) -> Path:
    """Download ``url`` (else each of ``mirrors`` in turn) to ``dest``; the file appears under ``dest``
    only once complete and, where pinned, of the published ``size`` and ``sha256``. An existing ``dest``
    with the right checksum is reused; a ``.part`` left by an interrupted run is resumed. ``warn``
    gets one line per mirror given up on or connection resumed; every failure is one
    :class:`DownloadError` line naming each address and what went wrong there."""
    dest = Path(dest)
    name = dest.name
    urls = list(dict.fromkeys((url, *mirrors)))
    for u in urls:
        if urllib.parse.urlparse(u).scheme.lower() not in _SCHEMES:
            raise DownloadError(f"{name}: cannot download {u}: only http, https, ftp and file addresses are supported")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and sha256 and sha256_file(dest) == sha256.lower():
        return dest
    partial = _Partial(dest)
    came_from = partial.load().get("url")
    if came_from in urls:  # resume where the interrupted download came from
        urls.remove(came_from)
        urls.insert(0, came_from)
    if size is not None:
        check_free_space(dest.parent, size - partial.resumable_bytes(urls[0])[0], name)
    failures = []
    for i, u in enumerate(urls):
        try:
            digest = _fetch_one(u, partial, name=name, size=size, progress=progress, timeout=timeout,
                                resumes=resumes, warn=warn)
            got = partial.path.stat().st_size
            if size is not None and got != size:
                partial.discard()
                raise _Failed(f"got {got:,} bytes, not the {size:,} published; deleted")
            if sha256 and digest != sha256.lower():
                partial.discard()
                raise _Failed(f"checksum mismatch: expected SHA-256 {sha256.lower()}, got {digest}; the file is "
                              "corrupt or not the published one and was deleted")
        except _Failed as exc:
            failures.append(f"{u}: {exc}")
            if i + 1 < len(urls):
                warn(f"{name}: {exc}; trying the next mirror, {host_of(urls[i + 1])}")
            continue
        os.replace(partial.path, dest)
        partial.record.unlink(missing_ok=True)
        return dest
    kept = " (the partial download is kept: it resumes)" if partial.path.exists() else ""
    raise DownloadError(f"could not download {name}: {'; '.join(failures)}. Run again later{kept}, or fetch it by "
                        f"hand into {dest.parent}")


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
                     max_entries: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download and unpack every file the data set declares (``dataset.downloads``) into its folder.
    ``max_bytes`` / ``max_entries`` cap each archive (inner ones too), as in :func:`extract_archive`.
    ``fetch_fn`` is called as :func:`fetch`; one other than ``fetch`` gets ``mirrors=`` and ``size=``
    only for files that have them, so a simple stand-in ``(url, dest, sha256, progress)`` works."""
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
            checked = f"only its size ({d.size:,} bytes) is checked" if d.size else "the file is not verified"
            warn(f"warning: {d.name}: no published SHA-256 is pinned for {d.url}; {checked}")
        if fetch_fn is fetch:
            extra = {"mirrors": d.mirrors, "size": d.size, "warn": warn, "timeout": timeout}
        else:
            extra = {k: v for k, v in (("mirrors", d.mirrors), ("size", d.size)) if v}
        path = fetch_fn(d.url, cache / d.name, d.sha256, progress=progress, **extra)
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
