"""Downloads: streamed SHA-256 verification and safe extraction, on local files only (file:// URLs)."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path

import pytest

from cnnbench.dataset import Dataset
from cnnbench.download import Download, DownloadError, download_dataset, extract_archive, fetch
from conftest import run_cli, tar_link, write_tar




def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_tgz(tmp_path) -> Path:
    return write_tar(tmp_path / "good.tgz", [("jpg/a.jpg", b"A"), ("jpg/b.jpg", b"B"), ("gt/q_1_query.txt", b"a 1 2 3 4\n"),
                                        tar_link("jpg/alias.jpg", "a.jpg")])


def test_fetch_streams_and_verifies_the_pinned_sha256(tmp_path, good_tgz):
    out = fetch(good_tgz.as_uri(), tmp_path / "dl" / "good.tgz", _sha(good_tgz), progress=False)
    assert out.read_bytes() == good_tgz.read_bytes()
    assert fetch(good_tgz.as_uri(), out, _sha(good_tgz), progress=False) == out  # verified copy reused


def test_a_tampered_archive_fails_its_checksum_and_leaves_nothing(tmp_path, good_tgz):
    pinned = _sha(good_tgz)
    good_tgz.write_bytes(good_tgz.read_bytes() + b"tampered")
    dest = tmp_path / "dl" / "good.tgz"
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        fetch(good_tgz.as_uri(), dest, pinned, progress=False)
    assert pinned in str(err.value)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        fetch((tmp_path / "absent.tgz").as_uri(), tmp_path / "x.tgz", None, progress=False)


def test_a_good_archive_extracts_with_its_internal_symlink(tmp_path, good_tgz):
    dest = extract_archive(good_tgz, tmp_path / "data" / "set")
    assert (dest / "jpg" / "a.jpg").read_bytes() == b"A" and (dest / "gt" / "q_1_query.txt").exists()
    assert (dest / "jpg" / "alias.jpg").is_symlink() and (dest / "jpg" / "alias.jpg").read_bytes() == b"A"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["set"]  # no temporary folder left


def test_a_second_archive_merges_into_the_same_tree(tmp_path):
    # VOC 2007: trainval and test tars both unpack into VOCdevkit/VOC2007/
    a = write_tar(tmp_path / "a.tar", [("VOCdevkit/VOC2007/JPEGImages/000001.jpg", b"1")], "w")
    b = write_tar(tmp_path / "b.tar", [("VOCdevkit/VOC2007/JPEGImages/000002.jpg", b"2")], "w")
    extract_archive(a, tmp_path / "voc")
    extract_archive(b, tmp_path / "voc")
    assert sorted(p.name for p in (tmp_path / "voc/VOCdevkit/VOC2007/JPEGImages").iterdir()) == ["000001.jpg", "000002.jpg"]


@pytest.mark.parametrize(
    "entry, reason",
    [
        (("../evil.txt", b"x"), "'..' path component"),
        (("jpg/../../evil.txt", b"x"), "'..' path component"),
        (("/etc/evil.txt", b"x"), "absolute path"),
        (tar_link("jpg/out", "../../outside"), "symlink"),
        (tar_link("jpg/abs", "/etc/passwd"), "symlink"),
        (tar_link("jpg/hard", "../outside", tarfile.LNKTYPE), "hard link"),
        (tar_link("dev/null", "", tarfile.CHRTYPE), "device file"),
        (tar_link("fifo", "", tarfile.FIFOTYPE), "device file or FIFO"),
    ],
)
def test_unsafe_tar_entries_are_refused_naming_the_entry(tmp_path, entry, reason):
    archive = write_tar(tmp_path / "bad.tgz", [("jpg/fine.jpg", b"ok"), entry])
    name = entry[0] if isinstance(entry, tuple) else entry.name
    with pytest.raises(DownloadError) as err:
        extract_archive(archive, tmp_path / "data" / "set")
    msg = str(err.value)
    assert reason in msg and repr(name) in msg and "bad.tgz" in msg
    assert not (tmp_path / "data" / "set").exists(), "nothing is extracted from a refused archive"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()


def test_a_chain_of_links_cannot_lead_out(tmp_path):
    # each link looks harmless on its own: d/up -> .. is the archive root, d/up/out -> .. would be outside
    archive = write_tar(tmp_path / "chain.tgz", [("d/x", b"x"), tar_link("d/up", ".."), tar_link("d/up/out", ".."),
                                            ("d/up/out/evil.txt", b"x")])
    with pytest.raises(DownloadError, match=r"refused entry 'd/up/out'.*under the link 'd/up'"):
        extract_archive(archive, tmp_path / "data" / "set")
    assert not (tmp_path / "data" / "evil.txt").exists()


def test_zip_archives_extract_and_zip_slip_is_refused(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("full/ukbench00000.jpg", b"img")
    assert (extract_archive(good, tmp_path / "u") / "full" / "ukbench00000.jpg").read_bytes() == b"img"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("full/ok.jpg", b"img")
        zf.writestr("../../escape.txt", b"x")
    with pytest.raises(DownloadError, match=r"refused entry '\.\./\.\./escape\.txt'"):
        extract_archive(bad, tmp_path / "v")
    assert not (tmp_path / "v").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("full/out")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../../etc/passwd")
    with pytest.raises(DownloadError, match="symlink"):
        extract_archive(link, tmp_path / "w")


class _Tiny(Dataset):
    name = "tiny-download"
    folder = "tiny"
    layout = "  jpg/*.jpg\n  labels.mat"


def test_download_dataset_fetches_extracts_places_and_warns_when_unpinned(tmp_path, good_tgz):
    mat = tmp_path / "labels.mat"
    mat.write_bytes(b"MATLAB")
    _Tiny.downloads = (Download(good_tgz.as_uri(), _sha(good_tgz), subdir="sub"), Download(mat.as_uri(), None))
    warnings = []
    root = download_dataset(_Tiny(data_root=tmp_path / "data"), progress=False, warn=warnings.append)
    assert root == tmp_path / "data" / "tiny"
    assert (root / "sub" / "jpg" / "b.jpg").read_bytes() == b"B" and (root / "labels.mat").read_bytes() == b"MATLAB"
    assert len(warnings) == 1 and "labels.mat" in warnings[0] and "not" in warnings[0] and "SHA-256" in warnings[0]
    assert not (tmp_path / "data" / ".downloads").exists(), "archives are removed once unpacked"


def test_cli_download_refuses_a_data_set_without_downloads(tmp_path):
    proc = run_cli("datasets", "download", "sculptures6k", "--data-root", str(tmp_path), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "no automatic download" in proc.stderr and "gt/" in proc.stderr


def test_cli_datasets_without_subcommand_still_lists(tmp_path):
    out = run_cli("datasets", "--data-root", str(tmp_path), cwd=tmp_path).stdout
    for name in ("voc2007", "oxford5k", "ukbench", "digits"):
        assert name in out


def test_cli_datasets_download_fetches_verifies_and_unpacks(tmp_path, good_tgz):
    from click.testing import CliRunner

    from cnnbench import hookimpl, plugins
    from cnnbench.cli import main

    class Local(Dataset):
        name = "local-set"
        folder = "local"
        layout = "  jpg/*.jpg"
        downloads = (Download(good_tgz.as_uri(), _sha(good_tgz)),)

        def required_paths(self):
            return [self.root / "jpg" / "a.jpg"]

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("local-set", Local)

    plugins.register_plugin(Plugin(), name="local-test-plugin")
    (tmp_path / "params.yaml").write_text("{}\n")  # an empty one: not the checkout's params.yaml
    result = CliRunner().invoke(main, ["--params", str(tmp_path / "params.yaml"), "datasets", "download", "local-set",
                                       "--data-root", str(tmp_path / "data"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ready" in result.output and (tmp_path / "data" / "local" / "jpg" / "b.jpg").read_bytes() == b"B"
