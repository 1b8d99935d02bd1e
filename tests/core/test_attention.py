"""BahdanauAttention, LuongAttention and AttentionWrapper (TF1 tf.contrib.seq2seq) against the
NumPy reference (tests/reference_attention.py), finite differences, and compiled CPU ==
interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from helpers import fd_check, rel_err
from reference_attention import attention_decoder_ref

H, D, I = 4, 5, 3

CASES = {
    # name: (mechanism, cell, normalize/scale, attention_layer_size, output_attention, units)
    "bahdanau": ("bahdanau", "lstm", False, 3, True, 6),
    "bahdanau_norm": ("bahdanau", "gru", True, None, True, 6),
    "luong": ("luong", "lstm", False, None, False, H),
    "luong_scale": ("luong", "gru", True, 2, True, H),
}


def _model(case, with_len=True, history=False):
    kind, cell, opt, A, out_att, U = CASES[case]

    def f(M, ML, X, R):
        if kind == "bahdanau":
            mech = rc.seq2seq.BahdanauAttention(U, M, memory_sequence_length=ML if with_len
                                                else None, normalize=opt)
        else:
            mech = rc.seq2seq.LuongAttention(U, M, memory_sequence_length=ML if with_len
                                             else None, scale=opt)
        c = rc.BasicLSTMCell(H) if cell == "lstm" else rc.GRUCell(H)
        wrapper = rc.seq2seq.AttentionWrapper(c, mech, attention_layer_size=A,
                                              output_attention=out_att)
        out, st = rc.dynamic_rnn(wrapper, X)
        loss = rc.reduce_sum(out * R) + rc.reduce_sum(rc.tanh(st.attention)) \
            + rc.reduce_sum(st.alignments * st.alignments)
        return loss, out, st.attention, st.alignments

    A_out = (A or D) if out_att else H
    return rc.Model(f, {"M": rc.Input(("B", "Tm", D)), "ML": rc.Input(("B",), "i32"),
                        "X": rc.Input(("B", "T", I)), "R": rc.Input(("B", "T", A_out))},
                    dtype="f64"), A_out


def _data(rng, A_out, B=3, Tm=4, T=5):
    return dict(M=rng.standard_normal((B, Tm, D)), ML=np.array([4, 1, 2], np.int32),
                X=rng.standard_normal((B, T, I)), R=rng.standard_normal((B, T, A_out)))


def _params(m, rng):
    p = {k: 0.6 * rng.standard_normal(v.shape) for k, v in m.init().items()}
    for k in p:
        if k.endswith("attention_g"):
            p[k] = np.asarray(1.3)
    return p


@pytest.mark.parametrize("case", sorted(CASES))
def test_against_numpy_reference(case, rng):
    kind, cell, opt, A, out_att, U = CASES[case]
    m, A_out = _model(case)
    p = _params(m, rng)
    data = _data(rng, A_out)
    _, out, att, al = m(p, **data)
    r_out, (_, r_att, r_al), _ = attention_decoder_ref(
        kind, cell, p, data["M"], data["ML"], data["X"], H, attention_layer_size=A,
        normalize_or_scale=opt, output_attention=out_att)
    assert rel_err(out, r_out) < 1e-12
    assert rel_err(att, r_att) < 1e-12
    assert rel_err(al, r_al) < 1e-12
    assert not np.any(al[1, 1:]) and not np.any(al[2, 2:])  # masked memory: weight 0


def test_parameter_names():
    m, _ = _model("bahdanau_norm")
    assert sorted(m.init()) == [
        "memory_layer/kernel",
        "rnn/attention_wrapper/bahdanau_attention/attention_b",
        "rnn/attention_wrapper/bahdanau_attention/attention_g",
        "rnn/attention_wrapper/bahdanau_attention/attention_v",
        "rnn/attention_wrapper/bahdanau_attention/query_layer/kernel",
        "rnn/attention_wrapper/gru_cell/candidate/bias",
        "rnn/attention_wrapper/gru_cell/candidate/kernel",
        "rnn/attention_wrapper/gru_cell/gates/bias",
        "rnn/attention_wrapper/gru_cell/gates/kernel"]
    m, _ = _model("luong_scale")
    assert "rnn/attention_wrapper/luong_attention/attention_g" in m.init()
    assert m.init()["rnn/attention_wrapper/luong_attention/attention_g"] == 1.0
    assert "rnn/attention_wrapper/attention_layer/kernel" in m.init()


def test_no_memory_lengths(rng):
    m, A_out = _model("luong", with_len=False)
    p = _params(m, rng)
    data = _data(rng, A_out)
    _, out, _, al = m(p, **data)
    r_out, _, _ = attention_decoder_ref("luong", "lstm", p, data["M"], None, data["X"], H,
                                        output_attention=False)
    assert rel_err(out, r_out) < 1e-12
    assert np.all(al > 0)


@pytest.mark.parametrize("case", ["bahdanau_norm", "luong_scale"])
def test_finite_differences(case, rng):
    m, A_out = _model(case)
    p = _params(m, rng)
    data = _data(rng, A_out)
    wrt = sorted(p) + ["M", "X"]
    _, g = m.value_and_grad(p, wrt=wrt, **data)
    fd_check(lambda pp, ii: m(pp, **ii)[0], p, data, g, wrt, rng, rtol=1e-6, what=case)
    assert not np.any(g["M"][1, 1:]) and not np.any(g["M"][2, 2:])  # masked memory: no gradient


def test_compiled_cpu_equals_interpreter(rng):
    """One compile: Bahdanau (normalized) over a GRU with memory lengths, forward and every
    gradient (the -inf mask literal included)."""
    pytest.importorskip("numba")
    m, A_out = _model("bahdanau")
    p = _params(m, rng)
    data = _data(rng, A_out)
    wrt = sorted(p) + ["M"]
    vi, gi = m.value_and_grad(p, wrt=wrt, backend="interp", **data)
    vc, gc = m.value_and_grad(p, wrt=wrt, backend="cpu", **data)
    for a, b in zip(vc, vi):
        assert rel_err(a, b) < 1e-12
    for k in wrt:
        assert rel_err(gc[k], gi[k]) < 1e-12, k


def test_errors():
    M = {"M": rc.Input(("B", "Tm", D)), "X": rc.Input(("B", "T", I))}
    with pytest.raises(Exception, match="query depth .* must equal num_units"):
        rc.Model(lambda M, X: rc.dynamic_rnn(rc.seq2seq.AttentionWrapper(
            rc.GRUCell(H), rc.seq2seq.LuongAttention(H + 1, M)), X)[0], M)
    with pytest.raises(ValueError, match="list of attention mechanisms"):
        rc.Model(lambda M, X: rc.dynamic_rnn(rc.seq2seq.AttentionWrapper(
            rc.GRUCell(H), [rc.seq2seq.LuongAttention(H, M)]), X)[0], M)
