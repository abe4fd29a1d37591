"""Hub backbones, tested offline with random weights saved to a local file (the real loading path)."""

from __future__ import annotations

import h5py
import pytest
import torch

from cnnbench import plugins
from cnnbench.errors import WeightsNotFoundError

from conftest import run_cli


@pytest.fixture
def small_folder(tmp_path):
    from conftest import write_image

    root = tmp_path / "imgs"
    for c in "ab":
        for k in range(2):
            write_image(root / c / f"{k}.jpg", seed=k + (c == "b") * 10, size=(80, 64))
    return root


def _extract(tmp_path, folder, backbone, weights, *extra):
    out = tmp_path / "f"
    run_cli("extract", "--backbone", backbone, "--weights", str(weights), "--dataset", "imagefolder",
            "-D", f"path={folder}", "-D", "train_per_class=1", "--out", str(out), "--no-progress", *extra,
            cwd=tmp_path)
    return h5py.File(out / "all.h5")


def test_overfeat_vgg16_fc6_from_a_local_file(tmp_path, small_folder):
    import timm

    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save(timm.create_model("vgg16", pretrained=False).state_dict(), weights)
    with _extract(tmp_path, small_folder, "overfeat", weights, "--layer", "fc6", "--layer", "fc6_pre") as f:
        fc6, pre = f["features/fc6"][()], f["features/fc6_pre"][()]
    assert fc6.shape == (4, 4096) and pre.shape == (4, 4096)
    assert (fc6 >= 0).all() and (pre < 0).any()  # after vs before the ReLU
    assert (fc6 == pre.clip(min=0)).all()


def test_overfeat_alexnet_fc6_and_layers(tmp_path):
    from torchvision.models import alexnet

    weights = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), weights)
    bb = plugins.create("backbone", "overfeat-alexnet", weights=str(weights))
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        assert bb.features(x, ["fc6"])["fc6"].shape == (1, 4096)
    listing = run_cli("layers", "overfeat-alexnet", "--weights", str(weights)).stdout
    assert listing.splitlines()[0] == "fc6 -> classifier.2 (default)"


def test_offline_without_weights_names_the_file_to_fetch():
    with pytest.raises(WeightsNotFoundError) as err:
        plugins.create("backbone", "overfeat-alexnet")
    assert "alexnet-owt-7be5be79.pth" in str(err.value) and "--weights" in str(err.value)


def test_timm_model_with_local_weights_and_its_own_preprocessing(tmp_path, small_folder):
    import timm

    weights = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    with _extract(tmp_path, small_folder, "timm:resnet18", weights) as f:
        assert f["features/pre_logits"].shape == (4, 512)
        assert '"interpolation": "bicubic"' in f.attrs["preprocess"]  # from resnet18's pretrained_cfg
    with pytest.raises(Exception, match="timm has no model"):
        plugins.create("backbone", "timm:not_a_model_xyz")


def test_openclip_image_tower_with_local_weights(tmp_path, small_folder):
    import open_clip

    weights = tmp_path / "rn50-visual.pth"
    torch.save(open_clip.create_model("RN50", pretrained=None).visual.state_dict(), weights)
    with _extract(tmp_path, small_folder, "openclip:RN50/openai", weights) as f:
        assert f["features/embedding"].shape == (4, 1024)
        assert "0.4814" in f.attrs["preprocess"]  # CLIP's own mean
