"""``l2``: retrieval by L2 distance between L2-normalised features.

On a classification data set every test image queries all the other test images; an image of the
same class is relevant; the query itself is excluded. Reports mAP and nearest-neighbour accuracy.
"""

from __future__ import annotations

import numpy as np

from cnnbench import hookimpl
from cnnbench.head import FeatureSet, Head, l2_normalize
from cnnbench.metrics import ranked_average_precision


@hookimpl
def register_heads(register):
    register("l2", L2RetrievalHead, description="retrieval by L2 distance; every test image queries the rest, mAP")


class L2RetrievalHead(Head):
    name = "l2"
    tasks = ("multiclass",)
    primary_metric = "mAP"

    def __init__(self, query_batch: int = 1024):
        super().__init__(query_batch=query_batch)
        self.query_batch = int(query_batch)

    def evaluate(self, train: FeatureSet, test: FeatureSet, task: str) -> dict[str, float]:
        if task != "multiclass":
            raise ValueError(f"l2 head here ranks by class label; {task!r} data sets need their own ground truth")
        X = l2_normalize(np.asarray(test.features, dtype=np.float32))
        y = np.asarray(test.labels)
        n = len(X)
        if n < 2:
            raise ValueError("l2 retrieval needs at least two test images")
        aps, nn_correct = [], 0
        for start in range(0, n, self.query_batch):
            q = slice(start, min(n, start + self.query_batch))
            # for unit vectors, ranking by L2 distance == ranking by descending dot product
            sim = X[q] @ X.T
            rows = np.arange(q.start, q.stop)
            sim[rows - q.start, rows] = -np.inf  # exclude the query itself
            order = np.argsort(-sim, axis=1, kind="stable")[:, : n - 1]
            rel = y[order] == y[rows, None]
            aps.append(ranked_average_precision(rel))
            nn_correct += int(rel[:, 0].sum())
        ap = np.concatenate(aps)
        return {"mAP": float(np.nanmean(ap)), "nn_accuracy": nn_correct / n}
