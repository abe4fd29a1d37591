"""Damaged outputs: results that disagree with themselves or are taken for one another.

One evaluation writes one unit of three files (``svm.json``, the metrics; ``svm.outcomes.json``;
``svm.run.json``, written last, with the size and SHA-256 of the other two and of its own fields).
A unit whose parts were not written together (a run killed between two writes, a file copied in or
edited), a field of another type than evaluate writes, a file far larger than cnnbench writes, a
feature file of another data set, split, backbone or weights than asked for: each is one line that
names the file and what to rerun, never a table, a picture or a metrics file built from it.
Fixtures are written here as evaluate writes them (:func:`cnnbench.evaluate.write_results`); to
reach the checks behind the digests, :func:`_reseal` commits an altered unit with fresh digests,
as a hostile file would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cnnbench import hookimpl, plugins, stats
from cnnbench import outcomes as OUT
from cnnbench import show as S
from cnnbench.cli import main
from cnnbench.compare import build_table, load_records
from cnnbench.errors import CnnbenchError, UserError
from cnnbench.evaluate import evaluate, write_results
from cnnbench.outcomes import Outcomes

from conftest import tiny_backbone, write_image

RERUN_SVM = "rerun `cnnbench evaluate -b mynet -d digits --head svm`"


def dumps(data) -> str:
    """A run record's or metrics file's text, as evaluate writes it."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def fingerprint(data: bytes) -> dict:
    """What the run record keeps of each file of its unit."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _classifier(right: float, *, backbone="mynet", dataset="digits", head="svm", n=100, C=1.0) -> dict:
    """What evaluate returns for a one-trial classifier that gets ``right`` of ``n`` test images."""
    labels = np.arange(n) % 4
    hits = np.arange(n) < round(right * n)
    acc = float(hits.mean())
    kept = Outcomes([f"img{k:03d}" for k in range(n)], labels=labels, predictions=np.where(hits, labels, (labels + 1) % 4))
    return {"backbone": backbone, "dataset": dataset, "head": head, "layer": "pre_logits", "task": "multiclass",
            "primary_metric": "accuracy", "metrics": {"accuracy": acc}, "std": {}, "head_params": {"C": C},
            "trials": [{"trial": "default", "n_train": n, "n_test": n, "accuracy": acc, "C": C}],
            "outcomes": [("default", kept)]}


def _retrieval(dataset="oxford5k", depth=10) -> dict:
    """What evaluate returns for the l2 head on two queries (their AP and first ``depth`` results)."""
    db = [f"db{k:03d}" for k in range(40)]
    kept = Outcomes(["q0", "q1"], values={"mAP": np.array([0.5, 0.25])}, ranking=[db[:depth], db[-depth:]])
    return {"backbone": "mynet", "dataset": dataset, "head": "l2", "layer": "pre_logits", "task": "retrieval",
            "primary_metric": "mAP", "metrics": {"mAP": 0.375}, "std": {},
            "trials": [{"trial": "default", "n_train": 40, "n_test": 2, "mAP": 0.375}], "outcomes": [("default", kept)]}


def _reseal(metrics_path: Path, *, metrics=None, run=None, outcomes=None) -> None:
    """Replace parts of a unit (JSON values; None: keep) and seal it as evaluate does: the run record
    last, holding the size and SHA-256 of the metrics and outcomes files and of its own fields."""
    run_path, side = metrics_path.with_name(metrics_path.stem + ".run.json"), OUT.path_for(metrics_path)
    if metrics is not None:
        metrics_path.write_text(dumps(metrics))
    if outcomes is not None:
        side.write_text(json.dumps(outcomes, sort_keys=True, separators=(",", ":")) + "\n")
    record = json.loads(run_path.read_text()) if run is None else run
    fields = {k: v for k, v in record.items() if k != "unit"}
    unit = {"metrics": fingerprint(metrics_path.read_bytes()), "outcomes": fingerprint(side.read_bytes()),
            "run": fingerprint(dumps(fields).encode())}
    run_path.write_text(dumps({**fields, "unit": unit}))


def _run(path: Path) -> dict:
    return json.loads(path.with_name(path.stem + ".run.json").read_text())


def _outcomes(path: Path) -> dict:
    return json.loads(OUT.path_for(path).read_text())


def _one_line(result) -> str:
    """The error of a command that must fail in one line, without a traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    return line


# -- case 7: the three files of one result are one unit ----------------------------------------------------


def test_the_run_record_is_written_last_and_seals_the_other_two(tmp_path):
    metrics_path, run_path = write_results(_classifier(0.9), tmp_path / "mynet/digits/svm.json")
    unit = json.loads(run_path.read_text())["unit"]
    assert unit["metrics"] == fingerprint(metrics_path.read_bytes())
    assert unit["outcomes"] == fingerprint(OUT.path_for(metrics_path).read_bytes())
    assert set(json.loads(metrics_path.read_text())) == {"accuracy"}  # the metrics file stays numbers only
    [rec] = load_records(tmp_path)
    assert "unit" not in rec and rec["metrics"] == {"accuracy": 0.9}


def test_old_metrics_beside_a_new_run_record_and_outcomes_are_refused_naming_the_three_files(tmp_path, monkeypatch):
    """The issue's kill: C = 1's metrics (89.9 %) beside C = 0.001's run record and outcomes (63.7 %)."""
    old, _ = write_results(_classifier(0.899, C=1.0), tmp_path / "a/mynet/digits/svm.json")
    new, _ = write_results(_classifier(0.637, C=0.001), tmp_path / "b/mynet/digits/svm.json")
    for suffix in (".run.json", ".outcomes.json"):
        shutil.copy(new.with_name("svm" + suffix), old.with_name("svm" + suffix))
    with pytest.raises(CnnbenchError) as e:
        build_table(load_records(tmp_path / "a"))
    msg = str(e.value)
    assert "svm.json, svm.run.json and svm.outcomes.json" in msg and "do not belong together" in msg
    assert RERUN_SVM in msg and "\n" not in msg
    monkeypatch.chdir(tmp_path)
    line = _one_line(CliRunner().invoke(main, ["compare", "--metrics", "a"]))
    assert "do not belong together" in line and not (tmp_path / "reports").exists()


def test_a_kill_before_the_run_record_is_written_is_refused_until_evaluate_runs_again(tmp_path, monkeypatch):
    import cnnbench.results as E  # the module that writes results (was cnnbench.evaluate)

    path, _ = write_results(_classifier(0.9, C=1.0), tmp_path / "mynet/digits/svm.json")
    real = E.write_json

    def killed(target, data):
        if str(target).endswith(".run.json"):
            raise KeyboardInterrupt  # SIGINT between the files
        return real(target, data)

    monkeypatch.setattr(E, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_results(_classifier(0.5, C=0.001), path)
    with pytest.raises(CnnbenchError, match=r"svm\.json is not the file svm\.run\.json was written with"):
        build_table(load_records(tmp_path))
    monkeypatch.setattr(E, "write_json", real)
    write_results(_classifier(0.5, C=0.001), path)  # the rerun commits a unit again
    [rec] = load_records(tmp_path)
    assert rec["metrics"]["accuracy"] == 0.5 and rec["head_params"] == {"C": 0.001}


def test_show_refuses_outcomes_that_are_not_those_of_the_run_record(tmp_path):
    path, _ = write_results(_retrieval(), tmp_path / "metrics/mynet/oxford5k/l2.json")
    other = {**_retrieval(), "outcomes": [("default", Outcomes(["q9"], values={"mAP": [1.0]}, ranking=[[]]))]}
    other, _ = write_results(other, tmp_path / "elsewhere/mynet/oxford5k/l2.json")
    shutil.copy(OUT.path_for(other), OUT.path_for(path))  # another evaluation's outcomes copied in
    line = _one_line(CliRunner().invoke(main, ["show", "-b", "mynet", "-d", "oxford5k", "--metrics-dir",
                                               str(tmp_path / "metrics"), "--out-dir", str(tmp_path / "out")]))
    assert "l2.outcomes.json is not the file l2.run.json was written with" in line
    assert "rerun `cnnbench evaluate -b mynet -d oxford5k --head l2`" in line and not (tmp_path / "out").exists()


def test_an_edited_run_record_and_one_written_without_digests_are_refused(tmp_path):
    path, run_path = write_results(_classifier(0.9), tmp_path / "mynet/digits/svm.json")
    edited = json.loads(run_path.read_text())
    edited["head"] = "knn"  # the column would be another head's
    run_path.write_text(dumps(edited))
    with pytest.raises(CnnbenchError, match=r"svm\.run\.json was changed after evaluate wrote it"):
        load_records(tmp_path)
    del edited["unit"]  # as the cnnbench before this one wrote it
    run_path.write_text(dumps(edited))
    with pytest.raises(CnnbenchError, match=r"svm\.run\.json was written by an older cnnbench.*rerun `cnnbench "
                       r"evaluate -b mynet -d digits --head knn` \(or `dvc repro`\)"):
        load_records(tmp_path)


# -- case 11: every field a reader uses has the type evaluate writes ---------------------------------------


@pytest.mark.parametrize("part, change, says", [
    ("metrics", lambda m, r, o: {"accuracy": "0.9"}, r"svm\.json: 'accuracy' is text, not a finite number"),
    ("metrics", lambda m, r, o: {"accuracy": [0.9]}, r"svm\.json: 'accuracy' is a list of 1, not a finite number"),
    ("metrics", lambda m, r, o: [0.9], r"svm\.json holds a list of 1, not an object of numbers"),
    ("run", lambda m, r, o: {**r, "trials": "x"}, r"svm\.run\.json: 'trials' is text, not a list"),
    ("run", lambda m, r, o: {**r, "trials": [{"trial": "default", "accuracy": "high"}]},
     r"svm\.run\.json: trials\[0\]\['accuracy'\] is text, not a number"),
    ("run", lambda m, r, o: {**r, "head": 3}, r"svm\.run\.json: 'head' is the number 3, not a name"),
    ("run", lambda m, r, o: {**r, "head": "knn"},
     r"svm\.outcomes\.json holds the outcomes of head 'svm', its run record svm\.run\.json is of 'knn'"),
    ("outcomes", lambda m, r, o: {**o, "trials": [{**o["trials"][0], "predictions": [str(p) for p in
                                                                                    o["trials"][0]["predictions"]]}]},
     r"svm\.outcomes\.json: trial 0 \(default\): 'predictions' holds text, not integers"),
    ("outcomes", lambda m, r, o: {**o, "dataset": "mit67"},
     r"svm\.outcomes\.json holds the outcomes of dataset 'mit67', its run record svm\.run\.json is of 'digits'"),
])
def test_a_field_of_another_type_or_of_another_result_is_one_line_naming_the_file(tmp_path, part, change, says):
    path, _ = write_results(_classifier(0.841), tmp_path / "mynet/digits/svm.json")
    new = change(json.loads(path.read_text()), _run(path), _outcomes(path))
    _reseal(path, **{part: new})
    with pytest.raises(CnnbenchError, match=says) as e:
        build_table(load_records(tmp_path))
    assert "\n" not in str(e.value) and "rerun `cnnbench evaluate" in str(e.value)


def test_two_results_for_one_cell_are_refused_naming_both(tmp_path):
    write_results(_classifier(0.9), tmp_path / "run1/mynet/digits/svm.json")
    write_results(_classifier(0.7), tmp_path / "run2/mynet/digits/svm.json")  # a copied folder, other numbers
    with pytest.raises(CnnbenchError, match=r"run1/mynet/digits/svm\.json and .*run2/mynet/digits/svm\.json are both "
                                            r"results of mynet on digits with svm"):
        build_table(load_records(tmp_path))


def test_non_finite_decisions_in_outcomes_are_refused(tmp_path):
    y = np.array([[1, 0], [0, 1], [1, 1]])
    record = {**_classifier(0.9), "dataset": "voc2007", "primary_metric": "mAP", "metrics": {"mAP": 0.8},
              "trials": [{"trial": "default", "mAP": 0.8}],
              "outcomes": [("default", Outcomes(["a", "b", "c"], labels=y, decisions=np.ones((3, 2))))]}
    path, _ = write_results(record, tmp_path / "mynet/voc2007/svm.json")
    side = _outcomes(path)
    side["trials"][0]["decisions"][1][0] = float("nan")
    _reseal(path, outcomes=side)
    with pytest.raises(CnnbenchError, match=r"'decisions' holds values that are not finite"):
        build_table(load_records(tmp_path))


# -- case 15: bounded work from one value --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "params"])
def test_a_bootstrap_of_two_billion_resamples_is_refused_before_any_is_drawn(tmp_path, monkeypatch, where):
    write_results(_classifier(0.9), tmp_path / "metrics/mynet/digits/svm.json")
    monkeypatch.chdir(tmp_path)
    args = ["compare"]
    if where == "flag":
        args += ["--bootstrap", "2000000000"]
    else:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": {"bootstrap": 2_000_000_000}}))
    line = _one_line(CliRunner().invoke(main, args))
    assert "compare.bootstrap" in line and "100000" in line


def test_the_bootstrap_draws_the_same_resamples_in_chunks_of_bounded_size(monkeypatch):
    [(_, a)], [(_, b)] = _classifier(0.8)["outcomes"], _classifier(0.7)["outcomes"]
    whole = stats.bootstrap_interval([a], "accuracy", n=1000), stats.paired_test([("t", a)], [("t", b)], "mean_class_accuracy")
    seen = []
    real = stats._replicates

    def spy(trials, metric, draws):
        seen.append(sum(d.size for d in draws))
        return real(trials, metric, draws)

    monkeypatch.setattr(stats, "ELEMENTS", 1_000)  # 10 resamples of 100 items at a time
    monkeypatch.setattr(stats, "_replicates", spy)
    chunked = stats.bootstrap_interval([a], "accuracy", n=1000), stats.paired_test([("t", a)], [("t", b)], "mean_class_accuracy")
    assert chunked == whole and max(seen) <= 1_000 and len(seen) >= 100


def test_rankings_longer_than_evaluate_writes_are_refused_before_they_are_loaded(tmp_path, monkeypatch):
    path, _ = write_results(_retrieval(), tmp_path / "mynet/oxford5k/l2.json")
    side = _outcomes(path)
    longer = {**side, "trials": [{**side["trials"][0], "ranking": [r * 1000 for r in side["trials"][0]["ranking"]]}]}
    OUT.path_for(path).write_text(json.dumps(longer))  # 1000x the rankings: not the file the run record holds
    with pytest.raises(CnnbenchError, match=r"l2\.outcomes\.json is not the file l2\.run\.json was written with"):
        S.load_outcomes(tmp_path, "mynet", "oxford5k")
    eleven = {**side, "trials": [{**side["trials"][0], "ranking": [r + ["db999"] for r in side["trials"][0]["ranking"]]}]}
    _reseal(path, outcomes=eleven)  # sealed anew: the reader still bounds what it takes
    with pytest.raises(CnnbenchError, match=r"'ranking' holds 11 ids for one item; cnnbench keeps 10"):
        S.load_outcomes(tmp_path, "mynet", "oxford5k")
    _reseal(path, outcomes=side)
    monkeypatch.setattr(OUT, "MAX_BYTES", 100)
    with pytest.raises(CnnbenchError, match=r"l2\.outcomes\.json is \d+ bytes, more than cnnbench writes there "
                                            r"\(at most 100 bytes\)"):
        S.load_outcomes(tmp_path, "mynet", "oxford5k")


# -- case 16: one line, not a traceback -----------------------------------------------------------------------


def test_show_with_a_ranking_that_is_a_number_is_one_line(tmp_path):
    path, _ = write_results(_retrieval(dataset="digits"), tmp_path / "metrics/mynet/digits/l2.json")
    side = _outcomes(path)
    side["trials"][0]["ranking"] = [7, 8]
    _reseal(path, outcomes=side)
    line = _one_line(CliRunner().invoke(main, ["show", "-b", "mynet", "-d", "digits", "--metrics-dir",
                                               str(tmp_path / "metrics"), "--out-dir", str(tmp_path / "out")]))
    assert "l2.outcomes.json: trial 0 (default): 'ranking' is a list of 2, not one list of database ids" in line


def test_output_folders_under_a_file_are_one_line_before_any_work(tiny_digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file where a folder should be")
    line = _one_line(CliRunner().invoke(main, ["evaluate", "-b", "tiny", "-d", "digits", "--head", "svm", "--features",
                                               str(tiny_digits), "--no-extract-missing", "--out-dir", "taken/m"]))
    assert "cannot write into taken/m/tiny/digits/cnn: taken is a file, not a folder" in line
    write_results(_classifier(0.9), tmp_path / "metrics/mynet/digits/svm.json")
    line = _one_line(CliRunner().invoke(main, ["compare", "--png", "taken/compare.png"]))
    assert "taken is a file, not a folder" in line
    write_results(_retrieval(dataset="digits"), tmp_path / "metrics/mynet/digits/l2.json")
    line = _one_line(CliRunner().invoke(main, ["show", "-b", "mynet", "-d", "digits", "--out-dir", "taken/show"]))
    assert "taken is a file, not a folder" in line


# -- case 8: a feature file is the one asked for --------------------------------------------------------------


class _TinyPlugin:
    """The tiny backbone in-process; ``weights`` other weights (its last layer shifted), as a file would."""

    @hookimpl
    def register_backbones(self, register):
        register("tiny", _tiny)


def _tiny(weights=None, **_):
    import torch

    bb = tiny_backbone()
    if weights:
        with torch.no_grad():
            bb.model.fc.weight.add_(1.0)
    return bb


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The tiny backbone registered in-process, the working folder ``tmp_path``."""
    plugins.register_plugin(_TinyPlugin(), name="tiny-plugin")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _evaluate_cli(*args: str):
    return CliRunner().invoke(main, ["evaluate", "-d", "digits", "--head", "svm", "-H", "C=1", "--no-extract-missing",
                                     "--out-dir", "m", *args])


def test_swapped_train_and_test_files_are_refused_naming_the_file_and_the_split(tiny_digits, tmp_path):
    (tmp_path / "f").mkdir()
    shutil.copy(tiny_digits / "train.h5", tmp_path / "f/test.h5")
    shutil.copy(tiny_digits / "test.h5", tmp_path / "f/train.h5")
    with pytest.raises(UserError, match=r"feature file .*f/train\.h5 holds split 'test', but evaluate asked for "
                                        r"'train'; extract them again"):
        evaluate(tmp_path / "f", plugins.create("dataset", "digits"), plugins.create("head", "svm", C=1.0), "svm")


def test_another_data_sets_features_in_the_folder_are_refused(in_tmp):
    from cnnbench.extract import extract_split
    from cnnbench.settings import ExtractSettings

    for split in ("train", "test"):
        for c in "ab":
            for k in range(2):
                write_image(in_tmp / "pets" / split / c / f"{k}.jpg", seed=k + ord(c) + 7 * len(split))
    pets = plugins.create("dataset", "imagefolder", path=str(in_tmp / "pets"))
    for split in pets.splits:
        extract_split(tiny_backbone(), pets, split, in_tmp / "features/tiny/digits/none" / f"{split}.h5",
                      ExtractSettings(workers=1, runtime="eager"), progress=False)
    line = _one_line(_evaluate_cli("-b", "tiny"))
    assert "digits/none/train.h5 holds dataset 'imagefolder', but evaluate asked for 'digits'" in line
    assert not (in_tmp / "m").exists()


def test_features_of_another_backbone_or_other_weights_are_refused(tiny_digits, in_tmp):
    line = _one_line(_evaluate_cli("-b", "effnet-lite1", "--features", str(tiny_digits)))
    assert "train.h5 holds backbone 'tiny', but evaluate asked for 'effnet-lite1'" in line
    (in_tmp / "other.pt").write_bytes(b"")
    line = _one_line(_evaluate_cli("-b", "tiny", "--features", str(tiny_digits), "--weights", "other.pt"))
    assert "holds weights_sha256 '" in line and "but evaluate asked for '" in line
    assert not (in_tmp / "m").exists()


def test_features_of_other_data_set_options_are_refused_by_their_images(tiny_digits, in_tmp):
    line = _one_line(_evaluate_cli("-b", "tiny", "--features", str(tiny_digits), "-D", "test_fraction=0.3"))
    assert "train.h5 holds 898 images, but the data set lists 1257 for 'train' now" in line and "(-D)" in line
    assert _evaluate_cli("-b", "tiny", "--features", str(tiny_digits)).exit_code == 0  # as extracted: fine


def test_splits_extracted_with_other_settings_are_refused(tiny_digits, tmp_path):
    from cnnbench.extract import extract_split
    from cnnbench.settings import ExtractSettings

    ds = plugins.create("dataset", "digits")
    (tmp_path / "f").mkdir()
    shutil.copy(tiny_digits / "train.h5", tmp_path / "f/train.h5")
    extract_split(tiny_backbone(), ds, "test", tmp_path / "f/test.h5",
                  ExtractSettings(workers=1, runtime="eager", pooling="max"), progress=False)
    with pytest.raises(UserError, match=r"f/test\.h5 holds pooling 'max', but train\.h5 holds 'avg'"):
        evaluate(tmp_path / "f", ds, plugins.create("head", "svm", C=1.0), "svm")


# -- more damaged outputs ---------------------------------------------------------------------------------


def test_a_fifo_named_like_a_result_is_never_waited_on(tmp_path, caplog):
    import os

    from cnnbench import jsonio

    os.mkfifo(tmp_path / "pipe.json")  # opening one for reading waits for a writer, for ever
    with pytest.raises(CnnbenchError, match=r"pipe\.json is not a regular file"):
        jsonio.read_bytes(tmp_path / "pipe.json", 1 << 20, "remove it")
    assert jsonio.file_fingerprint(tmp_path / "pipe.json") is None
    write_results(_classifier(0.9), tmp_path / "mynet/digits/svm.json")
    assert [r["backbone"] for r in load_records(tmp_path)] == ["mynet"] and "pipe.json" in caplog.text


def test_a_folder_where_a_result_file_goes_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "metrics/tiny/digits/svm.run.json").mkdir(parents=True)
    with pytest.raises(OSError, match=r"cannot write .*svm\.run\.json: Is a directory") as e:
        write_results(_classifier(0.9, backbone="tiny"), tmp_path / "metrics/tiny/digits/svm.json")
    assert isinstance(e.value, CnnbenchError)
    monkeypatch.chdir(tmp_path)
    line = _one_line(CliRunner().invoke(main, ["compare"]))
    assert "svm.run.json is not a regular file" in line and "rerun `cnnbench evaluate -b tiny -d digits" in line
