"""Unrolling cells over time: static_rnn (T copies of the cell) and dynamic_rnn (one scan).

sequence_length semantics (TF1): for each instance, outputs after its length are zeros and its
final state is the state at its last valid step; steps past the batch's longest sequence are not
computed (the scan's trip count is max(sequence_length)).

Length-aware execution: with sequence_length, dynamic_rnn sorts the batch by length (longest
first: argsort + permute of x, the initial state and the lengths), runs the scan on the sorted
batch with the `rows` hint (rnncomp.ir.rows), and gives the outputs and final states back in
the caller's order. A backend may then compute only the rows still running at each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dsl
from ..ir import ops, rows
from .cells import RNNCell, as_cell
from ..ir.dtypes import DType, as_dtype
from ..ir.graph import Node, Op, Unroll, shape_str
from .trace import (
    RuntimeCheck,
    TraceError,
    current,
    describe_tree,
    flatten,
    trace_scan,
    unflatten,
    variable_scope,
)


def _literal_lengths(values: Any, batch, fn: str) -> Node:
    """A Python list / NumPy array of lengths as a constant i32 [n] array (TF1 makes a constant
    tensor of it). It fixes the batch size, so the inputs' batch axis must be static."""
    a = np.asarray(values)
    if a.ndim != 1 or a.size == 0 or not (np.issubdtype(a.dtype, np.integer)
                                          or a.dtype == object and all(
                                              isinstance(v, (int, np.integer)) and
                                              not isinstance(v, bool) for v in a)):
        raise ValueError(f"{fn}: sequence_length must be a 1-D list or array of integers (one "
                         f"length per batch instance), received {values!r}")
    if not isinstance(batch, int):
        raise ValueError(f"{fn}: sequence_length={list(a.tolist())} fixes the batch size to "
                         f"{a.size}, but the inputs' batch axis is the symbol {batch!r}; declare "
                         f"the input with that batch size (rc.Input(({a.size}, ...))) or pass the "
                         f"lengths at run time as an input: L = rc.Input((None,), 'i32') and "
                         f"m(params, ..., L=[...])")
    parts = [dsl.reshape(ops.const(int(v), DType.i32), (1,)) for v in a.tolist()]
    return parts[0] if len(parts) == 1 else dsl.concat(parts, axis=0)


def _check_dtype_arg(dtype: Any, inputs_dtype: DType, fn: str) -> None:
    """TF1's dtype= of the state and outputs: honoured when it is the inputs' dtype, refused
    (never ignored) otherwise, since an rnncomp model has one float dtype."""
    if dtype is None:
        return
    dt = as_dtype(dtype)
    if dt != inputs_dtype:
        raise ValueError(f"{fn}: dtype={dt} but the inputs are {inputs_dtype}: an rnncomp model "
                         f"has one float dtype, set by rc.Model(fn, inputs, dtype='{dt}'); pass "
                         f"dtype={inputs_dtype} or leave it out")


def _check_seq_len(sequence_length: Any, batch, T, fn: str) -> Node:
    if isinstance(sequence_length, (list, tuple, np.ndarray)):
        vals = sequence_length
        sequence_length = _literal_lengths(vals, batch, fn)
        vals = [int(v) for v in np.asarray(vals).tolist()]
        if any(v < 0 or (isinstance(T, int) and v > T) for v in vals):
            raise ValueError(f"{fn}: sequence_length values must be in [0, {T}], received {vals}")
    if not isinstance(sequence_length, Node):
        raise TypeError(f"{fn}: sequence_length must be an rnncomp array (a graph input), "
                        f"a Python list or a NumPy array of integers, received "
                        f"{type(sequence_length).__name__}")
    if not sequence_length.dtype.is_int:
        raise ValueError(f"{fn}: sequence_length must be an integer array, received "
                         f"{sequence_length.dtype}")
    if sequence_length.shape != (batch,):
        raise ValueError(f"{fn}: sequence_length must have shape [{batch}] (one length per batch "
                         f"instance), received [{shape_str(sequence_length.shape)}]")
    if sequence_length.op is Op.INPUT:
        current().checks.append(RuntimeCheck("range", sequence_length.name,
                                             {"lo": 0, "hi": T, "what": "sequence_length"}))
    return sequence_length


def _initial_state(cell: RNNCell, initial_state, batch, dtype, fn: str) -> tuple[list[Node], Any]:
    if initial_state is None:
        state = cell.zero_state(batch, dtype)
    else:
        state = initial_state
    flat, tree = flatten(state)
    sizes, stree = flatten(cell.state_size)
    if tree != stree and not (len(sizes) == len(flat) and tree is None and stree is None):
        if str(tree) != str(stree):
            raise ValueError(f"{fn}: initial_state must have the structure of the cell's state "
                             f"{cell.state_size}, received {describe_tree(tree, flat)}")
    for k, (x, s) in enumerate(zip(flat, sizes)):
        if not isinstance(x, Node):
            raise TypeError(f"{fn}: initial_state leaf {k} must be an rnncomp array, received "
                            f"{type(x).__name__}")
        if x.shape != (batch, s):
            raise ValueError(f"{fn}: initial_state leaf {k} must have shape [{batch},{s}] "
                             f"(batch, state size), received [{shape_str(x.shape)}]")
        if x.dtype != dtype:
            raise ValueError(f"{fn}: initial_state leaf {k} must have dtype {dtype} like the "
                             f"inputs, received {x.dtype}")
    return flat, tree


def _check_new_state(cell, new_state, tree, flat_old, fn) -> list[Node]:
    new_flat, new_tree = flatten(new_state)
    if str(new_tree) != str(tree) or len(new_flat) != len(flat_old):
        # (a conversion like !r in the f-string would apply to the whole conditional)
        got = describe_tree(new_tree, new_flat) if all(isinstance(x, Node) for x in new_flat) \
            else repr(new_state)
        raise TraceError(f"{fn}: the cell returned a state of structure {got}, but its state is "
                         f"{describe_tree(tree, flat_old)}")
    for k, (a, b) in enumerate(zip(new_flat, flat_old)):
        if not isinstance(a, Node) or a.shape != b.shape or a.dtype != b.dtype:
            got = f"{a.dtype}[{shape_str(a.shape)}]" if isinstance(a, Node) else repr(a)
            raise TraceError(f"{fn}: state leaf {k} enters the cell as {b.dtype}"
                             f"[{shape_str(b.shape)}] but the cell returns {got}")
    return new_flat


def _mask(valid: Node, new: Node, old: Node) -> Node:
    return ops.where(valid, new, old)


def dynamic_rnn(
    cell: RNNCell,
    inputs: Node,
    sequence_length: Any = None,
    initial_state: Any = None,
    dtype: Any = None,
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: str | None = None,
    *,
    length_aware: bool = True,
) -> tuple[Node, Any]:
    """Unroll `cell` over inputs [B, T, I] (or [T, B, I] if time_major) as one scan node.

    Returns (outputs [B, T, H] (or [T, B, H]), final state with the cell's state structure).
    TF1's signature and order. sequence_length: an integer array (a graph input), or a Python
    list / NumPy array (a constant; the batch axis must then be static). dtype: must be the
    inputs' dtype if given (refused otherwise). parallel_iterations: accepted, no effect (the
    steps of a recurrence run in order; kernels parallelise within a step). swap_memory:
    accepted, no effect (TF1 moves saved activations from GPU to host memory; rnncomp keeps
    them where the backend runs: host memory on CPU; to bound BPTT memory use truncated BPTT,
    rnncomp.runtime.grad.tbptt_value_and_grad). length_aware (rnncomp only): with
    sequence_length, sort the batch by length so that compiled kernels compute only the
    sequences still running at each step (same results; False: every step computes the whole
    batch and masks the finished rows, as TF1).
    """
    return _dynamic_rnn(cell, inputs, sequence_length, initial_state, dtype, parallel_iterations,
                        swap_memory, time_major, scope, reverse=False, fn="dynamic_rnn",
                        length_aware=length_aware)


def _sort_by_length(results: list[Node], lengths: Node, literal: list[int] | None,
                    n_carry: int) -> list[Node]:
    """The scan behind `results` run on the batch sorted by length, longest first, with the
    `rows` hint; results given back in the caller's row order. Unchanged when the body is not
    row-separable (rnncomp.ir.rows.classify) or reads another per-row value from outside."""
    s = results[0].inputs[0]
    info = ops.scan_info(s)
    invs = list(s.inputs[info.n_carry + info.n_xs:info.n_carry + info.n_xs + info.n_inv])
    k = next((j for j, v in enumerate(invs) if v is lengths), None)
    if k is None or rows.classify(s.attr("body"), info.n_carry, info.n_xs, k) is None:
        return results
    attrs = {**dict(s.attrs), "rows": k}
    if literal is not None and all(a >= b for a, b in zip(literal, literal[1:])):
        new = ops.make(Op.SCAN, *s.inputs, **attrs)  # already sorted: nothing to move
        return [ops.item(new, j) for j in range(len(results))]
    perm = ops.argsort(lengths)
    ins = list(s.inputs)
    for j in range(info.n_carry):
        if ins[j].op is not Op.FULL:  # a zero state is the same in any order
            ins[j] = ops.permute(ins[j], perm, 0)
    for j in range(info.n_carry, info.n_carry + info.n_xs):
        ins[j] = ops.permute(ins[j], perm, 1)
    ins[info.n_carry + info.n_xs + k] = ops.permute(lengths, perm, 0)
    new = ops.make(Op.SCAN, *ins, **attrs)
    out = []
    for j in range(len(results)):
        r = ops.item(new, j)
        out.append(ops.permute(r, perm, 0 if j < n_carry else 1, inverse=True))
    return out


def _dynamic_rnn(cell, inputs, sequence_length, initial_state, dtype, parallel_iterations,
                 swap_memory, time_major, scope, *, reverse: bool, fn: str,
                 length_aware: bool = True):
    """dynamic_rnn; reverse=True runs the scan backwards from step max(sequence_length) - 1
    (each instance starts at its own last valid step, the steps past its length leave the state
    alone and output zeros): the backward direction of bidirectional_dynamic_rnn, which equals
    TF1's reverse_sequence -> dynamic_rnn -> reverse_sequence without moving any data."""
    cell = as_cell(cell)
    if parallel_iterations is not None and (isinstance(parallel_iterations, bool) or not isinstance(
            parallel_iterations, int) or parallel_iterations <= 0):
        raise ValueError(f"{fn}: parallel_iterations must be a positive int or None, received "
                         f"{parallel_iterations!r}")
    if not isinstance(swap_memory, bool):
        raise ValueError(f"{fn}: swap_memory must be True or False, received {swap_memory!r}")
    if not isinstance(time_major, bool):
        raise ValueError(f"{fn}: time_major must be True or False, received {time_major!r}")
    if not isinstance(length_aware, bool):
        raise ValueError(f"{fn}: length_aware must be True or False, received {length_aware!r}")
    if not isinstance(inputs, Node):
        raise TypeError(f"{fn}: inputs must be an rnncomp array, received {type(inputs).__name__}")
    if inputs.ndim != 3:
        raise ValueError(f"{fn}: inputs must have rank 3 ({'[T, B, I]' if time_major else '[B, T, I]'}), "  # noqa: E501
                         f"received [{shape_str(inputs.shape)}]")
    if not inputs.dtype.is_float:
        raise ValueError(f"{fn}: inputs must be floating point, received {inputs.dtype}")
    _check_dtype_arg(dtype, inputs.dtype, fn)
    X = inputs if time_major else dsl.transpose(inputs, (1, 0, 2))
    T, B = X.shape[0], X.shape[1]
    flat0, tree = _initial_state(cell, initial_state, B, inputs.dtype, fn)
    length_input = None
    literal_vals = None
    if sequence_length is not None:
        literal = not isinstance(sequence_length, Node)
        given = sequence_length
        sequence_length = _check_seq_len(sequence_length, B, T, fn)
        if literal:
            literal_vals = [int(v) for v in np.asarray(given).tolist()]
        length_input = ops.cast(dsl.max(sequence_length), DType.i64)
        if literal and not isinstance(T, int):  # no run-time range check: stop at T (as TF1)
            length_input = ops.minimum(length_input,
                                       ops.make(Op.DIMSIZE, X, axis=0, dtype=DType.i64))

    def body(t, carries, xs):
        state = unflatten(tree, carries)
        out, new_state = cell(xs[0], state)
        new_flat = _check_new_state(cell, new_state, tree, carries, fn)
        if not isinstance(out, Node) or out.ndim != 2:
            raise TraceError(f"{fn}: the cell output must be a [batch, units] array, received "
                             f"{out!r}")
        if sequence_length is not None:
            valid = dsl.reshape(ops.lt(ops.cast(t, sequence_length.dtype), sequence_length),
                                (B, 1))
            new_flat = [_mask(valid, n, o) for n, o in zip(new_flat, carries)]
            out = ops.where(valid, out, ops.const(0.0, out.dtype))
        return new_flat, [out]

    with variable_scope(scope or "rnn"):
        results = trace_scan(body, flat0, [X], length_input=length_input, reverse=reverse)
    if sequence_length is not None and length_aware:
        results = _sort_by_length(results, sequence_length, literal_vals, len(flat0))
    final = unflatten(tree, results[:len(flat0)])
    ys = results[len(flat0)]
    outputs = ys if time_major else dsl.transpose(ys, (1, 0, 2))
    return outputs, final


def static_rnn(
    cell: RNNCell,
    inputs: Sequence[Node],
    initial_state: Any = None,
    dtype: Any = None,
    sequence_length: Any = None,
    scope: str | None = None,
) -> tuple[list[Node], Any]:
    """Unroll `cell` over a list of T inputs [B, I] by calling it T times (T copies in the IR).

    TF1's signature and order; `dtype` and `sequence_length` as in dynamic_rnn."""
    cell = as_cell(cell)
    fn = "static_rnn"
    inputs = list(inputs)
    if not inputs:
        raise ValueError(f"{fn}: inputs must be a non-empty list of [batch, features] arrays")
    for k, x in enumerate(inputs):
        if not isinstance(x, Node) or x.ndim != 2:
            raise ValueError(f"{fn}: inputs[{k}] must be a [batch, features] array, received "
                             f"{x!r}")
        if x.shape != inputs[0].shape or x.dtype != inputs[0].dtype:
            raise ValueError(f"{fn}: inputs[{k}] is {x.dtype}[{shape_str(x.shape)}] but inputs[0] "
                             f"is {inputs[0].dtype}[{shape_str(inputs[0].shape)}]")
    B = inputs[0].shape[0]
    _check_dtype_arg(dtype, inputs[0].dtype, fn)
    flat, tree = _initial_state(cell, initial_state, B, inputs[0].dtype, fn)
    if sequence_length is not None:
        sequence_length = _check_seq_len(sequence_length, B, len(inputs), fn)
    outputs = []
    states = [tuple(flat)]
    # at the top level every copy of the cell is step t of one loop, as in dynamic_rnn: random
    # draws (dropout) reuse step 0's sites with the step index t, so a static unroll draws the
    # masks dynamic_rnn draws and its copies stay identical steps (the reroll pass makes them
    # one scan); inside a scan body the enclosing step keys the draws and each copy takes new
    # sites instead
    ctx = current()
    top = not ctx.step_stack
    sites0 = sites_end = ctx.random_sites
    with variable_scope(scope or "rnn"):
        for t, x in enumerate(inputs):
            if top:
                ctx.random_sites = sites0
                ctx.step_stack.append(ops.const(t, DType.i32))
            try:
                out, new_state = cell(x, unflatten(tree, flat))
            finally:
                if top:
                    ctx.step_stack.pop()
                    sites_end = max(sites_end, ctx.random_sites)
            new_flat = _check_new_state(cell, new_state, tree, flat, fn)
            if sequence_length is not None:
                valid = dsl.reshape(ops.lt(ops.const(t, sequence_length.dtype), sequence_length),
                                    (B, 1))
                new_flat = [_mask(valid, n, o) for n, o in zip(new_flat, flat)]
                out = ops.where(valid, out, ops.const(0.0, out.dtype))
            flat = new_flat
            outputs.append(out)
            states.append(tuple(flat))
    if top:
        ctx.random_sites = sites_end
    # a hint for the reroll pass, which turns the T copies into one scan when they are the same
    # step (the traced graph keeps the copies)
    ctx.unrolls.append(Unroll(tuple(inputs), tuple(states), tuple(outputs)))
    return outputs, unflatten(tree, flat)


def scan(
    fn: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    reverse: bool = False,
) -> tuple[Any, Any]:
    """A general loop, like jax.lax.scan: fn(carry, x_t) -> (carry, y_t); returns (carry, ys).

    Inside fn, `rnncomp.step_index()` is the current step. With xs=None, `length` is required.
    """
    c_flat, c_tree = flatten(init)
    x_flat, x_tree = flatten(xs) if xs is not None else ([], None)
    y_tree_box: list[Any] = []

    def body(t, carries, x_t):
        c = unflatten(c_tree, carries)
        x = unflatten(x_tree, x_t) if xs is not None else None
        new_c, y = fn(c, x)
        new_flat, new_tree = flatten(new_c)
        if str(new_tree) != str(c_tree):
            raise TraceError(f"scan: fn returned a carry of structure {new_c!r}, expected the "
                             f"structure of init {init!r}")
        y_flat, y_tree = flatten(y) if y is not None else ([], None)
        y_tree_box.append((y is not None, y_tree))
        return new_flat, y_flat

    res = trace_scan(body, c_flat, x_flat, reverse=reverse, length=length)
    carry = unflatten(c_tree, res[:len(c_flat)])
    has_y, y_tree = y_tree_box[0]
    ys = unflatten(y_tree, res[len(c_flat):]) if has_y else None
    return carry, ys


def step_index() -> Node:
    """The step index (i32 scalar) inside a scan body, or copy t of a static_rnn; 0 outside any
    loop."""
    return current().step()
