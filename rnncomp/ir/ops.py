"""The op registry: everything about an op in one record.

Each `OpDef` declares
- `rule(inputs, attrs) -> (shape, dtype)`: the shape/dtype rule (raises ShapeError),
- `impl(ctx, attrs, *arrays) -> ndarray`: the NumPy reference implementation (the oracle),
- `vjp(node, ct, *inputs) -> tuple[Node | None, ...]`: the VJP rule, building IR nodes,
  or `NOT_DIFFERENTIABLE` (integer/boolean results, randomness, indices),
- `render`: the scalar rendering shared by the CPU and CUDA backends (elementwise ops only).

Adding an op touches this file only; the interpreter, autodiff, printer, verifier and the
registry-driven tests find it here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .context import InputError
from .dtypes import DType, as_dtype
from . import provenance
from .graph import Dim, Graph, GroupOp, Node, Op, Shape, ceil_div_dim, intern, shape_str


class ShapeError(ValueError):
    """An op was applied to inputs of incompatible shapes or dtypes."""


NOT_DIFFERENTIABLE = "not differentiable"


@dataclass(frozen=True)
class OpDef:
    op: Op
    rule: Callable[[Sequence[Node], dict[str, Any]], tuple[Shape | None, DType | None]]
    impl: Callable[..., Any] | None
    vjp: Callable[..., tuple] | str | None = None
    render: str | None = None  # scalar template, e.g. "({0} + {1})"; names resolve per backend
    doc: str = ""
    # for tests: how to make valid random inputs (list of (shape, dtype, kind)); see tests
    sample: Callable[[np.random.Generator], tuple[list[Node], dict[str, Any], list[Any]]] | None = \
        field(default=None)


REGISTRY: dict[Op, OpDef] = {}


def register(d: OpDef) -> OpDef:
    REGISTRY[d.op] = d
    return d


def opdef(op: Op) -> OpDef:
    return REGISTRY[op]


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------
def make(op: Op, *inputs: Node, **attrs: Any) -> Node:
    """Build (or find the interned) node for op(inputs, attrs), checking shapes and dtypes."""
    d = REGISTRY[op]
    for i, x in enumerate(inputs):
        if not isinstance(x, Node):
            raise TypeError(f"{op.value}: input {i} must be an IR node, received {type(x).__name__}")
    attrs = {k: v for k, v in attrs.items() if v is not None}
    shape, dtype = d.rule(inputs, attrs)
    return provenance.note(intern(op, inputs, attrs, shape, dtype))


def remake(node: Node, new_inputs: Sequence[Node]) -> Node:
    """The same op and attrs over new inputs (used by substitution and passes); the result
    inherits the node's provenance (printed name, source line)."""
    since = provenance.mark()
    return provenance.inherit(make(node.op, *new_inputs, **dict(node.attrs)), node, since)


# ---------------------------------------------------------------------------------------------
# Shape helpers
# ---------------------------------------------------------------------------------------------
def broadcast_shapes(opname: str, *shapes: Shape) -> Shape:
    nd = max(len(s) for s in shapes)
    out: list[Dim] = []
    for k in range(nd):
        dims = [s[len(s) - nd + k] for s in shapes if len(s) - nd + k >= 0]
        d: Dim = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                raise ShapeError(
                    f"{opname}: shapes [{'], ['.join(shape_str(s) for s in shapes)}] "
                    f"do not broadcast (dimension {k} is {d} in one and {x} in another)"
                )
        out.append(d)
    return tuple(out)


def _same_dtype(opname: str, inputs: Sequence[Node]) -> DType:
    dts = {x.dtype for x in inputs}
    if len(dts) != 1:
        raise ShapeError(
            f"{opname}: inputs must have one dtype, received "
            + ", ".join(f"{x.dtype}[{shape_str(x.shape)}]" for x in inputs)
        )
    return inputs[0].dtype  # type: ignore[return-value]


def _need_float(opname: str, x: Node) -> None:
    if not x.dtype.is_float:  # type: ignore[union-attr]
        raise ShapeError(f"{opname}: expected a floating-point input (f32 or f64), received {x.dtype}")


def norm_axis(axis: int, ndim: int, opname: str) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"{opname}: axis {axis} is out of range for rank {ndim}")
    return axis % ndim if ndim else 0


def numel_known(shape: Shape) -> int | None:
    n = 1
    for d in shape:
        if isinstance(d, str):
            return None
        n *= d
    return n


# ---------------------------------------------------------------------------------------------
# Leaves
# ---------------------------------------------------------------------------------------------
def _leaf_rule(inputs, attrs):
    return tuple(attrs["shape"]), as_dtype(attrs["dtype"])


def _const_rule(inputs, attrs):
    return (), as_dtype(attrs["dtype"])


def _impl_leaf(ctx, attrs):
    raise RuntimeError("leaves are bound by the interpreter, not computed")


register(OpDef(Op.INPUT, _leaf_rule, _impl_leaf, NOT_DIFFERENTIABLE, doc="a named graph input"))
register(OpDef(Op.PARAM, _leaf_rule, _impl_leaf, NOT_DIFFERENTIABLE, doc="a named parameter"))
register(OpDef(Op.PLACEHOLDER, _leaf_rule, _impl_leaf, NOT_DIFFERENTIABLE,
               doc="an input of a scan body"))
register(OpDef(Op.CONST, _const_rule,
               lambda ctx, attrs: np.array(attrs["value"], dtype=as_dtype(attrs["dtype"]).np),
               NOT_DIFFERENTIABLE, render="{const}", doc="a scalar literal"))
register(OpDef(Op.FULL, _leaf_rule,
               lambda ctx, attrs: np.full(ctx.resolve(attrs["shape"]), attrs["value"],
                                          dtype=as_dtype(attrs["dtype"]).np),
               NOT_DIFFERENTIABLE, doc="an array filled with one value (shape may be symbolic)"))


def const(value: float | int | bool, dtype: DType | str) -> Node:
    dtype = as_dtype(dtype)
    if dtype.is_float:
        value = float(value)
    elif dtype.is_int:
        value = int(value)
    else:
        value = bool(value)
    return make(Op.CONST, value=value, dtype=dtype)


def full(shape: Shape, value: float, dtype: DType | str) -> Node:
    return make(Op.FULL, shape=tuple(shape), value=float(value) if as_dtype(dtype).is_float
                else value, dtype=as_dtype(dtype))


def zeros_like(x: Node) -> Node:
    return full(x.shape, 0.0, x.dtype)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Elementwise: unary
# ---------------------------------------------------------------------------------------------
def _unary_float_rule(op: Op):
    def rule(inputs, attrs):
        (x,) = inputs
        _need_float(op.value, x)
        return x.shape, x.dtype

    return rule


def _sigmoid_np(x):
    # numerically stable in both tails
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x))).astype(x.dtype)


def _vjp_neg(node, ct, x):
    return (neg(ct),)


def _vjp_exp(node, ct, x):
    return (mul(ct, node),)


def _vjp_log(node, ct, x):
    return (div(ct, x),)


def _vjp_tanh(node, ct, x):
    one = const(1.0, node.dtype)
    return (mul(ct, sub(one, mul(node, node))),)


def _vjp_sigmoid(node, ct, x):
    one = const(1.0, node.dtype)
    return (mul(ct, mul(node, sub(one, node))),)


def _vjp_relu(node, ct, x):
    return (where(gt(x, const(0.0, x.dtype)), ct, const(0.0, x.dtype)),)


def _vjp_sqrt(node, ct, x):
    return (div(ct, mul(const(2.0, x.dtype), node)),)


def _vjp_abs(node, ct, x):
    zero = const(0.0, x.dtype)
    return (where(ge(x, zero), ct, neg(ct)),)


_UNARY = [
    (Op.NEG, np.negative, _vjp_neg, "(-{0})"),
    (Op.EXP, np.exp, _vjp_exp, "exp({0})"),
    (Op.LOG, np.log, _vjp_log, "log({0})"),
    (Op.TANH, np.tanh, _vjp_tanh, "tanh({0})"),
    (Op.SIGMOID, _sigmoid_np, _vjp_sigmoid, "sigmoid({0})"),
    (Op.RELU, lambda x: np.maximum(x, np.zeros((), x.dtype)), _vjp_relu, "relu({0})"),
    (Op.SQRT, np.sqrt, _vjp_sqrt, "sqrt({0})"),
    (Op.ABS, np.abs, _vjp_abs, "abs({0})"),
]
for _op, _fn, _vjp, _r in _UNARY:
    register(OpDef(_op, _unary_float_rule(_op), (lambda f: lambda ctx, attrs, x: f(x))(_fn),
                   _vjp, _r))


def _not_rule(inputs, attrs):
    (x,) = inputs
    if x.dtype is not DType.bool:
        raise ShapeError(f"not: expected a bool input, received {x.dtype}")
    return x.shape, x.dtype


register(OpDef(Op.NOT, _not_rule, lambda ctx, attrs, x: np.logical_not(x), NOT_DIFFERENTIABLE,
               "(not {0})"))


def _cast_rule(inputs, attrs):
    (x,) = inputs
    return x.shape, as_dtype(attrs["dtype"])


def _vjp_cast(node, ct, x):
    if not x.dtype.is_float or not node.dtype.is_float:
        return (None,)
    return (cast(ct, x.dtype),)


register(OpDef(Op.CAST, _cast_rule,
               lambda ctx, attrs, x: x.astype(as_dtype(attrs["dtype"]).np), _vjp_cast,
               "{cast}({0})", doc="convert element type"))
register(OpDef(Op.STOP_GRADIENT, lambda inputs, attrs: (inputs[0].shape, inputs[0].dtype),
               lambda ctx, attrs, x: x, lambda node, ct, x: (None,), "{0}",
               doc="identity whose cotangent is zero"))


# ---------------------------------------------------------------------------------------------
# Elementwise: binary and ternary
# ---------------------------------------------------------------------------------------------
def _binary_rule(op: Op, out_bool=False, need_bool=False, need_float=False):
    def rule(inputs, attrs):
        a, b = inputs
        dt = _same_dtype(op.value, inputs)
        if need_bool and dt is not DType.bool:
            raise ShapeError(f"{op.value}: expected bool inputs, received {dt}")
        if need_float:
            _need_float(op.value, a)
        shape = broadcast_shapes(op.value, a.shape, b.shape)
        return shape, (DType.bool if out_bool else dt)

    return rule


def unbroadcast(ct: Node, shape: Shape) -> Node:
    """Sum a cotangent of a broadcast result back to an input's shape."""
    if ct.shape == tuple(shape):
        return ct
    nd = len(ct.shape)
    lead = nd - len(shape)
    axes = list(range(lead))
    for k, d in enumerate(shape):
        if d == 1 and ct.shape[lead + k] != 1:
            axes.append(lead + k)
    r = reduce_sum(ct, tuple(axes), keepdims=False) if axes else ct
    if r.shape != tuple(shape):
        r = reshape(r, tuple(shape))
    return r


def _vjp_add(node, ct, a, b):
    return unbroadcast(ct, a.shape), unbroadcast(ct, b.shape)


def _vjp_sub(node, ct, a, b):
    return unbroadcast(ct, a.shape), unbroadcast(neg(ct), b.shape)


def _vjp_mul(node, ct, a, b):
    return unbroadcast(mul(ct, b), a.shape), unbroadcast(mul(ct, a), b.shape)


def _vjp_div(node, ct, a, b):
    ga = div(ct, b)
    gb = neg(mul(ga, node))  # -ct * a / b^2 = -(ct/b) * (a/b)
    return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)


def _vjp_max(node, ct, a, b):
    zero = const(0.0, node.dtype)
    pick_a = ge(a, b)
    return (unbroadcast(where(pick_a, ct, zero), a.shape),
            unbroadcast(where(pick_a, zero, ct), b.shape))


def _vjp_min(node, ct, a, b):
    zero = const(0.0, node.dtype)
    pick_a = le(a, b)
    return (unbroadcast(where(pick_a, ct, zero), a.shape),
            unbroadcast(where(pick_a, zero, ct), b.shape))


def _vjp_pow(node, ct, a, b):
    # d/da a^b = b a^(b-1);  d/db a^b = log(a) a^b  (a > 0 where b is differentiated)
    one = const(1.0, node.dtype)
    ga = mul(ct, mul(b, pow_(a, sub(b, one))))
    gb = mul(ct, mul(node, log(a)))
    return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)


_BINARY = [
    (Op.ADD, np.add, _vjp_add, "({0} + {1})", {}),
    (Op.SUB, np.subtract, _vjp_sub, "({0} - {1})", {}),
    (Op.MUL, np.multiply, _vjp_mul, "({0} * {1})", {}),
    (Op.DIV, np.divide, _vjp_div, "({0} / {1})", {}),
    (Op.MAXIMUM, np.maximum, _vjp_max, "max({0}, {1})", {}),
    (Op.MINIMUM, np.minimum, _vjp_min, "min({0}, {1})", {}),
    (Op.POW, np.power, _vjp_pow, "({0} ** {1})", {"need_float": True}),
    (Op.LT, np.less, NOT_DIFFERENTIABLE, "({0} < {1})", {"out_bool": True}),
    (Op.LE, np.less_equal, NOT_DIFFERENTIABLE, "({0} <= {1})", {"out_bool": True}),
    (Op.GT, np.greater, NOT_DIFFERENTIABLE, "({0} > {1})", {"out_bool": True}),
    (Op.GE, np.greater_equal, NOT_DIFFERENTIABLE, "({0} >= {1})", {"out_bool": True}),
    (Op.EQ, np.equal, NOT_DIFFERENTIABLE, "({0} == {1})", {"out_bool": True}),
    (Op.AND, np.logical_and, NOT_DIFFERENTIABLE, "({0} and {1})", {"need_bool": True}),
    (Op.OR, np.logical_or, NOT_DIFFERENTIABLE, "({0} or {1})", {"need_bool": True}),
]


def _np_binary(f):
    def impl(ctx, attrs, a, b):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = f(a, b)
        return np.asarray(r)

    return impl


for _op, _fn, _vjp, _r, _kw in _BINARY:
    register(OpDef(_op, _binary_rule(_op, **_kw), _np_binary(_fn), _vjp, _r))


def _where_rule(inputs, attrs):
    c, a, b = inputs
    if c.dtype is not DType.bool:
        raise ShapeError(f"where: condition must be bool, received {c.dtype}")
    dt = _same_dtype("where", [a, b])
    return broadcast_shapes("where", c.shape, a.shape, b.shape), dt


def _vjp_where(node, ct, c, a, b):
    zero = const(0.0, node.dtype)
    return (None, unbroadcast(where(c, ct, zero), a.shape),
            unbroadcast(where(c, zero, ct), b.shape))


register(OpDef(Op.WHERE, _where_rule, lambda ctx, attrs, c, a, b: np.asarray(np.where(c, a, b)),
               _vjp_where, "({1} if {0} else {2})"))


# ---------------------------------------------------------------------------------------------
# Counter-based random numbers: identical in NumPy, Numba and CUDA
# ---------------------------------------------------------------------------------------------
def hash_uniform_np(seed: int, site: int, step: int, n: int, dtype,
                    offset: int = 0) -> np.ndarray:
    """Uniform [0, 1) numbers from a 32-bit integer hash of (seed, site, step, element index).

    The same arithmetic is rendered into the compiled kernels, so dropout masks agree bit for
    bit between the interpreter and every backend (and are reproducible from the seed alone).
    `offset` is added to the element index (the global position of a shard's first element,
    so data-parallel ranks draw exactly the numbers one process draws for the whole batch).
    """
    m = np.uint64(0xFFFFFFFF)
    idx = np.arange(n, dtype=np.uint64) + np.uint64(int(offset) & 0xFFFFFFFFFFFFFFFF)
    s = np.uint64(seed & 0xFFFFFFFF) ^ ((np.uint64((seed >> 32) & 0xFFFFFFFF)
                                         * np.uint64(0x27D4EB2F)) & m)
    h = ((idx * np.uint64(0x9E3779B1)) & m) ^ ((np.uint64(step & 0xFFFFFFFF)
                                                 * np.uint64(0x85EBCA77)) & m) \
        ^ ((np.uint64(site & 0xFFFFFFFF) * np.uint64(0xC2B2AE3D)) & m) ^ s
    # lowbias32 finalizer (Wellons): good avalanche with 32-bit multiplies only
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    return ((h >> np.uint64(8)).astype(np.float64) * (1.0 / 16777216.0)).astype(dtype)


def _random_rule(inputs, attrs):
    like, seed, step = inputs[:3]
    if len(inputs) == 4 and (inputs[3].shape != () or not inputs[3].dtype.is_int):
        raise ShapeError(f"random_uniform: the index offset must be an integer scalar, received "
                         f"{inputs[3].dtype}[{shape_str(inputs[3].shape)}]")
    if len(inputs) not in (3, 4):
        raise ShapeError(f"random_uniform: expected 3 or 4 inputs, received {len(inputs)}")
    if seed.shape != () or not seed.dtype.is_int:
        raise ShapeError(f"random_uniform: seed must be an integer scalar, received "
                         f"{seed.dtype}[{shape_str(seed.shape)}]")
    if step.shape != () or not step.dtype.is_int:
        raise ShapeError(f"random_uniform: step must be an integer scalar, received "
                         f"{step.dtype}[{shape_str(step.shape)}]")
    return like.shape, as_dtype(attrs.get("dtype", like.dtype))


def _random_impl(ctx, attrs, like, seed, step, offset=0):
    n = int(np.prod(like.shape))
    r = hash_uniform_np(int(seed), int(attrs["site"]), int(step), n, as_dtype(attrs["dtype"]).np,
                        int(offset))
    return r.reshape(like.shape)


register(OpDef(Op.RANDOM_UNIFORM, _random_rule, _random_impl,
               lambda node, ct, *xs: (None,) * len(xs),
               doc="uniform [0,1) of the shape of `like`, from (seed, site, step, index + the "
                   "optional offset)"))


# ---------------------------------------------------------------------------------------------
# Movement
# ---------------------------------------------------------------------------------------------
def _reshape_rule(inputs, attrs):
    (x,) = inputs
    new = tuple(attrs["shape"])
    a, b = numel_known(x.shape), numel_known(new)
    if a is not None and b is not None and a != b:
        raise ShapeError(f"reshape: cannot reshape [{shape_str(x.shape)}] ({a} elements) to "
                         f"[{shape_str(new)}] ({b} elements)")
    if (a is None) != (b is None):
        sa = sorted(d for d in x.shape if isinstance(d, str))
        sb = sorted(d for d in new if isinstance(d, str))
        if sa != sb:
            raise ShapeError(f"reshape: symbolic dims must be kept: [{shape_str(x.shape)}] -> "
                             f"[{shape_str(new)}]")
    return new, x.dtype


register(OpDef(Op.RESHAPE, _reshape_rule,
               lambda ctx, attrs, x: x.reshape(ctx.resolve(attrs["shape"])),
               lambda node, ct, x: (reshape(ct, x.shape),)))


def _transpose_rule(inputs, attrs):
    (x,) = inputs
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: perm {perm} is not a permutation of {x.ndim} axes")
    return tuple(x.shape[p] for p in perm), x.dtype


def _vjp_transpose(node, ct, x):
    perm = node.attr("perm")
    inv = tuple(int(i) for i in np.argsort(perm))
    return (transpose(ct, inv),)


register(OpDef(Op.TRANSPOSE, _transpose_rule,
               lambda ctx, attrs, x: np.transpose(x, attrs["perm"]), _vjp_transpose))


def _broadcast_rule(inputs, attrs):
    (x,) = inputs
    shape = tuple(attrs["shape"])
    out = broadcast_shapes("broadcast", x.shape, shape)
    if out != shape:
        raise ShapeError(f"broadcast: cannot broadcast [{shape_str(x.shape)}] to "
                         f"[{shape_str(shape)}]")
    return shape, x.dtype


register(OpDef(Op.BROADCAST, _broadcast_rule,
               lambda ctx, attrs, x: np.broadcast_to(x, ctx.resolve(attrs["shape"])).copy(),
               lambda node, ct, x: (unbroadcast(ct, x.shape),)))


def _slice_rule(inputs, attrs):
    (x,) = inputs
    ax, start, stop = attrs["axis"], attrs["start"], attrs["stop"]
    if not 0 <= ax < x.ndim:
        raise ShapeError(f"slice: axis {ax} out of range for rank {x.ndim}")
    d = x.shape[ax]
    if isinstance(d, str):
        raise ShapeError(f"slice: cannot slice the symbolic dimension {d!r} of "
                         f"[{shape_str(x.shape)}]")
    if not 0 <= start <= stop <= d:
        raise ShapeError(f"slice: [{start}:{stop}] is outside 0..{d} on axis {ax} of "
                         f"[{shape_str(x.shape)}]")
    shape = list(x.shape)
    shape[ax] = stop - start
    return tuple(shape), x.dtype


def _slice_impl(ctx, attrs, x):
    idx = [slice(None)] * x.ndim
    idx[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
    return x[tuple(idx)]


def _vjp_slice(node, ct, x):
    return (pad(ct, node.attr("axis"), node.attr("start"), x.shape[node.attr("axis")]),)


register(OpDef(Op.SLICE, _slice_rule, _slice_impl, _vjp_slice))


def _pad_rule(inputs, attrs):
    (x,) = inputs
    ax, start, size = attrs["axis"], attrs["start"], attrs["size"]
    if not 0 <= ax < x.ndim:
        raise ShapeError(f"pad: axis {ax} out of range for rank {x.ndim}")
    d = x.shape[ax]
    if isinstance(d, str) or not 0 <= start <= start + d <= size:
        raise ShapeError(f"pad: cannot place [{shape_str(x.shape)}] at {start} in {size} "
                         f"along axis {ax}")
    shape = list(x.shape)
    shape[ax] = size
    return tuple(shape), x.dtype


def _pad_impl(ctx, attrs, x):
    shape = list(x.shape)
    ax = attrs["axis"]
    shape[ax] = attrs["size"]
    out = np.zeros(shape, x.dtype)
    idx = [slice(None)] * x.ndim
    idx[ax] = slice(attrs["start"], attrs["start"] + x.shape[ax])
    out[tuple(idx)] = x
    return out


def _vjp_pad(node, ct, x):
    s = node.attr("start")
    return (slice_(ct, node.attr("axis"), s, s + x.shape[node.attr("axis")]),)


register(OpDef(Op.PAD, _pad_rule, _pad_impl, _vjp_pad, doc="zeros with x placed at start"))


def _concat_rule(inputs, attrs):
    ax = attrs["axis"]
    if not inputs:
        raise ShapeError("concat: needs at least one input")
    _same_dtype("concat", inputs)
    nd = inputs[0].ndim
    total = 0
    for x in inputs:
        if x.ndim != nd:
            raise ShapeError(f"concat: all inputs need rank {nd}, received "
                             + ", ".join(f"[{shape_str(y.shape)}]" for y in inputs))
        for k in range(nd):
            if k != ax and x.shape[k] != inputs[0].shape[k]:
                raise ShapeError(
                    f"concat: shapes differ outside axis {ax}: "
                    + ", ".join(f"[{shape_str(y.shape)}]" for y in inputs))
        d = x.shape[ax]
        if isinstance(d, str):
            raise ShapeError(f"concat: cannot concatenate along symbolic dimension {d!r}")
        total += d
    shape = list(inputs[0].shape)
    shape[ax] = total
    return tuple(shape), inputs[0].dtype


def _vjp_concat(node, ct, *xs):
    ax = node.attr("axis")
    out, off = [], 0
    for x in xs:
        out.append(slice_(ct, ax, off, off + x.shape[ax]))
        off += x.shape[ax]
    return tuple(out)


register(OpDef(Op.CONCAT, _concat_rule,
               lambda ctx, attrs, *xs: np.concatenate(xs, axis=attrs["axis"]), _vjp_concat))


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------
def _reduce_rule(op: Op):
    def rule(inputs, attrs):
        (x,) = inputs
        axes = tuple(attrs["axes"])
        if any(not 0 <= a < x.ndim for a in axes) or len(set(axes)) != len(axes):
            raise ShapeError(f"{op.value}: axes {axes} invalid for rank {x.ndim}")
        keep = attrs.get("keepdims", False)
        shape = tuple((1 if k in axes else d) for k, d in enumerate(x.shape) if keep or k not in axes)
        return shape, x.dtype

    return rule


def _keep_shape(x: Node, axes) -> Shape:
    return tuple((1 if k in axes else d) for k, d in enumerate(x.shape))


def _vjp_reduce_sum(node, ct, x):
    axes = node.attr("axes")
    if not node.attr("keepdims", False):
        ct = reshape(ct, _keep_shape(x, axes))
    return (broadcast(ct, x.shape),)


def _vjp_reduce_max(node, ct, x):
    axes = node.attr("axes")
    m, c = node, ct
    if not node.attr("keepdims", False):
        m = reshape(node, _keep_shape(x, axes))
        c = reshape(ct, _keep_shape(x, axes))
    hit = cast(eq(x, m), x.dtype)
    count = reduce_sum(hit, axes, keepdims=True)
    return (mul(broadcast(div(c, count), x.shape), hit),)


register(OpDef(Op.REDUCE_SUM, _reduce_rule(Op.REDUCE_SUM),
               lambda ctx, attrs, x: np.asarray(np.sum(x, axis=tuple(attrs["axes"]),
                                                       keepdims=attrs.get("keepdims", False))),
               _vjp_reduce_sum))
register(OpDef(Op.REDUCE_MAX, _reduce_rule(Op.REDUCE_MAX),
               lambda ctx, attrs, x: np.asarray(np.max(x, axis=tuple(attrs["axes"]),
                                                       keepdims=attrs.get("keepdims", False))),
               _vjp_reduce_max))


# ---------------------------------------------------------------------------------------------
# Contractions
# ---------------------------------------------------------------------------------------------
def _matmul_rule(inputs, attrs):
    a, b = inputs
    _same_dtype("matmul", inputs)
    if a.ndim < 1 or b.ndim != 2:
        raise ShapeError(f"matmul: expected a [..., K] and b [K, N], received "
                         f"[{shape_str(a.shape)}] and [{shape_str(b.shape)}]")
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(f"matmul: inner dimensions differ: [{shape_str(a.shape)}] @ "
                         f"[{shape_str(b.shape)}] ({a.shape[-1]} != {b.shape[0]})")
    return tuple(a.shape[:-1]) + (b.shape[1],), a.dtype


def _vjp_matmul(node, ct, a, b):
    da = matmul(ct, transpose(b, (1, 0)))
    lead = tuple(range(a.ndim - 1))
    db = tensordot(a, ct, lead, lead)
    return da, db


register(OpDef(Op.MATMUL, _matmul_rule, lambda ctx, attrs, a, b: np.asarray(a @ b), _vjp_matmul,
               doc="a [..., K] @ b [K, N] -> [..., N]"))


def _tensordot_rule(inputs, attrs):
    a, b = inputs
    _same_dtype("tensordot", inputs)
    aa, ba = tuple(attrs["a_axes"]), tuple(attrs["b_axes"])
    if len(aa) != len(ba):
        raise ShapeError("tensordot: a_axes and b_axes differ in length")
    for i, j in zip(aa, ba):
        if not (0 <= i < a.ndim and 0 <= j < b.ndim) or a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: cannot contract axis {i} of [{shape_str(a.shape)}] "
                             f"with axis {j} of [{shape_str(b.shape)}]")
    shape = tuple(d for k, d in enumerate(a.shape) if k not in aa) + \
        tuple(d for k, d in enumerate(b.shape) if k not in ba)
    return shape, a.dtype


def _vjp_tensordot(node, ct, a, b):
    aa, ba = node.attr("a_axes"), node.attr("b_axes")
    a_free = [k for k in range(a.ndim) if k not in aa]
    b_free = [k for k in range(b.ndim) if k not in ba]
    na, nb = len(a_free), len(b_free)
    # ct has axes a_free + b_free. da[a_free + aa] = tensordot(ct, b, b_free axes of ct with b_free)
    ga = tensordot(ct, b, tuple(range(na, na + nb)), tuple(b_free))  # -> a_free + ba(order of b)
    # ga axes: a_free..., then b's remaining axes in increasing order = ba sorted
    b_rest = [k for k in range(b.ndim) if k not in b_free]  # sorted contracted axes of b
    src = a_free + [aa[ba.index(k)] for k in b_rest]
    ga = transpose(ga, tuple(int(i) for i in np.argsort(src))) if src != sorted(src) else ga
    gb = tensordot(a, ct, tuple(a_free), tuple(range(na)))  # -> a contracted (sorted) + b_free
    a_rest = [k for k in range(a.ndim) if k not in a_free]
    srcb = [ba[aa.index(k)] for k in a_rest] + b_free
    gb = transpose(gb, tuple(int(i) for i in np.argsort(srcb))) if srcb != sorted(srcb) else gb
    return ga, gb


register(OpDef(Op.TENSORDOT, _tensordot_rule,
               lambda ctx, attrs, a, b: np.asarray(np.tensordot(
                   a, b, axes=(list(attrs["a_axes"]), list(attrs["b_axes"])))),
               _vjp_tensordot, doc="contract a_axes of a with b_axes of b (numpy.tensordot)"))


# ---------------------------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------------------------
def _take_rule(inputs, attrs):
    x, idx = inputs
    if not idx.dtype.is_int:
        raise ShapeError(f"take: indices must be integers, received {idx.dtype}")
    if tuple(x.shape[:-1]) != tuple(idx.shape):
        raise ShapeError(f"take: indices shape [{shape_str(idx.shape)}] must equal the leading "
                         f"dims of [{shape_str(x.shape)}]")
    return tuple(idx.shape), x.dtype


class IndexOutOfRange(InputError, IndexError):
    """An index op (take/gather) met an index outside its axis, on any backend."""


def take_index_error(value: int, n: int) -> IndexOutOfRange:
    """The error every backend raises for a bad take/gather index. The rule, the same on all
    backends (TF1's): valid indices are 0 <= i < n; negative indices are errors, not wrapped."""
    return IndexOutOfRange(
        f"take/gather: index {int(value)} is out of range for an axis of size {n} (valid: 0 to "
        f"{n - 1}; negative indices are not allowed); check the labels or the computed indices")


def check_take_indices(idx: np.ndarray, n: int) -> None:
    bad = (idx < 0) | (idx >= n)
    if np.any(bad):
        raise take_index_error(np.asarray(idx)[bad].flat[0], n)


def _take_impl(ctx, attrs, x, idx):
    check_take_indices(idx, x.shape[-1])
    return np.take_along_axis(x, idx[..., None].astype(np.int64), axis=-1)[..., 0]


def _vjp_take(node, ct, x, idx):
    oh = one_hot(idx, x.shape[-1], x.dtype)
    return mul(oh, reshape(ct, tuple(ct.shape) + (1,))), None


register(OpDef(Op.TAKE, _take_rule, _take_impl, _vjp_take,
               doc="x[..., idx] along the last axis (labels -> logits picked)"))


def _one_hot_rule(inputs, attrs):
    (idx,) = inputs
    if not idx.dtype.is_int:
        raise ShapeError(f"one_hot: indices must be integers, received {idx.dtype}")
    return tuple(idx.shape) + (int(attrs["depth"]),), as_dtype(attrs["dtype"])


register(OpDef(Op.ONE_HOT, _one_hot_rule,
               lambda ctx, attrs, idx: (idx[..., None] == np.arange(attrs["depth"])).astype(
                   as_dtype(attrs["dtype"]).np),
               lambda node, ct, idx: (None,)))


def _argmax_rule(inputs, attrs):
    (x,) = inputs
    if not (x.dtype.is_float or x.dtype.is_int):
        raise ShapeError(f"argmax: expected a float or integer input, received {x.dtype}")
    if x.ndim == 0:
        raise ShapeError("argmax: expected an input of rank >= 1, received a scalar")
    ax = attrs["axis"]
    if not 0 <= ax < x.ndim:
        raise ShapeError(f"argmax: axis {ax} out of range for rank {x.ndim}")
    dt = as_dtype(attrs["dtype"])
    if not dt.is_int:
        raise ShapeError(f"argmax: output_type must be an integer dtype, received {dt}")
    return tuple(d for k, d in enumerate(x.shape) if k != ax), dt


def _argmax_impl(ctx, attrs, x):
    # numpy.argmax: the first of equal maxima; a NaN counts as the maximum (the first NaN)
    return np.asarray(np.argmax(x, axis=attrs["axis"])).astype(as_dtype(attrs["dtype"]).np)


register(OpDef(Op.ARGMAX, _argmax_rule, _argmax_impl, NOT_DIFFERENTIABLE,
               doc="index of the largest entry along `axis` (first of ties; TF1 tf.argmax)"))


def _gather_rule(inputs, attrs):
    table, idx = inputs
    if not idx.dtype.is_int:
        raise ShapeError(f"gather: indices must be integers, received {idx.dtype}")
    if table.ndim < 1:
        raise ShapeError("gather: expected a table of rank >= 1 (rows first), received a scalar")
    return tuple(idx.shape) + tuple(table.shape[1:]), table.dtype


def _gather_impl(ctx, attrs, table, idx):
    check_take_indices(idx, table.shape[0])
    return np.take(table, idx.astype(np.int64), axis=0)


def _vjp_gather(node, ct, table, idx):
    if not isinstance(table.shape[0], int):
        raise ShapeError(f"gather: the gradient needs a static number of rows, received "
                         f"[{shape_str(table.shape)}]")
    return scatter_add(ct, idx, table.shape[0]), None


register(OpDef(Op.GATHER, _gather_rule, _gather_impl, _vjp_gather,
               doc="rows of a table: table[idx] -> idx.shape + table.shape[1:] (TF1 tf.gather "
                   "on axis 0, tf.nn.embedding_lookup)"))


def _scatter_add_rule(inputs, attrs):
    src, idx = inputs
    if not idx.dtype.is_int:
        raise ShapeError(f"scatter_add: indices must be integers, received {idx.dtype}")
    k = idx.ndim
    if tuple(src.shape[:k]) != tuple(idx.shape):
        raise ShapeError(f"scatter_add: src [{shape_str(src.shape)}] must start with the "
                         f"indices' shape [{shape_str(idx.shape)}]")
    rows = attrs["rows"]
    if not isinstance(rows, int) or rows < 1:
        raise ShapeError(f"scatter_add: rows must be a positive int, received {rows!r}")
    return (rows,) + tuple(src.shape[k:]), src.dtype


def _scatter_add_impl(ctx, attrs, src, idx):
    check_take_indices(idx, attrs["rows"])
    out = np.zeros((attrs["rows"],) + src.shape[idx.ndim:], src.dtype)
    np.add.at(out, idx.astype(np.int64), src)
    return out


register(OpDef(Op.SCATTER_ADD, _scatter_add_rule, _scatter_add_impl,
               lambda node, ct, src, idx: (gather(ct, idx), None),
               doc="zeros [rows, ...] with src[i] added to row idx[i] (gather's gradient)"))


def _argsort_rule(inputs, attrs):
    (x,) = inputs
    if x.ndim != 1 or not x.dtype.is_int:
        raise ShapeError(f"argsort: expected a 1-D integer array (lengths), received "
                         f"{x.dtype}[{shape_str(x.shape)}]")
    return x.shape, DType.i32


def _argsort_impl(ctx, attrs, x):
    return np.argsort(-x.astype(np.int64), kind="stable").astype(np.int32)


register(OpDef(Op.ARGSORT, _argsort_rule, _argsort_impl, NOT_DIFFERENTIABLE,
               doc="the stable order of a 1-D integer array, largest first (sequence lengths, "
                   "longest first, ties in their original order)"))


def _permute_rule(inputs, attrs):
    x, perm = inputs
    ax = attrs["axis"]
    if not isinstance(ax, int) or not 0 <= ax < x.ndim:
        raise ShapeError(f"permute: axis {ax!r} out of range for rank {x.ndim}")
    if perm.ndim != 1 or not perm.dtype.is_int or perm.shape[0] != x.shape[ax]:
        raise ShapeError(f"permute: perm must be an integer [{x.shape[ax]}] array (axis {ax} of "
                         f"[{shape_str(x.shape)}]), received {perm.dtype}[{shape_str(perm.shape)}]")
    return x.shape, x.dtype


def _permute_impl(ctx, attrs, x, perm):
    p = perm.astype(np.int64)
    if sorted(p.tolist()) != list(range(p.shape[0])):
        raise InputError(f"permute: {p.tolist()} is not a permutation of 0..{p.shape[0] - 1}")
    if attrs.get("inverse", False):
        p = np.argsort(p)
    return np.take(x, p, axis=attrs["axis"])


def _vjp_permute(node, ct, x, perm):
    return permute(ct, perm, node.attr("axis"), not node.attr("inverse", False)), None


register(OpDef(Op.PERMUTE, _permute_rule, _permute_impl, _vjp_permute,
               doc="x.take(perm, axis); inverse=True: the inverse permutation (out.take(perm, "
                   "axis) == x)"))


def _ragged_valid(T: int, lengths: np.ndarray) -> np.ndarray:
    """valid[t, b] = t < lengths[b]."""
    return np.arange(T)[:, None] < lengths.astype(np.int64)[None, :]


def _ragged_check(opname: str, a: Node, lengths: Node) -> None:
    if a.ndim != 3:
        raise ShapeError(f"{opname}: expected a [T, B, K] array, received [{shape_str(a.shape)}]")
    if lengths.ndim != 1 or not lengths.dtype.is_int or lengths.shape[0] != a.shape[1]:
        raise ShapeError(f"{opname}: lengths must be an integer [{a.shape[1]}] array, received "
                         f"{lengths.dtype}[{shape_str(lengths.shape)}]")


def _ragged_matmul_rule(inputs, attrs):
    a, w, lengths = inputs
    _ragged_check("ragged_matmul", a, lengths)
    shape, dt = _matmul_rule([a, w], {})
    return shape, dt


def _ragged_matmul_impl(ctx, attrs, a, w, lengths):
    valid = _ragged_valid(a.shape[0], lengths)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(valid, np.where(valid, a, 0) @ w, 0).astype(a.dtype)


def _vjp_ragged_matmul(node, ct, a, w, lengths):
    return (ragged_matmul(ct, transpose(w, (1, 0)), lengths),
            ragged_tensordot(a, ct, lengths), None)


register(OpDef(Op.RAGGED_MATMUL, _ragged_matmul_rule, _ragged_matmul_impl, _vjp_ragged_matmul,
               doc="a [T, B, K] @ w [K, N] on the rows (t, b) with t < lengths[b]; the other "
                   "rows are zero (the input projection of a variable-length batch)"))


def _ragged_tensordot_rule(inputs, attrs):
    a, c, lengths = inputs
    _ragged_check("ragged_tensordot", a, lengths)
    _same_dtype("ragged_tensordot", [a, c])
    if c.ndim != 3 or tuple(c.shape[:2]) != tuple(a.shape[:2]):
        raise ShapeError(f"ragged_tensordot: a [{shape_str(a.shape)}] and c "
                         f"[{shape_str(c.shape)}] must share their [T, B] axes")
    return (a.shape[2], c.shape[2]), a.dtype


def _ragged_tensordot_impl(ctx, attrs, a, c, lengths):
    valid = _ragged_valid(a.shape[0], lengths)[..., None]
    return np.tensordot(np.where(valid, a, 0), np.where(valid, c, 0),
                        axes=([0, 1], [0, 1])).astype(a.dtype)


def _vjp_ragged_tensordot(node, ct, a, c, lengths):
    return (ragged_matmul(c, transpose(ct, (1, 0)), lengths), ragged_matmul(a, ct, lengths), None)


register(OpDef(Op.RAGGED_TENSORDOT, _ragged_tensordot_rule, _ragged_tensordot_impl,
               _vjp_ragged_tensordot,
               doc="sum over the rows (t, b) with t < lengths[b] of the outer products a[t, b] "
                   "(x) c[t, b] -> [K, N] (a weight gradient of a variable-length batch)"))


def _dimsize_rule(inputs, attrs):
    (x,) = inputs
    if not 0 <= attrs["axis"] < x.ndim:
        raise ShapeError(f"dimsize: axis {attrs['axis']} out of range for rank {x.ndim}")
    return (), as_dtype(attrs["dtype"])


register(OpDef(Op.DIMSIZE, _dimsize_rule,
               lambda ctx, attrs, x: np.array(x.shape[attrs["axis"]],
                                              dtype=as_dtype(attrs["dtype"]).np),
               lambda node, ct, x: (None,), doc="the run-time size of one axis, as a scalar"))


# ---------------------------------------------------------------------------------------------
# Time segments (BPTT checkpointing, rnncomp.transforms.remat)
# ---------------------------------------------------------------------------------------------
def _segment_rule(inputs, attrs):
    (x,) = inputs
    k = attrs["k"]
    if not isinstance(k, int) or k < 1:
        raise ShapeError(f"segment: k must be a positive int, received {k!r}")
    if x.ndim < 1:
        raise ShapeError("segment: needs an array with a leading time axis, received a scalar")
    return (ceil_div_dim(x.shape[0], k), k) + tuple(x.shape[1:]), x.dtype


def _segment_impl(ctx, attrs, x):
    k = attrs["k"]
    T = x.shape[0]
    S = -(-T // k)
    out = np.zeros((S * k,) + x.shape[1:], x.dtype)
    out[:T] = x
    return out.reshape((S, k) + x.shape[1:])


def _unsegment_rule(inputs, attrs):
    (y,) = inputs
    T = attrs["length"]
    if y.ndim < 2 or not isinstance(y.shape[1], int) or y.shape[0] != ceil_div_dim(T, y.shape[1]):
        raise ShapeError(f"unsegment: expected [ceil({T}/k), k, ...] segments, received "
                         f"[{shape_str(y.shape)}]")
    return (T,) + tuple(y.shape[2:]), y.dtype


def _unsegment_impl(ctx, attrs, y):
    T = ctx.resolve((attrs["length"],))[0]
    return np.ascontiguousarray(y.reshape((-1,) + y.shape[2:])[:T])


register(OpDef(Op.SEGMENT, _segment_rule, _segment_impl,
               lambda node, ct, x: (unsegment(ct, x.shape[0]),),
               doc="[T, ...] -> [ceil(T/k), k, ...]: time in segments of k steps (zeros past T)"))
register(OpDef(Op.UNSEGMENT, _unsegment_rule, _unsegment_impl,
               lambda node, ct, y: (segment(ct, y.shape[1]),),
               doc="[ceil(T/k), k, ...] -> [T, ...]: segments back to time (padding dropped)"))


# ---------------------------------------------------------------------------------------------
# Control: scan and item
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanInfo:
    n_carry: int
    n_xs: int
    n_inv: int
    reverse: bool
    has_length: bool
    stop: int | None = None  # the carry (a bool scalar) that ends the loop when True


def scan_info(node: Node) -> ScanInfo:
    body: Graph = node.attr("body")
    n_carry, n_xs = node.attr("n_carry"), node.attr("n_xs")
    has_length = bool(node.attr("has_length", False))
    n_inv = len(node.inputs) - n_carry - n_xs - int(has_length)
    assert len(body.inputs) == 1 + n_carry + n_xs + n_inv
    return ScanInfo(n_carry, n_xs, n_inv, bool(node.attr("reverse", False)), has_length,
                    node.attr("stop"))


def _scan_rule(inputs, attrs):
    body: Graph = attrs["body"]
    n_carry, n_xs = attrs["n_carry"], attrs["n_xs"]
    has_length = bool(attrs.get("has_length", False))
    n_inv = len(inputs) - n_carry - n_xs - int(has_length)
    if n_inv < 0 or len(body.inputs) != 1 + n_carry + n_xs + n_inv:
        raise ShapeError(f"scan: body takes {len(body.inputs)} inputs (step, carries, x_t, "
                         f"invariants) but the scan has {len(inputs)} inputs")
    t = body.inputs[0]
    if t.shape != () or t.dtype is not DType.i32:
        raise ShapeError("scan: the body's first input must be the i32 step index")
    carries = inputs[:n_carry]
    xs = inputs[n_carry:n_carry + n_xs]
    invs = inputs[n_carry + n_xs:n_carry + n_xs + n_inv]
    b_carry = body.inputs[1:1 + n_carry]
    b_xs = body.inputs[1 + n_carry:1 + n_carry + n_xs]
    b_inv = body.inputs[1 + n_carry + n_xs:]
    length = attrs.get("length")
    if xs:
        T = xs[0].shape[0]
        for x in xs:
            if x.ndim < 1 or x.shape[0] != T:
                raise ShapeError("scan: all xs must share the leading (time) dimension, "
                                 "received " + ", ".join(f"[{shape_str(x.shape)}]" for x in xs))
    elif length is None:
        raise ShapeError("scan: with no xs, a static `length` attribute is required")
    else:
        T = length
    for kind, outer, inner, strip in (("carry", carries, b_carry, False),
                                      ("x", xs, b_xs, True), ("invariant", invs, b_inv, False)):
        for k, (o, i) in enumerate(zip(outer, inner)):
            oshape = tuple(o.shape[1:]) if strip else tuple(o.shape)
            if oshape != tuple(i.shape) or o.dtype != i.dtype:
                raise ShapeError(
                    f"scan: {kind} {k} is {o.dtype}[{shape_str(oshape)}] outside but the body "
                    f"expects {i.dtype}[{shape_str(i.shape)}]")
    outs = body.outputs
    if len(outs) < n_carry:
        raise ShapeError("scan: body returns fewer outputs than carries")
    for k in range(n_carry):
        if outs[k].shape != b_carry[k].shape or outs[k].dtype != b_carry[k].dtype:
            raise ShapeError(
                f"scan: carry {k} enters the body as {b_carry[k].dtype}"
                f"[{shape_str(b_carry[k].shape)}] but leaves it as {outs[k].dtype}"
                f"[{shape_str(outs[k].shape)}]")
    if has_length:
        ln = inputs[-1]
        if ln.shape != () or not ln.dtype.is_int:
            raise ShapeError("scan: the length input must be an integer scalar")
    stop = attrs.get("stop")
    if stop is not None:
        if not isinstance(stop, int) or not 0 <= stop < n_carry or \
                b_carry[stop].shape != () or b_carry[stop].dtype is not DType.bool:
            raise ShapeError(f"scan: stop={stop!r} must name a bool scalar carry (0 <= stop < "
                             f"{n_carry})")
        if attrs.get("reverse"):
            raise ShapeError("scan: a stop carry needs a forward scan (reverse=False)")
    types = [(c.shape, c.dtype) for c in b_carry] + \
        [((T,) + tuple(y.shape), y.dtype) for y in outs[n_carry:]]
    return ("tuple", tuple(types)), None  # type: ignore[return-value]


def _item_rule(inputs, attrs):
    (s,) = inputs
    types = s.shape[1]
    i = attrs["index"]
    if not 0 <= i < len(types):
        raise ShapeError(f"item: index {i} out of range for {len(types)} results")
    return tuple(types[i][0]), types[i][1]


register(OpDef(Op.SCAN, _scan_rule, None, None,
               doc="loop over time: body(t, carries, x_t, invariants) -> (carries, y_t); "
                   "stop=k: the loop ends before a step whose carry k (bool scalar) is True "
                   "(a trip-count optimisation: the body must leave the carries unchanged and "
                   "output zeros once it is True; ys of the steps not run are zeros)"))
register(OpDef(Op.ITEM, _item_rule, lambda ctx, attrs, tup: tup[attrs["index"]], None,
               doc="one result of a multi-result node (scan)"))


def _fused_rule(inputs, attrs):
    body: Graph = attrs["body"]
    if len(body.inputs) != len(inputs):
        raise ShapeError(f"fused: body takes {len(body.inputs)} inputs, received {len(inputs)}")
    for k, (o, i) in enumerate(zip(inputs, body.inputs)):
        if o.shape != i.shape or o.dtype != i.dtype:
            raise ShapeError(f"fused: input {k} is {o.dtype}[{shape_str(o.shape)}] but the body "
                             f"expects {i.dtype}[{shape_str(i.shape)}]")
    for o in body.outputs:  # (a row group, made for the CPU backend, also has reductions)
        if o.op not in GroupOp.Elementwise and o.op not in GroupOp.Reduce and \
                o.op not in (Op.RANDOM_UNIFORM, Op.BROADCAST, Op.RESHAPE):
            raise ShapeError(f"fused: results must be elementwise ops, reductions, broadcasts "
                             f"or reshapes, received {o.op.value}")
    return ("tuple", tuple((o.shape, o.dtype) for o in body.outputs)), None


register(OpDef(Op.FUSED, _fused_rule, None, None,
               doc="a group of elementwise ops rendered as one loop nest (made by fusion); on the "
                   "CPU also row reductions with them (a row group)"))


def scan(body: Graph, carries: Sequence[Node], xs: Sequence[Node], invariants: Sequence[Node],
         *, reverse: bool = False, length_input: Node | None = None,
         length: int | None = None, remat: bool = False, stop: int | None = None,
         rows: int | None = None) -> list[Node]:
    """Build a scan node and return its results: final carries, then stacked ys. remat=True
    marks a reverse scan that recomputes forward values on purpose (BPTT with recompute): the
    passes must not batch that work out of the loop again. stop=k: carry k is a bool scalar
    and the loop ends before a step where it is True (decoding: every sequence finished).
    rows=k: invariant k is the sorted lengths of a variable-length batch (the `rows` hint,
    rnncomp.ir.rows)."""
    ins = list(carries) + list(xs) + list(invariants)
    if length_input is not None:
        ins.append(length_input)
    s = make(Op.SCAN, *ins, body=body, n_carry=len(carries), n_xs=len(xs), reverse=reverse,
             has_length=length_input is not None, length=length, remat=remat or None,
             stop=stop, rows=rows)
    return [make(Op.ITEM, s, index=k) for k in range(len(s.shape[1]))]


def close_body(own: Sequence[Node], outputs: Sequence[Node]) -> tuple[Graph, list[Node]]:
    """Turn traced body outputs into a Graph over (own placeholders..., invariants...).

    Every maximal sub-expression that does not depend on the body's own placeholders (params,
    outer inputs, outer computations, outer bodies' placeholders) becomes a loop invariant: it
    is computed once outside the loop and enters the body as a placeholder, as in JAX's
    closure conversion. Scalar literals stay inline. Used by the tracer (scans) and by the
    reroll pass (static unrolls that become scans).
    """
    from .graph import substitute, toposort

    own_ids = {id(p) for p in own}
    order = toposort(outputs)
    dep: dict[int, bool] = {}
    for n in order:
        dep[id(n)] = id(n) in own_ids or any(dep[id(i)] for i in n.inputs)
    free: list[Node] = []
    seen: set[int] = set()

    def consider(x: Node):
        if not dep[id(x)] and x.op is not Op.CONST and id(x) not in seen:
            seen.add(id(x))
            free.append(x)

    for n in order:
        if dep[id(n)]:
            for i in n.inputs:
                consider(i)
    for o in outputs:
        consider(o)
    mapping = {id(f): placeholder(f.shape, f.dtype, role="inv") for f in free}
    new_outputs = substitute(outputs, mapping, remake)
    body = Graph(list(own) + [mapping[id(f)] for f in free], new_outputs)
    return body, free


def placeholder(shape: Shape, dtype: DType | str, role: str = "") -> Node:
    from .graph import fresh_id

    return make(Op.PLACEHOLDER, shape=tuple(shape), dtype=as_dtype(dtype), id=fresh_id(),
                role=role or None)


# ---------------------------------------------------------------------------------------------
# Thin constructors used by VJP rules, passes and the DSL
# ---------------------------------------------------------------------------------------------
def neg(x):
    return make(Op.NEG, x)


def exp(x):
    return make(Op.EXP, x)


def log(x):
    return make(Op.LOG, x)


def tanh(x):
    return make(Op.TANH, x)


def sigmoid(x):
    return make(Op.SIGMOID, x)


def relu(x):
    return make(Op.RELU, x)


def sqrt(x):
    return make(Op.SQRT, x)


def cast(x, dtype):
    dtype = as_dtype(dtype)
    if x.dtype is dtype:
        return x
    return make(Op.CAST, x, dtype=dtype)


def add(a, b):
    return make(Op.ADD, a, b)


def sub(a, b):
    return make(Op.SUB, a, b)


def mul(a, b):
    return make(Op.MUL, a, b)


def div(a, b):
    return make(Op.DIV, a, b)


def pow_(a, b):
    return make(Op.POW, a, b)


def maximum(a, b):
    return make(Op.MAXIMUM, a, b)


def minimum(a, b):
    return make(Op.MINIMUM, a, b)


def lt(a, b):
    return make(Op.LT, a, b)


def le(a, b):
    return make(Op.LE, a, b)


def gt(a, b):
    return make(Op.GT, a, b)


def ge(a, b):
    return make(Op.GE, a, b)


def eq(a, b):
    return make(Op.EQ, a, b)


def where(c, a, b):
    return make(Op.WHERE, c, a, b)


def reshape(x, shape):
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    return make(Op.RESHAPE, x, shape=shape)


def transpose(x, perm):
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(x.ndim)):
        return x
    return make(Op.TRANSPOSE, x, perm=perm)


def broadcast(x, shape):
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    return make(Op.BROADCAST, x, shape=shape)


def slice_(x, axis, start, stop):
    if start == 0 and stop == x.shape[axis]:
        return x
    return make(Op.SLICE, x, axis=int(axis), start=int(start), stop=int(stop))


def pad(x, axis, start, size):
    if start == 0 and x.shape[axis] == size:
        return x
    return make(Op.PAD, x, axis=int(axis), start=int(start), size=int(size))


def concat(xs, axis):
    xs = list(xs)
    if len(xs) == 1:
        return xs[0]
    return make(Op.CONCAT, *xs, axis=int(axis))


def reduce_sum(x, axes, keepdims=False):
    axes = tuple(sorted(int(a) for a in axes))
    if not axes:
        return x
    return make(Op.REDUCE_SUM, x, axes=axes, keepdims=bool(keepdims))


def reduce_max(x, axes, keepdims=False):
    axes = tuple(sorted(int(a) for a in axes))
    return make(Op.REDUCE_MAX, x, axes=axes, keepdims=bool(keepdims))


def matmul(a, b):
    return make(Op.MATMUL, a, b)


def tensordot(a, b, a_axes, b_axes):
    return make(Op.TENSORDOT, a, b, a_axes=tuple(int(i) for i in a_axes),
                b_axes=tuple(int(i) for i in b_axes))


def one_hot(idx, depth, dtype):
    return make(Op.ONE_HOT, idx, depth=int(depth), dtype=as_dtype(dtype))


def argmax(x, axis, dtype="i64"):
    return make(Op.ARGMAX, x, axis=norm_axis(axis, x.ndim, "argmax"), dtype=as_dtype(dtype))


def segment(x, k):
    return make(Op.SEGMENT, x, k=int(k))


def unsegment(y, length):
    return make(Op.UNSEGMENT, y, length=length)


def gather(table, idx):
    return make(Op.GATHER, table, idx)


def argsort(x):
    return make(Op.ARGSORT, x)


def permute(x, perm, axis, inverse=False):
    return make(Op.PERMUTE, x, perm, axis=int(axis), inverse=True if inverse else None)


def ragged_matmul(a, w, lengths):
    return make(Op.RAGGED_MATMUL, a, w, lengths)


def ragged_tensordot(a, c, lengths):
    return make(Op.RAGGED_TENSORDOT, a, c, lengths)


def scatter_add(src, idx, rows):
    return make(Op.SCATTER_ADD, src, idx, rows=int(rows))


def stop_gradient(x):
    return make(Op.STOP_GRADIENT, x)


def item(x, i):
    return make(Op.ITEM, x, index=i)


def is_const(x: Node, value: float | None = None) -> bool:
    if x.op is not Op.CONST:
        return False
    return value is None or x.attr("value") == value


def const_value(x: Node) -> Any:
    return x.attr("value")


def float_info(dtype: DType) -> Any:
    return np.finfo(dtype.np)


__all__ = [n for n in dir() if not n.startswith("_")] + ["math", "GroupOp"]
