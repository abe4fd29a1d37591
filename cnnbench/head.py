"""What a head is: it fits on stored features and returns a flat dict of named metrics."""

from __future__ import annotations

import numpy as np

from . import options as O

from .featureset import FeatureSet  # the contract's name for it: plugins import it from here


class Head(O.Configured):
    """Base class for heads. ``evaluate`` sees only features, labels, the task and the data set's metric.

    What ``evaluate`` returns decides where each number goes (see :mod:`cnnbench.evaluate`):
    a plain name (``accuracy``, ``mAP``) is a metric, averaged over trials into the metrics file;
    a name with a slash (``AP/<class>``) is a breakdown of one, kept in the run record; a name in
    :attr:`diagnostics` (the chosen ``C``) is a per-trial detail, kept in the run record only.
    """

    name: str = ""
    tasks: tuple[str, ...] = ("multiclass",)
    primary_metric: str | None = None  # None: the data set's own metric (e.g. mean class accuracy)
    diagnostics: tuple[str, ...] = ()  # per-trial numbers that are not metrics (e.g. the chosen C)

    def __init__(self, options: "O.Options | None" = None, **given) -> None:
        """A head that declares ``Options`` (a :class:`cnnbench.options.Options` subclass) is built
        from them: ``cnnbench.plugins.create`` hands them over parsed, a direct call
        (``LinearSVMHead(C=1)``) has them parsed here; its options then read as attributes
        (``self.C``) and :meth:`setup` derives the rest. ``params`` is what the run record keeps.
        A head without ``Options`` keeps its own constructor and passes ``params`` here as keywords."""
        options = self._bind_options(options, given)
        if options is None:
            self.params = given
            return
        self.params = options.recorded()
        self.setup()

    def setup(self) -> None:
        """Derive what the options imply (a solver chosen from ``auto``, a device resolved); store a
        resolved value in ``self.params`` too, so the run record says what ran."""


    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str, *,
                 metric: str | None = None) -> dict[str, float]:
        """Fit on ``train``, score ``test``; return ``{name: number}``.

        ``metric`` is the data set's :attr:`~cnnbench.dataset.Dataset.metric` (``mAP``, ``mean_auc``,
        ``top4``…), always passed by :func:`cnnbench.evaluate.evaluate`, so a head that can score
        several ways knows which one the paper reports (and tunes on it). A head with no use for it
        still takes the keyword; None means "your own default" (direct calls, tests)."""
        raise NotImplementedError

    def primary_metric_for(self, task: str, metric: str | None) -> str | None:
        """The metric ``cnnbench compare`` shows for this head on a data set of ``task`` whose
        paper metric is ``metric``. Default: :attr:`primary_metric`, else the data set's metric."""
        return self.primary_metric or metric


def load_features(path, layer: str | None = None) -> FeatureSet:
    """Rows of a feature file (checked as they are read), for heads that fit on another file, e.g.
    PCA-whitening learned on an independent data set. The plugin-facing door to the store."""
    from . import store

    return store.read(path, layer)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)
