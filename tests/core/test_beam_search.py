"""Beam search (TF1 tf.contrib.seq2seq.BeamSearchDecoder, tile_batch, gather_tree) and the
scan's run-time stop: against a NumPy beam search written here (independent of the
implementation: per batch entry, a stable sort for top-k, its own backtracking), compiled ==
interpreter, finite differences, beam_width 1 == greedy, length penalty on and off, the stop
on and off (the same results), and a stop that really ends the loop (a counter carry)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from helpers import fd_check, rel_err
from reference_cells import gru_step
from rnncomp.frontend.trace import trace_scan

H, V, E = 5, 6, 3
END = 2
B, K, MAX_IT = 3, 3, 7
S0 = [0, 1, 3]


# ---------------------------------------------------------------------------------------------
# the scan's stop carry on its own
# ---------------------------------------------------------------------------------------------
def _stop_model(stop=True):
    """h <- tanh(h * w + x_t) every step (NOT frozen after the flag: the stop is visible),
    a step counter, and a flag set once the counter reaches n."""

    def f(X, n, w, R):
        def body(t, c, xs):
            h, k, done = c
            h2 = rc.tanh(h * w + xs[0])
            k2 = k + 1
            return [h2, k2, rc.greater_equal(k2, n)], [h2 * R, rc.cast(k2, "f64")]

        k0 = rc.cast(n * 0, "i32")
        h, k, _, ys, ks = trace_scan(body, [rc.reduce_sum(X, 0) * 0, k0, rc.less(k0, k0)], [X],
                                     stop=2 if stop else None)
        return rc.reduce_sum(h * h) + rc.reduce_sum(ys), h, k, ks

    return rc.Model(f, {"X": rc.Input((6, 4)), "n": rc.Input((), "i32"), "w": rc.Input((4,)),
                        "R": rc.Input((4,))}, dtype="f64")


def test_scan_stop_ends_the_loop_compiled_and_differentiated(rng):
    m = _stop_model()
    X, w, R = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal(4)
    for n in (3, 6, 9):
        _, h, k, ks = m({}, X=X, n=np.int32(n), w=w, R=R, backend="interp")
        assert int(k) == min(n, 6)
        np.testing.assert_array_equal(ks, [i + 1 if i < min(n, 6) else 0 for i in range(6)])
    inp = dict(X=X, n=np.int32(3), w=w, R=R)
    outs, grads = m.value_and_grad({}, wrt=["X", "w"], backend="interp", **inp)
    # the reverse loop starts at the last step run: X[3:] gets no gradient
    assert np.all(grads["X"][3:] == 0) and np.all(grads["X"][:3] != 0)
    fd_check(lambda p, i: m(p, **i, backend="interp")[0], {}, inp, grads, ["X", "w"], rng,
             what="scan with a stop")
    pytest.importorskip("numba")
    c_outs, c_grads = m.value_and_grad({}, wrt=["X", "w"], backend="cpu", **inp)
    for a, b in zip(c_outs, outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for name in grads:
        np.testing.assert_allclose(c_grads[name], grads[name], rtol=1e-12, atol=1e-14)


def test_scan_stop_errors():
    def f(X):
        def body(t, c, xs):
            return [c[0] + xs[0]], []
        return trace_scan(body, [rc.reduce_sum(X, 0)], [X], stop=0)[0]

    with pytest.raises(Exception, match="stop=0 must name a bool scalar carry"):
        rc.Model(f, {"X": rc.Input((3, 2))})


# ---------------------------------------------------------------------------------------------
# beam search
# ---------------------------------------------------------------------------------------------
def _beam_model(K=K, w=0.0, max_it=MAX_IT, stop=True):
    def f(H0, R):
        table = rc.param("embedding", (V, E))
        dec = rc.seq2seq.BeamSearchDecoder(
            rc.GRUCell(H), table, S0, END, rc.seq2seq.tile_batch(H0, K), K,
            output_layer=rc.seq2seq.Dense(V), length_penalty_weight=w)
        out, st, lens = rc.seq2seq.dynamic_decode(dec, maximum_iterations=max_it,
                                                  stop_early=stop)
        bo = out.beam_search_decoder_output
        loss = rc.reduce_sum(st.log_probs) + rc.reduce_sum(bo.scores * R) + \
            rc.reduce_sum(rc.tanh(st.cell_state))
        return (loss, out.predicted_ids, bo.scores, bo.predicted_ids, bo.parent_ids,
                st.log_probs, st.lengths, st.finished, lens, st.cell_state)

    return rc.Model(f, {"H0": rc.Input((B, H)), "R": rc.Input((B, max_it, K))}, dtype="f64")


def _log_softmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _beam_ref(p, H0, K, w, max_it):
    """TF1's beam search, one batch entry at a time (the loop of all entries ends when every
    beam of every entry has finished)."""
    kern, bias, emb = p["decoder/dense/kernel"], p["decoder/dense/bias"], p["embedding"]
    fmin = np.finfo(np.float64).min
    h = np.repeat(H0[:, None], K, 1)                      # [B, K, H]
    tok = np.repeat(np.array(S0)[:, None], K, 1)
    lp = np.full((B, K), -np.inf)
    lp[:, 0] = 0.0
    fin = np.zeros((B, K), bool)
    lens = np.zeros((B, K), np.int64)
    slot = np.zeros((B, K), np.int32)
    scores = np.zeros((max_it, B, K))
    ids = np.zeros((max_it, B, K), np.int32)
    par = np.zeros((max_it, B, K), np.int32)
    for t in range(max_it):
        if fin.all():
            break
        for b in range(B):
            hn = np.stack([gru_step(emb[tok[b, k]][None], h[b, k][None], p,
                                    "decoder/gru_cell")[0] for k in range(K)])
            logp = _log_softmax(hn @ kern + bias)         # [K, V]
            length = np.zeros((K, V), np.int64)
            for k in range(K):
                if fin[b, k]:
                    logp[k] = fmin
                    logp[k, END] = 0.0
                length[k] = lens[b, k] + (0 if fin[b, k] else 1)
                length[k, END] = lens[b, k]
            total = lp[b][:, None] + logp
            sc = total / ((5.0 + length) / 6.0) ** w if w else total
            order = np.argsort(-sc.ravel(), kind="stable")[:K]
            pk, wd = order // V, order % V
            scores[t, b], ids[t, b], par[t, b] = sc.ravel()[order], wd, pk
            slot[b] = np.where(fin[b], slot[b], t + 1)
            lp[b] = total.ravel()[order]
            lens[b] = lens[b, pk] + (~fin[b, pk])
            fin[b] = fin[b, pk] | (wd == END)
            h[b], tok[b] = hn[pk], wd
    pred = np.full((max_it, B, K), END, np.int32)
    for b in range(B):
        L = int(lens[b].max())
        for k in range(K):
            cur = k
            for lvl in range(L - 1, -1, -1):
                pred[lvl, b, k] = ids[lvl, b, cur]
                cur = par[lvl, b, cur]
            seen = False
            for lvl in range(max_it):
                if seen:
                    pred[lvl, b, k] = END
                seen = seen or pred[lvl, b, k] == END
    tr = lambda x: np.transpose(x, (1, 0, 2))  # noqa: E731
    return (tr(pred), tr(scores), tr(ids), tr(par), lp, lens, fin, slot,
            h.reshape(B * K, H))


def _beam_case(rng, m, eos_bias=0.8):
    p = {k: 1.5 * rng.standard_normal(v.shape) for k, v in m.init().items()}
    p["decoder/dense/bias"][END] += eos_bias  # end tokens at different steps
    return p, rng.standard_normal((B, H)), rng.standard_normal((B, MAX_IT, K))


def _stopping_case(rng, m):
    """A case where every beam ends before MAX_IT (the loop stops early)."""
    for _ in range(30):
        p, H0, R = _beam_case(rng, m, eos_bias=1.0)
        if m(p, H0=H0, R=R, backend="interp")[6].max() < MAX_IT - 1:
            return p, H0, R
    raise AssertionError("no early-stopping case drawn")


@pytest.mark.parametrize("w", [0.0, 0.7])
def test_beam_search_equals_numpy_reference(rng, w):
    m = _beam_model(w=w)
    early_eos = stopped = False
    for trial in range(4):
        p, H0, R = _beam_case(rng, m, eos_bias=0.4 * trial)
        got = m(p, H0=H0, R=R, backend="interp")[1:]
        ref = _beam_ref(p, H0, K, w, MAX_IT)
        names = ["predicted_ids", "scores", "step ids", "parent ids", "log_probs", "lengths",
                 "finished", "final_sequence_lengths", "cell state"]
        for name, a, r in zip(names, got, ref):
            if a.dtype.kind == "f":
                assert rel_err(a, r) < 1e-12, name
            else:
                np.testing.assert_array_equal(a, r, err_msg=name)
        lens = ref[5]
        early_eos |= bool(lens.min() < lens.max())
        stopped |= bool(lens.max() < MAX_IT)
    assert early_eos and stopped  # EOS in some beams; the loop ended before MAX_IT


def test_beam_search_compiled_equals_interpreter_and_gradients(rng):
    m = _beam_model(w=0.7)
    p, H0, R = _stopping_case(rng, m)
    outs, grads = m.value_and_grad(p, H0=H0, R=R, wrt=sorted(p) + ["H0"], backend="interp")
    assert outs[6].max() < MAX_IT  # the case stops early
    fd_check(lambda pp, ii: m(pp, **ii, backend="interp")[0], p, dict(H0=H0, R=R), grads,
             sorted(p) + ["H0"], rng, what="beam search")
    pytest.importorskip("numba")
    c_outs, c_grads = m.value_and_grad(p, H0=H0, R=R, wrt=sorted(p) + ["H0"], backend="cpu")
    for k, (a, b) in enumerate(zip(c_outs, outs)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12, err_msg=f"output {k}")
    for name in grads:
        np.testing.assert_allclose(c_grads[name], grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_stop_on_and_off_give_the_same_results(rng):
    m_on, m_off = _beam_model(w=0.7), _beam_model(w=0.7, stop=False)
    p, H0, R = _stopping_case(rng, m_on)
    on, g_on = m_on.value_and_grad(p, H0=H0, R=R, backend="interp")
    off, g_off = m_off.value_and_grad(p, H0=H0, R=R, backend="interp")
    assert on[6].max() < MAX_IT
    for a, b in zip(on, off):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    for name in g_on:
        np.testing.assert_allclose(g_on[name], g_off[name], rtol=1e-11, atol=1e-14)


def _greedy_model(stop=True):
    def f(H0, R):
        table = rc.param("embedding", (V, E))
        helper = rc.seq2seq.GreedyEmbeddingHelper(table, S0, END)
        dec = rc.seq2seq.BasicDecoder(rc.GRUCell(H), helper, H0,
                                      output_layer=rc.seq2seq.Dense(V))
        out, st, lens = rc.seq2seq.dynamic_decode(dec, maximum_iterations=MAX_IT,
                                                  stop_early=stop)
        logp = rc.log_softmax(out.rnn_output, -1)
        loss = rc.reduce_sum(out.rnn_output * R) + rc.reduce_sum(rc.tanh(st))
        return loss, out.sample_id, lens, rc.reduce_max(logp, 2)

    return rc.Model(f, {"H0": rc.Input((B, H)), "R": rc.Input((B, MAX_IT, V))}, dtype="f64")


def test_beam_width_1_equals_greedy(rng):
    mb, mg = _beam_model(K=1), _greedy_model()
    for trial in range(3):
        p, H0, _ = _beam_case(rng, mb, eos_bias=0.5 * trial)
        R = np.zeros((B, MAX_IT, 1))
        beam = mb(p, H0=H0, R=R, backend="interp")
        _, g_ids, g_lens, g_logp = mg(p, H0=H0, R=np.zeros((B, MAX_IT, V)), backend="interp")
        pred, lengths, log_probs = beam[1][:, :, 0], beam[6][:, 0], beam[5][:, 0]
        np.testing.assert_array_equal(lengths, g_lens)
        for b in range(B):
            n = g_lens[b]
            np.testing.assert_array_equal(pred[b, :n], g_ids[b, :n])
            assert np.all(pred[b, n:] == END)
            # the beam's log-prob is the greedy path's: sum of the chosen log-softmax entries
            assert abs(log_probs[b] - g_logp[b, :n].sum()) < 1e-12


def test_greedy_stop_gradients(rng):
    m_on, m_off = _greedy_model(), _greedy_model(stop=False)
    for _ in range(30):  # a case where every sequence ends before MAX_IT
        p = {k: 1.5 * rng.standard_normal(v.shape) for k, v in m_on.init().items()}
        p["decoder/dense/bias"][END] += 1.0
        H0, R = rng.standard_normal((B, H)), rng.standard_normal((B, MAX_IT, V))
        if m_on(p, H0=H0, R=R, backend="interp")[2].max() < MAX_IT - 1:
            break
    wrt = sorted(p) + ["H0"]
    on, g_on = m_on.value_and_grad(p, H0=H0, R=R, wrt=wrt, backend="interp")
    off, g_off = m_off.value_and_grad(p, H0=H0, R=R, wrt=wrt, backend="interp")
    assert on[2].max() < MAX_IT  # every sequence ended early: the loop stopped
    for a, b in zip(on, off):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    for name in g_on:
        np.testing.assert_allclose(g_on[name], g_off[name], rtol=1e-11, atol=1e-14)
    fd_check(lambda pp, ii: m_on(pp, **ii, backend="interp")[0], p, dict(H0=H0, R=R), g_on,
             sorted(p) + ["H0"], rng, what="greedy decoding with a stop")


# ---------------------------------------------------------------------------------------------
# gather_tree and tile_batch on their own
# ---------------------------------------------------------------------------------------------
def test_gather_tree_equals_numpy(rng):
    T, Bt, Kt = 6, 4, 3

    def f(ids, parents, L):
        return rc.seq2seq.gather_tree(ids, parents, L, END)

    m = rc.Model(f, {"ids": rc.Input((T, Bt, Kt), "i32"), "parents": rc.Input((T, Bt, Kt), "i32"),
                     "L": rc.Input((Bt,), "i32")})
    ids = rng.integers(0, V, (T, Bt, Kt)).astype(np.int32)
    ids[rng.random((T, Bt, Kt)) < 0.15] = END
    parents = rng.integers(0, Kt, (T, Bt, Kt)).astype(np.int32)
    L = np.array([6, 3, 0, 5], np.int32)
    ref = np.full((T, Bt, Kt), END, np.int32)
    for b in range(Bt):
        for k in range(Kt):
            cur, path = k, []
            for lvl in range(L[b] - 1, -1, -1):
                path.append(ids[lvl, b, cur])
                cur = parents[lvl, b, cur]
            path = path[::-1]
            if END in path:
                path = path[:path.index(END) + 1]
            ref[:len(path), b, k] = path
    np.testing.assert_array_equal(m({}, ids=ids, parents=parents, L=L, backend="interp"), ref)


def test_tile_batch_and_errors():
    def f(X, Y):
        return rc.seq2seq.tile_batch((X, Y), 3)

    m = rc.Model(f, {"X": rc.Input((2, 4)), "Y": rc.Input((2, "T", 3))})
    X, Y = np.arange(8.0).reshape(2, 4), np.arange(12.0).reshape(2, 2, 3)
    tx, ty = m({}, X=X, Y=Y, backend="interp")
    np.testing.assert_array_equal(tx, np.repeat(X, 3, axis=0))
    np.testing.assert_array_equal(ty, np.repeat(Y, 3, axis=0))
    with pytest.raises(ValueError, match="symbolic batch size"):
        rc.Model(f, {"X": rc.Input(("B", 4)), "Y": rc.Input(("B", 2, 3))})
    with pytest.raises(ValueError, match="needs maximum_iterations"):
        _beam_model(max_it=None)
    with pytest.raises(ValueError, match="beam_width must be an int >= 1, received 0"):
        rc.Model(lambda H0: rc.seq2seq.BeamSearchDecoder(
            rc.GRUCell(H), rc.param("e", (V, E)), S0, END, H0, 0).beam_width,
            {"H0": rc.Input((3, H))})
    with pytest.raises(Exception, match="beam_width 7 is larger than the vocabulary"):
        _beam_model(K=7)

    def g(H0):
        dec = rc.seq2seq.BeamSearchDecoder(rc.GRUCell(H), rc.param("e", (V, E)), S0, END, H0, 2,
                                           coverage_penalty_weight=0.5)
        return rc.seq2seq.dynamic_decode(dec, maximum_iterations=3)[0].predicted_ids

    with pytest.raises(NotImplementedError, match="coverage_penalty_weight"):
        rc.Model(g, {"H0": rc.Input((6, H))})


def test_checkpoint_every_on_a_stopping_loop(rng):
    """checkpoint_every=k on a loop with a run-time stop: the segments after the stop run no
    step and each segment's reverse loop starts where its forward stopped, so the gradients
    equal the stored ones (and the steps never run get none)."""
    m = _stop_model()
    X, w, R = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal(4)
    inp = dict(X=X, n=np.int32(3), w=w, R=R)
    _, stored = m.value_and_grad({}, wrt=["X", "w"], backend="interp", **inp)
    _, seg = m.value_and_grad({}, wrt=["X", "w"], backend="interp", checkpoint_every=2, **inp)
    for name in stored:
        np.testing.assert_allclose(seg[name], stored[name], rtol=1e-13, atol=1e-15)
    assert np.all(seg["X"][3:] == 0)
