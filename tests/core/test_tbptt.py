"""Truncated BPTT: k = T is full BPTT; k < T equals chunks run by hand with the state carried
as a value (so the gradient stops at chunk boundaries), with gradients summed."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import losses, optim
from rnncomp.runtime.grad import tbptt_value_and_grad
from rnncomp.train import Trainer

B, T, I, H = 3, 7, 2, 4
STATE = {"c0": "c", "h0": "h"}


def _model(with_len=False, mean=False):
    def fn(X, Y, c0, h0, L=None):
        cell = rc.OutputProjectionWrapper(rc.BasicLSTMCell(H), 1)
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L,
                                 initial_state=rc.LSTMStateTuple(c0, h0))
        loss = losses.mse(out, Y) if mean else rc.sum(rc.square(out - Y))
        return {"loss": loss, "c": st.c, "h": st.h}

    specs = {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, 1)),
             "c0": rc.Input((None, H)), "h0": rc.Input((None, H))}
    if with_len:
        specs["L"] = rc.Input((None,), "i32")
    return rc.Model(fn, specs, dtype="f64")


def _data(rng):
    return {"X": rng.standard_normal((B, T, I)), "Y": rng.standard_normal((B, T, 1))}


def _zeros():
    return {"c0": np.zeros((B, H)), "h0": np.zeros((B, H))}


def test_k_equal_T_is_full_bptt(rng):
    m = _model()
    p = m.init(3)
    d = _data(rng)
    full_out, full = m.value_and_grad(p, output="loss", **d, **_zeros())
    for k in (T, T + 5):
        loss, grads, final = tbptt_value_and_grad(m, p, d, k=k, state=STATE,
                                                  seq_inputs=["X", "Y"], loss_output="loss")
        assert abs(loss - full_out["loss"]) <= 1e-10 * abs(full_out["loss"])
        for name in m.param_specs:
            np.testing.assert_allclose(grads[name], full[name], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(final["c0"], full_out["c"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_k_less_than_T_equals_hand_chunked(rng, k):
    m = _model()
    p = m.init(4)
    d = _data(rng)
    loss, grads, final = tbptt_value_and_grad(m, p, d, k=k, state=STATE,
                                              seq_inputs=["X", "Y"], loss_output="loss")
    # by hand: separate model calls, the state fed in as a value, gradients summed
    st = _zeros()
    want = {n: np.zeros_like(v) for n, v in p.items()}
    want_loss = 0.0
    for s in range(0, T, k):
        chunk = {"X": d["X"][:, s:s + k], "Y": d["Y"][:, s:s + k]}
        out, g = m.value_and_grad(p, output="loss", **chunk, **st)
        want_loss += float(out["loss"])
        for n in want:
            want[n] += g[n]
        st = {"c0": out["c"], "h0": out["h"]}
    assert abs(loss - want_loss) <= 1e-12 * abs(want_loss)
    for n in want:
        np.testing.assert_allclose(grads[n], want[n], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final["h0"], st["h0"], rtol=1e-12)
    # the forward pass is exact (same loss as one run over T steps) but the gradient is
    # truncated: it differs from full BPTT
    full_out, full = m.value_and_grad(p, output="loss", **d, **_zeros())
    assert abs(loss - full_out["loss"]) <= 1e-10 * abs(full_out["loss"])
    kern = "rnn/output_projection_wrapper/basic_lstm_cell/kernel"
    assert not np.allclose(grads[kern], full[kern], rtol=1e-6)


def test_mean_reduction_and_sequence_length(rng):
    m = _model(with_len=True, mean=True)
    p = m.init(5)
    d = _data(rng)
    d["L"] = np.array([T, 2, 5], np.int32)
    full_out, full = m.value_and_grad(p, output="loss", **d, **_zeros())
    loss, grads, final = tbptt_value_and_grad(m, p, d, k=T, state=STATE, seq_inputs=["X", "Y"],
                                              loss_output="loss", length_input="L",
                                              reduce="mean")
    for n in m.param_specs:
        np.testing.assert_allclose(grads[n], full[n], rtol=1e-10, atol=1e-12)
    # chunks of 3 with lengths clipped per chunk: the loss weighted by chunk share (7 = 3+3+1
    # steps) is the full per-step mean and the final state is that of each last valid step
    loss3, _, final3 = tbptt_value_and_grad(m, p, d, k=3, state=STATE, seq_inputs=["X", "Y"],
                                            loss_output="loss", length_input="L",
                                            reduce="mean")
    assert abs(loss3 - full_out["loss"]) <= 1e-10 * abs(full_out["loss"])
    np.testing.assert_allclose(final3["h0"], full_out["h"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final3["c0"], full_out["c"], rtol=1e-10, atol=1e-12)


def test_trainer_tbptt_step(rng):
    m = _model()
    p = m.init(6)
    d = _data(rng)
    tr = Trainer(m, "loss", optim.SGD(0.01))
    o = tr.optimizer.init(p)
    p1, o1, loss, norm, final = tr.tbptt_step(p, o, d, k=3, state=STATE, seq_inputs=["X", "Y"])
    l2, g, _ = tbptt_value_and_grad(m, p, d, k=3, state=STATE, seq_inputs=["X", "Y"],
                                    loss_output="loss")
    assert loss == l2 and norm == pytest.approx(optim.global_norm(g))
    for n in p:
        np.testing.assert_allclose(p1[n], p[n] - 0.01 * g[n], rtol=1e-12)
    # the classic schedule: one update per chunk, later chunks see updated parameters
    p2, _, _, _, final2 = tr.tbptt_step(p, o, d, k=3, state=STATE, seq_inputs=["X", "Y"],
                                        update_every_chunk=True)
    assert all(np.isfinite(v).all() for v in p2.values())
    assert not np.allclose(p2[next(iter(p))], p1[next(iter(p))])
    assert final2["c0"].shape == (B, H)


def test_tbptt_errors(rng):
    m = _model()
    d = _data(rng)
    with pytest.raises(ValueError, match="positive"):
        tbptt_value_and_grad(m, m.init(0), d, k=0, state=STATE, seq_inputs=["X", "Y"])
    with pytest.raises(KeyError, match="not inputs"):
        tbptt_value_and_grad(m, m.init(0), d, k=2, state={"s": "c"}, seq_inputs=["X"])
