"""Metrics on NumPy arrays (results of Model.predict or of a model call).

    acc = rnncomp.accuracy(logits, labels)        # argmax over the last axis == label
    acc = m.evaluate(params, labels=y, X=x)["accuracy"]

In a graph, the same number is `rc.reduce_mean(rc.cast(rc.equal(rc.argmax(logits, -1), y),
rc.float32))` (rc.argmax is a DSL op with no gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["accuracy"]


def accuracy(scores: Any, labels: Any) -> float:
    """The share of examples whose predicted class equals the label.

    `scores`: logits or probabilities [..., classes] (the prediction is their argmax over the
    last axis; ties pick the first class, as numpy.argmax), or integer predicted classes of the
    labels' shape. `labels`: integer class ids. Returns a Python float in [0, 1]."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise ValueError(f"accuracy: labels must be integer class ids, received {y.dtype}")
    if s.shape == y.shape and s.dtype.kind in "iu":
        pred = s
    elif s.ndim >= 1 and s.shape[:-1] == y.shape:
        pred = np.argmax(s, axis=-1)
    else:
        raise ValueError(f"accuracy: scores of shape {s.shape} do not match labels of shape "
                         f"{y.shape} (expected scores [..., classes] with leading shape "
                         f"{y.shape}, or integer predictions of shape {y.shape})")
    if y.size == 0:
        raise ValueError("accuracy: no examples")
    return float(np.mean(pred == y))
