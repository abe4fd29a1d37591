"""Inference runtimes: the same features from eager PyTorch, ``torch.compile`` or ONNX Runtime.

Every runtime runs one graph: uint8 NHWC pixels in (normalisation folded in), one pooled 2-D tensor
per requested layer out. ``auto`` picks the fastest runtime that is available and exact for this
backbone on this device: ONNX Runtime on the CPU, eager on a GPU. An ONNX export is cached per
(backbone weights, layers, pooling, input size, opset, runtime versions) and trusted only as far as
it is checked:

* a record beside it (``<name>.onnx.json``) holds the SHA-256 of the bytes exported and the key they
  were exported for; the bytes are hashed on every load and the session is built from those same
  bytes. A missing, stale or foreign record, or a file changed since (truncated, replaced), is
  exported again, atomically, under ``<name>.onnx.lock`` (a second process waits, then reuses it);
* before use the graph is compared with eager on a batch that ONNX Runtime splits as it splits the
  run's batches (max abs difference under ``tolerance``): a graph that lies for some batch sizes is
  caught there. A mismatch exports again, once; if the fresh export still differs, this is recorded
  and the run (and later runs) use eager, with a one-line notice;
* an export that fails leaves no ``.tmp-<pid>`` behind (a full disk must not stay full); those of
  processes that died mid-export are removed on the next build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .backbone import Backbone, _flatten, capture_layers
from .jsonio import ResultError, fingerprint, parse, read_bytes, write_json
from .settings import RUNTIMES, ExtractSettings
from .weights import _first_line

log = logging.getLogger("cnnbench.runtime")

TOLERANCE = 1e-4
OPSET = 17


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

    def __init__(self, module: FeatureModule, model: bytes | Path, threads: int | None = None):
        """``model``: the graph's bytes (those whose digest was checked) or a path."""
        import onnxruntime as ort

        super().__init__(module)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # no busy-waiting between batches: the decode threads need those cycles on a small machine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    chunk = 16  # ONNX Runtime on the CPU is fastest on small batches (cache-resident activations)

    def __call__(self, pixels):
        arr = np.ascontiguousarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels)
        parts = [self.session.run(None, {"pixels": arr[s : s + self.chunk]}) for s in range(0, len(arr), self.chunk)]
        return [torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts)]


def cache_dir() -> Path:
    """``$CNNBENCH_CACHE``, else ``~/.cache/cnnbench`` (also when it is set but empty: not the current folder)."""
    return Path(os.environ.get("CNNBENCH_CACHE") or Path.home() / ".cache" / "cnnbench")


def onnx_key(backbone: Backbone, layers: Sequence[str], pooling: str) -> dict:
    """What an export depends on (as it reads back from JSON): the cache's key, also kept in its record."""
    import onnxruntime

    key = {
        "backbone": backbone.name,
        "weights": backbone.weights_digest(),
        "layers": list(layers),
        "pooling": pooling,
        "preprocess": backbone.preprocess.to_json(),
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return json.loads(json.dumps(key, sort_keys=True))


def onnx_path(backbone: Backbone, layers: Sequence[str], pooling: str) -> Path:
    key = onnx_key(backbone, layers, pooling)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone.name)
    return cache_dir() / "onnx" / f"{safe}-{digest}.onnx"


def record_path(path: Path) -> Path:
    """The record beside a cached graph: the SHA-256 of its bytes and the key they were exported for."""
    return path.with_name(path.name + ".json")


class CacheFault(Exception):
    """Why a cache entry is not used as it is (one line); it is exported again."""


def read_verified(path: Path, key: dict) -> tuple[bytes, dict]:
    """The cached graph's bytes and record, if the bytes are those exported for ``key``; else :class:`CacheFault`."""
    if not path.exists():
        raise CacheFault("not exported yet")
    rec_path = record_path(path)
    if not rec_path.exists():
        raise CacheFault(f"{rec_path.name}, its digest, is missing (an older cnnbench or an interrupted export)")
    try:
        record = parse(read_bytes(rec_path, 1 << 20, "it is exported again"), rec_path, "it is exported again")
    except ResultError as exc:
        raise CacheFault(str(exc)) from None
    if not isinstance(record, dict) or record.get("key") != key:
        raise CacheFault(f"its digest {rec_path.name} is for another backbone, weights, opset or runtime version")
    if not isinstance(record.get("eager_diff"), (int, float)):
        raise CacheFault(f"its digest {rec_path.name} does not say how close to eager it was found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CacheFault(f"it cannot be read ({_first_line(exc)})") from None
    if fingerprint(data) != {k: record.get(k) for k in ("bytes", "sha256")}:
        raise CacheFault(f"it changed since it was exported ({len(data)} bytes, not the SHA-256 in {rec_path.name})")
    return data, record


_ONE_EXPORT_AT_A_TIME = threading.Lock()  # torch's exporter keeps global state: two threads exporting break both


def export_onnx(module: FeatureModule, path: Path, size: int) -> bytes:
    """Export to ``<name>.tmp-<pid>``, then rename; the temporary file is removed on any failure.
    Returns the bytes exported (the caller writes their record once they are checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    names = [f"f{i}" for i in range(len(module.layers))]
    try:
        with _ONE_EXPORT_AT_A_TIME, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=names,
                              dynamic_axes={"pixels": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                              opset_version=OPSET, dynamo=False)
        data = tmp.read_bytes()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_tmps(folder: Path) -> None:
    """``*.tmp-<pid>`` files whose process is gone (killed mid-export, or by a full disk): they only take space."""
    for tmp in folder.glob("*.tmp-*") if folder.is_dir() else ():
        pid = tmp.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            log.info("removing %s, left by an export that did not finish", tmp)
            tmp.unlink(missing_ok=True)


def probe_batch(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth random images: closer to photos than white noise, same every time."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()
    img = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def probe_size(batch_size: int) -> int:
    """The fewest images that ONNX Runtime splits into the same chunk sizes as a batch of ``batch_size``
    (all of the run's full batches): a graph that differs for some batch sizes is caught on those."""
    chunk = OnnxRuntime.chunk
    return batch_size if batch_size <= chunk else chunk + batch_size % chunk


def max_abs_diff(a: Runtime, b: Runtime, size: int, n: int = 4) -> float:
    x = probe_batch(size, n)
    return max(float((p.float() - q.float()).abs().max()) for p, q in zip(a(x), b(x)))


def build(backbone: Backbone, layers: Sequence[str], pooling: str = "avg", runtime: str = "auto",
          device: torch.device | str = "cpu", tolerance: float = TOLERANCE, threads: int | None = None,
          autocast_dtype: torch.dtype | None = None, batch_size: int = ExtractSettings.batch_size) -> Runtime:
    """The runtime to extract with; never fails for a runtime that is merely unavailable or inexact:
    it falls back to eager and says why. Reduced precision (``autocast_dtype``) runs eager.
    ``batch_size``: the model inputs per call the run will make (the check runs on batches like them)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    device = torch.device(device)
    module = FeatureModule(backbone, layers, pooling).eval().to(device)
    if device.type == "cpu":
        module.model.to(memory_format=torch.channels_last)
    eager = Runtime(module, autocast_dtype)
    if autocast_dtype is not None and runtime != "compile":
        return eager
    size, n = backbone.preprocess.input_size, probe_size(batch_size)
    if runtime == "eager" or (runtime == "auto" and device.type != "cpu"):
        return eager
    if runtime == "compile":
        try:
            compiled = CompiledRuntime(module)
            diff = max_abs_diff(compiled, eager, size, n) if device.type == "cpu" else 0.0
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
        return _onnx_or_eager(module, eager, backbone, layers, pooling, n, tolerance, threads)
    except OSError as exc:  # the cache folder: a full disk, no permission, a file in the way
        why = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc.strerror or _first_line(exc)
        log.warning("cannot write the ONNX cache in %s (%s): free some space there or set CNNBENCH_CACHE to a "
                    "writable folder; using eager for %s", cache_dir() / "onnx", why, backbone.name)
    except Exception as exc:  # noqa: BLE001 - exporters fail on exotic models; eager always works
        log.warning("ONNX export or load failed for %s (%s): using eager", backbone.name, _first_line(exc))
    return eager


def _onnx_or_eager(module: FeatureModule, eager: Runtime, backbone: Backbone, layers: Sequence[str], pooling: str,
                   n: int, tolerance: float, threads: int | None) -> Runtime:
    """The cached graph if it verifies and agrees with eager on ``n`` images; else exported (again) and
    checked; eager if even a fresh export differs."""
    path, key = onnx_path(backbone, layers, pooling), onnx_key(backbone, layers, pooling)
    size = backbone.preprocess.input_size
    remove_dead_tmps(path.parent)
    verified = False
    try:
        data, record = read_verified(path, key)
        verified = True
        if not record["eager_diff"] <= tolerance:  # NaN too
            return _differs(eager, backbone, record["eager_diff"], tolerance, "when it was exported")
        try:
            rt = OnnxRuntime(module, data, threads)
            diff = max_abs_diff(rt, eager, size, n)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: the bytes are those written, yet unusable
            raise CacheFault(f"ONNX Runtime cannot load it ({_first_line(exc)})") from None
        if diff <= tolerance:
            log.debug("onnx runtime for %s: max abs diff to eager %.2g", backbone.name, diff)
            return rt
        raise CacheFault(f"it differs from eager by {diff:.2g} on a batch of {n}")
    except CacheFault as fault:
        level = logging.WARNING if verified or path.exists() else logging.INFO
        log.log(level, "ONNX cache %s: %s; exporting %s again", path, fault, backbone.name)
    with _export_lock(path):
        data = None if verified else _verified_or_none(path, key)  # another process may have just exported it
        fresh = data is None
        if fresh:
            data = export_onnx(module, path, size)
        rt = OnnxRuntime(module, data, threads)
        diff = max_abs_diff(rt, eager, size, n)
        if fresh:
            try:
                write_json(record_path(path), {"key": key, **fingerprint(data), "eager_diff": diff})
            except BaseException:
                path.unlink(missing_ok=True)  # unrecorded, it would only be exported again: free the space now
                raise
    if not diff <= tolerance:
        return _differs(eager, backbone, diff, tolerance, f"on a batch of {n}, exported afresh")
    log.debug("onnx runtime for %s: max abs diff to eager %.2g", backbone.name, diff)
    return rt


def _verified_or_none(path: Path, key: dict) -> bytes | None:
    try:
        return read_verified(path, key)[0]
    except CacheFault:
        return None


def _differs(eager: Runtime, backbone: Backbone, diff: float, tolerance: float, when: str) -> Runtime:
    log.warning("ONNX Runtime differs from eager by %.2g (> %.0e) for %s %s: using eager",
                diff, tolerance, backbone.name, when)
    return eager


class _export_lock:
    """``flock`` on ``<name>.lock`` while an entry is exported and recorded: a second process exporting the
    same entry waits, then reuses it; the kernel drops the lock if its holder dies."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process exporting %s", self.path.with_suffix(""))
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
