"""Weights files that cannot be read give one clean line naming the file and what to do, never a
traceback; a state dict that does not fit a model names the first key that does not."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from torch import nn

from cnnbench.errors import CnnbenchError, WeightsNotFoundError
from cnnbench.weights import load_into, load_state_dict_file


def _good():
    return {"0.weight": torch.ones(4, 3), "0.bias": torch.zeros(4)}


def _safetensors_bytes(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "good.safetensors"
    save_file(_good(), str(p))
    return p.read_bytes()


def _pth_bytes(tmp_path, obj):
    p = tmp_path / "obj.pth"
    torch.save(obj, p)
    return p.read_bytes()


class NotAllowed:  # a class weights_only=True refuses to unpickle
    pass


BROKEN = {
    "truncated.safetensors": lambda tmp: _safetensors_bytes(tmp)[:-20],
    "header-only.safetensors": lambda tmp: _safetensors_bytes(tmp)[:12],
    "garbage.safetensors": lambda tmp: b"\x00\xff garbage, not a safetensors file" * 10,
    "huge-header.safetensors": lambda tmp: (2**62).to_bytes(8, "little") + b"{}",
    "empty.safetensors": lambda tmp: b"",
    "garbage.pth": lambda tmp: b"this is not a zip file nor a pickle" * 10,
    "truncated.pth": lambda tmp: _pth_bytes(tmp, _good())[:300],
    "empty.pth": lambda tmp: b"",
    "a-tensor.pth": lambda tmp: _pth_bytes(tmp, torch.zeros(3)),
    "a-list.pth": lambda tmp: _pth_bytes(tmp, [torch.zeros(3)]),
    "non-tensors.pth": lambda tmp: _pth_bytes(tmp, {"epoch": 3, "lr": 0.1}),
    "mixed.pth": lambda tmp: _pth_bytes(tmp, {"0.weight": torch.ones(4, 3), "note": "hello"}),
    "int-keys.pth": lambda tmp: _pth_bytes(tmp, {0: torch.ones(4, 3)}),
    "empty-dict.pth": lambda tmp: _pth_bytes(tmp, {}),
    "unsafe-pickle.pth": lambda tmp: _pth_bytes(tmp, {"w": NotAllowed()}),
    "plain-pickle.pkl": lambda tmp: pickle.dumps({"w": [1, 2, 3]}),
    "a-tensor.safetensors": None,  # a directory named like a file
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_weights_files_give_one_line_naming_the_file(tmp_path, name):
    path = tmp_path / name
    make = BROKEN[name]
    if make is None:
        path.mkdir()
    else:
        path.write_bytes(make(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        load_state_dict_file(path)
    msg = str(err.value)
    assert isinstance(err.value, CnnbenchError)
    assert "\n" not in msg and len(msg) < 600, msg
    assert str(path) in msg
    assert any(w in msg for w in ("save", "fetch", "pass")), msg  # says what to do


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")


def test_good_files_load_whatever_the_container(tmp_path):
    from safetensors.torch import save_file

    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in _good().items()}}, tmp_path / "ckpt.pth")
    save_file(_good(), str(tmp_path / "w.safetensors"))
    save_file(_good(), str(tmp_path / "w.bin"))  # safetensors under another suffix
    for name in ("ckpt.pth", "w.safetensors", "w.bin"):
        sd = load_state_dict_file(tmp_path / name)
        assert set(sd) == {"0.weight", "0.bias"} and torch.equal(sd["0.weight"], torch.ones(4, 3)), name


@pytest.mark.parametrize(
    "sd, words",
    [
        ({"0.weight": torch.ones(4, 3)}, ["missing", "0.bias", "(4,)"]),
        ({**_good(), "1.weight": torch.ones(2)}, ["unexpected", "1.weight", "(2,)"]),
        ({"0.weight": torch.ones(5, 3), "0.bias": torch.zeros(5)}, ["shape", "0.weight", "(5, 3)", "(4, 3)"]),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_load_into_names_the_first_key_that_does_not_fit(tmp_path, sd, words):
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsNotFoundError) as err:
        load_into(nn.Sequential(nn.Linear(3, 4)), path)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit this model" in msg and str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_into_non_strict_ignores_extra_keys_but_not_shapes(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4))
    path = tmp_path / "w.pth"
    torch.save({**_good(), "head.weight": torch.ones(2)}, path)
    load_into(net, path, strict=False)
    assert torch.equal(net[0].weight, torch.ones(4, 3))
    torch.save({"0.weight": torch.ones(5, 3)}, path)
    with pytest.raises(WeightsNotFoundError, match=r"0\.weight: file \(5, 3\), model \(4, 3\)"):
        load_into(net, path, strict=False)


def test_load_into_tolerates_missing_batchnorm_counters(tmp_path):
    net = nn.Sequential(nn.BatchNorm1d(3))
    path = tmp_path / "w.pth"
    torch.save({k: v for k, v in net.state_dict().items() if "num_batches_tracked" not in k}, path)
    load_into(net, path)  # torch fills num_batches_tracked: as before


# -- what the tensors hold: dtypes and values ----------------------------------------------------------


def _save_safetensors(tmp_path, sd, name="w.safetensors"):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_weights_for_a_float_model_are_refused_naming_file_key_and_both_dtypes(tmp_path, dtype):
    """int64 weights of the right shapes used to load (cast to float, mostly zeros): every feature row
    identical, the features stored as complete."""
    net = nn.Sequential(nn.Linear(3, 4))
    before = net[0].weight.clone()
    path = _save_safetensors(tmp_path, {k: (v * 3).to(dtype) for k, v in net.state_dict().items()})
    with pytest.raises(WeightsNotFoundError) as err:
        load_into(net, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert re.search(rf"2 dtype mismatch\(es\), first 0\.(weight|bias): file {str(dtype)[6:]}, model float32", msg), msg
    assert torch.equal(net[0].weight, before)  # nothing half-loaded


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_in_another_float_precision_load_cast_to_the_models_dtype(tmp_path, dtype):
    net = nn.Sequential(nn.Linear(3, 4))
    path = _save_safetensors(tmp_path, {k: v.to(dtype) for k, v in _good().items()})
    load_into(net, path)
    assert net[0].weight.dtype == torch.float32 and torch.equal(net[0].weight, torch.ones(4, 3))


def test_float64_values_beyond_float32_are_refused_not_turned_into_inf(tmp_path):
    path = _save_safetensors(tmp_path, {"0.weight": torch.full((4, 3), 1e300, dtype=torch.float64),
                                        "0.bias": torch.zeros(4, dtype=torch.float64)})
    with pytest.raises(WeightsNotFoundError, match=r"0\.weight: file float64, model float32"):
        load_into(nn.Sequential(nn.Linear(3, 4)), path)


def test_float_tensors_for_integer_buffers_are_refused_but_batchnorm_counters_are_not(tmp_path):
    class WithIndex(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)
            self.register_buffer("index", torch.arange(3))

    net = WithIndex()
    sd = {k: v.float() for k, v in net.state_dict().items()}  # num_batches_tracked and index as float
    with pytest.raises(WeightsNotFoundError, match=r"1 dtype mismatch\(es\), first index: file float32, model int64"):
        load_into(net, _save_safetensors(tmp_path, sd))
    sd["index"] = torch.arange(3)
    load_into(net, _save_safetensors(tmp_path, sd, "ok.safetensors"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_weights_holding_nan_or_inf_are_refused_naming_the_key(tmp_path, bad, fmt):
    sd = _good()
    sd["0.bias"] = torch.tensor([0.0, bad, 0.0, bad])
    if fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(sd, path)
    else:
        path = _save_safetensors(tmp_path, sd)
    with pytest.raises(WeightsNotFoundError) as err:
        load_state_dict_file(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'0.bias'" in msg and "2 of 4" in msg, msg


def test_a_safetensors_header_that_lies_about_offsets_is_one_line(tmp_path):
    import json
    import struct

    data = _safetensors_bytes(tmp_path)
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["0.weight"]["data_offsets"] = [0, 10**9]  # past the end of the file
    raw = json.dumps(header).encode()
    path = tmp_path / "lies.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(WeightsNotFoundError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_torch_pickle_of_a_whole_module_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(nn.Sequential(nn.Linear(3, 4)), path)  # the module, not its state_dict()
    with pytest.raises(WeightsNotFoundError, match="weights_only=True") as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_tensors_without_dense_data_are_refused_naming_the_key(tmp_path, kind):
    if kind == "meta":
        with torch.device("meta"):
            sd = nn.Sequential(nn.Linear(3, 4)).state_dict()  # built, never given weights, then saved
    else:
        sd = {**_good(), "0.weight": torch.ones(4, 3).to_sparse()}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsNotFoundError) as err:
        load_into(nn.Sequential(nn.Linear(3, 4)), path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'0.weight'" in msg and ("meta" in msg or "sparse" in msg), msg


def test_float8_weights_are_checked_for_nan_and_load_cast(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4))
    path = tmp_path / "w.pth"
    torch.save({k: v.to(torch.float8_e4m3fn) for k, v in _good().items()}, path)
    load_into(net, path)
    assert torch.equal(net[0].weight, torch.ones(4, 3))
    torch.save({"0.weight": torch.full((4, 3), float("nan")).to(torch.float8_e4m3fn), "0.bias": torch.zeros(4)}, path)
    with pytest.raises(WeightsNotFoundError, match="'0.weight' holds 12 of 12 values that are NaN"):
        load_into(net, path)
