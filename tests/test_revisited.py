"""The revisited Oxford and Paris protocol (Radenović et al., CVPR 2018): ``roxford5k`` / ``rparis6k``
read revisitop's official layout (the ground-truth pickle safely), crop every query to its box and
keep queries out of the database; the l2 head scores Easy, Medium and Hard exactly as revisitop's
``compute_map``. Fixtures are written here in the official format: a tiny ``gnd_*.pkl`` made with
``pickle.dump`` of plain lists, and small JPEGs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from cnnbench import plugins, store
from cnnbench.compare import build_table, load_records
from cnnbench.dataset import Item
from cnnbench.decode import decode_batch
from cnnbench.errors import MissingDataError, UserError
from cnnbench.evaluate import evaluate, write_results
from cnnbench.head import FeatureSet
from cnnbench.metrics import revisited_scores, trapezoid_average_precision
from cnnbench.settings import ExtractSettings

DB = [f"oxford_{k:06d}" for k in range(10)]
QUERIES = ["all_souls_000013", "radcliffe_camera_000519"]
BOXES = [[5.4, 3.6, 50.2, 41.5], [10.0, 8.0, 70.0, 52.0]]
# indices into DB, as the official file stores them
GND = [{"bbx": BOXES[0], "easy": [1, 4], "hard": [2, 7], "junk": [0, 5]},
       {"bbx": BOXES[1], "easy": [9, 3], "hard": [6], "junk": []}]


def write_revisitop(data_root: Path, name: str = "roxford5k", gnd=None, *, nested: bool = False) -> Path:
    """``<data_root>/<name>/jpg/*.jpg`` and ``gnd_<name>.pkl`` (protocol 2, plain lists) as revisitop has them."""
    folder = data_root / name
    jpg = folder / "jpg" / ("paris/landmark" if nested else "")
    for k, image in enumerate(DB):
        write_image(jpg / f"{image}.jpg", seed=k, size=(48, 36))
    for k, image in enumerate(QUERIES):
        write_image(jpg / f"{image}.jpg", seed=100 + k, size=(80, 60))
    data = {"imlist": list(DB), "qimlist": list(QUERIES), "gnd": GND if gnd is None else gnd}
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(data, f, protocol=2)
    return data_root


@pytest.fixture
def rox(tmp_path):
    return plugins.create("dataset", "roxford5k", data_root=write_revisitop(tmp_path / "data"))


# -- the data sets -------------------------------------------------------------------------------------


def test_database_is_the_imlist_and_queries_the_qimlist_with_their_boxes(rox):
    assert rox.task == "retrieval" and rox.metric == "mAP_medium" and rox.splits == ("database", "queries")
    database, queries = rox.items("database"), rox.items("queries")
    assert [i.id for i in database] == DB and all(i.box is None for i in database)
    assert [i.id for i in queries] == QUERIES
    assert [list(i.box) for i in queries] == BOXES
    # queries are not database images: neither their ids nor their files are searched
    assert not {i.id for i in queries} & {i.id for i in database}
    assert not {i.image for i in queries} & {i.image for i in database}
    gt = rox.extras("queries")["ground_truth"]
    assert gt["all_souls_000013"] == {"easy": [DB[1], DB[4]], "hard": [DB[2], DB[7]], "junk": [DB[0], DB[5]],
                                      "positives": [DB[1], DB[4], DB[2], DB[7]]}  # ids, not indices
    assert rox.extras("queries")["query_boxes"]["radcliffe_camera_000519"] == BOXES[1]
    assert rox.extras("database") == {}


def test_rparis6k_reads_its_own_file_and_finds_images_left_in_landmark_folders(tmp_path):
    ds = plugins.create("dataset", "rparis6k", data_root=write_revisitop(tmp_path, "rparis6k", nested=True))
    assert [i.id for i in ds.items("database")] == DB
    assert Path(ds.items("queries")[0].image) == tmp_path / "rparis6k/jpg/paris/landmark/all_souls_000013.jpg"


def test_missing_files_name_the_layout_and_where_to_get_them(tmp_path):
    ds = plugins.create("dataset", "roxford5k", data_root=tmp_path)
    with pytest.raises(MissingDataError) as err:
        ds.items("database")
    msg = str(err.value)
    assert "gnd_roxford5k.pkl" in msg and "oxbuild_images-v1.tgz" in msg  # the face-blurred images revisitop uses since 2022
    assert "http://cmp.felk.cvut.cz/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl" in msg
    write_revisitop(tmp_path)
    (tmp_path / "roxford5k/jpg" / f"{DB[3]}.jpg").unlink()
    with pytest.raises(MissingDataError, match=rf"1 of the 12 images that gnd_roxford5k.pkl lists are not under .*{DB[3]}"):
        plugins.create("dataset", "roxford5k", data_root=tmp_path).items("queries")
    assert "rparis6k/gnd_rparis6k.pkl" in plugins.create("dataset", "rparis6k").url


def test_the_crop_is_part_of_the_protocol_and_recorded():
    for name in ("roxford5k", "rparis6k"):
        ds = plugins.create("dataset", name)
        assert ds.box_scale == 1.0 and ds.options()["query_crop"] == "bbx"


# -- the ground-truth pickle is read safely ------------------------------------------------------------


class _Payload:
    """What a hostile pickle does: call a function while it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Instance:
    pass


@pytest.mark.parametrize("kind", ["os.system", "instance", "numpy"])
def test_a_pickle_that_names_any_global_is_refused_in_one_line_without_running_it(tmp_path, kind):
    write_revisitop(tmp_path)
    path = tmp_path / "roxford5k/gnd_roxford5k.pkl"
    marker = tmp_path / "ran"
    data = {"imlist": list(DB), "qimlist": list(QUERIES), "gnd": GND}
    data["gnd"] = [dict(GND[0]), GND[1]]
    data["gnd"][0]["easy"] = {"os.system": _Payload(marker), "instance": _Instance(),
                              "numpy": np.array([1, 4])}[kind]
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(UserError) as err:
        plugins.create("dataset", "roxford5k", data_root=tmp_path).items("queries")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "is not a plain revisitop ground-truth pickle" in msg
    assert not marker.exists()


@pytest.mark.parametrize("change, says", [
    (lambda d: d.pop("qimlist"), r"lacks \['qimlist'\]"),
    (lambda d: d["gnd"][1].pop("hard"), r"gnd\[1\] \(query 'radcliffe_camera_000519'\) lacks \['hard'\]"),
    (lambda d: d["gnd"][0].update(junk=[0, 10]), r"junk index 10 is outside imlist \(0\.\.9\)"),
    (lambda d: d["gnd"][0].update(easy=[-1]), r"easy index -1 is outside imlist"),
    (lambda d: d["gnd"][0].update(easy=[1.0]), "easy must be a list of integer indices"),
    (lambda d: d["gnd"][0].update(bbx=[1, 2, 3]), r"bbx must be four numbers"),
    (lambda d: d["gnd"][0].update(bbx=[1, 2, "3", 4]), r"bbx must be four numbers"),
    (lambda d: d["gnd"].pop(), r"one dict per query \(2 in qimlist\)"),
    (lambda d: d["imlist"].append(DB[0]), "imlist names 'oxford_000000' twice"),
    (lambda d: d.clear() or d.update(x=[1]), r"lacks \['imlist', 'qimlist', 'gnd'\]"),
])
def test_a_malformed_ground_truth_is_one_line_naming_the_file(tmp_path, change, says):
    data = {"imlist": list(DB), "qimlist": list(QUERIES), "gnd": [dict(g) for g in GND]}
    change(data)
    write_revisitop(tmp_path, gnd=data.get("gnd"))
    path = tmp_path / "roxford5k/gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(UserError, match=says) as err:
        plugins.create("dataset", "roxford5k", data_root=tmp_path).items("database")
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    path.write_bytes(b"\x80\x02]q\x00(K\x01")  # a truncated pickle
    with pytest.raises(UserError, match="is not a plain revisitop ground-truth pickle"):
        plugins.create("dataset", "roxford5k", data_root=tmp_path).items("database")


# -- the metrics, by hand ------------------------------------------------------------------------------


def _hand_case():
    """Both queries rank the database in its own order: DB[0], DB[1], ..., DB[9]."""
    gt = {"q1": {"easy": [DB[1], DB[4]], "hard": [DB[2], DB[7]], "junk": [DB[0], DB[5]]},
          "q2": {"easy": [DB[9]], "hard": [], "junk": []}}
    order = np.tile(np.arange(10), (2, 1))
    return revisited_scores(order, DB, ["q1", "q2"], gt)


def test_medium_positives_easy_and_hard_junk_removed_and_positions_shifted():
    s = _hand_case()["medium"]
    # q1: positives at 0-based places 1, 2, 4, 7; junk at 0 and 5. Each positive moves up by the junk
    # ranked before it: ranks r = 0, 1, 3, 5. compute_ap: sum over the j-th positive of
    # (j / r_j + (j + 1) / (r_j + 1)) / 2, j / r_j = 1 at r_j = 0, divided by 4 positives:
    #   (1 + 1) / 2 + (1 + 1) / 2 + (2/3 + 3/4) / 2 + (3/5 + 4/6) / 2 = 1 + 1 + 17/24 + 19/30 = 401/120
    q1 = 401 / 120 / 4
    # q2: its one positive at place 9, nothing junk: (0/9 + 1/10) / 2 / 1 = 1/20
    q2 = 1 / 20
    assert s["ap"] == pytest.approx([q1, q2], abs=1e-15) and s["mAP"] == pytest.approx((q1 + q2) / 2, abs=1e-15)
    # precision at k on the 1-based shifted ranks p: kq = min(max(p), k), share of p <= kq among kq
    # q1: p = 1, 2, 4, 6 -> @1: 1/1; @5: 3/5; @10: kq = 6, 4/6.  q2: p = 10 -> @1: 0; @5: 0; @10: 1/10
    np.testing.assert_allclose(s["precision"], [[1, 3 / 5, 4 / 6], [0, 0, 1 / 10]], rtol=0, atol=1e-15)
    assert s["mP@10"] == pytest.approx((4 / 6 + 1 / 10) / 2, abs=1e-15) and s["n_queries"] == 2


def test_easy_ignores_hard_images_as_junk():
    s = _hand_case()["easy"]
    # q1: positives DB[1], DB[4] at places 1, 4; junk = junk + hard = places 0, 2, 5, 7 -> ranks 0, 2
    #   AP = ((1 + 1) / 2 + (1/2 + 2/3) / 2) / 2 = (1 + 7/12) / 2 = 19/24; p = 1, 3 -> @1 1, @5 and @10: kq = 3, 2/3
    # q2: as in Medium, 1/20
    assert s["ap"] == pytest.approx([19 / 24, 1 / 20], abs=1e-15)
    np.testing.assert_allclose(s["precision"][0], [1, 2 / 3, 2 / 3], rtol=0, atol=1e-15)
    assert s["mAP"] == pytest.approx((19 / 24 + 1 / 20) / 2, abs=1e-15)


def test_hard_ignores_easy_images_and_leaves_out_queries_without_hard_positives():
    s = _hand_case()["hard"]
    # q1: positives DB[2], DB[7] at places 2, 7; junk = junk + easy = places 0, 1, 4, 5 -> ranks 0, 3
    #   AP = ((1 + 1) / 2 + (1/3 + 2/4) / 2) / 2 = (1 + 5/12) / 2 = 17/24; p = 1, 4 -> @1 1, @5 and @10: kq = 4, 2/4
    # q2 has no hard image: NaN, left out of the means (revisitop's nempty)
    assert s["ap"][0] == pytest.approx(17 / 24, abs=1e-15) and np.isnan(s["ap"][1])
    assert np.isnan(s["precision"][1]).all()
    assert s["mAP"] == pytest.approx(17 / 24, abs=1e-15) and s["n_queries"] == 1
    assert (s["mP@1"], s["mP@5"], s["mP@10"]) == pytest.approx((1, 1 / 2, 1 / 2), abs=1e-15)


def test_a_positive_missing_from_the_database_still_counts():
    gt = {"q": {"easy": [DB[0], "never_extracted"], "hard": [], "junk": []}}
    s = revisited_scores(np.arange(10)[None], DB, ["q"], gt)["easy"]
    assert s["mAP"] == pytest.approx(1 / 2)  # found at rank 0: (1 + 1) / 2 / 2 positives
    none_found = revisited_scores(np.arange(10)[None], DB, ["q"], {"q": {"easy": ["gone"], "hard": [], "junk": []}})
    assert none_found["easy"]["mAP"] == 0.0 and none_found["easy"]["mP@1"] == 0.0


# -- the metrics, against revisitop's own code ---------------------------------------------------------


def compute_ap(ranks, nres):
    """revisitop python/evaluate.py ``compute_ap``, as published."""
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap


def compute_map(ranks, gnd, kappas=[]):
    """revisitop python/evaluate.py ``compute_map``, as published (``np.in1d``, deprecated in numpy 2,
    written as ``np.isin``, its 1-D equivalent). ``ranks``: (database size, queries), 0-based."""
    map = 0.
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = gnd[i]['ok']
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            prs[i, :] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = gnd[i]['junk']
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


def _example_evaluate_gnd(gnd, setting):
    """The per-setting ground truth revisitop's python/example_evaluate.py builds."""
    out = []
    for g in gnd:
        if setting == "easy":
            out.append({"ok": np.concatenate([g["easy"]]), "junk": np.concatenate([g["junk"], g["hard"]])})
        elif setting == "medium":
            out.append({"ok": np.concatenate([g["easy"], g["hard"]]), "junk": np.concatenate([g["junk"]])})
        else:
            out.append({"ok": np.concatenate([g["hard"]]), "junk": np.concatenate([g["junk"], g["easy"]])})
    return out


def _random_case(rng, n_db, n_q, overlapping: bool):
    gnd = []
    for _ in range(n_q):
        perm = rng.permutation(n_db)
        sizes = rng.integers(0, 12, size=3)
        sizes[rng.integers(0, 3)] = rng.integers(0, 2)  # now and then a setting without positives
        a, b = sizes[0], sizes[0] + sizes[1]
        easy, hard, junk = perm[:a], perm[a:b], perm[b:b + sizes[2]]
        if overlapping:  # lists that share or repeat images: revisitop's index arithmetic still decides
            junk = np.concatenate([junk, rng.choice(n_db, 3)])
            easy = np.concatenate([easy, easy[:1]])
        gnd.append({"easy": easy.astype(np.int64), "hard": hard.astype(np.int64), "junk": junk.astype(np.int64)})
    order = np.stack([rng.permutation(n_db) for _ in range(n_q)])
    return gnd, order


@pytest.mark.parametrize("overlapping", [False, True])
def test_equal_to_revisitops_compute_map_on_random_rankings(overlapping):
    rng = np.random.default_rng(2018)
    ids = [f"im{k}" for k in range(80)]
    for trial in range(5):
        gnd, order = _random_case(rng, 80, 15, overlapping)
        gt = {f"q{i}": {key: [ids[j] for j in g[key]] for key in ("easy", "hard", "junk")} for i, g in enumerate(gnd)}
        ours = revisited_scores(order, ids, [f"q{i}" for i in range(15)], gt, kappas=(1, 5, 10))
        for setting in ("easy", "medium", "hard"):
            ref_map, ref_aps, ref_pr, ref_prs = compute_map(order.T, _example_evaluate_gnd(gnd, setting), [1, 5, 10])
            s = ours[setting]
            np.testing.assert_allclose(s["ap"], ref_aps, rtol=0, atol=1e-12, equal_nan=True)
            np.testing.assert_allclose(s["precision"], ref_prs, rtol=0, atol=1e-12, equal_nan=True)
            assert abs(s["mAP"] - ref_map) <= 1e-12
            np.testing.assert_allclose([s["mP@1"], s["mP@5"], s["mP@10"]], ref_pr, rtol=0, atol=1e-12)


def test_without_overlaps_the_ap_is_the_oxford_trapezoid_on_the_junk_free_ranking():
    rng = np.random.default_rng(7)
    ids = [f"im{k}" for k in range(50)]
    gnd, order = _random_case(rng, 50, 10, overlapping=False)
    gt = {f"q{i}": {key: [ids[j] for j in g[key]] for key in ("easy", "hard", "junk")} for i, g in enumerate(gnd)}
    medium = revisited_scores(order, ids, list(gt), gt)["medium"]
    for i, g in enumerate(gnd):
        positives, junk = set(g["easy"]) | set(g["hard"]), set(g["junk"])
        hits = [r in positives for r in order[i] if r not in junk]
        expected = trapezoid_average_precision(hits, len(positives)) if positives else float("nan")
        np.testing.assert_allclose(medium["ap"][i], expected, rtol=0, atol=1e-12, equal_nan=True)


# -- the query crop ------------------------------------------------------------------------------------


def test_each_query_is_exactly_its_box_cut_out_before_anything_else(rox, tiny):
    settings = ExtractSettings(workers=1).resolve("queries", rox, tiny)
    assert settings.box_scale == 1.0
    for item in rox.items("queries"):
        got, ok, skipped = decode_batch([item], tiny.preprocess, settings)
        by_hand = np.asarray(Image.open(item.image).convert("RGB").crop(tuple(item.box)))  # revisitop crops with PIL
        want, _, _ = decode_batch([Item("by hand", by_hand)], tiny.preprocess, settings)
        whole, _, _ = decode_batch([Item("whole", item.image)], tiny.preprocess, settings)
        assert not skipped and np.array_equal(got, want) and not np.array_equal(got, whole)


# -- end to end: extract, evaluate with l2, compare ----------------------------------------------------


def test_extract_and_evaluate_give_easy_medium_hard_with_the_crop_in_the_signature(rox, tiny, tmp_path):
    from cnnbench.extract import extract_split

    features = tmp_path / "features"
    for split in rox.splits:
        extract_split(tiny, rox, split, features / f"{split}.h5", ExtractSettings(workers=1, runtime="eager"),
                      progress=False)
    signature = json.loads(store.open_info(features / "queries.h5").attrs["signature"])
    assert signature["box_scale"] == 1.0 and signature["dataset_options"]["query_crop"] == "bbx"
    assert store.read(features / "queries.h5").extras["ground_truth"]["all_souls_000013"]["hard"] == [DB[2], DB[7]]

    record = evaluate(features, rox, plugins.create("head", "l2"), "l2")
    metrics = record["metrics"]
    names = [f"{m}_{s}" for s in ("easy", "medium", "hard") for m in ("mAP", "mP@1", "mP@5", "mP@10")]
    assert set(names) <= set(metrics) and "mAP" not in metrics
    assert all(0.0 <= metrics[n] <= 1.0 for n in names)
    assert record["primary_metric"] == "mAP_medium"
    assert record["dataset_options"] == {"protocol": "revisited", "query_crop": "bbx"}

    write_results(record, tmp_path / "metrics/tiny/roxford5k/l2.json")
    table = build_table(load_records(tmp_path / "metrics"))
    assert table.columns == [("roxford5k", "l2", "mAP_hard"), ("roxford5k", "l2", "mAP_medium")]
    assert table.values[("tiny", ("roxford5k", "l2", "mAP_medium"))] == pytest.approx(100 * metrics["mAP_medium"])


def test_l2_scores_a_perfect_ranking_one_and_refuses_a_revisited_metric_without_easy_and_hard():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 16)) * 5
    db_ids = np.array(DB, dtype=object)
    obj = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    database = FeatureSet((centres[obj] + 0.01 * rng.standard_normal((10, 16))).astype(np.float32), np.full(10, -1),
                          db_ids, [])
    gt = {"q0": {"easy": DB[:3], "hard": DB[3:5], "junk": [], "positives": DB[:5]},
          "q1": {"easy": DB[5:7], "hard": DB[7:], "junk": [], "positives": DB[5:]}}
    queries = FeatureSet(centres.astype(np.float32), np.full(2, -1), np.array(["q0", "q1"], dtype=object), [],
                         {"ground_truth": gt})
    head = plugins.create("head", "l2", pca_dim=None)
    out = head.evaluate(database, queries, "retrieval", metric="mAP_medium")
    assert out["mAP_medium"] == 1.0 and out["mP@10_medium"] == 1.0 and out["n_queries_hard"] == 2.0
    # Easy and Hard: the other setting's images are junk, so every positive still ranks first
    assert out["mAP_easy"] == out["mAP_hard"] == 1.0
    assert head.primary_metric_for("retrieval", "mAP_medium") == "mAP_medium"
    assert head.primary_metric_for("retrieval", "mAP") == "mAP"  # the original protocol is unchanged
    plain = {q: {"positives": e["positives"], "junk": []} for q, e in gt.items()}
    with pytest.raises(UserError, match="no 'easy'/'hard' lists"):
        head.evaluate(database, FeatureSet(queries.features, queries.labels, queries.ids, [], {"ground_truth": plain}),
                      "retrieval", metric="mAP_medium")


def test_the_query_crop_cannot_be_enlarged_by_a_global_box_scale():
    """Results differ by ~14 mAP points when queries are not cropped as the protocol says: a global
    extract.box_scale that would enlarge them is refused, not silently applied."""
    from conftest import tiny_backbone

    from cnnbench.errors import UserError
    from cnnbench.settings import ExtractSettings

    class Fixed:
        name, box_scale, box_scale_fixed = "roxford5k", 1.0, True

    with pytest.raises(UserError, match="extract.box_scale.*roxford5k.*exactly"):
        ExtractSettings(box_scale=1.5).resolve("queries", Fixed(), tiny_backbone())
    assert ExtractSettings().resolve("queries", Fixed(), tiny_backbone()).box_scale == 1.0
    assert ExtractSettings(box_scale=1.0).resolve("queries", Fixed(), tiny_backbone()).box_scale == 1.0
