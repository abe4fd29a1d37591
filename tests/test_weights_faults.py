"""Weights files that cannot be read give one clean line naming the file and what to do, never a
traceback; a state dict that does not fit a model names the first key that does not."""

from __future__ import annotations

import pickle

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
