"""The NumPy reference interpreter: the oracle every pass and backend is tested against.

It evaluates a Graph node by node with each op's registry `impl`, loops scans in Python, and
binds symbolic dimensions (B, T, ...) from the arrays given for the graph inputs (the Context of
rnncomp.ir.context, which every op's impl receives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir.context import Context, InputError, NonFiniteError
from ..ir.graph import Graph, Node, Op, shape_str
from ..ir.ops import REGISTRY, scan_info


def evaluate(graph: Graph, args: Sequence[Any], ctx: Context | None = None) -> list[np.ndarray]:
    """Run graph on positional arrays for graph.inputs; returns the list of outputs."""
    ctx = ctx or Context()
    if len(args) != len(graph.inputs):
        raise InputError(f"graph takes {len(graph.inputs)} inputs, received {len(args)}")
    env: dict[int, Any] = {}
    for node, a in zip(graph.inputs, args):
        a = np.asarray(a)
        if a.dtype != node.dtype.np:
            a = a.astype(node.dtype.np)
        env[id(node)] = a
    for node, a in zip(graph.inputs, args):
        if node.op is not Op.PLACEHOLDER:
            ctx.bind(node, env[id(node)], f"input {node.name!r}")
            if ctx.check_finite and node.dtype.is_float and not np.all(np.isfinite(env[id(node)])):
                bad = np.argwhere(~np.isfinite(env[id(node)]))[0]
                raise NonFiniteError(f"{'parameter' if node.op is Op.PARAM else 'input'} "
                                     f"{node.name!r} contains NaN/Inf (first at index "
                                     f"{tuple(int(i) for i in bad)})")
    for node in graph.nodes:
        if id(node) in env:
            continue
        if node.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER):
            raise InputError(f"graph uses {node!r}, which is not among its inputs")
        vals = [env[id(i)] for i in node.inputs]
        if node.op is Op.SCAN:
            out = run_scan(ctx, node, vals)
        elif node.op is Op.FUSED:
            out = tuple(evaluate(node.attr("body"), vals, ctx))
        else:
            out = REGISTRY[node.op].impl(ctx, dict(node.attrs), *vals)
            if node.dtype is not None and getattr(out, "dtype", None) != node.dtype.np:
                out = np.asarray(out).astype(node.dtype.np)
            if ctx.check_finite and node.dtype is not None and node.dtype.is_float:
                _check(ctx, node, out)
        env[id(node)] = out
    return [env[id(o)] for o in graph.outputs]


def _check(ctx: Context, node: Node, out: np.ndarray) -> None:
    if not np.all(np.isfinite(out)):
        where = f" at time step {ctx.steps[-1]}" if ctx.steps else ""
        kind = "NaN" if np.isnan(out).any() else "Inf"
        raise NonFiniteError(f"{kind} first produced by op {node.op.value} "
                             f"{node.dtype}[{shape_str(node.shape)}]{where}")


def run_scan(ctx: Context, node: Node, vals: list[Any]) -> tuple[np.ndarray, ...]:
    info = scan_info(node)
    body: Graph = node.attr("body")
    carries = list(vals[:info.n_carry])
    xs = vals[info.n_carry:info.n_carry + info.n_xs]
    invs = vals[info.n_carry + info.n_xs:info.n_carry + info.n_xs + info.n_inv]
    T = xs[0].shape[0] if xs else int(node.attr("length"))
    n = T
    if info.has_length:
        n = max(0, min(int(vals[-1]), T))
    types = node.shape[1]
    ys = [np.zeros((T,) + ctx.resolve(shape[1:]), dtype.np) for shape, dtype in
          types[info.n_carry:]]
    steps = range(n - 1, -1, -1) if info.reverse else range(n)
    for t in steps:
        if info.stop is not None and bool(carries[info.stop]):
            break  # every sequence finished: the remaining steps would change nothing
        ctx.steps.append(t)
        try:
            outs = evaluate(body, [np.int32(t)] + carries + [x[t] for x in xs] + list(invs), ctx)
        finally:
            ctx.steps.pop()
        carries = outs[:info.n_carry]
        for k, y in enumerate(outs[info.n_carry:]):
            ys[k][t] = y
    return tuple(carries) + tuple(ys)


def interpret(graph: Graph, inputs: dict[str, Any] | Sequence[Any], *,
              check_finite: bool = False) -> list[np.ndarray]:
    """Run a graph on inputs given by name (dict) or by position."""
    if isinstance(inputs, dict):
        missing = [n.name for n in graph.inputs if n.name not in inputs]
        if missing:
            raise InputError(f"missing inputs: {', '.join(missing)}")
        args = [inputs[n.name] for n in graph.inputs]
    else:
        args = list(inputs)
    return evaluate(graph, args, Context(check_finite=check_finite))
