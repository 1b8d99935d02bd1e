"""dynamic_decode with BasicDecoder and TrainingHelper / GreedyEmbeddingHelper (TF1
tf.contrib.seq2seq): teacher forcing equals dynamic_rnn + dense, greedy decoding equals a NumPy
loop that stops each sequence at its end token; finite differences; compiled == interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from helpers import fd_check, rel_err
from reference_cells import gru_step

H, V, E = 5, 6, 3
END = 2


def test_training_helper_equals_dynamic_rnn_and_dense(rng):
    def f(X, L, R):
        helper = rc.seq2seq.TrainingHelper(X, L)
        dec = rc.seq2seq.BasicDecoder(rc.GRUCell(H), helper, rc.zeros(("B", H), "f64"),
                                      output_layer=rc.seq2seq.Dense(V, name="proj"))
        out, st, lens = rc.seq2seq.dynamic_decode(dec)
        return (rc.reduce_sum(out.rnn_output * R) + rc.reduce_sum(rc.tanh(st)),
                out.rnn_output, out.sample_id, st, lens)

    def g(X, L):
        o, st = rc.dynamic_rnn(rc.GRUCell(H), X, sequence_length=L, scope="decoder")
        return rc.layers.dense(o, V, name="decoder/proj"), st

    ins = {"X": rc.Input(("B", "T", E)), "L": rc.Input(("B",), "i32")}
    m = rc.Model(f, {**ins, "R": rc.Input(("B", "T", V))}, dtype="f64")
    ref = rc.Model(g, ins, dtype="f64")
    assert sorted(m.init()) == sorted(ref.init())
    assert "decoder/proj/kernel" in m.init()
    p = {k: rng.standard_normal(v.shape) for k, v in m.init().items()}
    X, L = rng.standard_normal((3, 4, E)), np.array([4, 1, 3], np.int32)
    R = rng.standard_normal((3, 4, V))
    (_, logits, ids, st, lens), grads = m.value_and_grad(p, X=X, L=L, R=R)
    r_logits, r_st = ref(p, X=X, L=L)
    mask = (np.arange(4)[None] < L[:, None])[..., None]
    assert rel_err(logits, np.where(mask, r_logits, 0)) < 1e-13
    assert rel_err(st, r_st) < 1e-13
    np.testing.assert_array_equal(ids, np.where(mask[..., 0], r_logits.argmax(-1), 0))
    np.testing.assert_array_equal(lens, L)
    fd_check(lambda pp, ii: m(pp, **ii)[0], p, dict(X=X, L=L, R=R), grads, sorted(p), rng,
             what="training helper")


def _greedy_model(max_it=7):
    def f(S, H0):
        table = rc.param("embedding", (V, E))
        helper = rc.seq2seq.GreedyEmbeddingHelper(table, S, END)
        dec = rc.seq2seq.BasicDecoder(rc.GRUCell(H), helper, H0,
                                      output_layer=rc.seq2seq.Dense(V, use_bias=False))
        out, st, lens = rc.seq2seq.dynamic_decode(dec, maximum_iterations=max_it)
        return out.rnn_output, out.sample_id, st, lens

    return rc.Model(f, {"S": rc.Input(("B",), "i32"), "H0": rc.Input(("B", H))}, dtype="f64")


def _greedy_ref(p, S, H0, max_it):
    B = len(S)
    logits = np.zeros((B, max_it, V))
    ids = np.zeros((B, max_it), np.int32)
    lens = np.zeros(B, np.int32)
    states = H0.copy()
    for b in range(B):
        h, tok = H0[b:b + 1], S[b]
        for t in range(max_it):
            h = gru_step(p["embedding"][tok][None], h, p, "decoder/gru_cell")
            lg = h @ p["decoder/dense/kernel"]
            logits[b, t], ids[b, t] = lg[0], int(np.argmax(lg[0]))
            lens[b] = t + 1
            tok = ids[b, t]
            if tok == END:
                break
        states[b] = h[0]
    return logits, ids, lens, states


def _greedy_case(rng, m):
    # weights that make END likely at different steps for different instances
    p = {k: 1.5 * rng.standard_normal(v.shape) for k, v in m.init().items()}
    S = np.array([0, 1, 3, 4], np.int32)
    H0 = rng.standard_normal((4, H))
    return p, S, H0


def test_greedy_equals_numpy_loop(rng):
    m = _greedy_model(7)
    for trial in range(3):
        p, S, H0 = _greedy_case(rng, m)
        logits, ids, st, lens = m(p, S=S, H0=H0)
        r_logits, r_ids, r_lens, r_st = _greedy_ref(p, S, H0, 7)
        np.testing.assert_array_equal(lens, r_lens)
        np.testing.assert_array_equal(ids, r_ids)
        assert rel_err(logits, r_logits) < 1e-13
        assert rel_err(st, r_st) < 1e-13
        if trial == 0:
            assert len(set(lens.tolist())) > 1, lens  # the case exercises per-sequence stops


def test_greedy_compiled_equals_interpreter(rng):
    pytest.importorskip("numba")
    m = _greedy_model(6)
    p, S, H0 = _greedy_case(rng, m)
    for a, b in zip(m(p, S=S, H0=H0, backend="cpu"), m(p, S=S, H0=H0, backend="interp")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_attention_greedy_alignment_history(rng):
    def f(M, ML, S):
        mech = rc.seq2seq.LuongAttention(H, M, memory_sequence_length=ML)
        cell = rc.seq2seq.AttentionWrapper(rc.GRUCell(H), mech, alignment_history=True)
        table = rc.param("embedding", (V, E))
        init = cell.zero_state("B", "f64")
        dec = rc.seq2seq.BasicDecoder(cell, rc.seq2seq.GreedyEmbeddingHelper(table, S, END),
                                      init, output_layer=rc.seq2seq.Dense(V))
        out, st, lens = rc.seq2seq.dynamic_decode(dec, maximum_iterations=5)
        return out.sample_id, st.alignment_history, lens

    m = rc.Model(f, {"M": rc.Input(("B", "Tm", 4)), "ML": rc.Input(("B",), "i32"),
                     "S": rc.Input(("B",), "i32")}, dtype="f64")
    assert "decoder/attention_wrapper/luong_attention/attention_g" not in m.init()
    p = {k: rng.standard_normal(v.shape) for k, v in m.init().items()}
    ids, hist, lens = m(p, M=rng.standard_normal((2, 3, 4)), ML=[3, 2], S=[0, 1])
    assert hist.shape == (5, 2, 3)
    for b in range(2):
        n = lens[b]
        np.testing.assert_allclose(hist[:n, b].sum(-1), 1.0)
        assert not np.any(hist[n:, b])
    assert not np.any(hist[:, 1, 2])  # masked memory


def test_errors():
    with pytest.raises(ValueError, match="needs maximum_iterations"):
        _greedy_model(None)
