"""Downloads under attack or accident: link chains split over archives, decompression bombs, truncated
or corrupt archives, a full disk. Every archive is tiny and built here; nothing touches the network."""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from cnnbench import download
from cnnbench.dataset import Dataset
from cnnbench.download import Download, DownloadError, download_dataset, extract_archive

from conftest import tar_link, write_tar



def _files_outside(top: Path, inside: Path, *, besides: tuple[Path, ...] = ()) -> list[str]:
    """Every file or link under ``top`` that is neither under ``inside`` nor one of ``besides``
    (links are listed, never followed)."""
    found = []
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(folder) / name
            if p == inside or inside in p.parents or p in besides or any(b in p.parents for b in besides):
                continue
            if not p.is_dir() or p.is_symlink():
                found.append(str(p.relative_to(top)))
    return found


@pytest.fixture
def chain(tmp_path) -> tuple[Path, Path]:
    """The two-archive escape: ``t`` (listed first) looks inside while ``s`` is still missing; once
    ``s -> ../..`` exists, ``t`` is three levels above the target, and the second archive writes there."""
    src = tmp_path / "src"
    src.mkdir()
    one = write_tar(src / "one.tgz", [tar_link("d1/d2/t", "s/../../.."), tar_link("d1/d2/s", "../..")])
    two = write_tar(src / "two.tgz", [("d1/d2/t/evil.txt", b"evil")])
    return one, two


# -- links -------------------------------------------------------------------------------------------


def test_a_symlink_chain_split_over_two_archives_cannot_lead_out(tmp_path, chain):
    one, two = chain
    dest = tmp_path / "a" / "b" / "c" / "set"
    with pytest.raises(DownloadError) as err:
        extract_archive(one, dest)
    assert "one.tgz" in str(err.value) and "'d1/d2/t'" in str(err.value) and "\n" not in str(err.value)
    extract_archive(two, dest)  # harmless on its own: a real folder t
    assert (dest / "d1" / "d2" / "t" / "evil.txt").read_bytes() == b"evil"
    assert _files_outside(tmp_path, dest, besides=(tmp_path / "src",)) == []


def test_download_dataset_cannot_be_led_out_by_a_symlink_chain_over_two_archives(tmp_path, chain):
    one, two = chain

    class Holidays(Dataset):  # two archives into one folder, like holidays, paris6k, uiuc-attributes
        name = "chain-download"
        folder = "set"
        layout = "  d1/"
        downloads = (Download("https://example.org/one.tgz"), Download("https://example.org/two.tgz"))

    def fake_fetch(url, dest, sha256, progress=True):
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(one if url.endswith("one.tgz") else two, dest))

    ds = Holidays(data_root=tmp_path / "a" / "b" / "c")
    with pytest.raises(DownloadError, match=r"one\.tgz.*'d1/d2/t'"):
        download_dataset(ds, progress=False, warn=lambda msg: None, fetch_fn=fake_fetch)
    # and were the first refusal ignored (the second archive fetched anyway), still nothing outside
    Holidays.downloads = Holidays.downloads[1:]
    download_dataset(ds, progress=False, warn=lambda msg: None, fetch_fn=fake_fetch)
    root = tmp_path / "a" / "b" / "c" / "set"
    assert (root / "d1" / "d2" / "t" / "evil.txt").is_file()
    assert _files_outside(tmp_path, root, besides=(tmp_path / "src", root.parent / ".downloads")) == []


def test_a_symlink_may_go_up_only_at_the_start_of_its_target(tmp_path):
    ok = write_tar(tmp_path / "ok.tgz", [("jpg/a.jpg", b"A"), tar_link("lists/a.jpg", "../jpg/a.jpg")])
    assert (extract_archive(ok, tmp_path / "ok") / "lists" / "a.jpg").read_bytes() == b"A"
    bad = write_tar(tmp_path / "bad.tgz", [("jpg/a.jpg", b"A"), tar_link("lists/a.jpg", "../jpg/../jpg/a.jpg")])
    with pytest.raises(DownloadError, match=r"bad\.tgz.*'lists/a\.jpg'.*goes up"):
        extract_archive(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_links_that_really_resolve_outside_are_refused_after_unpacking(tmp_path):
    # what is on disk is checked too, whatever the entry checks let through
    tree = tmp_path / "tree"
    (tree / "d1" / "d2").mkdir(parents=True)
    os.symlink("s/../../..", tree / "d1" / "d2" / "t")
    os.symlink("../..", tree / "d1" / "d2" / "s")
    with pytest.raises(DownloadError, match=r"x\.tgz: refused entry 'd1/d2/t'.*really leads outside"):
        download._check_unpacked(Path("x.tgz"), tree)
    os.unlink(tree / "d1" / "d2" / "t")
    os.symlink("s", tree / "d1" / "d2" / "u")  # a link to a link, inside
    download._check_unpacked(Path("x.tgz"), tree)
    os.symlink("../../..", tree / "d1" / "d2" / "s2")
    os.symlink("s2", tree / "d1" / "d2" / "u2")  # a link to a link that leads out
    with pytest.raises(DownloadError, match="really leads outside"):
        download._check_unpacked(Path("x.tgz"), tree)


def test_a_file_hard_linked_to_one_outside_the_archive_is_refused(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    (tree / "a").write_bytes(b"a")
    os.link(tree / "a", tree / "b")  # both names inside: fine
    download._check_unpacked(Path("x.tgz"), tree)
    os.link(tmp_path / "secret", tree / "c")
    with pytest.raises(DownloadError, match=r"refused entry 'c'.*hard link to a file outside"):
        download._check_unpacked(Path("x.tgz"), tree)


@pytest.mark.parametrize("entries, target", [
    ([tar_link("s", "jpg"), ("jpg/a.jpg", b"A"), tar_link("h", "s", tarfile.LNKTYPE)], "'s'"),  # to a symlink
    ([tar_link("h", "later.jpg", tarfile.LNKTYPE), ("later.jpg", b"L")], "'later.jpg'"),  # not stored earlier
])
def test_a_hard_link_must_name_a_file_stored_earlier_in_the_archive(tmp_path, entries, target):
    archive = write_tar(tmp_path / "hard.tgz", entries)
    with pytest.raises(DownloadError, match=rf"refused entry 'h': hard link to {target}, which is not a regular file"):
        extract_archive(archive, tmp_path / "set")
    good = write_tar(tmp_path / "good.tgz", [("jpg/a.jpg", b"A"), tar_link("jpg/b.jpg", "jpg/a.jpg", tarfile.LNKTYPE)])
    assert (extract_archive(good, tmp_path / "good") / "jpg" / "b.jpg").read_bytes() == b"A"


def test_merging_never_writes_through_a_symlink_already_in_the_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    dest = tmp_path / "set"
    dest.mkdir()
    (dest / "jpg").symlink_to(outside)
    (dest / "labels.txt").symlink_to(outside / "keep.txt")
    archive = write_tar(tmp_path / "a.tgz", [("gt/q.txt", b"q"), ("jpg/a.jpg", b"A")])
    with pytest.raises(DownloadError, match=r"a\.tgz into .*jpg: it is a symbolic link .* replace the link"):
        extract_archive(archive, dest)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert not (dest / "gt").exists(), "refused before anything was moved"
    # a file where the target has a link replaces the link itself, not the file it points to
    extract_archive(write_tar(tmp_path / "b.tgz", [("labels.txt", b"new")]), dest)
    assert not (dest / "labels.txt").is_symlink() and (dest / "labels.txt").read_bytes() == b"new"
    assert (outside / "keep.txt").read_bytes() == b"keep"


def test_the_target_folder_itself_may_be_a_link_to_another_disk(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "set").symlink_to(tmp_path / "big")
    extract_archive(write_tar(tmp_path / "a.tgz", [("jpg/a.jpg", b"A")]), tmp_path / "set")
    assert (tmp_path / "big" / "jpg" / "a.jpg").read_bytes() == b"A"


# -- merging into a folder that holds data, names that clash -------------------------------------------


def _user_images(dest: Path) -> dict[str, bytes]:
    """A data set's folder as the user left it: jpg/ holding two images they put there."""
    (dest / "jpg").mkdir(parents=True)
    (dest / "jpg" / "a.jpg").write_bytes(b"A")
    (dest / "jpg" / "b.jpg").write_bytes(b"B")
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def _contents(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


@pytest.mark.parametrize("entry", [("jpg", b"not a folder"), tar_link("jpg", "gt")], ids=["file", "link"])
def test_an_archive_file_named_like_a_folder_of_the_data_set_never_deletes_that_folder(tmp_path, entry):
    dest = tmp_path / "data" / "set"
    before = _user_images(dest)
    archive = write_tar(tmp_path / "a.tgz", [("gt/q.txt", b"q"), entry])
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, dest)
    msg = str(err.value)
    assert "a.tgz" in msg and "'jpg'" in msg and str(dest / "jpg") in msg and "move or rename the folder" in msg
    assert "\n" not in msg
    assert _contents(dest) == before and not (dest / "gt").exists(), "nothing of the user's touched, nothing moved"
    assert not [p for p in dest.parent.iterdir() if ".extract-" in p.name], "the temporary folder is removed"


def test_an_archive_folder_where_the_data_set_has_a_file_is_refused_and_the_file_kept(tmp_path):
    dest = tmp_path / "data" / "set"
    dest.mkdir(parents=True)
    (dest / "jpg").write_bytes(b"user notes")
    archive = write_tar(tmp_path / "a.tgz", [("gt/q.txt", b"q"), ("jpg/a.jpg", b"A")])
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, dest)
    msg = str(err.value)
    assert "a.tgz" in msg and str(dest / "jpg") in msg and "'jpg'" in msg and "move the file away" in msg
    assert _contents(dest) == {"jpg": b"user notes"}
    assert not [p for p in dest.parent.iterdir() if ".extract-" in p.name]


def test_merging_replaces_files_by_files_and_keeps_what_the_archive_does_not_hold(tmp_path):
    dest = tmp_path / "data" / "set"
    _user_images(dest)
    (dest / "labels.txt").write_bytes(b"old")
    extract_archive(write_tar(tmp_path / "a.tgz", [("jpg/c.jpg", b"C"), ("labels.txt", b"new")]), dest)
    assert _contents(dest) == {"jpg/a.jpg": b"A", "jpg/b.jpg": b"B", "jpg/c.jpg": b"C", "labels.txt": b"new"}


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(zipfile.ZipInfo(n), b"x")
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("kind, names, refused, why", [
    ("tgz", ["jpg/a.jpg", "jpg/a.jpg"], "jpg/a.jpg", "stores this path twice"),
    ("zip", ["jpg/a.jpg", "jpg/a.jpg"], "jpg/a.jpg", "stores this path twice"),
    ("tgz", ["x", "x/y"], "x/y", "lies under 'x', which the archive stores as a file"),
    ("zip", ["x", "x/y"], "x/y", "lies under 'x', which the archive stores as a file"),
    ("tgz", ["x/y", "x"], "x", "both as a file and as a folder"),
    ("tgz", ["."], ".", "names no file"),
    ("zip", ["."], ".", "names no file"),
    ("zip", ["C:\\x"], "C:\\x", "absolute path"),
    ("zip", ["..\\..\\x"], "..\\..\\x", "'..' path component"),
], ids=["tar-twice", "zip-twice", "tar-under-file", "zip-under-file", "tar-file-and-folder", "tar-dot", "zip-dot",
        "zip-windows-drive", "zip-backslash-up"])
def test_an_entry_that_does_not_name_one_thing_inside_the_archive_is_refused_by_name(tmp_path, kind, names, refused,
                                                                                    why):
    archive = (write_tar(tmp_path / "a.tgz", [(n, b"x") for n in names]) if kind == "tgz"
               else _zip(tmp_path / "a.zip", names))
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, tmp_path / "data" / "set")
    assert f"refused entry {refused!r}" in str(err.value) and why in str(err.value) and "\n" not in str(err.value)
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")


def test_backslashes_in_a_zip_are_folders_and_a_dot_folder_is_the_target(tmp_path):
    dot = tarfile.TarInfo(".")
    dot.type = tarfile.DIRTYPE
    dest = extract_archive(write_tar(tmp_path / "a.tgz", [dot, ("./jpg/a.jpg", b"A")]), tmp_path / "set")
    assert _contents(dest) == {"jpg/a.jpg": b"A"}
    dest = extract_archive(_zip(tmp_path / "b.zip", ["jpg\\b.jpg"]), tmp_path / "set")
    assert _contents(dest) == {"jpg/a.jpg": b"A", "jpg/b.jpg": b"x"}


# -- limits ------------------------------------------------------------------------------------------


def _zeros_tgz(path: Path, size: int = 3 << 20) -> Path:
    return write_tar(path, [("zeros.bin", bytes(size))])


def _no_leftovers(parent: Path, dest: Path) -> None:
    assert not dest.exists(), "nothing half-unpacked"
    assert not [p for p in parent.iterdir() if ".extract-" in p.name], "the temporary folder is removed"


def test_an_archive_over_max_bytes_is_refused_before_anything_is_written(tmp_path):
    archive = _zeros_tgz(tmp_path / "bomb.tgz")
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, tmp_path / "data" / "set", max_bytes=1 << 20)
    msg = str(err.value)
    assert "bomb.tgz" in msg and "max_bytes=1048576" in msg and "--max-unpacked-size" in msg and "\n" not in msg
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")
    out = extract_archive(archive, tmp_path / "data" / "set", max_bytes=4 << 20)
    assert (out / "zeros.bin").stat().st_size == 3 << 20


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_archive_over_max_entries_is_refused(tmp_path, kind):
    names = [f"jpg/{i}.jpg" for i in range(5)]
    if kind == "tar":
        archive = write_tar(tmp_path / "many.tar", [(n, b"x") for n in names], "w")
    else:
        archive = tmp_path / "many.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for n in names:
                zf.writestr(n, b"x")
    with pytest.raises(DownloadError, match=r"many\.(tar|zip): holds more than 3 entries \(max_entries=3\).*--max-en"):
        extract_archive(archive, tmp_path / "data" / "set", max_entries=3)
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")
    assert len(list((extract_archive(archive, tmp_path / "ok", max_entries=5) / "jpg").iterdir())) == 5


def test_a_highly_compressed_archive_needs_an_explicit_max_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RATIO_FLOOR", 1 << 20)  # the real 1 GiB floor, scaled down
    archive = _zeros_tgz(tmp_path / "bomb.tgz")  # 3 MiB of zeros in a few KiB
    with pytest.raises(DownloadError, match=r"bomb\.tgz: a .* file that would unpack to more than 1\.0 MiB "
                                            r"\(over 100:1.*--max-unpacked-size"):
        extract_archive(archive, tmp_path / "data" / "set")
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")
    # below the floor, however well it compresses (small annotation archives), and with an explicit cap
    extract_archive(_zeros_tgz(tmp_path / "gt.tgz", 512 << 10), tmp_path / "gt")
    extract_archive(archive, tmp_path / "trusted", max_bytes=10 << 20)


def test_a_zip_is_held_to_its_declared_sizes(tmp_path, monkeypatch):
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(2 << 20))
    with pytest.raises(DownloadError, match=r"z\.zip: would unpack to more than 1\.0 MiB.*--max-unpacked-size"):
        extract_archive(archive, tmp_path / "data" / "set", max_bytes=1 << 20)
    # an entry that unpacks to more than it declares is stopped while written
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(bytes(3 << 20))
                        if not a and not k else real_open(self, info, *a, **k))
    with pytest.raises(DownloadError, match=r"entry 'zeros\.bin' unpacks to more than the 2,097,152 bytes it declares"):
        extract_archive(archive, tmp_path / "data" / "set", max_bytes=10 << 20)
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")


def test_a_zip_whose_directory_understates_a_size_is_refused_as_corrupt(tmp_path):
    archive = tmp_path / "lie.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(2 << 20))
        zf.infolist()[0].file_size = 10  # the central directory now says 10 bytes
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        extract_archive(archive, tmp_path / "data" / "set", max_bytes=1 << 20)
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")


def test_download_dataset_passes_its_limits_to_every_archive(tmp_path):
    archive = write_tar(tmp_path / "many.tgz", [(f"jpg/{i}.jpg", b"x") for i in range(3)])

    class Many(Dataset):
        name = "many-download"
        folder = "many"
        layout = "  jpg/*.jpg"
        downloads = (Download(archive.as_uri()),)

    with pytest.raises(DownloadError, match="--max-entries"):
        download_dataset(Many(data_root=tmp_path / "data"), progress=False, warn=lambda m: None, max_entries=2)
    with pytest.raises(DownloadError, match="--max-unpacked-size"):
        download_dataset(Many(data_root=tmp_path / "data"), progress=False, warn=lambda m: None, max_bytes=2)
    assert not (tmp_path / "data" / "many").exists()


# -- broken archives, full disks ---------------------------------------------------------------------


def _truncated_tgz(tmp_path: Path) -> Path:
    data = write_tar(tmp_path / "full.tgz", [("jpg/a.jpg", os.urandom(64 << 10))]).read_bytes()
    (tmp_path / "t.tgz").write_bytes(data[: len(data) // 2])
    return tmp_path / "t.tgz"


def _truncated_zip(tmp_path: Path) -> Path:
    with zipfile.ZipFile(tmp_path / "full.zip", "w") as zf:
        zf.writestr("jpg/a.jpg", os.urandom(64 << 10))
    data = (tmp_path / "full.zip").read_bytes()
    (tmp_path / "t.zip").write_bytes(data[: len(data) // 2])
    return tmp_path / "t.zip"


def _bad_gzip_crc(tmp_path: Path) -> Path:
    data = bytearray(gzip.compress(write_tar(tmp_path / "full.tar", [("jpg/a.jpg", b"A" * 4096)], "w").read_bytes()))
    data[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    (tmp_path / "crc.tgz").write_bytes(bytes(data))
    return tmp_path / "crc.tgz"


def _bad_zip_crc(tmp_path: Path) -> Path:
    with zipfile.ZipFile(tmp_path / "crc.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("jpg/a.jpg", b"A" * 4096)
    data = (tmp_path / "crc.zip").read_bytes()
    at = data.index(b"A" * 4096)
    (tmp_path / "crc.zip").write_bytes(data[:at] + b"B" + data[at + 1:])
    return tmp_path / "crc.zip"


@pytest.mark.parametrize("make", [_truncated_tgz, _truncated_zip, _bad_gzip_crc, _bad_zip_crc])
def test_a_truncated_or_corrupt_archive_is_one_clear_error_and_leaves_nothing(tmp_path, make):
    archive = make(tmp_path)
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, tmp_path / "data" / "set")
    msg = str(err.value)
    assert str(archive) in msg and "delete it and download again" in msg and "\n" not in msg
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")


def test_no_space_left_while_unpacking_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "a.tgz", [("jpg/a.jpg", b"A"), ("jpg/b.jpg", b"B")])

    def full_disk(self, path, members=None, **kwargs):
        (Path(path) / "jpg").mkdir()
        (Path(path) / "jpg" / "a.jpg").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(path) / "jpg" / "b.jpg"))

    monkeypatch.setattr(tarfile.TarFile, "extractall", full_disk)
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, tmp_path / "data" / "set")
    assert str(err.value) == (f"no space left on device while unpacking {archive} into {tmp_path / 'data' / 'set'}; "
                              "free space and run again")
    _no_leftovers(tmp_path / "data", tmp_path / "data" / "set")


def test_the_cli_reports_a_truncated_archive_in_one_line_not_aborted(tmp_path):
    from click.testing import CliRunner

    from cnnbench import hookimpl, plugins
    from cnnbench.cli import main

    archive = _truncated_tgz(tmp_path)

    class Broken(Dataset):
        name = "broken-set"
        folder = "broken"
        layout = "  jpg/*.jpg"
        downloads = (Download(archive.as_uri()),)

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("broken-set", Broken)

    plugins.register_plugin(Plugin(), name="broken-test-plugin")
    (tmp_path / "params.yaml").write_text("{}\n")
    result = CliRunner().invoke(main, ["--params", str(tmp_path / "params.yaml"), "datasets", "download", "broken-set",
                                       "--data-root", str(tmp_path / "data"), "--no-progress", "--keep-archives"])
    assert result.exit_code != 0 and "Aborted" not in result.output
    assert "truncated or corrupt" in result.output and "delete it and download again" in result.output
    assert not (tmp_path / "data" / "broken").exists()
