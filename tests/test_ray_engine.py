"""``--engine ray`` on a Ray instance on this machine: the same bytes as the local engine, and nothing
lost when a worker is killed or the driver is interrupted.

Every test here runs under a timeout: a Ray pipeline that cannot schedule its work waits silently,
and must fail fast instead of hanging CI.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the ray engine needs ray[data] (pip install 'cnnbench[ray]')")

import conftest  # noqa: E402
from conftest import TinyNet, run_cli, tiny_backbone, write_image  # noqa: E402

from cnnbench import plugins, ray_engine  # noqa: E402
from cnnbench.backbone import Backbone, Preprocess  # noqa: E402
from cnnbench.errors import CnnbenchError, UserError  # noqa: E402
from cnnbench.extract import extract_split  # noqa: E402
from cnnbench.settings import ExtractSettings  # noqa: E402
from cnnbench.store import StoreWriter  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance with this machine's 2 CPUs for the whole module (3-4 s to start)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # test models live in test modules, which workers cannot import: ship them by value
    ray.cloudpickle.register_pickle_by_value(conftest)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ray-cache"))


def _extract_both(backbone, dataset, split, tmp_path, **ray_settings):
    local = extract_split(backbone, dataset, split, tmp_path / "local.h5", ExtractSettings(batch_size=16),
                          progress=False)
    remote = extract_split(backbone, dataset, split, tmp_path / "ray.h5",
                           ExtractSettings(batch_size=16, engine="ray", **ray_settings), progress=False)
    return local, remote


def _same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


# -- how many workers: the reservations that stalled, refused before anything starts ---------------


def test_plan_refuses_workers_that_leave_no_cpu_to_decode():
    """The two stalls of issue 12, as plans: 2 x 1 CPU on one 2-CPU machine, and 2 x 1 CPU on two
    1-CPU nodes. Both would hold every CPU, so no decode task could ever be scheduled."""
    with pytest.raises(UserError, match="leave no CPU to decode"):
        ray_engine.plan(ExtractSettings(num_workers=2, cpus_per_worker=1), [{"CPU": 2.0}])
    with pytest.raises(UserError, match="leave no CPU to decode"):
        ray_engine.plan(ExtractSettings(num_workers=2, cpus_per_worker=1), [{"CPU": 1.0}, {"CPU": 1.0}])


def test_plan_fits_half_cpu_workers_on_two_one_cpu_nodes():
    """2 x 0.5 CPU actors on two 1-CPU nodes leave 0.5 CPU per node, and decode tasks ask for 0.5:
    one fits beside each actor (a whole-CPU read task, as ``ray.data.range`` makes, would not)."""
    p = ray_engine.plan(ExtractSettings(num_workers=2, cpus_per_worker=0.5), [{"CPU": 1.0}, {"CPU": 1.0}])
    assert (p.workers, p.cpus_per_worker, p.decode_cpus, p.threads) == (2, 0.5, 0.5, 1)
    assert ray_engine.plan(ExtractSettings(threads_per_worker=3), [{"CPU": 8.0}]).threads == 3


def test_plan_defaults_and_gpus():
    assert ray_engine.plan(ExtractSettings(), [{"CPU": 2.0}]).workers == 1  # half the cores for the model
    assert ray_engine.plan(ExtractSettings(), [{"CPU": 16.0}, {"CPU": 16.0}]).workers == 16
    gpu = ray_engine.plan(ExtractSettings(gpus_per_worker=0.5), [{"CPU": 8.0, "GPU": 2.0}])
    assert gpu.workers == 4 and gpu.gpus_per_worker == 0.5
    with pytest.raises(UserError, match="no GPU"):
        ray_engine.plan(ExtractSettings(gpus_per_worker=1), [{"CPU": 2.0}])
    with pytest.raises(UserError, match="no node can hold one worker"):
        ray_engine.plan(ExtractSettings(cpus_per_worker=4), [{"CPU": 2.0}, {"CPU": 2.0}])


def test_without_ray_the_engine_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    digits = plugins.create("dataset", "digits")
    with pytest.raises(UserError, match=r"pip install 'cnnbench\[ray\]'"):
        extract_split(tiny_backbone(), digits, "test", tmp_path / "x.h5", ExtractSettings(engine="ray"),
                      progress=False)
    assert not (tmp_path / "x.h5").exists()


# -- byte-identical files ----------------------------------------------------------------------------


def test_digits_identical_to_local_engine(local_ray, tmp_path):
    digits = plugins.create("dataset", "digits")
    local, remote = _extract_both(tiny_backbone(), digits, "test", tmp_path)
    assert remote.written == local.written > 800
    assert _same_bytes(tmp_path / "local.h5", tmp_path / "ray.h5")


def test_flowers17_slice_identical_with_effnet(local_ray, shared_data, tmp_path):
    """The real default backbone (ONNX Runtime on the CPU) on real photos; 2 actors of 0.5 CPU."""
    flowers = _Slice(plugins.create("dataset", "flowers17", path=shared_data / "flowers17"), 40)
    local, remote = _extract_both(plugins.create("backbone", "effnet-lite0"), flowers, "all", tmp_path,
                                  num_workers=2, cpus_per_worker=0.5)
    assert remote.written == local.written == 40
    assert _same_bytes(tmp_path / "local.h5", tmp_path / "ray.h5")


def test_unreadable_images_are_skipped_and_recorded_as_locally(local_ray, tmp_path, monkeypatch):
    """With a data root relative to the driver's directory, as ``data_root: data`` gives: the
    workers, started elsewhere, read it from the driver's directory, and the skip reasons name the
    files exactly as the local engine does."""
    monkeypatch.chdir(tmp_path)
    root = Path("folder")
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(6):
                write_image(root / split / c / f"{c}{i}.png", seed=i + (10 if c == "b" else 0))
    (root / "train" / "a" / "a3.png").write_bytes(b"not a png at all")
    (root / "train" / "b" / "b5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folder = plugins.create("dataset", "imagefolder", path=root)
    assert not Path(folder.items("train")[0].image).is_absolute()
    local, remote = _extract_both(tiny_backbone(), folder, "train", tmp_path)
    assert len(remote.skipped) == len(local.skipped) >= 1
    assert sorted(remote.skipped) == sorted(local.skipped)
    assert _same_bytes(tmp_path / "local.h5", tmp_path / "ray.h5")


# -- faults ------------------------------------------------------------------------------------------


def test_a_node_that_cannot_see_the_data_root_is_an_error_not_a_skip(tmp_path):
    """The driver listed the file; a worker that cannot open it sees a different file system. Recording
    it as an unreadable image would quietly write a file of skips."""
    from cnnbench.dataset import Item

    with pytest.raises(FileNotFoundError, match="not visible on Ray node .*same path"):
        ray_engine._check_visible([Item("x", str(tmp_path / "on-the-driver-only.jpg"), 0)])
    ray_engine._check_visible([Item("y", np.zeros((8, 8, 3), np.uint8), 0)])  # in-memory images need no path


class KillOnceNet(TinyNet):
    """TinyNet whose process dies (SIGKILL, as the kernel's OOM killer or a lost node would do) on its
    third batch while ``marker`` exists; the marker is removed first, so the restarted actor lives."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker, self.calls = marker, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3 and os.path.exists(self.marker):
            os.unlink(self.marker)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


def _kill_once_backbone(marker: Path) -> Backbone:
    return Backbone("tiny", KillOnceNet(str(marker)), Preprocess(input_size=32, resize_size=36),
                    default_layer="act", layers={"logits": ""}, weights="seed0")


def test_killed_worker_loses_and_duplicates_nothing(local_ray, tmp_path):
    """Eager runtime (the model's Python code runs, so it can kill its own worker), one torch thread
    on both sides: eager CPU results depend on the intra-op thread count, the file on nothing else."""
    digits = plugins.create("dataset", "digits")
    marker = tmp_path / "kill-me"
    settings = dict(batch_size=64, runtime="eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract_split(_kill_once_backbone(marker), digits, "test", tmp_path / "local.h5", ExtractSettings(**settings),
                      progress=False)
    finally:
        torch.set_num_threads(threads)
    marker.touch()
    res = extract_split(_kill_once_backbone(marker), digits, "test", tmp_path / "ray.h5",
                        ExtractSettings(engine="ray", **settings), progress=False)
    assert not marker.exists(), "the worker was never killed: the test proved nothing"
    assert res.written == len(digits.items("test"))
    assert _same_bytes(tmp_path / "local.h5", tmp_path / "ray.h5")


def test_interrupted_driver_resumes_with_another_number_of_workers(local_ray, tmp_path, monkeypatch):
    digits = plugins.create("dataset", "digits")
    bb = tiny_backbone()
    extract_split(bb, digits, "test", tmp_path / "local.h5", ExtractSettings(batch_size=64), progress=False)

    real_append, calls = StoreWriter.append, []

    def append_then_interrupt(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:  # Ctrl-C arrives while the fourth batch is on its way to the file
            raise KeyboardInterrupt
        return real_append(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "append", append_then_interrupt)
    out = tmp_path / "ray.h5"
    with pytest.raises(KeyboardInterrupt):
        extract_split(bb, digits, "test", out, ExtractSettings(batch_size=64, engine="ray", num_workers=1),
                      progress=False)
    monkeypatch.setattr(StoreWriter, "append", real_append)
    assert not out.exists() and (tmp_path / "ray.h5.partial").is_dir()
    res = extract_split(bb, digits, "test", out, ExtractSettings(batch_size=64, engine="ray", num_workers=2,
                                                                 cpus_per_worker=0.5), progress=False)
    assert res.resumed_from == 3 * 64
    assert _same_bytes(tmp_path / "local.h5", out)


class FailingNet(TinyNet):
    def forward(self, x):
        raise ValueError("this model cannot run here")


def test_an_error_in_a_worker_is_one_line_and_writes_nothing(local_ray, tmp_path):
    digits = plugins.create("dataset", "digits")
    bb = Backbone("failing", FailingNet(), Preprocess(input_size=32, resize_size=36), default_layer="act",
                  weights="seed0")
    with pytest.raises(CnnbenchError, match="failed in a worker: .*this model cannot run here") as err:
        extract_split(bb, digits, "test", tmp_path / "x.h5", ExtractSettings(engine="ray", runtime="eager"),
                      progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.h5").exists()


def test_cli_refuses_gpu_workers_on_a_cpu_cluster_in_one_line(tmp_path):
    proc = run_cli("extract", "-b", "effnet-lite0", "-d", "digits", "--engine", "ray", "--gpus-per-worker", "1",
                   "--out", str(tmp_path / "f"), "--no-progress", check=False,
                   env_extra={"RAY_AUTH_MODE": "token"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--gpus-per-worker" in proc.stderr and "no GPU" in proc.stderr
    assert not list((tmp_path / "f").glob("*.h5")) if (tmp_path / "f").exists() else True


class _Slice:
    """The first ``n`` items of each split of a data set (a quick slice of Flowers-17)."""

    def __init__(self, dataset, n: int):
        self._dataset, self._n = dataset, n

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def items(self, split):
        return list(self._dataset.items(split))[: self._n]


def test_rows_reach_the_store_in_the_local_order(local_ray, tmp_path):
    """Preserved order, checked on the rows themselves (ids and labels), not only the bytes."""
    from cnnbench.store import read

    digits = plugins.create("dataset", "digits")
    extract_split(tiny_backbone(), digits, "train", tmp_path / "r.h5",
                  ExtractSettings(batch_size=32, engine="ray", num_workers=2, cpus_per_worker=0.5), progress=False)
    fs = read(tmp_path / "r.h5")
    items = digits.items("train")
    assert list(fs.ids) == [i.id for i in items]
    assert np.array_equal(fs.labels, [i.label for i in items])
