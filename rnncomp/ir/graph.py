"""The IR: one immutable node type, interned, and a Graph of inputs and outputs.

A Node is (op, inputs, attrs, shape, dtype). Nodes are only created through `rnncomp.ir.ops.make`,
which runs the op's shape/dtype rule and interns the result, so two structurally equal
expressions are one object (CSE is nearly free, like tinygrad's UOp). Node identity is object
identity: nodes are used as dict keys by identity, never compared structurally.

Shapes are tuples whose entries are ints or symbolic dimension names (str), e.g. ("B", 20).
Symbols are bound at run time from the arrays given for the graph inputs.
"""

from __future__ import annotations

import enum
import itertools
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .dtypes import DType

Dim = int | str
Shape = tuple[Dim, ...]


class Op(enum.Enum):
    # leaves
    INPUT = "input"
    PARAM = "param"
    CONST = "const"
    PLACEHOLDER = "placeholder"  # a scan body's input (step index, carry, x_t or invariant)
    FULL = "full"  # an array of one value with a (possibly symbolic) shape
    # unary elementwise
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    SQRT = "sqrt"
    ABS = "abs"
    NOT = "not"
    CAST = "cast"
    STOP_GRADIENT = "stop_gradient"
    # binary elementwise
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAXIMUM = "max"
    MINIMUM = "min"
    POW = "pow"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    AND = "and"
    OR = "or"
    # ternary elementwise
    WHERE = "where"
    # random (counter based: depends on seed, step, site and element index only)
    RANDOM_UNIFORM = "random_uniform"
    # shape / layout
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    BROADCAST = "broadcast"
    SLICE = "slice"
    PAD = "pad"
    CONCAT = "concat"
    # reductions
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    # contractions
    MATMUL = "matmul"
    TENSORDOT = "tensordot"
    # indexing
    TAKE = "take"
    ONE_HOT = "one_hot"
    DIMSIZE = "dimsize"
    ARGMAX = "argmax"  # index of the largest entry along one axis (not differentiable)
    GATHER = "gather"  # rows of a table: table[idx] (embedding lookup)
    SCATTER_ADD = "scatter_add"  # zeros [rows, ...] with src rows added at idx (gather's VJP)
    # time segments (BPTT checkpointing): [T, ...] <-> [ceil(T/k), k, ...]
    SEGMENT = "segment"
    UNSEGMENT = "unsegment"
    # variable-length batches (sequence_length): sort by length, permute rows, ragged GEMMs
    ARGSORT = "argsort"  # stable order of a 1-D integer array, longest first
    PERMUTE = "permute"  # x.take(perm, axis) (or its inverse)
    RAGGED_MATMUL = "ragged_matmul"  # a [T, B, K] @ w, rows (t, b) with t >= len[b] zero
    RAGGED_TENSORDOT = "ragged_tensordot"  # sum over valid (t, b) of a[t, b] (x) c[t, b]
    # control
    SCAN = "scan"
    ITEM = "item"
    # fused region made by the elementwise fusion pass (body is a graph of elementwise ops)
    FUSED = "fused"


class GroupOp:
    """Named groups of ops: rewrite rules match on groups, not on strings."""

    Leaf = frozenset({Op.INPUT, Op.PARAM, Op.CONST, Op.PLACEHOLDER})
    Unary = frozenset(
        {Op.NEG, Op.EXP, Op.LOG, Op.TANH, Op.SIGMOID, Op.RELU, Op.SQRT, Op.ABS, Op.NOT, Op.CAST,
         Op.STOP_GRADIENT}
    )
    Binary = frozenset(
        {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM, Op.POW, Op.LT, Op.LE, Op.GT,
         Op.GE, Op.EQ, Op.AND, Op.OR}
    )
    Compare = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ})
    Commutative = frozenset({Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.EQ, Op.AND, Op.OR})
    Ternary = frozenset({Op.WHERE})
    Elementwise = Unary | Binary | Ternary
    Reduce = frozenset({Op.REDUCE_SUM, Op.REDUCE_MAX})
    Contraction = frozenset({Op.MATMUL, Op.TENSORDOT})
    Movement = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST, Op.SLICE, Op.PAD, Op.CONCAT})
    Control = frozenset({Op.SCAN, Op.ITEM, Op.FUSED})
    Random = frozenset({Op.RANDOM_UNIFORM})


class Node:
    """An immutable IR node. Build with `rnncomp.ir.ops.make`, never directly."""

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "__weakref__")

    op: Op
    inputs: tuple[Node, ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: Shape | None
    dtype: DType | None

    def __init__(self, op, inputs, attrs, shape, dtype):  # noqa: D107 - internal
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "attrs", tuple(attrs))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, k, v):
        raise AttributeError("rnncomp IR nodes are immutable")

    def attr(self, name: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def ndim(self) -> int:
        assert self.shape is not None
        return len(self.shape)

    @property
    def name(self) -> str | None:
        return self.attr("name")

    def __repr__(self) -> str:
        shp = ",".join(str(d) for d in self.shape) if self.shape is not None else "?"
        nm = f" {self.name}" if self.name else ""
        return f"<{self.op.value}{nm} {self.dtype}[{shp}]>"

    # Operator sugar lives in rnncomp.ir.ops (installed there) so the IR stays op-agnostic.
    __hash__ = object.__hash__


# ---------------------------------------------------------------------------------------------
# Interning
# ---------------------------------------------------------------------------------------------
_INTERN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_counter = itertools.count()


def fresh_id() -> int:
    """A process-unique integer, used to make placeholders distinct."""
    return next(_counter)


def _attr_key(v: Any) -> Any:
    if isinstance(v, Graph):
        return ("graph", id(v))
    return v


def intern(op: Op, inputs: Sequence[Node], attrs: dict[str, Any], shape, dtype) -> Node:
    items = tuple(sorted(attrs.items()))
    key = (op, tuple(id(i) for i in inputs), tuple((k, _attr_key(v)) for k, v in items),
           shape, dtype)
    n = _INTERN.get(key)
    if n is not None:
        return n
    n = Node(op, inputs, items, shape, dtype)
    _INTERN[key] = n
    # keep graph attrs alive with the node (weak dict values keep only the node)
    return n


def raw_node(op: Op, inputs: Sequence[Node], attrs: dict[str, Any], shape, dtype) -> Node:
    """A node that skips shape rules and interning: only for tests of the verifier."""
    return Node(op, inputs, tuple(sorted(attrs.items())), shape, dtype)


# ---------------------------------------------------------------------------------------------
# Traversal
# ---------------------------------------------------------------------------------------------
def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Nodes reachable from outputs, inputs before users, deterministic (DFS in input order).

    Iterative, so graphs from a static unroll of hundreds of steps do not hit the recursion
    limit. Scan bodies are not entered: they are separate graphs.
    """
    order: list[Node] = []
    seen: set[int] = set()
    for root in outputs:
        if id(root) in seen:
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        seen.add(id(root))
        while stack:
            node, i = stack[-1]
            if i < len(node.inputs):
                stack[-1] = (node, i + 1)
                child = node.inputs[i]
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, 0))
            else:
                stack.pop()
                order.append(node)
    return order


def users(nodes: Sequence[Node]) -> dict[int, list[Node]]:
    """Map id(node) -> list of nodes (in `nodes`) that use it, in order."""
    out: dict[int, list[Node]] = {id(n): [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            lst = out.setdefault(id(i), [])
            if not lst or lst[-1] is not n:
                lst.append(n)
    return out


@dataclass(frozen=True, eq=False)
class Unroll:
    """A static unroll as the tracer saw it: T calls of one step function, where step t maps
    (states[t], xs[t]) to (states[t + 1], outputs[t]). `states` has T + 1 entries (the flat state
    before each step and the final one). A hint only: the reroll pass checks that every step
    really is the same function before it replaces the copies by a scan."""

    xs: tuple[Node, ...]
    states: tuple[tuple[Node, ...], ...]
    outputs: tuple[Node, ...]


class Graph:
    """An immutable function: input leaves (INPUT/PARAM or PLACEHOLDER for bodies) -> outputs.

    `inputs` fixes the calling convention; `outputs` is a flat tuple. Nodes are found by
    walking back from the outputs, so dead code is never part of a graph.
    """

    __slots__ = ("inputs", "outputs", "unrolls", "_nodes", "__weakref__")

    def __init__(self, inputs: Sequence[Node], outputs: Sequence[Node],
                 unrolls: Sequence[Unroll] = ()):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        # static unrolls recorded by the tracer (static_rnn): the reroll pass turns each into
        # one scan; every other pass drops them (they describe the traced graph's nodes only)
        self.unrolls = tuple(unrolls)
        self._nodes: list[Node] | None = None

    @property
    def nodes(self) -> list[Node]:
        """Topologically ordered nodes reachable from the outputs, plus unused inputs."""
        if self._nodes is None:
            order = toposort(self.outputs)
            seen = {id(n) for n in order}
            extra = [n for n in self.inputs if id(n) not in seen]
            self._nodes = extra + order
        return self._nodes

    def input_named(self, name: str) -> Node:
        for n in self.inputs:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self.inputs if n.op is Op.INPUT]

    @property
    def param_names(self) -> list[str]:
        return [n.name for n in self.inputs if n.op is Op.PARAM]

    # The text form lives in printer.py (which imports this module); rnncomp.ir sets it here.
    formatter: Callable[[Graph], str] = repr

    def __str__(self) -> str:
        return type(self).formatter(self)

    def __repr__(self) -> str:
        return f"<Graph {len(self.inputs)} inputs, {len(self.outputs)} outputs, " \
               f"{len(self.nodes)} nodes>"

    def all_nodes(self) -> Iterable[Node]:
        """Nodes of this graph and, recursively, of every scan/fused body."""
        for n in self.nodes:
            yield n
            body = n.attr("body")
            if isinstance(body, Graph):
                yield from body.all_nodes()


def substitute(outputs: Sequence[Node], mapping: dict[int, Node], rebuild) -> list[Node]:
    """Rebuild outputs with some nodes replaced (mapping: id(old) -> new).

    `rebuild(node, new_inputs)` makes the replacement for a node whose inputs changed (normally
    `rnncomp.ir.ops.remake`). Unchanged subtrees are shared, not copied.
    """
    memo: dict[int, Node] = dict(mapping)
    for n in toposort(outputs):
        if id(n) in memo:
            continue
        new_inputs = [memo.get(id(i), i) for i in n.inputs]
        if all(a is b for a, b in zip(new_inputs, n.inputs)):
            memo[id(n)] = n
        else:
            memo[id(n)] = rebuild(n, new_inputs)
    return [memo[id(o)] for o in outputs]


def ceil_div_dim(d: Dim, k: int) -> Dim:
    """The number of segments of k steps in a time axis of size d: an int for an int d, else the
    derived symbolic dimension "ceil(d/k)" (resolved from d's value by `resolve_dim`)."""
    return -(-d // k) if isinstance(d, int) else f"ceil({d}/{k})"


_CEIL_DIV = re.compile(r"^ceil\((.+)/(\d+)\)$")


def derived_dim(d: Dim) -> tuple[Dim, int] | None:
    """(base, k) for a dimension made by ceil_div_dim(base, k), None for any other."""
    m = _CEIL_DIV.match(d) if isinstance(d, str) else None
    return (m.group(1), int(m.group(2))) if m else None


def resolve_dim(d: Dim, dims: dict[str, int]) -> int:
    """The value of a dimension given the symbolic ones bound so far (KeyError if unbound)."""
    if isinstance(d, int):
        return d
    der = derived_dim(d)
    if der is not None and d not in dims:
        return -(-resolve_dim(der[0], dims) // der[1])
    return dims[d]


def shape_str(shape: Shape | None) -> str:
    if shape is None:
        return "?"
    return ",".join(str(d) for d in shape)
