"""ONNX export of a traced model (`rnncomp.onnx.export`), and a check of the file in ONNX Runtime.

This module owns the translation from the IR to ONNX (opset 17). The core is a generic lowering
of the traced graph, op by op: every IR op a cell can use has an ONNX equivalent here, and a
`scan` becomes an ONNX `Scan` whose body is the scan body's ops lowered the same way, so any
model the DSL expresses exports, custom cells included. An op with no lowering raises
`UnsupportedOpError` naming it.

On top of that, a scan whose body is exactly a built-in cell's (BasicRNNCell, BasicLSTMCell,
LSTMCell with or without peepholes, GRUCell in both forms, MultiRNNCell stacks of them,
OutputProjectionWrapper, DropoutWrapper at inference) becomes ONNX's native RNN / LSTM / GRU
ops. "Exactly" is checked, not guessed: a candidate cell is built from the structure of the
parameters the scan reads, traced, and its body must print identically to the model's
inference body (forget_bias, activations and the GRU form included), so a custom cell that
merely has a built-in's parameter names and shapes still exports as a Scan.

The exported model is the inference graph: the `@training` flag is fixed to False (dropout is
the identity) and `@seed` to 0. Inputs keep the model's names, with symbolic dimensions (B, T,
...) as ONNX `dim_param`s; outputs are named after the model's output tree (see
`output_names`). `onnx` (and `onnxruntime`, for `check`) are imported lazily: install them with
`pip install rnncomp[onnx]`. docs/deployment.md describes the mapping and its limits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..frontend import cells as _cells
from ..frontend import dsl as _dsl
from ..frontend.rnn import dynamic_rnn
from ..ir.context import Context
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node, Op, toposort
from ..ir.ops import REGISTRY, scan_info
from ..ir.printer import pformat
from ..runtime.interp import evaluate
from ..frontend.trace import flatten, unflatten
from ..runtime.model import Input, Model, trace

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: readable by every ONNX Runtime since 1.13
INSTALL_HINT = "pip install rnncomp[onnx]  (or: pip install onnx onnxruntime)"

__all__ = ["OPSET", "ExportError", "UnsupportedOpError", "export", "to_onnx", "output_names",
           "run", "check"]


class ExportError(ValueError):
    """The model cannot be exported as asked."""


class UnsupportedOpError(ExportError):
    """An IR op has no ONNX lowering; `.op` is its name."""

    def __init__(self, op: str, detail: str = ""):
        self.op = op
        super().__init__(f"ONNX export: the IR op {op!r} has no ONNX lowering"
                         + (f" ({detail})" if detail else ""))


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError(f"ONNX export needs the `onnx` package: {INSTALL_HINT}") from e
    return onnx, helper, numpy_helper


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"running an exported model needs `onnxruntime`: {INSTALL_HINT}") from e
    return onnxruntime


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------
def output_names(model: Model) -> list[str]:
    """The ONNX output names of a model: its output tree's paths joined by "." (tuple
    positions as numbers, namedtuple fields and dict keys by name), "output" for a single
    array. `dynamic_rnn(BasicLSTMCell(...), X)` returned as is gives "0", "1.c", "1.h"."""
    n = len(model.graph.outputs)
    tree = unflatten(model.output_tree, list(range(n)))
    names: dict[int, str] = {}

    def walk(t: Any, path: list[str]) -> None:
        if isinstance(t, int) and not isinstance(t, bool):
            names[t] = ".".join(path) or "output"
        elif isinstance(t, tuple) and hasattr(t, "_fields"):
            for f, v in zip(t._fields, t):
                walk(v, path + [f])
        elif isinstance(t, (tuple, list)):
            for k, v in enumerate(t):
                walk(v, path + [str(k)])
        elif isinstance(t, dict):
            for k, v in t.items():
                walk(v, path + [str(k)])

    walk(tree, [])
    out: list[str] = []
    for k in range(n):  # names are unique ({"a.b": x, "a": {"b": y}} gives "a.b", "a.b_1")
        name = base = names.get(k, f"output_{k}")
        j = 0
        while name in out:
            j += 1
            name = f"{base}_{j}"
        out.append(name)
    return out


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
class _Builder:
    """The nodes, inputs and outputs of one ONNX graph (the model's, or a Scan body)."""

    def __init__(self, ex: _Exporter):
        self.ex = ex
        self.nodes: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any):
        outs = [self.ex.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.ex.helper.make_node(op_type, list(inputs), outs,
                                                   name=self.ex.fresh("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: Any, dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.ex.fresh("c")
        self.nodes.append(self.ex.helper.make_node(
            "Constant", [], [name], name=self.ex.fresh("n_Constant"),
            value=self.ex.numpy_helper.from_array(arr, name)))
        return name

    def i64(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), np.int64))


_ELEM = {DType.f32: 1, DType.f64: 11, DType.i32: 6, DType.i64: 7, DType.bool: 9}  # TensorProto

_UNARY = {Op.NEG: "Neg", Op.EXP: "Exp", Op.LOG: "Log", Op.TANH: "Tanh", Op.SIGMOID: "Sigmoid",
          Op.RELU: "Relu", Op.SQRT: "Sqrt", Op.ABS: "Abs", Op.NOT: "Not",
          Op.STOP_GRADIENT: "Identity"}
_BINARY = {Op.ADD: "Add", Op.SUB: "Sub", Op.MUL: "Mul", Op.DIV: "Div", Op.MAXIMUM: "Max",
           Op.MINIMUM: "Min", Op.POW: "Pow", Op.LT: "Less", Op.LE: "LessOrEqual",
           Op.GT: "Greater", Op.GE: "GreaterOrEqual", Op.EQ: "Equal", Op.AND: "And",
           Op.OR: "Or"}
# ops folded to constants when all their inputs are known (the training flag, literals)
_NO_FOLD = {Op.INPUT, Op.PARAM, Op.PLACEHOLDER, Op.SCAN, Op.ITEM, Op.FUSED, Op.RANDOM_UNIFORM}
_FOLD_MAX = 4096

# at most this many candidate cells are traced per scan
_MAX_CANDIDATES = 64


def _statics(graph: Graph, known: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Values known at export time: literals, the implicit inputs (at their inference values)
    and what folds from them (small arrays of static shape); by node id."""
    out = dict(known)
    ctx = Context()
    for n in graph.nodes:
        if id(n) in out:
            continue
        if n.op is Op.CONST:
            out[id(n)] = REGISTRY[n.op].impl(ctx, dict(n.attrs))
        elif n.op is Op.INPUT and n.name.startswith("@"):
            # implicit inputs take their inference values: @training False, @seed 0, ...
            out[id(n)] = np.zeros([d if isinstance(d, int) else 1 for d in n.shape],
                                  n.dtype.np)
        elif (n.op not in _NO_FOLD and n.inputs and all(id(i) in out for i in n.inputs)
              and n.shape is not None and all(isinstance(d, int) for d in n.shape)
              and int(np.prod(n.shape)) <= _FOLD_MAX):
            v = REGISTRY[n.op].impl(ctx, dict(n.attrs), *[out[id(i)] for i in n.inputs])
            out[id(n)] = np.asarray(v).astype(n.dtype.np)
    return out


class _Exporter:
    def __init__(self, model: Model, params: Mapping[str, Any], native: bool):
        self.onnx, self.helper, self.numpy_helper = _import_onnx()
        self.model = model
        self.params = model.check_params(params)
        self.native = native
        self._names: set[str] = set()
        self._counter = itertools.count()
        self.root = _Builder(self)
        self.initializers: list[Any] = []
        self._init_done: dict[str, str] = {}
        self.dims: dict[str, str] = {}
        self.dim_source: dict[str, tuple[str, int]] = {}
        self.native_ops: list[str] = []
        self.plans: dict[int, _Plan | None] = {}
        self.scan_ops: int = 0

    # -- names and small helpers --------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            name = f"{hint}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def reserve(self, name: str) -> str:
        self._names.add(name)
        return name

    def value_info(self, name: str, node_or_shape: Any, dtype: DType | None = None):
        if isinstance(node_or_shape, Node):
            shape, dtype = node_or_shape.shape, node_or_shape.dtype
        else:
            shape = node_or_shape
        dims = [d if isinstance(d, str) else int(d) for d in shape]
        return self.helper.make_tensor_value_info(name, _ELEM[dtype], dims)

    def initializer(self, name: str, value: np.ndarray) -> str:
        """A constant tensor of the model (a parameter, by its name unless an input or output
        of the model has that name)."""
        if name not in self._init_done:
            actual = self.fresh(name) if name in self._names else self.reserve(name)
            self._init_done[name] = actual
            self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value),
                                                                  actual))
        return self._init_done[name]

    def new_initializer(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def dim(self, sym: str) -> str:
        """A 1-D int64 tensor [1] holding the run-time size of a symbolic dimension."""
        if sym not in self.dims:
            if sym not in self.dim_source:
                raise ExportError(f"ONNX export: symbolic dimension {sym!r} is not bound by any "
                                  f"input of the model")
            src, axis = self.dim_source[sym]
            self.dims[sym] = self.root.op("Shape", [src], start=axis, end=axis + 1)
        return self.dims[sym]

    def shape_tensor(self, b: _Builder, shape: Sequence[Any]) -> str:
        if all(isinstance(d, int) for d in shape):
            return b.i64(shape)
        parts = [self.dim(d) if isinstance(d, str) else b.i64([d]) for d in shape]
        return b.op("Concat", parts, axis=0)

    # -- static values (the training flag, literals and what folds from them) -----------------
    @staticmethod
    def where_pick(n: Node, static: dict[int, np.ndarray]) -> Node | None:
        """The branch a `where` with a known condition selects (if it has the result's type)."""
        if n.op is not Op.WHERE or id(n.inputs[0]) not in static:
            return None
        c = static[id(n.inputs[0])]
        pick = n.inputs[1] if c.all() else n.inputs[2] if not c.any() else None
        if pick is not None and pick.shape == n.shape and pick.dtype == n.dtype:
            return pick
        return None

    def needed(self, outputs: Sequence[Node], static: dict[int, np.ndarray]) -> list[Node]:
        """Nodes to lower, inputs first: a known `where` needs only its chosen branch, a known
        value none of its inputs (iterative: static unrolls of many steps are deep)."""
        def deps(n: Node) -> Sequence[Node]:
            if id(n) in static:
                return ()
            pick = self.where_pick(n, static)
            if pick is not None:
                return (pick,)
            if n.op is Op.SCAN and self.plan(n, static) is not None:
                # a native op reads the carries' initial values, x and the lengths only
                nc = scan_info(n).n_carry
                seq = self.plan(n, static).seq_len
                return n.inputs[:nc + 1] + ((seq,) if seq is not None else ())
            return n.inputs

        order: list[Node] = []
        seen: set[int] = set()
        for root in outputs:
            if id(root) in seen:
                continue
            seen.add(id(root))
            stack = [(root, iter(deps(root)))]
            while stack:
                node, it = stack[-1]
                child = next(it, None)
                if child is None:
                    stack.pop()
                    order.append(node)
                elif id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(deps(child))))
        return order

    # -- lowering a graph ---------------------------------------------------------------------
    def lower_graph(self, b: _Builder, graph: Graph, env: dict[int, Any],
                    static: dict[int, np.ndarray]) -> list[str]:
        for n in self.needed(graph.outputs, static):
            if id(n) not in env:
                env[id(n)] = self.lower_node(b, n, env, static)
        return [env[id(o)] for o in graph.outputs]

    def lower_node(self, b: _Builder, n: Node, env: dict[int, Any],
                   static: dict[int, np.ndarray]) -> Any:
        if id(n) in static:  # literals, implicit inputs and what folds from them
            return b.const(static[id(n)], n.dtype.np)
        pick = self.where_pick(n, static)
        if pick is not None:
            return env[id(pick)]
        if n.op is Op.INPUT:
            return n.name
        if n.op is Op.PARAM:
            return self.initializer(n.name, self.params[n.name])
        if n.op is Op.PLACEHOLDER:
            raise ExportError("ONNX export: a scan body's input is used outside its body")
        ins = [env.get(id(i)) for i in n.inputs]  # (a native scan skips its invariants)
        op = n.op
        if op in _UNARY:
            return b.op(_UNARY[op], ins)
        if op is Op.CAST:
            return b.op("Cast", ins, to=_ELEM[n.dtype])
        if op in _BINARY:
            return b.op(_BINARY[op], ins)
        if op is Op.WHERE:
            return b.op("Where", ins)
        if op is Op.FULL:
            val = np.asarray(n.attr("value"), n.dtype.np)
            if all(isinstance(d, int) for d in n.shape) and int(np.prod(n.shape)) <= _FOLD_MAX:
                return b.const(np.full(n.shape, val, n.dtype.np))
            return b.op("ConstantOfShape", [self.shape_tensor(b, n.shape)],
                        value=self.numpy_helper.from_array(val.reshape(1), self.fresh("v")))
        if op is Op.RESHAPE:
            return b.op("Reshape", [ins[0], self.shape_tensor(b, n.shape)])
        if op is Op.TRANSPOSE:
            return b.op("Transpose", ins, perm=list(n.attr("perm")))
        if op is Op.BROADCAST:
            return b.op("Expand", [ins[0], self.shape_tensor(b, n.shape)])
        if op is Op.SLICE:
            return b.op("Slice", [ins[0], b.i64([n.attr("start")]), b.i64([n.attr("stop")]),
                                  b.i64([n.attr("axis")])])
        if op is Op.PAD:
            x = n.inputs[0]
            ax, start = n.attr("axis"), n.attr("start")
            pads = [0] * (2 * x.ndim)
            pads[ax] = start
            pads[x.ndim + ax] = n.attr("size") - start - x.shape[ax]
            return b.op("Pad", [ins[0], b.i64(pads)])
        if op is Op.CONCAT:
            return b.op("Concat", ins, axis=n.attr("axis"))
        if op is Op.REDUCE_SUM:
            return b.op("ReduceSum", [ins[0], b.i64(n.attr("axes"))],
                        keepdims=int(bool(n.attr("keepdims", False))))
        if op is Op.REDUCE_MAX:
            if not n.attr("axes"):
                return b.op("Identity", ins)
            return b.op("ReduceMax", ins, axes=list(n.attr("axes")),
                        keepdims=int(bool(n.attr("keepdims", False))))
        if op is Op.MATMUL:
            return b.op("MatMul", ins)
        if op is Op.TENSORDOT:
            return b.op("Einsum", ins, equation=_einsum(n))
        if op is Op.TAKE:
            idx = b.op("Unsqueeze", [b.op("Cast", [ins[1]], to=_ELEM[DType.i64]), b.i64([-1])])
            g = b.op("GatherElements", [ins[0], idx], axis=n.inputs[0].ndim - 1)
            return b.op("Squeeze", [g, b.i64([-1])])
        if op is Op.GATHER:  # embedding lookup: rows of the table
            return b.op("Gather", ins, axis=0)
        if op is Op.ARGSORT:  # stable, longest first: TopK over the distinct keys x*n + n-1-i
            n64 = b.op("Shape", ins)  # [1]
            nsc = b.op("Squeeze", [n64, b.i64([0])])
            x64 = b.op("Cast", ins, to=_ELEM[DType.i64])
            i64 = b.op("Range", [b.const(np.int64(0)), nsc, b.const(np.int64(1))])
            tie = b.op("Sub", [b.op("Sub", [nsc, b.const(np.int64(1))]), i64])
            key = b.op("Add", [b.op("Mul", [x64, nsc]), tie])
            _, idx = b.op("TopK", [key, n64], n_out=2, axis=0, largest=1, sorted=1)
            return b.op("Cast", [idx], to=_ELEM[n.dtype])
        if op is Op.PERMUTE:  # x.take(perm, axis), or with the inverse permutation
            perm = b.op("Cast", [ins[1]], to=_ELEM[DType.i64])
            if n.attr("inverse", False):  # inv[perm[j]] = j
                nsc = b.op("Squeeze", [b.op("Shape", [perm]), b.i64([0])])
                iota = b.op("Range", [b.const(np.int64(0)), nsc, b.const(np.int64(1))])
                perm = b.op("ScatterElements", [iota, perm, iota], axis=0)
            return b.op("Gather", [ins[0], perm], axis=n.attr("axis"))
        if op is Op.ARGMAX:
            r = b.op("ArgMax", ins, axis=n.attr("axis"), keepdims=0)  # int64
            return r if n.dtype is DType.i64 else b.op("Cast", [r], to=_ELEM[n.dtype])
        if op is Op.ONE_HOT:
            idx = b.op("Unsqueeze", [ins[0], b.i64([-1])])
            rng = b.const(np.arange(n.attr("depth"), dtype=n.inputs[0].dtype.np))
            return b.op("Cast", [b.op("Equal", [idx, rng])], to=_ELEM[n.dtype])
        if op is Op.DIMSIZE:
            ax = n.attr("axis")
            s = b.op("Shape", ins, start=ax, end=ax + 1)
            return b.op("Cast", [b.op("Squeeze", [s, b.i64([0])])], to=_ELEM[n.dtype])
        if op is Op.ITEM:
            return ins[0][n.attr("index")]
        if op is Op.SCAN:
            return self.lower_scan(b, n, ins, static)
        if op is Op.FUSED:
            body: Graph = n.attr("body")
            benv = {id(p): v for p, v in zip(body.inputs, ins)}
            bstatic = _statics(body, {id(p): static[id(o)] for p, o in zip(body.inputs,
                                                                                n.inputs)
                                          if id(o) in static})
            return self.lower_graph(b, body, benv, bstatic)
        if op is Op.RANDOM_UNIFORM:
            raise UnsupportedOpError(op.value, "random numbers are not exported; dropout is "
                                     "exported for inference, where it is the identity")
        raise UnsupportedOpError(op.value)

    # -- scan -> ONNX Scan (or native RNN/LSTM/GRU) -------------------------------------------
    def plan(self, n: Node, static: dict[int, np.ndarray]) -> _Plan | None:
        if not self.native:
            return None
        if id(n) not in self.plans:
            self.plans[id(n)] = _native_plan(n, self.model.dtype, static)
        return self.plans[id(n)]

    def lower_scan(self, b: _Builder, n: Node, ins: list[str],
                   static: dict[int, np.ndarray]) -> list[str]:
        plan = self.plan(n, static)
        if plan is not None:
            return self.emit_native(b, n, ins, plan)
        info = scan_info(n)
        nc, nx, ni = info.n_carry, info.n_xs, info.n_inv
        body: Graph = n.attr("body")
        carries_in, xs_in = ins[:nc], ins[nc:nc + nx]
        invs = n.inputs[nc + nx:nc + nx + ni]
        if nx:
            T = b.op("Shape", [xs_in[0]], start=0, end=1)
        else:
            T = b.i64([n.attr("length")])
        T32 = b.op("Cast", [b.op("Squeeze", [T, b.i64([0])])], to=_ELEM[DType.i32])
        steps = b.op("Range", [b.const(np.int32(0)), T32, b.const(np.int32(1))])

        sb = _Builder(self)
        benv: dict[int, Any] = {}
        t_ph = body.inputs[0]
        c_ph = body.inputs[1:1 + nc]
        x_ph = body.inputs[1 + nc:1 + nc + nx]
        i_ph = body.inputs[1 + nc + nx:]
        state_names = []
        for ph in c_ph:
            name = self.fresh("carry")
            sb.inputs.append(self.value_info(name, ph))
            benv[id(ph)] = name
            state_names.append(name)
        t_name = self.fresh("t")
        sb.inputs.append(self.value_info(t_name, t_ph))
        benv[id(t_ph)] = t_name
        for ph in x_ph:
            name = self.fresh("x_t")
            sb.inputs.append(self.value_info(name, ph))
            benv[id(ph)] = name
        known = {}
        for ph, outer, name in zip(i_ph, invs, ins[nc + nx:nc + nx + ni]):
            if id(outer) in static:
                known[id(ph)] = static[id(outer)]
            else:
                benv[id(ph)] = name  # an outer-scope value, visible inside the body
        bstatic = _statics(body, known)
        outs = self.lower_graph(sb, body, benv, bstatic)
        if info.has_length:  # steps at and past the length leave the carries and give zeros
            valid = sb.op("Less", [sb.op("Cast", [t_name], to=_ELEM[DType.i64]),
                                   sb.op("Cast", [ins[-1]], to=_ELEM[DType.i64])])
            outs = [sb.op("Where", [valid, o, state_names[k]]) for k, o in
                    enumerate(outs[:nc])] + \
                   [sb.op("Where", [valid, o, sb.const(np.zeros((), y.dtype.np))])
                    for o, y in zip(outs[nc:], body.outputs[nc:])]
        for o, node in zip(outs, body.outputs):
            name = self.fresh("out")
            sb.nodes.append(self.helper.make_node("Identity", [o], [name],
                                                  name=self.fresh("n_Identity")))
            sb.outputs.append(self.value_info(name, node))
        graph = self.helper.make_graph(sb.nodes, self.fresh("scan_body"), sb.inputs, sb.outputs)
        n_out = len(body.outputs)
        attrs: dict[str, Any] = {"body": graph, "num_scan_inputs": 1 + nx}
        if info.reverse:  # steps T-1..0; outputs prepended, so ys stay in time order
            attrs["scan_input_directions"] = [1] * (1 + nx)
            attrs["scan_output_directions"] = [1] * (len(body.outputs) - nc)
        self.scan_ops += 1
        res = b.op("Scan", carries_in + [steps] + xs_in, n_out, **attrs)
        return list(res) if isinstance(res, list) else [res]

    def emit_native(self, b: _Builder, n: Node, ins: list[str], plan: _Plan) -> list[str]:
        info = scan_info(n)
        nc = info.n_carry
        X = ins[nc]
        seq = None
        if plan.seq_len is not None:
            k = [id(i) for i in n.inputs].index(id(plan.seq_len))
            seq = b.op("Cast", [ins[k]], to=_ELEM[DType.i32])
        ctx = _NativeCtx(self, b, plan, seq)
        y, finals = ctx.cell(plan.cell, "rnn/" + plan.cell.name, X, ins[:nc])
        return finals + [y]


def _einsum(n: Node) -> str:
    a, b = n.inputs
    aa, ba = list(n.attr("a_axes")), list(n.attr("b_axes"))
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la = [next(letters) for _ in range(a.ndim)]
    lb = [la[aa[ba.index(k)]] if k in ba else next(letters) for k in range(b.ndim)]
    out = [la[k] for k in range(a.ndim) if k not in aa] + \
        [lb[k] for k in range(b.ndim) if k not in ba]
    return f"{''.join(la)},{''.join(lb)}->{''.join(out)}"


# ---------------------------------------------------------------------------------------------
# Native RNN / LSTM / GRU: recognition by re-tracing a candidate built-in cell
# ---------------------------------------------------------------------------------------------
class _Plan:
    def __init__(self, cell: Any, params: dict[str, Node], seq_len: Node | None, scope: str):
        self.scope = scope  # the model's scope of the cell ("rnn", "encoder", ...)
        self.cell = cell  # the candidate cell object (its structure; traced under scope "rnn")
        self.params = params  # candidate parameter name -> the model's PARAM node
        self.seq_len = seq_len  # the model's sequence_length node, if any


def _param_leaves(nodes: Sequence[Node]) -> list[Node]:
    return [x for x in toposort(nodes) if x.op is Op.PARAM]


def _cell_candidates(name: str, tree: dict, fbs: list[float]) -> list[Callable[[], Any]]:
    """Factories of built-in cells named `name` that could have made the parameters in `tree`
    (nested dicts by scope, parameter shapes at the leaves). Guessed from the tree's structure,
    not from the names: every guess is verified by re-tracing it (`_native_plan`)."""
    if not isinstance(tree, dict) or not tree:
        return []
    keys = set(tree)
    subtrees = {k: v for k, v in tree.items() if isinstance(v, dict)}

    def size(t: Any) -> int | None:
        return t[0] if isinstance(t, tuple) and len(t) == 1 else None

    if all(k.startswith("cell_") and k[5:].isdigit() for k in keys):  # MultiRNNCell
        layers = []
        for k in range(len(tree)):
            sub = tree.get(f"cell_{k}")
            if not isinstance(sub, dict) or len(sub) != 1:
                return []
            (cname, ctree), = sub.items()
            layers.append(_cell_candidates(cname, ctree, fbs))
            if not layers[-1]:
                return []
        combos = list(itertools.islice(itertools.product(*layers), _MAX_CANDIDATES))
        return [lambda c=c, st=st: _cells.MultiRNNCell([f() for f in c], state_is_tuple=st,
                                                       name=name)
                for st in (True, False) for c in combos]
    if keys == {"gates", "candidate"} and len(subtrees) == 2:  # GRUCell
        H = size(subtrees["candidate"].get("bias"))
        ra = "recurrent_bias" in subtrees["candidate"]
        return [] if H is None else [lambda: _cells.GRUCell(H, reset_after=ra, name=name)]
    if "kernel" not in keys or "bias" not in keys:
        return []
    n_out = size(tree["bias"])
    if n_out is None:
        return []
    if len(subtrees) == 1 and keys == {"kernel", "bias"} | set(subtrees):  # the projection
        (iname, itree), = subtrees.items()
        cands = _cell_candidates(iname, itree, fbs)
        return [lambda f=f, a=a: _cells.OutputProjectionWrapper(f(), n_out, activation=a,
                                                                name=name)
                for f in cands[:_MAX_CANDIDATES] for a in (None, "tanh", "relu", "sigmoid")]
    peep = {"w_i_diag", "w_f_diag", "w_o_diag"}
    out: list[Callable[[], Any]] = []
    if keys == {"kernel", "bias"}:
        out += [lambda a=a: _cells.BasicRNNCell(n_out, activation=a, name=name)
                for a in ("tanh", "relu")]
    if n_out % 4 == 0 and keys in ({"kernel", "bias"}, {"kernel", "bias"} | peep):
        out += [lambda fb=fb: _cells.LSTMCell(n_out // 4, use_peepholes=keys > {"kernel", "bias"},
                                              forget_bias=fb, name=name) for fb in fbs]
    return out


def _inference_body(n: Node, static: dict[int, np.ndarray]) -> tuple[Graph, list[Node]]:
    """The scan's body with the training flag's `where`s resolved (dropout removed) and the
    invariants it then no longer reads dropped; returns (body, outer invariants)."""
    info = scan_info(n)
    body: Graph = n.attr("body")
    n_own = 1 + info.n_carry + info.n_xs
    invs = list(n.inputs[info.n_carry + info.n_xs:info.n_carry + info.n_xs + info.n_inv])
    known = {id(ph): static[id(o)] for ph, o in zip(body.inputs[n_own:], invs) if id(o) in static}
    if not known:
        return body, invs
    from ..ir.ops import remake

    st = _statics(body, known)
    new: dict[int, Node] = {}
    for x in body.nodes:
        pick = _Exporter.where_pick(x, st)
        if pick is not None:
            new[id(x)] = new[id(pick)]
        elif x.inputs and any(new[id(i)] is not i for i in x.inputs):
            new[id(x)] = remake(x, [new[id(i)] for i in x.inputs])
        else:
            new[id(x)] = x
    outs = [new[id(o)] for o in body.outputs]
    used = {id(x) for x in toposort(outs)}
    keep = [k for k, ph in enumerate(body.inputs[n_own:]) if id(ph) in used]
    return (Graph(list(body.inputs[:n_own]) + [body.inputs[n_own + k] for k in keep], outs),
            [invs[k] for k in keep])


def _unify(cand: Node, act: Node, params: dict[str, Node], inputs: dict[str, Node]) -> bool:
    """Is `act` the same expression as `cand` with the candidate's params/inputs renamed?"""
    if cand.op is Op.PARAM:
        if act.op is not Op.PARAM or act.shape != cand.shape or act.dtype != cand.dtype:
            return False
        return params.setdefault(cand.name, act) is act
    if cand.op is Op.INPUT:
        if act.shape != cand.shape or act.dtype != cand.dtype:
            return False
        return inputs.setdefault(cand.name, act) is act
    if (cand.op is not act.op or cand.shape != act.shape or cand.dtype != act.dtype
            or len(cand.inputs) != len(act.inputs)
            or dict(cand.attrs) != dict(act.attrs) or cand.op in (Op.SCAN, Op.FUSED)):
        return False
    return all(_unify(c, a, params, inputs) for c, a in zip(cand.inputs, act.inputs))


def _native_plan(n: Node, dtype: DType, static: dict[int, np.ndarray]) -> _Plan | None:
    """A built-in cell whose dynamic_rnn scan is, at inference, exactly `n`; or None."""
    info = scan_info(n)
    if (dtype is not DType.f32 or info.reverse or info.n_xs != 1 or n.attr("length") is not None
            or len(n.attr("body").outputs) != info.n_carry + 1):
        return None
    nc = info.n_carry
    xs = n.inputs[nc]
    if xs.ndim != 3 or xs.dtype is not dtype or not isinstance(xs.shape[2], int):
        return None
    body, invs = _inference_body(n, static)
    leaves = _param_leaves(invs)
    if len(leaves) < 2:
        return None
    # the cell's scope is the parameters' longest common scope: "<rnn scope>/<cell name>"
    paths = [p.name.split("/") for p in leaves]
    common = 0
    while all(len(q) > common + 1 and q[common] == paths[0][common] for q in paths):
        common += 1
    if common < 1:
        return None
    prefix = paths[0][:common]
    tree: dict = {}
    for q, p in zip(paths, leaves):
        t = tree
        for part in q[common:-1]:
            t = t.setdefault(part, {})
            if not isinstance(t, dict):
                return None
        if q[-1] in t:
            return None
        t[q[-1]] = tuple(p.shape)
    fbs = sorted({0.0, 1.0} | {float(x.attr("value")) for x in body.all_nodes()
                               if x.op is Op.CONST and x.dtype.is_float})
    seq_dtype = None
    if info.has_length:
        ln = n.inputs[-1]
        if not (ln.op is Op.CAST and ln.inputs[0].op is Op.REDUCE_MAX):
            return None
        seq_dtype = ln.inputs[0].inputs[0].dtype
    want = pformat(body)
    T, B, I = xs.shape
    for make in _cell_candidates(prefix[-1], tree, fbs)[:_MAX_CANDIDATES]:
        holder: list[Any] = []

        def fn(X, L=None):
            holder.append(make())
            return dynamic_rnn(holder[0], X, sequence_length=L, time_major=True,
                               length_aware=False)

        specs = {"X": Input((T, B, I))}
        if seq_dtype is not None:
            specs["L"] = Input((B,), seq_dtype)
        try:
            t = trace(fn, specs, dtype)
        except Exception:  # a guess that does not fit these shapes
            continue
        scans = [x for x in t.graph.nodes if x.op is Op.SCAN]
        if len(scans) != 1 or pformat(scans[0].attr("body")) != want:
            continue
        cs = scans[0]
        cinfo = scan_info(cs)
        if (cinfo.n_carry, cinfo.n_inv, cinfo.has_length) != (nc, len(invs), info.has_length):
            continue
        params: dict[str, Node] = {}
        inputs: dict[str, Node] = {}
        cinv = cs.inputs[nc + 1:nc + 1 + cinfo.n_inv]
        if all(_unify(c, a, params, inputs) for c, a in zip(cinv, invs)) and \
                set(params) == set(t.params) and set(inputs) <= {"L"}:
            return _Plan(holder[0], params, inputs.get("L"), "/".join(prefix[:-1]))
    return None


class _NativeCtx:
    """Emits the native ops for a recognized cell, layer by layer."""

    def __init__(self, ex: _Exporter, b: _Builder, plan: _Plan, seq: str | None):
        self.ex, self.b, self.plan, self.seq = ex, b, plan, seq

    def get(self, name: str) -> np.ndarray:
        return self.ex.params[self.plan.params[name].name]

    def init(self, tag: str, scope: str, value: np.ndarray) -> str:
        where = self.plan.scope + scope[len("rnn"):]  # the candidate was traced under "rnn"
        return self.ex.new_initializer(f"{where}/onnx_{tag}", value.astype(np.float32))

    def final_state(self, y_h: str, init: str) -> str:
        """The native ops give zeros as the final state of a length-0 sequence; rnncomp (like
        TF1) gives the initial state."""
        s = self.b.op("Squeeze", [y_h, self.b.i64([0])])
        if self.seq is None:
            return s
        pos = self.b.op("Unsqueeze", [self.b.op("Greater", [self.seq, self.b.const(np.int32(0))]),
                                      self.b.i64([1])])
        return self.b.op("Where", [pos, s, init])

    def cell(self, cell: Any, scope: str, X: str, states: list[str]) -> tuple[str, list[str]]:
        b = self.b
        if isinstance(cell, _cells.MultiRNNCell):
            sizes = [flatten(c.state_size)[0] for c in cell.cells]
            if cell.state_is_tuple:
                it = iter(states)
                per_layer = [[next(it) for _ in s] for s in sizes]
            else:
                off, per_layer = 0, []
                for s in sizes:
                    layer = []
                    for w in s:
                        layer.append(b.op("Slice", [states[0], b.i64([off]), b.i64([off + w]),
                                                    b.i64([1])]))
                        off += w
                    per_layer.append(layer)
            finals = []
            for k, (c, st) in enumerate(zip(cell.cells, per_layer)):
                X, f = self.cell(c, f"{scope}/cell_{k}/{c.name}", X, st)
                finals += f
            if not cell.state_is_tuple:
                finals = [b.op("Concat", finals, axis=1)]
            return X, finals
        if isinstance(cell, _cells.OutputProjectionWrapper):
            inner = cell.cell
            y, finals = self.cell(inner, f"{scope}/{inner.name}", X, states)
            w = self.ex.initializer(self.plan.params[f"{scope}/kernel"].name,
                                    self.get(f"{scope}/kernel"))
            bias = self.ex.initializer(self.plan.params[f"{scope}/bias"].name,
                                       self.get(f"{scope}/bias"))
            y = b.op("Add", [b.op("MatMul", [y, w]), bias])
            if cell.activation is not None:
                y = b.op({_dsl.tanh: "Tanh", _dsl.relu: "Relu",
                          _dsl.sigmoid: "Sigmoid"}[cell.activation], [y])
            if self.seq is not None:  # outputs past each length are zeros, as in dynamic_rnn
                T = b.op("Squeeze", [b.op("Shape", [X], start=0, end=1), b.i64([0])])
                steps = b.op("Range", [b.const(np.int32(0)), b.op("Cast", [T], to=6),
                                       b.const(np.int32(1))])
                valid = b.op("Less", [b.op("Unsqueeze", [steps, b.i64([1])]),
                                      b.op("Unsqueeze", [self.seq, b.i64([0])])])
                y = b.op("Where", [b.op("Unsqueeze", [valid, b.i64([2])]), y,
                                   b.const(np.float32(0))])
            return y, finals
        H = cell.num_units
        seq = self.seq or ""
        h0 = [b.op("Unsqueeze", [s, b.i64([0])]) for s in states]
        if isinstance(cell, _cells.BasicLSTMCell):  # LSTMCell too
            K, bias = self.get(f"{scope}/kernel"), self.get(f"{scope}/bias")
            idx = [0, 3, 2, 1]  # TF1 blocks i, j, f, o -> ONNX i, o, f, c
            I = K.shape[0] - H
            def blocks(m):
                return np.concatenate([m[..., k * H:(k + 1) * H] for k in idx], axis=-1)
            bb = bias.copy()
            bb[2 * H:3 * H] += np.float32(cell.forget_bias)
            W = self.init("W", scope, blocks(K[:I]).T[None])
            R = self.init("R", scope, blocks(K[I:]).T[None])
            B = self.init("B", scope, np.concatenate([blocks(bb), np.zeros(4 * H)])[None])
            extra = []
            if cell.use_peepholes:
                P = np.concatenate([self.get(f"{scope}/w_{g}_diag") for g in "iof"])[None]
                extra = [self.init("P", scope, P)]
            # rnncomp's LSTM state is (c, h); ONNX takes initial_h then initial_c
            y, yh, yc = b.op("LSTM", [X, W, R, B, seq, h0[1], h0[0]] + extra, 3,
                             hidden_size=H)
            self.ex.native_ops.append("LSTM")
            finals = [self.final_state(yc, states[0]), self.final_state(yh, states[1])]
        elif isinstance(cell, _cells.GRUCell):
            gk, gb = self.get(f"{scope}/gates/kernel"), self.get(f"{scope}/gates/bias")
            ck, cb = self.get(f"{scope}/candidate/kernel"), self.get(f"{scope}/candidate/bias")
            rb = self.get(f"{scope}/candidate/recurrent_bias") if cell.reset_after \
                else np.zeros(H, np.float32)
            I = gk.shape[0] - H
            def zrh(g, c):  # TF1 gate blocks r, u (u = ONNX z) and the candidate -> z, r, h
                return np.concatenate([g[..., H:], g[..., :H], c], axis=-1)
            W = self.init("W", scope, zrh(gk[:I], ck[:I]).T[None])
            R = self.init("R", scope, zrh(gk[I:], ck[I:]).T[None])
            B = self.init("B", scope, np.concatenate([zrh(gb, cb),
                                                      np.zeros(2 * H, np.float32), rb])[None])
            y, yh = b.op("GRU", [X, W, R, B, seq, h0[0]], 2, hidden_size=H,
                         linear_before_reset=int(cell.reset_after))
            self.ex.native_ops.append("GRU")
            finals = [self.final_state(yh, states[0])]
        elif isinstance(cell, _cells.BasicRNNCell):
            K, bias = self.get(f"{scope}/kernel"), self.get(f"{scope}/bias")
            I = K.shape[0] - H
            act = "Relu" if cell.activation is _dsl.relu else "Tanh"
            W = self.init("W", scope, K[:I].T[None])
            R = self.init("R", scope, K[I:].T[None])
            B = self.init("B", scope, np.concatenate([bias, np.zeros(H, np.float32)])[None])
            y, yh = b.op("RNN", [X, W, R, B, seq, h0[0]], 2, hidden_size=H, activations=[act])
            self.ex.native_ops.append("RNN")
            finals = [self.final_state(yh, states[0])]
        else:  # pragma: no cover - _cell_candidates makes only the cells above
            raise ExportError(f"ONNX export: no native op for {type(cell).__name__}")
        return b.op("Squeeze", [y, b.i64([1])]), finals


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def to_onnx(model: Model, params: Mapping[str, Any], *, native: bool = True,
            name: str | None = None) -> Any:
    """The model as an `onnx.ModelProto` (inference graph, opset 17); see `export`."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected an rnncomp.Model, received {type(model).__name__}")
    ex = _Exporter(model, params, native)
    graph = model.graph
    inputs = []
    for n in graph.inputs:
        if n.op is Op.INPUT and not n.name.startswith("@"):
            ex.reserve(n.name)
            inputs.append(ex.value_info(n.name, n))
            for k, d in enumerate(n.shape):
                if isinstance(d, str):
                    ex.dim_source.setdefault(d, (n.name, k))
    out_names = output_names(model)
    for nm in out_names:
        if nm in ex._names:
            raise ExportError(f"ONNX export: output name {nm!r} is also an input's name")
        ex.reserve(nm)
    static = _statics(graph, {})
    values = ex.lower_graph(ex.root, graph, {}, static)
    outputs = []
    for nm, v, node in zip(out_names, values, graph.outputs):
        ex.root.nodes.append(ex.helper.make_node("Identity", [v], [nm],
                                                 name=ex.fresh("n_Identity")))
        outputs.append(ex.value_info(nm, node))
    g = ex.helper.make_graph(ex.root.nodes, name or model.name, inputs, outputs,
                             ex.initializers)
    proto = ex.helper.make_model(g, opset_imports=[ex.helper.make_opsetid("", OPSET)],
                                 producer_name="rnncomp", doc_string=f"rnncomp model {model.name}")
    proto.ir_version = IR_VERSION
    from ..version import __version__

    proto.producer_version = __version__
    ex.helper.set_model_props(proto, {
        "rnncomp.native_ops": ",".join(ex.native_ops),
        "rnncomp.scan_ops": str(ex.scan_ops)})
    return proto


def export(model: Model, params: Mapping[str, Any], path: Any = None, *, native: bool = True,
           check: bool = True, name: str | None = None) -> Any:
    """Write `model` with `params` as an ONNX file at `path` (if given); return the ModelProto.

    native=True maps scans that are exactly a built-in cell to ONNX RNN/LSTM/GRU; native=False
    exports every scan as an ONNX Scan of the cell's ops. check=True runs onnx.checker (with
    shape inference) on the result. Raises UnsupportedOpError naming an op with no lowering.
    """
    proto = to_onnx(model, params, native=native, name=name)
    onnx, _, _ = _import_onnx()
    if check:
        onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save_model(proto, str(path))
    return proto


def _session(model_or_path: Any):
    ort = _import_ort()
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") \
        else str(model_or_path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def run(model_or_path: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run an exported model (a path or ModelProto) in ONNX Runtime; outputs by name."""
    sess = _session(model_or_path)
    feeds = {}
    for i in sess.get_inputs():
        if i.name not in inputs:
            raise ExportError(f"missing input {i.name!r} for the ONNX model")
        dt = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(int32)": np.int32, "tensor(int64)": np.int64,
              "tensor(bool)": np.bool_}.get(i.type)
        feeds[i.name] = np.ascontiguousarray(np.asarray(inputs[i.name], dtype=dt))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def check(model: Model, params: Mapping[str, Any], model_or_path: Any,
          inputs: Mapping[str, Any], *, atol: float = 1e-5) -> float:
    """Run the exported model in ONNX Runtime and rnncomp's interpreter on the same inputs;
    return the largest absolute difference, raising ExportError if it exceeds `atol`."""
    args = model.arguments(params, inputs)
    want = evaluate(model.graph, args, Context())
    got = run(model_or_path, {k: v for k, v in zip([n.name for n in model.graph.inputs], args)
                              if k in model.input_names and not k.startswith("@")})
    worst = 0.0
    for nm, w in zip(output_names(model), want):
        g = got[nm]
        if g.shape != np.shape(w):
            raise ExportError(f"output {nm!r}: ONNX Runtime gives shape {g.shape}, rnncomp "
                              f"{np.shape(w)}")
        if np.size(w):
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - np.asarray(
                w, np.float64)))))
    if not worst <= atol:
        raise ExportError(f"ONNX Runtime and rnncomp differ by {worst:.3g} (> {atol:g})")
    return worst
