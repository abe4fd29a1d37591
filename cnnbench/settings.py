"""Extraction settings: one frozen object from the command line (or ``params.yaml``) to the feature
file, and the only place their defaults live.

Every value is checked when the object is made, so a mistake is one line naming the key (both its
``params.yaml`` spelling and its flag), not a traceback or a silently wrong file later. The object
pickles and round-trips through JSON (:meth:`ExtractSettings.to_json`), so it can travel to workers
on other machines and is written, whole, into every feature file it produced.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from . import options as O
from .errors import UserError
from .images import DEFAULT_ROTATIONS, MAX_PIXELS, VIEW_MODES, view_names
from .preprocess import POOLINGS

PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("auto", "eager", "compile", "onnx")
ENGINES = ("local", "ray")
# Upper bounds, so that one mistyped value cannot ask for unbounded work or memory:
# spatial search makes sum(l² for l = 1..h) ≈ h³/3 views of every image: the paper's 4 levels are 30 views;
# 8 levels are 204 (7x the work), whose smallest patches are an eighth of the image side, already
# finer than the objects retrieval looks for; 3000 levels would be 9·10⁹ views per image.
MAX_SPATIAL_LEVELS = 8
MAX_BATCH_SIZE = 16384  # model inputs per batch: 2.3 GiB of uint8 pixels at 224², more as float
MAX_THREADS = 1024  # decode threads, intra-op threads: each decode thread holds a batch in flight
MAX_RAY_WORKERS = 4096  # model actors on a Ray cluster
MIN_SHARE = 0.01  # the least CPU or GPU share a Ray model actor may reserve (besides 0)


def _name(key: str) -> str:
    """``extract.fast_decode (--[no-]fast-decode)``: a setting as messages name it, both spellings."""
    return f"extract.{key} ({flag_of(key)})"


def flag_of(key: str) -> str:
    f = _FIELDS[key]
    flag = f.metadata.get("flag") or "--" + key.replace("_", "-")
    return "--[no-]" + flag[2:] if _HINTS.get(key) is bool else flag


def _list(name: str, value: Any) -> list:
    """Lists in params.yaml must be lists: ``layers: pre_logits`` is most likely a missing ``[...]``."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{name}: {value!r} is not allowed; expected a list, e.g. [{value}]")
    return list(value)


def _count(max: int):
    """A count where 0 (or null) means "choose for me"."""
    return lambda name, value: O.as_int(name, 0 if value is None else value, min=0, max=max)


def _device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{name}: {value!r} is not allowed; expected auto, cpu, cuda or cuda:N")
    return value


def _layers(name: str, value: Any) -> tuple[str, ...]:
    return tuple(O.str_list(name, _list(name, value))) if value else ()


def _angles(name: str, value: Any) -> tuple[float, ...]:
    return tuple(O.float_list(name, _list(name, value), length=2))


def _address(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{name}: {value!r} is not allowed; expected auto, host:port or ray://host:port (or leave it "
                        "out for a Ray instance on this machine)")
    return value


def _share(name: str, value: Any) -> float:
    """What one Ray actor reserves: 0, or at least MIN_SHARE (a share of 10⁻⁹ would start 10⁹ actors)."""
    share = O.as_float(name, value, min=0, max=1024)
    if 0 < share < MIN_SHARE:
        what = "CPU" if "cpus" in name else "GPU"
        raise UserError(f"{name}: {share:g} is not allowed; expected 0 or at least {MIN_SHARE:g} (at most "
                        f"{1 / MIN_SHARE:.0f} workers share one {what}), e.g. 0.5")
    return share


def _levels(name: str, value: Any) -> Any:
    fix = "spatial search makes sum(l² for l = 1..levels) views of every image (the paper: 4, i.e. 30 views)"
    if isinstance(value, Mapping):
        return {str(k): O.as_int(f"{name}.{k}", v, min=1, max=MAX_SPATIAL_LEVELS, fix=fix) for k, v in value.items()}
    return O.as_int(name, value, min=1, max=MAX_SPATIAL_LEVELS, fix=fix)


def setting(default: Any, help: str, *, feature: bool = False, where: bool = False, **kw) -> Any:
    """One extraction setting: :func:`cnnbench.options.option` plus what kind it is. ``feature``: it
    changes the features (it enters the file's signature, a recipe may set it); ``where``: it says
    where the work runs (left out of DVC's params: moving to a cluster reruns nothing); neither: it
    only changes the speed. ``flag``: the command-line flag, when not ``--<name-with-dashes>``
    (``""``: none)."""
    field_ = O.option(default, help, **kw)
    field_.metadata = types.MappingProxyType({**field_.metadata, "feature": feature, "where": where})
    return field_


@dataclass(frozen=True)
class ExtractSettings:
    """How features are extracted. Fields that change the features enter the file's signature
    (:meth:`signature`, recorded in every feature file); the others (batch size, threads, device,
    runtime) only change the speed (every runtime is checked against eager PyTorch before use), and
    are left out so that the same features give the same bytes however fast they were made.

    Each field is declared once, here: its default, type, check and help; the command line's flags
    (``cnnbench extract --help``), the messages, :data:`FEATURE_KEYS` and the ``params.yaml`` check
    all come from these declarations."""

    batch_size: int = setting(64, "Model inputs per batch (all views of an image go through together).", min=1,
                              max=MAX_BATCH_SIZE)
    workers: int = setting(0, "Decode threads (0: one per two cores).", check=_count(MAX_THREADS))
    device: str = setting("auto", "cpu, cuda, cuda:1, mps … (auto: a GPU when there is one).", check=_device)
    pooling: str = setting("avg", "How spatial maps become vectors.", choices=POOLINGS, feature=True)
    layers: tuple[str, ...] = setting((), "Layer(s) to store (default: the backbone's).", check=_layers,
                                      feature=True, flag="--layer")
    views: str = setting("none", "none: one view; jitter16: the paper's 16 CNNaug views; spatial: sub-patches for "
                                 "spatial search.", choices=VIEW_MODES, feature=True)
    rotation_angles: tuple[float, ...] = setting(DEFAULT_ROTATIONS, "jitter16's 2 rotations in degrees (not in the "
                                                 "paper).", check=_angles, feature=True, flag="")
    spatial_levels: int | dict = setting({"default": 4, "queries": 3}, "Spatial search levels (patches: sum of l² for "
                                         "l=1..levels; the paper: 4 for the database, 3 for queries).", check=_levels,
                                         feature=True, flag="--levels")
    box_scale: float | None = setting(None, "Enlarge item boxes by this factor (default: the data set's; CUB, H3D: "
                                            "1.5).", min=0, min_exclusive=True, feature=True)
    precision: str = setting("fp32", "Autocast precision (fp16: GPU only).", choices=PRECISIONS, feature=True)
    runtime: str = setting("auto", "Inference runtime (auto: the fastest exact one: ONNX Runtime on CPU, eager on "
                                   "GPU).", choices=RUNTIMES)
    fast_decode: bool = setting(False, "JPEG draft mode when a photo's short side is at least twice the resize "
                                       "size: faster, not pixel-exact (README has the measured effect).", feature=True)
    max_pixels: int | None = setting(MAX_PIXELS, "Skip (and record) images larger than this many pixels, from "
                                                 "their header (image bombs).", min=1, feature=True)
    exif_orientation: bool = setting(True, "Turn photos upright as their EXIF orientation tag says.", feature=True)
    # where the work runs (never in the signature: both engines write the same bytes)
    engine: str = setting("local", "local: threads on this machine; ray: Ray Data on a Ray cluster (same bytes).",
                          choices=ENGINES, where=True)
    ray_address: str | None = setting(None, "Ray cluster to run on: auto (the one `ray start` made), host:port or "
                                            "ray://host:port (default: a Ray instance on this machine).",
                                      check=_address, where=True)
    num_workers: int = setting(0, "Ray model workers (0: one per GPU share, else one per two CPUs).",
                               check=_count(MAX_RAY_WORKERS), where=True)
    cpus_per_worker: float = setting(1.0, "CPUs each Ray model worker reserves (fractions allowed).", check=_share,
                                     where=True)
    gpus_per_worker: float = setting(0.0, "GPUs each Ray model worker reserves (0: CPU workers; 0.5: two workers "
                                          "share a GPU).", check=_share, where=True)
    threads_per_worker: int = setting(0, "Intra-op threads of each Ray model worker (0: its whole CPUs, at least 1).",
                                      check=_count(MAX_THREADS), where=True)

    def __post_init__(self) -> None:
        for f in fields(self):  # frozen: normalise in place once, each value as its field declares
            value = O.checker(_HINTS[f.name], f.metadata)(_name(f.name), getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise UserError(f"{_name('cpus_per_worker')}: 0 CPUs and 0 GPUs per worker would let Ray start "
                            "actors without limit; give --cpus-per-worker > 0 or --gpus-per-worker > 0")

    # -- making one ----------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def declared(cls):
        """The fields with their declarations (help, flag, kind): what the command line is made from."""
        return [(f, _HINTS[f.name]) for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None,
                     overrides: Mapping[str, Any] | None = None) -> "ExtractSettings":
        """``values`` from params.yaml's ``extract:``, then the flags that were given (``None``: not given)."""
        if values is not None and not isinstance(values, Mapping):
            raise UserError(f"params extract: must be a mapping of settings (batch_size: 64 …), not {values!r}")
        merged = dict(values or {})
        O.unknown_keys("params extract", merged, cls.keys())
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**merged)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; ``ExtractSettings.from_json(s.to_json()) == s``."""
        d = asdict(self)
        d["layers"], d["rotation_angles"] = list(self.layers), list(self.rotation_angles)
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ExtractSettings":
        return cls.from_mapping(data)

    # -- one split -----------------------------------------------------------------------------------
    def levels_for(self, split: str) -> int:
        if isinstance(self.spatial_levels, Mapping):
            return int(self.spatial_levels.get(split, self.spatial_levels.get("default", 4)))
        return int(self.spatial_levels)

    def resolve(self, split: str, dataset, backbone) -> "ExtractSettings":
        """The settings of one split with nothing left open: its spatial levels, the data set's box
        scale, the backbone's default layer. What the engine runs and the file records."""
        for layer in self.layers:
            backbone.resolve_layer(layer)  # an unknown layer fails before any work
        fixed = float(getattr(dataset, "box_scale", 1.0))
        if getattr(dataset, "box_scale_fixed", False) and self.box_scale is not None and self.box_scale != fixed:
            raise UserError(f"{_name('box_scale')}: {self.box_scale:g} would change the query crops of "
                            f"{dataset.name}, whose protocol crops each query to its box exactly ({fixed:g}); "
                            "leave it unset (null) for this data set")
        return replace(
            self,
            spatial_levels=self.levels_for(split),
            box_scale=float(dataset.box_scale if self.box_scale is None else self.box_scale),
            layers=self.layers or (backbone.default_layer,),
        )

    @property
    def view_names(self) -> list[str]:
        return view_names(self.views, self.levels_for("default"))

    @property
    def images_per_batch(self) -> int:
        """Images per model call: ``batch_size`` counts model inputs, and all of an image's views go
        through the model together."""
        return max(1, self.batch_size // len(self.view_names))

    def signature(self, has_boxes: bool) -> dict[str, Any]:
        """The settings the features depend on (of resolved settings): every ``feature`` setting, the
        spatial levels as the view names they make, the angles only where views rotate, the box scale
        only where items have boxes."""
        sig: dict[str, Any] = {k: O.plain(getattr(self, k)) for k in FEATURE_KEYS
                               if k not in ("spatial_levels", "rotation_angles", "box_scale")}
        sig["view_names"] = self.view_names
        if self.views == "jitter16":
            sig["rotation_angles"] = list(self.rotation_angles)
        if has_boxes:
            sig["box_scale"] = self.box_scale
        return sig


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


_FIELDS = {f.name: f for f in fields(ExtractSettings)}
_HINTS = typing.get_type_hints(ExtractSettings)
# the fields that change the features (the others only change the speed): the ones a recipe may set
# (cnnbench.recipes), and those :meth:`ExtractSettings.signature` records
FEATURE_KEYS = tuple(k for k, f in _FIELDS.items() if f.metadata["feature"])
# the fields that say where the work runs: DVC's extract stages leave them out of their params
WHERE_KEYS = tuple(k for k, f in _FIELDS.items() if f.metadata["where"])
