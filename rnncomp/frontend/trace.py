"""Tracing: the context that collects parameters, scopes and implicit inputs while a Python
function builds IR, and the closure conversion that turns a traced loop body into a sub-graph.

Ops themselves are context free (they just build interned nodes); only parameters, variable
scopes, the training flag / dropout seed inputs, and scan frames need a context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ir import ops
from ..ir.ops import close_body
from ..ir.dtypes import DType, as_dtype
from ..ir.graph import Graph, Node, Op, Shape, shape_str, substitute, toposort, Unroll


class TraceError(ValueError):
    """A model definition is inconsistent (duplicate parameter, bad cell structure, ...)."""


class _AutoReuse:
    """TF1's tf.AUTO_REUSE: reuse a parameter if it exists, create it otherwise."""

    def __repr__(self) -> str:
        return "AUTO_REUSE"


AUTO_REUSE = _AutoReuse()


def check_reuse(reuse: Any, who: str) -> Any:
    """TF1's `reuse` argument: None/False (create; a name clash is an error), True (share an
    existing parameter; a missing one is an error) or AUTO_REUSE (share or create)."""
    if reuse is None or reuse is AUTO_REUSE or isinstance(reuse, bool):
        return reuse
    raise ValueError(f"{who}: reuse must be None, True, False or rnncomp.AUTO_REUSE, received "
                     f"{reuse!r}")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    dtype: DType
    init: Any  # an initializer callable(shape, dtype, rng) or a name understood by initializers.get
    trainable: bool = True


@dataclass
class RuntimeCheck:
    """A value check on graph inputs done before running (e.g. 0 <= sequence_length <= T)."""

    kind: str
    input_name: str
    args: dict[str, Any] = field(default_factory=dict)


class TraceContext:
    def __init__(self, dtype: DType = DType.f32):
        self.dtype = dtype
        self.params: dict[str, tuple[Node, ParamSpec, Any]] = {}
        self.scopes: list[str] = []
        self.inputs: dict[str, Node] = {}
        self.checks: list[RuntimeCheck] = []
        self.step_stack: list[Node] = []  # step-index placeholders of enclosing scan bodies
        self.unrolls: list[Unroll] = []  # static unrolls, for the reroll pass (Graph.unrolls)
        self.random_sites = 0
        self.memo: dict[Any, Any] = {}  # per-trace state of front-end objects (dropout sites)

    # -- naming -------------------------------------------------------------------------------
    def scoped(self, name: str) -> str:
        return "/".join(self.scopes + [name])

    # -- parameters ---------------------------------------------------------------------------
    def param(self, name: str, shape, init, dtype=None, owner=None, trainable=True,
              reuse: Any = None) -> Node:
        full = self.scoped(name)
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise TraceError(f"param {full!r}: every dimension must be positive, received {shape}")
        dtype = as_dtype(dtype) if dtype is not None else self.dtype
        if full in self.params:
            node, spec, own = self.params[full]
            if own is not owner and not reuse:
                raise TraceError(
                    f"param {full!r} already exists (created by another cell); give the cell a "
                    f"different name= or wrap it in rnncomp.variable_scope(...), or pass "
                    f"reuse=True to share it (as in TF1)")
            if spec.shape != shape or spec.dtype != dtype:
                raise TraceError(f"param {full!r}: reused with shape {shape} {dtype}, but it was "
                                 f"created with shape {spec.shape} {spec.dtype}")
            return node
        if reuse is True:
            raise TraceError(f"param {full!r} does not exist, but its cell was built with "
                             f"reuse=True (share an existing parameter; TF1 raises here too): "
                             f"create it first with a cell without reuse, or pass "
                             f"reuse=rnncomp.AUTO_REUSE to create it when missing")
        node = ops.make(Op.PARAM, name=full, shape=shape, dtype=dtype)
        self.params[full] = (node, ParamSpec(full, shape, dtype, init, trainable), owner)
        return node

    # -- implicit inputs ----------------------------------------------------------------------
    def implicit_input(self, name: str, dtype: DType) -> Node:
        if name not in self.inputs:
            self.inputs[name] = ops.make(Op.INPUT, name=name, shape=(), dtype=dtype)
        return self.inputs[name]

    def step(self) -> Node:
        """The current step index (i32 scalar): the scan's, or 0 outside any loop."""
        if self.step_stack:
            return self.step_stack[-1]
        return ops.const(0, DType.i32)


_STACK: list[TraceContext] = []


def current(required: bool = True) -> TraceContext | None:
    if not _STACK:
        if required:
            raise TraceError(
                "no model is being traced: build parameters inside a function passed to "
                "rnncomp.Model(...) or rnncomp.frontend.trace(...)")
        return None
    return _STACK[-1]


@contextlib.contextmanager
def tracing(ctx: TraceContext) -> Iterator[TraceContext]:
    _STACK.append(ctx)
    try:
        yield ctx
    finally:
        _STACK.pop()


@contextlib.contextmanager
def variable_scope(name: str) -> Iterator[None]:
    """Prefix parameter names, like tf.variable_scope (e.g. "rnn/basic_lstm_cell/kernel")."""
    ctx = current()
    ctx.scopes.append(name)
    try:
        yield
    finally:
        ctx.scopes.pop()


def param(name: str, shape, init="glorot_uniform", dtype=None, owner=None, trainable=True,
          reuse: Any = None) -> Node:
    """A named parameter of the traced model (created once, reused by its owner; shared with
    other owners when `reuse` is True or AUTO_REUSE, as TF1's variable reuse)."""
    return current().param(name, shape, init, dtype, owner, trainable, reuse)


# ---------------------------------------------------------------------------------------------
# pytrees (tuples, lists, namedtuples, dicts of nodes)
# ---------------------------------------------------------------------------------------------
def flatten(tree: Any) -> tuple[list[Any], Any]:
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        leaves, defs = [], []
        for x in tree:
            lv, d = flatten(x)
            leaves += lv
            defs.append((len(lv), d))
        return leaves, ("namedtuple", type(tree), tuple(defs))
    if isinstance(tree, (tuple, list)):
        leaves, defs = [], []
        for x in tree:
            lv, d = flatten(x)
            leaves += lv
            defs.append((len(lv), d))
        return leaves, (type(tree).__name__, None, tuple(defs))
    if isinstance(tree, dict):
        keys = list(tree.keys())
        leaves, defs = [], []
        for k in keys:
            lv, d = flatten(tree[k])
            leaves += lv
            defs.append((len(lv), d))
        return leaves, ("dict", tuple(keys), tuple(defs))
    return [tree], None


def unflatten(treedef: Any, leaves: Sequence[Any]) -> Any:
    leaves = list(leaves)
    if treedef is None:
        assert len(leaves) == 1
        return leaves[0]
    kind, extra, defs = treedef
    parts, off = [], 0
    for n, d in defs:
        parts.append(unflatten(d, leaves[off:off + n]))
        off += n
    if kind == "namedtuple":
        return extra(*parts)
    if kind == "tuple":
        return tuple(parts)
    if kind == "list":
        return list(parts)
    return dict(zip(extra, parts))


def describe_tree(treedef: Any, leaves: Sequence[Node]) -> str:
    # the leaves are type strings; drop the quotes str() puts around them
    return str(unflatten(treedef, [f"{x.dtype}[{shape_str(x.shape)}]" for x in leaves])) \
        .replace("'", "")


# ---------------------------------------------------------------------------------------------
# Closure conversion of loop bodies
# ---------------------------------------------------------------------------------------------
def trace_scan(
    fn: Callable[[Node, list[Node], list[Node]], tuple[list[Node], list[Node]]],
    carries: Sequence[Node],
    xs: Sequence[Node],
    *,
    reverse: bool = False,
    length_input: Node | None = None,
    length: int | None = None,
    stop: int | None = None,
) -> list[Node]:
    """Trace fn(t, carries_t, xs_t) -> (new carries, ys_t) into one scan node (stop: see
    rnncomp.ir.ops.scan).

    Returns the scan's results: final carries, then ys stacked along a new leading time axis.
    """
    ctx = current()
    t = ops.placeholder((), DType.i32, role="t")
    c_ph = [ops.placeholder(c.shape, c.dtype, role="carry") for c in carries]
    x_ph = []
    for x in xs:
        if x.ndim < 1:
            raise TraceError(f"scan: xs must have a leading time axis, received a scalar {x!r}")
        x_ph.append(ops.placeholder(x.shape[1:], x.dtype, role="x"))
    ctx.step_stack.append(t)
    try:
        new_c, ys = fn(t, c_ph, x_ph)
    finally:
        ctx.step_stack.pop()
    new_c, ys = list(new_c), list(ys)
    if len(new_c) != len(carries):
        raise TraceError(f"scan: the body returned {len(new_c)} carries, expected {len(carries)}")
    for k, (a, b) in enumerate(zip(new_c, c_ph)):
        if not isinstance(a, Node) or a.shape != b.shape or a.dtype != b.dtype:
            got = f"{a.dtype}[{shape_str(a.shape)}]" if isinstance(a, Node) else repr(a)
            raise TraceError(f"scan: carry {k} enters the body as {b.dtype}[{shape_str(b.shape)}] "
                             f"but the body returns {got}")
    body, free = close_body([t] + c_ph + x_ph, new_c + ys)
    return ops.scan(body, carries, xs, free, reverse=reverse, length_input=length_input,
                    length=length, stop=stop)


def shape_of(x: Node) -> Shape:
    return tuple(x.shape)
