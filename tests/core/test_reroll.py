"""The reroll pass (rnncomp/transforms/passes.py): a static unroll of T identical steps becomes
one scan, checked step by step; the traced graph still shows T copies. Rerolled == traced ==
dynamic_rnn, forward and gradients; unrolls that are not T copies of one step stay unrolled."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.ir import Op
from rnncomp.transforms.passes import reroll

T, I, H = 5, 3, 4
RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, T, I)).astype(np.float64)
L = np.array([5, 2, 0], np.int32)


def _xs(X):
    return [rc.reshape(rc.slice(X, t, t + 1, axis=1), (X.shape[0], I)) for t in range(T)]


def cells():
    return rc.MultiRNNCell([rc.GRUCell(H), rc.BasicLSTMCell(H), rc.LSTMCell(H, use_peepholes=True)])


def static_model(with_len=True, extra=None):
    def fn(X, L):
        outs, st = rc.static_rnn(cells(), _xs(X), sequence_length=L if with_len else None)
        res = {"out": rc.concat([rc.expand_dims(o, 1) for o in outs], axis=1), "state": st}
        if extra:
            res.update(extra(outs, st))
        return res
    return rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")},
                    dtype="f64")


def dynamic_model(with_len=True):
    def fn(X, L):
        out, st = rc.dynamic_rnn(cells(), X, sequence_length=L if with_len else None)
        return {"out": out, "state": st}
    return rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")},
                    dtype="f64")


def n_scans(g):
    return sum(n.op is Op.SCAN for n in g.nodes)


def run(g, p):
    return rc.interpret(g, dict(X=X, L=L, **p))


@pytest.mark.parametrize("with_len", [True, False])
def test_rerolled_equals_traced_and_dynamic(with_len):
    m = static_model(with_len)
    g = reroll(m.graph)
    assert n_scans(m.graph) == 0 and n_scans(g) == 1
    assert len(g.nodes) < len(m.graph.nodes) / 2
    p = m.init(0)
    for a, b in zip(run(m.graph, p), run(g, p), strict=True):
        np.testing.assert_array_equal(a, b)
    d = dynamic_model(with_len)
    assert set(d.init(0)) == set(p)
    for a, b in zip(run(d.graph, p), run(g, p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_gradients_through_the_rerolled_scan():
    def loss(outs, st):
        return {"loss": rc.sum(rc.square(rc.concat(outs, axis=1)))}

    m = static_model(True, loss)
    p = m.init(0)
    ref = m.value_and_grad(p, output="loss", backend="interp", X=X, L=L)
    # the compiled path differentiates the pre-optimized (rerolled) forward: one reverse scan
    from rnncomp.runtime.grad import model_grad_graph

    bwd = model_grad_graph(m, output="loss", preoptimize=True)
    assert n_scans(bwd) == 2  # the forward scan and its transpose, not T copies
    got = m.value_and_grad(p, output="loss", backend="cpu", X=X, L=L)
    for k in ref[1]:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_intermediate_states_used_outside_are_stacked():
    """A user who reads the state after step 2 still gets it (as a slice of a stacked output)."""
    m = static_model(False, lambda outs, st: {"mid": outs[2] * 2.0})
    g = reroll(m.graph)
    assert n_scans(g) == 1
    p = m.init(0)
    for a, b in zip(run(m.graph, p), run(g, p), strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_that_differ_stay_unrolled():
    """A 'static unroll' whose steps are not one function (a different cell per step) keeps
    its copies: the pass checks every step, it does not trust the hint."""
    def fn(X, L):
        xs = _xs(X)
        outs = []
        h = rc.zeros((X.shape[0], H), "f64")
        for t, x in enumerate(xs):
            w = rc.param(f"w{t}", (I + H, H))  # a new weight per step
            h = rc.tanh(rc.matmul(rc.concat([x, h], axis=1), w))
            outs.append(h)
        from rnncomp.frontend.trace import current
        from rnncomp.ir.graph import Unroll
        states = [(rc.zeros((X.shape[0], H), "f64"),)] + [(o,) for o in outs]
        current().unrolls.append(Unroll(tuple(xs), tuple(states), tuple(outs)))  # a false hint
        return outs[-1]

    m = rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")}, dtype="f64")
    g = reroll(m.graph)
    assert n_scans(g) == 0
    p = m.init(0)
    np.testing.assert_array_equal(run(m.graph, p)[0], run(g, p)[0])


@pytest.mark.parametrize("with_len", [False, True])
def test_two_stacked_static_unrolls(with_len):
    """With sequence_length both layers compute the same step masks (t < L): one node, shared
    by the two unrolls, which must not stop the first one from becoming a scan."""
    def fn(X, L):
        L = L if with_len else None
        o1, _ = rc.static_rnn(rc.GRUCell(H), _xs(X), sequence_length=L, scope="a")
        o2, st = rc.static_rnn(rc.BasicRNNCell(H), o1, sequence_length=L, scope="b")
        return rc.concat(o2, axis=1), st

    m = rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")}, dtype="f64")
    g = reroll(m.graph)
    assert n_scans(g) == 2
    p = m.init(0)
    for a, b in zip(run(m.graph, p), run(g, p), strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_unrolls_side_by_side_over_the_same_inputs():
    """Two cells over the same inputs and lengths (values shared by both unrolls: the input
    slices, the step masks) both become scans."""
    def fn(X, L):
        oa, sa = rc.static_rnn(rc.BasicRNNCell(H), _xs(X), sequence_length=L, scope="a")
        ob, sb = rc.static_rnn(rc.BasicRNNCell(H, activation="relu"), _xs(X),
                               sequence_length=L, scope="b")
        return rc.concat(oa + ob, axis=1), sa, sb

    m = rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")}, dtype="f64")
    g = reroll(m.graph)
    assert n_scans(g) == 2
    p = m.init(0)
    for a, b in zip(run(m.graph, p), run(g, p), strict=True):
        np.testing.assert_array_equal(a, b)


def test_traced_graph_still_shows_the_copies():
    m = static_model(False)
    assert n_scans(m.graph) == 0
    assert sum(n.op is Op.MATMUL for n in m.graph.nodes) >= 3 * T


@pytest.mark.parametrize("with_len", [False, True])
def test_values_computed_from_the_final_state_do_not_block_the_reroll(with_len):
    """A loss on tanh(final c) of an LSTM: without sequence_length that node IS the last step's
    tanh(c_T) (interned; h_T = o * tanh(c_T) uses it), an inner value used outside the unroll.
    It depends on the unroll only through the final state, so it is rebuilt from the scan's
    final carry and the unroll still becomes one scan."""
    def extra(outs, st):
        flat = [s for layer in st for s in (layer if isinstance(layer, tuple) else (layer,))]
        return {"loss": sum(rc.sum(rc.tanh(s)) for s in flat) + rc.sum(outs[-1])}

    m = static_model(with_len, extra)
    g = reroll(m.graph)
    assert n_scans(g) == 1
    p = m.init(0)
    for a, b in zip(run(m.graph, p), run(g, p), strict=True):
        np.testing.assert_array_equal(a, b)
    from rnncomp.runtime.grad import model_grad_graph

    assert n_scans(model_grad_graph(m, output="loss", preoptimize=True)) == 2


def test_static_dropout_in_training_mode_rerolls():
    """static_rnn's dropout draws are keyed by (site, step t) as in dynamic_rnn: the copies are
    one step function, the rerolled graph draws the same masks, and static == dynamic."""
    def make(static):
        def fn(X):
            cell = rc.DropoutWrapper(rc.BasicLSTMCell(H), 0.6, 0.7, 0.8)
            if static:
                outs, st = rc.static_rnn(cell, _xs(X))
                return rc.stack(outs, axis=1), st
            return rc.dynamic_rnn(cell, X)
        return rc.Model(fn, {"X": rc.Input((None, T, I))}, dtype="f64")

    m, d = make(True), make(False)
    g = reroll(m.graph)
    assert n_scans(m.graph) == 0 and n_scans(g) == 1
    p = m.init(0)
    kw = dict(X=X, **p, **{"@training": True, "@seed": 5, "@example_offset": 0})
    a, b = rc.interpret(m.graph, kw), rc.interpret(g, kw)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    out_d, st_d = d(p, X=X, training=True, seed=5)
    out_s, st_s = m(p, X=X, training=True, seed=5)
    assert np.any(out_s == 0)  # dropout did drop
    np.testing.assert_allclose(out_s, out_d, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(st_s.c, st_d.c, rtol=1e-12, atol=1e-14)


def test_step_index_in_a_static_unroll_is_the_copy_number():
    """rc.step_index() in copy t of static_rnn is t, as in dynamic_rnn (it was 0 in every copy,
    a silent difference between the two unrolls of one cell)."""
    def cell(x, h):
        h2 = rc.tanh(rc.slice(x, 0, 1, axis=1) + h) + rc.cast(rc.step_index(), "f64")
        return h2, h2

    def make(static):
        def fn(X):
            c = rc.FunctionCell(cell, state_size=1, output_size=1)
            if static:
                outs, st = rc.static_rnn(c, _xs(X))
                return rc.stack(outs, axis=1), st
            return rc.dynamic_rnn(c, X)
        return rc.Model(fn, {"X": rc.Input((None, T, I))}, dtype="f64")

    m = make(True)
    assert n_scans(reroll(m.graph)) == 1
    out_s, st_s = m({}, X=X)
    out_d, st_d = make(False)({}, X=X)
    np.testing.assert_allclose(out_s, out_d, rtol=1e-12)
    np.testing.assert_allclose(st_s, st_d, rtol=1e-12)
    assert out_s[0, -1, 0] > T - 2  # the last step added T - 1
