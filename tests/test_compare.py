"""Results files (a metrics file of numbers + a run record) and compare: measured rows beside the
paper's, as terminal, Markdown and CSV tables."""

from __future__ import annotations

import hashlib
import json
import logging
import math

import pytest

from cnnbench import hookimpl, plugins
from cnnbench.compare import build_table, load_records, render_png, to_csv, to_long_csv, to_markdown
from cnnbench.errors import CnnbenchError
from cnnbench.evaluate import evaluate, read_results, run_record_path, split_record, write_results
from cnnbench.jsonio import write_json


def _record(backbone, dataset, head, metric, value, std=None):
    """What cnnbench.evaluate.evaluate returns (the parts compare reads)."""
    return {"backbone": backbone, "dataset": dataset, "head": head, "layer": "pre_logits",
            "primary_metric": metric, "metrics": {metric: value}, "std": {metric: std} if std else {}}


def _write(path, record):
    """A metrics file and its run record, as `cnnbench evaluate` writes them."""
    write_results(record, path)


def test_paper_row_comes_first_where_the_data_set_has_a_published_number(tmp_path):
    _write(tmp_path / "a/flowers102/svm.json", _record("mynet", "flowers102", "svm", "mean_class_accuracy", 0.9))
    _write(tmp_path / "a/digits/svm.json", _record("mynet", "digits", "svm", "accuracy", 0.95, std=0.01))
    table = build_table(load_records(tmp_path))
    assert table.rows == ["paper: OverFeat CNN-SVM", "paper: OverFeat CNNaug-SVM", "mynet"]
    md = to_markdown(table)
    assert "| paper: OverFeat CNN-SVM | — | 74.7 |" in md
    # every other row shows its difference to the baseline (the paper's CNN-SVM row by default)
    assert "| mynet | 95.0 ± 1.0 | 90.0 (+15.3) |" in md
    csv_text = to_csv(table)
    assert csv_text.splitlines()[3] == "mynet,95.00,90.00,,+15.30"


def test_no_paper_rows_when_no_data_set_has_one(tmp_path):
    _write(tmp_path / "x.json", _record("mynet", "digits", "svm", "accuracy", 0.95))
    assert build_table(load_records(tmp_path)).rows == ["mynet"]


def test_baseline_can_be_a_measured_backbone_or_a_paper_alias(tmp_path):
    _write(tmp_path / "a/oxford5k/l2.json", _record("mynet", "oxford5k", "l2", "mAP", 0.60))
    _write(tmp_path / "b/oxford5k/l2.json", _record("other", "oxford5k", "l2", "mAP", 0.50))
    records = load_records(tmp_path)
    table = build_table(records)
    assert table.rows[:3] == ["paper: OverFeat CNN-SVM", "paper: OverFeat CNN-ss", "paper: OverFeat CNNaug-SVM"]
    col = ("oxford5k", "l2", "mAP")
    assert table.diff("mynet", col) == pytest.approx(60.0 - 32.2)
    assert table.diff("mynet", col) == pytest.approx(build_table(records, baseline="CNN-SVM").diff("mynet", col))
    assert build_table(records, baseline="CNN-ss").diff("mynet", col) == pytest.approx(60.0 - 55.6)
    by_other = build_table(records, baseline="other")
    assert by_other.diff("mynet", col) == pytest.approx(10.0) and by_other.diff("other", col) is None
    assert "(+10.0)" in to_markdown(by_other) and "difference to **other**" in to_markdown(by_other)
    long_lines = to_long_csv(by_other).splitlines()
    assert long_lines[0].startswith("backbone,recipe,column,dataset")
    assert any(l.startswith("mynet,cnn,") and l.endswith(",other,+10.00") for l in long_lines)
    with pytest.raises(CnnbenchError, match="nosuch"):
        build_table(records, baseline="nosuch")
    assert build_table(records, baseline=None).diff("mynet", col) is None


def test_png_bar_chart_is_written(tmp_path):
    _write(tmp_path / "m/a.json", _record("mynet", "voc2007", "svm", "mAP", 0.8, std=0.01))
    _write(tmp_path / "m/b.json", _record("mynet", "holidays", "l2", "mAP", 0.7))
    out = tmp_path / "r" / "compare.png"
    render_png(build_table(load_records(tmp_path / "m")), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_cli_compare_writes_every_report(tmp_path):
    from conftest import run_cli

    _write(tmp_path / "metrics/mynet/oxford5k/l2.json", _record("mynet", "oxford5k", "l2", "mAP", 0.6))
    (tmp_path / "empty.yaml").write_text("{}\n")  # built-in defaults
    proc = run_cli("--params", str(tmp_path / "empty.yaml"), "compare", "--metrics", str(tmp_path / "metrics"),
                   "--markdown", str(tmp_path / "r/c.md"), "--csv", str(tmp_path / "r/c.csv"), "--png",
                   str(tmp_path / "r/c.png"), "--long-csv", str(tmp_path / "r/l.csv"), "--baseline", "CNN-ss")
    assert "(+4.4)" in (tmp_path / "r/c.md").read_text() and (tmp_path / "r/c.png").exists()
    assert "wrote" in proc.stdout
    bad = run_cli("--params", str(tmp_path / "empty.yaml"), "compare", "--metrics", str(tmp_path / "metrics"),
                  "--baseline", "nosuch", check=False)
    assert bad.returncode != 0 and "nosuch" in bad.stderr


def test_compare_reads_a_metrics_file_with_its_run_record_and_skips_run_records(tmp_path):
    record = _record("mynet", "voc2007", "svm", "mAP", 0.8, std=0.02)
    record["metrics"]["AP/cat"], record["std"]["AP/cat"] = 0.9, 0.01
    metrics_path, run_path = write_results(record, tmp_path / "mynet/voc2007/svm.json")
    assert json.loads(metrics_path.read_text()) == {"mAP": 0.8, "mAP_std": 0.02}
    [rec] = load_records(tmp_path)
    assert rec["_path"] == str(metrics_path) and run_path.exists()
    assert rec["metrics"] == {"mAP": 0.8, "AP/cat": 0.9} and rec["std"] == {"mAP": 0.02, "AP/cat": 0.01}
    assert rec["backbone"] == "mynet" and rec["primary_metric"] == "mAP"
    table = build_table([rec], all_metrics=True, with_paper=False)
    assert [c[2] for c in table.columns] == ["AP/cat", "mAP"]


def test_compare_still_reads_the_single_file_records_of_earlier_versions(tmp_path):
    write_json(tmp_path / "old/digits/svm.json", {**_record("mynet", "digits", "svm", "accuracy", 0.95), "trials": []})
    _write(tmp_path / "new/digits/l2.json", _record("mynet", "digits", "l2", "mAP", 0.5))
    assert sorted(r["head"] for r in load_records(tmp_path)) == ["l2", "svm"]


def test_a_metrics_file_without_its_run_record_is_refused_and_other_json_is_ignored(tmp_path, caplog):
    write_json(tmp_path / "notes.json", {"comment": "not a result"})
    (tmp_path / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="cnnbench.compare"):
        assert load_records(tmp_path) == []
    assert "broken.json" in caplog.text and "notes.json" not in caplog.text
    write_json(tmp_path / "mynet/digits/svm.json", {"accuracy": 0.9})
    with pytest.raises(CnnbenchError, match=r"svm\.json: no run record svm\.run\.json beside it.*rerun `cnnbench "
                       r"evaluate -b mynet -d digits --head svm`"):
        load_records(tmp_path)


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], data


def test_the_metrics_file_holds_only_numbers_one_per_metric_and_spread(tmp_path):
    record = {**_record("mynet", "voc2007", "svm", "mAP", 0.8, std=0.02), "trials": [{"trial": "a", "C": 1.0}]}
    record["metrics"].update({"mean_auc": 0.9, "AP/cat": 0.7, "broken": math.nan})
    record["std"].update({"mean_auc": 0.01, "AP/cat": 0.03, "broken": math.nan})
    numbers, run = split_record(record)
    assert numbers == {"mAP": 0.8, "mAP_std": 0.02, "mean_auc": 0.9, "mean_auc_std": 0.01}
    assert run["breakdown"] == {"AP/cat": 0.7} and run["non_finite_metrics"] == ["broken"]
    assert run["trials"] == [{"trial": "a", "C": 1.0}] and "metrics" not in run
    metrics_path, run_path = write_results(record, tmp_path / "svm.json")
    assert run_path == run_record_path(metrics_path) == tmp_path / "svm.run.json"
    text = metrics_path.read_text()
    assert "NaN" not in text and all(type(v) is float for _, v in _leaves(json.loads(text)))
    with pytest.raises(CnnbenchError, match="run records"):
        write_results(record, tmp_path / "x.run.json")


class _TinyPlugin:
    """The test suite's tiny backbone, registered in-process like a third-party plugin."""

    @staticmethod
    @hookimpl
    def register_backbones(register):
        from conftest import tiny_backbone

        register("tiny", tiny_backbone)




def test_the_run_record_holds_trials_options_and_the_provenance_of_every_plugin(tiny_digits, tmp_path):
    from cnnbench import store

    plugins.register_plugin(_TinyPlugin(), name="tiny-plugin")
    ds = plugins.create("dataset", "digits")
    record = evaluate(tiny_digits, ds, plugins.create("head", "svm", C=1.0), "svm")
    metrics_path, run_path = write_results(record, tmp_path / "m/tiny/digits/svm.json")
    numbers = json.loads(metrics_path.read_text())
    assert set(numbers) == {"accuracy", "mean_class_accuracy"}
    run = json.loads(run_path.read_text())
    assert (run["backbone"], run["dataset"], run["head"], run["layer"]) == ("tiny", "digits", "svm", "act")
    assert run["primary_metric"] == "accuracy" and run["trials"][0]["C"] == 1.0 and run["skipped_images"] == 0
    assert run["head_params"]["C"] == 1.0 and run["dataset_options"] == {"seed": 0, "test_fraction": 0.5}
    prov = run["provenance"]
    assert set(prov["versions"]) == {"cnnbench", "torch", "timm", "open_clip_torch", "onnxruntime", "numpy",
                                     "scikit-learn", "h5py"}
    assert prov["versions"]["cnnbench"] and prov["versions"]["numpy"]
    assert prov["plugins"]["backbone"] == {"name": "tiny", "plugin": "tiny-plugin", "distribution": plugins.IN_PROCESS,
                                           "version": None}
    for kind, name in (("dataset", "digits"), ("head", "svm")):
        assert prov["plugins"][kind]["name"] == name and prov["plugins"][kind]["distribution"] == "cnnbench"
    for split in ds.splits:
        attrs = store.open_info(tiny_digits / f"{split}.h5").attrs
        assert prov["features"][split]["signature_sha256"] == hashlib.sha256(attrs["signature"].encode()).hexdigest()
        assert prov["features"][split]["runtime"] == attrs["runtime"]
    # deterministic: the same run writes the same bytes, and reads back as evaluate returned it;
    # the per-image outcomes live in their own file beside the two
    from cnnbench import outcomes

    sidecar = outcomes.path_for(metrics_path)
    before = (metrics_path.read_bytes(), run_path.read_bytes(), sidecar.read_bytes())
    write_results(evaluate(tiny_digits, ds, plugins.create("head", "svm", C=1.0), "svm"), metrics_path)
    assert (metrics_path.read_bytes(), run_path.read_bytes(), sidecar.read_bytes()) == before
    kept = record.pop("outcomes")
    back = read_results(metrics_path)
    assert back["recipe"] == "cnn"  # evaluated without a recipe: read as the default one
    assert {k: v for k, v in back.items() if k not in ("recipe", "recipe_spec")} == json.loads(json.dumps(record))
    [(trial, back)] = outcomes.read(sidecar)
    assert trial == kept[0][0] and back.ids == kept[0][1].ids
    assert back.metric("accuracy") == numbers["accuracy"]


def test_evaluate_hands_every_head_the_data_sets_metric(tiny_digits):
    from cnnbench.head import Head

    seen = []

    class Recorder(Head):
        def evaluate(self, train, test, task, *, metric=None):
            seen.append(metric)
            return {"accuracy": 0.5}

    record = evaluate(tiny_digits, plugins.create("dataset", "digits"), Recorder(), "recorder")
    assert seen == ["accuracy"] and record["metrics"] == {"accuracy": 0.5}


def test_a_result_with_distractors_is_its_own_column(tmp_path):
    plain = _record("mynet", "roxford5k", "l2", "mAP_medium", 0.5)
    r1m = _record("mynet", "roxford5k", "l2", "mAP_medium", 0.3)
    r1m["provenance"] = {"distractors": {"option": "revisitop1m", "path": "features/mynet/revisitop1m/database.h5",
                                         "dataset": "revisitop1m"}}
    by_path = _record("mynet", "rparis6k", "l2", "mAP_medium", 0.4)  # named by a path: the file's data set counts
    by_path["provenance"] = {"distractors": {"option": "/data/f/mynet/revisitop1m/database.h5", "dataset": "revisitop1m"}}
    write_results(plain, tmp_path / "a/roxford5k/l2.json")
    write_results(r1m, tmp_path / "b/roxford5k/l2.json")
    write_results(by_path, tmp_path / "c/rparis6k/l2.json")
    table = build_table(load_records(tmp_path), with_paper=False)
    assert {c[0] for c in table.columns} == {"roxford5k", "roxford5k+revisitop1m", "rparis6k+revisitop1m"}
    assert table.values[("mynet", ("roxford5k+revisitop1m", "l2", "mAP_medium"))] == 30.0
