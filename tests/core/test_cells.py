"""Every built-in cell and wrapper against the independent NumPy oracle in
tests/reference_cells.py: with and without sequence_length, float32 and float64, static and
dynamic unroll; dropout masks reconstructed from rnncomp.ir.ops.hash_uniform_np; PyTorch nn.LSTM,
nn.GRU and nn.RNN with the same weights where torch is installed."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from reference_cells import gru_ref, layer_scope, lstm_ref, lstm_step, multi_ref, rnn_ref

import rnncomp as rc
from rnncomp.ir.ops import hash_uniform_np
from rnncomp.frontend.trace import flatten

B, T, I, H = 3, 5, 4, 6
SEQ = np.array([5, 2, 0], np.int32)  # full, short and empty sequences
TOL = {"f32": dict(rtol=2e-5, atol=2e-6), "f64": dict(rtol=1e-12, atol=1e-13)}


@dataclass(frozen=True)
class Case:
    make: Callable[[], rc.RNNCell]
    # ref(X, params, seq_len) -> (outputs [B, T, O], state in the cell's structure)
    ref: Callable[[np.ndarray, dict, Any], tuple[np.ndarray, Any]]


def _proj_ref(X, p, seq_len):
    scope = "rnn/output_projection_wrapper"
    out, h = rnn_ref(X, p, scope=f"{scope}/basic_rnn_cell", seq_len=seq_len)
    y = out @ p[f"{scope}/kernel"] + p[f"{scope}/bias"]
    if seq_len is not None:
        y = np.where((np.arange(T)[None, :] < seq_len[:, None])[..., None], y, 0)
    return y, h


def _multi_concat_ref(X, p, seq_len):
    out, (s0, s1) = multi_ref(X, [
        functools.partial(lstm_ref, params=p, scope=layer_scope("rnn", 0, "basic_lstm_cell")),
        functools.partial(rnn_ref, params=p, scope=layer_scope("rnn", 1, "basic_rnn_cell")),
    ], seq_len)
    return out, np.concatenate([s0[0], s0[1], s1], axis=1)


CASES = {
    "basic_rnn_tanh": Case(lambda: rc.BasicRNNCell(H),
                           lambda X, p, L: rnn_ref(X, p, activation="tanh", seq_len=L)),
    "basic_rnn_relu": Case(lambda: rc.BasicRNNCell(H, activation="relu"),
                           lambda X, p, L: rnn_ref(X, p, activation="relu", seq_len=L)),
    "basic_lstm": Case(lambda: rc.BasicLSTMCell(H),
                       lambda X, p, L: lstm_ref(X, p, seq_len=L)),
    "basic_lstm_fb0.3": Case(lambda: rc.BasicLSTMCell(H, forget_bias=0.3),
                             lambda X, p, L: lstm_ref(X, p, forget_bias=0.3, seq_len=L)),
    "lstm": Case(lambda: rc.LSTMCell(H),
                 lambda X, p, L: lstm_ref(X, p, scope="rnn/lstm_cell", seq_len=L)),
    "lstm_peepholes": Case(lambda: rc.LSTMCell(H, use_peepholes=True),
                           lambda X, p, L: lstm_ref(X, p, scope="rnn/lstm_cell", peepholes=True,
                                                    seq_len=L)),
    "gru_reset_before": Case(lambda: rc.GRUCell(H, reset_after=False),
                             lambda X, p, L: gru_ref(X, p, reset_after=False, seq_len=L)),
    "gru_reset_after": Case(lambda: rc.GRUCell(H, reset_after=True),
                            lambda X, p, L: gru_ref(X, p, reset_after=True, seq_len=L)),
    "multi_tuple": Case(
        lambda: rc.MultiRNNCell([rc.BasicLSTMCell(H), rc.GRUCell(H - 2, reset_after=False),
                                 rc.LSTMCell(H + 1, use_peepholes=True)]),
        lambda X, p, L: multi_ref(X, [
            functools.partial(lstm_ref, params=p, scope=layer_scope("rnn", 0, "basic_lstm_cell")),
            functools.partial(gru_ref, params=p, scope=layer_scope("rnn", 1, "gru_cell")),
            functools.partial(lstm_ref, params=p, scope=layer_scope("rnn", 2, "lstm_cell"),
                              peepholes=True),
        ], L)),
    "multi_concat": Case(
        lambda: rc.MultiRNNCell([rc.BasicLSTMCell(H), rc.BasicRNNCell(H)], state_is_tuple=False),
        _multi_concat_ref),
    "output_projection": Case(lambda: rc.OutputProjectionWrapper(rc.BasicRNNCell(H), 2),
                              _proj_ref),
    "dropout_inference": Case(
        lambda: rc.DropoutWrapper(rc.BasicLSTMCell(H), 0.5, 0.6, 0.7),
        lambda X, p, L: lstm_ref(X, p, seq_len=L)),
}


def random_params(model: rc.Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random values for every parameter (biases and peepholes too, so every term is tested)."""
    return {k: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype.np)
            for k, s in model.param_specs.items()}


def build(case: Case, unroll: str, with_len: bool, dtype: str) -> rc.Model:
    if unroll == "dynamic":
        def fn(X, L=None):
            return rc.dynamic_rnn(case.make(), X, sequence_length=L)
    else:
        def fn(X, L=None):
            xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), ("B", I)) for t in range(T)]
            outs, state = rc.static_rnn(case.make(), xs, sequence_length=L)
            return outs, state
    inputs = {"X": rc.Input((None, T, I))}
    if with_len:
        inputs["L"] = rc.Input((None,), "i32")
    return rc.Model(fn, inputs, dtype=dtype)


def run(model: rc.Model, unroll: str, params, X, L=None, **kw):
    feeds = {"X": X} if L is None else {"X": X, "L": L}
    out, state = model(params, **feeds, **kw)
    if unroll == "static":
        assert isinstance(out, list) and len(out) == T
        out = np.stack(out, axis=1)
    return out, state


@pytest.mark.parametrize("unroll", ["dynamic", "static"])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("with_len", [False, True], ids=["full", "seq_len"])
@pytest.mark.parametrize("name", list(CASES))
def test_cell_matches_reference(name, with_len, dtype, unroll, rng):
    case = CASES[name]
    m = build(case, unroll, with_len, dtype)
    rc.verify(m.graph)
    npdt = np.float32 if dtype == "f32" else np.float64
    p = random_params(m, rng)
    X = rng.standard_normal((B, T, I)).astype(npdt)
    L = SEQ if with_len else None
    out, state = run(m, unroll, p, X, L)
    ref_out, ref_state = case.ref(X, p, L)
    assert out.dtype == npdt and out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, **TOL[dtype])
    got, tree = flatten(state)
    want, want_tree = flatten(ref_state)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == npdt
        np.testing.assert_allclose(g, w, **TOL[dtype])
    if with_len:
        assert np.all(out[2] == 0) and np.all(out[1, 2:] == 0)


def test_state_structure_matches_tf1():
    m = build(CASES["multi_tuple"], "dynamic", False, "f32")
    p = m.init(0)
    _, state = m(p, X=np.zeros((B, T, I), np.float32))
    assert isinstance(state, tuple) and len(state) == 3
    assert isinstance(state[0], rc.LSTMStateTuple) and state[0].c.shape == (B, H)
    assert state[1].shape == (B, H - 2)
    assert state[2].h.shape == (B, H + 1)
    names = sorted(m.param_specs)
    assert names == [
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_2/lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_2/lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_2/lstm_cell/w_f_diag",
        "rnn/multi_rnn_cell/cell_2/lstm_cell/w_i_diag",
        "rnn/multi_rnn_cell/cell_2/lstm_cell/w_o_diag",
    ]
    assert m.param_specs["rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel"].shape == (H + H - 2,
                                                                                     2 * (H - 2))


# ---------------------------------------------------------------------------------------------
# DropoutWrapper in training mode
# ---------------------------------------------------------------------------------------------
KEEP_IN, KEEP_OUT, KEEP_STATE = 0.6, 0.7, 0.8


def _dropout_model(unroll="dynamic"):
    def fn(X):
        cell = rc.DropoutWrapper(rc.BasicLSTMCell(H), KEEP_IN, KEEP_OUT, KEEP_STATE)
        if unroll == "dynamic":
            return rc.dynamic_rnn(cell, X)
        xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), ("B", I)) for t in range(T)]
        return rc.static_rnn(cell, xs)

    return rc.Model(fn, {"X": rc.Input((None, T, I))})


def _dropout_ref(X, p, seed):
    """LSTM with dropout masks rebuilt from the counter-based hash: in a dynamic_rnn the sites are
    1 (input), 2 (output), 3 (state h) in trace order and the step is the time index."""
    c = np.zeros((B, H), np.float32)
    h = np.zeros((B, H), np.float32)
    outs = []

    def mask(site, t, shape, keep):
        u = hash_uniform_np(seed, site, t, int(np.prod(shape)), np.float32).reshape(shape)
        return u < np.float32(keep)

    for t in range(T):
        x = np.where(mask(1, t, (B, I), KEEP_IN), X[:, t] * np.float32(1 / KEEP_IN), 0)
        c, h = lstm_step(x, c, h, p, "rnn/basic_lstm_cell")
        outs.append(np.where(mask(2, t, (B, H), KEEP_OUT), h * np.float32(1 / KEEP_OUT), 0))
        h = np.where(mask(3, t, (B, H), KEEP_STATE), h * np.float32(1 / KEEP_STATE), 0)
    return np.stack(outs, 1), (c, h)


@pytest.mark.parametrize("unroll", ["dynamic", "static"])
def test_dropout_training_matches_masks_from_hash(rng, unroll):
    """static_rnn draws the masks dynamic_rnn draws: the copies of the cell are steps 0..T-1
    of one loop (same sites, the step index t), so the reroll pass can make them one scan."""
    m = _dropout_model(unroll)
    rc.verify(m.graph)
    assert {"@training", "@seed"} <= {n.name for n in m.graph.inputs}
    p = random_params(m, rng)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    out, (c, h) = m(p, training=True, seed=7, X=X)
    if unroll == "static":
        out = np.stack(out, 1)
    ref_out, (rc_, rh) = _dropout_ref(X, p, 7)
    np.testing.assert_allclose(out, ref_out, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(c, rc_, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(h, rh, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("unroll", ["dynamic", "static"])
def test_dropout_deterministic_per_seed_and_identity_at_inference(rng, unroll):
    m = _dropout_model(unroll)
    p = random_params(m, rng)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    ref_out, _ = lstm_ref(X, p)
    get = (lambda o: np.stack(o, 1)) if unroll == "static" else (lambda o: o)
    inf = get(m(p, X=X)[0])
    np.testing.assert_allclose(inf, ref_out, rtol=2e-5, atol=2e-6)
    inf_seeded = get(m(p, seed=99, X=X)[0])  # the seed has no effect at inference
    np.testing.assert_array_equal(inf, inf_seeded)
    a = get(m(p, training=True, seed=1, X=X)[0])
    a2 = get(m(p, training=True, seed=1, X=X)[0])
    b = get(m(p, training=True, seed=2, X=X)[0])
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    assert not np.allclose(a, inf)


def test_dropout_keep_fraction_and_scaling():
    """dsl.dropout on a large array: ~keep_prob of the entries kept, each scaled by 1/keep_prob."""
    keep = 0.7

    def fn(X):
        return rc.dropout(X, keep)

    m = rc.Model(fn, {"X": rc.Input((200, 500))})
    X = np.ones((200, 500), np.float32)
    y = m({}, training=True, seed=5, X=X)
    kept = y != 0
    assert abs(kept.mean() - keep) < 0.01
    np.testing.assert_allclose(y[kept], np.float32(1 / keep), rtol=1e-6)
    np.testing.assert_array_equal(m({}, training=False, seed=5, X=X), X)
    # the mask is the hash's: element i is kept iff u(seed, site=1, step=0, i) < keep
    u = hash_uniform_np(5, 1, 0, X.size, np.float32).reshape(X.shape)
    np.testing.assert_array_equal(kept, u < np.float32(keep))


# ---------------------------------------------------------------------------------------------
# PyTorch nn modules with the same weights (through rnncomp.tools.convert)
# ---------------------------------------------------------------------------------------------
def _torch_run(module, X, torch):
    with torch.no_grad():
        out, st = module(torch.from_numpy(X))
    return out.numpy(), st


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_against_torch(kind, rng):
    torch = pytest.importorskip("torch")
    from rnncomp import convert

    torch.manual_seed(0)
    if kind == "lstm":
        mod = torch.nn.LSTM(I, H, batch_first=True)
        cell = lambda: rc.BasicLSTMCell(H)  # noqa: E731
        conv = convert.from_torch_lstm
    elif kind == "gru":
        mod = torch.nn.GRU(I, H, batch_first=True)
        cell = lambda: rc.GRUCell(H, reset_after=True)  # noqa: E731
        conv = convert.from_torch_gru
    else:
        act = kind.split("_")[1]
        mod = torch.nn.RNN(I, H, batch_first=True, nonlinearity=act)
        cell = lambda: rc.BasicRNNCell(H, activation=act)  # noqa: E731
        conv = convert.from_torch_rnn
    mod = mod.double()
    with torch.no_grad():  # non-zero biases everywhere
        for prm in mod.parameters():
            prm.uniform_(-0.6, 0.6)
    sd = {k: v.detach().numpy() for k, v in mod.state_dict().items()}
    p = conv(sd)
    m = rc.Model(lambda X: rc.dynamic_rnn(cell(), X), {"X": rc.Input((None, None, I))},
                 dtype="f64")
    assert sorted(p) == sorted(m.param_specs)
    X = rng.standard_normal((B, 7, I))
    out, state = m(p, X=X)
    t_out, t_st = _torch_run(mod, X, torch)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        t_h, t_c = t_st
        np.testing.assert_allclose(state.h, t_h[0].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.c, t_c[0].numpy(), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(state, t_st[0].numpy(), rtol=1e-10, atol=1e-12)
