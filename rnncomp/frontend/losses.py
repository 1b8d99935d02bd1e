"""Losses (graph ops, differentiable) and metrics (NumPy, computed outside the graph).

    loss = losses.sparse_softmax_cross_entropy(labels, logits)   # TF1's order: labels [...],
                                                                 # logits [..., C]
    loss = losses.mse(pred, target)
    loss = losses.mean_squared_error(labels, predictions)        # TF1's name and order
    acc = losses.accuracy(logits_np, labels_np)                   # on the outputs of a run

Every loss is a mean over all elements, so it does not grow with batch size or sequence length.
To train on a subset of time steps (TF1's "BPTT over the outputs the loss uses"), slice the
outputs first: ``rnncomp.slice(outputs, t_min, t_max, axis=1)``; the steps outside receive zero
cotangents and the reverse scan still runs through them to carry the state gradient back.
"""

from __future__ import annotations

import numpy as np

from . import dsl
from ..ir.graph import Node, Op, shape_str
from ..ir.ops import ShapeError
from .trace import RuntimeCheck, current

__all__ = ["sparse_softmax_cross_entropy", "sparse_softmax_cross_entropy_with_logits",
           "softmax_cross_entropy", "mse", "mean_squared_error", "accuracy",
           "sigmoid_cross_entropy"]


def _check_weights(weights, fn: str) -> float:
    if isinstance(weights, bool) or not isinstance(weights, (int, float)):
        raise ValueError(f"{fn}: weights must be a Python number (a scalar weight); for "
                         f"per-example weights multiply the per-example losses of "
                         f"rc.nn.sparse_softmax_cross_entropy_with_logits and reduce them "
                         f"yourself; received {type(weights).__name__}")
    return float(weights)


def sparse_softmax_cross_entropy_with_logits(_sentinel=None, labels: Node | None = None,
                                             logits: Node | None = None,
                                             name: str | None = None) -> Node:
    """TF1 tf.nn.sparse_softmax_cross_entropy_with_logits(labels=..., logits=...): the
    per-example losses -log softmax(logits)[label], of labels' shape (by keyword, as TF1)."""
    if _sentinel is not None:
        raise ValueError("sparse_softmax_cross_entropy_with_logits: pass labels= and logits= by "
                         "keyword (as TF1 requires)")
    logits, labels = _check_sparse(labels, logits, "sparse_softmax_cross_entropy_with_logits")
    return dsl.neg(dsl.take(dsl.log_softmax(logits, axis=-1), labels))


def sparse_softmax_cross_entropy(labels: Node, logits: Node, weights: float = 1.0,
                                 scope: str | None = None) -> Node:
    """TF1 tf.losses.sparse_softmax_cross_entropy(labels, logits): the mean of
    -log softmax(logits)[label] over all leading dims, times `weights` (a scalar).

    labels: integer [...] with values in [0, C); logits: float [..., C]. When labels is a graph
    input, its values are checked before the graph runs (an error names the bad index).
    Earlier rnncomp versions took (logits, labels): that order is an error saying so.
    """
    w = _check_weights(weights, "sparse_softmax_cross_entropy")
    logits, labels = _check_sparse(labels, logits, "sparse_softmax_cross_entropy")
    picked = dsl.take(dsl.log_softmax(logits, axis=-1), labels)
    loss = dsl.neg(dsl.mean(picked))
    return loss if w == 1.0 else loss * w


def _check_sparse(labels, logits, fn: str) -> tuple[Node, Node]:
    if isinstance(labels, Node) and isinstance(logits, Node) and labels.dtype.is_float \
            and logits.dtype.is_int:
        raise ShapeError(f"{fn}: labels are {labels.dtype} and logits {logits.dtype}: the "
                         f"arguments look swapped; TF1's order is (labels, logits) (pass "
                         f"labels=..., logits=... by keyword to be safe)")
    if not isinstance(logits, Node) or not logits.dtype.is_float or logits.ndim < 1:
        raise ShapeError(f"{fn}: logits must be a float array [..., C], "
                         f"received {logits!r}")
    if not isinstance(labels, Node) or not labels.dtype.is_int:
        raise ShapeError(f"{fn}: labels must be an integer array, "
                         f"received {labels!r}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"{fn}: labels [{shape_str(labels.shape)}] "
                         f"must have the leading shape of logits [{shape_str(logits.shape)}]")
    C = logits.shape[-1]
    if not isinstance(C, int):
        raise ShapeError(f"{fn}: the class dimension must be static, "
                         f"received [{shape_str(logits.shape)}]")
    if labels.op is Op.INPUT:
        current().checks.append(RuntimeCheck("labels", labels.name, {"depth": C}))
    return logits, labels


def softmax_cross_entropy(logits: Node, onehot_labels: Node) -> Node:
    """mean over rows of -sum(labels * log softmax(logits)) with dense (e.g. soft) labels."""
    if tuple(onehot_labels.shape) != tuple(logits.shape):
        raise ShapeError(f"softmax_cross_entropy: labels [{shape_str(onehot_labels.shape)}] "
                         f"and logits [{shape_str(logits.shape)}] differ")
    per_row = dsl.sum(onehot_labels * dsl.log_softmax(logits, axis=-1), axis=-1)
    return dsl.neg(dsl.mean(per_row))


def sigmoid_cross_entropy(logits: Node, labels: Node) -> Node:
    """mean of the binary cross-entropy with logits (stable form max(z,0) - z*y + log(1+e^-|z|))."""
    if tuple(labels.shape) != tuple(logits.shape):
        raise ShapeError(f"sigmoid_cross_entropy: labels [{shape_str(labels.shape)}] and "
                         f"logits [{shape_str(logits.shape)}] differ")
    z = logits
    loss = dsl.maximum(z, 0.0) - z * labels + dsl.log(1.0 + dsl.exp(dsl.neg(dsl.abs(z))))
    return dsl.mean(loss)


def mean_squared_error(labels: Node, predictions: Node, weights: float = 1.0,
                       scope: str | None = None) -> Node:
    """TF1 tf.losses.mean_squared_error(labels, predictions): mean((predictions - labels)^2),
    times `weights` (a scalar)."""
    w = _check_weights(weights, "mean_squared_error")
    loss = mse(predictions, labels)
    return loss if w == 1.0 else loss * w


def mse(pred: Node, target: Node) -> Node:
    """mean((pred - target)^2) over all elements."""
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(f"mse: pred [{shape_str(pred.shape)}] and target "
                         f"[{shape_str(target.shape)}] differ in shape")
    return dsl.mean(dsl.square(pred - target))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis equals the label (NumPy, no graph)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"accuracy: labels {labels.shape} must have the leading shape of "
                         f"logits {logits.shape}")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))
