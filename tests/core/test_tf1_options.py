"""The TF1 options of cells, wrappers and unrolls work, not just parse (issue: a TF1 user's code
runs as written): checked against the independent NumPy oracles of tests/reference_tf1.py
(forward, and gradients by finite differences of the oracle). The compiled CPU backend is
checked against the interpreter for every new option in tests/cpu/test_tf1_options_cpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from reference_cells import gru_ref
from reference_tf1 import dropout_lstm_ref, lstm_tf1_ref, variational_masks
from rnncomp.ir.ops import hash_uniform_np

B, T, I, H, P = 3, 5, 2, 4, 3


def _x(rng, dtype=np.float64, shape=(B, T, I)):
    return rng.standard_normal(shape).astype(dtype)


def _scaled(params, rng, scale=1.0):
    """Random parameters, large enough that the clips act."""
    return {k: scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


OPTIONS = dict(use_peepholes=True, cell_clip=0.8, num_proj=P, proj_clip=0.5)


def _proj_model(dtype="f64", **opts):
    def fn(X, L, R, Rc):
        cell = rc.LSTMCell(H, **opts)
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L)
        loss = rc.sum(out * R) + rc.sum(st.c * Rc) + rc.sum(st.h * rc.slice(Rc, 0, P, axis=1))
        return loss, out, st
    return rc.Model(fn, {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32"),
                         "R": rc.Input((None, None, P)), "Rc": rc.Input((None, H))}, dtype=dtype)


def _proj_inputs(rng, dtype=np.float64):
    return dict(X=_x(rng, dtype), L=np.array([5, 2, 0], np.int32),
                R=rng.standard_normal((B, T, P)).astype(dtype),
                Rc=rng.standard_normal((B, H)).astype(dtype))


# --- LSTMCell: peepholes, cell_clip, num_proj, proj_clip --------------------------------------
def test_lstm_projection_parameters_are_named_as_tf1():
    m = _proj_model(**OPTIONS)
    shapes = {k: v.shape for k, v in m.init(0).items()}
    assert shapes == {"rnn/lstm_cell/kernel": (I + P, 4 * H), "rnn/lstm_cell/bias": (4 * H,),
                      "rnn/lstm_cell/w_i_diag": (H,), "rnn/lstm_cell/w_f_diag": (H,),
                      "rnn/lstm_cell/w_o_diag": (H,), "rnn/lstm_cell/projection/kernel": (H, P)}


@pytest.mark.parametrize("opts", [
    OPTIONS,
    dict(cell_clip=0.5),
    dict(num_proj=P),
    dict(num_proj=P, proj_clip=0.3, forget_bias=0.0),
    dict(use_peepholes=True, cell_clip=1.0, activation="relu"),
], ids=["all", "cell_clip", "num_proj", "proj_clip", "peep_clip_relu"])
def test_lstm_options_match_the_oracle(opts, rng):
    opts = dict(opts)
    Pn = opts.get("num_proj") or H
    m = _proj_model(**opts) if Pn == P else None
    if m is None:  # without a projection h has H units: a model of its own
        def fn(X, L):
            return rc.dynamic_rnn(rc.LSTMCell(H, **opts), X, sequence_length=L)
        m = rc.Model(fn, {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32")},
                     dtype="f64")
    p = _scaled(m.init(0), rng, 1.5)
    inp = _proj_inputs(rng)
    inp = {k: v for k, v in inp.items() if k in m.input_names}
    res = m(p, **inp)
    out, st = res[-2], res[-1]
    act = {"relu": lambda z: np.maximum(z, 0)}.get(opts.pop("activation", None), np.tanh)
    ref_out, (c, h) = lstm_tf1_ref(inp["X"], p, num_units=H, seq_len=inp["L"], activation=act,
                                   **opts)
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.c, c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.h, h, rtol=1e-10, atol=1e-12)
    if opts.get("cell_clip"):
        assert np.isclose(np.abs(st.c).max(), opts["cell_clip"]), "the clip never acted"
    if opts.get("proj_clip"):
        assert np.isclose(np.abs(out).max(), opts["proj_clip"]), "the clip never acted"


def test_lstm_options_gradient_matches_oracle_finite_differences(rng):
    m = _proj_model(**OPTIONS)
    p = _scaled(m.init(0), rng, 0.7)
    inp = _proj_inputs(rng)
    _, grads = m.value_and_grad(p, wrt=list(p) + ["X"], **inp)

    def loss(pp, X):
        out, (c, h) = lstm_tf1_ref(X, pp, num_units=H, seq_len=inp["L"], **OPTIONS)
        return np.sum(out * inp["R"]) + np.sum(c * inp["Rc"]) + np.sum(h * inp["Rc"][:, :P])

    eps = 1e-6
    for name in list(p) + ["X"]:
        d = rng.standard_normal(grads[name].shape)
        if name == "X":
            fd = (loss(p, inp["X"] + eps * d) - loss(p, inp["X"] - eps * d)) / (2 * eps)
        else:
            fd = (loss({**p, name: p[name] + eps * d}, inp["X"])
                  - loss({**p, name: p[name] - eps * d}, inp["X"])) / (2 * eps)
        an = float(np.sum(grads[name] * d))
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd)), (name, fd, an)


def test_lstm_positional_order_is_tf1():
    # TF1: LSTMCell(num_units, use_peepholes, cell_clip, initializer, num_proj, proj_clip,
    #               num_unit_shards, num_proj_shards, forget_bias, state_is_tuple, activation)
    a = rc.LSTMCell(H, True, 0.8, None, P, 0.5, None, None, 0.5, True, rc.nn.relu)
    assert (a.use_peepholes, a.cell_clip, a.num_proj, a.proj_clip, a.forget_bias,
            a.state_is_tuple, a.activation) == (True, 0.8, P, 0.5, 0.5, True, rc.relu)
    b = rc.BasicLSTMCell(H, 0.5, True, rc.nn.relu)  # (num_units, forget_bias, state_is_tuple, act)
    assert (b.forget_bias, b.state_is_tuple, b.activation) == (0.5, True, rc.relu)
    with pytest.raises(ValueError, match="state_is_tuple: expected True or False"):
        rc.BasicLSTMCell(H, 1.0, "relu")


def test_shards_other_than_one_say_what_to_do():
    rc.LSTMCell(H, num_unit_shards=1, num_proj_shards=1)
    with pytest.raises(ValueError, match="num_unit_shards=2: TF1 splits the variables.*drop "
                                         "num_unit_shards"):
        rc.LSTMCell(H, num_unit_shards=2)
    with pytest.raises(ValueError, match="cell_clip: expected a positive number"):
        rc.LSTMCell(H, cell_clip=-1.0)


@pytest.mark.parametrize("proj", [None, P])
def test_lstm_state_is_tuple_false_is_concat_c_h(proj, rng):
    def fn(X):
        cells = [rc.LSTMCell(H, num_proj=proj, state_is_tuple=False, name="a"),
                 rc.LSTMCell(H, num_proj=proj, name="b")]
        o1, s1 = rc.dynamic_rnn(cells[0], X, scope="one")
        o2, s2 = rc.dynamic_rnn(cells[1], X, scope="two")
        return o1, s1, o2, s2
    m = rc.Model(fn, {"X": rc.Input((None, None, I))}, dtype="f64")
    p = _scaled(m.init(0), rng, 0.5)
    for k in list(p):  # the same weights for both
        if k.startswith("one/"):
            p["two/b/" + k[len("one/a/"):]] = p[k]
    o1, s1, o2, s2 = m(p, X=_x(rng))
    np.testing.assert_allclose(o1, o2, rtol=1e-12)
    assert s1.shape == (B, H + (proj or H))
    np.testing.assert_allclose(s1, np.concatenate([s2.c, s2.h], axis=1), rtol=1e-12)


# --- GRUCell: TF1's form by default, initializers ----------------------------------------------
def test_gru_default_is_tf1_reset_before(rng):
    def fn(X):
        a = rc.dynamic_rnn(rc.GRUCell(H), X, scope="tf1")[0]
        b = rc.dynamic_rnn(rc.GRUCell(H, reset_after=True), X, scope="cudnn")[0]
        return a, b
    m = rc.Model(fn, {"X": rc.Input((None, None, I))}, dtype="f64")
    p = _scaled(m.init(0), rng)
    X = _x(rng)
    a, b = m(p, X=X)
    np.testing.assert_allclose(a, gru_ref(X, p, "tf1/gru_cell", reset_after=False)[0],
                               rtol=1e-10)
    np.testing.assert_allclose(b, gru_ref(X, p, "cudnn/gru_cell", reset_after=True)[0],
                               rtol=1e-10)
    assert "cudnn/gru_cell/candidate/recurrent_bias" in p
    assert "tf1/gru_cell/candidate/recurrent_bias" not in p


def test_gru_positional_order_is_tf1():
    g = rc.GRUCell(H, rc.nn.relu)  # TF1: GRUCell(num_units, activation, reuse, ...)
    assert g.activation is rc.relu and g.reset_after is False
    with pytest.raises(TypeError):
        rc.GRUCell(H, None, None, None, None, None, None, True)  # reset_after is keyword-only


def test_cell_initializers():
    def fn(X):
        g = rc.GRUCell(H, kernel_initializer=rc.constant_initializer(0.25),
                       bias_initializer=rc.constant_initializer(-0.5), name="g")
        lstm = rc.LSTMCell(H, use_peepholes=True, num_proj=P, name="l",
                           initializer=rc.random_uniform_initializer(-0.01, 0.01))
        y = rc.dynamic_rnn(g, X, scope="s1")[0]
        z = rc.dynamic_rnn(lstm, X, scope="s2")[0]
        d = rc.layers.dense(z, 2, kernel_initializer=rc.ones_initializer(),
                            bias_initializer=rc.constant_initializer(3.0))
        return y, d
    p = rc.Model(fn, {"X": rc.Input((None, None, I))}).init(7)
    for k in ("s1/g/gates/kernel", "s1/g/candidate/kernel"):
        assert np.all(p[k] == 0.25)
    for k in ("s1/g/gates/bias", "s1/g/candidate/bias"):
        assert np.all(p[k] == -0.5)
    for k in ("kernel", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel"):
        v = p[f"s2/l/{k}"]
        assert np.all(np.abs(v) <= 0.01) and v.std() > 0, k
    assert np.all(p["s2/l/bias"] == 0)
    assert np.all(p["dense/kernel"] == 1) and np.all(p["dense/bias"] == 3)
    with pytest.raises(ValueError, match="kernel_initializer: unknown initializer 'nope'"):
        rc.GRUCell(H, kernel_initializer="nope")


def test_activation_none_is_tanh(rng):
    for make in (lambda a: rc.BasicRNNCell(H, a), lambda a: rc.BasicLSTMCell(H, activation=a),
                 lambda a: rc.GRUCell(H, a)):
        assert make(None).activation is rc.tanh


# --- DropoutWrapper(variational_recurrent=True) -------------------------------------------------
def _probe(variational, static=False, keep=0.5):
    """A pass-through cell in a DropoutWrapper: the outputs are the dropped inputs."""
    def fn(X):
        cell = rc.FunctionCell(lambda x, h: (x, h), state_size=1, output_size=I)
        w = rc.DropoutWrapper(cell, input_keep_prob=keep, variational_recurrent=variational,
                              input_size=I, dtype=rc.float64 if variational else None)
        if static:
            outs, _ = rc.static_rnn(w, rc.unstack(X, axis=1))
            return rc.stack(outs, axis=1)
        return rc.dynamic_rnn(w, X)[0]
    return rc.Model(fn, {"X": rc.Input((None, 6, I))}, dtype="f64")


@pytest.mark.parametrize("static", [False, True], ids=["dynamic_rnn", "static_rnn"])
def test_variational_dropout_uses_one_mask_per_sequence(static):
    X = np.ones((8, 6, I))
    m = _probe(True, static)
    out = m({}, X=X, training=True, seed=3)
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert np.all(out == out[:, :1, :]), "the mask changed between steps"
    assert len({tuple(r) for r in out[:, 0, :]}) > 1, "every sequence got the same mask"
    assert not np.array_equal(out, m({}, X=X, training=True, seed=4)), "the seed is not used"
    np.testing.assert_array_equal(m({}, X=X), X)  # inference: no dropout
    plain = _probe(False, static)({}, X=X, training=True, seed=3)
    assert not np.all(plain == plain[:, :1, :]), "plain dropout should draw per step"


def test_variational_dropout_matches_oracle_and_compiles(rng):
    keep = {"input": 0.6, "output": 0.7, "state": 0.8}

    def fn(X, R):
        cell = rc.DropoutWrapper(rc.BasicLSTMCell(H), keep["input"], keep["output"],
                                 keep["state"], variational_recurrent=True, input_size=I,
                                 dtype=rc.float64)
        out, st = rc.dynamic_rnn(cell, X)
        return rc.sum(out * R) + rc.sum(st.c) + rc.sum(st.h), out, st
    m = rc.Model(fn, {"X": rc.Input((None, None, I)), "R": rc.Input((None, None, H))},
                 dtype="f64")
    p = _scaled(m.init(0), rng, 0.5)
    X, R = _x(rng), rng.standard_normal((B, T, H))
    _, out, st = m(p, X=X, R=R, training=True, seed=11)
    # the wrapper's random sites in creation order: input, output, then state part 1 (h)
    masks = variational_masks(hash_uniform_np, 11, {"input": 1, "output": 2, "state": 3},
                              {"input": I, "output": H, "state": H}, B, keep, np.float64)
    ref_out, (c, h) = dropout_lstm_ref(X, p, "rnn/basic_lstm_cell", masks, keep)
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.c, c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.h, h, rtol=1e-10, atol=1e-12)
    assert 0 < masks["input"].mean() < 1 and 0 < masks["state"].mean() < 1


@pytest.mark.parametrize("variational", [False, True])
def test_dropout_wrapper_seed_is_mixed_into_the_masks(variational):
    def model(seed_a, seed_b):
        def fn(X):
            outs = []
            for k, s in enumerate((seed_a, seed_b)):
                cell = rc.FunctionCell(lambda x, h: (x, h), state_size=1, output_size=I,
                                       name=f"c{k}")
                w = rc.DropoutWrapper(cell, 0.5, variational_recurrent=variational,
                                      input_size=I, dtype="f64", seed=s)
                outs.append(rc.dynamic_rnn(w, X, scope=f"s{k}")[0])
            return outs
        return rc.Model(fn, {"X": rc.Input((None, None, I))}, dtype="f64")

    X = np.ones((16, 3, I))
    a, b = model(7, 7)({}, X=X, training=True, seed=1)
    c, d = model(7, 8)({}, X=X, training=True, seed=1)
    np.testing.assert_array_equal(a, c)  # the same wrapper seed and site: the same masks
    assert not np.array_equal(b, d)      # another wrapper seed: other masks
    with pytest.raises(ValueError, match="seed: expected an int or None"):
        rc.DropoutWrapper(rc.BasicRNNCell(H), 0.5, seed=1.5)


def test_variational_dropout_needs_what_tf1_needs():
    cell = rc.BasicLSTMCell(H)
    with pytest.raises(ValueError, match="variational_recurrent=True needs dtype="):
        rc.DropoutWrapper(cell, 0.5, variational_recurrent=True, input_size=I)
    with pytest.raises(ValueError, match="input_keep_prob < 1 needs input_size="):
        rc.DropoutWrapper(cell, 0.5, variational_recurrent=True, dtype=rc.float32)
    rc.DropoutWrapper(cell, 1.0, 0.5, variational_recurrent=True, dtype=rc.float32)
    with pytest.raises(TypeError, match="keep_prob placeholder"):
        rc.Model(lambda X, K: rc.dynamic_rnn(rc.DropoutWrapper(rc.BasicRNNCell(H), K), X),
                 {"X": rc.Input((None, None, I)), "K": rc.Input(())})
    with pytest.raises(rc.TraceError, match="dtype=f64, but its inputs are f32"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.DropoutWrapper(
            rc.BasicRNNCell(H), 1.0, 0.5, variational_recurrent=True, dtype=rc.float64), X),
            {"X": rc.Input((None, None, I))})


def test_dropout_state_filter_visitor(rng):
    """TF1's visitor: True descends, a tuple of bools selects; default skips an LSTM's c."""
    def fn(X, visitor):
        w = rc.DropoutWrapper(rc.BasicLSTMCell(H), state_keep_prob=0.5,
                              dropout_state_filter_visitor=visitor)
        return rc.dynamic_rnn(w, X)[1]

    def run(visitor):
        m = rc.Model(lambda X: fn(X, visitor), {"X": rc.Input((None, None, I))}, dtype="f64")
        p = m.init(0)
        return m(p, X=np.ones((B, T, I)), training=True, seed=1), m(p, X=np.ones((B, T, I)))

    tr_def, inf = run(None)
    none_tr, _ = run(lambda s: False)
    np.testing.assert_allclose(none_tr.c, inf.c)  # nothing dropped
    np.testing.assert_allclose(none_tr.h, inf.h)
    only_h, _ = run(lambda s: rc.LSTMStateTuple(False, True) if isinstance(s, rc.LSTMStateTuple)
                    else True)
    np.testing.assert_allclose(only_h.c, tr_def.c)  # the same as TF1's default
    np.testing.assert_allclose(only_h.h, tr_def.h)
    assert not np.allclose(tr_def.h, inf.h)


# --- dynamic_rnn / static_rnn arguments -----------------------------------------------------------
def test_time_major_and_the_no_effect_options(rng):
    def fn(X, Xt):
        a = rc.dynamic_rnn(rc.GRUCell(H, name="g"), X, scope="s")[0]
        b = rc.dynamic_rnn(rc.GRUCell(H, name="g", reuse=True), Xt, None, None, rc.float64, 32,
                           True, True, "s")[0]  # TF1's positional order, time_major=True
        return a, b
    m = rc.Model(fn, {"X": rc.Input((None, None, I)), "Xt": rc.Input(("T", "B", I))},
                 dtype="f64")
    assert sorted(m.init()) == sorted(["s/g/gates/kernel", "s/g/gates/bias",
                                       "s/g/candidate/kernel", "s/g/candidate/bias"])
    X = _x(rng)
    a, b = m(m.init(1), X=X, Xt=X.transpose(1, 0, 2))
    np.testing.assert_allclose(b.transpose(1, 0, 2), a, rtol=1e-12)
    with pytest.raises(ValueError, match="parallel_iterations must be a positive int"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H), X, parallel_iterations=0),
                 {"X": rc.Input((None, None, I))})


def test_dtype_is_honoured_or_refused():
    inp = {"X": rc.Input((None, None, I))}
    rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H), X, dtype=rc.float32), inp)
    rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H, dtype="f64"), X, dtype=np.float64), inp,
             dtype="f64")
    with pytest.raises(ValueError, match="dynamic_rnn: dtype=f64 but the inputs are f32.*"
                                         "rc.Model\\(fn, inputs, dtype='f64'\\)"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H), X, dtype="f64"), inp)
    with pytest.raises(ValueError, match="static_rnn: dtype=f64 but the inputs are f32"):
        rc.Model(lambda X: rc.static_rnn(rc.GRUCell(H), rc.unstack(X, axis=1),
                                         dtype=rc.float64), {"X": rc.Input((None, 3, I))})
    with pytest.raises(rc.TraceError, match="gru_cell: the cell was built with dtype=f64"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H, dtype=rc.float64), X), inp)


@pytest.mark.parametrize("kind", ["list", "ndarray", "tuple"])
def test_sequence_length_as_python_list_or_array(kind, rng):
    lengths = {"list": [5, 2, 0], "ndarray": np.array([5, 2, 0]), "tuple": (5, 2, 0)}[kind]

    def fn(X, L):
        a = rc.dynamic_rnn(rc.BasicRNNCell(H, name="c"), X, sequence_length=lengths)
        b = rc.dynamic_rnn(rc.BasicRNNCell(H, name="c", reuse=True), X, sequence_length=L)
        xs = rc.unstack(X, axis=1)
        c = rc.static_rnn(rc.BasicRNNCell(H, name="c", reuse=True), xs, sequence_length=lengths)
        return a, b, c
    m = rc.Model(fn, {"X": rc.Input((B, T, I)), "L": rc.Input((B,), "i32")}, dtype="f64")
    X = _x(rng)
    a, b, c = m(m.init(0), X=X, L=[5, 2, 0])  # a run-time list is fine too
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    np.testing.assert_allclose(np.stack(c[0], axis=1), b[0])
    np.testing.assert_allclose(c[1], b[1])


def test_sequence_length_literal_needs_a_static_batch():
    with pytest.raises(ValueError, match="fixes the batch size to 2, but the inputs' batch axis "
                                         "is the symbol 'B'.*rc.Input\\(\\(None,\\), 'i32'\\)"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.BasicRNNCell(H), X, sequence_length=[1, 2]),
                 {"X": rc.Input((None, None, I))})
    with pytest.raises(ValueError, match="values must be in \\[0, 3\\]"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.BasicRNNCell(H), X, sequence_length=[1, 4]),
                 {"X": rc.Input((2, 3, I))})


def test_literal_lengths_above_a_symbolic_T_stop_at_T(rng):
    m = rc.Model(lambda X: rc.dynamic_rnn(rc.BasicRNNCell(H), X, sequence_length=[9, 1]),
                 {"X": rc.Input((2, None, I))}, dtype="f64")
    X = _x(rng, shape=(2, 3, I))
    out, st = m(m.init(0), X=X)
    np.testing.assert_allclose(st[0], out[0, -1])
    np.testing.assert_allclose(st[1], out[1, 0])


# --- reuse --------------------------------------------------------------------------------------
def test_reuse_shares_parameters_as_tf1():
    def fn(X, Y):
        a = rc.dynamic_rnn(rc.BasicLSTMCell(H), X)[0]
        b = rc.dynamic_rnn(rc.BasicLSTMCell(H, reuse=True), Y)[0]
        return a, b
    m = rc.Model(fn, {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, I))})
    assert sorted(m.init()) == ["rnn/basic_lstm_cell/bias", "rnn/basic_lstm_cell/kernel"]
    x = np.ones((1, 2, I), np.float32)
    a, b = m(m.init(), X=x, Y=x)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(rc.TraceError, match="already exists.*reuse=True to share it"):
        rc.Model(lambda X: (rc.dynamic_rnn(rc.GRUCell(H), X)[0],
                            rc.dynamic_rnn(rc.GRUCell(H), X)[0]), {"X": rc.Input((None, 2, I))})
    with pytest.raises(rc.TraceError, match="does not exist, but its cell was built with "
                                            "reuse=True"):
        rc.Model(lambda X: rc.dynamic_rnn(rc.GRUCell(H, reuse=True), X),
                 {"X": rc.Input((None, 2, I))})
    m = rc.Model(lambda X: (rc.dynamic_rnn(rc.GRUCell(H, reuse=rc.AUTO_REUSE), X)[0],
                            rc.dynamic_rnn(rc.GRUCell(H, reuse=rc.AUTO_REUSE), X)[0]),
                 {"X": rc.Input((None, 2, I))})
    assert len(m.init()) == 4
    with pytest.raises(ValueError, match="reuse must be None, True, False or rnncomp.AUTO_REUSE"):
        rc.GRUCell(H, reuse="yes")
