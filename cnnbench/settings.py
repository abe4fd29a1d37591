"""Extraction settings: every choice of ``params.yaml``'s ``extract:`` section and the extract flags,
checked once, where they enter, so a mistake is one line naming the key and not a traceback (or a
silently wrong file) later.

A value can come from ``params.yaml`` (``extract.batch_size``) or a flag (``--batch-size``); the
message names both spellings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from . import options as O
from .backbone import POOLINGS
from .errors import UserError
from .images import MAX_PIXELS, VIEW_MODES
from .runtime import RUNTIMES

PRECISIONS = ("fp32", "bf16", "fp16")


def _name(key: str) -> str:
    return f"extract.{key} (--{key.replace('_', '-')})"


@dataclass(frozen=True)
class ExtractSettings:
    batch_size: int = 64
    workers: int = 0  # decode threads; 0 = one per two cores
    device: str = "auto"
    pooling: str = "avg"
    layers: tuple[str, ...] = ()
    views: str = "none"
    rotation_angles: tuple[float, float] = (-5.0, 5.0)
    spatial_levels: Any = field(default_factory=lambda: {"default": 4, "queries": 3})
    box_scale: float | None = None
    precision: str = "fp32"
    runtime: str = "auto"
    fast_decode: bool = True
    max_pixels: int | None = MAX_PIXELS
    exif_orientation: bool = True

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.__dataclass_fields__)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> "ExtractSettings":
        """``values`` from params.yaml, then the flags that were given (``None`` = not given)."""
        if values is not None and not isinstance(values, Mapping):
            raise UserError(f"params extract: must be a mapping of settings (batch_size: 64 …), not {values!r}")
        merged = dict(values or {})
        O.unknown_keys("params extract", merged, cls.keys())
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        defaults = cls()
        get = lambda k: merged.get(k, getattr(defaults, k))  # noqa: E731
        box_scale = get("box_scale")
        max_pixels = get("max_pixels")
        return cls(
            batch_size=O.as_int(_name("batch_size"), get("batch_size"), min=1),
            workers=O.as_int(_name("workers"), get("workers") if get("workers") is not None else 0, min=0),
            device=_device_name(get("device")),
            pooling=O.one_of(_name("pooling"), get("pooling"), POOLINGS),
            layers=tuple(O.str_list(_name("layers").replace("--layers", "--layer"), _list(get("layers"), "layers"))
                         if get("layers") else ()),
            views=O.one_of(_name("views"), get("views") or "none", VIEW_MODES),
            rotation_angles=tuple(O.float_list(_name("rotation_angles"), _list(get("rotation_angles"), "rotation_angles"),
                                               length=2)),
            spatial_levels=_levels(get("spatial_levels")),
            box_scale=None if box_scale is None else O.as_float(_name("box_scale"), box_scale, min=0, min_exclusive=True),
            precision=O.one_of(_name("precision"), get("precision") or "fp32", PRECISIONS),
            runtime=O.one_of(_name("runtime"), get("runtime") or "auto", RUNTIMES),
            fast_decode=O.as_bool(_name("fast_decode"), get("fast_decode")),
            max_pixels=None if max_pixels is None else O.as_int(_name("max_pixels"), max_pixels, min=1),
            exif_orientation=O.as_bool(_name("exif_orientation"), get("exif_orientation")),
        )

    def levels_for(self, split: str) -> int:
        """``spatial_levels`` is an int or {split: levels, default: levels} (paper: database 4, queries 3)."""
        if isinstance(self.spatial_levels, dict):
            return int(self.spatial_levels.get(split, self.spatial_levels.get("default", 4)))
        return int(self.spatial_levels)

    def engine_kwargs(self, split: str) -> dict[str, Any]:
        """Keyword arguments of :func:`cnnbench.extract.extract_split` for one split."""
        d = asdict(self)
        d["spatial_levels"] = self.levels_for(split)
        d["workers"] = self.workers or None
        d["layers"] = list(self.layers) or None
        return d


def _list(value: Any, key: str) -> list:
    """Lists in params.yaml must be lists: ``layers: pre_logits`` is most likely a missing ``[...]``."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{_name(key)}: {value!r} is not allowed; expected a list, e.g. [{value}]")
    return list(value)


def _levels(value: Any) -> Any:
    name = _name("spatial_levels").replace("--spatial-levels", "--levels")
    if isinstance(value, Mapping):
        return {str(k): O.as_int(f"{name}.{k}", v, min=1) for k, v in value.items()}
    return O.as_int(name, value, min=1)


def _device_name(value: Any) -> str:
    name = _name("device")
    if not isinstance(value, str) or not value:
        raise UserError(f"{name}: {value!r} is not allowed; expected auto, cpu, cuda or cuda:N")
    return value


def resolve_device(device: str | None):
    """``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` as a torch device, or one line saying why not."""
    import torch

    name = _name("device")
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{name}: {device!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(f"{name}: {device!r} asked for, but no CUDA GPU is visible here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise UserError(f"{name}: {device!r} asked for, but only {n} GPU(s) are visible (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"{name}: 'mps' asked for, but no Apple GPU is available; use --device cpu")
    elif dev.type != "cpu":
        raise UserError(f"{name}: {device!r} is not supported; expected auto, cpu, cuda or cuda:N")
    return dev


def check_precision(precision: str, device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{_name('precision')}: fp16 needs a CUDA GPU (this run is on {device}); use fp32, or bf16 on the CPU")
