"""effnet-lite0 carries real ImageNet weights: on real photos its top-5 makes sense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
    from cnnbench_plugins.backbones import effnet_lite0

    import timm

    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not the weights")
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsNotFoundError, match="SHA-256"):
        effnet_lite0.load_state_dict(bad, model)
