"""Feed-forward layers for use around recurrent cells: dense and embedding.

Written in the DSL like everything else, so autodiff and every backend get them for free.
Parameters are named like TF1's tf.layers: "{scope}/{name}/kernel" [in, units] and
"{scope}/{name}/bias" [units]; `embedding` has "{scope}/{name}/embeddings" [vocab, dim].
"""

from __future__ import annotations

from collections.abc import Callable

from . import dsl
from .cells import get_activation
from ..ir.dtypes import as_dtype
from ..ir.graph import Node, Op, shape_str
from .trace import RuntimeCheck, TraceError, current, param, variable_scope

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


def dense(x: Node, units: int, activation: str | Callable[[Node], Node] | None = None,
          name: str | None = None, kernel_init="glorot_uniform", bias_init="zeros",
          use_bias: bool = True, reuse: bool = False) -> Node:
    """y = activation(x @ kernel + bias) on the last axis of x ([B, F], [B, T, F], ...).

    `name` defaults to "dense", then "dense_1", ... for further layers (as tf.layers.dense);
    an explicit name that already exists is an error unless reuse=True (shared weights).
    """
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise ValueError(f"dense: units must be a positive int, received {units!r}")
    if not isinstance(x, Node) or x.ndim < 1:
        raise TypeError(f"dense: x must be an rnncomp array of rank >= 1, received {x!r}")
    if not x.dtype.is_float:
        raise ValueError(f"dense: x must be floating point, received {x.dtype}")
    fin = x.shape[-1]
    if not isinstance(fin, int):
        raise ValueError(f"dense: the feature (last) dimension of x must be static, received "
                         f"[{shape_str(x.shape)}]")
    act = get_activation(activation) if activation is not None else None
    name = _layer_name(name, "dense", "kernel", reuse)
    with variable_scope(name):
        kernel = param("kernel", (fin, units), kernel_init, dtype=x.dtype)
        y = dsl.matmul(x, kernel)
        if use_bias:
            bias = param("bias", (units,), bias_init, dtype=x.dtype)
            y = y + bias
    return act(y) if act is not None else y


def embedding(ids: Node, vocab: int, dim: int, name: str | None = None,
              init="random_uniform", dtype=None, reuse: bool = False) -> Node:
    """Rows of a [vocab, dim] table for integer ids of any shape -> [..., dim].

    Implemented as one_hot(ids) @ table, so it is differentiable with the existing ops (the
    table's gradient is one GEMM). When `ids` is a graph input, its values are checked to be in
    [0, vocab) before running.
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
    return dsl.matmul(dsl.one_hot(ids, vocab, dt), table)
