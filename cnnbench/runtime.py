"""Inference runtimes: the same features from eager PyTorch, ``torch.compile`` or ONNX Runtime.

Every runtime runs one graph: uint8 NHWC pixels in (normalisation folded in), one pooled 2-D tensor
per requested layer out. ``auto`` picks the fastest runtime that is available and exact for this
backbone on this device: ONNX Runtime on the CPU, eager on a GPU. An ONNX export is cached per
(backbone weights, layers, pooling, input size, runtime versions) and checked against eager on a
probe batch before use (max abs difference under ``tolerance``); a mismatch or a failed export falls
back to eager with a notice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .backbone import Backbone, _flatten, capture_layers
from .settings import RUNTIMES

log = logging.getLogger("cnnbench.runtime")

TOLERANCE = 1e-4


class FeatureModule(nn.Module):
    """uint8 (N, H, W, 3) -> tuple of (N, D) features, one per layer, from a single forward pass.

    Hooks are registered once, so the module can be traced (ONNX) or compiled."""

    def __init__(self, backbone: Backbone, layers: Sequence[str], pooling: str = "avg"):
        super().__init__()
        self.model = backbone.model
        self.layers = list(layers)
        self.pooling = pooling
        pp = backbone.preprocess
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(pp.std).view(1, 3, 1, 1)), persistent=False)
        self.register_buffer("shift", torch.tensor(pp.mean).view(1, 3, 1, 1) / torch.tensor(pp.std).view(1, 3, 1, 1),
                             persistent=False)
        self.targets = [backbone.resolve_layer(layer) for layer in self.layers]
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = capture_layers(self.model, self.targets, self._captured)

    def remove_hooks(self) -> None:
        """Leave the backbone's model as it was (hooks are only needed while this module is used)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2).float() * self.scale - self.shift
        x = x.contiguous(memory_format=torch.channels_last)
        self._captured.clear()
        out = self.model(x)
        self._captured[""] = out
        return tuple(_flatten(self._captured[t], self.pooling) for t in self.targets)


class Runtime:
    name = "eager"

    def __init__(self, module: FeatureModule, autocast_dtype: torch.dtype | None = None):
        self.module = module
        self.autocast_dtype = autocast_dtype

    def __call__(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        device = next(self.module.model.parameters(), torch.empty(0)).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=self.autocast_dtype,
                                                    enabled=self.autocast_dtype is not None):
            return [o.float() for o in self.module(pixels.to(device, non_blocking=True))]

    def close(self) -> None:
        self.module.remove_hooks()


class CompiledRuntime(Runtime):
    name = "compile"

    def __init__(self, module: FeatureModule):
        super().__init__(module)
        self.compiled = torch.compile(module, dynamic=True)

    def __call__(self, pixels):
        with torch.inference_mode():
            return list(self.compiled(pixels))


class OnnxRuntime(Runtime):
    name = "onnx"

    def __init__(self, module: FeatureModule, path: Path, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(module)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # no busy-waiting between batches: the decode threads need those cycles on a small machine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    chunk = 16  # ONNX Runtime on the CPU is fastest on small batches (cache-resident activations)

    def __call__(self, pixels):
        arr = np.ascontiguousarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels)
        parts = [self.session.run(None, {"pixels": arr[s : s + self.chunk]}) for s in range(0, len(arr), self.chunk)]
        return [torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts)]


def cache_dir() -> Path:
    return Path(os.environ.get("CNNBENCH_CACHE", Path.home() / ".cache" / "cnnbench"))


def onnx_path(backbone: Backbone, layers: Sequence[str], pooling: str) -> Path:
    import onnxruntime

    key = {
        "backbone": backbone.name,
        "weights": backbone.weights_digest(),
        "layers": list(layers),
        "pooling": pooling,
        "preprocess": backbone.preprocess.to_json(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone.name)
    return cache_dir() / "onnx" / f"{safe}-{digest}.onnx"


def export_onnx(module: FeatureModule, path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    names = [f"f{i}" for i in range(len(module.layers))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=names,
                          dynamic_axes={"pixels": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


def probe_batch(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth random images: closer to photos than white noise, same every time."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()
    img = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def max_abs_diff(a: Runtime, b: Runtime, size: int) -> float:
    x = probe_batch(size)
    return max(float((p.float() - q.float()).abs().max()) for p, q in zip(a(x), b(x)))


def build(backbone: Backbone, layers: Sequence[str], pooling: str = "avg", runtime: str = "auto",
          device: torch.device | str = "cpu", tolerance: float = TOLERANCE, threads: int | None = None,
          autocast_dtype: torch.dtype | None = None) -> Runtime:
    """The runtime to extract with; never fails for a runtime that is merely unavailable or inexact:
    it falls back to eager and says why. Reduced precision (``autocast_dtype``) runs eager."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    device = torch.device(device)
    module = FeatureModule(backbone, layers, pooling).eval().to(device)
    if device.type == "cpu":
        module.model.to(memory_format=torch.channels_last)
    eager = Runtime(module, autocast_dtype)
    if autocast_dtype is not None and runtime != "compile":
        return eager
    size = backbone.preprocess.input_size
    if runtime == "eager" or (runtime == "auto" and device.type != "cpu"):
        return eager
    if runtime == "compile":
        try:
            compiled = CompiledRuntime(module)
            diff = max_abs_diff(compiled, eager, size) if device.type == "cpu" else 0.0
            if diff <= tolerance:
                return compiled
            log.warning("torch.compile differs from eager by %.2g (> %.0e): using eager", diff, tolerance)
        except Exception as exc:  # noqa: BLE001
            log.warning("torch.compile unavailable (%s): using eager", exc)
        return eager
    if device.type != "cpu":
        log.warning("the onnx runtime runs on the CPU only here: using eager on %s", device)
        return eager
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if runtime == "onnx":
            log.warning("onnxruntime is not installed (pip install onnxruntime): using eager")
        return eager
    try:
        path = onnx_path(backbone, layers, pooling)
        if not path.exists():
            log.info("exporting %s to ONNX (once; cached at %s)", backbone.name, path)
            export_onnx(module, path, size)
        ort_rt = OnnxRuntime(module, path, threads)
        diff = max_abs_diff(ort_rt, eager, size)
    except Exception as exc:  # noqa: BLE001 - exporters fail on exotic models; eager always works
        log.warning("ONNX export or load failed for %s (%s: %s): using eager", backbone.name, type(exc).__name__, exc)
        return eager
    if diff > tolerance:
        log.warning("ONNX Runtime differs from eager by %.2g (> %.0e) for %s: using eager", diff, tolerance, backbone.name)
        return eager
    log.debug("onnx runtime for %s: max abs diff to eager %.2g", backbone.name, diff)
    return ort_rt
