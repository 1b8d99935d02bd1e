"""How the CPU code generator moves data in and out of loops, checked on the generated source
and against the interpreter:

- a per-step input that is a last-axis slice of a hoisted projection (a GRU's gate columns) is
  passed to the loop function as the contiguous array and read at an offset (a strided view
  kept the cell's loops from vectorizing);
- around a nested loop (the segments of `checkpoint_every=k`): the nested loop's stacked output
  is written straight into the enclosing loop's row, its final carries are taken over rather
  than copied, and an accumulator carry (a weight gradient summed over segments) is added in
  place.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import assert_close

import rnncomp as rc
from rnncomp.runtime.compiler import compile_graph


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_gate_columns_are_read_from_the_contiguous_projection(reset_after):
    def f(X):
        out, _ = rc.dynamic_rnn(rc.GRUCell(5, reset_after=reset_after), X)
        return out

    m = rc.Model(f, {"X": rc.Input((None, None, 3))})
    cg = compile_graph(m.graph, "cpu")
    # the loop's row of the whole projection, then the gate columns as a view of it
    assert re.search(r"^\s+(s\d+)_xb(\d+) = p\d+\[\1_t\]$", cg.source, re.MULTILINE), cg.source
    assert re.search(r"^\s+(s\d+)_x(\d+) = \1_xb\2\[:, ", cg.source, re.MULTILINE)
    # the fused loops index that row at the offset
    assert re.search(r"s\d+_xb\d+\[i0, i1 \+ ", cg.source)
    p = m.init(0)
    X = np.random.default_rng(1).standard_normal((4, 6, 3)).astype(np.float32)
    assert_close(m(p, backend="cpu", X=X), m(p, backend="interp", X=X), 2e-5, "outputs")


def test_segment_loops_write_in_place():
    def f(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicLSTMCell(5), X)
        return rc.mean(rc.square(out - Y))

    m = rc.Model(f, {"X": rc.Input((None, None, 3)), "Y": rc.Input((None, None, 5))})
    g = m.grad_graph(checkpoint_every=3)
    src = compile_graph(g, "cpu").source
    # a segment's outputs: the nested loop's buffer IS the enclosing loop's row
    assert re.search(r"^\s+s\d+_y\d+ = s\d+_y\d+\[s\d+_t\]$", src, re.MULTILINE), src
    # the carries leaving a segment are the nested loop's own (fresh) buffers
    assert re.search(r"^\s+(s\d+)_c\d+ = (?!\1)s\d+_c\d+$", src, re.MULTILINE)
    # the weight gradients accumulate over the segments in place
    assert re.search(r"^\s+s\d+_c\d+\[j\d+, j\d+\] \+= v\d+\[j\d+, j\d+\]$", src, re.MULTILINE)
    p = m.init(0)
    rng = np.random.default_rng(2)
    # T=7: two full segments and a partial one; T=3: one segment
    for T in (7, 3):
        feeds = {"X": rng.standard_normal((4, T, 3)).astype(np.float32),
                 "Y": rng.standard_normal((4, T, 5)).astype(np.float32)}
        _, ref = m.value_and_grad(p, backend="interp", **feeds)
        for k in (3, None):
            _, got = m.value_and_grad(p, backend="cpu", checkpoint_every=k, **feeds)
            for name in ref:
                assert_close(got[name], ref[name], 2e-5, f"{name}, T={T}, k={k}")


def test_in_place_accumulation_only_of_addends_not_read_from_the_carry():
    # c_next = c + x_t @ x_t accumulates in place; c_next = c + transpose(c) must not (the
    # addend would be read from the buffer being written): both equal the interpreter
    from rnncomp.ir import Op, ops
    from rnncomp.ir.dtypes import DType
    from rnncomp.ir.graph import Graph
    from rnncomp.runtime.interp import interpret

    c0 = ops.make(Op.INPUT, name="c0", shape=(3, 3), dtype=DType.f32)
    X = ops.make(Op.INPUT, name="X", shape=(4, 3, 3), dtype=DType.f32)
    t, c, x = (ops.placeholder((), DType.i32), ops.placeholder((3, 3), DType.f32),
               ops.placeholder((3, 3), DType.f32))
    grow = ops.scan(Graph([t, c, x], [ops.add(c, ops.matmul(x, x))]), [c0], [X], [])
    swap = ops.scan(Graph([t, c, x], [ops.add(c, ops.transpose(c, (1, 0)))]), [c0], [X], [])
    g = Graph([c0, X], [grow[0], swap[0]])
    src = compile_graph(g, "cpu").source
    assert len(re.findall(r"\] \+= ", src)) == 1, src
    rng = np.random.default_rng(3)
    args = [rng.standard_normal((3, 3)).astype(np.float32),
            rng.standard_normal((4, 3, 3)).astype(np.float32)]
    got = compile_graph(g, "cpu")(*args)
    for a, b in zip(got, interpret(g, args)):
        assert_close(a, b, 1e-5, "final carry")
