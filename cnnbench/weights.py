"""Loading weights safely, from a file the user names, a hub cache, or the hub.

Files are read with ``torch.load(..., weights_only=True)`` or safetensors, never unpickled freely.
When nothing is local and the hub cannot be reached, the error says exactly which file to fetch and
where to put it.

What a file holds is checked as well as how it reads: every tensor of a floating dtype must be finite
(NaN or inf weights give NaN features), and each tensor must fit the model's in shape and in kind of
dtype. Floating weights in another floating precision (float16, bfloat16, float64 for float32) are
cast on loading, as ``load_state_dict`` does, unless a value does not fit the model's dtype; integer
or bool tensors for floating parameters (or floating for integer buffers) are refused: a cast would
give features, all of them wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from .errors import WeightsNotFoundError


_SAVE_HINT = (
    "save a plain state dict of tensors: torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(model.state_dict(), path)"
)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: error messages stay one line."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's messages carry terminal colours
    text = next((line.strip() for line in plain.splitlines() if line.strip()), "")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError: all "unreadable"
        raise WeightsNotFoundError(
            f"{path} is not a readable .safetensors file ({_first_line(exc)}); it may be truncated or "
            "not safetensors at all: fetch it again, or save it again with "
            "safetensors.torch.save_file(model.state_dict(), path)"
        ) from exc


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A state dict (``{name: tensor}``) from ``.safetensors`` or a torch file (weights only); unwraps
    common containers (``{"state_dict": ...}``) and a ``module.`` prefix.

    Anything else (a missing or empty file, a directory, garbage, a truncated file, a pickle that
    needs more than ``weights_only=True``, a tensor or list instead of a dict, a dict of non-tensors)
    raises :class:`WeightsNotFoundError` with one line naming the file and what to do.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise WeightsNotFoundError(f"weights file {path} is a directory; pass the weights file inside it")
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist; check the path given as weights")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsNotFoundError(f"weights file {path} cannot be read ({_first_line(exc)})") from exc
    if size == 0:
        raise WeightsNotFoundError(f"weights file {path} is empty (0 bytes): fetch or save it again")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):  # also under another suffix
        sd = _load_safetensors(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            if "weights only load failed" in str(exc).lower():
                why = "it holds pickled Python objects besides tensors, which weights_only=True refuses"
            else:
                why = f"unreadable, truncated or not a torch file: {_first_line(exc)}"
            raise WeightsNotFoundError(
                f"{path} is not a weights-only torch file ({why}); cnnbench loads weights with "
                f"weights_only=True for safety: fetch it again, or {_SAVE_HINT}"
            ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsNotFoundError(
            f"{path} does not hold a state dict (found a {type(sd).__name__}, not a dict of tensors): {_SAVE_HINT}"
        )
    if not sd:
        raise WeightsNotFoundError(f"{path} holds an empty dict, no tensors: {_SAVE_HINT}")
    for k, v in sd.items():
        if not isinstance(k, str):
            raise WeightsNotFoundError(
                f"{path} is not a state dict: key {k!r} is a {type(k).__name__}, not a parameter name: {_SAVE_HINT}"
            )
        if not isinstance(v, torch.Tensor):
            raise WeightsNotFoundError(
                f"{path} is not a state dict: entry {k!r} is a {type(v).__name__}, not a tensor: {_SAVE_HINT}"
            )
        if v.is_meta or v.layout != torch.strided:
            what = "holds no data (a model on the meta device)" if v.is_meta else f"is {v.layout}, not dense"
            raise WeightsNotFoundError(f"{path}: tensor {k!r} {what}: {_SAVE_HINT}, from a model with real weights")
        if not (v.is_floating_point() or v.is_complex()):
            continue
        finite = torch.isfinite(v.float() if v.dtype.itemsize == 1 else v)  # float8 has no isfinite of its own
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise WeightsNotFoundError(
                f"{path}: tensor {k!r} holds {bad} of {v.numel()} values that are NaN or infinite "
                "(a diverged or damaged checkpoint); fetch it again, or save the weights of a working model"
            )
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _shape(t) -> str:
    return str(tuple(t.shape))


def _dtype(t) -> str:
    return str(t.dtype).removeprefix("torch.")


def _kind(t) -> str:
    return "floating" if t.is_floating_point() else "complex" if t.is_complex() else "integer"


def _dtype_misfit(src, dst) -> bool:
    """A tensor that a cast to the model's dtype would turn into other values: another kind (integer or
    bool for floating, floating for integer), or floating values beyond the model's floating range."""
    import torch

    if _kind(src) != _kind(dst):
        return True
    wider = _kind(src) == "floating" and src.dtype.itemsize > dst.dtype.itemsize and src.numel()
    return bool(wider) and float(src.abs().max()) > torch.finfo(dst.dtype).max


def state_dict_mismatch(source: dict, target: dict, *, strict: bool = True, names: dict | None = None) -> str | None:
    """Why ``source`` does not fit ``target`` (both ``{key: tensor}``), in one line, or ``None`` if it fits.

    Names the first missing key, the first unexpected key, the first shape mismatch and the first dtype
    misfit (see :func:`_dtype_misfit`), each with shapes or dtypes and a count. With ``strict=False``
    only shape and dtype mismatches count. ``num_batches_tracked`` buffers missing from ``source`` (or
    of another dtype) are not counted: ``load_state_dict`` fills them, and they do not change a
    frozen model's features. ``names`` maps a
    key to the name it has (or would have) in the file, when the caller renamed keys; keys are then
    shown as ``file name (as model key)``.
    """
    names = names or {}

    def shown(key: str) -> str:
        return f"{names[key]} (as {key})" if key in names and names[key] != key else key

    parts = []
    if strict:
        missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in source if k not in target]
        if missing:
            k = missing[0]
            parts.append(f"{len(missing)} missing key(s), first {shown(k)} {_shape(target[k])}")
        if unexpected:
            k = unexpected[0]
            parts.append(f"{len(unexpected)} unexpected key(s), first {shown(k)} {_shape(source[k])}")
    bad = [k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape)]
    if bad:
        k = bad[0]
        parts.append(
            f"{len(bad)} shape mismatch(es), first {shown(k)}: file {_shape(source[k])}, model {_shape(target[k])}"
        )
    cast = [k for k in source if k in target and k not in bad and not k.endswith("num_batches_tracked")
            and _dtype_misfit(source[k], target[k])]
    if cast:
        k = cast[0]
        parts.append(
            f"{len(cast)} dtype mismatch(es), first {shown(k)}: file {_dtype(source[k])}, model {_dtype(target[k])}"
        )
    return "; ".join(parts) or None


def load_fitting(target, sd: dict, strict: bool = True) -> str | None:
    """Load ``sd`` into the module ``target`` if it fits (checked first: torch would cast an integer
    tensor into a float parameter without a word); else why not, in one line."""
    why = state_dict_mismatch(sd, target.state_dict(), strict=strict)
    if why is not None:
        return why
    try:
        target.load_state_dict(sd, strict=strict)
    except RuntimeError as exc:  # torch saw something else; its first line is only a header
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:300]
    return None


def load_into(model, path: str | os.PathLike, strict: bool = True) -> None:
    """Load the state dict in ``path`` into ``model``; if it does not fit, one line names the first
    missing key, unexpected key, shape and dtype mismatch."""
    why = load_fitting(model, load_state_dict_file(path), strict=strict)
    if why is not None:
        raise WeightsNotFoundError(
            f"{path} does not fit this model: {why}; pass the weights file saved from this architecture"
        )


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
