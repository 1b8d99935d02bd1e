"""Feed-forward layers for use around recurrent cells: dense and embedding.

Written in the DSL like everything else, so autodiff and every backend get them for free.
Parameters are named like TF1's tf.layers: "{scope}/{name}/kernel" [in, units] and
"{scope}/{name}/bias" [units]; `embedding` has "{scope}/{name}/embeddings" [vocab, dim].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import dsl
from .cells import get_activation
from ..ir.dtypes import as_dtype
from ..ir.graph import Node, Op, shape_str
from .trace import RuntimeCheck, TraceError, check_reuse, current, param, variable_scope

__all__ = ["dense", "embedding"]


def _unique_name(base: str, probe: str) -> str:
    """TF1-style automatic names: base, base_1, base_2, ... (first one whose params are new)."""
    ctx = current()
    name, k = base, 0
    while ctx.scoped(f"{name}/{probe}") in ctx.params:
        k += 1
        name = f"{base}_{k}"
    return name


def _layer_name(name: str | None, base: str, probe: str, reuse: bool) -> str:
    if name is None:
        return _unique_name(base, probe)
    ctx = current()
    if ctx.scoped(f"{name}/{probe}") in ctx.params and not reuse:
        raise TraceError(f"{base}: a layer named {ctx.scoped(name)!r} already exists; pass a "
                         f"different name= (or reuse=True to share its parameters)")
    return name


def dense(inputs: Node, units: int, activation: str | Callable[[Node], Node] | None = None,
          use_bias: bool = True, kernel_initializer: Any = None,
          bias_initializer: Any = "zeros", kernel_regularizer: Any = None,
          bias_regularizer: Any = None, activity_regularizer: Any = None,
          kernel_constraint: Any = None, bias_constraint: Any = None, trainable: bool = True,
          name: str | None = None, reuse: Any = None) -> Node:
    """TF1 tf.layers.dense: activation(inputs @ kernel + bias) on the last axis of inputs
    ([B, F], [B, T, F], ...), with TF1's argument order and defaults.

    `name` defaults to "dense", then "dense_1", ... for further layers (as tf.layers.dense);
    an explicit name that already exists is an error unless reuse=True (shared weights).
    kernel_initializer None is glorot_uniform (TF1's default). trainable=False makes the
    parameters non-trainable (no gradient is taken for them). Regularizers and constraints
    have no rnncomp equivalent: passing one is an error saying what to do instead.
    """
    for nm, v in (("kernel_regularizer", kernel_regularizer),
                  ("bias_regularizer", bias_regularizer),
                  ("activity_regularizer", activity_regularizer),
                  ("kernel_constraint", kernel_constraint), ("bias_constraint", bias_constraint)):
        if v is not None:
            raise ValueError(f"dense: {nm} is not supported: add the penalty to the loss "
                             f"yourself (e.g. loss + 1e-4 * rc.reduce_sum(rc.square(w))), or "
                             f"apply the constraint to the parameters after each update")
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise ValueError(f"dense: units must be a positive int, received {units!r}")
    if not isinstance(inputs, Node) or inputs.ndim < 1:
        raise TypeError(f"dense: inputs must be an rnncomp array of rank >= 1, received "
                        f"{inputs!r}")
    if not inputs.dtype.is_float:
        raise ValueError(f"dense: inputs must be floating point, received {inputs.dtype}")
    if not isinstance(use_bias, bool):
        raise ValueError(f"dense: use_bias must be True or False, received {use_bias!r} (TF1's "
                         f"order: dense(inputs, units, activation, use_bias, ..., name, reuse))")
    fin = inputs.shape[-1]
    if not isinstance(fin, int):
        raise ValueError(f"dense: the feature (last) dimension of inputs must be static, "
                         f"received [{shape_str(inputs.shape)}]")
    act = get_activation(activation) if activation is not None else None
    name = _layer_name(name, "dense", "kernel", check_reuse(reuse, "dense"))
    kinit = kernel_initializer if kernel_initializer is not None else "glorot_uniform"
    binit = bias_initializer if bias_initializer is not None else "zeros"
    with variable_scope(name):
        kernel = param("kernel", (fin, units), kinit, dtype=inputs.dtype,
                       trainable=bool(trainable))
        y = dsl.matmul(inputs, kernel)
        if use_bias:
            bias = param("bias", (units,), binit, dtype=inputs.dtype, trainable=bool(trainable))
            y = y + bias
    return act(y) if act is not None else y


def embedding(ids: Node, vocab: int, dim: int, name: str | None = None,
              init="random_uniform", dtype=None, reuse: bool = False) -> Node:
    """Rows of a [vocab, dim] table for integer ids of any shape -> [..., dim].

    One gather op (rc.embedding_lookup): its gradient is a scatter-add of the output gradient
    into the table's rows, so time and memory grow with the number of ids, not with the
    vocabulary (no one-hot [.., vocab] matrix). When `ids` is a graph input, its values are
    checked to be in [0, vocab) before running; computed ids are checked by the gather itself.
    """
    for nm, v in (("vocab", vocab), ("dim", dim)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"embedding: {nm} must be a positive int, received {v!r}")
    if not isinstance(ids, Node) or not ids.dtype.is_int:
        raise ValueError(f"embedding: ids must be an integer rnncomp array, received {ids!r}")
    ctx = current()
    dt = as_dtype(dtype) if dtype is not None else ctx.dtype
    if ids.op is Op.INPUT:
        ctx.checks.append(RuntimeCheck("range", ids.name,
                                       {"lo": 0, "hi": vocab - 1, "what": "embedding ids"}))
    name = _layer_name(name, "embedding", "embeddings", reuse)
    with variable_scope(name):
        table = param("embeddings", (vocab, dim), init, dtype=dt)
    return dsl.embedding_lookup(table, ids)
