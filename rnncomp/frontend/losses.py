"""Losses (graph ops, differentiable) and metrics (NumPy, computed outside the graph).

    loss = losses.sparse_softmax_cross_entropy(logits, labels)   # logits [..., C], labels [...]
    loss = losses.mse(pred, target)
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

__all__ = ["sparse_softmax_cross_entropy", "softmax_cross_entropy", "mse", "accuracy",
           "sigmoid_cross_entropy"]


def sparse_softmax_cross_entropy(logits: Node, labels: Node) -> Node:
    """mean(-log softmax(logits)[label]) over all leading dims (tf.losses.sparse_softmax_...).

    logits: float [..., C]; labels: integer [...] with values in [0, C). When labels is a graph
    input, its values are checked before the graph runs (an error names the bad index).
    """
    if not isinstance(logits, Node) or not logits.dtype.is_float or logits.ndim < 1:
        raise ShapeError(f"sparse_softmax_cross_entropy: logits must be a float array [..., C], "
                         f"received {logits!r}")
    if not isinstance(labels, Node) or not labels.dtype.is_int:
        raise ShapeError(f"sparse_softmax_cross_entropy: labels must be an integer array, "
                         f"received {labels!r}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"sparse_softmax_cross_entropy: labels [{shape_str(labels.shape)}] "
                         f"must have the leading shape of logits [{shape_str(logits.shape)}]")
    C = logits.shape[-1]
    if not isinstance(C, int):
        raise ShapeError(f"sparse_softmax_cross_entropy: the class dimension must be static, "
                         f"received [{shape_str(logits.shape)}]")
    if labels.op is Op.INPUT:
        current().checks.append(RuntimeCheck("labels", labels.name, {"depth": C}))
    picked = dsl.take(dsl.log_softmax(logits, axis=-1), labels)
    return dsl.neg(dsl.mean(picked))


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
