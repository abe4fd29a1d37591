"""``cnnbench show``: each query and its first results as the l2 head ranked them, framed green
(positive), grey (junk) and red (negative). End to end on a tiny revisited-Oxford set written in
revisitop's format (extract, evaluate with l2, then the command), on digits (multi-class: same class
is positive), and the one-line errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny_backbone, write_image
from PIL import Image

from cnnbench import outcomes as OUT
from cnnbench import plugins
from cnnbench import show as S
from cnnbench.evaluate import evaluate, read_results, write_results
from cnnbench.settings import ExtractSettings

DB = [f"oxford_{k:06d}" for k in range(12)]
QUERIES = ["all_souls_000013", "radcliffe_camera_000519"]
GND = [{"bbx": [4.0, 3.0, 50.0, 40.0], "easy": [1, 4], "hard": [2, 7], "junk": [0, 5]},
       {"bbx": [10.0, 8.0, 70.0, 52.0], "easy": [9, 3], "hard": [6], "junk": [11]}]


def write_revisitop(data_root: Path) -> Path:
    folder = data_root / "roxford5k"
    for k, image in enumerate(DB):
        write_image(folder / "jpg" / f"{image}.jpg", seed=k, size=(48, 36))
    for k, image in enumerate(QUERIES):
        write_image(folder / "jpg" / f"{image}.jpg", seed=100 + k, size=(80, 60))
    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": DB, "qimlist": QUERIES, "gnd": GND}, f, protocol=2)
    return data_root


@pytest.fixture
def evaluated(tmp_path):
    """data/, features/tiny/roxford5k/, metrics/tiny/roxford5k/l2.json (+ outcomes) under tmp_path."""
    from cnnbench.extract import extract_split

    ds = plugins.create("dataset", "roxford5k", data_root=write_revisitop(tmp_path / "data"))
    features = tmp_path / "features/tiny/roxford5k"
    for split in ds.splits:
        extract_split(tiny_backbone(), ds, split, features / f"{split}.h5",
                      ExtractSettings(workers=1, runtime="eager"), progress=False)
    record = evaluate(features, ds, plugins.create("head", "l2"), "l2")
    write_results(record, tmp_path / "metrics/tiny/roxford5k/l2.json")
    return tmp_path


def _rewrite_outcomes(metrics_path: Path, trials) -> None:
    """The result committed again with other outcomes (as evaluate writes a unit: run record last)."""
    write_results({**read_results(metrics_path), "outcomes": trials}, metrics_path)


def _show_args(root: Path, *extra: str, dataset: str = "roxford5k") -> list[str]:
    return ["show", "-b", "tiny", "-d", dataset, "--data-root", str(root / "data"), "--metrics-dir",
            str(root / "metrics"), "--features-dir", str(root / "features/tiny" / dataset), "--out-dir",
            str(root / "out"), *extra]


def _pixel(png: Image.Image, k: int, block: int = 0) -> tuple:
    """The colour of result k's frame (-1: the query) in row ``block`` of a PNG with a heading."""
    x1, y1, _, _ = S.frame_box(k)
    _, height = S.row_size(10)
    return png.getpixel((x1 + 2, S.TITLE_H + block * height + y1 + 2))[:3]


# -- the pure parts ------------------------------------------------------------------------------------


def test_revisited_entries_are_judged_as_in_medium_and_the_rest_as_given():
    positives, junk = S.relevance({"easy": ["a"], "hard": ["b"], "junk": ["c"], "positives": ["a", "b"]})
    assert (positives, junk) == ({"a", "b"}, {"c"})
    assert S.verdicts(["b", "c", "d", "a"], positives, junk) == ["positive", "junk", "negative", "positive"]
    assert S.frame_colours(["b", "c", "d"], positives, junk) == [S.COLOURS["positive"], S.COLOURS["junk"],
                                                                S.COLOURS["negative"]]
    assert S.relevance({"positives": ["x"], "junk": []}) == ({"x"}, set())
    assert S.relevance(None) is None and S.verdicts(["a"], None) == ["unknown"]


def test_query_ids_become_safe_distinct_file_names():
    assert S.safe_name("all_souls_000013") == "all_souls_000013"
    for bad in ("../../etc/passwd", "a/b", ".hidden", "", "a b"):
        name = S.safe_name(bad)
        assert "/" not in name and not name.startswith(".") and name not in ("", "..")
    assert S.safe_name("a/b") != S.safe_name("a_b")


def test_a_missing_image_is_a_grey_placeholder():
    thumb = S.thumbnail(None)
    assert thumb.shape == (S.THUMB, S.THUMB, 3) and tuple(thumb[0, 0]) == S.PLACEHOLDER
    assert (thumb != S.PLACEHOLDER).any()  # the word "missing"
    digit = S.thumbnail(np.arange(64, dtype=np.uint8).reshape(8, 8, 1).repeat(3, axis=2))
    assert digit.shape == (S.THUMB, S.THUMB, 3)


def test_ids_are_drawn_as_text_not_parsed_as_maths(tmp_path):
    row = S.Row("q$^$1", None, [S.Result("r$^$2", "junk", None)], float("nan"), "q$^$1 · AP n/a")  # bad TeX
    png = S.render([row], tmp_path / "x.png")
    assert Image.open(png).size == (S.row_size(1)[0], S.row_size(1)[1])
    assert _pixel_at(png, 0) == S.COLOURS["junk"]


def _pixel_at(png: Path, k: int) -> tuple:
    x1, y1, _, _ = S.frame_box(k)
    return Image.open(png).getpixel((x1 + 2, y1 + 2))[:3]


# -- end to end ----------------------------------------------------------------------------------------


def test_show_draws_each_query_with_its_results_framed_by_relevance(evaluated):
    root = evaluated
    proc = run_cli(*_show_args(root), cwd=root)
    assert "wrote 2 PNGs" in proc.stdout
    [(_, out)] = OUT.read(root / "metrics/tiny/roxford5k/l2.outcomes.json")
    width, height = S.row_size(10)
    for q, qid in enumerate(QUERIES):
        png = Image.open(root / "out" / f"{qid}.png")
        assert png.format == "PNG" and png.size == (width, S.TITLE_H + height)
        entry = GND[q]
        want = S.verdicts(out.ranking[q], {DB[i] for i in entry["easy"] + entry["hard"]},
                          {DB[i] for i in entry["junk"]})
        assert {"positive", "negative"} <= set(want)  # the fixture has both in every top 10
        for k, verdict in enumerate(want):
            assert _pixel(png, k) == S.COLOURS[verdict], (qid, k, verdict)
        assert _pixel(png, -1) == S.COLOURS["query"]
        # the query thumbnail is the box, not the whole photo: 46x37 fitted into the square
        x1, y1, x2, y2 = S.frame_box(-1)
        inside = np.asarray(png)[S.TITLE_H + y1 + S.FRAME:S.TITLE_H + y2 - S.FRAME,
                                 x1 + S.FRAME:x2 - S.FRAME, :3]
        box = GND[q]["bbx"]
        aspect = (box[2] - box[0]) / (box[3] - box[1])
        rows_with_photo = int((inside != 255).any(axis=(1, 2)).sum())
        assert rows_with_photo == pytest.approx(S.THUMB / aspect, abs=2)
    # --query picks, --sheet stacks, and the same inputs give the same bytes
    first = (root / "out" / f"{QUERIES[1]}.png").read_bytes()
    run_cli(*_show_args(root, "--query", QUERIES[1]), cwd=root)
    assert (root / "out" / f"{QUERIES[1]}.png").read_bytes() == first
    run_cli(*_show_args(root, "--sheet", "--worst", "2"), cwd=root)
    sheet = Image.open(root / "out/sheet.png")
    assert sheet.size == (width, S.TITLE_H + 2 * height)


def test_defaults_come_from_params_and_a_result_outside_the_data_set_is_a_placeholder(evaluated, tmp_path):
    root = evaluated
    (root / "params.yaml").write_text(f"data_root: {root / 'data'}\n")
    run_cli("show", "-b", "tiny", "-d", "roxford5k", "--queries", "1", cwd=root)
    assert sorted(p.name for p in (root / "reports/show/tiny/roxford5k/cnn").iterdir()) == [f"{QUERIES[0]}.png"]
    # a ranking naming an image the data set does not have (a distractor): drawn as "missing"
    path = root / "metrics/tiny/roxford5k/l2.outcomes.json"
    [(name, out)] = OUT.read(path)
    out.ranking[0][0] = "distractor/../000001"
    _rewrite_outcomes(root / "metrics/tiny/roxford5k/l2.json", [(name, out)])
    ds = plugins.create("dataset", "roxford5k", data_root=root / "data")
    [png] = S.show(ds, "tiny", root / "metrics", root / "features/tiny/roxford5k", root / "again",
                   query_ids=[QUERIES[0]])
    assert _pixel(Image.open(png), 0) == S.COLOURS["negative"]
    x1, y1, _, _ = S.frame_box(0)
    assert Image.open(png).getpixel((x1 + S.FRAME + 1, S.TITLE_H + y1 + S.FRAME + 1))[:3] == S.PLACEHOLDER


def test_digits_same_class_is_positive(tiny_digits, tmp_path):
    ds = plugins.create("dataset", "digits")
    record = evaluate(tiny_digits, ds, plugins.create("head", "l2"), "l2")
    write_results(record, tmp_path / "metrics/tiny/digits/l2.json")
    run_cli(*_show_args(tmp_path, "--queries", "3", "--sheet", dataset="digits"), cwd=tmp_path)
    [(_, out)] = OUT.read(tmp_path / "metrics/tiny/digits/l2.outcomes.json")
    labels = dict(zip(out.ids, out.labels.tolist()))
    sheet = Image.open(tmp_path / "out/sheet.png")
    for q in range(3):
        for k, rid in enumerate(out.ranking[q]):
            want = "positive" if labels[rid] == labels[out.ids[q]] else "negative"
            assert _pixel(sheet, k, block=q) == S.COLOURS[want]
    err = _fails(tmp_path, "--sheet", dataset="digits")  # 899 rows would pass what Agg can draw
    assert f"--sheet: {len(out.ids)} queries are too many for one picture" in err and "--queries N" in err


# -- errors: one line, naming what to do ---------------------------------------------------------------


def _fails(root: Path, *args: str, dataset: str = "roxford5k") -> str:
    proc = run_cli(*_show_args(root, *args, dataset=dataset), cwd=root, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_without_outcomes_it_says_which_evaluate_to_run(tmp_path):
    err = _fails(tmp_path)
    assert "no l2 outcomes at" in err and "run `cnnbench evaluate -b tiny -d roxford5k --head l2` first" in err
    assert len(err.strip().splitlines()) == 1


def test_outcomes_without_rankings_unknown_queries_and_missing_images(evaluated):
    root = evaluated
    err = _fails(root, "--query", "nope")
    assert "--query 'nope': not a query of" in err and QUERIES[0] in err and len(err.strip().splitlines()) == 1
    path = root / "metrics/tiny/roxford5k/l2.outcomes.json"
    [(name, out)] = OUT.read(path)
    out.ranking = None
    _rewrite_outcomes(root / "metrics/tiny/roxford5k/l2.json", [(name, out)])
    err = _fails(root)
    assert "has no rankings (written by an older cnnbench); rerun `cnnbench evaluate" in err
    assert len(err.strip().splitlines()) == 1
    [(name, out)] = OUT.read(path)
    write_results(evaluate(root / "features/tiny/roxford5k", plugins.create("dataset", "roxford5k",
                  data_root=root / "data"), plugins.create("head", "l2"), "l2"), root / "metrics/tiny/roxford5k/l2.json")
    (root / "data/roxford5k/jpg" / f"{DB[3]}.jpg").unlink()
    err = _fails(root)
    assert "roxford5k" in err and DB[3] in err


# -- recipes: which result is drawn ----------------------------------------------------------------------


def _as_recipe(root: Path, recipe: str, reverse: bool = False) -> Path:
    """The fixture's result (old layout) written again as ``recipe``'s, in the layout with the recipe
    folder; ``reverse``: each ranking reversed, so the pictures tell the two results apart."""
    from cnnbench.evaluate import result_path

    old = root / "metrics/tiny/roxford5k/l2.json"
    [(name, out)] = OUT.read(OUT.path_for(old))
    if reverse:
        out.ranking = [list(reversed(r)) for r in out.ranking]
    path = result_path(root / "metrics", "tiny", "roxford5k", recipe, "l2")
    write_results({**read_results(old), "recipe": recipe, "outcomes": [(name, out)]}, path)
    return path


def test_recipe_picks_its_result_folder_and_its_pictures_go_to_a_folder_of_their_own(evaluated):
    root = evaluated
    path = _as_recipe(root, "cnn-ss", reverse=True)
    (root / "params.yaml").write_text(f"data_root: {root / 'data'}\n")
    proc = run_cli("show", "-b", "tiny", "-d", "roxford5k", "--recipe", "cnn-ss", "--query", QUERIES[0], cwd=root)
    png = root / "reports/show/tiny/roxford5k/cnn-ss" / f"{QUERIES[0]}.png"
    assert str(png.relative_to(root)) in proc.stdout and not (root / "reports/show/tiny/roxford5k/cnn").exists()
    [(_, out)] = OUT.read(OUT.path_for(path))
    entry = GND[0]
    want = S.verdicts(out.ranking[0], {DB[i] for i in entry["easy"] + entry["hard"]}, {DB[i] for i in entry["junk"]})
    assert [_pixel(Image.open(png), k) for k in range(len(want))] == [S.COLOURS[v] for v in want]
    # the default recipe still reads the result written before recipes
    run_cli("show", "-b", "tiny", "-d", "roxford5k", "--query", QUERIES[0], cwd=root)
    assert (root / "reports/show/tiny/roxford5k/cnn" / f"{QUERIES[0]}.png").read_bytes() != png.read_bytes()


def test_a_cnn_result_in_both_layouts_is_refused_naming_both(evaluated):
    root = evaluated
    new = _as_recipe(root, "cnn")
    err = _fails(root)
    assert f"{new} and {root / 'metrics/tiny/roxford5k/l2.json'} are both results of tiny on roxford5k" in err
    assert len(err.strip().splitlines()) == 1


def test_a_result_in_another_recipes_folder_or_an_unknown_recipe_is_one_line(evaluated):
    root = evaluated
    path = _as_recipe(root, "cnnaug")
    target = path.parent.parent / "cnn-ss"
    path.parent.rename(target)  # cnnaug's files where cnn-ss's belong
    err = _fails(root, "--recipe", "cnn-ss")
    assert "holds recipe 'cnnaug', not recipe 'cnn-ss' as its folder says" in err
    assert "rerun `cnnbench evaluate -b tiny -d roxford5k --recipe cnn-ss --head l2`" in err
    err = _fails(root, "--recipe", "cnn-sss")
    assert "recipe 'cnn-sss': no such recipe (did you mean 'cnn-ss'?)" in err and len(err.strip().splitlines()) == 1
    err = _fails(root, "--recipe", "cnnaug-ss")
    assert "no l2 outcomes at" in err and "cnnaug-ss/l2.outcomes.json" in err and "--recipe cnnaug-ss --head l2" in err
