"""Seed workflows 1 and 2 (SPEC "reference workflows"): the hand-written two-step unroll, static_rnn
and dynamic_rnn give the same numbers as an independent NumPy computation; variable-length
batches zero the outputs past each length and keep the state of the last valid step."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.ir import Op

N_INPUTS, N_NEURONS, BATCH = 3, 5, 4


def _weights(rng, dtype=np.float32):
    Wx = rng.standard_normal((N_INPUTS, N_NEURONS)).astype(dtype)
    Wy = rng.standard_normal((N_NEURONS, N_NEURONS)).astype(dtype)
    b = rng.standard_normal((1, N_NEURONS)).astype(dtype)
    return Wx, Wy, b


def _data(rng, dtype=np.float32):
    # the book's mini-batch: instance 1 of X0 is [3, 4, 5], etc.
    X0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], dtype) / 10
    X1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], dtype) / 10
    return X0 + 0.1 * rng.standard_normal(X0.shape).astype(dtype), X1


def _numpy_two_steps(X0, X1, Wx, Wy, b):
    Y0 = np.tanh(X0 @ Wx + b)
    Y1 = np.tanh(Y0 @ Wy + X1 @ Wx + b)
    return Y0, Y1


def _manual_model(X0, X1):
    Wx = rc.param("Wx", (N_INPUTS, N_NEURONS), "random_normal")
    Wy = rc.param("Wy", (N_NEURONS, N_NEURONS), "random_normal")
    b = rc.param("b", (1, N_NEURONS), "zeros")
    Y0 = rc.tanh(rc.matmul(X0, Wx) + b)
    Y1 = rc.tanh(rc.matmul(Y0, Wy) + rc.matmul(X1, Wx) + b)
    return Y0, Y1


def _static_model(X0, X1):
    outs, state = rc.static_rnn(rc.BasicRNNCell(N_NEURONS), [X0, X1])
    return outs, state


def _dynamic_model(X):
    return rc.dynamic_rnn(rc.BasicRNNCell(N_NEURONS), X)


STEP_INPUTS = {"X0": rc.Input((None, N_INPUTS)), "X1": rc.Input((None, N_INPUTS))}


def _cell_params(Wx, Wy, b):
    return {"rnn/basic_rnn_cell/kernel": np.concatenate([Wx, Wy], axis=0),
            "rnn/basic_rnn_cell/bias": b.reshape(-1)}


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_workflow1_three_unrolls_agree_with_numpy(rng, dtype):
    npdt = np.float32 if dtype == "f32" else np.float64
    Wx, Wy, b = _weights(rng, npdt)
    X0, X1 = _data(rng, npdt)
    Y0_ref, Y1_ref = _numpy_two_steps(X0.astype(np.float64), X1.astype(np.float64),
                                      Wx.astype(np.float64), Wy.astype(np.float64),
                                      b.astype(np.float64))
    tol = 1e-6 if dtype == "f32" else 1e-13

    manual = rc.Model(_manual_model, STEP_INPUTS, dtype=dtype)
    rc.verify(manual.graph)
    assert sorted(manual.param_specs) == ["Wx", "Wy", "b"]
    Y0, Y1 = manual({"Wx": Wx, "Wy": Wy, "b": b}, X0=X0, X1=X1)
    assert Y0.dtype == npdt and Y0.shape == (BATCH, N_NEURONS)
    np.testing.assert_allclose(Y0, Y0_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(Y1, Y1_ref, rtol=0, atol=tol)

    p = _cell_params(Wx, Wy, b)
    static = rc.Model(_static_model, STEP_INPUTS, dtype=dtype)
    rc.verify(static.graph)
    assert sorted(static.param_specs) == sorted(p)
    (S0, S1), S_state = static(p, X0=X0, X1=X1)
    np.testing.assert_allclose(S0, Y0_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(S1, Y1_ref, rtol=0, atol=tol)
    np.testing.assert_array_equal(S_state, S1)

    dynamic = rc.Model(_dynamic_model, {"X": rc.Input((None, None, N_INPUTS))}, dtype=dtype)
    rc.verify(dynamic.graph)
    out, state = dynamic(p, X=np.stack([X0, X1], axis=1))
    assert out.shape == (BATCH, 2, N_NEURONS) and out.dtype == npdt
    np.testing.assert_allclose(out[:, 0], Y0_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(out[:, 1], Y1_ref, rtol=0, atol=tol)
    np.testing.assert_array_equal(state, out[:, 1])
    # identical numbers across the three unrolls (same arithmetic, same order up to rounding)
    np.testing.assert_allclose(out[:, 1], Y1, rtol=0, atol=4 * np.finfo(npdt).eps)
    np.testing.assert_allclose(S1, Y1, rtol=0, atol=4 * np.finfo(npdt).eps)


def test_workflow1_graph_structure():
    static = rc.Model(_static_model, STEP_INPUTS)
    dynamic = rc.Model(_dynamic_model, {"X": rc.Input((None, None, N_INPUTS))})
    n_static = sum(n.op is Op.TANH for n in static.graph.all_nodes())
    scans = [n for n in dynamic.graph.nodes if n.op is Op.SCAN]
    assert n_static == 2  # static unroll: one cell copy per step
    assert len(scans) == 1  # dynamic unroll: one loop whose body holds the cell once
    body = scans[0].attr("body")
    assert sum(n.op is Op.TANH for n in body.nodes) == 1
    assert sum(n.op is Op.MATMUL for n in body.nodes) == 1


SEQ = np.array([2, 1, 2, 2], np.int32)


def _varlen_dynamic(X, L):
    return rc.dynamic_rnn(rc.BasicRNNCell(N_NEURONS), X, sequence_length=L)


def _varlen_static(X0, X1, L):
    return rc.static_rnn(rc.BasicRNNCell(N_NEURONS), [X0, X1], sequence_length=L)


@pytest.mark.parametrize("seq", [[2, 1, 2, 2], [0, 2, 1, 2], [1, 1, 1, 1]],
                         ids=["book", "with_zero", "all_one"])
def test_workflow2_variable_length(rng, seq):
    from reference_cells import rnn_ref

    seq = np.array(seq, np.int32)
    Wx, Wy, b = _weights(rng)
    X0, X1 = _data(rng)
    p = _cell_params(Wx, Wy, b)
    X = np.stack([X0, X1], axis=1)
    ref_out, ref_state = rnn_ref(X, p, seq_len=seq)

    dyn = rc.Model(_varlen_dynamic, {"X": rc.Input((None, None, N_INPUTS)),
                                     "L": rc.Input((None,), "i32")})
    rc.verify(dyn.graph)
    out, state = dyn(p, X=X, L=seq)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(state, ref_state, rtol=0, atol=1e-6)
    for k, n in enumerate(seq):
        assert np.all(out[k, n:] == 0.0), f"instance {k}: outputs past length {n} must be 0"
        last = out[k, n - 1] if n > 0 else np.zeros(N_NEURONS, np.float32)
        np.testing.assert_array_equal(state[k], last)

    st = rc.Model(_varlen_static, {**STEP_INPUTS, "L": rc.Input((None,), "i32")})
    rc.verify(st.graph)
    (S0, S1), S_state = st(p, X0=X0, X1=X1, L=seq)
    np.testing.assert_allclose(np.stack([S0, S1], 1), out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(S_state, state, rtol=0, atol=1e-6)


def test_workflow2_book_numbers(rng):
    """Second instance of length 1: its step-2 output is zero and its state is its step-1 output."""
    Wx, Wy, b = _weights(rng)
    X0, X1 = _data(rng)
    p = _cell_params(Wx, Wy, b)
    dyn = rc.Model(_varlen_dynamic, {"X": rc.Input((None, None, N_INPUTS)),
                                     "L": rc.Input((None,), "i32")})
    out, state = dyn(p, X=np.stack([X0, X1], 1), L=SEQ)
    Y0, Y1 = _numpy_two_steps(X0, X1, Wx, Wy, b)
    np.testing.assert_allclose(out[:, 0], Y0, atol=1e-6)
    np.testing.assert_allclose(out[[0, 2, 3], 1], Y1[[0, 2, 3]], atol=1e-6)
    assert np.all(out[1, 1] == 0)
    np.testing.assert_allclose(state[1], Y0[1], atol=1e-6)
    np.testing.assert_allclose(state[[0, 2, 3]], Y1[[0, 2, 3]], atol=1e-6)


def test_steps_past_longest_sequence_are_skipped(rng):
    """The scan's trip count is max(sequence_length): later steps are zero outputs, and the
    final state equals a run on the truncated input."""
    Wx, Wy, b = _weights(rng)
    p = _cell_params(Wx, Wy, b)
    X = rng.standard_normal((BATCH, 6, N_INPUTS)).astype(np.float32)
    L = np.array([3, 1, 2, 3], np.int32)
    dyn = rc.Model(_varlen_dynamic, {"X": rc.Input((None, None, N_INPUTS)),
                                     "L": rc.Input((None,), "i32")})
    out, state = dyn(p, X=X, L=L)
    out3, state3 = dyn(p, X=X[:, :3], L=L)
    assert np.all(out[:, 3:] == 0)
    np.testing.assert_array_equal(out[:, :3], out3)
    np.testing.assert_array_equal(state, state3)


def test_time_major_matches_batch_major(rng):
    X = rng.standard_normal((BATCH, 5, N_INPUTS)).astype(np.float32)

    def tm(X):
        return rc.dynamic_rnn(rc.BasicLSTMCell(N_NEURONS), X, time_major=True)

    def bm(X):
        return rc.dynamic_rnn(rc.BasicLSTMCell(N_NEURONS), X)

    m_tm = rc.Model(tm, {"X": rc.Input(("T", "B", N_INPUTS))})
    m_bm = rc.Model(bm, {"X": rc.Input((None, None, N_INPUTS))})
    p = m_bm.init(3)
    out_tm, st_tm = m_tm(p, X=X.transpose(1, 0, 2))
    out_bm, st_bm = m_bm(p, X=X)
    np.testing.assert_array_equal(out_tm.transpose(1, 0, 2), out_bm)
    np.testing.assert_array_equal(st_tm.h, st_bm.h)


def test_initial_state_as_input(rng):
    from reference_cells import lstm_ref

    def model(X, c0, h0):
        return rc.dynamic_rnn(rc.BasicLSTMCell(N_NEURONS), X,
                              initial_state=rc.LSTMStateTuple(c0, h0))

    m = rc.Model(model, {"X": rc.Input((None, None, N_INPUTS)),
                         "c0": rc.Input((None, N_NEURONS)), "h0": rc.Input((None, N_NEURONS))})
    rc.verify(m.graph)
    p = m.init(1)
    X = rng.standard_normal((BATCH, 4, N_INPUTS)).astype(np.float32)
    c0 = rng.standard_normal((BATCH, N_NEURONS)).astype(np.float32)
    h0 = rng.standard_normal((BATCH, N_NEURONS)).astype(np.float32)
    out, st = m(p, X=X, c0=c0, h0=h0)
    ref_out, (rc_, rh) = lstm_ref(X, p, c0=c0, h0=h0)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(st.c, rc_, atol=1e-5)
    np.testing.assert_allclose(st.h, rh, atol=1e-5)


def test_general_scan_with_step_index():
    """rnncomp.scan with no xs: a running sum of the step index, like jax.lax.scan."""

    def model(X):
        def f(c, _):
            t = rc.cast(rc.step_index(), "f32")
            return c + t, c * 2.0

        return rc.scan(f, X, length=4)

    m = rc.Model(model, {"X": rc.Input((2,))})
    rc.verify(m.graph)
    carry, ys = m({}, X=np.array([1.0, 10.0], np.float32))
    np.testing.assert_array_equal(carry, [7.0, 16.0])  # + 0 + 1 + 2 + 3
    np.testing.assert_array_equal(ys, [[2, 20], [2, 20], [4, 22], [8, 26]])


# ---------------------------------------------------------------------------------------------
# Length-aware execution: the batch is sorted by length and the scan carries the `rows` hint
# ---------------------------------------------------------------------------------------------
def _hinted(g) -> list:
    from rnncomp.ir import rows
    return [n for n in g.all_nodes() if n.op is Op.SCAN and rows.rows_index(n) is not None]


def test_sequence_length_sorts_the_batch_and_hints_the_scan(rng):
    def fn(X, L):
        return rc.dynamic_rnn(rc.GRUCell(3), X, sequence_length=L)[0]

    g = rc.Model(fn, {"X": rc.Input((None, 4, 2)), "L": rc.Input((None,), "i32")}).graph
    assert [n.op for n in g.nodes].count(Op.ARGSORT) == 1 and len(_hinted(g)) == 1
    assert "rows=" in str(g)

    def literal(lengths):
        def f(X):
            return rc.dynamic_rnn(rc.GRUCell(3), X, sequence_length=lengths)[0]
        return rc.Model(f, {"X": rc.Input((3, 4, 2))}).graph

    done = literal([4, 2, 2])  # already sorted: no sort, still hinted
    assert Op.ARGSORT not in [n.op for n in done.nodes] and len(_hinted(done)) == 1
    assert Op.ARGSORT in [n.op for n in literal([2, 4, 2]).nodes]


def test_a_cell_mixing_rows_keeps_the_masked_scan(rng):
    """A cell that reads other rows (here: the batch mean of its state) cannot skip finished
    rows: no sort, no hint, and the results are those of length_aware=False."""
    def cell_fn(x, h):
        W = rc.param("W", (2 + 3, 3), "glorot_uniform")
        z = rc.tanh(rc.matmul(rc.concat([x, h], axis=1), W))
        new = z - rc.mean(z, axis=0, keepdims=True)
        return new, new

    def make(aware):
        def fn(X, L):
            cell = rc.FunctionCell(cell_fn, 3, output_size=3, name="mix")
            return rc.dynamic_rnn(cell, X, sequence_length=L, length_aware=aware)[0]
        return rc.Model(fn, {"X": rc.Input((None, 4, 2)), "L": rc.Input((None,), "i32")})

    m, ref = make(True), make(False)
    assert not _hinted(m.graph) and Op.ARGSORT not in [n.op for n in m.graph.nodes]
    p = m.init(seed=0)
    X, L = rng.standard_normal((3, 4, 2)).astype(np.float32), np.array([1, 4, 2], np.int32)
    np.testing.assert_array_equal(m(p, X=X, L=L, backend="interp"),
                                  ref(p, X=X, L=L, backend="interp"))
