"""The paper preset (paper/): the paper's table as data, run by `dvc repro paper/dvc.yaml`.

The table holds, per data set, exactly the methods the paper reports (cnnbench/paper.py), each a
recipe with its head and the feature set it reads; each feature set is extracted once. The run is
checked on small fixtures in the official layouts of a multi-label set (VOC 2007), a multi-class
set (MIT-67) and a retrieval set (Oxford5k), with the tiny test backbone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnbench import paper, plugins
from cnnbench import params as P
from cnnbench.errors import UserError
from cnnbench.recipes import resolve
from conftest import ROOT, write_image
from test_datasets_paper import _touch_image, _write, oxford_root, voc_root  # noqa: F401 - fixtures
from test_pipeline import DVC, _dvc, _stale
from test_plugin_faults import _install

PRESET = ROOT / "paper"
STAGE = "paper/dvc.yaml:"  # how `dvc status paper/dvc.yaml` names the preset's stages


def _table() -> dict:
    return yaml.safe_load((PRESET / "params.yaml").read_text())


# -- the table ------------------------------------------------------------------------------------------


def test_the_preset_holds_exactly_the_methods_the_paper_reports_for_each_data_set():
    """Every published number has a cell and every cell a published number: no spatial search on
    VOC, no jittering where the paper did not jitter, nothing left out."""
    cells = [(c["dataset"], c["recipe"], c["head"]) for c in _table()["datasets"]]
    published = [(ds, recipe, head) for _, recipe, numbers in paper.PUBLISHED for ds, head, _ in numbers]
    assert sorted(cells) == sorted(published) and len(set(cells)) == len(cells) == 27
    assert {ds for ds, _, _ in cells} == {"voc2007", "mit67", "cub200", "flowers102", "uiuc-attributes",
                                          "h3d-attributes", "oxford5k", "paris6k", "sculptures6k", "holidays",
                                          "ukbench"}
    for ds, _, head in cells:  # a head that cannot score the task would write nothing: DVC's "output missing"
        assert plugins.create("dataset", ds).task in plugins.create("head", head).tasks, (ds, head)
    assert _table()["backbones"] == ["overfeat"]


def test_each_cell_reads_the_feature_set_its_recipe_extracts_and_each_set_is_extracted_once():
    """A cell's `features` is the folder its recipe extracts (Recipe.features_key); feature_sets lists
    each (data set, folder) once, with a recipe that extracts it (two extract stages with one output
    are refused by DVC), and exactly those the cells read."""
    table = _table()
    for cell in table["datasets"]:
        key = resolve(cell["recipe"], table).features_key(cell["dataset"], table["extract"])
        assert cell["features"] == key, cell
    made = [(s["dataset"], s["features"]) for s in table["feature_sets"]]
    assert len(set(made)) == len(made), "a feature set listed twice: two stages with one DVC output"
    for s in table["feature_sets"]:
        assert resolve(s["recipe"], table).features_key(s["dataset"], table["extract"]) == s["features"], s
    assert set(made) == {(c["dataset"], c["features"]) for c in table["datasets"]}
    # recipes that extract alike share one file: CNN-ss and CNNaug-ss search the same sub-patches on Oxford
    assert len(made) < len(table["datasets"])


def test_the_command_line_reads_the_preset_params_where_dvc_runs_it():
    """The stages run in paper/ and cnnbench reads paper/params.yaml there: it passes the same
    checks as any params.yaml, and every name a stage depends on has its options entry (DVC stops
    on a params dependency the file lacks)."""
    table = P.load(PRESET / "params.yaml", required=True)
    assert table["data_root"] == "../data" and table["features_dir"] == "features"
    for section, names in (("backbone_options", table["backbones"]),
                           ("dataset_options", [c["dataset"] for c in table["datasets"]]),
                           ("head_options", [c["head"] for c in table["datasets"]])):
        assert set(names) <= set(table[section]), section


def _cut(table: dict, **change) -> dict:
    """The preset's table with one entry changed: ``key=(index, {field: value})``; value None deletes."""
    for key, (i, fields) in change.items():
        if fields is None:
            del table[key][i]
        else:
            table[key][i] = {**table[key][i], **fields}
    return table


@pytest.mark.parametrize("change, says", [
    ({"datasets": (1, {"features": "jitter"})}, "datasets[2]: features: 'jitter' is not what recipe cnnaug extracts "
                                                 "from voc2007; write features: jitter16"),
    ({"feature_sets": (1, {"features": "none"})}, "feature_sets[2]: features: 'none' is not what recipe cnnaug"),
    ({"feature_sets": (12, {"recipe": "cnnaug-ss", "features": "spatial"})},  # CNN-ss's sub-patches, again
     "feature_sets[14]: oxford5k spatial is extracted by entry 13 already"),
    ({"feature_sets": (1, None)}, "datasets[2]: no entry of feature_sets extracts jitter16 from voc2007; add "
                                  "{dataset: voc2007, features: jitter16, recipe: cnnaug}"),
    ({"datasets": (0, {"recipe": "cnnagu"})}, "datasets[1]: recipe 'cnnagu': no such recipe (did you mean 'cnnaug'?)"),
    ({"datasets": (0, {"head": None})}, "datasets[1]: head missing or not a name"),
])
def test_a_table_entry_that_does_not_hold_together_is_one_line_naming_it_before_any_work(tmp_path, change, says):
    """What DVC would only find after an extraction (an output that never appears, two stages with
    one output, a dependency nobody makes) is refused as the file is read, naming the entry and the fix."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_cut(_table(), **change), sort_keys=False))
    with pytest.raises(UserError) as err:
        P.load(path, required=True)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_preset_and_the_root_pipeline_never_declare_one_output():
    """DVC refuses a repository where two dvc.yaml files declare one output (both pipelines stop):
    the preset's features, metrics and reports folders lie apart from the root pipeline's."""
    table, root = _table(), yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in ("features_dir", "metrics_dir", "reports_dir"):
        mine, theirs = (PRESET / table[key]).resolve(), (ROOT / root[key]).resolve()
        assert mine != theirs and mine not in theirs.parents and theirs not in mine.parents, key


def test_each_preset_stage_depends_on_the_code_the_root_pipelines_stage_runs():
    """The preset's stages run the same commands as the root dvc.yaml's: the same code dependencies
    (seen from paper/), so a file added to one list and not the other is caught here."""
    def code(path, prefix=""):
        stages = yaml.safe_load(path.read_text())["stages"]
        return {name: sorted(d.removeprefix(prefix).replace("item.cell.", "item.") for d in stage["deps"]
                             if d.startswith((f"{prefix}cnnbench/", f"{prefix}plugins/")))
                for name, stage in stages.items()}

    assert code(PRESET / "dvc.yaml", "../") == code(ROOT / "dvc.yaml")


def test_the_data_set_docs_list_the_methods_the_preset_runs_on_each():
    """docs/datasets.md's preset table says, per data set, the recipe / head -> feature set of each cell."""
    text = (ROOT / "docs" / "datasets.md").read_text().split("### The methods the paper preset runs")[1]
    documented = set()
    for line in text.split("\n## ")[0].splitlines():
        if line.startswith("| `"):
            name, methods = line.split("|")[1:3]
            for m in re.finditer(r"`([\w-]+)` / (\w+) → `(\w+)`", methods):
                documented.add((name.strip(" `"), *m.groups()))
    assert documented == {(c["dataset"], c["recipe"], c["head"], c["features"]) for c in _table()["datasets"]}


# -- dvc repro on official layouts ---------------------------------------------------------------------


TINY_PLUGIN = """
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import tiny_backbone
    from cnnbench import hookimpl

    @hookimpl
    def register_backbones(register):
        register("tiny", lambda **kw: tiny_backbone())
"""

# the table cut to three data sets: two recipes on VOC, one on MIT-67, two sharing Oxford's sub-patches
CELLS = [
    {"dataset": "voc2007", "recipe": "cnn", "head": "svm", "features": "none"},
    {"dataset": "voc2007", "recipe": "cnnaug", "head": "svm", "features": "jitter16"},
    {"dataset": "mit67", "recipe": "cnn", "head": "svm", "features": "none"},
    {"dataset": "oxford5k", "recipe": "cnn-ss", "head": "l2", "features": "spatial"},
    {"dataset": "oxford5k", "recipe": "cnnaug-ss", "head": "l2", "features": "spatial"},
]


def _mit67(data_root) -> None:
    """MIT-67's layout: Images/<class>/*, the official TrainImages.txt / TestImages.txt."""
    train, test = [], []
    for c, cls in enumerate(("bakery", "kitchen", "airport_inside")):
        for k in range(3):
            _touch_image(data_root / "mit67" / "Images" / cls / f"{k}.jpg", 10 * c + k)
            (train if k else test).append(f"{cls}/{k}.jpg")
    _write(data_root / "mit67" / "TrainImages.txt", "\n".join(train) + "\n")
    _write(data_root / "mit67" / "TestImages.txt", "\n".join(test) + "\n")


def _repo(tmp_path, monkeypatch, data_root, cells) -> tuple:
    """A DVC repository with the code (the stages depend on it), paper/dvc.yaml and paper/params.yaml
    cut to ``cells`` on the tiny backbone; returns (repo, the table written)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "cnnbench", repo / "cnnbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", repo / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    (repo / "paper").mkdir()
    shutil.copy(PRESET / "dvc.yaml", repo / "paper" / "dvc.yaml")
    table = _table()
    table.update(data_root=str(data_root), backbones=["tiny"], datasets=cells,
                 feature_sets=[s for s in table["feature_sets"]
                               if (s["dataset"], s["features"]) in {(c["dataset"], c["features"]) for c in cells}],
                 backbone_options={"tiny": {}})
    table["extract"].update(runtime="eager", workers=1, batch_size=16)
    table["head_options"]["svm"].update(C=1.0, cv_folds=2)  # a fixed C: three training images per class
    table["compare"]["bootstrap"] = 100
    _write_table(repo, table)
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "tiny-backbone", "tiny_backbone_plugin", TINY_PLUGIN.format(tests=str(ROOT / "tests")), "tiny")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc("init", "-q", cwd=repo)
    _dvc("config", "core.analytics", "false", cwd=repo)
    return repo, table


def _write_table(repo, table) -> None:
    (repo / "paper" / "params.yaml").write_text(yaml.safe_dump(table, sort_keys=False))


def _ran(out: str) -> list[str]:
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


def _folders(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _evaluations(table, **match) -> list[str]:
    """The evaluate stages of the cells that match (DVC names a dict item by its index)."""
    return [f"{STAGE}evaluate@tiny-cell{i}" for i, c in enumerate(table["datasets"])
            if all(c[k] == v for k, v in match.items())]


@pytest.mark.slow
def test_dvc_repro_runs_the_table_then_only_what_an_option_changes(tmp_path, monkeypatch, voc_root, oxford_root):
    """Five cells on three official layouts: a result folder per recipe, a compare row per
    (backbone, recipe), one extraction per feature set; a second run does nothing; an option
    reruns only the stages that use it."""
    for name in ("all_souls_000013", "radcliffe_camera_000519"):  # full-size query images, so the boxes fit
        write_image(oxford_root / "oxford5k" / "jpg" / f"{name}.jpg", 1, size=(700, 960))
    _mit67(tmp_path)
    repo, table = _repo(tmp_path, monkeypatch, tmp_path, CELLS)

    first = _dvc("repro", "paper/dvc.yaml", cwd=repo)
    extracted = [s for s in _ran(first) if "extract@" in s]
    assert len(extracted) == 4, "one extraction per feature set: Oxford's sub-patches serve two recipes"
    assert len(_ran(first)) == 4 + len(CELLS) + 1
    metrics = repo / "paper" / "metrics" / "tiny"
    for cell in CELLS:  # a result per cell, in its recipe's folder, naming its recipe
        result = metrics / cell["dataset"] / cell["recipe"] / f"{cell['head']}.json"
        record = json.loads(result.with_suffix(".run.json").read_text())
        assert record["recipe"] == cell["recipe"] and record["recipe_spec"]["name"] == cell["recipe"]
    assert _folders(metrics / "voc2007") == ["cnn", "cnnaug"]
    assert _folders(repo / "paper" / "features" / "tiny" / "oxford5k") == ["spatial"]
    table_md = (repo / "paper" / "reports" / "compare.md").read_text()
    assert all(f"| tiny · {c['recipe']} |" in table_md for c in CELLS), table_md

    assert "Running stage" not in _dvc("repro", "paper/dvc.yaml", cwd=repo)
    assert _stale(repo) == []

    # one data set's options: its extraction and its evaluation are stale, nothing else
    table["dataset_options"]["mit67"] = {"path": str(tmp_path / "mit67")}
    _write_table(repo, table)
    mit67_set = next(i for i, s in enumerate(table["feature_sets"]) if s["dataset"] == "mit67")
    assert _stale(repo) == sorted([f"{STAGE}extract@tiny-set{mit67_set}", *_evaluations(table, dataset="mit67")])
    table["dataset_options"]["mit67"] = {}
    _write_table(repo, table)

    # an SVM option: exactly the svm cells rerun (then compare); the l2 cells and every extraction stay
    table["head_options"]["svm"]["C"] = 2.0
    _write_table(repo, table)
    assert _stale(repo) == sorted(_evaluations(table, head="svm"))
    assert _ran(_dvc("repro", "paper/dvc.yaml", cwd=repo)) == sorted([*_evaluations(table, head="svm"),
                                                                      f"{STAGE}compare"])
    assert _stale(repo) == []


@pytest.mark.slow
def test_a_data_set_not_on_disk_stops_the_run_in_one_line_with_the_download_command(tmp_path, monkeypatch):
    """The table still lists MIT-67, the data root does not hold it: the run stops at its extraction
    and one line names the data set, its folder and how to get it."""
    repo, _ = _repo(tmp_path, monkeypatch, tmp_path / "data", [CELLS[2]])
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run([*DVC, "repro", "paper/dvc.yaml"], cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    folder = str(tmp_path / "data" / "mit67")
    lines = [line for line in out.splitlines() if "'mit67'" in line and folder in line
             and "cnnbench datasets download mit67" in line]
    assert lines, out
    assert "Traceback" not in out
