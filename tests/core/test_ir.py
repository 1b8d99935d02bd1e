"""The IR: interning, immutability, deterministic traversal, substitution, op groups."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import ops
from rnncomp.ir.dtypes import DType
from rnncomp.ir import Graph, GroupOp, Op, substitute, toposort


def inp(name, shape):
    return ops.make(Op.INPUT, name=name, shape=tuple(shape), dtype=DType.f32)


def test_structurally_equal_nodes_are_one_object():
    x = inp("X", (2, 3))
    assert inp("X", (2, 3)) is x
    a = ops.tanh(ops.add(x, ops.const(1.0, "f32")))
    b = ops.tanh(ops.add(x, ops.const(1.0, "f32")))
    assert a is b
    assert ops.add(x, ops.const(2.0, "f32")) is not ops.add(x, ops.const(1.0, "f32"))
    assert ops.placeholder((2,), "f32") is not ops.placeholder((2,), "f32")  # fresh ids


def test_nodes_are_immutable():
    x = inp("X", (2, 3))
    with pytest.raises(AttributeError, match="immutable"):
        x.shape = (3, 2)


def test_toposort_inputs_before_users_and_deterministic():
    x, y = inp("X", (2, 3)), inp("Y", (2, 3))
    s = ops.add(x, y)
    out = ops.mul(s, ops.tanh(s))
    order = toposort([out])
    pos = {id(n): k for k, n in enumerate(order)}
    for n in order:
        for i in n.inputs:
            assert pos[id(i)] < pos[id(n)]
    assert [n.op for n in order] == [Op.INPUT, Op.INPUT, Op.ADD, Op.TANH, Op.MUL]
    assert [n.op for n in toposort([out])] == [n.op for n in order]


def test_deep_chain_does_not_recurse():
    x = inp("X", (1,))
    y = x
    for _ in range(5000):
        y = ops.neg(y)
    assert len(toposort([y])) == 5001


def test_graph_nodes_include_unused_inputs_first():
    x, y = inp("X", (2,)), inp("Y", (2,))
    g = Graph([x, y], [ops.exp(x)])
    assert [n.op for n in g.nodes] == [Op.INPUT, Op.INPUT, Op.EXP]
    assert g.nodes[0] is y
    assert g.input_names == ["X", "Y"] and g.input_named("Y") is y
    with pytest.raises(KeyError):
        g.input_named("Z")


def test_substitute_rebuilds_only_changed_parts():
    x, y, z = inp("X", (2,)), inp("Y", (2,)), inp("Z", (2,))
    shared = ops.exp(y)
    out = ops.add(ops.tanh(x), shared)
    (new,) = substitute([out], {id(x): z}, ops.remake)
    assert new is ops.add(ops.tanh(z), shared)
    assert new.inputs[1] is shared


def test_all_nodes_enters_scan_bodies():
    def fn(X):
        return rc.dynamic_rnn(rc.BasicRNNCell(3), X)

    g = rc.trace(fn, {"X": rc.Input((None, None, 2))}).graph
    top = {n.op for n in g.nodes}
    every = {n.op for n in g.all_nodes()}
    assert Op.TANH not in top and Op.TANH in every and Op.SCAN in top


def test_groups():
    assert Op.MATMUL in GroupOp.Contraction and Op.SCAN in GroupOp.Control
    assert GroupOp.Elementwise == GroupOp.Unary | GroupOp.Binary | GroupOp.Ternary
    assert not GroupOp.Unary & GroupOp.Binary
    assert GroupOp.Compare <= GroupOp.Binary


def test_shape_rule_errors_name_shapes():
    a, b = inp("A", (2, 3)), inp("B", (4, 5))
    with pytest.raises(rc.ShapeError, match=r"matmul: inner dimensions differ: \[2,3\] @ \[4,5\]"):
        ops.matmul(a, b)
    with pytest.raises(rc.ShapeError, match=r"add: shapes \[2,3\], \[4,5\] do not broadcast"):
        ops.add(a, b)


def test_repr_and_graph_repr():
    x = inp("X", ("B", 3))
    assert repr(x) == "<input X f32[B,3]>"
    g = Graph([x], [ops.tanh(x)])
    assert repr(g) == "<Graph 1 inputs, 1 outputs, 2 nodes>"
    out = rc.interpret(g, {"X": np.zeros((4, 3), np.float32)})
    assert out[0].shape == (4, 3)
