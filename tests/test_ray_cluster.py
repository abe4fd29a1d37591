"""``--engine ray`` on a simulated two-node cluster (``ray.cluster_utils.Cluster``, one CPU per node):
the workers are spread over the nodes as on a real cluster, and the files equal the local engine's.

Under a timeout, like every Ray test: this is the layout (2 actors x 0.5 CPU on two 1-CPU nodes)
whose pipeline stalled when a read task asked for a whole CPU.
"""

from __future__ import annotations

import logging
import sys

import pytest

ray = pytest.importorskip("ray", reason="the ray engine needs ray[data] (pip install 'cnnbench[ray]')")

import conftest  # noqa: E402
from conftest import tiny_backbone  # noqa: E402
from test_ray_engine import _Slice  # noqa: E402

from cnnbench import plugins  # noqa: E402
from cnnbench.extract import extract_split  # noqa: E402
from cnnbench.settings import ExtractSettings  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TWO_WORKERS = {"engine": "ray", "num_workers": 2, "cpus_per_worker": 0.5}


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster.wait_for_nodes()
    ray.cloudpickle.register_pickle_by_value(conftest)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(autouse=True)
def _onnx_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ray-cache"))


def test_two_nodes_digits_identical(two_nodes, tmp_path, caplog):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    digits = plugins.create("dataset", "digits")
    extract_split(tiny_backbone(), digits, "test", tmp_path / "local.h5", ExtractSettings(batch_size=32),
                  progress=False)
    with caplog.at_level(logging.INFO, logger="cnnbench.ray"):
        extract_split(tiny_backbone(), digits, "test", tmp_path / "ray.h5",
                      ExtractSettings(batch_size=32, **TWO_WORKERS), progress=False)
    assert (tmp_path / "local.h5").read_bytes() == (tmp_path / "ray.h5").read_bytes()
    per_node = [r.getMessage() for r in caplog.records if "batches per node" in r.getMessage()]
    assert per_node and per_node[-1].count("…") == 2, f"both nodes should have run a model worker: {per_node}"


def test_two_nodes_flowers17_identical(two_nodes, shared_data, tmp_path):
    flowers = _Slice(plugins.create("dataset", "flowers17", path=shared_data / "flowers17"), 32)
    effnet = plugins.create("backbone", "effnet-lite0")
    extract_split(effnet, flowers, "all", tmp_path / "local.h5", ExtractSettings(batch_size=16), progress=False)
    extract_split(effnet, flowers, "all", tmp_path / "ray.h5", ExtractSettings(batch_size=16, **TWO_WORKERS),
                  progress=False)
    assert (tmp_path / "local.h5").read_bytes() == (tmp_path / "ray.h5").read_bytes()
