"""The verifier accepts every graph the DSL builds and rejects malformed graphs built with
rnncomp.ir.raw_node, with messages that say which node and why."""

from __future__ import annotations

import re

import pytest
from test_cells import CASES, build

import rnncomp as rc
from rnncomp import ops
from rnncomp.ir.dtypes import DType
from rnncomp.ir import Graph, Op, raw_node
from rnncomp.ir.verify import VerifyError

f32 = DType.f32


def inp(name, shape, dtype=f32):
    return ops.make(Op.INPUT, name=name, shape=tuple(shape), dtype=dtype)


@pytest.mark.parametrize("unroll", ["dynamic", "static"])
@pytest.mark.parametrize("with_len", [False, True], ids=["full", "seq_len"])
@pytest.mark.parametrize("name", list(CASES))
def test_accepts_built_graphs(name, with_len, unroll):
    g = build(CASES[name], unroll, with_len, "f32").graph
    assert rc.verify(g) is g


def test_accepts_misc_graphs():
    def fn(X, y):
        out, st = rc.dynamic_rnn(rc.DropoutWrapper(rc.GRUCell(4, reset_after=True), 0.5), X)
        logits = rc.matmul(st, rc.param("w", (4, 3)))
        return rc.mean(rc.logsumexp(logits) - rc.take(logits, y)), rc.softmax(logits)

    g = rc.trace(fn, {"X": rc.Input((None, None, 2)), "y": rc.Input((None,), "i32")}).graph
    assert rc.verify(g) is g


def _simple_scan_body():
    """A well-formed body: (t, carry h [2,3], x_t [2,3]) -> (h + x_t, h)."""
    t = ops.placeholder((), DType.i32, "t")
    h = ops.placeholder((2, 3), f32, "carry")
    x = ops.placeholder((2, 3), f32, "x")
    return t, h, x


def _bad(graph, pattern):
    with pytest.raises(VerifyError) as e:
        rc.verify(graph)
    assert re.search(pattern, str(e.value)), str(e.value)
    return str(e.value)


def test_rejects_wrong_recorded_shape():
    x = inp("X", (3, 5))
    bad = raw_node(Op.TANH, [x], {}, (3, 4), f32)
    msg = _bad(Graph([x], [bad]), r"^graph: tanh node records f32\[3,4\] but its rule gives "
                                  r"f32\[3,5\]$")
    assert "tanh" in msg


def test_rejects_wrong_recorded_dtype():
    x = inp("X", (3, 5))
    bad = raw_node(Op.EXP, [x], {}, (3, 5), DType.f64)
    _bad(Graph([x], [bad]), r"exp node records f64\[3,5\] but its rule gives f32\[3,5\]")


def test_rejects_ill_typed_node():
    a, b = inp("A", (3, 5)), inp("B", (4, 2))
    bad = raw_node(Op.MATMUL, [a, b], {}, (3, 2), f32)
    _bad(Graph([a, b], [bad]), r"graph: matmul node is ill-typed: matmul: inner dimensions "
                               r"differ: \[3,5\] @ \[4,2\] \(5 != 4\)")


def test_rejects_leaf_not_among_inputs():
    x, y = inp("X", (2, 3)), inp("Y", (2, 3))
    _bad(Graph([x], [ops.add(x, y)]),
         r"^graph: <input Y f32\[2,3\]> is used but is not an input of this graph "
         r"\(free variable\)$")


def test_rejects_param_not_among_inputs():
    x = inp("X", (2, 3))
    w = ops.make(Op.PARAM, name="w", shape=(3, 3), dtype=f32)
    _bad(Graph([x], [ops.matmul(x, w)]), r"<param w f32\[3,3\]> is used but is not an input")


def test_rejects_duplicate_input_names():
    a, b = inp("X", (2, 3)), inp("X", (2, 4))
    _bad(Graph([a, b], [a]), r"^graph: two inputs are named 'X'$")


def test_rejects_input_listed_twice():
    a = inp("X", (2, 3))
    _bad(Graph([a, a], [a]), r"^graph: input <input X f32\[2,3\]> is listed twice$")


def test_rejects_placeholder_as_top_level_input():
    p = ops.placeholder((2,), f32)
    _bad(Graph([p], [p]), r"graph: input <placeholder f32\[2\]> must be one of input, param")


def test_rejects_item_on_non_scan():
    x = inp("X", (2, 3))
    bad = raw_node(Op.ITEM, [x], {"index": 0}, (2, 3), f32)
    _bad(Graph([x], [bad]), r"^graph: item reads <input X f32\[2,3\]>, which has a single "
                            r"result$")


def test_rejects_free_variable_in_scan_body():
    t, h, x = _simple_scan_body()
    outer_w = inp("W", (2, 3))
    # the body uses the outer input W directly instead of taking it as an invariant
    body = Graph([t, h, x], [ops.add(ops.add(h, x), outer_w), h])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    res = ops.scan(body, [h0], [xs], [])
    _bad(Graph([h0, xs, outer_w], res),
         r"^scan body: <input W f32\[2,3\]> is used but is not an input of this graph "
         r"\(free variable\)$")


def test_rejects_placeholder_free_in_scan_body():
    t, h, x = _simple_scan_body()
    stray = ops.placeholder((2, 3), f32, "inv")
    body = Graph([t, h, x], [ops.mul(h, stray), x])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    _bad(Graph([h0, xs], ops.scan(body, [h0], [xs], [])),
         r"^scan body: <placeholder f32\[2,3\]> is used but is not an input")


def test_accepts_well_formed_raw_scan():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.add(h, x), h])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    g = Graph([h0, xs], ops.scan(body, [h0], [xs], []))
    assert rc.verify(g) is g
    import numpy as np

    out = rc.interpret(g, {"H0": np.ones((2, 3)), "XS": np.ones((5, 2, 3))})
    np.testing.assert_array_equal(out[0], np.full((2, 3), 6.0))
    np.testing.assert_array_equal(out[1][:, 0, 0], [1, 2, 3, 4, 5])


def _raw_scan(body, ins, types, **attrs):
    a = {"body": body, "n_carry": 1, "n_xs": 1, "reverse": False, "has_length": False}
    a.update(attrs)
    s = raw_node(Op.SCAN, ins, a, ("tuple", tuple(types)), None)
    return [raw_node(Op.ITEM, [s], {"index": k}, shp, dt) for k, (shp, dt) in enumerate(types)]


def test_rejects_scan_body_carry_mismatch():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.add(h, x), h])
    h0, xs = inp("H0", (2, 4)), inp("XS", (5, 2, 3))  # carry is [2,4] outside, [2,3] inside
    res = _raw_scan(body, [h0, xs], [((2, 4), f32), ((5, 2, 3), f32)])
    _bad(Graph([h0, xs], res), r"^graph: scan node is ill-typed: scan: carry 0 is f32\[2,4\] "
                               r"outside but the body expects f32\[2,3\]$")


def test_rejects_scan_body_arity_mismatch():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.add(h, x), h])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    extra = inp("W", (3,))
    res = _raw_scan(body, [h0, xs, extra], [((2, 3), f32), ((5, 2, 3), f32)])
    _bad(Graph([h0, xs, extra], res),
         r"scan node is ill-typed: scan: body takes 3 inputs \(step, carries, x_t, invariants\) "
         r"but the scan has 3 inputs")


def test_rejects_scan_body_changing_carry_type():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.concat([h, x], 1), h])  # carry leaves as [2,6]
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    res = _raw_scan(body, [h0, xs], [((2, 3), f32), ((5, 2, 3), f32)])
    _bad(Graph([h0, xs], res), r"scan: carry 0 enters the body as f32\[2,3\] but leaves it as "
                               r"f32\[2,6\]")


def test_rejects_scan_wrong_recorded_results():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.add(h, x), h])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    res = _raw_scan(body, [h0, xs], [((2, 3), f32), ((7, 2, 3), f32)])  # T is 5, not 7
    _bad(Graph([h0, xs], res), r"graph: scan node records None\[tuple,.*\] but its rule gives")


def test_rejects_scan_tuple_used_directly():
    t, h, x = _simple_scan_body()
    body = Graph([t, h, x], [ops.add(h, x), h])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    res = ops.scan(body, [h0], [xs], [])
    scan_node = res[0].inputs[0]
    _bad(Graph([h0, xs], [scan_node]), r"^graph: an output is a scan's result tuple; use item$")
    bad = raw_node(Op.TANH, [scan_node], {}, (2, 3), f32)
    _bad(Graph([h0, xs], [bad]), r"^graph: tanh uses a scan's result tuple directly; read it "
                                 r"through item$")


def test_rejects_malformed_body_inside_scan():
    t, h, x = _simple_scan_body()
    bad = raw_node(Op.ADD, [h, x], {}, (2, 9), f32)
    body = Graph([t, h, x], [h, bad])
    h0, xs = inp("H0", (2, 3)), inp("XS", (5, 2, 3))
    res = _raw_scan(body, [h0, xs], [((2, 3), f32), ((5, 2, 9), f32)])
    _bad(Graph([h0, xs], res), r"^scan body: add node records f32\[2,9\] but its rule gives "
                               r"f32\[2,3\]$")
