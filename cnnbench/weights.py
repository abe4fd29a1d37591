"""Loading weights safely, from a file the user names, a hub cache, or the hub.

Files are read with ``torch.load(..., weights_only=True)`` or safetensors, never unpickled freely.
When nothing is local and the hub cannot be reached, the error says exactly which file to fetch and
where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import WeightsNotFoundError


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A state dict from ``.safetensors`` or a torch file (weights only); unwraps common containers."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise WeightsNotFoundError(
                f"{path} is not a weights-only torch file ({type(exc).__name__}: {exc}); cnnbench loads "
                "weights with weights_only=True for safety: save a plain state_dict (torch.save(model.state_dict(), path))"
            ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsNotFoundError(f"{path} does not hold a state dict (found {type(sd).__name__})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_into(model, path: str | os.PathLike, strict: bool = True) -> None:
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd, strict=strict)
    except RuntimeError as exc:
        raise WeightsNotFoundError(f"{path} does not fit this model: {str(exc).splitlines()[0]} …") from exc


def fetch_or_explain(fetch: Callable[[], object], *, what: str, url: str, cache_hint: str) -> object:
    """Run ``fetch`` (cache lookup then download); turn network failures into a message that names
    the file to fetch and where to put it."""
    try:
        return fetch()
    except WeightsNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, DNS, HTTP, hub errors all mean "not available"
        raise WeightsNotFoundError(
            f"{what}: weights are not in the local cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).\n"
            f"Fetch {url}\nthen either pass --weights PATH (or params.yaml backbone_options: weights), "
            f"or put it in the cache: {cache_hint}"
        ) from exc
