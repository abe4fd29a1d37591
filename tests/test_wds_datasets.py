"""`wds:` data sets: WebDataset shards in CLIP_benchmark's layout, written here (two shards per split),
read through the webdataset library, then extract -> evaluate -> compare through the command line
with every head, offline. Plus what a user gets wrong or a disk breaks (one line each, nothing
written), the signature (a changed shard re-extracts, a moved folder does not) and resume."""

from __future__ import annotations

import io
import json
import pickle
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from cnnbench import plugins, store
from cnnbench.cli import main
from cnnbench.dataset import folder_name
from cnnbench.errors import CnnbenchError
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings

from conftest import TinyPlugin, tiny_backbone

CLASSES = ("red", "green", "blue")
PER_SHARD = 6  # samples per shard: two shards per split, 12 images, 4 per class
EAGER = ExtractSettings(batch_size=4, workers=1, runtime="eager")


def png(cls: int, seed: int) -> bytes:
    """A 20x24 image mostly of its class's colour, with noise: easy for any head, not identical."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, size=(20, 24, 3), dtype=np.uint8)
    arr[..., cls] += 180
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_set(root: Path, *, image_key: str = "webp", drop_image: str | None = None, labels: dict | None = None,
              multilabel: bool = False) -> Path:
    """CLIP_benchmark's layout: classnames.txt, <split>/nshards.txt, <split>/0.tar and 1.tar. The
    image is stored under ``image_key`` whatever its format (the decoder reads the content);
    ``drop_image``: a key whose sample has no image; ``labels``: {key: raw label bytes}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    if multilabel:
        (root / "dataset_type.txt").write_text("multilabel\n")
    for split, base in (("train", 0), ("test", 100)):
        (root / split).mkdir(exist_ok=True)
        (root / split / "nshards.txt").write_text("2\n")
        for shard in range(2):
            with wds.TarWriter(str(root / split / f"{shard}.tar")) as sink:
                for k in range(PER_SHARD):
                    i = shard * PER_SHARD + k
                    key, cls = f"{split}{i:04d}", i % len(CLASSES)
                    sample = {"__key__": key, image_key: png(cls, base + i)}
                    if multilabel:
                        sample["npy"] = np.array([1 if c == cls else 0 for c in range(len(CLASSES))], np.int8)
                    else:
                        sample["cls"] = str(cls)
                    if labels and key in labels:
                        sample["cls"] = labels[key]
                    if key == drop_image:
                        del sample[image_key]
                        sample["txt"] = "no picture here"
                    sink.write(sample)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugins.register_plugin(TinyPlugin(), name="tiny-wds-test")
    return tmp_path


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(result, expect: str) -> str:
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert expect in line, line
    return line


# -- the whole way through the command line -------------------------------------------------------------


def test_wds_folder_extracts_evaluates_and_compares_with_every_head(workdir):
    write_set(workdir / "data" / "tiny_wds", drop_image="train0007")
    out = ok("extract", "-b", "tiny", "-d", "wds:tiny_wds", "--no-progress", "--runtime", "eager")
    assert "11 images, 1 skipped" in out and "12 images, 0 skipped" in out
    features = workdir / "features" / "tiny" / "wds:tiny_wds" / "none"
    for head in ("svm", "logreg", "knn", "l2"):
        ok("evaluate", "-b", "tiny", "-d", "wds:tiny_wds", "--head", head, "--no-extract-missing")
    ok("compare")

    train = store.read(features / "train.h5")
    assert list(train.ids[:3]) == ["train0000", "train0001", "train0002"]  # the samples' __key__, shard order
    assert list(train.labels[:3]) == [0, 1, 2] and len(train.ids) == 11
    [(sid, why)] = store.read_skipped(features / "train.h5")
    assert sid == "train0007"
    assert why == ("data/tiny_wds/train/1.tar/train0007 (its files: cls, txt; none is one of image_keys webp, jpg, "
                   "jpeg, png): no image data")
    attrs = store.open_info(features / "train.h5").attrs
    assert json.loads(attrs["classes"]) == list(CLASSES)
    recorded = json.loads(attrs["signature"])["dataset_options"]
    assert recorded["shards"]["train"]["files"] == 2 and len(recorded["shards"]["test"]["sha256"]) == 64
    assert len(recorded["classnames_sha256"]) == 64 and "data_root" not in recorded and "path" not in recorded

    metrics = workdir / "metrics" / "tiny" / "wds:tiny_wds" / "cnn"
    scores = {h: json.loads((metrics / f"{h}.json").read_text()) for h in ("svm", "logreg", "knn", "l2")}
    assert scores["svm"]["mean_class_accuracy"] == 1.0 and scores["logreg"]["mean_class_accuracy"] == 1.0
    assert scores["knn"]["mean_class_accuracy"] == 1.0  # one colour per class: any head gets them all
    assert "mAP" in scores["l2"] or "mean_class_accuracy" in scores["l2"]
    run = json.loads((metrics / "svm.run.json").read_text())
    assert run["dataset"] == "wds:tiny_wds" and run["dataset_options"] == recorded and run["skipped_images"] == 1
    table = (workdir / "reports" / "compare.md").read_text()
    assert "wds:tiny_wds" in table
    # up to date on a second run: the signature is stable
    assert "up to date (11 images)" in ok("extract", "-b", "tiny", "-d", "wds:tiny_wds", "--no-progress",
                                          "--runtime", "eager")


def test_a_path_in_the_name_is_one_folder_of_features_and_metrics(workdir):
    shards = write_set(workdir / "elsewhere" / "my set")
    name = f"wds:{shards}"
    ok("extract", "-b", "tiny", "-d", name, "--no-progress", "--runtime", "eager")
    ok("evaluate", "-b", "tiny", "-d", name, "--head", "knn", "--no-extract-missing")
    folder = folder_name(name)
    assert "/" not in folder and " " not in folder and folder.startswith("wds:_") and len(folder.split("-")[-1]) == 8
    assert (workdir / "features" / "tiny" / folder / "none" / "test.h5").is_file()
    assert (workdir / "metrics" / "tiny" / folder / "cnn" / "knn.json").is_file()
    assert folder_name("wds:tiny_wds") == "wds:tiny_wds" and folder_name("flowers17") == "flowers17"
    assert folder_name("wds:a/b") != folder_name("wds:a_b")  # never one folder for two names


def test_options_choose_the_splits_the_image_and_the_label(workdir):
    root = write_set(workdir / "data" / "s", image_key="png")
    (root / "train").rename(root / "training")
    ds = plugins.create("dataset", "wds:s", data_root="data", splits={"train": "training", "test": "test"},
                        image_keys=["png"])
    assert [i.image.name for i in ds.items("train")][:1] == ["data/s/training/0.tar/train0000.png"]
    assert ds.options()["splits"] == {"train": "training", "test": "test"}
    with pytest.raises(CnnbenchError, match=r"wds:s: unknown key 'image_key' \(did you mean 'image_keys'\?\)"):
        plugins.create("dataset", "wds:s", image_key="png")
    with pytest.raises(CnnbenchError, match=r"wds:s: splits: .*expected the folders of the two splits"):
        plugins.create("dataset", "wds:s", splits={"train": "train"})
    with pytest.raises(CnnbenchError, match=r"wds:s: splits: test: '\.\./x' is not allowed"):
        plugins.create("dataset", "wds:s", splits={"train": "train", "test": "../x"})
    with pytest.raises(CnnbenchError, match=r"wds:s: metric: 'mAP' scores multilabel sets"):
        plugins.create("dataset", "wds:s", metric="mAP")


def test_multilabel_npy_rows_as_clip_benchmark_writes_them(workdir, tiny):
    root = write_set(workdir / "data" / "ml", multilabel=True)
    with pytest.raises(CnnbenchError, match=r"dataset_type\.txt says multilabel: give -D multilabel=true"):
        plugins.create("dataset", "wds:ml", data_root=workdir / "data").items("train")
    ds = plugins.create("dataset", "wds:ml", data_root=workdir / "data", multilabel=True)
    assert (ds.task, ds.metric) == ("multilabel", "mAP")
    assert [i.label for i in ds.items("train")[:2]] == [(1, 0, 0), (0, 1, 0)]
    from cnnbench.evaluate import evaluate

    for split in ds.splits:
        extract_split(tiny, ds, split, workdir / "f" / f"{split}.h5", EAGER, progress=False)
    record = evaluate(workdir / "f", ds, plugins.create("head", "svm"), "svm")
    assert record["primary_metric"] == "mAP" and record["metrics"]["mAP"] == pytest.approx(1.0)
    assert root.is_dir()


def test_images_stored_in_shards_reach_the_model_as_the_same_pixels_as_in_memory(workdir):
    """Digits' first test images, PNG-encoded into shards: decoded by cnnbench's own decoder (the one
    both engines call), they give the model exactly the input the in-memory arrays give."""
    from cnnbench.decode import decode_batch

    digits = plugins.create("dataset", "digits").items("test")[:40]
    root = workdir / "data" / "dig"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "nshards.txt").write_text("2\n")
        for shard in range(2):
            with wds.TarWriter(str(root / split / f"{shard}.tar")) as sink:
                for item in digits[shard * 20:(shard + 1) * 20]:
                    buf = io.BytesIO()
                    Image.fromarray(item.image).save(buf, format="PNG")
                    sink.write({"__key__": item.id, "png": buf.getvalue(), "cls": str(item.label)})
    (root / "classnames.txt").write_text("".join(f"{d}\n" for d in range(10)))
    shards = plugins.create("dataset", "wds:dig", data_root="data").items("test")
    assert [(i.id, i.label) for i in shards] == [(i.id, i.label) for i in digits]
    tiny = tiny_backbone()
    ds = plugins.create("dataset", "digits")
    preprocess, settings = tiny.preprocess, EAGER.resolve("test", ds, tiny)
    from_shards, _, skipped = decode_batch(shards, preprocess, settings)
    in_memory, _, _ = decode_batch(digits, preprocess, settings)
    assert skipped == [] and from_shards.shape == (40, 1, 32, 32, 3) and np.array_equal(from_shards, in_memory)


def test_a_plain_shard_is_read_where_each_image_lies_when_it_is_decoded(workdir):
    """Items of plain tar shards hold where their bytes lie, not the bytes (a split is never in memory
    at once); they travel to another process as that; a shard rewritten after the listing is refused
    image by image (the bytes are checked against the listing's SHA-256), never read as another image."""
    root = write_set(workdir / "data" / "plain")
    items = plugins.create("dataset", "wds:plain", data_root="data").items("train")
    first = items[0]
    assert first.image.data == b"" and first.image.source == str(Path("data/plain/train/0.tar"))
    assert first.image.read() == png(0, 0) and pickle.loads(pickle.dumps(first)).image.read() == png(0, 0)
    with open(root / "train" / "0.tar", "r+b") as f:  # the first image changed in place, the shard's layout kept
        data = f.read()
        at = data.index(png(0, 0)) + 100
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    with pytest.raises(ValueError, match="is not the file the shard held when it was listed"):
        first.image.read()


# -- the signature: what the shards are, not where -------------------------------------------------------


def test_a_changed_shard_re_extracts_and_a_moved_folder_does_not(workdir, tiny):
    root = write_set(workdir / "data" / "sig")
    out = workdir / "f" / "test.h5"

    def run(data_root):
        ds = plugins.create("dataset", "wds:sig", data_root=data_root)
        return extract_split(tiny, ds, "test", out, EAGER, progress=False)

    first = run(workdir / "data")
    assert not first.cached and first.written == 12
    moved = workdir / "moved"
    moved.mkdir()
    root.rename(moved / "sig")
    assert run(moved).cached  # the folder is not in the signature
    shard = moved / "sig" / "train" / "1.tar"  # a train shard: the test features depend on the whole set
    with wds.TarWriter(str(shard)) as sink:
        for k in range(PER_SHARD):
            sink.write({"__key__": f"train{PER_SHARD + k:04d}", "webp": png(k % 3, 999 + k), "cls": str(k % 3)})
    again = run(moved)
    assert not again.cached and again.written == 12


def test_an_interrupted_extraction_resumes_to_the_bytes_of_an_uninterrupted_one(workdir, monkeypatch):
    write_set(workdir / "data" / "res")
    ds = lambda: plugins.create("dataset", "wds:res", data_root=workdir / "data")  # noqa: E731
    reference = extract_split(tiny_backbone(), ds(), "train", workdir / "ref" / "train.h5", EAGER, progress=False).path
    target = workdir / "f" / "train.h5"
    real = store.StoreWriter.append

    def append(self, *args, **kw):
        real(self, *args, **kw)
        if self.kept >= 8:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store.StoreWriter, "append", append)
        with pytest.raises(KeyboardInterrupt):
            extract_split(tiny_backbone(), ds(), "train", target, EAGER, progress=False)
    assert not target.exists() and store.partial_path(target).is_dir()
    res = extract_split(tiny_backbone(), ds(), "train", target, EAGER, progress=False)
    assert res.resumed_from == 8 and target.read_bytes() == reference.read_bytes()


# -- bad input: one line each, nothing written ------------------------------------------------------------


def _cut(path: Path, at: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:at])


def _break(kind: str, root: Path) -> None:
    shard = root / "test" / "1.tar"
    if kind == "truncated shard":  # a download cut inside an image
        with tarfile.open(shard) as tar:
            _cut(shard, tar.getmembers()[5].offset_data + 100)
    elif kind == "shard cut between samples":  # where the third sample begins: tarfile sees a clean, shorter tar
        with tarfile.open(shard) as tar:
            _cut(shard, tar.getmembers()[4].offset)
    elif kind == "not a tar":  # what a mirror sends for a missing file
        shard.write_bytes(b"<html><body>404 Not Found</body></html>\n")
    elif kind == "missing shard":
        shard.unlink()
    elif kind == "nshards not a number":
        (root / "test" / "nshards.txt").write_text("two\n")
    elif kind == "missing classnames":
        (root / "classnames.txt").unlink()
    elif kind == "blank class name":
        (root / "classnames.txt").write_text("red\n\ngreen\nblue\n")
    elif kind == "no layout":
        for p in sorted(root.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        (root / "images").mkdir()
    elif kind == "retrieval set":
        (root / "dataset_type.txt").write_text("retrieval\n")


BROKEN = [
    ("truncated shard", "data/bad/test/1.tar: not a readable WebDataset shard (ReadError: unexpected end of data); "
                        "fetch it again"),
    ("shard cut between samples", "data/bad/test/1.tar: not a readable WebDataset shard (it ends without tar's "
                                  "end-of-archive blocks: the file is cut short)"),
    ("not a tar", "data/bad/test/1.tar: not a readable WebDataset shard (ReadError: "),
    ("missing shard", "wds:bad: data/bad/test/1.tar does not exist (1 of the 2 shards that "
                      "data/bad/test/nshards.txt counts are missing)"),
    ("nshards not a number", "data/bad/test/nshards.txt: expected one line with the number of shards"),
    ("missing classnames", "wds:bad: data/bad is not in CLIP_benchmark's WebDataset layout: data/bad/classnames.txt "
                           "does not exist"),
    ("blank class name", "data/bad/classnames.txt, line 2: empty, inside the list"),
    ("no layout", "wds:bad: data/bad is not in CLIP_benchmark's WebDataset layout: data/bad/classnames.txt does not "
                  "exist (the folder holds images)"),
    ("retrieval set", "dataset_type.txt says retrieval: an image-text set"),
]


@pytest.mark.parametrize("kind, expect", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_set_is_one_line_and_nothing_is_written(workdir, kind, expect):
    _break(kind, write_set(workdir / "data" / "bad"))
    line = one_line_error(cli("extract", "-b", "tiny", "-d", "wds:bad", "--no-progress", "--runtime", "eager"), expect)
    assert len(line) < 400
    assert not (workdir / "features").exists()  # not even train.h5: the set is checked before any split is written


LABELS = [
    ({"test0003": "cat"}, "data/bad/test/0.tar/test0003.cls: the label 'cat' is not an integer class id"),
    ({"test0003": "1 2"}, "the label '1 2' is not an integer class id; each sample's .cls holds its class's line "
                          "number in classnames.txt, from 0 (several ids: a multilabel set, -D multilabel=true)"),
    ({"test0003": "3"}, "data/bad/test/0.tar/test0003.cls: class id 3 is outside 0…2 (classnames.txt names 3 "
                        "classes)"),
    ({"test0003": b"\xff\xfe"}, "data/bad/test/0.tar/test0003.cls: the label is not text"),
]


@pytest.mark.parametrize("labels, expect", LABELS, ids=["word", "two ids", "out of range", "binary"])
def test_a_bad_label_is_one_line_naming_the_shard_and_the_sample(workdir, labels, expect):
    write_set(workdir / "data" / "bad", labels=labels)
    one_line_error(cli("extract", "-b", "tiny", "-d", "wds:bad", "--no-progress", "--runtime", "eager"), expect)
    assert not (workdir / "features").exists()


def test_duplicate_keys_a_missing_label_and_a_split_without_images_are_one_line(workdir):
    root = write_set(workdir / "data" / "dup")
    shard = root / "test" / "1.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "test0002", "webp": png(0, 1), "cls": "0"})  # test0002 is in 0.tar already
    with pytest.raises(CnnbenchError, match=r"data/dup/test/1.tar: the sample key 'test0002' appears in "
                                            r"data/dup/test/0.tar too"):
        plugins.create("dataset", "wds:dup", data_root="data").items("test")
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "x", "webp": png(0, 1), "txt": "a cat"})
    with pytest.raises(CnnbenchError, match=r"data/dup/test/1.tar/x: the sample has no .cls label \(its files: txt, "
                                            r"webp\); add it, or name the label file with -D label_key"):
        plugins.create("dataset", "wds:dup", data_root="data").items("test")
    with pytest.raises(CnnbenchError, match=r"wds:dup: none of the 12 samples of train \(data/dup/train\) has an image "
                                            r"under image_keys jpg \(their files: cls, webp\); name the image file"):
        plugins.create("dataset", "wds:dup", data_root="data", image_keys=["jpg"]).items("train")


def test_a_remote_url_says_what_to_fetch_in_one_line(workdir):
    url = "https://huggingface.co/datasets/clip-benchmark/wds_voc2007/resolve/main"
    line = one_line_error(cli("extract", "-b", "tiny", "-d", f"wds:{url}", "--no-progress"),
                          "fetch `hf download clip-benchmark/wds_voc2007 --repo-type dataset --local-dir "
                          "data/wds_voc2007`, then use -d wds:wds_voc2007")
    assert "local folder" in line
    with pytest.raises(CnnbenchError, match=r"fetch its classnames.txt, <split>/nshards.txt and <split>/0.tar … "
                                            r"<N-1>.tar from pipe:cat x into data/pipe_cat_x, then use -d "
                                            r"wds:pipe_cat_x"):
        plugins.create("dataset", "wds:pipe:cat x").items("train")  # never handed to webdataset's pipe: opener
    assert not (workdir / "features").exists() and os.listdir(workdir) == []
    copy = write_set(workdir / "fetched")  # the local copy, named by where it came from
    ds = plugins.create("dataset", f"wds:{url}", path=str(copy))
    assert ds.name == f"wds:{url}" and len(ds.items("test")) == 12 and "/" not in folder_name(ds.name)
