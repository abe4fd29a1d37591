"""Security: hostile inputs never reach another program, exhaust the machine, or name files outside
their data set.

Organised by case of the fault report (issue 19); each section builds its hostile files byte by byte
in ``tmp_path`` and runs them through the path the engine itself takes (``decode_batch``, and a real
``cnnbench extract``).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import weakref
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import EpsImagePlugin, Image

from cnnbench import hookimpl, plugins, store
from cnnbench.cli import main
from cnnbench.dataset import Item
from cnnbench.decode import decode_batch
from cnnbench.errors import UserError
from cnnbench.images import ImageDecodeError, load_image
from cnnbench.preprocess import Preprocess
from cnnbench.settings import ExtractSettings

from conftest import ROOT, tiny_backbone, write_image
from test_datasets_paper import _touch_image as _image
from test_datasets_paper import _write
from test_layout_faults import LISTS, _one_line, _roxford5k
from test_revisited import DB, write_revisitop

TINY = Preprocess(input_size=32, resize_size=36)


def _settings(**kw) -> ExtractSettings:
    """Resolved settings as the engine hands them to ``decode_batch``."""
    return ExtractSettings(**{"box_scale": 1.0, "spatial_levels": 2, **kw})


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _grey_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit grey PNG of zeros, written with zlib: a 1x100000 one is a few hundred bytes."""
    raw = (b"\0" * (width + 1)) * height  # each row: filter type 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9))
                     + _chunk(b"IEND", b""))
    return path


# -- 1. hostile files never reach another program: an allow-list of formats ---------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


@pytest.fixture
def ghostscript(tmp_path, monkeypatch) -> Path:
    """A stand-in ``gs`` first on PATH that records every call; returns the file it records into.
    Pillow's memory of an earlier search for Ghostscript is cleared, so it would find this one."""
    calls = tmp_path / "gs-calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n[ "$1" = --version ] && echo 10.02.1\nexit 0\n')
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return calls


def test_a_postscript_file_named_jpg_is_a_skip_naming_its_format_and_ghostscript_never_runs(tmp_path, ghostscript):
    holiday = tmp_path / "holiday.jpg"
    holiday.write_bytes(EPS)
    good = write_image(tmp_path / "good.jpg", seed=1)
    batch, ok, skipped = decode_batch([Item("holiday", holiday), Item("good", good)], TINY, _settings())
    assert not ghostscript.exists(), ghostscript.read_text()
    assert [i.id for i in ok] == ["good"] and batch.shape[0] == 1
    [(item_id, why)] = skipped
    assert item_id == "holiday" and why.startswith(f"{holiday}: format EPS is not allowed"), why
    assert "convert it" in why.lower()


def test_extract_on_an_image_folder_records_the_refused_format_and_ghostscript_never_runs(tmp_path, ghostscript,
                                                                                          monkeypatch):
    class Tiny:
        @hookimpl
        def register_backbones(self, register):
            register("tiny", lambda **kw: tiny_backbone())

    plugins.register_plugin(Tiny(), name="security-tiny")
    folder = tmp_path / "photos"
    for split in ("train", "test"):
        for c in "ab":
            for k in range(2):
                write_image(folder / split / c / f"{k}.jpg", seed=k + ord(c))
    (folder / "train" / "a" / "holiday.jpg").write_bytes(EPS)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["extract", "-b", "tiny", "-d", "imagefolder", "-D", f"path={folder}",
                                       "--out", str(tmp_path / "features"), "--no-progress", "--runtime", "eager"])
    assert result.exit_code == 0, result.output
    assert not ghostscript.exists(), ghostscript.read_text()
    assert "holiday.jpg: format EPS is not allowed" in result.output
    [(item_id, why)] = store.read_skipped(tmp_path / "features" / "train.h5")
    assert item_id == "a/holiday.jpg" and "format EPS is not allowed" in why


@pytest.mark.parametrize("name, content, formats", [
    ("icon.png", b"\0\0\1\0\1\0\x10\x10\0\0\1\0\x20\0\x68\x04", "ICO"),
    ("sketch.jpg", b"/* XPM */\nstatic char *x[] = {\n", "XBM or XPM"),
    ("sky.tif", b"SIMPLE  =                    T" + b" " * 50, "FITS"),
])
def test_a_format_outside_the_allow_list_is_refused_by_name_before_its_parser_runs(tmp_path, monkeypatch,
                                                                                     name, content, formats):
    def no_parser(fp, filename):
        raise AssertionError(f"a parser ran on {filename}")

    Image.init()
    for fmt in formats.split(" or "):
        monkeypatch.setitem(Image.OPEN, fmt, (no_parser, Image.OPEN[fmt][1]))  # its signature test stays
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=f"{name}: format {formats} is not allowed"):
        load_image(path)


def test_content_decides_within_the_allow_list_and_a_multi_picture_jpeg_opens(tmp_path):
    webp = tmp_path / "really-webp.png"
    Image.new("RGB", (16, 8), (0, 200, 0)).save(webp, "WEBP", lossless=True)
    assert np.asarray(load_image(webp))[4, 8].tolist() == [0, 200, 0]
    mpo = tmp_path / "stereo.jpg"
    Image.new("RGB", (16, 8), "red").save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (16, 8))])
    assert Image.open(mpo).format == "MPO" and load_image(mpo).size == (16, 8)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a picture at all")
    with pytest.raises(ImageDecodeError, match="garbage.jpg: not an image cnnbench can read"):
        load_image(garbage)


def test_no_module_opens_an_image_but_through_the_allow_list():
    """Every file a data set names is opened by :func:`cnnbench.images.load_image` alone."""
    offenders = [f"{p.relative_to(ROOT)}:{n}" for folder in ("cnnbench", "plugins")
                 for p in sorted((ROOT / folder).rglob("*.py")) if p.name != "images.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "Image.open(" in line]
    assert offenders == []


# -- 2. aspect-ratio bombs: every image built is bounded, every skip has a reason ---------------------

_UNDER_A_CAP = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from cnnbench.dataset import Item
from cnnbench.decode import decode_batch
from cnnbench.preprocess import Preprocess
from cnnbench.settings import ExtractSettings
out = {}
for views in ("none", "jitter16", "spatial"):
    settings = ExtractSettings(views=views, box_scale=1.0, spatial_levels=2, **json.loads(sys.argv[2]))
    _, ok, skipped = decode_batch([Item("thin", sys.argv[1])], Preprocess(), settings)
    out[views] = skipped[0][1] if skipped else None
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["peak_mib"] = int(status["VmHWM"].split()[0]) / 1024  # this program's peak (ru_maxrss counts the parent's)
print(json.dumps(out))
"""


def _skips_under_a_cap(path: Path, **settings) -> dict:
    """The skip reason of ``path`` in each view mode, decoded in a process held to 1 GiB of address
    space (the bombs below would otherwise take this machine's memory, as they did before the fix:
    a 256 x 25.6M resize, 20 GB, whose MemoryError was recorded with an empty reason)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _UNDER_A_CAP, str(path), json.dumps(settings)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(proc.stdout)


def test_a_tiny_1x100000_png_is_refused_before_its_resize_or_patch_is_built(tmp_path):
    thin = _grey_png(tmp_path / "thin.png", 1, 100_000)
    assert len(thin.read_bytes()) < 1000
    out = _skips_under_a_cap(thin)
    for views in ("none", "jitter16"):
        assert out[views].startswith(f"{thin}: resizing a 1x100000 image to 256 px"), out[views]
        assert "256x25600000" in out[views] and "max_pixels" in out[views] and "--max-pixels" in out[views]
    assert out["spatial"].startswith(f"{thin}: the view l1_r0_c0 of a 1x100000 image would build a 100000x100000"), \
        out["spatial"]
    assert out["peak_mib"] < 300


def test_lifting_max_pixels_leaves_pillows_limit_on_every_image_built(tmp_path):
    thin = _grey_png(tmp_path / "thin.png", 1, 100_000)
    out = _skips_under_a_cap(thin, max_pixels=None)
    assert "256x25600000" in out["none"] and "Pillow's own limit (max_pixels is null)" in out["none"], out["none"]


def test_a_thin_box_is_bounded_like_a_thin_image_and_ordinary_shapes_pass(tmp_path):
    photo = write_image(tmp_path / "photo.png", seed=3, size=(300, 200))
    items = [Item("sliver", photo, box=(10, 0, 11, 200)), Item("whole", photo), Item("query", photo, box=(0, 0, 150, 100))]
    _, ok, skipped = decode_batch(items, TINY, _settings(max_pixels=100_000))
    assert [i.id for i in ok] == ["whole", "query"]
    [(item_id, why)] = skipped
    assert item_id == "sliver" and "resizing a 1x200 image to 36 px on its short side" in why
    assert "36x7200 image = 259,200 pixels, over the limit of 100,000" in why


@pytest.mark.parametrize("error", [MemoryError(), KeyError(), AssertionError(), RuntimeError("  ")],
                         ids=lambda e: type(e).__name__)
def test_a_skip_has_a_reason_even_when_the_exception_has_no_message(tmp_path, monkeypatch, error):
    from cnnbench import decode

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(decode, "load_views", fails)
    path = write_image(tmp_path / "photo.jpg", seed=5)
    _, ok, [(item_id, why)] = decode_batch([Item("photo", path)], TINY, _settings())
    assert not ok and why == f"{path}: {type(error).__name__}"


def test_a_skip_names_the_file_once(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    _, _, [(_, why)] = decode_batch([Item("bad", bad)], TINY, _settings())
    assert why.count(str(bad)) == 1, why


def test_an_in_memory_item_that_cannot_be_read_is_named_by_its_id():
    _, _, [(_, why)] = decode_batch([Item("digit-7", np.zeros((2, 2), np.float32))], TINY, _settings())
    assert why == "item digit-7: in-memory image must be uint8 or uint16, got float32"


# -- beyond the report: a decoder's time and the views' memory are bounded too ------------------------


def _progressive_jpeg_with_scans(path: Path, side: int, extra_scans: int) -> Path:
    """A grey progressive JPEG followed by ``extra_scans`` 12-byte scans, each an end-of-band run that
    covers every block of the image: each costs the decoder a pass over the image, for 12 bytes."""
    from io import BytesIO

    buf = BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True)
    blocks = (side // 8) ** 2
    assert 1 << 14 <= blocks < 1 << 15  # one EOBRUN of class 14 covers them all
    dht = b"\xff\xc4\x00\x14\x10" + bytes([1] + [0] * 15) + b"\xe0"  # AC table 0: one code, '0' -> EOBRUN 14
    bits = "0" + format(blocks - (1 << 14), "014b") + "1"
    scan = b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x00" + int(bits, 2).to_bytes(2, "big")
    path.write_bytes(buf.getvalue()[:-2] + dht + scan * extra_scans + b"\xff\xd9")
    return path


def test_a_progressive_jpeg_of_hundreds_of_tiny_scans_is_refused_before_decoding(tmp_path, monkeypatch):
    """Such a file of 1.2 MB (100,000 scans) took 11 s to decode; this one is 4 KB."""
    from PIL import ImageFile

    ordinary = tmp_path / "ordinary.jpg"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(ordinary, progressive=True)
    assert load_image(ordinary).size == (64, 48)
    bomb = _progressive_jpeg_with_scans(tmp_path / "scans.jpg", 1024, 300)
    assert len(bomb.read_bytes()) < 10_000

    def no_decoding(self):
        raise AssertionError("decoded a JPEG of 300 extra scans")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageDecodeError, match="scans.jpg: a JPEG with more than 256 scans"):
        load_image(bomb)


def test_jitter16_holds_a_few_full_size_images_at_a_time_not_all_sixteen(tmp_path, monkeypatch):
    """Pixels alive at once while the 16 views of one image are made, counted at every image Pillow
    builds (before: all 16 views of the photo at full size, about 10 photos' worth)."""
    photo = write_image(tmp_path / "photo.png", seed=4, size=(240, 180))
    live: dict[int, int] = {}  # id -> pixels of each image still alive
    peak = [0]
    new = Image.Image._new

    def counted(self, im):
        out = new(self, im)
        live[id(out)] = out.width * out.height
        weakref.finalize(out, live.pop, id(out), None)
        peak[0] = max(peak[0], sum(live.values()))
        return out

    monkeypatch.setattr(Image.Image, "_new", counted)
    _, ok, skipped = decode_batch([Item("photo", photo)], TINY, _settings(views="jitter16"))
    assert ok and not skipped, skipped
    assert peak[0] <= 4 * 240 * 180, peak[0] / (240 * 180)


# -- 3. ground truth never names a file outside its data set ----------------------------------------------


def _secret(tmp_path) -> Path:
    """A private image beside the data root (and a VOC annotation for it, so VOC would read it too)."""
    _write(tmp_path / "private" / "secret.xml", "<annotation><object><name>cat</name></object></annotation>")
    return _image(tmp_path / "private" / "secret.jpg", 7)


@pytest.mark.parametrize("how", ["climbs out with ..", "absolute path", "link inside that leads out"])
@pytest.mark.parametrize("name, build, base, appends_jpg", LISTS, ids=[c[0] for c in LISTS])
def test_an_annotation_entry_that_leads_out_of_the_data_set_is_refused_before_any_image_is_read(
        tmp_path, name, build, base, appends_jpg, how):
    secret, data = _secret(tmp_path), tmp_path / "data"
    folder = data / base
    target = secret.with_suffix("") if appends_jpg else secret
    if how == "climbs out with ..":
        entry = os.path.relpath(target, folder)
    elif how == "absolute path":
        entry = str(target)
    else:
        link = folder / ("cls" if name == "mit67" else "") / "link.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(secret)
        entry = ("cls/" if name == "mit67" else "") + ("link" if appends_jpg else "link.jpg")
        if name == "voc2007":
            _write(folder.parent / "Annotations" / "link.xml", "<annotation></annotation>")
    ds, split, annotation = build(data, entry)
    with pytest.raises(UserError) as err:
        ds.items(split)
    msg = _one_line(err)
    assert msg.startswith(f"{annotation}: the entry '{entry}")
    assert {"climbs out with ..": "outside the data set's folder", "absolute path": "is an absolute path",
            "link inside that leads out": "through a symbolic link"}[how] in msg


def test_the_issues_revisitop_entry_is_refused_and_nothing_is_extracted(tmp_path, tiny):
    from cnnbench.extract import extract_split

    good = _image(tmp_path / "good" / "train" / "a" / "0.jpg")
    ds, split, gnd = _roxford5k(tmp_path / "data", os.path.relpath(good.with_suffix(""), tmp_path / "data/roxford5k/jpg"))
    with pytest.raises(UserError, match=r"gnd_roxford5k\.pkl: the entry '\.\./\.\./\.\./good/train/a/0\.jpg' names "):
        extract_split(tiny, ds, split, tmp_path / "f" / "database.h5", progress=False)
    assert not (tmp_path / "f" / "database.h5").exists()


def test_linking_the_images_folder_or_the_whole_data_set_is_the_users_choice_and_fine(tmp_path):
    store = write_revisitop(tmp_path / "disk") / "roxford5k"
    data = tmp_path / "data"
    (data / "roxford5k").mkdir(parents=True)
    (data / "roxford5k" / "jpg").symlink_to(store / "jpg")  # images on another disk
    (data / "roxford5k" / "gnd_roxford5k.pkl").write_bytes((store / "gnd_roxford5k.pkl").read_bytes())
    assert len(plugins.create("dataset", "roxford5k", data_root=data).items("database")) == len(DB)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "roxford5k").symlink_to(store)  # the whole data set linked in
    assert len(plugins.create("dataset", "roxford5k", data_root=tmp_path / "linked").items("queries")) == 2


def test_a_plugin_author_checks_entries_with_one_call(tmp_path):
    from cnnbench.dataset import AnnotationError, path_inside, paths_inside

    root = tmp_path / "set"
    (root / "jpg").mkdir(parents=True)
    outside = _image(tmp_path / "elsewhere.jpg")
    (root / "jpg" / "out.jpg").symlink_to(outside)
    listed = root / "list.txt"
    assert paths_inside(root, ["a.jpg", "sub/b.jpg", "../list.txt", "missing.jpg"], annotation=listed,
                        base=root / "jpg") == [root / "jpg" / "a.jpg", root / "jpg" / "sub/b.jpg",
                                               root / "jpg" / "../list.txt", root / "jpg" / "missing.jpg"]
    for entry, says in [("../../elsewhere.jpg", "outside the data set's folder"), (str(outside), "an absolute path"),
                        ("out.jpg", "through a symbolic link"), ("", "not a file path"), ("a\0b", "not a file path")]:
        with pytest.raises(AnnotationError, match=says):
            path_inside(root, entry, annotation=listed, base=root / "jpg")
