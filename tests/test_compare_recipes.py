"""compare lays the table out as the paper does: one measured row per (backbone, recipe), the
paper's three method rows beside them, and each measured row's difference taken against the paper
row of its own method (a ``cnnaug`` row against CNNaug-SVM, ``cnn-ss`` against CNN-ss).

Results are written as ``cnnbench evaluate`` writes them (:func:`cnnbench.evaluate.write_results`,
at :func:`cnnbench.evaluate.result_path`) for a classification set (Flowers-102, mean class
accuracy), a multi-label set (VOC 2007, mAP) and a retrieval set (Holidays, mAP); expected
differences are worked out by hand from the paper's numbers (cnnbench/paper.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from click.testing import CliRunner

from cnnbench import paper
from cnnbench.cli import main
from cnnbench.compare import (build_table, chart_bars, fewshot_curves, layer_curves, load_records, output_paths,
                              render_png, to_csv, to_long_csv, to_markdown)
from cnnbench.errors import CnnbenchError
from cnnbench.evaluate import result_path, write_results
from cnnbench.outcomes import Outcomes
from cnnbench.recipes import resolve

CELLS = {  # data set -> (head, primary metric)
    "flowers102": ("svm", "mean_class_accuracy"),
    "voc2007": ("svm", "mAP"),
    "holidays": ("l2", "mAP"),
}
MEASURED = {  # (recipe, data set) -> value
    ("cnn", "flowers102"): 0.80, ("cnn", "voc2007"): 0.70, ("cnn", "holidays"): 0.60,
    ("cnnaug", "flowers102"): 0.90, ("cnnaug", "voc2007"): 0.75, ("cnnaug", "holidays"): 0.70,
}
FLOWERS, VOC, HOLIDAYS = (("flowers102", "svm", "mean_class_accuracy"), ("voc2007", "svm", "mAP"),
                          ("holidays", "l2", "mAP"))


def _record(backbone: str, dataset: str, recipe: str | None, value: float, **extra) -> dict:
    """What cnnbench.evaluate.evaluate returns with ``recipe`` (None: a result of before recipes)."""
    head, metric = CELLS[dataset]
    rec = {"backbone": backbone, "dataset": dataset, "head": head, "layer": "fc6", "primary_metric": metric,
           "metrics": {metric: value}, "std": {}, **extra}
    if recipe is not None:
        rec.update(recipe=recipe, recipe_spec=resolve(recipe).to_json())
    return rec


def _write(metrics_dir, backbone: str, dataset: str, recipe: str, value: float, **extra):
    metrics_path, _ = write_results(_record(backbone, dataset, recipe, value, **extra),
                                    result_path(metrics_dir, backbone, dataset, recipe, CELLS[dataset][0]))
    return metrics_path


@pytest.fixture
def two_recipes(tmp_path):
    """metrics/b/<data set>/<cnn|cnnaug>/<head>.json for the three data sets."""
    for (recipe, dataset), value in MEASURED.items():
        _write(tmp_path / "metrics", "b", dataset, recipe, value)
    return tmp_path / "metrics"


def test_two_recipes_of_one_backbone_are_two_rows_beside_the_papers_three(two_recipes):
    table = build_table(load_records(two_recipes))
    assert table.rows == [paper.CNN_SVM, paper.CNN_SS, paper.CNNAUG_SVM, "b · cnn", "b · cnnaug"]
    assert table.columns == [FLOWERS, HOLIDAYS, VOC]
    assert table.values[("b · cnnaug", FLOWERS)] == pytest.approx(90.0)


def test_each_row_is_compared_with_the_paper_row_of_its_own_method(two_recipes):
    table = build_table(load_records(two_recipes))
    # b · cnn against CNN-SVM: 80.0 - 74.7, 70.0 - 73.9, 60.0 - 64.2 ("CNN, whole image")
    assert table.diff("b · cnn", FLOWERS) == pytest.approx(5.3)
    assert table.diff("b · cnn", VOC) == pytest.approx(-3.9)
    assert table.diff("b · cnn", HOLIDAYS) == pytest.approx(-4.2)
    # b · cnnaug against CNNaug-SVM: 90.0 - 86.8, 75.0 - 77.2, and 70.0 - 84.3 (the paper's CNNaug-ss)
    assert table.diff("b · cnnaug", FLOWERS) == pytest.approx(3.2)
    assert table.diff("b · cnnaug", VOC) == pytest.approx(-2.2)
    assert table.diff("b · cnnaug", HOLIDAYS) == pytest.approx(-14.3)
    assert table.diff(paper.CNNAUG_SVM, FLOWERS) is None  # the paper rows are the references
    md = to_markdown(table)
    assert "| b · cnn | 80.0 (+5.3) | 60.0 (-4.2) | 70.0 (-3.9) |" in md
    assert "| b · cnnaug | 90.0 (+3.2) | 70.0 (-14.3) | 75.0 (-2.2) |" in md
    assert ("difference to **the paper row of the same method (cnn: paper: OverFeat CNN-SVM; cnnaug: paper: "
            "OverFeat CNNaug-SVM)**") in md
    wide = list(csv.reader(io.StringIO(to_csv(table))))
    assert wide[0][4] == "flowers102 · svm · mean_class_accuracy (%) vs the paper, same method (points)"
    assert wide[-1][:7] == ["b · cnnaug", "90.00", "70.00", "75.00", "+3.20", "-14.30", "-2.20"]


def test_one_baseline_for_every_row_can_still_be_named(two_recipes):
    records = load_records(two_recipes)
    by_cnn_svm = build_table(records, baseline="CNN-SVM")
    assert by_cnn_svm.diff("b · cnnaug", FLOWERS) == pytest.approx(90.0 - 74.7)
    assert by_cnn_svm.diff(paper.CNNAUG_SVM, FLOWERS) == pytest.approx(86.8 - 74.7)
    by_row = build_table(records, baseline="b · cnn")
    assert by_row.diff("b · cnnaug", VOC) == pytest.approx(5.0) and by_row.diff("b · cnn", VOC) is None
    assert "difference to **b · cnn**" in to_markdown(by_row)
    assert build_table(records, baseline=None).diff("b · cnnaug", VOC) is None
    with pytest.raises(CnnbenchError, match=r"baseline 'b' is not a row of this table.*several rows match"):
        build_table(records, baseline="b")


def test_the_long_csv_names_the_recipe_of_every_cell(two_recipes):
    lines = list(csv.DictReader(io.StringIO(to_long_csv(build_table(load_records(two_recipes))))))
    cell = {(ln["backbone"], ln["dataset"]): ln for ln in lines}
    assert cell[("b · cnnaug", "holidays")]["recipe"] == "cnnaug"
    assert cell[("b · cnnaug", "holidays")]["baseline"] == paper.CNNAUG_SVM
    assert cell[("b · cnnaug", "holidays")]["difference"] == "-14.30"
    assert cell[("b · cnn", "voc2007")]["recipe"] == "cnn"
    # the paper rows' cells: the method each number was measured with
    assert cell[(paper.CNN_SVM, "holidays")]["recipe"] == "cnn"
    assert cell[(paper.CNN_SS, "holidays")]["recipe"] == "cnn-ss"
    assert cell[(paper.CNNAUG_SVM, "voc2007")]["recipe"] == "cnnaug"
    assert cell[(paper.CNNAUG_SVM, "holidays")]["recipe"] == "cnnaug-ss"
    assert cell[(paper.CNNAUG_SVM, "holidays")]["reference"] == "paper"


def test_spatial_search_is_compared_with_cnn_ss_and_a_user_recipe_with_cnn_svm(tmp_path):
    _write(tmp_path, "b", "holidays", "cnn", 0.60)
    _write(tmp_path, "b", "holidays", "cnn-ss", 0.75)
    write_results({**_record("b", "holidays", None, 0.50), "recipe": "mine", "recipe_spec": {"paper_row": None}},
                  result_path(tmp_path, "b", "holidays", "mine", "l2"))
    write_results({**_record("b", "holidays", None, 0.80), "recipe": "mine-aug",
                   "recipe_spec": {"paper_row": paper.CNNAUG_SVM}}, result_path(tmp_path, "b", "holidays", "mine-aug", "l2"))
    table = build_table(load_records(tmp_path))
    assert table.rows[3:] == ["b · cnn", "b · cnn-ss", "b · mine", "b · mine-aug"]
    assert table.diff("b · cnn-ss", HOLIDAYS) == pytest.approx(75.0 - 76.9)
    assert table.diff("b · mine", HOLIDAYS) == pytest.approx(50.0 - 64.2)
    assert table.diff("b · mine-aug", HOLIDAYS) == pytest.approx(80.0 - 84.3)


def test_a_result_of_before_recipes_is_a_cnn_row_labelled_by_its_backbone(tmp_path):
    write_results(_record("old", "flowers102", None, 0.80), tmp_path / "old/flowers102/svm.json")  # no recipe folder
    _write(tmp_path, "new", "flowers102", "cnnaug", 0.90)
    table = build_table(load_records(tmp_path))
    assert table.rows[-2:] == ["new · cnnaug", "old"]  # a backbone with only cnn: its name alone
    assert table.diff("old", FLOWERS) == pytest.approx(80.0 - 74.7)
    assert table.diff("new · cnnaug", FLOWERS) == pytest.approx(90.0 - 86.8)
    assert "old,cnn,flowers102 svm mean_class_accuracy" in to_long_csv(table)


def test_two_results_for_one_backbone_data_set_recipe_head_and_layer_are_refused_naming_both(tmp_path):
    a = _write(tmp_path / "run1", "b", "voc2007", "cnnaug", 0.75)
    b = _write(tmp_path / "run2", "b", "voc2007", "cnnaug", 0.70)  # a copied folder, other numbers
    _write(tmp_path / "run2", "b", "voc2007", "cnn", 0.70)  # another recipe: its own cell
    with pytest.raises(CnnbenchError) as e:
        build_table(load_records(tmp_path))
    msg = str(e.value)
    assert f"{a} and {b} are both results of b on voc2007 with svm (recipe cnnaug, layer fc6)" in msg
    assert "\n" not in msg


def test_a_paper_row_that_is_no_paper_row_is_one_line_naming_the_file(tmp_path):
    path, _ = write_results({**_record("b", "voc2007", None, 0.7), "recipe": "mine",
                             "recipe_spec": {"paper_row": "paper: AlexNet"}}, result_path(tmp_path, "b", "voc2007", "mine", "svm"))
    with pytest.raises(CnnbenchError, match=rf"{path}: recipe_spec\['paper_row'\] is text, not a paper row"):
        build_table(load_records(tmp_path))


def test_results_of_one_recipe_naming_two_paper_rows_are_refused_naming_both(tmp_path):
    """A user recipe whose paper_row was changed between two evaluations: its row has no one reference."""
    def mine(dataset, row):
        rec = {**_record("b", dataset, None, 0.7), "recipe": "mine", "recipe_spec": {"paper_row": row}}
        return write_results(rec, result_path(tmp_path, "b", dataset, "mine", CELLS[dataset][0]))[0]

    a, b = mine("flowers102", paper.CNNAUG_SVM), mine("voc2007", None)
    with pytest.raises(CnnbenchError) as e:
        build_table(load_records(tmp_path))
    assert str(e.value) == (f"{a} and {b}: recipe mine is compared with {paper.CNNAUG_SVM} in one and {paper.CNN_SVM} "
                            "in the other; rerun the evaluations of that recipe")


def test_two_rows_that_would_share_a_label_are_refused(tmp_path):
    a = _write(tmp_path, "b", "voc2007", "cnnaug", 0.75)
    _write(tmp_path, "b", "voc2007", "cnn", 0.70)
    c = _write(tmp_path, "b · cnnaug", "voc2007", "cnn", 0.60)  # a backbone named like b's cnnaug row
    with pytest.raises(CnnbenchError, match="both would be the row 'b · cnnaug'; rename one backbone") as e:
        build_table(load_records(tmp_path))
    assert str(e.value).startswith(f"{a} and {c}: ")


def test_the_chart_marks_each_bar_with_the_paper_number_of_its_method(two_recipes, tmp_path):
    table = build_table(load_records(two_recipes))
    bars = {(b.row, b.column): b for b in chart_bars(table)}
    assert len(bars) == 6
    assert (bars[("b · cnn", VOC)].paper_row, bars[("b · cnn", VOC)].paper_value) == (paper.CNN_SVM, 73.9)
    assert (bars[("b · cnnaug", VOC)].paper_row, bars[("b · cnnaug", VOC)].paper_value) == (paper.CNNAUG_SVM, 77.2)
    assert bars[("b · cnnaug", HOLIDAYS)].paper_value == 84.3
    # grouped by data set: the two bars of one column side by side around its position
    assert bars[("b · cnn", FLOWERS)].x == pytest.approx(-0.2) and bars[("b · cnnaug", FLOWERS)].x == pytest.approx(0.2)
    assert bars[("b · cnn", VOC)].x == pytest.approx(1.8)
    png = tmp_path / "c.png"
    render_png(table, png)
    first = png.read_bytes()
    render_png(table, png)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and png.read_bytes() == first  # the same table, the same bytes
    # without the paper's rows, nothing to mark
    assert {b.paper_value for b in chart_bars(build_table(load_records(two_recipes), with_paper=False))} == {None}


def test_a_recipe_the_paper_did_not_publish_for_a_data_set_gets_no_mark_and_no_difference(tmp_path):
    _write(tmp_path, "b", "voc2007", "cnn-ss", 0.70)  # the paper has no CNN-ss on VOC
    table = build_table(load_records(tmp_path))
    [bar] = chart_bars(table)
    assert bar.paper_value is None and table.diff("b · cnn-ss", VOC) is None


def _classification(right: float, n: int = 60) -> Outcomes:
    labels = np.arange(n) % 3
    hits = np.arange(n) < round(right * n)
    return Outcomes([f"img{k:03d}" for k in range(n)], labels=labels, predictions=np.where(hits, labels, (labels + 1) % 3))


def test_rows_of_two_recipes_are_paired_on_the_same_test_images(tmp_path):
    for recipe, right in (("cnn", 0.80), ("cnnaug", 0.90)):
        _write(tmp_path, "b", "flowers102", recipe, right, trials=[{"trial": "default", "mean_class_accuracy": right}],
               outcomes=[("default", _classification(right))])
    table = build_table(load_records(tmp_path), bootstrap=200)
    assert table.best[FLOWERS] == "b · cnnaug"
    res = table.paired[("b · cnn", FLOWERS)]
    assert res.n_items == 60 and res.difference == pytest.approx(-0.1)


def test_fewshot_and_layer_lines_carry_the_recipe_when_a_backbone_has_several():
    def rec(recipe, layer, v, shots=None):
        r = {**_record("b", "flowers102", recipe, v), "layer": layer}
        if shots:
            r["metrics"][f"mean_class_accuracy@{shots}shot"] = v / 2
        return r

    records = [rec("cnn", "fc6", 0.8, 5), rec("cnnaug", "fc6", 0.9, 5), rec("cnn", "fc7", 0.7), rec("cnnaug", "fc7", 0.85)]
    lines = fewshot_curves(records)[("flowers102", "mean_class_accuracy")]
    assert sorted(lines) == ["b · cnn [fc6] · svm", "b · cnnaug [fc6] · svm"]
    assert lines["b · cnnaug [fc6] · svm"][0][:2] == (5, 45.0)
    assert layer_curves(records)[FLOWERS] == {"b · cnn": [("fc6", 80.0), ("fc7", 70.0)],
                                              "b · cnnaug": [("fc6", 90.0), ("fc7", 85.0)]}
    only_cnn = [r for r in records if r["recipe"] == "cnn"]
    assert sorted(layer_curves(only_cnn)[FLOWERS]) == ["b"]


# -- where the outputs go ---------------------------------------------------------------------------------


def test_output_paths_follow_what_the_user_named(tmp_path):
    default = output_paths("reports")
    assert {p.parent.name for p in default.values()} == {"reports"}
    out = output_paths("reports", markdown=tmp_path / "a/t.md", csv=tmp_path / "b/t.csv", png=tmp_path / "c/t.png")
    assert out["long_csv"] == tmp_path / "b/compare_long.csv"
    assert (out["fewshot_md"], out["fewshot_png"], out["layers_png"]) == (
        tmp_path / "c/fewshot.md", tmp_path / "c/fewshot.png", tmp_path / "c/layers.png")
    only_md = output_paths("reports", markdown=tmp_path / "a/t.md")
    assert {p.parent for p in only_md.values()} == {tmp_path / "a"}
    with pytest.raises(CnnbenchError, match=r"--png and the few-shot curves would both be written to .*fewshot\.png"):
        output_paths("reports", png=tmp_path / "fewshot.png")
    with pytest.raises(CnnbenchError, match=r"--markdown and --csv would both be written to"):
        output_paths("reports", markdown=tmp_path / "x", csv=tmp_path / "x")


def _one_line(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    return line


def test_cli_outputs_named_by_the_user_land_only_where_named(two_recipes, tmp_path, monkeypatch):
    _write(two_recipes, "b", "flowers102", "cnn-ss", 0.5,  # few-shot and layer curves too
           metrics={"mean_class_accuracy": 0.5, "mean_class_accuracy@1shot": 0.3})
    write_results({**_record("b", "flowers102", "cnn-ss", 0.4), "layer": "fc7"},
                  result_path(two_recipes / "fc7", "b", "flowers102", "cnn-ss", "svm"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "params.yaml").write_text(f"metrics_dir: {two_recipes}\nreports_dir: {tmp_path / 'reports'}\n"
                                      "compare: {baseline: paper}\n")
    result = CliRunner().invoke(main, ["compare", "--markdown", str(tmp_path / "md/t.md"), "--csv",
                                       str(tmp_path / "csv/t.csv"), "--png", str(tmp_path / "png/t.png")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["compare_long.csv", "t.csv"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["fewshot.md", "fewshot.png", "layers.png", "t.png"]
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"] and not (tmp_path / "reports").exists()
    assert "b · cnnaug" in result.output and "(-14.3)" in result.output
    assert "| b · cnn-ss [fc6] | 50.0 |" in (tmp_path / "md/t.md").read_text()  # no CNN-ss on Flowers: no difference
    # nothing named: everything in reports_dir, as before
    assert CliRunner().invoke(main, ["compare"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "compare.csv", "compare.md", "compare.png", "compare_long.csv", "fewshot.md", "fewshot.png", "layers.png"]


def test_cli_refuses_an_output_that_would_overwrite_a_result(two_recipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = result_path(two_recipes, "b", "voc2007", "cnn", "svm")
    before = target.read_bytes()
    line = _one_line(CliRunner().invoke(main, ["compare", "--metrics", str(two_recipes), "--csv", str(target)]))
    assert f"--csv {target} is a file of the result {target}" in line and target.read_bytes() == before
    assert not (tmp_path / "reports").exists()
