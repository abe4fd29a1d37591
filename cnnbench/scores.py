"""The names of scores: what a number in a metrics file is of, spelled one way.

Metrics files are flat (``dvc metrics show`` makes a column of each name), so a score's name says
what it is of: ``<metric>[@k=<k>][/<class>][@<shots>shot]`` (``accuracy@k=20``, ``AP/cat``,
``accuracy@5shot``), and ``<name>_std`` for its spread over trials. Heads name their per-class and
k-NN scores with :func:`score_name`, few-shot evaluation its points; :mod:`cnnbench.results` reads
them back with :func:`parse_score_name`. No other module spells or parses them.
"""

from __future__ import annotations

import re

STD_SUFFIX = "_std"  # <name>_std: the spread over trials of <name>, beside it in the metrics file
_SHOTS = re.compile(r"^(?P<rest>.+)@(?P<shots>\d+)shot$")
_KNN_K = re.compile(r"^(?P<metric>.+)@k=(?P<k>\d+)$")


def score_name(metric: str, *, of_class: str | None = None, k: int | None = None, shots: int | None = None) -> str:
    """The one spelling of a score's name: ``accuracy@k=20``, ``AP/cat``, ``accuracy@k=20@5shot``."""
    name = metric + (f"@k={k}" if k is not None else "") + (f"/{of_class}" if of_class is not None else "")
    return name + (f"@{shots}shot" if shots is not None else "")


def parse_score_name(name: str) -> tuple[str, str | None, int | None, int | None]:
    """``(metric, of_class, k, shots)`` of a score's name, the inverse of :func:`score_name`."""
    base, shots = split_shots(name) or (name, None)
    base, sep, of_class = base.partition("/")
    hit = _KNN_K.match(base)
    metric, k = (hit["metric"], int(hit["k"])) if hit else (base, None)
    return metric, (of_class if sep else None), k, shots


def split_shots(name: str) -> tuple[str, int] | None:
    """``("accuracy@k=20", 5)`` for ``accuracy@k=20@5shot``: the full-data score a few-shot point is
    of, and its shots; None for a name that is no few-shot point."""
    hit = _SHOTS.match(name)
    return (hit["rest"], int(hit["shots"])) if hit else None
