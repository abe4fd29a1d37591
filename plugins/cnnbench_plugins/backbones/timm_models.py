"""``timm:<model name>``: any timm model, e.g. ``timm:resnet50.a1_in1k``, ``timm:vit_base_patch16_224``.

Preprocessing (input size, interpolation, crop, mean/std) comes from the model's ``pretrained_cfg``.
Named layers: ``pre_logits`` (the classifier's input: pooled features for CNNs, the pooled token for
ViTs; the default), ``logits``, and every module name. Weights: ``weights=PATH`` (``--weights``), else
timm's hub cache, else the hub.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.backbone import Backbone, BackboneOptions, Preprocess
from cnnbench.errors import CnnbenchError
from cnnbench.weights import fetch_or_explain, load_into


@hookimpl
def register_backbones(register):
    register("timm:", build, prefix=True, options=BackboneOptions,
             description="any timm model; preprocessing from its pretrained_cfg")


def build(model_name: str, options: BackboneOptions = BackboneOptions()) -> Backbone:
    import timm

    weights = options.weights
    arch = model_name.split(".")[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:10]
        raise CnnbenchError(f"timm has no model {model_name!r}; similar: {', '.join(close) or '(none)'}")
    if weights or not options.pretrained:
        model = timm.create_model(model_name, pretrained=False)
        if weights:
            load_into(model, weights)
        source = str(weights) if weights else "random init"
    else:
        cfg = timm.models.get_pretrained_cfg(model_name)
        hub = getattr(cfg, "hf_hub_id", None) if cfg else None
        url = f"https://huggingface.co/{hub}" if hub else f"timm's default weights for {model_name}"
        model = fetch_or_explain(
            lambda: timm.create_model(model_name, pretrained=True),
            what=f"timm:{model_name}", url=url,
            cache_hint="the Hugging Face cache (~/.cache/huggingface/hub), or save a state_dict and pass --weights",
        )
        source = hub or model_name
    pc = model.pretrained_cfg
    data_cfg = timm.data.resolve_data_config({}, model=model)
    preprocess = Preprocess.from_timm_cfg(
        {**pc, **{k: data_cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct") if k in data_cfg}}
    )
    classifier = pc.get("classifier") or "fc"
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0]
    modules = dict(model.named_modules())
    layers = {"logits": ""}
    if classifier in modules:
        layers = {"pre_logits": f"{classifier}:input", "logits": ""}
    return Backbone(f"timm:{model_name}", model, preprocess,
                    default_layer="pre_logits" if "pre_logits" in layers else "logits",
                    layers=layers, weights=source, description=f"timm {model_name}")
