"""`hf:` data sets: tiny Hugging Face sets written here with `datasets` itself (the hub's parquet layout,
data/<split>-00000-of-00001.parquet), read offline (HF_HUB_OFFLINE) from a folder, from a hub-cache
snapshot as `hf download` leaves it, and from the cache a former `load_dataset` leaves; then extract ->
evaluate -> compare through the command line with the svm, logreg, knn and l2 heads, a multi-label
and a retrieval set among them. Plus what a user gets wrong: one line each, nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnbench import plugins, store
from cnnbench.cli import main
from cnnbench.dataset import EncodedImage, folder_name
from cnnbench.errors import CnnbenchError, MissingDataError, UserError

from conftest import TinyPlugin

CLASSES = ("red", "green", "blue")
TAGS = ("warm", "cool", "natural")  # red: warm; green: cool, natural; blue: cool
TAGS_OF = {0: [0], 1: [1, 2], 2: [1]}
ROWS = 9  # per split: three images per class
SHA = "0123456789abcdef0123456789abcdef01234567"  # the commit of the fabricated hub snapshot


def picture(cls: int, seed: int, fmt: str = "PNG") -> bytes:
    """A 20x24 image mostly of its class's colour, with noise: easy for any head, never identical."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, size=(20, 24, 3), dtype=np.uint8)
    arr[..., cls] += 180
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_parquet(folder: Path, split: str, columns: dict, features: datasets.Features) -> Path:
    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def write_set(folder: Path, *, missing: int | None = None, labels: dict | None = None) -> Path:
    """train and test, ROWS images each (PNG and JPEG by turns) with a ClassLabel ``label``, a
    ``Sequence(ClassLabel)`` ``tags``, a float ``score``; ``missing``: a train row without image;
    ``labels``: {split: label cells} to replace the labels with."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES)),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=list(TAGS))),
                                  "score": datasets.Value("float32")})
    for split, base in (("train", 0), ("test", 100)):
        classes = [k % 3 for k in range(ROWS)]
        images = [{"bytes": picture(c, base + k, "JPEG" if k % 2 else "PNG"), "path": None}
                  for k, c in enumerate(classes)]
        if split == "train" and missing is not None:
            images[missing] = None
        write_parquet(folder, split, {"image": images, "label": (labels or {}).get(split, classes),
                                      "tags": [TAGS_OF[c] for c in classes], "score": [0.5] * ROWS}, features)
    return folder


RETRIEVAL = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                               "positives": datasets.Sequence(datasets.Value("string")),
                               "junk": datasets.Sequence(datasets.Value("string")),
                               "box": datasets.Sequence(datasets.Value("float32"))})


def write_retrieval_set(folder: Path, queries: dict | None = None) -> Path:
    """database: 9 images (3 per colour) with ids db-<k>; queries: one per colour, ``positives`` the
    database images of its colour, ``junk`` an image of another colour (left out of the ranking), ``box``
    a crop. One
    configuration, one schema (the hub's rule): database rows leave positives, junk and box empty."""
    write_parquet(folder, "database", {"id": [f"db-{k}" for k in range(9)],
                                       "image": [picture(k % 3, 200 + k) for k in range(9)],
                                       "positives": [None] * 9, "junk": [None] * 9, "box": [None] * 9}, RETRIEVAL)
    write_parquet(folder, "queries", queries or {
        "id": [f"q-{c}" for c in range(3)], "image": [picture(c, 300 + c) for c in range(3)],
        "positives": [[f"db-{k}" for k in range(9) if k % 3 == c] for c in range(3)],
        "junk": [[], ["db-0"], []], "box": [[0, 0, 24, 20], [2, 2, 22, 18], [0, 0, 12, 10]]}, RETRIEVAL)
    return folder


def fabricate_hub_snapshot(cache: Path, repo: str, folder: Path, commit: str = SHA) -> Path:
    """The hub cache's layout as `hf download` leaves it: blobs named by their SHA-256, a snapshot of
    links into them, refs/main naming the commit."""
    top = cache / f"datasets--{repo.replace('/', '--')}"
    snapshot = top / "snapshots" / commit
    for f in sorted(folder.rglob("*.parquet")):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        (top / "blobs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, top / "blobs" / digest)
        link = snapshot / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(top / "blobs" / digest, link.parent))
    (top / "refs").mkdir(exist_ok=True)
    (top / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """Empty Hugging Face caches under tmp_path, offline (as the libraries read them: at call time)."""
    hub, cache = tmp_path / "hf" / "hub", tmp_path / "hf" / "datasets"
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", str(hub)), ("HF_DATASETS_CACHE", str(cache))):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    datasets.disable_progress_bars()
    yield hub
    datasets.enable_progress_bars()


@pytest.fixture
def workdir(tmp_path, monkeypatch, hf_home):
    monkeypatch.chdir(tmp_path)
    plugins.register_plugin(TinyPlugin(), name="tiny-hf-test")
    return tmp_path


def ok(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    return line


EXTRACT = ("extract", "-b", "tiny", "--no-progress", "--runtime", "eager")


def metrics_of(workdir: Path, name: str, head: str) -> dict:
    return json.loads((workdir / "metrics" / "tiny" / folder_name(name) / "cnn" / f"{head}.json").read_text())


# -- the whole way through the command line -------------------------------------------------------------


def test_a_folder_in_the_hubs_layout_extracts_evaluates_and_compares_with_every_head(workdir):
    write_set(workdir / "data" / "tiny_hf", missing=4)
    out = ok(*EXTRACT, "-d", "hf:tiny_hf")
    assert "8 images, 1 skipped" in out and "9 images, 0 skipped" in out
    for head in ("svm", "logreg", "knn", "l2"):
        ok("evaluate", "-b", "tiny", "-d", "hf:tiny_hf", "--head", head, "--no-extract-missing")
    ok("compare")

    features = workdir / "features" / "tiny" / "hf:tiny_hf" / "none"  # a plain name is its own folder
    train = store.read(features / "train.h5")
    assert list(train.ids) == [f"train/{k}" for k in (0, 1, 2, 3, 5, 6, 7, 8)]  # <split>/<row>
    assert list(train.labels) == [0, 1, 2, 0, 2, 0, 1, 2]
    [(sid, why)] = store.read_skipped(features / "train.h5")
    assert (sid, why) == ("train/4", "hf:tiny_hf train[4] (no image: its 'image' cell is empty): no image data")
    attrs = store.open_info(features / "train.h5").attrs
    assert json.loads(attrs["classes"]) == list(CLASSES)  # from the ClassLabel
    recorded = json.loads(attrs["signature"])["dataset_options"]
    assert recorded["repo"] is None and recorded["revision"] is None
    assert recorded["fingerprints"]["train"]["files"] == 1 and len(recorded["fingerprints"]["test"]["sha256"]) == 64
    assert "data_root" not in recorded and "path" not in recorded

    scores = {h: metrics_of(workdir, "hf:tiny_hf", h) for h in ("svm", "logreg", "knn", "l2")}
    assert scores["svm"]["accuracy"] == scores["logreg"]["accuracy"] == scores["knn"]["accuracy"] == 1.0
    assert scores["l2"]["mAP"] > 0.9
    run = json.loads((workdir / "metrics" / "tiny" / "hf:tiny_hf" / "cnn" / "svm.run.json").read_text())
    assert run["dataset"] == "hf:tiny_hf" and run["dataset_options"] == recorded and run["skipped_images"] == 1
    assert "hf:tiny_hf" in (workdir / "reports" / "compare.md").read_text()
    assert "up to date (8 images)" in ok(*EXTRACT, "-d", "hf:tiny_hf")  # the signature is stable


def test_a_hub_repo_is_read_offline_from_the_hub_cache_at_its_commit(workdir, hf_home):
    folder = write_set(workdir / "made")
    fabricate_hub_snapshot(hf_home, "tinyorg/colours", folder)
    ok(*EXTRACT, "-d", "hf:tinyorg/colours")
    ok("evaluate", "-b", "tiny", "-d", "hf:tinyorg/colours", "--head", "knn", "--no-extract-missing")
    ok("compare")

    folder_of = folder_name("hf:tinyorg/colours")
    assert folder_of == "hf:tinyorg/colours"  # two nested folders: dvc.yaml's ${item.dataset} names them
    info = store.open_info(workdir / "features" / "tiny" / folder_of / "none" / "test.h5")
    recorded = json.loads(info.attrs["signature"])["dataset_options"]
    assert recorded["repo"] == "tinyorg/colours" and recorded["revision"] == SHA
    assert metrics_of(workdir, "hf:tinyorg/colours", "knn")["accuracy"] == 1.0
    assert "hf:tinyorg/colours" in (workdir / "reports" / "compare.md").read_text()
    # the same bytes as the folder they came from: the same fingerprints (blob names are their SHA-256)
    local = plugins.create("dataset", f"hf:{folder}").options()["fingerprints"]
    assert recorded["fingerprints"] == local
    short = plugins.create("dataset", f"hf:tinyorg/colours@{SHA[:7]}")
    assert short.options()["revision"] == SHA and len(short.items("train")) == ROWS
    line = one_line_error(*EXTRACT, "-d", "hf:tinyorg/colours@" + "f" * 40)
    assert "not in the local Hugging Face caches" in line and "HF_HUB_OFFLINE" in line


def test_a_repo_loaded_once_by_datasets_is_read_offline_from_its_cache(workdir):
    """What `load_dataset("tinyorg/once")` leaves in HF_DATASETS_CACHE (<ns>___<name>/<config>/0.0.0/<commit>/,
    arrow files named after the set): made here by preparing a folder and moving it into place."""
    folder = write_set(workdir / "made")
    builder = datasets.load_dataset_builder(str(folder))
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    target = Path(datasets.config.HF_DATASETS_CACHE) / "tinyorg___once" / "default" / "0.0.0" / SHA
    target.parent.mkdir(parents=True)
    shutil.move(prepared, target)
    for f in target.glob("made-*.arrow"):
        f.rename(target / f.name.replace("made-", "once-"))
    ds = plugins.create("dataset", "hf:tinyorg/once")
    assert [i.label for i in ds.items("test")] == [0, 1, 2] * 3 and ds.classes == list(CLASSES)
    assert ds.options()["repo"] == "tinyorg/once" and ds.options()["revision"] == SHA
    assert ds.options()["fingerprints"]["train"]["files"] == 1  # the cached arrow file
    with pytest.raises(MissingDataError, match="is of commit 0123456789abcdef.*not 'abc1234'"):
        plugins.create("dataset", "hf:tinyorg/once@abc1234").check()


def test_a_multilabel_column_from_params_yaml_scores_with_svm_logreg_and_knn(workdir):
    write_set(workdir / "data" / "tiny_hf")
    (workdir / "params.yaml").write_text('datasets: ["hf:tiny_hf"]\nheads: [svm, logreg, knn]\n'
                                         'dataset_options:\n  "hf:tiny_hf": {label: tags}\n')
    ok(*EXTRACT, "-d", "hf:tiny_hf")
    ok("evaluate", "-b", "tiny", "-d", "hf:tiny_hf", "--no-extract-missing")  # params.yaml's heads
    train = store.read(workdir / "features" / "tiny" / "hf:tiny_hf" / "none" / "train.h5")
    assert train.labels.tolist()[:3] == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]  # Sequence(ClassLabel): 0/1 per tag
    for head in ("svm", "logreg", "knn"):
        assert metrics_of(workdir, "hf:tiny_hf", head)["mAP"] == pytest.approx(1.0), head
    run = json.loads((workdir / "metrics" / "tiny" / "hf:tiny_hf" / "cnn" / "svm.run.json").read_text())
    assert run["task"] == "multilabel" and run["dataset_options"]["label"] == ["tags"]


def test_a_retrieval_set_of_database_and_queries_scores_with_l2(workdir):
    write_retrieval_set(workdir / "data" / "tiny_ret")
    ok(*EXTRACT, "-d", "hf:tiny_ret", "-D", "box=box")
    ok("evaluate", "-b", "tiny", "-d", "hf:tiny_ret", "-D", "box=box", "--head", "l2", "--no-extract-missing")
    features = workdir / "features" / "tiny" / "hf:tiny_ret" / "none"
    assert list(store.read(features / "database.h5").ids[:2]) == ["db-0", "db-1"]  # the id column
    ds = plugins.create("dataset", "hf:tiny_ret", box="box", data_root=str(workdir / "data"))
    assert ds.task == "retrieval" and ds.splits == ("database", "queries") and ds.metric == "mAP"
    gt = ds.extras("queries")["ground_truth"]
    assert gt["q-1"] == {"positives": ["db-1", "db-4", "db-7"], "junk": ["db-0"]}
    assert [i.box for i in ds.items("queries")][1] == (2.0, 2.0, 22.0, 18.0)
    assert metrics_of(workdir, "hf:tiny_ret", "l2")["mAP"] == 1.0


# -- what the columns say ----------------------------------------------------------------------------


def _one_split_set(folder: Path, columns: dict, features: dict) -> Path:
    feats = datasets.Features({"image": datasets.Image(), **features})
    for split, base in (("train", 0), ("test", 50)):
        n = len(next(iter(columns.values())))
        write_parquet(folder, split, {"image": [picture(k % 3, base + k) for k in range(n)], **columns}, feats)
    return folder


@pytest.mark.parametrize("cells, feature, classes, labels", [
    ([2, 0, 1], datasets.Value("int64"), ["0", "1", "2"], [2, 0, 1]),  # integers: classes 0…max
    (["owl", "cat", "owl"], datasets.Value("string"), ["cat", "owl"], [1, 0, 1]),  # strings: sorted names
])
def test_integer_and_string_label_columns_name_their_classes(tmp_path, hf_home, cells, feature, classes, labels):
    folder = _one_split_set(tmp_path / "set", {"label": cells}, {"label": feature})
    ds = plugins.create("dataset", f"hf:{folder}")
    assert ds.task == "multiclass" and ds.classes == classes and [i.label for i in ds.items("test")] == labels


def test_several_zero_one_columns_are_one_class_each_and_ids_come_from_the_id_column(tmp_path, hf_home):
    folder = _one_split_set(tmp_path / "set", {"smiling": [1, 0, -1], "glasses": [True, False, True],
                                               "id": ["a", "b", "c"]},
                            {"smiling": datasets.Value("int8"), "glasses": datasets.Value("bool"),
                             "id": datasets.Value("string")})
    ds = plugins.create("dataset", f"hf:{folder}", label=["smiling", "glasses"])
    assert ds.task == "multilabel" and ds.classes == ["smiling", "glasses"] and ds.metric == "mAP"
    assert [(i.id, i.label) for i in ds.items("train")] == [("a", (1, 1)), ("b", (0, 0)), ("c", (-1, 1))]


def test_an_image_folder_set_reads_the_files_its_cells_name(tmp_path, hf_home):
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            (tmp_path / "set" / split / name).mkdir(parents=True)
            (tmp_path / "set" / split / name / "0.png").write_bytes(picture(c, c))
    ds = plugins.create("dataset", f"hf:{tmp_path / 'set'}")
    [item] = [i for i in ds.items("test") if i.label == 1]
    assert ds.classes == ["blue", "green", "red"] and item.image == str(tmp_path / "set" / "test" / "green" / "0.png")


def test_a_configuration_is_chosen_by_name_and_splits_can_be_joined(tmp_path, hf_home):
    """A README's configs: (the hub's way to hold several subsets in one repo), each with its own files."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    folder = tmp_path / "set"
    for config, splits in (("small", ("train", "validation")), ("large", ("train", "validation", "test"))):
        for split in splits:
            write_parquet(folder / config, split, {"image": [picture(k, k) for k in range(3)], "label": [0, 1, 2]},
                          features)
    (folder / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n" + "".join(
            f"  - split: {s}\n    path: {c}/data/{s}-00000-of-00001.parquet\n" for s in splits)
        for c, splits in (("small", ("train", "validation")), ("large", ("train", "validation", "test")))) + "---\n")
    small = plugins.create("dataset", f"hf:{folder}", config="small")
    assert [i.id for i in small.items("test")] == ["validation/0", "validation/1", "validation/2"]  # no test split
    joined = plugins.create("dataset", f"hf:{folder}", config="large", splits={"train": "train+validation",
                                                                               "test": "test"})
    assert [i.id for i in joined.items("train")] == [f"{s}/{k}" for s in ("train", "validation") for k in range(3)]
    assert joined.options()["fingerprints"]["train"]["files"] == 2
    with pytest.raises(UserError, match="BuilderConfig 'medium' not found"):
        plugins.create("dataset", f"hf:{folder}", config="medium").check()


def test_a_local_copy_is_read_under_its_repos_name(tmp_path, hf_home):
    folder = write_set(tmp_path / "copy")
    ds = plugins.create("dataset", "hf:tinyorg/colours@v1", path=str(folder))
    assert ds.name == "hf:tinyorg/colours@v1" and ds.root == folder and len(ds.items("test")) == ROWS
    assert ds.options()["repo"] == "tinyorg/colours" and ds.options()["revision"] == "v1"
    assert "path" not in ds.options()  # where it lies is no part of what it is


def test_changed_data_changes_the_fingerprint_and_a_copied_folder_does_not(tmp_path, hf_home):
    first = write_set(tmp_path / "a")
    before = plugins.create("dataset", f"hf:{first}").options()["fingerprints"]
    shutil.copytree(first, tmp_path / "b")
    os.utime(tmp_path / "b" / "data" / "train-00000-of-00001.parquet", (0, 0))
    assert plugins.create("dataset", f"hf:{tmp_path / 'b'}").options()["fingerprints"] == before
    write_set(tmp_path / "b", missing=1)  # one image fewer in train; test written again, alike
    after = plugins.create("dataset", f"hf:{tmp_path / 'b'}").options()["fingerprints"]
    assert after["train"] != before["train"] and after["test"] == before["test"]


def test_images_are_handed_over_as_their_stored_bytes(tmp_path, hf_home):
    folder = write_set(tmp_path / "set")
    [first, second, *_] = plugins.create("dataset", f"hf:{folder}").items("test")
    assert isinstance(first.image, EncodedImage) and first.image.read() == picture(0, 100, "PNG")
    assert second.image.read() == picture(1, 101, "JPEG") and str(second.image) == f"hf:{folder} test[1]"
    # read when decoded, from the memory-mapped Arrow files: an item holds a reference, not the bytes,
    # and travels to another process (a Ray worker) as one
    assert first.image.data == b"" and first.image.load is not None
    assert pickle.loads(pickle.dumps(second)).image.read() == picture(1, 101, "JPEG")


# -- what a user gets wrong: one line each, nothing written ---------------------------------------------


@pytest.mark.parametrize("args, expect", [
    (["-d", "hf:nobody/nothing"], "hf:nobody/nothing: not in the local Hugging Face caches"),
    (["-d", "hf:./no-such-folder"], "is not a folder; put the data set there"),
    (["-d", "hf:not a repo"], "is neither a Hugging Face repo id"),
    (["-d", "hf:tiny_hf", "-D", "label=colour"], "label: there is no column 'colour'; the columns are image "
     "(Image), label (ClassLabel (3 classes)), tags (a list of ClassLabel (3 classes)), score (float32)"),
    (["-d", "hf:tiny_hf", "-D", "label=score"], "label: the column 'score' is float32, not a ClassLabel"),
    (["-d", "hf:tiny_hf", "-D", "image=label"], "image: the column 'label' is ClassLabel (3 classes), not an image"),
    (["-d", "hf:tiny_hf", "-D", "lable=tags"], "did you mean 'label'"),
    (["-d", "hf:tiny_hf", "-D", "splits={train: train, test: validation}"],
     "splits: test: the set has no split 'validation'; its splits are train, test"),
    (["-d", "hf:tiny_hf", "-D", "splits={train: train}"], "expected {train: <split>, test: <split>}"),
    (["-d", "hf:tiny_hf", "-D", "config=nope"], "hf:tiny_hf: BuilderConfig 'nope' not found"),
    (["-d", "hf:tiny_hf", "-D", "task=multilabel"], "task multilabel: the label column 'label' is ClassLabel"),
    (["-d", "hf:tiny_hf", "-D", "task=retrieval"], "a retrieval set needs splits database and queries"),
])
def test_a_mistake_is_one_line_and_nothing_is_written(workdir, args, expect):
    write_set(workdir / "data" / "tiny_hf")
    line = one_line_error(*EXTRACT, *args)
    assert expect in line, line
    assert not (workdir / "features").exists()


def test_bad_cells_are_one_line_naming_the_row(workdir):
    write_set(workdir / "data" / "unlabelled", labels={"test": [0, 1, -1, 0, 1, 2, 0, 1, 2]})
    line = one_line_error(*EXTRACT, "-d", "hf:unlabelled")
    assert "hf:unlabelled test[2]: no label in the column 'label'" in line
    outside = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    for split in ("train", "test"):
        write_parquet(workdir / "data" / "outside", split, {"image": [{"bytes": None, "path": "/etc/hostname"}],
                                                            "label": [0]}, outside)
    line = one_line_error(*EXTRACT, "-d", "hf:outside")
    assert "hf:outside train[0]: the image cell names the file '/etc/hostname', outside the data set" in line
    _one_split_set(workdir / "data" / "twice", {"label": [0, 1], "id": ["x", "x"]},
                   {"label": datasets.ClassLabel(names=["a", "b"]), "id": datasets.Value("string")})
    line = one_line_error(*EXTRACT, "-d", "hf:twice")
    assert "hf:twice: the id 'x' of train[1] is also the id of train[0] (column 'id')" in line
    assert not (workdir / "features").exists()


def test_a_set_without_any_image_writes_nothing(workdir):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    for split in ("train", "test"):
        write_parquet(workdir / "data" / "empty", split, {"image": [None, None], "label": [0, 1]}, features)
    line = one_line_error(*EXTRACT, "-d", "hf:empty")
    assert "none of the 2 images of hf:empty/train could be read" in line and "no image" in line
    assert not list((workdir / "features").rglob("*.h5"))


def test_a_retrieval_query_without_positives_or_naming_no_database_image_is_one_line(tmp_path, hf_home):
    def queries(positives):
        n = len(positives)
        return {"id": [f"q-{k}" for k in range(n)], "image": [picture(0, k) for k in range(n)],
                "positives": positives, "junk": [None] * n, "box": [None] * n}

    folder = write_retrieval_set(tmp_path / "set", queries([["db-0"], ["db-99"]]))
    with pytest.raises(UserError, match=r"queries\[1\]: positives names 'db-99', which is not a database id"):
        plugins.create("dataset", f"hf:{folder}").extras("queries")
    write_retrieval_set(tmp_path / "set", queries([["db-0"], []]))
    with pytest.raises(UserError, match=r"queries\[1\]: the query has no positives"):
        plugins.create("dataset", f"hf:{folder}").extras("queries")
    both = {**queries([["db-0", "db-3"]]), "junk": [["db-3"]]}
    write_retrieval_set(tmp_path / "set", both)
    with pytest.raises(UserError, match=r"queries\[0\]: 'db-3' is both among the positives and the junk"):
        plugins.create("dataset", f"hf:{folder}").check()


def test_option_messages_name_the_plugin_and_the_option():
    with pytest.raises(CnnbenchError, match=r"hf:x/y: splits: .*expected \{train: <split>, test: <split>\}"):
        plugins.create("dataset", "hf:x/y", splits={"database": "a"})
    with pytest.raises(CnnbenchError, match=r"hf:x/y: label: a retrieval set has no labels"):
        plugins.create("dataset", "hf:x/y", task="retrieval", label="label")
