"""The user-facing ops of the DSL: what cells are written with.

Each function builds IR nodes (through rnncomp.ir.ops) and accepts Python numbers where an array is
expected (they become literals of the other operand's dtype). Composite ops (softmax, mean,
dropout, ...) are written here in terms of registry primitives, so autodiff and every backend
get them for free.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from ..ir import ops
from ..ir.dtypes import DType, as_dtype
from ..ir.graph import Node, Op, shape_str
from ..ir.ops import ShapeError
from .trace import TraceError, current

Array = Node


def _lift(x, like: Node | None = None, dtype: DType | None = None) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, (bool, int, float)):
        dt = dtype or (like.dtype if like is not None else current().dtype)
        if isinstance(x, float) and not dt.is_float:
            raise ShapeError(f"cannot mix the float literal {x} with a {dt} array")
        return ops.const(x, dt)
    raise TypeError(f"expected an rnncomp array (IR node) or a Python number, received "
                    f"{type(x).__name__}")


def _pair(a, b) -> tuple[Node, Node]:
    if isinstance(a, Node):
        return a, _lift(b, a)
    if isinstance(b, Node):
        return _lift(a, b), b
    return _lift(a), _lift(b)


def _axis(x: Node, axis: int) -> int:
    return ops.norm_axis(axis, x.ndim, "axis")


# --- elementwise -----------------------------------------------------------------------------
def add(a, b) -> Node:
    return ops.add(*_pair(a, b))


def sub(a, b) -> Node:
    return ops.sub(*_pair(a, b))


def mul(a, b) -> Node:
    return ops.mul(*_pair(a, b))


def div(a, b) -> Node:
    return ops.div(*_pair(a, b))


def neg(x) -> Node:
    return ops.neg(_lift(x))


def maximum(a, b) -> Node:
    return ops.maximum(*_pair(a, b))


def minimum(a, b) -> Node:
    return ops.minimum(*_pair(a, b))


def pow(a, b) -> Node:  # noqa: A001 - mirrors numpy
    return ops.pow_(*_pair(a, b))


def less(a, b) -> Node:
    return ops.lt(*_pair(a, b))


def less_equal(a, b) -> Node:
    return ops.le(*_pair(a, b))


def greater(a, b) -> Node:
    return ops.gt(*_pair(a, b))


def greater_equal(a, b) -> Node:
    return ops.ge(*_pair(a, b))


def equal(a, b) -> Node:
    return ops.eq(*_pair(a, b))


def logical_and(a, b) -> Node:
    return ops.make(Op.AND, *_pair(a, b))


def logical_or(a, b) -> Node:
    return ops.make(Op.OR, *_pair(a, b))


def logical_not(x) -> Node:
    return ops.make(Op.NOT, x)


def where(cond, a, b) -> Node:
    """Select a where cond else b (broadcasting); cond must be bool."""
    if isinstance(a, Node) or isinstance(b, Node):
        a, b = _pair(a, b)
    else:
        a, b = _lift(a), _lift(b)
    return ops.where(cond, a, b)


def sigmoid(x) -> Node:
    return ops.sigmoid(_lift(x))


def tanh(x) -> Node:
    return ops.tanh(_lift(x))


def relu(x) -> Node:
    return ops.relu(_lift(x))


def exp(x) -> Node:
    return ops.exp(_lift(x))


def log(x) -> Node:
    return ops.log(_lift(x))


def sqrt(x) -> Node:
    return ops.sqrt(_lift(x))


def abs(x) -> Node:  # noqa: A001
    return ops.make(Op.ABS, _lift(x))


def square(x) -> Node:
    return mul(x, x)


def clip_by_value(t, clip_value_min, clip_value_max) -> Node:
    """TF1 tf.clip_by_value: max(min(t, hi), lo), elementwise."""
    return maximum(minimum(t, clip_value_max), clip_value_min)


def cast(x, dtype) -> Node:
    return ops.cast(x, dtype)


def stop_gradient(x) -> Node:
    return ops.stop_gradient(x)


# --- contractions ----------------------------------------------------------------------------
def matmul(a: Node, b: Node) -> Node:
    """a [..., K] @ b [K, N] -> [..., N]."""
    return ops.matmul(a, b)


def tensordot(a: Node, b: Node, a_axes: Sequence[int], b_axes: Sequence[int]) -> Node:
    return ops.tensordot(a, b, a_axes, b_axes)


# --- movement --------------------------------------------------------------------------------
def concat(xs: Sequence[Node], axis: int = -1) -> Node:
    xs = list(xs)
    if not xs:
        raise ShapeError("concat: needs at least one array")
    return ops.concat(xs, _axis(xs[0], axis))


def split(x: Node, sizes_or_n: int | Sequence[int], axis: int = -1) -> list[Node]:
    """Split along axis into n equal parts, or parts of the given sizes (like tf.split)."""
    ax = _axis(x, axis)
    d = x.shape[ax]
    if isinstance(d, str):
        raise ShapeError(f"split: cannot split the symbolic dimension {d!r}")
    if isinstance(sizes_or_n, int):
        if sizes_or_n <= 0 or d % sizes_or_n:
            raise ShapeError(f"split: dimension {d} of [{shape_str(x.shape)}] does not divide "
                             f"into {sizes_or_n} equal parts")
        sizes = [d // sizes_or_n] * sizes_or_n
    else:
        sizes = [int(s) for s in sizes_or_n]
        if builtins.sum(sizes) != d:  # the DSL's sum shadows the builtin here
            raise ShapeError(f"split: sizes {sizes} sum to {builtins.sum(sizes)}, but dimension "
                             f"{ax} of [{shape_str(x.shape)}] is {d}")
    out, off = [], 0
    for s in sizes:
        out.append(ops.slice_(x, ax, off, off + s))
        off += s
    return out


def slice(x: Node, start: int, stop: int, axis: int = -1) -> Node:  # noqa: A001
    return ops.slice_(x, _axis(x, axis), start, stop)


def reshape(x: Node, shape: Sequence[int | str]) -> Node:
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ShapeError("reshape: at most one -1")
    if -1 in shape:
        known = ops.numel_known(x.shape)
        rest = ops.numel_known(tuple(d for d in shape if d != -1))
        if known is None and rest is not None:
            raise ShapeError(f"reshape: -1 would stand for a product with the symbolic dims of "
                             f"[{shape_str(x.shape)}] (to {shape}); rnncomp keeps symbolic "
                             f"dims (B, T) as axes of their own: apply the op to the array "
                             f"as it is (rc.layers.dense and matmul act on the last axis of "
                             f"[B, T, F]), or give the input a static batch size")
        if known is None or rest is None or rest == 0 or known % rest:
            raise ShapeError(f"reshape: cannot infer -1 reshaping [{shape_str(x.shape)}] to "
                             f"{shape}")
        shape[shape.index(-1)] = known // rest
    return ops.reshape(x, tuple(shape))


def transpose(x: Node, perm: Sequence[int] | None = None) -> Node:
    if perm is None:
        perm = tuple(reversed(range(x.ndim)))
    return ops.transpose(x, tuple(_axis(x, p) for p in perm))


def unstack(value: Node, num: int | None = None, axis: int = 0, name: str | None = None
            ) -> list[Node]:
    """TF1 tf.unstack: the list of slices of `value` along `axis`, that axis removed.

    The axis must have a static size (TF1 cannot infer `num` otherwise either); `num`, when
    given, must equal it. `name` is accepted for TF1 compatibility and names nothing.
    """
    if not isinstance(value, Node):
        raise TypeError(f"unstack: value must be an rnncomp array, received "
                        f"{type(value).__name__}")
    ax = _axis(value, axis)
    d = value.shape[ax]
    if not isinstance(d, int):
        raise ShapeError(f"unstack: axis {axis} of [{shape_str(value.shape)}] has the symbolic "
                         f"size {d!r}; give it a static size (e.g. rc.Input((None, n_steps, "
                         f"n_inputs)) for the time axis)")
    if num is not None and num != d:
        raise ShapeError(f"unstack: num={num} but axis {axis} of [{shape_str(value.shape)}] has "
                         f"size {d}")
    rest = tuple(s for k, s in enumerate(value.shape) if k != ax)
    return [ops.reshape(ops.slice_(value, ax, k, k + 1), rest) for k in range(d)]


def stack(values: Sequence[Node], axis: int = 0, name: str | None = None) -> Node:
    """TF1 tf.stack: arrays of one shape joined along a new axis (the inverse of unstack)."""
    values = list(values)
    if not values or not all(isinstance(v, Node) for v in values):
        raise TypeError("stack: values must be a non-empty list of rnncomp arrays")
    first = values[0]
    for k, v in enumerate(values):
        if v.shape != first.shape or v.dtype != first.dtype:
            raise ShapeError(f"stack: values[{k}] is {v.dtype}[{shape_str(v.shape)}] but values[0] "
                             f"is {first.dtype}[{shape_str(first.shape)}]")
    ax = ops.norm_axis(axis, first.ndim + 1, "stack")
    return ops.concat([expand_dims(v, ax) for v in values], ax)


def expand_dims(x: Node, axis: int) -> Node:
    ax = axis % (x.ndim + 1)
    shape = list(x.shape)
    shape.insert(ax, 1)
    return ops.reshape(x, tuple(shape))


def broadcast_to(x: Node, shape) -> Node:
    return ops.broadcast(x, tuple(shape))


# --- reductions ------------------------------------------------------------------------------
def _axes(x: Node, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(_axis(x, a) for a in axis))


def sum(x: Node, axis=None, keepdims: bool = False) -> Node:  # noqa: A001
    return ops.reduce_sum(x, _axes(x, axis), keepdims)


def max(x: Node, axis=None, keepdims: bool = False) -> Node:  # noqa: A001
    return ops.reduce_max(x, _axes(x, axis), keepdims)


def reduce_sum(input_tensor: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    """TF1 tf.reduce_sum (`name` names nothing)."""
    return sum(input_tensor, axis, keepdims)


def reduce_max(input_tensor: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    """TF1 tf.reduce_max (`name` names nothing)."""
    return max(input_tensor, axis, keepdims)


def reduce_mean(input_tensor: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    """TF1 tf.reduce_mean (`name` names nothing)."""
    return mean(input_tensor, axis, keepdims)


def count(x: Node, axis=None) -> Node:
    """Number of elements reduced over `axis`, as a scalar of x's dtype, read from x's shape at
    run time for static axes too: a constant would put the size into the compiled kernel, and a
    model that differs only in a size could not share it (see docs/design-cpu-kernels.md)."""
    n: Node | None = None
    for a in _axes(x, axis):
        term = ops.make(Op.DIMSIZE, x, axis=a, dtype=x.dtype)
        n = term if n is None else ops.mul(n, term)
    return n if n is not None else ops.const(1, x.dtype)


def mean(x: Node, axis=None, keepdims: bool = False) -> Node:
    return ops.div(sum(x, axis, keepdims), count(x, axis))


def logsumexp(x: Node, axis: int = -1, keepdims: bool = False) -> Node:
    m = ops.stop_gradient(max(x, axis, keepdims=True))
    r = ops.add(log(sum(exp(ops.sub(x, m)), axis, keepdims=True)), m)
    return r if keepdims else ops.reshape(r, tuple(d for k, d in enumerate(x.shape)
                                                   if k != _axis(x, axis)))


def log_softmax(x: Node, axis: int = -1) -> Node:
    """x - logsumexp(x): the max is shifted out (and its gradient cancels exactly)."""
    m = ops.stop_gradient(max(x, axis, keepdims=True))
    z = ops.sub(x, m)
    return ops.sub(z, log(sum(exp(z), axis, keepdims=True)))


def softmax(x: Node, axis: int = -1) -> Node:
    m = ops.stop_gradient(max(x, axis, keepdims=True))
    e = exp(ops.sub(x, m))
    return ops.div(e, sum(e, axis, keepdims=True))


# --- indexing --------------------------------------------------------------------------------
def take(x: Node, idx: Node) -> Node:
    """x[..., idx]: pick one entry of the last axis per row (e.g. the logit of the label)."""
    return ops.make(Op.TAKE, x, idx)


gather = take


def embedding_lookup(params: Node, ids: Node, partition_strategy: str = "mod", name=None,
                     validate_indices: bool = True, max_norm=None) -> Node:
    """TF1 tf.nn.embedding_lookup: rows of `params` [vocab, ...] for integer `ids` of any shape
    -> ids.shape + params.shape[1:]. One gather op; its gradient is a scatter-add into the
    table's rows (no one-hot matrix, no [.., vocab] temporary). Ids outside [0, vocab) are an
    error on every backend. A list of sharded tables and max_norm are not supported."""
    if isinstance(params, (list, tuple)):
        if len(params) != 1:
            raise ValueError("embedding_lookup: sharded tables (a list of several params) are "
                             "not supported; concatenate them into one table")
        params = params[0]
    if max_norm is not None:
        raise ValueError("embedding_lookup: max_norm is not supported; clip the rows yourself")
    if not isinstance(params, Node) or params.ndim < 1:
        raise TypeError(f"embedding_lookup: params must be an rnncomp array of rank >= 1, "
                        f"received {params!r}")
    if not isinstance(ids, Node) or not ids.dtype.is_int:
        raise TypeError(f"embedding_lookup: ids must be an integer rnncomp array, received "
                        f"{ids!r}")
    return ops.gather(params, ids)


def argmax(input: Node, axis: int | None = None, name=None, dimension: int | None = None,  # noqa: A002
           output_type="i64") -> Node:
    """TF1 tf.argmax: the index of the largest entry along `axis` (default 0, as TF1), as
    `output_type` (i64, or i32). The first index wins ties; a NaN counts as the largest.
    Not differentiable (its inputs get no gradient through it). Runs on every backend."""
    if axis is not None and dimension is not None:
        raise ValueError("argmax: pass axis or dimension (its old name), not both")
    ax = axis if axis is not None else (dimension if dimension is not None else 0)
    if isinstance(ax, bool) or not isinstance(ax, int):
        raise TypeError(f"argmax: axis must be an int, received {ax!r}")
    if not isinstance(input, Node):
        raise TypeError(f"argmax: input must be an rnncomp array, received "
                        f"{type(input).__name__}")
    return ops.argmax(input, ax, as_dtype(output_type))


def one_hot(idx: Node, depth: int, dtype=None) -> Node:
    return ops.one_hot(idx, depth, as_dtype(dtype) if dtype is not None else current().dtype)


def zeros(shape, dtype=None) -> Node:
    return ops.full(tuple(shape), 0.0, as_dtype(dtype) if dtype is not None else current().dtype)


def ones(shape, dtype=None) -> Node:
    return ops.full(tuple(shape), 1.0, as_dtype(dtype) if dtype is not None else current().dtype)


def zeros_like(x: Node) -> Node:
    return ops.zeros_like(x)


# --- randomness and modes --------------------------------------------------------------------
def training_flag() -> Node:
    """The graph's run-time training flag (bool scalar input "@training", default False)."""
    return current().implicit_input("@training", DType.bool)


def seed_input() -> Node:
    """The graph's run-time random seed (i64 scalar input "@seed")."""
    return current().implicit_input("@seed", DType.i64)


def example_offset_input() -> Node:
    """The global index of the batch's first example (i64 scalar input "@example_offset",
    default 0): a data-parallel rank running examples [k, k + b) of a larger batch passes k."""
    return current().implicit_input("@example_offset", DType.i64)


def random_uniform_like(x: Node, *, site: int | None = None, step: Node | None = None) -> Node:
    """Uniform [0, 1) numbers of x's shape; a new site per call, a new draw per step and seed.

    When the leading axis is the batch (`B`), the numbers of example b are those of global
    example `@example_offset + b`: a shard of a batch draws what the whole batch draws there.
    `site` and `step` override the call site (a new one by default) and the step (the current
    loop step by default): variational dropout draws one mask per sequence this way.
    """
    ctx = current()
    if site is None:
        ctx.random_sites += 1
        site = ctx.random_sites
    extra = []
    if x.shape and x.shape[0] == "B":
        # elements per example, read at run time for static dims too (a constant would put
        # the sizes into the compiled kernel, which is shape-generic otherwise)
        offset = example_offset_input()
        for k in range(1, len(x.shape)):
            offset = ops.mul(offset, ops.make(Op.DIMSIZE, x, axis=k, dtype=DType.i64))
        extra = [offset]
    return ops.make(Op.RANDOM_UNIFORM, x, seed_input(), ctx.step() if step is None else step,
                    *extra, site=site, dtype=x.dtype)


def dropout(x: Node, keep_prob: float, training: Node | bool | None = None,
            noise: Node | None = None) -> Node:
    """Inverted dropout (TF1 tf.nn.dropout): x * mask / keep_prob in training, x otherwise.

    `training` defaults to the graph's run-time flag, so one graph serves training and
    inference (the compiled backends specialize on the flag). `noise` (uniform [0, 1) of x's
    shape) replaces the fresh draw: the same noise gives the same mask.
    """
    if isinstance(keep_prob, Node):
        raise TypeError("dropout: keep_prob must be a Python number, not an array (a TF1 "
                        "keep_prob placeholder): pass the training value, e.g. 0.5; dropout is "
                        "active only in training, m(params, training=True, ...), and off at "
                        "inference, which is what feeding keep_prob=1.0 did in TF1")
    if not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"dropout: keep_prob must be in (0, 1], received {keep_prob}")
    if keep_prob == 1.0:
        return x
    if training is None:
        training = training_flag()
    if isinstance(training, bool):
        if not training:
            return x
        training = ops.const(True, DType.bool)
    u = random_uniform_like(x) if noise is None else noise
    keep = ops.lt(u, ops.const(keep_prob, x.dtype))
    dropped = ops.where(keep, ops.mul(x, ops.const(1.0 / keep_prob, x.dtype)),
                        ops.const(0.0, x.dtype))
    return ops.where(training, dropped, x)


# --- operator sugar on nodes -----------------------------------------------------------------
def _install_operators() -> None:
    Node.__add__ = lambda a, b: add(a, b)
    Node.__radd__ = lambda a, b: add(b, a)
    Node.__sub__ = lambda a, b: sub(a, b)
    Node.__rsub__ = lambda a, b: sub(b, a)
    Node.__mul__ = lambda a, b: mul(a, b)
    Node.__rmul__ = lambda a, b: mul(b, a)
    Node.__truediv__ = lambda a, b: div(a, b)
    Node.__rtruediv__ = lambda a, b: div(b, a)
    Node.__neg__ = lambda a: neg(a)
    Node.__matmul__ = lambda a, b: matmul(a, b)
    Node.__lt__ = lambda a, b: less(a, b)
    Node.__le__ = lambda a, b: less_equal(a, b)
    Node.__gt__ = lambda a, b: greater(a, b)
    Node.__ge__ = lambda a, b: greater_equal(a, b)
    Node.T = property(lambda a: transpose(a))
    # A traced value has no Python value yet: `if x > 0:`, `while`, `and`/`or`, int(x) would
    # silently take one branch for every input (JAX raises here too).
    Node.__bool__ = lambda a: _no_python_value(a, "bool()/if/while/and/or",
                                                "rc.where(cond, a, b) to choose per element, "
                                                "or a scan for data-dependent loops")
    Node.__int__ = lambda a: _no_python_value(a, "int()", "rc.cast(x, 'i32')")
    Node.__index__ = lambda a: _no_python_value(a, "an index or size", "rc.take / rc.gather")
    Node.__float__ = lambda a: _no_python_value(a, "float()", "rc.cast(x, 'f32')")
    Node.__complex__ = lambda a: _no_python_value(a, "complex()", "real-valued ops")


def _no_python_value(a: Node, use: str, instead: str):
    raise TraceError(f"a traced value ({a.dtype}[{shape_str(a.shape)}], op {a.op.value}) has no "
                     f"Python value while the model is traced, so it cannot be used as {use}; "
                     f"use {instead}")


_install_operators()
