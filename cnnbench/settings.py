"""Extraction settings: one frozen object from the command line (or ``params.yaml``) to the feature
file, and the only place their defaults live.

Every value is checked when the object is made, so a mistake is one line naming the key (both its
``params.yaml`` spelling and its flag), not a traceback or a silently wrong file later. The object
pickles and round-trips through JSON (:meth:`ExtractSettings.to_json`), so it can travel to workers
on other machines and is written, whole, into every feature file it produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
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
# the fields that change the features (the others only change the speed): the ones a recipe may set
# (cnnbench.recipes), and those :meth:`ExtractSettings.signature` records
FEATURE_KEYS = ("layers", "pooling", "views", "rotation_angles", "spatial_levels", "box_scale", "precision",
                "fast_decode", "max_pixels", "exif_orientation")
_FLAGS = {"layers": "--layer", "spatial_levels": "--levels", "exif_orientation": "--[no-]exif-orientation",
          "fast_decode": "--[no-]fast-decode"}


def _name(key: str) -> str:
    return f"extract.{key} ({_FLAGS.get(key, '--' + key.replace('_', '-'))})"


@dataclass(frozen=True)
class ExtractSettings:
    """How features are extracted. Fields that change the features enter the file's signature
    (:meth:`signature`, recorded in every feature file); the others (batch size, threads, device,
    runtime) only change the speed (every runtime is checked against eager PyTorch before use), and
    are left out so that the same features give the same bytes however fast they were made."""

    batch_size: int = 64  # model inputs per batch (all views of an image go through together)
    workers: int = 0  # decode threads; 0 = one per two cores
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    pooling: str = "avg"  # how spatial maps become vectors
    layers: tuple[str, ...] = ()  # () = the backbone's default layer
    views: str = "none"  # none | jitter16 (the paper's CNNaug views) | spatial (retrieval sub-patches)
    rotation_angles: tuple[float, ...] = DEFAULT_ROTATIONS  # jitter16's 2 rotations (not in the paper)
    # spatial search levels 1..h per split (paper: database 4, queries 3); an int for every split
    spatial_levels: Any = field(default_factory=lambda: {"default": 4, "queries": 3})
    box_scale: float | None = None  # None = the data set's (CUB, H3D: 1.5)
    precision: str = "fp32"  # bf16 / fp16 autocast (fp16: GPU only)
    runtime: str = "auto"  # auto | eager | compile | onnx
    fast_decode: bool = False  # JPEG draft mode: faster on big photos, not pixel-exact (README)
    max_pixels: int | None = MAX_PIXELS  # larger images are skipped from their header (image bombs)
    exif_orientation: bool = True  # turn photos upright as their EXIF tag says
    # where the work runs (never in the signature: both engines write the same bytes)
    engine: str = "local"  # local (threads on this machine) | ray (Ray Data on a Ray cluster)
    ray_address: str | None = None  # None: a Ray instance on this machine; auto: the running cluster; ray://…
    num_workers: int = 0  # model actors; 0 = one per GPU (with gpus_per_worker), else one per two CPUs
    cpus_per_worker: float = 1.0  # CPUs each model actor reserves (fractions allowed)
    gpus_per_worker: float = 0.0  # GPUs each model actor reserves (fractions share a GPU); 0 = CPU actors
    threads_per_worker: int = 0  # intra-op threads of each actor's runtime; 0 = its whole CPUs (at least 1)

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalise in place once
        put("batch_size", O.as_int(_name("batch_size"), self.batch_size, min=1, max=MAX_BATCH_SIZE))
        put("workers", O.as_int(_name("workers"), 0 if self.workers is None else self.workers, min=0,
                                max=MAX_THREADS))
        if not isinstance(self.device, str) or not self.device:
            raise UserError(f"{_name('device')}: {self.device!r} is not allowed; expected auto, cpu, cuda or cuda:N")
        O.one_of(_name("pooling"), self.pooling, POOLINGS)
        put("layers", tuple(O.str_list(_name("layers"), _list(self.layers, "layers"))) if self.layers else ())
        O.one_of(_name("views"), self.views, VIEW_MODES)
        put("rotation_angles", tuple(O.float_list(_name("rotation_angles"),
                                                  _list(self.rotation_angles, "rotation_angles"), length=2)))
        put("spatial_levels", _levels(self.spatial_levels))
        if self.box_scale is not None:
            put("box_scale", O.as_float(_name("box_scale"), self.box_scale, min=0, min_exclusive=True))
        O.one_of(_name("precision"), self.precision, PRECISIONS)
        O.one_of(_name("runtime"), self.runtime, RUNTIMES)
        put("fast_decode", O.as_bool(_name("fast_decode"), self.fast_decode))
        if self.max_pixels is not None:
            put("max_pixels", O.as_int(_name("max_pixels"), self.max_pixels, min=1))
        put("exif_orientation", O.as_bool(_name("exif_orientation"), self.exif_orientation))
        O.one_of(_name("engine"), self.engine, ENGINES)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise UserError(f"{_name('ray_address')}: {self.ray_address!r} is not allowed; expected auto, "
                            "host:port or ray://host:port (or leave it out for a Ray instance on this machine)")
        put("num_workers", O.as_int(_name("num_workers"), 0 if self.num_workers is None else self.num_workers, min=0,
                                    max=MAX_RAY_WORKERS))
        put("cpus_per_worker", _share("cpus_per_worker", self.cpus_per_worker))
        put("gpus_per_worker", _share("gpus_per_worker", self.gpus_per_worker))
        put("threads_per_worker", O.as_int(_name("threads_per_worker"),
                                           0 if self.threads_per_worker is None else self.threads_per_worker, min=0,
                                           max=MAX_THREADS))
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise UserError(f"{_name('cpus_per_worker')}: 0 CPUs and 0 GPUs per worker would let Ray start "
                            "actors without limit; give --cpus-per-worker > 0 or --gpus-per-worker > 0")

    # -- making one ----------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

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
        """The settings the features depend on (of resolved settings)."""
        sig: dict[str, Any] = {"layers": list(self.layers), "pooling": self.pooling, "views": self.views,
                               "view_names": self.view_names, "fast_decode": self.fast_decode,
                               "max_pixels": self.max_pixels, "exif_orientation": self.exif_orientation,
                               "precision": self.precision}
        if self.views == "jitter16":
            sig["rotation_angles"] = list(self.rotation_angles)
        if has_boxes:
            sig["box_scale"] = self.box_scale
        return sig


def _list(value: Any, key: str) -> list:
    """Lists in params.yaml must be lists: ``layers: pre_logits`` is most likely a missing ``[...]``."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{_name(key)}: {value!r} is not allowed; expected a list, e.g. [{value}]")
    return list(value)


def _share(key: str, value: Any) -> float:
    """What one Ray actor reserves: 0, or at least MIN_SHARE (a share of 10⁻⁹ would start 10⁹ actors)."""
    share = O.as_float(_name(key), value, min=0, max=1024)
    if 0 < share < MIN_SHARE:
        raise UserError(f"{_name(key)}: {share:g} is not allowed; expected 0 or at least {MIN_SHARE:g} (at most "
                        f"{1 / MIN_SHARE:.0f} workers share one {key[:3].upper()}), e.g. 0.5")
    return share


def _levels(value: Any) -> Any:
    fix = "spatial search makes sum(l² for l = 1..levels) views of every image (the paper: 4, i.e. 30 views)"
    if isinstance(value, Mapping):
        return {str(k): O.as_int(f"{_name('spatial_levels')}.{k}", v, min=1, max=MAX_SPATIAL_LEVELS, fix=fix)
                for k, v in value.items()}
    return O.as_int(_name("spatial_levels"), value, min=1, max=MAX_SPATIAL_LEVELS, fix=fix)


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
