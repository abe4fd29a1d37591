"""compare: measured rows beside the paper's, as terminal, Markdown and CSV tables."""

from __future__ import annotations

import pytest

from cnnbench.compare import build_table, load_records, render_png, to_csv, to_long_csv, to_markdown
from cnnbench.errors import CnnbenchError
from cnnbench.jsonio import write_json


def _record(backbone, dataset, head, metric, value, std=None):
    return {"backbone": backbone, "dataset": dataset, "head": head, "layer": "pre_logits",
            "primary_metric": metric, "metrics": {metric: value}, "std": {metric: std} if std else {}}


def test_paper_row_comes_first_where_the_data_set_has_a_published_number(tmp_path):
    write_json(tmp_path / "a/flowers102/svm.json", _record("mynet", "flowers102", "svm", "mean_class_accuracy", 0.9))
    write_json(tmp_path / "a/digits/svm.json", _record("mynet", "digits", "svm", "accuracy", 0.95, std=0.01))
    table = build_table(load_records(tmp_path))
    assert table.rows == ["paper: OverFeat CNN-SVM", "paper: OverFeat CNNaug-SVM", "mynet"]
    md = to_markdown(table)
    assert "| paper: OverFeat CNN-SVM | — | 74.7 |" in md
    # every other row shows its difference to the baseline (the paper's CNN-SVM row by default)
    assert "| mynet | 95.0 ± 1.0 | 90.0 (+15.3) |" in md
    csv_text = to_csv(table)
    assert csv_text.splitlines()[3] == "mynet,95.00,90.00,,+15.30"


def test_no_paper_rows_when_no_data_set_has_one(tmp_path):
    write_json(tmp_path / "x.json", _record("mynet", "digits", "svm", "accuracy", 0.95))
    assert build_table(load_records(tmp_path)).rows == ["mynet"]


def test_baseline_can_be_a_measured_backbone_or_a_paper_alias(tmp_path):
    write_json(tmp_path / "a/oxford5k/l2.json", _record("mynet", "oxford5k", "l2", "mAP", 0.60))
    write_json(tmp_path / "b/oxford5k/l2.json", _record("other", "oxford5k", "l2", "mAP", 0.50))
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
    assert long_lines[0].startswith("backbone,column,dataset") and any(l.startswith("mynet,") and l.endswith("+10.00") for l in long_lines)
    with pytest.raises(CnnbenchError, match="nosuch"):
        build_table(records, baseline="nosuch")
    assert build_table(records, baseline=None).diff("mynet", col) is None


def test_png_bar_chart_is_written(tmp_path):
    write_json(tmp_path / "m/a.json", _record("mynet", "voc2007", "svm", "mAP", 0.8, std=0.01))
    write_json(tmp_path / "m/b.json", _record("mynet", "holidays", "l2", "mAP", 0.7))
    out = tmp_path / "r" / "compare.png"
    render_png(build_table(load_records(tmp_path / "m")), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_cli_compare_writes_every_report(tmp_path):
    from conftest import run_cli

    write_json(tmp_path / "metrics/mynet/oxford5k/l2.json", _record("mynet", "oxford5k", "l2", "mAP", 0.6))
    (tmp_path / "empty.yaml").write_text("{}\n")  # built-in defaults
    proc = run_cli("--params", str(tmp_path / "empty.yaml"), "compare", "--metrics", str(tmp_path / "metrics"),
                   "--markdown", str(tmp_path / "r/c.md"), "--csv", str(tmp_path / "r/c.csv"), "--png",
                   str(tmp_path / "r/c.png"), "--long-csv", str(tmp_path / "r/l.csv"), "--baseline", "CNN-ss")
    assert "(+4.4)" in (tmp_path / "r/c.md").read_text() and (tmp_path / "r/c.png").exists()
    assert "wrote" in proc.stdout
    bad = run_cli("--params", str(tmp_path / "empty.yaml"), "compare", "--metrics", str(tmp_path / "metrics"),
                  "--baseline", "nosuch", check=False)
    assert bad.returncode != 0 and "nosuch" in bad.stderr
