"""compare's few-shot curve: the primary metric against shots, one line per backbone and head."""

from __future__ import annotations

from cnnbench.compare import fewshot_curves, fewshot_markdown, render_fewshot_png


def _record(backbone, head, metrics):
    return {"backbone": backbone, "dataset": "flowers17", "head": head, "primary_metric": "mean_class_accuracy",
            "metrics": metrics}


def test_curves_take_the_primary_metric_per_shot_with_its_spread(tmp_path):
    records = [
        _record("effnet-lite0", "logreg", {"mean_class_accuracy": 0.95, "mean_class_accuracy@1shot": 0.50,
                                           "mean_class_accuracy@1shot_std": 0.04, "mean_class_accuracy@5shot": 0.80,
                                           "mean_class_accuracy@5shot_std": 0.02, "accuracy@5shot": 0.99}),
        _record("effnet-lite0", "svm", {"mean_class_accuracy": 0.94}),  # no few-shot results: no line
    ]
    curves = fewshot_curves(records)
    assert curves == {("flowers17", "mean_class_accuracy"): {"effnet-lite0 · logreg": [(1, 50.0, 4.0, None, None),
                                                                                        (5, 80.0, 2.0, None, None)]}}
    md = fewshot_markdown(curves)
    assert "| effnet-lite0 · logreg | 50.0 ± 4.0 | 80.0 ± 2.0 |" in md and "1-shot" in md and "svm" not in md
    render_fewshot_png(curves, tmp_path / "fewshot.png")
    assert (tmp_path / "fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_the_draws_in_the_run_record_each_point_gets_a_t_interval(tmp_path):
    # 1-shot draws 0.4, 0.5, 0.6: mean 0.5, s = 0.1, t(0.975, 2) = 4.3027 -> 50.0 ± 24.8 points
    rec = _record("b", "logreg", {"mean_class_accuracy": 0.9, "mean_class_accuracy@1shot": 0.5,
                                  "mean_class_accuracy@1shot_std": 0.0816})
    rec["fewshot"] = {"draws": [{"shots": 1, "draw": t, "mean_class_accuracy": v} for t, v in enumerate((0.4, 0.5, 0.6))]}
    [(k, mean, std, low, high)] = fewshot_curves([rec])[("flowers17", "mean_class_accuracy")]["b · logreg"]
    assert (k, mean) == (1, 50.0) and abs(low - 25.16) < 0.01 and abs(high - 74.84) < 0.01
    md = fewshot_markdown(fewshot_curves([rec]))
    assert "| b · logreg | 50.0 [25.2, 74.8] |" in md and "t over the seeded draws" in md
    render_fewshot_png(fewshot_curves([rec]), tmp_path / "f.png")


def test_no_fewshot_results_no_curves():
    assert fewshot_curves([_record("a", "svm", {"mean_class_accuracy": 0.9})]) == {}


def test_several_layers_of_one_backbone_give_a_curve_in_layer_order(tmp_path):
    from cnnbench.compare import layer_curves, render_layers_png

    def rec(backbone, layer, v):
        return {"backbone": backbone, "layer": layer, "dataset": "voc2007", "head": "svm", "primary_metric": "mAP",
                "metrics": {"mAP": v}}

    records = [rec("vgg", "blocks.10", 0.70), rec("vgg", "blocks.2", 0.40), rec("vgg", "fc6", 0.77),
               rec("effnet", "pre_logits", 0.80)]  # one layer only: no curve for it
    curves = layer_curves(records)
    assert curves == {("voc2007", "svm", "mAP"): {"vgg": [("blocks.2", 40.0), ("blocks.10", 70.0), ("fc6", 77.0)]}}
    render_layers_png(curves, tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 1000
