"""compare: measured rows beside the paper's, as terminal, Markdown and CSV tables."""

from __future__ import annotations

from cnnbench.compare import build_table, load_records, to_csv, to_markdown
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
    assert "| mynet | 95.0 ± 1.0 | 90.0 |" in md
    csv_text = to_csv(table)
    assert csv_text.splitlines()[3] == "mynet,95.00,90.00"


def test_no_paper_rows_when_no_data_set_has_one(tmp_path):
    write_json(tmp_path / "x.json", _record("mynet", "digits", "svm", "accuracy", 0.95))
    assert build_table(load_records(tmp_path)).rows == ["mynet"]
