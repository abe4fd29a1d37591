"""One settings object from the command line to the feature file."""

from __future__ import annotations

import json
import pickle

import pytest
import yaml
from click.testing import CliRunner

from cnnbench import plugins, store
from cnnbench.errors import UserError
from cnnbench.settings import ExtractSettings

from conftest import ROOT, tiny_backbone


def test_settings_pickle_and_round_trip_through_json():
    s = ExtractSettings(batch_size=8, layers=["act", "logits"], views="spatial", spatial_levels={"default": 2},
                        rotation_angles=[-3, 3], box_scale=1.5, fast_decode=True, max_pixels=None)
    assert pickle.loads(pickle.dumps(s)) == s
    assert ExtractSettings.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_params_yaml_lists_every_setting_with_its_default():
    """The defaults live in ExtractSettings; the shipped params.yaml shows each of them, unchanged."""
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["extract"]
    assert list(section) == ExtractSettings.keys()
    assert ExtractSettings.from_mapping(section) == ExtractSettings()


def test_exact_decoding_is_the_default():
    assert ExtractSettings().fast_decode is False


def test_a_split_resolves_its_own_spatial_levels_box_scale_and_layer():
    ds = plugins.create("dataset", "digits")
    s = ExtractSettings(views="spatial")  # paper: database images 4 levels, queries 3
    assert s.resolve("queries", ds, tiny_backbone()).spatial_levels == 3
    r = s.resolve("train", ds, tiny_backbone())
    assert (r.spatial_levels, r.box_scale, r.layers) == (4, 1.0, ("act",)) and len(r.view_names) == 30


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"layers": "act"}, {"rotation_angles": [1]},
                                 {"spatial_levels": {"queries": 0}}, {"views": "all"}, {"fast_decode": "yes"},
                                 {"engine": "spark"}, {"num_workers": -1}, {"cpus_per_worker": -0.5},
                                 {"gpus_per_worker": "one"}, {"ray_address": ""}])
def test_a_bad_value_is_refused_when_the_object_is_made(bad):
    with pytest.raises(UserError, match=f"extract.{next(iter(bad))}"):
        ExtractSettings(**bad)


def test_a_flag_travels_to_the_feature_file(tmp_path, monkeypatch):
    """--no-exif-orientation and --levels on the command line end up in the file's signature."""
    from cnnbench import hookimpl
    from cnnbench.cli import main

    class Tiny:
        @hookimpl
        def register_backbones(self, register):
            register("tiny", lambda **kw: tiny_backbone())

    plugins.register_plugin(Tiny(), name="tiny")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["extract", "-b", "tiny", "-d", "digits", "--split", "test", "--no-progress",
                                       "--views", "spatial", "--levels", "2", "--no-exif-orientation",
                                       "--runtime", "eager", "--out", "f"])
    assert result.exit_code == 0, result.output
    sig = json.loads(store.open_info(tmp_path / "f" / "test.h5").attrs["signature"])
    assert sig["exif_orientation"] is False and sig["view_names"][-1] == "l2_r1_c1" and sig["fast_decode"] is False
    assert store.read(tmp_path / "f" / "test.h5").views == sig["view_names"]


def test_where_work_runs_is_not_in_the_signature():
    """Both engines write the same bytes, so engine settings never make a file stale."""
    a = ExtractSettings(layers=("act",), box_scale=1.0, spatial_levels=4)
    b = ExtractSettings(layers=("act",), box_scale=1.0, spatial_levels=4, engine="ray", ray_address="auto",
                        num_workers=8, cpus_per_worker=2, gpus_per_worker=0.25, threads_per_worker=4)
    assert a.signature(has_boxes=False) == b.signature(has_boxes=False)
