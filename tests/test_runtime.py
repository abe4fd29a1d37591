"""Runtimes give the same features as eager PyTorch (within 1e-4), or fall back to eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from cnnbench import runtime
from cnnbench.backbone import Backbone, Preprocess
from cnnbench.images import normalize

from conftest import tiny_backbone


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))


def test_feature_module_equals_backbone_features_with_normalisation_folded_in():
    bb = tiny_backbone()
    x = runtime.probe_batch(32, n=3)
    got = runtime.Runtime(runtime.FeatureModule(bb, ["act", "logits"]))(x)
    ref = bb.features(normalize(x, bb.preprocess), ["act", "logits"])
    for g, r in zip(got, ref.values()):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


def test_onnx_matches_eager_is_cached_and_keeps_several_layers(tmp_path):
    pytest.importorskip("onnxruntime")
    bb = tiny_backbone()
    rt = runtime.build(bb, ["act", "logits"], runtime="onnx")
    assert rt.name == "onnx"
    x = runtime.probe_batch(32, n=5, seed=3)
    eager = runtime.Runtime(runtime.FeatureModule(bb, ["act", "logits"]))(x)
    for a, b in zip(rt(x), eager):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-4
    cached = list((tmp_path / "cache" / "onnx").glob("tiny-*.onnx"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert runtime.build(bb, ["act", "logits"], runtime="onnx").name == "onnx"
    assert cached[0].stat().st_mtime_ns == mtime  # reused, not exported again


def test_effnet_onnx_within_1e4_of_eager(effnet):
    pytest.importorskip("onnxruntime")
    rt = runtime.build(effnet, ["pre_logits"], runtime="auto")
    assert rt.name == "onnx"
    eager = runtime.Runtime(runtime.FeatureModule(effnet, ["pre_logits"]))
    assert runtime.max_abs_diff(rt, eager, 224) < 1e-4
    rt.close()
    eager.close()


class Unexportable(nn.Module):
    def forward(self, x):
        return torch.from_numpy(np.asarray(x.detach().numpy().mean(axis=(2, 3))))  # leaves the graph


def test_a_model_onnx_cannot_export_falls_back_to_eager(caplog):
    bb = Backbone("odd", Unexportable(), Preprocess(input_size=16, resize_size=16), default_layer="out",
                  layers={"out": ""})
    with caplog.at_level(logging.WARNING):
        rt = runtime.build(bb, ["out"], runtime="onnx")
    assert rt.name == "eager"
    assert "using eager" in caplog.text
