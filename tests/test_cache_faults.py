"""Caches that lie: an ONNX export replaced by a graph that is wrong only for some batch sizes, truncated,
left without its digest, copied from another version, linked from elsewhere, or left half-written by a
full disk. Each is found, exported again (or eager used, with one line), and never used as it is."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import threading

import pytest
import torch

from cnnbench import runtime

from conftest import tiny_backbone

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

LAYERS = ["act", "logits"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))


def _exported(tmp_path):
    """A cache entry for the tiny model, exported by the runtime builder as a run would."""
    bb = tiny_backbone()
    assert runtime.build(bb, LAYERS, runtime="onnx").name == "onnx"
    (path,) = (tmp_path / "cache" / "onnx").glob("tiny-*.onnx")
    return bb, path


def _poisoned(path, offset=0.3, honest_batch=4) -> bytes:
    """The real graph, plus ``offset`` on every output whenever the batch is not ``honest_batch``
    (Shape -> Gather -> Equal -> Where): the 4-image probe of old saw nothing wrong."""
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    g = model.graph
    g.initializer.extend([
        helper.make_tensor("p_zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("p_batch", TensorProto.INT64, [], [honest_batch]),
        helper.make_tensor("p_offset", TensorProto.FLOAT, [], [offset]),
    ])
    nodes = [helper.make_node("Shape", ["pixels"], ["p_shape"]),
             helper.make_node("Gather", ["p_shape", "p_zero"], ["p_n"], axis=0),
             helper.make_node("Equal", ["p_n", "p_batch"], ["p_honest"])]
    for out in g.output:
        real = out.name + "_real"
        for node in g.node:
            node.output[:] = [real if o == out.name else o for o in node.output]
            node.input[:] = [real if i == out.name else i for i in node.input]
        nodes += [helper.make_node("Add", [real, "p_offset"], [out.name + "_lie"]),
                  helper.make_node("Where", ["p_honest", real, out.name + "_lie"], [out.name])]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


def _assert_equals_eager(rt, bb, n):
    x = runtime.probe_batch(32, n=n, seed=5)
    eager = runtime.Runtime(runtime.FeatureModule(tiny_backbone(), LAYERS))(x)
    for got, want in zip(rt(x), eager):
        assert float((got - want).abs().max()) < 1e-4


def test_the_poisoned_graph_really_lies_except_on_four_images(tmp_path):
    bb, path = _exported(tmp_path)
    _poisoned(path)
    rt = runtime.OnnxRuntime(runtime.FeatureModule(bb, LAYERS), path)
    _assert_equals_eager(rt, bb, 4)
    with pytest.raises(AssertionError):
        _assert_equals_eager(rt, bb, 7)


def test_a_cache_file_replaced_by_a_poisoned_graph_fails_its_digest_and_is_exported_again(tmp_path, caplog):
    bb, path = _exported(tmp_path)
    poison = _poisoned(path)
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        rt = runtime.build(tiny_backbone(), LAYERS, runtime="onnx")  # batches of 64: 16 images at a time
    assert rt.name == "onnx" and "changed since it was exported" in caplog.text
    assert path.read_bytes() != poison
    for n in (3, 4, 16, 21):
        _assert_equals_eager(rt, bb, n)


@pytest.mark.parametrize("batch_size, honest_batch, probe", [(None, 4, 16), (20, 16, 20)],
                         ids=["default-64-lies-off-4", "20-lies-off-16"])
def test_a_poisoned_graph_with_a_forged_digest_is_caught_on_a_batch_of_the_runs_size(
        tmp_path, caplog, batch_size, honest_batch, probe):
    """A batch of 20 runs as 16 + 4 images: the probe runs both sizes, whatever the graph does on others."""
    import hashlib

    bb, path = _exported(tmp_path)
    poison = _poisoned(path, honest_batch=honest_batch)
    record = runtime.record_path(path)
    rec = json.loads(record.read_text())
    forged = {"sha256": hashlib.sha256(poison).hexdigest(), "bytes": len(poison), "eager_diff": 0.0}
    record.write_text(json.dumps({**rec, **forged}))
    size = {} if batch_size is None else {"batch_size": batch_size}
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        rt = runtime.build(tiny_backbone(), LAYERS, runtime="onnx", **size)
    assert rt.name == "onnx" and f"differs from eager by 0.3 on a batch of {probe}" in caplog.text
    assert path.read_bytes() != poison  # exported again, once, and the fresh export agrees
    _assert_equals_eager(rt, bb, probe)


def test_a_fresh_export_that_still_differs_falls_back_to_eager_and_later_runs_do_not_export_it_again(
        tmp_path, caplog, monkeypatch):
    bb, path = _exported(tmp_path)
    real_export = runtime.export_onnx
    exports = []

    def export_that_lies(module, p, size):
        exports.append(p)
        real_export(module, p, size)
        return _poisoned(p)

    monkeypatch.setattr(runtime, "export_onnx", export_that_lies)
    path.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "eager"
    notice = [r.getMessage() for r in caplog.records if "using eager" in r.getMessage()]
    assert len(notice) == 1 and "exported afresh" in notice[0] and "\n" not in notice[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "eager"
    assert len(exports) == 1 and "when it was exported" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_cache_file_is_replaced_not_just_warned_about(tmp_path, damage):
    _, path = _exported(tmp_path)
    good = path.read_bytes()
    path.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"\x00not onnx" * 50, "empty": b""}[damage])
    bb = tiny_backbone()
    rt = runtime.build(bb, LAYERS, runtime="onnx")
    assert rt.name == "onnx" and path.stat().st_size > 1000
    _assert_equals_eager(rt, bb, 5)


@pytest.mark.parametrize("damage", ["missing", "garbage", "not-an-object"])
def test_a_cache_file_whose_digest_is_missing_or_damaged_is_exported_again(tmp_path, damage):
    _, path = _exported(tmp_path)
    record = runtime.record_path(path)
    assert record.is_file()
    if damage == "missing":
        record.unlink()
    else:
        record.write_text("{not json" if damage == "garbage" else "[1, 2]")
    before = path.stat().st_mtime_ns
    assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "onnx"
    assert path.stat().st_mtime_ns != before
    runtime.read_verified(path, runtime.onnx_key(tiny_backbone(), LAYERS, "avg"))


def test_a_cache_entry_recorded_for_another_onnxruntime_version_is_exported_again(tmp_path, caplog):
    _, path = _exported(tmp_path)
    record = runtime.record_path(path)
    rec = json.loads(record.read_text())
    rec["key"]["onnxruntime"] = "0.0.1"  # copied in from another machine's cache under the same name
    record.write_text(json.dumps(rec))
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "onnx"
    assert "another backbone, weights, opset or runtime version" in caplog.text
    assert json.loads(record.read_text())["key"]["onnxruntime"] != "0.0.1"


def test_a_cache_file_linked_from_elsewhere_is_replaced_and_its_target_left_alone(tmp_path):
    _, path = _exported(tmp_path)
    elsewhere = tmp_path / "elsewhere.onnx"
    poison = _poisoned(path)
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    bb = tiny_backbone()
    rt = runtime.build(bb, LAYERS, runtime="onnx")
    assert not path.is_symlink() and elsewhere.read_bytes() == poison
    _assert_equals_eager(rt, bb, 7)


def test_runs_exporting_at_once_export_each_entry_once_and_do_not_break_each_other(tmp_path, monkeypatch):
    real_export = torch.onnx.export
    calls = []

    def counted(*a, **k):
        calls.append(1)
        return real_export(*a, **k)

    monkeypatch.setattr(torch.onnx, "export", counted)
    other = tiny_backbone()
    with torch.no_grad():
        other.model.fc.bias += 1  # other weights: another entry
    backbones = [tiny_backbone(), tiny_backbone(), other]
    results = {}

    def run(i):
        results[i] = runtime.build(backbones[i], LAYERS, runtime="onnx")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].name for i in range(3)] == ["onnx"] * 3 and len(calls) == 2
    for bb in backbones[1:]:
        runtime.read_verified(runtime.onnx_path(bb, LAYERS, "avg"), runtime.onnx_key(bb, LAYERS, "avg"))


# -- what a full disk leaves behind ----------------------------------------------------------------------


@pytest.mark.parametrize("when", ["exporting", "writing its digest"])
def test_a_full_disk_during_the_export_leaves_no_file_behind_and_says_so_in_one_line(tmp_path, monkeypatch, caplog,
                                                                                      when):
    def writer_on_a_full_disk(module, args, f, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"\x08" * 4096)  # what fitted before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    def record_on_a_full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if when == "exporting":
        monkeypatch.setattr(torch.onnx, "export", writer_on_a_full_disk)
    else:
        monkeypatch.setattr(runtime, "write_json", record_on_a_full_disk)
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        rt = runtime.build(tiny_backbone(), LAYERS, runtime="onnx")
    assert rt.name == "eager"
    folder = tmp_path / "cache" / "onnx"
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(folder) in line and "No space left on device" in line and "\n" not in line, line
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []  # the space is free again


def test_a_temporary_file_of_a_dead_export_is_removed_on_the_next_run_and_a_live_ones_kept(tmp_path):
    folder = tmp_path / "cache" / "onnx"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = folder / f"tiny-0123456789abcdef0123.onnx.tmp-{int(dead.stdout)}"
        left.write_bytes(b"\x08" * 4096)
        busy = folder / f"tiny-0123456789abcdef0123.onnx.tmp-{live.pid}"
        busy.write_bytes(b"\x08" * 4096)
        assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "onnx"
        assert not left.exists() and busy.exists()
    finally:
        live.kill()
        live.wait()


def test_a_cache_folder_that_cannot_be_created_is_one_line_and_eager(tmp_path, monkeypatch, caplog):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="cnnbench.runtime"):
        assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "eager"
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "cannot write the ONNX cache in" in line and "CNNBENCH_CACHE" in line, line


def test_an_empty_cnnbench_cache_means_the_default_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert runtime.build(tiny_backbone(), LAYERS, runtime="onnx").name == "onnx"
    assert not (tmp_path / "onnx").exists()
    assert list((tmp_path / "home" / ".cache" / "cnnbench" / "onnx").glob("*.onnx"))
