"""``overfeat``: the paper's feature with today's public weights.

Razavian et al. used the first fully connected layer (4096-d) of OverFeat "large", an ILSVRC-2013
AlexNet-class network, L2-normalised. OverFeat's weights are not distributed for PyTorch; the
nearest public equivalents are the fc6 layers of VGG-16 and AlexNet:

- ``overfeat``: VGG-16 fc6 (timm ``vgg16.tv_in1k``, torchvision's ImageNet weights), 224 px input.
- ``overfeat-alexnet``: AlexNet fc6 (torchvision ``alexnet``, ``AlexNet_Weights.IMAGENET1K_V1``).

Layer choice: ``fc6`` is taken **after** the ReLU (OverFeat's numbering counts ReLUs as layers and the
paper's "layer 22" is the rectified output of the first FC layer); ``fc6_pre`` is the linear output
before the ReLU, and ``fc7`` the second FC layer. Input: the network's native size, whole image
resized (short side, then centre crop: ``crop: full`` in ``backbone_options`` warps instead).

Weights resolve, in order: ``weights=PATH`` (``--weights``), the hub cache, the hub. Offline with an
empty cache, the error names the file to fetch and where to put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.backbone import Backbone, BackboneOptions, Preprocess
from cnnbench.weights import fetch_or_explain, load_into

VGG_HUB = "timm/vgg16.tv_in1k"
VGG_URL = f"https://huggingface.co/{VGG_HUB}/resolve/main/model.safetensors"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@hookimpl
def register_backbones(register):
    register("overfeat", build_vgg16, options=OverfeatOptions,
             description="OverFeat-equivalent: VGG-16 fc6 (4096-d, after ReLU), ImageNet")
    register("overfeat-alexnet", build_alexnet, options=OverfeatOptions,
             description="OverFeat-equivalent: AlexNet fc6 (4096-d), ImageNet")


@dataclass(frozen=True)
class OverfeatOptions(BackboneOptions):
    """The weights options, and how the image meets the network's square input."""

    crop: Literal["center", "full"] = O.option("center", "center: the short side resized, then the central square "
                                                         "(ImageNet's evaluation crop); full: the whole image warped")


def _preprocess(crop: str) -> Preprocess:
    return Preprocess(input_size=224, resize_size=256, crop=crop, interpolation="bilinear", **IMAGENET)


def build_vgg16(options: OverfeatOptions = OverfeatOptions()) -> Backbone:
    import timm

    weights = options.weights
    if weights or not options.pretrained:
        model = timm.create_model("vgg16", pretrained=False)
        if weights:
            load_into(model, weights)
        source = str(weights) if weights else "random init"
    else:
        model = fetch_or_explain(
            lambda: timm.create_model("vgg16.tv_in1k", pretrained=True),
            what="overfeat (VGG-16)", url=VGG_URL,
            cache_hint=f"the Hugging Face cache (~/.cache/huggingface/hub, repo {VGG_HUB}); "
            "with network access once, `cnnbench layers overfeat` fills it",
        )
        source = VGG_HUB
    # timm's VGG runs fc6/fc7 as convolutions (pre_logits.fc1/fc2): 1x1 maps at 224 px -> 4096-d
    layers = {"fc6": "pre_logits.act1", "fc6_pre": "pre_logits.fc1", "fc7": "pre_logits.act2", "logits": ""}
    return Backbone("overfeat", model, _preprocess(options.crop), default_layer="fc6", layers=layers, weights=source,
                    description="VGG-16 fc6, ImageNet-1k (torchvision weights via timm)")


def build_alexnet(options: OverfeatOptions = OverfeatOptions()) -> Backbone:
    import torch
    from torchvision.models import alexnet

    weights = options.weights
    model = alexnet(weights=None)
    if weights or not options.pretrained:
        if weights:
            load_into(model, weights)
        source = str(weights) if weights else "random init"
    else:
        def fetch():
            sd = torch.hub.load_state_dict_from_url(ALEXNET_URL, map_location="cpu", check_hash=True,
                                                    weights_only=True, progress=True)
            model.load_state_dict(sd)

        fetch_or_explain(fetch, what="overfeat-alexnet", url=ALEXNET_URL,
                         cache_hint=f"{torch.hub.get_dir()}/checkpoints/alexnet-owt-7be5be79.pth")
        source = ALEXNET_URL
    layers = {"fc6": "classifier.2", "fc6_pre": "classifier.1", "fc7": "classifier.5", "logits": ""}
    return Backbone("overfeat-alexnet", model, _preprocess(options.crop), default_layer="fc6", layers=layers,
                    weights=source, description="AlexNet fc6, ImageNet-1k (torchvision weights)")
