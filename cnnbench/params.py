"""params.yaml: every knob of a run in one file (DVC tracks it); the CLI's flags override it.

The file is checked as it is read: an unknown key (a typo silently ignored is a wrong result
waiting to happen) or a value of the wrong type is one line naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import options as O
from .errors import CnnbenchError, UserError

DEFAULTS: dict[str, Any] = {
    "data_root": "data",
    "features_dir": "features",
    "metrics_dir": "metrics",
    "reports_dir": "reports",
    "backbones": ["effnet-lite0"],
    "datasets": ["digits"],
    "heads": ["svm", "l2"],
    "extract": {},  # defaults: cnnbench.settings.ExtractSettings
    "backbone_options": {},
    "dataset_options": {},
    "head_options": {},
    "compare": {"baseline": "paper: OverFeat CNN-SVM", "all_metrics": False, "level": 0.95, "bootstrap": 1000,
                "seed": 0},
}
_FOLDERS = ("data_root", "features_dir", "metrics_dir", "reports_dir")
_NAME_LISTS = ("backbones", "datasets", "heads")
_OPTION_SECTIONS = ("backbone_options", "dataset_options", "head_options")


def load(path: str | os.PathLike | None, *, required: bool = False) -> dict[str, Any]:
    """Defaults, overlaid with the file if it exists; ``required``: the user named the file, so a
    missing one is a mistake (the default ``params.yaml`` may be absent)."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if path is None:
        return params
    path = Path(path)
    if not path.exists():
        if required:
            raise UserError(f"--params {path}: no such file; give the path of a params.yaml (or leave --params out)")
        return params
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of parameters, not {type(data).__name__}")
    O.unknown_keys(f"{path}", data, list(DEFAULTS))
    for key, value in data.items():
        if isinstance(params.get(key), dict) and isinstance(value, dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    check(params, str(path))
    return params


def check(params: dict[str, Any], source: str = "params") -> None:
    """Types of every top-level key (the extract section is checked by ExtractSettings)."""
    for key in _FOLDERS:
        value = params[key]
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise UserError(f"{source}: {key}: {value!r} is not allowed; expected a folder path")
    for key in _NAME_LISTS:
        value = params[key]
        if not isinstance(value, list):
            raise UserError(f"{source}: {key}: {value!r} is not allowed; expected a list of names, e.g. [{value}]")
        O.str_list(f"{source}: {key}", value)
    for key in _OPTION_SECTIONS:
        section = O.mapping(f"{source}: {key}", params[key])
        for name, opts in section.items():
            if opts is not None and not isinstance(opts, dict):
                raise UserError(f"{source}: {key}.{name}: {opts!r} is not allowed; expected a mapping of options")
        params[key] = section
    compare = O.mapping(f"{source}: compare", params["compare"])
    O.unknown_keys(f"{source}: compare", compare, list(DEFAULTS["compare"]))
    if not isinstance(compare.get("baseline", ""), str):
        raise UserError(f"{source}: compare.baseline: {compare['baseline']!r} is not allowed; expected a row name or 'none'")
    O.as_bool(f"{source}: compare.all_metrics", compare.get("all_metrics", False))
    compare_statistics(source, compare)
    from .settings import ExtractSettings

    ExtractSettings.from_mapping(params["extract"])


def compare_statistics(source: str, compare: dict) -> tuple[float, int, int]:
    """(level, bootstrap, seed) of compare's intervals and paired tests (:mod:`cnnbench.stats`), checked."""
    level = O.as_float(f"{source}: compare.level", compare.get("level", 0.95), min=0.5, max=0.999,
                       min_exclusive=True,
                       fix="the coverage of the intervals, e.g. 0.95; differences are significant at p < 1 - level")
    n = O.as_int(f"{source}: compare.bootstrap", compare.get("bootstrap", 1000), min=100,
                 fix="the bootstrap resamples per interval and paired test (default 1000)")
    seed = O.as_int(f"{source}: compare.seed", compare.get("seed", 0), min=0, fix="the seed of the bootstrap resamples")
    return level, n, seed


def data_root(params: dict[str, Any], flag: str | None = None) -> Path:
    """--data-root, else $CNNBENCH_DATA, else params.yaml's data_root."""
    return Path(flag or os.environ.get("CNNBENCH_DATA") or params.get("data_root") or "data")


def options_for(params: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    opts = (params.get(section) or {}).get(name) or {}
    if not isinstance(opts, dict):
        raise CnnbenchError(f"params {section}.{name} must be a mapping, not {opts!r}")
    return dict(opts)


def parse_assignments(pairs: tuple[str, ...], flag: str = "-D") -> dict[str, Any]:
    """``key=value`` pairs from the command line; values are read as YAML (``seeds=[0,1]``)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {pair!r}: expected key=value, e.g. {flag} seed=0")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"{flag} {pair!r}: the value is not valid YAML; quote it, e.g. {key}='\"...\"'") from None
    return out
