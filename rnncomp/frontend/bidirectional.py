"""Bidirectional unrolls with TF1's names and meaning: bidirectional_dynamic_rnn,
stack_bidirectional_dynamic_rnn (tf.contrib.rnn) and reverse_sequence.

The backward direction is one scan run backwards (rnn._dynamic_rnn(reverse=True)): each
instance starts at its own last valid step, so it reads its sequence reversed within its
length and writes each output at the position of the input that made it. That is exactly TF1's
reverse_sequence(inputs) -> dynamic_rnn -> reverse_sequence(outputs), zeros past each length
included, without the two reversals (no data moves). reverse_sequence itself is here for user
code; it is a composite of existing ops (see its docstring for its cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import dsl
from ..ir import ops
from ..ir.dtypes import DType
from ..ir.graph import Node, shape_str
from .cells import as_cell
from .rnn import _check_seq_len, _dynamic_rnn, scan, step_index
from .trace import variable_scope


def bidirectional_dynamic_rnn(cell_fw, cell_bw, inputs: Node, sequence_length: Any = None,
                              initial_state_fw: Any = None, initial_state_bw: Any = None,
                              dtype: Any = None, parallel_iterations: int | None = None,
                              swap_memory: bool = False, time_major: bool = False,
                              scope: str | None = None):
    """TF1 tf.nn.bidirectional_dynamic_rnn: returns ((output_fw, output_bw), (state_fw,
    state_bw)); outputs [B, T, H] each (or [T, B, H] if time_major), not concatenated (TF1:
    concat them yourself, rc.concat(outputs, 2)).

    The backward direction reads each instance reversed within its own length
    (sequence_length, as tf.reverse_sequence), its outputs are given back in input order, and
    are zeros past each length; state_bw is its state after reading step 0. Parameters are
    named `bidirectional_rnn/fw/<cell>/...` and `bidirectional_rnn/bw/<cell>/...` (scope
    replaces `bidirectional_rnn`). Each direction is one scan; the backward one runs its steps
    from max(sequence_length) - 1 down to 0. Other arguments as dynamic_rnn.
    """
    cell_fw, cell_bw = as_cell(cell_fw), as_cell(cell_bw)
    with variable_scope(scope or "bidirectional_rnn"):
        out_fw, st_fw = _dynamic_rnn(cell_fw, inputs, sequence_length, initial_state_fw, dtype,
                                     parallel_iterations, swap_memory, time_major, "fw",
                                     reverse=False, fn="bidirectional_dynamic_rnn (fw)")
        out_bw, st_bw = _dynamic_rnn(cell_bw, inputs, sequence_length, initial_state_bw, dtype,
                                     parallel_iterations, swap_memory, time_major, "bw",
                                     reverse=True, fn="bidirectional_dynamic_rnn (bw)")
    return (out_fw, out_bw), (st_fw, st_bw)


def stack_bidirectional_dynamic_rnn(cells_fw: Sequence, cells_bw: Sequence, inputs: Node,
                                    initial_states_fw: Sequence | None = None,
                                    initial_states_bw: Sequence | None = None,
                                    dtype: Any = None, sequence_length: Any = None,
                                    parallel_iterations: int | None = None,
                                    time_major: bool = False, scope: str | None = None,
                                    swap_memory: bool = False):
    """TF1 tf.contrib.rnn.stack_bidirectional_dynamic_rnn: layer k is a
    bidirectional_dynamic_rnn over the concatenated [fw, bw] outputs of layer k - 1.

    Returns (outputs, output_states_fw, output_states_bw): outputs [B, T, H_fw + H_bw] of the
    last layer (fw then bw along the last axis), and a tuple of final states per layer for each
    direction. Parameters: `stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/{fw,bw}/...`
    (scope replaces `stack_bidirectional_rnn`); this is PyTorch's multi-layer
    bidirectional=True layout (rnncomp.tools.convert maps one to the other).
    """
    cells_fw, cells_bw = list(cells_fw or []), list(cells_bw or [])
    if not cells_fw:
        raise ValueError("stack_bidirectional_dynamic_rnn: cells_fw must be a non-empty list of "
                         "cells")
    if len(cells_fw) != len(cells_bw):
        raise ValueError(f"stack_bidirectional_dynamic_rnn: cells_fw has {len(cells_fw)} cells "
                         f"but cells_bw has {len(cells_bw)}: one forward and one backward cell "
                         f"per layer")
    for nm, st in (("initial_states_fw", initial_states_fw),
                   ("initial_states_bw", initial_states_bw)):
        if st is not None and (not isinstance(st, (list, tuple)) or len(st) != len(cells_fw)):
            raise ValueError(f"stack_bidirectional_dynamic_rnn: {nm} must be a list of "
                             f"{len(cells_fw)} states (one per layer), received {st!r}")
    states_fw, states_bw = [], []
    x = inputs
    with variable_scope(scope or "stack_bidirectional_rnn"):
        for k, (cf, cb) in enumerate(zip(cells_fw, cells_bw)):
            with variable_scope(f"cell_{k}"):
                (of, ob), (sf, sb) = bidirectional_dynamic_rnn(
                    cf, cb, x, sequence_length=sequence_length,
                    initial_state_fw=None if initial_states_fw is None else initial_states_fw[k],
                    initial_state_bw=None if initial_states_bw is None else initial_states_bw[k],
                    dtype=dtype, parallel_iterations=parallel_iterations,
                    swap_memory=swap_memory, time_major=time_major)
            x = dsl.concat([of, ob], axis=2)
            states_fw.append(sf)
            states_bw.append(sb)
    return x, tuple(states_fw), tuple(states_bw)


def _iota(x_time_major: Node) -> Node:
    """[0, 1, ..., T-1] (i32) for the leading axis of x, whose size may be symbolic."""
    _, ys = scan(lambda c, x: (c, step_index()), (), xs=x_time_major)
    return ys


def reverse_sequence(input: Node, seq_lengths: Any, seq_axis: int | None = None,  # noqa: A002
                     batch_axis: int | None = None, name: str | None = None,
                     seq_dim: int | None = None, batch_dim: int | None = None) -> Node:
    """TF1 tf.reverse_sequence: for each instance b (along batch_axis, default 0), the first
    seq_lengths[b] entries along seq_axis are reversed and the rest left as they are.

    seq_dim / batch_dim are TF1's old names. Built from existing ops (comparisons, a broadcast
    product and a sum over the time axis, so it differentiates and compiles like any
    expression): it costs O(T^2 * B * features) time and memory, fine for the lengths of a
    sentence but not for long series. bidirectional_dynamic_rnn does not use it (its backward
    scan reads the steps in reverse order directly)."""
    if not isinstance(input, Node):
        raise TypeError(f"reverse_sequence: input must be an rnncomp array, received "
                        f"{type(input).__name__}")
    if seq_axis is not None and seq_dim is not None:
        raise ValueError("reverse_sequence: pass seq_axis or seq_dim (its old name), not both")
    if batch_axis is not None and batch_dim is not None:
        raise ValueError("reverse_sequence: pass batch_axis or batch_dim (its old name), not both")
    sa = seq_axis if seq_axis is not None else seq_dim
    ba = batch_axis if batch_axis is not None else (batch_dim if batch_dim is not None else 0)
    if sa is None:
        raise ValueError("reverse_sequence: seq_axis is required (as in TF1)")
    if input.ndim < 2:
        raise ValueError(f"reverse_sequence: input must have rank >= 2 (a batch and a sequence "
                         f"axis), received [{shape_str(input.shape)}]")
    sa = ops.norm_axis(sa, input.ndim, "reverse_sequence")
    ba = ops.norm_axis(ba, input.ndim, "reverse_sequence")
    if sa == ba:
        raise ValueError(f"reverse_sequence: seq_axis and batch_axis are both {sa}")
    rest = [k for k in range(input.ndim) if k not in (sa, ba)]
    perm = [sa, ba] + rest
    X = dsl.transpose(input, perm) if perm != list(range(input.ndim)) else input  # [T, B, ...]
    T, B = X.shape[0], X.shape[1]
    L = _check_seq_len(seq_lengths, B, T, "reverse_sequence")
    L = ops.cast(L, DType.i32)
    t = _iota(X)                                         # [T]
    tt = dsl.reshape(t, (T, 1))
    src = ops.where(ops.lt(tt, dsl.reshape(L, (1, B))),
                    ops.sub(ops.sub(dsl.reshape(L, (1, B)), ops.const(1, DType.i32)), tt),
                    ops.broadcast(tt, (T, B)))          # [T, B]: the step each output reads
    pick = ops.cast(ops.eq(dsl.reshape(src, (T, B, 1)), dsl.reshape(t, (1, 1, T))),
                    input.dtype)                         # [T(out), B, T(in)]
    ones = (1,) * len(rest)
    Xb = dsl.reshape(dsl.transpose(X, [1, 0] + list(range(2, X.ndim))),
                     (1, B, T) + tuple(X.shape[2:]))     # [1, B, T(in), ...]
    out = dsl.sum(ops.mul(dsl.reshape(pick, (T, B, T) + ones), Xb), axis=2)  # [T, B, ...]
    inv = [0] * input.ndim
    for k, p in enumerate(perm):
        inv[p] = k
    return dsl.transpose(out, inv) if perm != list(range(input.ndim)) else out


__all__ = ["bidirectional_dynamic_rnn", "stack_bidirectional_dynamic_rnn", "reverse_sequence"]
