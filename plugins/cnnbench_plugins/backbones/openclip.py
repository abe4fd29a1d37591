"""``openclip:<arch>/<pretrained tag>``: the image tower of an open-clip model,
e.g. ``openclip:ViT-B-32/laion2b_s34b_b79k`` or ``openclip:RN50/openai``.

Feature: the image embedding (the tower's output, what CLIP compares with text); every module of the
tower is also a layer. Preprocessing: the model's own (size, mean/std, interpolation; shortest side
resized then centre-cropped). Weights: ``weights=PATH`` (a state dict of the whole CLIP model or of its
image tower), else open-clip's hub cache, else the hub.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, BackboneOptions, Preprocess
from cnnbench.errors import CnnbenchError, WeightsNotFoundError
from cnnbench.weights import fetch_or_explain, load_fitting, load_state_dict_file


@hookimpl
def register_backbones(register):
    register("openclip:", build, prefix=True, options=BackboneOptions,
             description="open-clip image tower: openclip:<arch>/<pretrained tag>")


def build(spec: str, options: BackboneOptions = BackboneOptions()) -> Backbone:
    import open_clip

    weights, pretrained = options.weights, options.pretrained
    arch, _, tag = spec.partition("/")
    if arch not in open_clip.list_models():
        raise CnnbenchError(f"open-clip has no architecture {arch!r}; known: {', '.join(open_clip.list_models()[:20])} …")
    cfg = (open_clip.get_pretrained_cfg(arch, tag) or {}) if tag else {}
    if weights or not pretrained:
        # openai weights were trained with QuickGELU: build the same graph the tag would
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=bool(cfg.get("quick_gelu")))
        source = "random init"
    if weights:
        sd = load_state_dict_file(weights)
        target = model if any(k.startswith("visual.") for k in sd) else model.visual
        why = load_fitting(target, sd)
        if why is not None:
            raise WeightsNotFoundError(f"{weights} does not fit open-clip {arch}: {why}")
        source = str(weights)
    elif pretrained:
        if not tag:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise CnnbenchError(f"name the pretrained weights: openclip:{arch}/<tag>, tags: {', '.join(tags) or '(none)'}")
        hub = f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else ""
        url = " or ".join(u for u in (hub, cfg.get("url", "")) if u) or tag
        model = fetch_or_explain(
            lambda: open_clip.create_model(arch, pretrained=tag),
            what=f"openclip:{spec}", url=url,
            cache_hint="the Hugging Face / open-clip cache (~/.cache/huggingface/hub or ~/.cache/clip)",
        )
        source = f"{arch}/{tag}"
    visual = model.visual
    pc = getattr(visual, "preprocess_cfg", {}) or {}
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    preprocess = Preprocess(
        input_size=int(size), resize_size=int(size), crop="center",
        interpolation=pc.get("interpolation", "bicubic"),
        mean=tuple(pc.get("mean", open_clip.OPENAI_DATASET_MEAN)), std=tuple(pc.get("std", open_clip.OPENAI_DATASET_STD)),
    )
    return Backbone(f"openclip:{spec}", visual, preprocess, default_layer="embedding", layers={"embedding": ""},
                    weights=source, description=f"open-clip {arch} image tower")
