"""params.yaml: every knob of a run in one file (DVC tracks it); the CLI's flags override it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import CnnbenchError

DEFAULTS: dict[str, Any] = {
    "data_root": "data",
    "features_dir": "features",
    "metrics_dir": "metrics",
    "reports_dir": "reports",
    "backbones": ["effnet-lite0"],
    "datasets": ["digits"],
    "heads": ["svm", "l2"],
    "extract": {"batch_size": 64, "workers": 0, "device": "auto", "pooling": "avg", "layers": [],
                "views": "none", "rotation_angles": [-5.0, 5.0], "spatial_levels": {"default": 4, "queries": 3},
                "box_scale": None, "precision": "fp32", "runtime": "auto",
                "fast_decode": True},
    "backbone_options": {},
    "dataset_options": {},
    "head_options": {},
    "compare": {"baseline": "paper: OverFeat CNN-SVM", "all_metrics": False},
}


def load(path: str | os.PathLike | None) -> dict[str, Any]:
    """Defaults, overlaid with the file if it exists (a missing default file is fine)."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path is None:
        return params
    path = Path(path)
    if not path.exists():
        return params
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CnnbenchError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CnnbenchError(f"{path} must hold a mapping of parameters, not {type(data).__name__}")
    for key, value in data.items():
        if isinstance(params.get(key), dict) and isinstance(value, dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    return params


def data_root(params: dict[str, Any], flag: str | None = None) -> Path:
    """--data-root, else $CNNBENCH_DATA, else params.yaml's data_root."""
    return Path(flag or os.environ.get("CNNBENCH_DATA") or params.get("data_root") or "data")


def options_for(params: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    opts = (params.get(section) or {}).get(name) or {}
    if not isinstance(opts, dict):
        raise CnnbenchError(f"params {section}.{name} must be a mapping, not {opts!r}")
    return dict(opts)


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs from the command line; values are read as YAML (``seeds=[0,1]``)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CnnbenchError(f"option {pair!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
