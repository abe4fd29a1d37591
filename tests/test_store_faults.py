"""Nothing lost, nothing silently wrong: full disks, flipped bytes, NaN rows, two runs on one output,
stale caches. Each test injects the fault the way it happens in the field."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cnnbench import plugins, store
from cnnbench.backbone import Backbone
from cnnbench.errors import StoreError
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings

from conftest import ROOT, TinyNet, tiny_backbone, write_image


EAGER = ExtractSettings(batch_size=64, runtime="eager")
TWO_LAYERS = ExtractSettings(layers=["act", "logits"], batch_size=32, runtime="eager")


def _folder(root):
    return plugins.create("dataset", "imagefolder", path=root, train_per_class=2, seeds=[0])


def _digits():
    return plugins.create("dataset", "digits")


def _reference(tmp_path):
    """digits/test through the tiny backbone, uninterrupted: what every resumed run must equal."""
    ds, bb = _digits(), tiny_backbone()
    ref = extract_split(bb, ds, "test", tmp_path / "ref.h5", EAGER, progress=False).path
    return ds, bb, ref


def _partial_run(ds, bb, target, ref, n):
    """The writer of a genuine run (same signature) holding the reference's first ``n`` rows."""
    from cnnbench import extract as engine

    items = ds.items("test")
    sig = engine.signature(bb, ds, "test", items, EAGER.resolve("test", ds, bb))
    w = store.StoreWriter(target, sig, expected_ids=[i.id for i in items])
    if n:
        full = store.read(ref)
        w.append(list(full.ids[:n]), full.labels[:n], {"act": full.features[:n]}, next_item=n)
    return w


# -- a full disk -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "4m"):
    """A tmpfs of ``size`` where the test may mount one (root on Linux), else skip."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()}); the simulated ENOSPC test covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free."""
    st = os.statvfs(mnt)
    ballast = mnt / "ballast"
    ballast.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return ballast


def test_a_full_disk_ends_the_run_in_one_line_and_the_rerun_resumes_to_identical_bytes(tmp_path):
    ds, bb = _digits(), tiny_backbone()
    ref = extract_split(bb, ds, "train", tmp_path / "ref.h5", TWO_LAYERS, progress=False).path
    with small_disk(tmp_path) as mnt:
        ballast = _fill(mnt, leave=60_000)  # room for a few batches, not for 898 images
        target = mnt / "f" / "train.h5"
        with pytest.raises(store.DiskFullError) as err:
            extract_split(bb, ds, "train", target, TWO_LAYERS, progress=False)
        msg = str(err.value)
        assert "no space left" in msg and "train.h5.partial" in msg and "\n" not in msg
        assert not target.exists()  # nothing claims to be complete
        ballast.unlink()
        res = extract_split(bb, ds, "train", target, TWO_LAYERS, progress=False)
        assert target.read_bytes() == ref.read_bytes()
        assert res.resumed_from + res.written == 898


def test_a_full_disk_through_the_cli_is_one_line_and_no_crash(tmp_path):
    """The process must exit cleanly (no segfault from HDF5 at shutdown, no traceback)."""
    with small_disk(tmp_path) as mnt:
        _fill(mnt, leave=40_000)
        script = (
            "import sys; sys.path.insert(0, %r)\n"
            "from conftest import tiny_backbone\n"
            "from cnnbench import hookimpl, plugins\n"
            "class P:\n"
            "    @hookimpl\n"
            "    def register_backbones(self, register):\n"
            "        register('tiny', lambda **kw: tiny_backbone())\n"
            "plugins.register_plugin(P(), name='tiny-plugin')\n"
            "from cnnbench.cli import run\n"
            "sys.argv = ['cnnbench', 'extract', '-b', 'tiny', '-d', 'digits', '--out', %r, '--no-progress',"
            " '--runtime', 'eager', '--layer', 'act', '--layer', 'logits']\n"
            "run()\n" % (str(ROOT / "tests"), str(mnt / "f"))
        )
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "no space left" in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")] == [proc.stderr.strip().splitlines()[-1]]


def test_a_write_error_without_a_mountable_disk_is_simulated(tmp_path, monkeypatch):
    """ENOSPC half way through a write, as the kernel reports it on a full disk."""
    from cnnbench import partial

    ds, bb = _digits(), tiny_backbone()
    real = partial.PartialRows._handle
    calls = {"n": 0}

    class HalfWritten:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            calls["n"] += 1
            if calls["n"] == 6:  # the second batch's third column
                self.fh.write(data[: len(data) // 2])
                raise OSError(28, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(partial.PartialRows, "_handle", lambda self, name: HalfWritten(real(self, name)))
    with pytest.raises(store.DiskFullError, match="64 images are kept in"):
        extract_split(bb, ds, "test", tmp_path / "t.h5", EAGER, progress=False)
    monkeypatch.setattr(partial.PartialRows, "_handle", real)
    ref = extract_split(bb, ds, "test", tmp_path / "ref.h5", EAGER, progress=False).path
    res = extract_split(bb, ds, "test", tmp_path / "t.h5", EAGER, progress=False)
    assert res.resumed_from == 64 and (tmp_path / "t.h5").read_bytes() == ref.read_bytes()


def test_bytes_written_but_never_recorded_are_cut_before_resuming(tmp_path):
    """The aftermath of a failed or killed write: columns longer than the recorded progress."""
    ds, bb, ref = _reference(tmp_path)
    target = tmp_path / "t.h5"
    _partial_run(ds, bb, target, ref, 128).close()
    for column in store.partial_path(target).glob("*.bin"):  # 96 rows' worth of zeros, never recorded
        with open(column, "ab") as fh:
            fh.write(b"\0" * 96 * 64)
    res = extract_split(bb, ds, "test", target, EAGER, progress=False)
    assert res.resumed_from == 128 and target.read_bytes() == ref.read_bytes()


def test_a_partial_file_whose_ids_are_not_the_data_sets_is_discarded(tmp_path):
    ds, bb = _digits(), tiny_backbone()
    target = tmp_path / "t.h5"
    w = _partial_run(ds, bb, target, None, 0)
    w.append(["wrong-1", "wrong-2"], [0, 1], {"act": np.zeros((2, 8), np.float32)}, next_item=2)
    w.close()
    res = extract_split(bb, ds, "test", target, EAGER, progress=False)
    assert res.resumed_from == 0 and "wrong-1" not in set(store.read(target).ids)


# -- integrity of finished files -------------------------------------------------------------------------


@pytest.fixture
def finished(tmp_path):
    ds, bb = _digits(), tiny_backbone()
    res = extract_split(bb, ds, "test", tmp_path / "f" / "test.h5", EAGER, progress=False)
    return ds, bb, res.path


def _flip_a_feature_byte(path: Path) -> None:
    with h5py.File(path, "r") as f:
        offset = f["features/act"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_found_on_reading_and_never_called_up_to_date(finished):
    ds, bb, path = finished
    _flip_a_feature_byte(path)
    with pytest.raises(StoreError, match="corrupt.*--overwrite"):
        store.read(path)
    with pytest.raises(StoreError, match="corrupt"):
        extract_split(bb, ds, "test", path, EAGER, progress=False)
    res = extract_split(bb, ds, "test", path, EAGER, progress=False, overwrite=True)
    assert not res.cached and store.read(path).features.shape == (899, 8)


def test_a_flipped_id_byte_is_found_by_the_string_checksums(finished):
    _, _, path = finished
    data = path.read_bytes()
    at = data.index(b"digit-0004")
    path.write_bytes(data[:at] + b"digit-9993" + data[at + 10:])
    with pytest.raises(StoreError, match="ids does not match its checksum"):
        store.read(path)


def test_nan_rows_in_a_finished_file_are_refused(finished):
    _, _, path = finished
    with h5py.File(path, "a") as f:  # a consistent checksum: only the finite check can find it
        f["features/act"][5] = np.nan
    with pytest.raises(StoreError, match="row 5 is not finite"):
        store.read(path)
    with pytest.raises(StoreError, match="not finite"):
        store.verify(path)


def test_a_backbone_that_gives_nan_features_writes_nothing_claiming_to_be_complete(tmp_path):
    class NaNNet(TinyNet):
        def forward(self, x):
            return super().forward(x) * float("nan")

    bb = Backbone("nan", NaNNet(), tiny_backbone().preprocess, default_layer="logits", layers={"logits": ""})
    with pytest.raises(StoreError, match="non-finite features"):
        extract_split(bb, _digits(), "test", tmp_path / "n.h5", EAGER, progress=False)
    assert not (tmp_path / "n.h5").exists()


def test_evaluate_on_a_damaged_file_is_one_line(finished, tmp_path):
    from click.testing import CliRunner

    from cnnbench.cli import main

    ds, bb, path = finished
    extract_split(bb, ds, "train", path.parent / "train.h5", EAGER, progress=False)
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    result = CliRunner().invoke(main, ["evaluate", "-b", "tiny", "-d", "digits", "--features", str(path.parent),
                                       "--head", "svm", "--no-extract-missing", "--out-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "test.h5" in result.output and "delete" in result.output
    assert not (tmp_path / "m").exists()


# -- two runs on one output ------------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_and_the_first_one_finishes(tmp_path):
    ds, bb, ref = _reference(tmp_path)
    target = tmp_path / "t.h5"
    first = _partial_run(ds, bb, target, ref, 64)
    with pytest.raises(StoreError, match="another cnnbench run .*pid"):
        extract_split(bb, ds, "test", target, EAGER, progress=False)
    with pytest.raises(StoreError, match="another cnnbench run"):
        extract_split(bb, ds, "test", target, EAGER, progress=False, overwrite=True)
    assert store.partial_path(target).exists() and first.next_item == 64  # untouched
    first.close()  # the first run stops; the next one resumes its work
    res = extract_split(bb, ds, "test", target, EAGER, progress=False)
    assert res.resumed_from == 64 and target.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("hdf5_locking", ["TRUE", "FALSE"])
def test_another_process_on_the_same_output_is_refused_in_one_line(tmp_path, hdf5_locking):
    """Also with HDF5's own file locking off (usual on NFS): our lock does not depend on it."""
    target = tmp_path / "features" / "effnet-lite0" / "digits" / "train.h5"
    holder = store.StoreWriter(target, {"k": 1})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cnnbench", "extract", "-b", "effnet-lite0", "-d", "digits", "--split", "train",
             "--out", str(target.parent), "--no-progress", "--runtime", "eager"],
            capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, HDF5_USE_FILE_LOCKING=hdf5_locking))
    finally:
        holder.close()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "another cnnbench run (pid" in proc.stderr and str(os.getpid()) in proc.stderr
    assert not target.exists()


def test_overwrite_discards_a_partial_file_and_a_leftover_commit_file_is_removed(tmp_path):
    ds, bb, ref = _reference(tmp_path)
    target = tmp_path / "t.h5"
    _partial_run(ds, bb, target, ref, 64).close()
    leftover = tmp_path / "t.h5.tmp-999999"
    leftover.write_bytes(b"half a file from a run killed while committing")
    res = extract_split(bb, ds, "test", target, EAGER, progress=False, overwrite=True)
    assert res.resumed_from == 0 and not leftover.exists()
    assert not (tmp_path / "t.h5.lock").exists()


# -- stale caches ----------------------------------------------------------------------------------------


def test_weights_replaced_at_the_same_path_make_the_features_stale_and_a_moved_file_does_not(tmp_path):
    from cnnbench.weights import load_into

    def build(path):
        net = TinyNet()
        load_into(net, path)
        return Backbone("tiny", net, tiny_backbone().preprocess, default_layer="act", weights=str(path))

    ds = _digits()
    path = tmp_path / "w.pt"
    torch.save(TinyNet().state_dict(), path)
    out = tmp_path / "f.h5"
    assert not extract_split(build(path), ds, "test", out, EAGER, progress=False).cached
    moved = tmp_path / "elsewhere.pt"
    path.rename(moved)
    assert extract_split(build(moved), ds, "test", out, EAGER, progress=False).cached
    other = TinyNet()
    with torch.no_grad():
        other.conv.weight.mul_(2)
    torch.save(other.state_dict(), moved)  # replaced in place
    assert not extract_split(build(moved), ds, "test", out, EAGER, progress=False).cached


def test_an_image_fixed_after_it_was_skipped_makes_the_features_stale(tiny, image_folder, tmp_path):
    ds = _folder(image_folder)
    out = tmp_path / "a.h5"
    assert len(extract_split(tiny, ds, "all", out, progress=False).skipped) == 2
    assert extract_split(tiny, ds, "all", out, progress=False).cached
    write_image(image_folder / "b" / "corrupt.jpg", seed=99)  # the user fixes it
    res = extract_split(tiny, ds, "all", out, progress=False)
    assert not res.cached and [s[0] for s in res.skipped] == ["b/truncated.jpg"]
    assert "b/corrupt.jpg" in set(store.read(out).ids)


def test_a_run_that_read_no_image_never_commits(tmp_path, tiny):
    root = tmp_path / "bad"
    for c in "ab":
        for k in range(3):
            (root / c).mkdir(parents=True, exist_ok=True)
            (root / c / f"{k}.jpg").write_bytes(b"not an image")
    ds = plugins.create("dataset", "imagefolder", path=root, train_per_class=1, seeds=[0])
    with pytest.raises(StoreError, match="none of the 6 images"):
        extract_split(tiny, ds, "all", tmp_path / "a.h5", progress=False)
    assert not (tmp_path / "a.h5").exists() and not store.partial_path(tmp_path / "a.h5").exists()
