"""Variable-length batches on the CPU backend: length-aware execution (the `rows` hint).

dynamic_rnn with sequence_length sorts the batch by length and hints the scan; the compiled
kernel then computes only the rows still running at each step, and the ragged GEMMs run over
the valid (t, b) rows only. The results must be those of the masked whole-batch execution
(length_aware=False) run by the reference interpreter: outputs (zero past each length), final
states (at each row's last valid step) and every gradient.

One compiled kernel (forward outputs + gradients, T and B symbolic) runs every length pattern:
sorted, unsorted, lengths 0 and T, all full, all empty, and two values of T.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.ir import Op, rows
from rnncomp.runtime.compiler import compile_graph
from rnncomp.runtime.grad import model_grad_graph
from rnncomp.runtime.interp import interpret
from rnncomp.transforms.passes import optimize

I, H = 3, 4


def _model(aware: bool) -> rc.Model:
    """An LSTM, a GRU (reset after, as cuDNN) and TF1's GRU on one batch: one compiled graph.
    The GRUs' input projections are sliced per gate (and the TF1 GRU's cotangents summed)
    before the loop: the ragged GEMMs must see through that."""
    def fn(X, R, L):
        out, st = rc.dynamic_rnn(rc.BasicLSTMCell(H), X, sequence_length=L, length_aware=aware,
                                 scope="lstm")
        go, gh = rc.dynamic_rnn(rc.GRUCell(H, reset_after=True), X, sequence_length=L,
                                length_aware=aware, scope="gru")
        to, th = rc.dynamic_rnn(rc.GRUCell(H), X, sequence_length=L, length_aware=aware,
                                scope="gru_tf")
        loss = rc.sum(out * R) + rc.sum(st.h * st.c) + rc.sum(go * R * 0.5) + \
            rc.sum(gh * gh) + rc.sum(to * R * R) + rc.sum(th)
        return loss, out, st.h, st.c, go, gh, to, th

    return rc.Model(fn, {"X": rc.Input((None, None, I)), "R": rc.Input((None, None, H)),
                         "L": rc.Input((None,), "i32")}, dtype="f64")


@pytest.fixture(scope="module")
def kernels():
    m, ref = _model(True), _model(False)
    wrt = list(m.param_specs) + ["X"]
    g = model_grad_graph(m, wrt=wrt, preoptimize=True)
    return m, ref, wrt, g, compile_graph(g, "cpu")


PATTERNS = [
    ("unsorted with 0 and T", 6, [3, 0, 6, 1, 6, 2]),
    ("sorted", 6, [6, 5, 5, 3, 1, 0]),
    ("ascending", 6, [0, 1, 2, 4, 5, 6]),
    ("all full", 6, [6, 6, 6, 6, 6, 6]),
    ("all empty", 6, [0, 0, 0, 0, 0, 0]),
    ("one long, longer T", 9, [9, 2, 2, 2, 2]),
    ("short batch in long T", 9, [3, 1, 2]),
    ("one row", 4, [2]),
]


@pytest.mark.parametrize("name,T,lengths", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_compiled_equals_masked_interpreter(kernels, name, T, lengths):
    m, ref, wrt, g, c = kernels
    rng = np.random.default_rng(len(lengths) * 100 + T)
    B = len(lengths)
    L = np.array(lengths, np.int32)
    p = m.init(seed=1)
    inputs = {"X": rng.standard_normal((B, T, I)), "R": rng.standard_normal((B, T, H)), "L": L}
    got = c(*m.arguments(p, inputs))
    g_ref = model_grad_graph(ref, wrt=wrt)
    want = interpret(g_ref, ref.arguments(p, inputs))
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"result {k} ({name})")
    for out, h in ((got[1], got[2]), (got[4], got[5]), (got[6], got[7])):
        for b, n in enumerate(lengths):  # TF1: zeros past each length, state at the last step
            assert not np.any(out[b, n:]), name
            if n:
                np.testing.assert_allclose(h[b], out[b, n - 1], rtol=1e-12)
            else:
                assert not np.any(h[b])


def test_kernel_runs_active_rows_and_ragged_gemms(kernels):
    m, ref, wrt, g, c = kernels
    opt = optimize(g).graph
    scans = [n for n in opt.nodes if n.op is Op.SCAN]
    assert len(scans) == 6 and all(rows.rows_index(s) is not None for s in scans)
    text = str(opt)
    assert text.count("rows=") == 6
    # every product over the [T, B] rows is ragged: the input projection (the three cells'
    # share one GEMM after gate fusion), dX and the input-weight gradients (the GRUs' sliced
    # projections and concatenated cotangents too)
    assert text.count("= ragged_matmul") == 2 and text.count("= ragged_tensordot") >= 6, text
    assert not [n for n in opt.nodes if n.op in (Op.MATMUL, Op.TENSORDOT) and
                n.inputs[0].ndim == 3], text
    src = open(c.path).read()
    assert src.count("rt.active_rows(") == 6  # forward and reverse loops
    assert "rt.ragged_matmul(" in src and "rt.ragged_tensordot(" in src
    assert "d_T * d_B" not in src  # no dense GEMM over every padded step
    assert "if True else" in src  # validity masks are not evaluated on active rows


def test_length_aware_false_keeps_the_masked_scan():
    g = _model(False).graph
    assert not any(n.op in (Op.ARGSORT, Op.PERMUTE) for n in g.nodes)
    assert all(rows.rows_index(n) is None for n in g.nodes if n.op is Op.SCAN)


def test_recompute_gradients_with_lengths(kernels):
    """BPTT with recompute (the reverse loop accumulates weight cotangents in carries, so it
    is not hinted, and its forward loses the hint too): still exact."""
    m, ref, wrt, g, c = kernels
    rng = np.random.default_rng(7)
    L = np.array([2, 5, 0, 3], np.int32)
    inputs = {"X": rng.standard_normal((4, 5, I)), "R": rng.standard_normal((4, 5, H)), "L": L}
    p = m.init(seed=2)
    _, got = m.value_and_grad(p, wrt=wrt, backend="cpu", recompute=True, **inputs)
    _, want = ref.value_and_grad(p, wrt=wrt, backend="interp", **inputs)
    for k in wrt:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_bad_length_aware(bad):
    def fn(X, L):
        return rc.dynamic_rnn(rc.BasicRNNCell(2), X, sequence_length=L, length_aware=bad)[0]

    with pytest.raises(ValueError, match=r"length_aware must be True or False, received"):
        rc.Model(fn, {"X": rc.Input((None, 3, 2)), "L": rc.Input((None,), "i32")})
