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
from .paper import DEFAULT_BASELINE
from .errors import CnnbenchError, UserError

DEFAULTS: dict[str, Any] = {
    "data_root": "data",
    "features_dir": "features",
    "metrics_dir": "metrics",
    "reports_dir": "reports",
    "backbones": ["effnet-lite0"],
    "datasets": ["digits"],
    "heads": ["svm", "l2"],
    "recipe": "cnn",  # the recipe of `dvc repro` and of the command line without --recipe (cnnbench.recipes)
    "recipes": {},  # the user's own recipes, beside the built-in ones
    "feature_sets": [],  # a table's extractions (paper/params.yaml): {dataset, features, recipe} each
    "extract": {},  # defaults: cnnbench.settings.ExtractSettings
    "backbone_options": {},
    "dataset_options": {},
    "head_options": {},
    "compare": {"baseline": DEFAULT_BASELINE, "all_metrics": False, "level": 0.95, "bootstrap": 1000,
                "seed": 0},
}
# 100x the default: the Monte-Carlo error of a 95 % bound is already far below the last digit shown,
# while the work (resamples x test images per cell) still fits in memory and minutes
MAX_BOOTSTRAP = 100_000
_FOLDERS = ("data_root", "features_dir", "metrics_dir", "reports_dir")
_NAME_LISTS = ("backbones", "datasets", "heads")
_OPTION_SECTIONS = ("backbone_options", "dataset_options", "head_options")
# a table's entries (paper/params.yaml): its cells under datasets:, its extractions under feature_sets:
_CELL_KEYS = ("dataset", "recipe", "head", "features")
_SET_KEYS = ("dataset", "features", "recipe")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        self.key, self.first, self.second = key, first, second


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping (at any depth) is an error:
    the plain loader keeps the last one, so an edit lower down silently undoes the line above it.
    Merge keys (``<<: *defaults``) still let a mapping override what it merges in."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        checked = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:  # before merging: only the keys written in this mapping
            checked.add(id(node))
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise _DuplicateKey(key, lines[key], line)
                lines[key] = line
        super().flatten_mapping(node)


def read_yaml(text: str) -> Any:
    """YAML text as Python values, refusing duplicate keys (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


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
        data = read_yaml(path.read_text(encoding="utf-8"))
    except _DuplicateKey as exc:
        raise UserError(f"{path}: key {exc.key!r} is given twice, on lines {exc.first} and {exc.second}; YAML would "
                        "silently keep only the second: delete one of them") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read {path}: it is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data is None:
        data = {}  # an empty file (or only comments): the defaults
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of parameters (key: value lines), not a "
                        f"{type(data).__name__}")
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
            raise UserError(f"{source}: {key}: {O.show(value)} is not allowed; expected a folder path")
    for key in _NAME_LISTS:
        value = params[key]
        if key == "datasets" and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            entries(f"{source}: datasets", value, _CELL_KEYS)  # a table's cells
            continue
        if not isinstance(value, list):
            raise UserError(f"{source}: {key}: {O.show(value)} is not allowed; expected a list of names, "
                            f"e.g. [{O.show(value)}]")
        if not value:  # nothing would run, and the run would say nothing
            raise UserError(f"{source}: {key}: [] is not allowed; expected at least one name, e.g. "
                            f"[{', '.join(DEFAULTS[key])}] (leave {key} out for that default)")
        O.str_list(f"{source}: {key}", value)
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise UserError(f"{source}: {key}: {', '.join(map(repr, twice))} listed twice; list each name once")
    entries(f"{source}: feature_sets", O.as_list(f"{source}: feature_sets", params["feature_sets"], allow_scalar=False),
            _SET_KEYS)
    for key in _OPTION_SECTIONS:
        section = O.mapping(f"{source}: {key}", params[key])
        for name, opts in section.items():
            if opts is not None and not isinstance(opts, dict):
                raise UserError(f"{source}: {key}.{name}: {O.show(opts)} is not allowed; expected a mapping of options")
        params[key] = section
    compare = O.mapping(f"{source}: compare", params["compare"])
    O.unknown_keys(f"{source}: compare", compare, list(DEFAULTS["compare"]))
    if not isinstance(compare.get("baseline", ""), str):
        raise UserError(f"{source}: compare.baseline: {O.show(compare['baseline'])} is not allowed; expected 'paper' "
                        "(each row against the paper row of its method), a row name or 'none'")
    O.as_bool(f"{source}: compare.all_metrics", compare.get("all_metrics", False))
    compare_statistics(source, compare)
    from . import recipes as R

    params["recipes"] = R.check_user(params["recipes"], source)
    if not isinstance(params["recipe"], str) or not params["recipe"]:
        raise UserError(f"{source}: recipe: {O.show(params['recipe'])} is not allowed; expected a recipe name, e.g. cnn")
    try:
        R.resolve(params["recipe"], params)
    except UserError as exc:
        raise UserError(f"{source}: recipe: {exc}") from None
    from .settings import ExtractSettings

    ExtractSettings.from_mapping(params["extract"])
    if params["feature_sets"] or any(isinstance(v, dict) for v in params["datasets"]):
        check_table(params, source)


def entries(where: str, value: list, keys: tuple[str, ...]) -> list[dict[str, str]]:
    """A list of ``{key: name}`` mappings, each with exactly ``keys``, each listed once."""
    seen: dict[tuple, int] = {}
    for n, entry in enumerate(value, 1):
        at = f"{where}[{n}]"
        entry = O.mapping(at, entry)
        O.unknown_keys(at, entry, list(keys))
        bad = [k for k in keys if not isinstance(entry.get(k), str) or not entry[k]]
        if bad:
            raise UserError(f"{at}: {', '.join(bad)} missing or not a name; an entry is "
                            f"{{{', '.join(f'{k}: NAME' for k in keys)}}}")
        ident = tuple(entry[k] for k in keys)
        if ident in seen:
            raise UserError(f"{at}: the same as entry {seen[ident]}; list each once")
        seen[ident] = n
    return value


def check_table(params: dict[str, Any], source: str) -> None:
    """A table (paper/params.yaml): each cell reads, and each feature set names, the folder its recipe
    extracts (Recipe.features_key); feature_sets extracts each folder once (DVC refuses two stages with
    one output) and every folder a cell reads. One line naming the entry, before any work."""
    from . import recipes as R

    cells = [c for c in params["datasets"] if isinstance(c, dict)]
    for key, entries_ in (("feature_sets", params["feature_sets"]), ("datasets", cells)):
        for n, e in enumerate(entries_, 1):
            try:
                want = R.resolve(e["recipe"], params).features_key(e["dataset"], params["extract"])
            except UserError as exc:
                raise UserError(f"{source}: {key}[{n}]: {exc}") from None
            if e["features"] != want:
                raise UserError(f"{source}: {key}[{n}]: features: {e['features']!r} is not what recipe {e['recipe']} "
                                f"extracts from {e['dataset']}; write features: {want}")
    made: dict[tuple[str, str], int] = {}
    for n, e in enumerate(params["feature_sets"], 1):
        at = (e["dataset"], e["features"])
        if at in made:
            raise UserError(f"{source}: feature_sets[{n}]: {e['dataset']} {e['features']} is extracted by entry "
                            f"{made[at]} already (DVC refuses two stages with one output); delete one")
        made[at] = n
    for n, c in enumerate(cells, 1):
        if (c["dataset"], c["features"]) not in made:
            raise UserError(f"{source}: datasets[{n}]: no entry of feature_sets extracts {c['features']} from "
                            f"{c['dataset']}; add {{dataset: {c['dataset']}, features: {c['features']}, "
                            f"recipe: {c['recipe']}}}")


def compare_statistics(source: str, compare: dict) -> tuple[float, int, int]:
    """(level, bootstrap, seed) of compare's intervals and paired tests (:mod:`cnnbench.stats`), checked."""
    level = O.as_float(f"{source}: compare.level", compare.get("level", 0.95), min=0.5, max=0.999,
                       min_exclusive=True,
                       fix="the coverage of the intervals, e.g. 0.95; differences are significant at p < 1 - level")
    n = O.as_int(f"{source}: compare.bootstrap", compare.get("bootstrap", 1000), min=100, max=MAX_BOOTSTRAP,
                 fix="the bootstrap resamples per interval and paired test (default 1000)")
    seed = O.as_int(f"{source}: compare.seed", compare.get("seed", 0), min=0, fix="the seed of the bootstrap resamples")
    return level, n, seed


def data_root(params: dict[str, Any], flag: str | None = None) -> Path:
    """--data-root, else $CNNBENCH_DATA, else params.yaml's data_root."""
    return Path(flag or os.environ.get("CNNBENCH_DATA") or params.get("data_root") or "data")


def options_for(params: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    opts = (params.get(section) or {}).get(name) or {}
    if not isinstance(opts, dict):
        raise CnnbenchError(f"params {section}.{name} must be a mapping, not {O.show(opts)}")
    return dict(opts)


def parse_assignments(pairs: tuple[str, ...], flag: str = "-D") -> dict[str, Any]:
    """``key=value`` pairs from the command line; values are read as YAML (``seeds=[0,1]``)."""
    out, given = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {pair!r}: expected key=value, e.g. {flag} seed=0")
        key = key.strip()
        if key in given:  # the last would silently win
            raise UserError(f"{flag} {key} is given twice ({given[key]!r} and {pair!r}); give it once")
        given[key] = pair
        try:
            out[key] = read_yaml(value)
        except _DuplicateKey as exc:
            raise UserError(f"{flag} {pair!r}: key {exc.key!r} is given twice in the value; give it once") from None
        except yaml.YAMLError:
            raise UserError(f"{flag} {pair!r}: the value is not valid YAML; quote it, e.g. {key}='\"...\"'") from None
    return out
