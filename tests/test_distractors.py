"""Distractors (R1M, Radenović et al. 2018): the ``revisitop1m`` data set in revisitop's layout, and the
``distractors`` option of every retrieval data set, which appends a distractor feature file to the
database at evaluation: distractor ids enter the rankings and count as negatives, PCA-whitening is
fitted on the real database only, and with a compressed FAISS index the distractor vectors are
streamed from their HDF5 file, never held whole. Fixtures are written here in the official formats
(a tiny ``revisitop1m.txt`` and JPEGs, a tiny ``gnd_roxford5k.pkl``) or as the store writes features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image
from PIL import Image
from test_revisited import DB, write_revisitop

from cnnbench import ann, plugins, retrieval, store
from cnnbench.errors import MissingDataError, UserError
from cnnbench.evaluate import evaluate
from cnnbench.outcomes import Outcomes
from cnnbench.recipes import EvalOptions

DIM = 16
read = store.read  # the real one, for the spy that lets every file but the distractors' through
R1M_NAMES = ["00/000a1b2c3d4e5f60", "00/000a1b2c3d4e5f61.jpg", "01/0b0c0d0e0f101112", "01/0b0c0d0e0f101113"]


def write_r1m(data_root: Path, names=R1M_NAMES, images: dict | None = None) -> Path:
    """``<data_root>/revisitop1m/jpg/<name>[.jpg]`` and ``revisitop1m.txt``, as revisitop's download.py leaves them."""
    folder = data_root / "revisitop1m"
    for k, name in enumerate(names):
        path = folder / "jpg" / (name if Path(name).suffix else f"{name}.jpg")
        if images and name in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            images[name].save(path)
        else:
            write_image(path, seed=500 + k, size=(44, 33))
    (folder / "revisitop1m.txt").write_text("".join(f"{n}\n" for n in names))
    return data_root


def write_features(path: Path, ids, feats, *, backbone="tiny", layer="act", extras=None, views=None,
                   task="retrieval") -> Path:
    """A feature file as the store writes it (checksums, signature), from given rows; its data set and
    split are those its path names (``features/<backbone>/<dataset>/<key>/<split>.h5``)."""
    feats = np.asarray(feats, np.float32)
    sig = {"backbone": backbone, "path": str(path), "views": "spatial" if views else "none"}
    w = store.StoreWriter(path, sig)
    w.append(list(ids), np.full(len(ids), -1), {layer: feats}, next_item=len(ids))
    attrs = {"default_layer": layer, "layers": [layer], "classes": [], "backbone": backbone, "task": task,
             "dataset": path.parent.parent.name, "split": path.stem, "signature": json.dumps(sig, sort_keys=True)}
    if views:
        attrs["view_names"] = list(views)
    return w.commit(attrs, extras)


# -- a synthetic revisited data set: two objects, near or far distractors ----------------------------------

OBJ = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
GT = {"q0": {"easy": DB[:3], "hard": DB[3:5], "junk": [], "positives": DB[:5]},
      "q1": {"easy": DB[5:7], "hard": DB[7:], "junk": [], "positives": DB[5:]}}


@pytest.fixture
def synth(tmp_path):
    """features/tiny/roxford5k/none/{database,queries}.h5: 10 images of 2 objects, 2 queries (one per object)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, DIM)) * 5
    db = centres[OBJ] + 0.5 * rng.standard_normal((10, DIM))
    q = centres + 0.5 * rng.standard_normal((2, DIM))
    feat = tmp_path / "features" / "tiny" / "roxford5k" / "none"
    write_features(feat / "database.h5", DB, db)
    write_features(feat / "queries.h5", ["q0", "q1"], q, extras={"ground_truth": GT})
    return feat, centres, q


def dataset(tmp_path, distractors=None):
    """roxford5k, and the evaluation options that append ``distractors`` to its database."""
    return plugins.create("dataset", "roxford5k", data_root=tmp_path / "data"), EvalOptions(distractors=distractors)


def run(feat, ds, **head_opts):
    ds, evaluation = ds
    return evaluate(feat, ds, plugins.create("head", "l2", **{"pca_dim": None, **head_opts}), "l2",
                    evaluation=evaluation)


def ranking(record) -> list[list[str]]:
    (_, outcome), = record["outcomes"]
    assert isinstance(outcome, Outcomes)
    return outcome.ranking


def write_near(tmp_path, q, n_far=0):
    """Distractors each nearer a query than every positive (copies of the query), plus far-away ones."""
    near = np.repeat(q, 2, axis=0) + 0.01
    far = 1000.0 + np.arange(n_far * DIM, dtype=np.float32).reshape(n_far, DIM)
    ids = [f"d{k:04d}" for k in range(len(near) + n_far)]
    return write_features(tmp_path / "features/tiny/revisitop1m/none/database.h5", ids, np.concatenate([near, far]))


def test_near_distractors_lower_the_map_and_lead_the_rankings(tmp_path, synth):
    feat, _, q = synth
    path = write_near(tmp_path, q)
    plain = run(feat, dataset(tmp_path))
    with_r1m = run(feat, dataset(tmp_path, distractors="revisitop1m"))
    assert plain["metrics"]["mAP_medium"] == 1.0
    assert with_r1m["metrics"]["mAP_medium"] < plain["metrics"]["mAP_medium"]
    assert with_r1m["metrics"]["mP@1_medium"] == 0.0  # a distractor ranks first: a negative, not junk
    first = ranking(with_r1m)
    assert first[0][:2] == ["d0000", "d0001"] and first[1][:2] == ["d0002", "d0003"]
    assert set(ranking(plain)[0]) <= set(DB)
    # the file is recorded, the data set's options (part of every feature file's signature) are not changed
    prov = with_r1m["provenance"]["distractors"]
    signature = store.open_info(path).attrs["signature"]
    assert prov["rows"] == 4 and prov["path"] == str(path) and prov["option"] == "revisitop1m"
    assert prov["signature_sha256"] == hashlib.sha256(signature.encode()).hexdigest()
    assert with_r1m["dataset_options"] == plain["dataset_options"] == {"protocol": "revisited", "query_crop": "bbx"}
    assert "distractors" not in plain["provenance"]


def test_far_distractors_leave_every_ranking_as_it_was_exact_and_faiss(tmp_path, synth):
    feat, _, _ = synth
    far = 1000.0 + np.arange(30 * DIM, dtype=np.float32).reshape(30, DIM)
    write_features(tmp_path / "r1m.h5", [f"far{k}" for k in range(30)], far)
    plain = run(feat, dataset(tmp_path))
    for opts in ({}, {"index": "faiss", "index_factory": "Flat"}, {"index": "faiss", "faiss_index": "Flat"}):
        got = run(feat, dataset(tmp_path, distractors=str(tmp_path / "r1m.h5")), **opts)
        assert ranking(got) == ranking(plain)
        assert {k: v for k, v in got["metrics"].items()} == plain["metrics"]


def test_pca_whitening_is_fitted_on_the_real_database_only(tmp_path, synth, monkeypatch):
    feat, _, q = synth
    write_near(tmp_path, q, n_far=50)
    fitted = []
    original = retrieval.Whitening.fit
    monkeypatch.setattr(retrieval.Whitening, "fit", lambda self, x: fitted.append(np.shape(x)) or original(self, x))
    got = run(feat, dataset(tmp_path, distractors="revisitop1m"), pca_dim=4)
    assert fitted == [(10, DIM)] and got["trials"][0]["pca_fit_size"] == 10.0


def test_a_compressed_index_streams_the_distractors_from_the_file(tmp_path, synth, monkeypatch):
    feat, _, q = synth
    write_near(tmp_path, q, n_far=2000)
    exact = run(feat, dataset(tmp_path, distractors="revisitop1m"))

    def whole(*a, **k):
        raise AssertionError("the distractors were loaded whole")

    blocks, reads, built = [], [], []
    chunks, images = ann.H5Rows.chunks, ann.H5Rows.images
    monkeypatch.setattr(retrieval.Distractors, "load", whole)
    monkeypatch.setattr(store, "read", lambda *a, **k: pytest.fail("store.read of a distractor file")
                        if "revisitop1m" in str(a[0]) else read(*a, **k))
    monkeypatch.setattr(ann, "CHUNK_FLOATS", 64 * DIM)  # 64 rows a chunk
    monkeypatch.setattr(ann.H5Rows, "chunks", lambda self, size=None: (blocks.append(len(c)) or c for c in chunks(self, size)))
    monkeypatch.setattr(ann.H5Rows, "images", lambda self, idx: reads.append(len(idx)) or images(self, idx))
    build = ann.build_index
    monkeypatch.setattr(ann, "build_index", lambda source, factory, **k: built.append((type(source), factory)) or
                        build(source, factory, **k))
    got = run(feat, dataset(tmp_path, distractors="revisitop1m"), index="faiss", index_factory="IVF16,PQ4",
              nprobe=16, rerank=100, train_size=1000)
    assert built == [(ann.H5Rows, "IVF16,PQ4")]
    assert blocks and max(blocks) <= 64 and sum(blocks) >= 2 * 2004  # trained on a sample, then filled, in chunks
    assert reads and max(reads) <= 100  # the exact re-ranking reads candidates only
    assert ranking(got) == ranking(exact) and got["metrics"] == exact["metrics"]



def test_auto_picks_the_compressed_index_by_the_size_with_distractors(tmp_path, synth, monkeypatch):
    feat, _, q = synth
    write_near(tmp_path, q, n_far=300)
    built = []
    build = ann.build_index
    monkeypatch.setattr(ann, "FLAT_BELOW", 100)
    monkeypatch.setattr(ann, "default_factory", lambda n, dim, flat_below=100: built.append(n) or "IVF4,PQ4")
    monkeypatch.setattr(ann, "build_index", lambda source, factory, **k: build(source, factory, **k))
    got = run(feat, dataset(tmp_path, distractors="revisitop1m"), index="auto", faiss_min_database=200)
    assert built == [304]  # the distractor rows (the real database is ranked exactly)
    assert ranking(got)[0][:2] == ["d0000", "d0001"]


def test_spatial_distractors_stream_and_rank_as_exact_search(tmp_path):
    rng = np.random.default_rng(1)
    views = ["l1_r0_c0", "l2_r0_c0", "l2_r0_c1", "l2_r1_c0", "l2_r1_c1"]
    centres = rng.standard_normal((2, DIM)) * 5
    db = centres[OBJ][:, None] + 0.5 * rng.standard_normal((10, 5, DIM))
    q = centres[:, None] + 0.5 * rng.standard_normal((2, 5, DIM))
    feat = tmp_path / "features/tiny/roxford5k/spatial"
    write_features(feat / "database.h5", DB, db, views=views)
    write_features(feat / "queries.h5", ["q0", "q1"], q, views=views, extras={"ground_truth": GT})
    dis = np.concatenate([q + 0.01, rng.standard_normal((40, 5, DIM)) * 5])
    write_features(tmp_path / "features/tiny/revisitop1m/spatial/database.h5", [f"d{k}" for k in range(42)], dis,
                   views=views)
    exact = run(feat, dataset(tmp_path, distractors="revisitop1m"))
    flat = run(feat, dataset(tmp_path, distractors="revisitop1m"), index="faiss", index_factory="Flat", candidates=1000)
    assert ranking(flat) == ranking(exact) and flat["metrics"] == exact["metrics"]
    assert ranking(exact)[0][0] == "d0" and ranking(exact)[1][0] == "d1"
    # views that differ from the database's are refused in one line
    write_features(tmp_path / "flat.h5", ["x0", "x1"], rng.standard_normal((2, DIM)))
    with pytest.raises(UserError, match=r"flat\.h5 holds features of shape \(N, 16\), the database \(N, 5, 16\).*--views"):
        run(feat, dataset(tmp_path, distractors=str(tmp_path / "flat.h5")))


# -- errors: one line naming the file and the fix --------------------------------------------------------


def test_a_missing_distractor_file_says_which_extract_command_makes_it(tmp_path, synth):
    feat, _, _ = synth
    with pytest.raises(UserError) as e:
        run(feat, dataset(tmp_path, distractors="revisitop1m"))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "features/tiny/revisitop1m/none/database.h5") in msg
    assert "cnnbench extract -b tiny -d revisitop1m" in msg
    with pytest.raises(UserError, match=r"nowhere/r1m\.h5 does not exist.*cnnbench extract -b tiny -d revisitop1m"):
        run(feat, dataset(tmp_path, distractors=str(tmp_path / "nowhere/r1m.h5")))


@pytest.mark.parametrize("case, says", [
    ("dim", r"holds features of shape \(N, 8\), the database \(N, 16\); extract the distractors with the same backbone"),
    ("collision", r"1 image ids of .*r1m\.h5 are also ids of roxford5k \(e\.g\. 'oxford_000003'\)"),
    ("backbone", r"r1m\.h5 holds backbone 'other', but the database holds 'tiny'; .*cnnbench extract -b tiny"),
    ("layer", r"r1m\.h5 has no layer 'act' \(it holds \['fc'\]\); extract the distractors with --layer act"),
])
def test_mismatched_distractors_are_one_line(tmp_path, synth, case, says):
    feat, _, _ = synth
    rng = np.random.default_rng(2)
    ids, x, kw = ["x0", "x1", "x2"], rng.standard_normal((3, DIM)), {}
    if case == "dim":
        x = rng.standard_normal((3, 8))
    elif case == "collision":
        ids = ["x0", DB[3], "x2"]
    elif case == "backbone":
        kw = {"backbone": "other"}
    else:
        kw = {"layer": "fc"}
    write_features(tmp_path / "r1m.h5", ids, x, **kw)
    with pytest.raises(UserError, match=says) as e:
        run(feat, dataset(tmp_path, distractors=str(tmp_path / "r1m.h5")))
    assert "\n" not in str(e.value)


def test_every_retrieval_data_set_takes_the_option_and_others_refuse_it(tmp_path):
    opts = EvalOptions(distractors=" revisitop1m ")
    assert opts.distractors == "revisitop1m"
    for name in ("roxford5k", "rparis6k", "oxford5k", "paris6k", "sculptures6k", "holidays", "ukbench",
                 "oxford5k-subset"):
        ds = plugins.create("dataset", name, data_root=tmp_path)
        opts.check_for(ds)  # an evaluation option: the data set's own options (its features) are untouched
        assert "distractors" not in ds.options()
    with pytest.raises(UserError, match="-E: distractors: .*digits is a multiclass data set; leave distractors out"):
        opts.check_for(plugins.create("dataset", "digits"), "-E")
    with pytest.raises(UserError, match="recipe r: distractors: revisitop1m is itself a distractor set"):
        EvalOptions(distractors="x").check_for(plugins.create("dataset", "revisitop1m", data_root=tmp_path), "recipe r")
    with pytest.raises(UserError, match="-E: distractors: 3 is not allowed"):
        EvalOptions.from_mapping("-E", {"distractors": 3})
    assert retrieval.distractors_path("revisitop1m", "features/b/roxford5k/none") == (
        Path("features/b/revisitop1m/none/database.h5"), "revisitop1m")
    assert retrieval.distractors_path("revisitop1m", "features/b/roxford5k/spatial")[0] == Path(
        "features/b/revisitop1m/spatial/database.h5")  # the same views as the database
    assert retrieval.distractors_path("some/dir", "f")[0] == Path("some/dir/database.h5")
    assert retrieval.distractors_path("x.h5", "f")[0] == Path("x.h5")


def test_index_factory_is_the_name_and_faiss_index_an_alias():
    assert plugins.create("head", "l2", index_factory="Flat").params["index_factory"] == "Flat"
    assert plugins.create("head", "l2", faiss_index="Flat").params["index_factory"] == "Flat"
    assert plugins.create("head", "l2", faiss_index="Flat", index_factory="Flat").index_factory == "Flat"
    assert plugins.create("head", "l2").index_factory == "auto"
    with pytest.raises(UserError, match=r"^l2: index_factory: 'Flat' and faiss_index: 'HNSW32' name the same option"):
        plugins.create("head", "l2", index_factory="Flat", faiss_index="HNSW32")
    with pytest.raises(UserError, match=r"^l2: index_factory: '' is not allowed"):
        plugins.create("head", "l2", index_factory="")


# -- the revisitop1m data set, and the whole path on images ---------------------------------------------


def test_revisitop1m_reads_revisitops_list_and_layout(tmp_path):
    ds = plugins.create("dataset", "revisitop1m", data_root=write_r1m(tmp_path))
    assert ds.splits == ("database",) and ds.task == "retrieval"
    items = ds.items("database")
    assert [i.id for i in items] == R1M_NAMES  # ids: the list's names, in its order
    assert Path(items[0].image) == tmp_path / "revisitop1m/jpg/00/000a1b2c3d4e5f60.jpg"  # no extension: .jpg
    assert Path(items[1].image) == tmp_path / "revisitop1m/jpg/00/000a1b2c3d4e5f61.jpg"
    with pytest.raises(UserError, match=r"^revisitop1m is a distractor set.*-E distractors=revisitop1m$"):
        ds.trials({"database": np.full(4, -1)})
    (tmp_path / "revisitop1m/revisitop1m.txt").write_text("a\nb\na\n")
    with pytest.raises(UserError, match=r"revisitop1m\.txt, line 3: 'a' is listed twice \(first on line 1\)"):
        plugins.create("dataset", "revisitop1m", data_root=tmp_path).items("database")


def test_revisitop1m_missing_files_name_the_urls_and_the_layout(tmp_path):
    with pytest.raises(MissingDataError) as e:
        plugins.create("dataset", "revisitop1m", data_root=tmp_path).items("database")
    msg = str(e.value)
    assert "http://ptak.felk.cvut.cz/revisitop/revisitop1m/revisitop1m.txt" in msg
    assert "jpg/revisitop1m.1.tar.gz" in msg and "revisitop1m.100.tar.gz" in msg and "revisitop1m.txt (one image" in msg
    write_r1m(tmp_path)
    (tmp_path / "revisitop1m/jpg/01/0b0c0d0e0f101113.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"1 of the 4 images that revisitop1m\.txt lists are not under"):
        plugins.create("dataset", "revisitop1m", data_root=tmp_path).items("database")
    ds = plugins.create("dataset", "revisitop1m", data_root=tmp_path)
    assert len(ds.downloads) == 101 and all(d.sha256 is None for d in ds.downloads)  # none published: none invented


def test_extract_r1m_once_then_evaluate_roxford5k_with_it_through_the_command_line(tmp_path, tiny, monkeypatch):
    """Images all the way: the distractors are the query crops re-saved (near-duplicates of each query,
    as R1M's hardest distractors are), so each ranks first and the mAP drops."""
    from cnnbench.cli import main
    from cnnbench.extract import extract_split
    from cnnbench.settings import ExtractSettings

    data = write_revisitop(tmp_path / "data")
    rox = plugins.create("dataset", "roxford5k", data_root=data)
    crops = {f"{k:02d}/crop{k}": Image.open(i.image).convert("RGB").crop(tuple(int(round(v)) for v in i.box))
             for k, i in enumerate(rox.items("queries"))}
    write_r1m(data, [*crops, *R1M_NAMES], crops)
    r1m = plugins.create("dataset", "revisitop1m", data_root=data)
    settings = ExtractSettings(workers=1, runtime="eager")
    features = tmp_path / "features" / "tiny"
    for ds in (rox, r1m):
        for split in ds.splits:
            extract_split(tiny, ds, split, features / ds.name / "none" / f"{split}.h5", settings, progress=False)
    monkeypatch.chdir(tmp_path)
    out = {}
    for tag, extra in (("plain", []), ("r1m", ["-E", "distractors=revisitop1m"])):
        res = CliRunner().invoke(main, ["evaluate", "-b", "tiny", "-d", "roxford5k", "--head", "l2", "--data-root",
                                        str(data), "--no-extract-missing",
                                        "--out-dir", f"metrics-{tag}", "-H", "pca_dim=null", *extra])
        assert res.exit_code == 0, res.output
        out[tag] = json.loads((tmp_path / f"metrics-{tag}/tiny/roxford5k/cnn/l2.json").read_text())
        run_record = json.loads((tmp_path / f"metrics-{tag}/tiny/roxford5k/cnn/l2.run.json").read_text())
    assert out["r1m"]["mAP_medium"] < out["plain"]["mAP_medium"]
    assert out["r1m"]["mP@1_medium"] == 0.0
    assert run_record["provenance"]["distractors"]["rows"] == 2 + len(R1M_NAMES)
    assert run_record["recipe_spec"]["evaluation"]["distractors"] == "revisitop1m"
    outcomes = json.loads((tmp_path / "metrics-r1m/tiny/roxford5k/cnn/l2.outcomes.json").read_text())
    assert "00/crop0" in json.dumps(outcomes) and "01/crop1" in json.dumps(outcomes)
    # evaluating the distractor set alone: one line
    res = CliRunner().invoke(main, ["evaluate", "-b", "tiny", "-d", "revisitop1m", "--head", "l2", "--data-root",
                                    str(data), "--features", str(features / "revisitop1m" / "none"), "--no-extract-missing"])
    assert res.exit_code != 0 and "revisitop1m is a distractor set" in res.output and "Traceback" not in res.output


def test_a_head_that_does_not_stream_distractors_gets_them_concatenated(tmp_path, synth):
    feat, _, q = synth
    write_near(tmp_path, q)
    ds, _ = dataset(tmp_path)
    infos = {s: store.open_info(feat / f"{s}.h5") for s in ds.splits}
    sets = {s: store.read(feat / f"{s}.h5") for s in ds.splits}
    dis = retrieval.open_distractors(ds, feat, infos, sets, option="revisitop1m")
    plain = dis.append_to(sets["database"], object())
    assert list(plain.ids) == [*DB, "d0000", "d0001", "d0002", "d0003"] and plain.features.shape == (14, DIM)
    assert list(plain.labels[10:]) == [-1] * 4
    streamed = dis.append_to(sets["database"], plugins.create("head", "l2"))
    assert streamed.features.shape == (10, DIM) and streamed.extras[retrieval.DISTRACTORS_KEY] is dis
    assert retrieval.open_distractors(ds, feat, infos, sets) is None
