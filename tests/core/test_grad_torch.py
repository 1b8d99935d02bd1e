"""BPTT gradients equal PyTorch autograd's for LSTM, GRU (reset_after=True) and tanh RNN.

Weights are shared through rnncomp.tools.convert.from_torch_*; torch's parameter gradients are mapped
to the TF1 layout with the same function (a linear map of the arrays: passing torch's gradient
arrays with forget_bias=0 and the bias_hh gradients that from_torch_* adds to bias_ih set to
zero). torch's two bias gradients are each equal to the TF bias gradient (they enter only
through their sum), which is asserted too.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rel_err

import rnncomp as rc
from rnncomp import convert

torch = pytest.importorskip("torch")

B, T, I, H = 3, 5, 4, 6


def _model(kind: str, dtype: str, with_len: bool):
    def fn(X, R, Q, h0, c0=None, L=None):
        if kind == "lstm":
            cell = rc.BasicLSTMCell(H)
            init = rc.LSTMStateTuple(c0, h0)
        elif kind == "gru":
            cell = rc.GRUCell(H, reset_after=True)
            init = h0
        else:
            cell = rc.BasicRNNCell(H)
            init = h0
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L, initial_state=init)
        h = st.h if kind == "lstm" else st
        loss = rc.sum(out * R) + rc.sum(rc.tanh(h) * Q)
        if kind == "lstm":
            loss = loss + rc.sum(st.c * Q)
        return loss

    specs = {"X": rc.Input((None, T, I)), "R": rc.Input((None, T, H)), "Q": rc.Input((None, H)),
             "h0": rc.Input((None, H))}
    if kind == "lstm":
        specs["c0"] = rc.Input((None, H))
    if with_len:
        specs["L"] = rc.Input((None,), "i32")
    return rc.Model(fn, specs, dtype=dtype)


def _torch_run(kind, mod, X, R, Q, h0, c0, lengths):
    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    c0t = torch.tensor(c0[None], requires_grad=True) if kind == "lstm" else None
    inp = Xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths), batch_first=True,
                                                      enforce_sorted=False)
    out, st = mod(inp, (h0t, c0t) if kind == "lstm" else h0t)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    hn = st[0][0] if kind == "lstm" else st[0]
    loss = (out * torch.tensor(R)).sum() + (torch.tanh(hn) * torch.tensor(Q)).sum()
    if kind == "lstm":
        loss = loss + (st[1][0] * torch.tensor(Q)).sum()
    loss.backward()
    grads = {k: v.grad.numpy().copy() for k, v in mod.named_parameters()}
    ins = {"X": Xt.grad.numpy(), "h0": h0t.grad.numpy()[0]}
    if kind == "lstm":
        ins["c0"] = c0t.grad.numpy()[0]
    return float(loss.detach()), grads, ins


def _tf_grads(kind, tg):
    """Map torch parameter gradients to the TF1 layout with the conversion functions."""
    g = dict(tg)
    if kind == "lstm":
        np.testing.assert_allclose(g["bias_ih_l0"], g["bias_hh_l0"], rtol=1e-5, atol=1e-6)
        g["bias_hh_l0"] = np.zeros_like(g["bias_hh_l0"])
        return convert.from_torch_lstm(g, forget_bias=0.0)
    if kind == "gru":
        # r, z biases are summed by the conversion; the n biases are separate parameters
        np.testing.assert_allclose(g["bias_ih_l0"][:2 * H], g["bias_hh_l0"][:2 * H],
                                   rtol=1e-5, atol=1e-6)
        g["bias_hh_l0"] = g["bias_hh_l0"].copy()
        g["bias_hh_l0"][:2 * H] = 0
        return convert.from_torch_gru(g)
    np.testing.assert_allclose(g["bias_ih_l0"], g["bias_hh_l0"], rtol=1e-5, atol=1e-6)
    g["bias_hh_l0"] = np.zeros_like(g["bias_hh_l0"])
    return convert.from_torch_rnn(g)


CASES = [(k, dt, False) for k in ("lstm", "gru", "rnn") for dt in ("f32", "f64")] + \
    [("lstm", "f32", True), ("lstm", "f64", True), ("gru", "f64", True)]


@pytest.mark.parametrize("kind,dtype,with_len", CASES,
                         ids=[f"{k}-{d}{'-len' if ln else ''}" for k, d, ln in CASES])
def test_gradients_equal_torch_autograd(kind, dtype, with_len):
    npdt = np.float32 if dtype == "f32" else np.float64
    torch.manual_seed(0)
    tdt = torch.float32 if dtype == "f32" else torch.float64
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        I, H, batch_first=True).to(tdt)
    sd = {k: v.detach().numpy() for k, v in mod.state_dict().items()}
    params = {"lstm": convert.from_torch_lstm, "gru": convert.from_torch_gru,
              "rnn": convert.from_torch_rnn}[kind](sd)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((B, T, I)).astype(npdt)
    R = rng.standard_normal((B, T, H)).astype(npdt)
    Q = rng.standard_normal((B, H)).astype(npdt)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(npdt)
    c0 = (0.5 * rng.standard_normal((B, H))).astype(npdt)
    lengths = np.array([T, 2, 4], np.int32) if with_len else None

    m = _model(kind, dtype, with_len)
    inputs = {"X": X, "R": R, "Q": Q, "h0": h0}
    if kind == "lstm":
        inputs["c0"] = c0
    if with_len:
        inputs["L"] = lengths
    wrt_in = ["X", "h0"] + (["c0"] if kind == "lstm" else [])
    loss, grads = m.value_and_grad(params, wrt=list(m.param_specs) + wrt_in, **inputs)

    t_loss, t_grads, t_in = _torch_run(kind, mod, X, R, Q, h0, c0, lengths)
    tol = 1e-4 if dtype == "f32" else 1e-9
    assert rel_err(loss, t_loss) < tol
    expected = _tf_grads(kind, t_grads)
    assert set(expected) == set(m.param_specs)
    for name, g in expected.items():
        assert grads[name].dtype == npdt
        assert rel_err(grads[name], g) < tol, name
    for name in wrt_in:
        assert rel_err(grads[name], t_in[name]) < tol, name
    if with_len:
        assert np.all(grads["X"][1, 2:] == 0)  # past instance 1's length
