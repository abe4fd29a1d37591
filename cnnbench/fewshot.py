"""Few-shot evaluation: k training images per class, drawn with a seed, for any data set and any head.

Three evaluation options (:class:`cnnbench.recipes.EvalOptions`: a recipe's ``evaluation:``, or
``cnnbench evaluate -E KEY=VALUE``), checked here:

``shots``
    one number or a list (``[1, 2, 5, 10]``): images per class in each draw.
``shots_trials``
    draws per k and per trial of the data set's own protocol (default 5).
``shots_seed``
    the seed (default 0). Draw ``t`` of ``k`` shots in trial ``name`` uses the seed sequence
    ``(shots_seed, k, t, crc32(name))``: the same draws on every run, whatever the order of ``shots``.

For each trial of the data set's protocol, each k and each draw, the training selection is exactly k
images of every class, drawn without replacement from that trial's training images; the test
selection is the trial's own. A class with fewer than k training images is refused in one line.
Only multi-class data sets: a multi-label set has no "k images per class" (an image carries several
labels), so ``shots`` on one is refused.

Metric names: ``<metric>@<k>shot`` (e.g. ``accuracy@5shot``, ``accuracy@k=20@5shot`` for knn), the
mean over all draws of all trials, with ``_std`` beside it in the metrics file as for trials.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

from . import options as O
from .errors import UserError
from .scores import score_name, split_shots

KEYS = ("shots", "shots_trials", "shots_seed")
DEFAULT_TRIALS = 5
MAX_TRIALS = 1000  # draws per k, each a fit of the head: 200x the default, far past where the mean settles


@dataclass(frozen=True)
class FewShot:
    shots: tuple[int, ...]
    trials: int = DEFAULT_TRIALS
    seed: int = 0

    def as_dict(self) -> dict:
        return {"shots": list(self.shots), "shots_trials": self.trials, "shots_seed": self.seed}


def parse(where: str, shots=None, shots_trials=None, shots_seed=None) -> FewShot | None:
    """The few-shot options checked, errors naming ``where`` (the recipe, or -E); None when ``shots``
    is not given. ``shots_trials`` or ``shots_seed`` without ``shots`` are a mistake (they would
    silently do nothing)."""
    if shots is None:
        given = [k for k, v in (("shots_trials", shots_trials), ("shots_seed", shots_seed)) if v is not None]
        if given:
            raise UserError(f"{where}: {', '.join(given)} given without shots; add shots (e.g. -E shots=[1,5]) "
                            "or leave them out")
        return None
    ks = O.int_list(f"{where}: shots", shots, min=1)
    if len(set(ks)) != len(ks):
        raise UserError(f"{where}: shots: {shots!r} is not allowed; expected distinct numbers of images per class, "
                        "e.g. [1, 2, 5, 10]")
    trials = DEFAULT_TRIALS if shots_trials is None else O.as_int(
        f"{where}: shots_trials", shots_trials, min=1, max=MAX_TRIALS,
        fix="the number of seeded draws per number of shots, e.g. 5")
    seed = 0 if shots_seed is None else O.as_int(f"{where}: shots_seed", shots_seed, min=0, max=2**32 - 1)
    return FewShot(tuple(sorted(ks)), trials, seed)


def metric_name(metric: str, k: int) -> str:
    """``accuracy``, 5 → ``accuracy@5shot`` (:func:`cnnbench.scores.score_name`)."""
    return score_name(metric, shots=k)


def split_metric_name(name: str) -> tuple[str, int] | None:
    """``accuracy@5shot`` → (``accuracy``, 5); None for a name that is not a few-shot metric."""
    return split_shots(name)


def draw_seed(seed: int, k: int, draw: int, trial: str = "") -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, k, draw, zlib.crc32(trial.encode())])


def draw(labels: np.ndarray, k: int, seed: int, t: int, *, trial: str = "", required=None,
         class_names=None, dataset: str = "") -> np.ndarray:
    """Sorted positions into ``labels`` (the trial's training labels): exactly ``k`` of every class in
    ``required`` (default: the classes in ``labels``), without replacement, seeded by (seed, k, t, trial)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise UserError(f"{dataset or 'data set'}: shots: few-shot draws need one class per image (a multi-class "
                        f"data set); these labels have shape {labels.shape}")
    classes = np.unique(labels) if required is None else np.union1d(np.unique(labels), np.asarray(required))
    rng = np.random.default_rng(draw_seed(seed, k, t, trial))
    picked = []
    for cls in classes:
        idx = np.flatnonzero(labels == cls)
        if len(idx) < k:
            c = int(cls)
            name = repr(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else f"#{c}"
            where = f" in trial {trial!r}" if trial else ""
            raise UserError(f"{dataset or 'data set'}: shots: class {name} has {len(idx)} training image"
                            f"{'' if len(idx) == 1 else 's'}{where}, fewer than the {k} a {k}-shot draw needs; "
                            "lower shots or add training images to that class")
        picked.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def select(selection: dict[str, np.ndarray | None], sizes: dict[str, int], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Positions into the concatenation of a trial's ``selection`` (``None``: all ``sizes[split]`` rows,
    in the order :func:`cnnbench.evaluate._gather` concatenates) → row indices per split."""
    out, start = {}, 0
    for split, index in selection.items():
        rows = np.arange(sizes[split]) if index is None else np.asarray(index)
        mine = positions[(positions >= start) & (positions < start + len(rows))] - start
        if len(mine):
            out[split] = rows[mine]
        start += len(rows)
    return out


def ids_sha256(ids) -> str:
    """SHA-256 of the drawn image ids (one per line, in order): the draw, in the run record."""
    return hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest()
