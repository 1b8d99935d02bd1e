"""The compiled CPU backend equals the interpreter, forward and backward, for the TF1 options of
the cells (LSTMCell cell_clip / num_proj / proj_clip / peepholes, state_is_tuple=False, time_major,
GRUCell's TF1 form with initializers and a positional activation, variational dropout with a seed
in training mode, sequence lengths). Their meaning is checked against NumPy oracles in
tests/core/test_tf1_options.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.frontend.trace import flatten

I, H, P = 2, 4, 3
OPTIONS = dict(use_peepholes=True, cell_clip=0.8, num_proj=P, proj_clip=0.5)


# --- the compiled CPU backend equals the interpreter for every new option --------------------
def _cpu_models():
    def lstm_opts(X, L):
        out, st = rc.dynamic_rnn(rc.LSTMCell(H, **OPTIONS), X, sequence_length=L)
        return rc.sum(rc.square(out)) + rc.sum(st.c * st.c), out, st

    def lstm_concat_time_major(X, L):
        Xt = rc.transpose(X, perm=[1, 0, 2])
        cell = rc.MultiRNNCell([rc.LSTMCell(H, num_proj=P, state_is_tuple=False),
                                rc.BasicLSTMCell(H, 0.5, False)])
        out, st = rc.dynamic_rnn(cell, Xt, sequence_length=L, time_major=True)
        return rc.sum(rc.square(out)) + rc.sum(rc.square(st[0])), out, st

    def gru_tf1_init(X, L):
        cell = rc.GRUCell(H, rc.nn.relu, kernel_initializer=rc.orthogonal_initializer(),
                          bias_initializer=rc.constant_initializer(0.1))
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L)
        return rc.sum(rc.square(out)), out, st

    def variational(X, L):
        cell = rc.MultiRNNCell([rc.DropoutWrapper(rc.LSTMCell(H, use_peepholes=True), 0.7, 0.8,
                                                  0.6, variational_recurrent=True,
                                                  input_size=I, dtype=rc.float32, seed=5),
                                rc.DropoutWrapper(rc.GRUCell(H), 1.0, 0.9, 0.7,
                                                  variational_recurrent=True,
                                                  dtype=rc.float32)])
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L)
        return rc.sum(rc.square(out)) + rc.sum(st[1]), out, st

    return {"lstm_clip_proj": lstm_opts, "lstm_concat_time_major": lstm_concat_time_major,
            "gru_tf1_init": gru_tf1_init, "variational": variational}


@pytest.mark.parametrize("name", sorted(_cpu_models()))
def test_cpu_backend_equals_interpreter(name, rng):
    fn = _cpu_models()[name]
    m = rc.Model(fn, {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32")})
    p = {k: v + 0.2 * rng.standard_normal(v.shape).astype(v.dtype)
         for k, v in m.init(0).items()}
    inp = dict(X=rng.standard_normal((3, 5, I)).astype(np.float32), L=np.array([5, 3, 0], np.int32))
    wrt = list(p) + ["X"]
    kw = dict(wrt=wrt, training=True, seed=9, **inp)
    ref_out, ref_g = m.value_and_grad(p, backend="interp", **kw)
    out, g = m.value_and_grad(p, backend="cpu", **kw)
    flat_ref, flat = flatten(ref_out)[0], flatten(out)[0]
    for a, b in zip(flat, flat_ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for k in wrt:
        np.testing.assert_allclose(g[k], ref_g[k], rtol=2e-4, atol=2e-5, err_msg=k)
        assert np.any(ref_g[k] != 0) or k.endswith("recurrent_bias"), f"no gradient for {k}"
