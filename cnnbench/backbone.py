"""What a backbone is: a frozen model, its preprocessing, and the named layers it can return.

A backbone never reads image files; the extraction engine feeds it normalised batches built from
:class:`Preprocess`, the one place that says how a model wants its pixels (like timm's
``pretrained_cfg``). A backbone is built by a function that takes :class:`BackboneOptions` (or a
subclass declaring more options).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from . import options as O
from .errors import UserError
from .preprocess import POOLINGS, Preprocess

__all__ = ["Backbone", "BackboneOptions", "Preprocess", "POOLINGS", "capture_layers"]


def _weights_file(name: str, value) -> str | None:
    """A weights file's name (a path object too); empty text (``weights: ""``) names none."""
    return None if value == "" else O.as_path(name, value)


@dataclass(frozen=True)
class BackboneOptions(O.Options):
    """What every backbone with weights takes; a backbone with more options extends this class
    (``OverfeatOptions`` adds ``crop``). ``weights`` says where, not what: the feature files record
    the weights by the digest of their tensors (:meth:`Backbone.weights_digest`), so moving the file
    changes no signature and it is not :meth:`~cnnbench.options.Options.recorded`."""

    weights: str | None = O.option(None, "a local weights file, a state dict (also --weights); none: the "
                                         "backbone's published weights", check=_weights_file, record=False)
    pretrained: bool = O.option(True, "false: random weights (listing layers, tests)")


@dataclass
class Backbone:
    """A frozen model plus everything needed to feed it and read features out of it.

    ``layers`` maps public layer names to module names of ``model`` (``""`` is the model's output).
    Any other named module can be asked for by its module name.
    """

    name: str
    model: nn.Module
    preprocess: Preprocess
    default_layer: str
    layers: dict[str, str] = field(default_factory=dict)
    weights: str = ""  # where the weights came from, recorded in the feature files
    description: str = ""
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.resolve_layer(self.default_layer)

    def weights_digest(self) -> str:
        """SHA-256 of the model's tensors (names and bytes): what the features depend on, wherever the
        weights came from. Computed once; the model is frozen."""
        if self._digest is None:
            h = hashlib.sha256()
            for name, t in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def _module_names(self) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n]

    def layer_names(self) -> list[str]:
        """Public aliases first, then every named module."""
        return list(self.layers) + [n for n in self._module_names() if n not in self.layers]

    def resolve_layer(self, layer: str) -> str:
        if layer in self.layers:
            target = self.layers[layer]
            module = target[: -len(":input")] if target.endswith(":input") else target
            if module and module not in dict(self.model.named_modules()):
                raise UserError(f"{self.name}: layer alias {layer!r} points at missing module {module!r}")
            return target
        if layer in dict(self.model.named_modules()) and layer:
            return layer
        aliases = ", ".join(self.layers)
        raise UserError(
            f"backbone {self.name!r} has no layer {layer!r}; named layers: {aliases}; "
            f"run `cnnbench layers {self.name}` for all {len(self._module_names())} module names"
        )

    def to(self, device: torch.device | str) -> "Backbone":
        self.model.to(device)
        return self

    def features(self, x: torch.Tensor, layers: Iterable[str], pooling: str = "avg") -> dict[str, torch.Tensor]:
        """One forward pass; returns a 2-D (batch, dim) tensor per requested layer.

        Spatial maps (N, C, H, W) are pooled over H, W; token sequences (N, T, C) are averaged
        over tokens. ``pooling`` is ``"avg"`` or ``"max"``.
        """
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        layers = list(dict.fromkeys(layers))
        targets = {layer: self.resolve_layer(layer) for layer in layers}
        captured: dict[str, torch.Tensor] = {}
        handles = capture_layers(self.model, targets.values(), captured)
        try:
            output = self.model(x)
        finally:
            for h in handles:
                h.remove()
        captured[""] = output
        return {layer: _flatten(captured[m], pooling) for layer, m in targets.items()}


def capture_layers(model: nn.Module, targets: Iterable[str], captured: dict) -> list:
    """Forward hooks that store, on every forward pass, each target's tensor in ``captured``:
    ``"name"`` a module's output, ``"name:input"`` its input (``""``, the model's output, needs no
    hook). Tensors are cloned, so a later in-place op (ReLU(inplace)) cannot change them. Returns
    the hook handles; ``handle.remove()`` leaves the model as it was."""
    modules = dict(model.named_modules())
    handles = []
    for target in sorted(set(targets) - {""}):
        if target.endswith(":input"):

            def pre_hook(_mod, inp, _name=target):
                captured[_name] = inp[0].clone()

            handles.append(modules[target[: -len(":input")]].register_forward_pre_hook(pre_hook))
        else:

            def hook(_mod, _inp, out, _name=target):
                captured[_name] = out.clone() if isinstance(out, torch.Tensor) else out

            handles.append(modules[target].register_forward_hook(hook))
    return handles


def _flatten(t: torch.Tensor, pooling: str) -> torch.Tensor:
    if isinstance(t, (tuple, list)):
        t = t[0]
    if t.ndim == 4:
        return t.amax(dim=(2, 3)) if pooling == "max" else t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.amax(dim=1) if pooling == "max" else t.mean(dim=1)
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], -1)
