"""bidirectional_dynamic_rnn, stack_bidirectional_dynamic_rnn and reverse_sequence (TF1
semantics), against PyTorch's bidirectional modules run on packed sequences (the independent
reference), finite differences, NumPy, and the compiled CPU backend == the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from helpers import fd_check, rel_err
from rnncomp.tools import convert

I, H = 3, 4

KINDS = {
    # kind: (rnncomp cell factory, torch module name, from_torch, cell scope name)
    "lstm": (lambda: rc.BasicLSTMCell(H), "LSTM", convert.from_torch_lstm, "basic_lstm_cell"),
    "gru": (lambda: rc.GRUCell(H, reset_after=True), "GRU", convert.from_torch_gru, "gru_cell"),
    "rnn_tanh": (lambda: rc.BasicRNNCell(H), "RNN", convert.from_torch_rnn, "basic_rnn_cell"),
}


def _final_flat(state):
    """rnncomp's final state as torch's h (and c for an LSTM)."""
    if isinstance(state, rc.LSTMStateTuple):
        return state.h, state.c
    return state, None


def _torch_run(kind, layers, X, L, R, Q):
    """A torch bidirectional module (random weights, float64) on packed sequences: returns its
    state dict, outputs [B, T, 2H] (zeros past each length), h_n [2*layers, B, H] and the
    gradient of sum(out * R) + sum(tanh(h_n) * Q) with respect to X."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = getattr(torch.nn, KINDS[kind][1])(I, H, num_layers=layers, batch_first=True,
                                            bidirectional=True).double()
    x = torch.tensor(X, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(L), batch_first=True,
                                                     enforce_sorted=False)
    out, st = mod(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                    total_length=X.shape[1])
    h_n = st[0] if kind == "lstm" else st
    loss = (out * torch.tensor(R)).sum() + (torch.tanh(h_n) * torch.tensor(Q)).sum()
    loss.backward()
    sd = {k: v.detach().numpy() for k, v in mod.state_dict().items()}
    return sd, out.detach().numpy(), h_n.detach().numpy(), x.grad.numpy()


def _model(kind, layers):
    make = KINDS[kind][0]

    def f(X, L, R, Q):
        if layers == 1:
            (of, ob), (sf, sb) = rc.bidirectional_dynamic_rnn(make(), make(), X,
                                                              sequence_length=L)
            out = rc.concat([of, ob], 2)
            hs = [_final_flat(sf)[0], _final_flat(sb)[0]]
        else:
            out, sfs, sbs = rc.contrib.rnn.stack_bidirectional_dynamic_rnn(
                [make() for _ in range(layers)], [make() for _ in range(layers)], X,
                sequence_length=L)
            hs = []
            for sf, sb in zip(sfs, sbs):
                hs += [_final_flat(sf)[0], _final_flat(sb)[0]]
        h_n = rc.stack(hs, 0)
        loss = rc.reduce_sum(out * R) + rc.reduce_sum(rc.tanh(h_n) * Q)
        return loss, out, h_n

    return rc.Model(f, {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32"),
                        "R": rc.Input((None, None, 2 * H)),
                        "Q": rc.Input((2 * layers, "B", H))}, dtype="f64")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_against_torch_packed(kind, layers, rng):
    B, T = 4, 6
    L = np.array([6, 3, 1, 5], np.int64)
    X = rng.standard_normal((B, T, I))
    R = rng.standard_normal((B, T, 2 * H))
    Q = rng.standard_normal((2 * layers, B, H))
    sd, t_out, t_hn, t_dx = _torch_run(kind, layers, X, L, R, Q)
    m = _model(kind, layers)
    params = KINDS[kind][2](sd)
    assert sorted(params) == sorted(m.init()), (sorted(params), sorted(m.init()))
    inputs = dict(X=X, L=L.astype(np.int32), R=R, Q=Q)
    (loss, out, h_n), g = m.value_and_grad(params, wrt=["X"], backend="interp", **inputs)
    assert rel_err(out, t_out) < 1e-12
    assert rel_err(h_n, t_hn) < 1e-12
    assert rel_err(g["X"], t_dx) < 1e-12
    # past each length: zeros in both directions
    for b, n in enumerate(L):
        assert not np.any(out[b, n:])


@pytest.mark.parametrize("kind,layers", [("lstm", 1), ("gru", 2)])
def test_finite_differences(kind, layers, rng):
    """Gradients of every parameter and of the inputs X (float64 interpreter) against
    random-direction finite differences."""
    m = _model(kind, layers)
    p = {k: 0.5 * rng.standard_normal(v.shape) for k, v in m.init().items()}
    B, T = 3, 5
    inputs = dict(X=rng.standard_normal((B, T, I)), L=np.array([5, 0, 2], np.int32),
                  R=rng.standard_normal((B, T, 2 * H)),
                  Q=rng.standard_normal((2 * layers, B, H)))
    wrt = sorted(p) + ["X"]
    _, g = m.value_and_grad(p, wrt=wrt, **inputs)
    fd_check(lambda pp, ii: m(pp, **ii)[0], p, inputs, g, wrt, rng, rtol=1e-6,
             what=f"{kind} x{layers}")


def test_parameter_names_and_scope():
    def f(X):
        (a, b), _ = rc.nn.bidirectional_dynamic_rnn(rc.nn.rnn_cell.GRUCell(2),
                                                    rc.nn.rnn_cell.GRUCell(2), X,
                                                    scope="enc")
        return a + b

    m = rc.Model(f, {"X": rc.Input((None, None, 1))})
    assert sorted(m.init()) == [f"enc/{d}/gru_cell/{v}" for d in ("bw", "fw")
                                for v in ("candidate/bias", "candidate/kernel", "gates/bias",
                                          "gates/kernel")]


def test_time_major_initial_states_and_no_lengths(rng):
    """time_major=True, given initial states, no sequence_length: the backward direction reads
    the whole sequence reversed (checked against running a forward dynamic_rnn on the flipped
    inputs with the bw parameters)."""
    B, T = 2, 5

    def f(X, S):
        (of, ob), (sf, sb) = rc.bidirectional_dynamic_rnn(
            rc.BasicRNNCell(H), rc.BasicRNNCell(H), X, initial_state_fw=S, initial_state_bw=S,
            time_major=True)
        return of, ob, sf, sb

    def g(X, S):
        return rc.dynamic_rnn(rc.BasicRNNCell(H), X, initial_state=S, time_major=True,
                              scope="bidirectional_rnn/bw")

    ins = {"X": rc.Input(("T", "B", I)), "S": rc.Input(("B", H))}
    m, ref = rc.Model(f, ins, dtype="f64"), rc.Model(g, ins, dtype="f64")
    p = {k: rng.standard_normal(v.shape) for k, v in m.init().items()}
    X, S = rng.standard_normal((T, B, I)), rng.standard_normal((B, H))
    of, ob, sf, sb = m(p, X=X, S=S)
    rout, rst = ref(p, X=X[::-1].copy(), S=S)
    assert rel_err(ob, rout[::-1]) < 1e-13
    assert rel_err(sb, rst) < 1e-13


def test_compiled_cpu_equals_interpreter(rng):
    """value_and_grad on the compiled CPU backend == the interpreter (one compile: an LSTM
    bidirectional layer with lengths, including a length 0)."""
    pytest.importorskip("numba")
    m = _model("lstm", 1)
    p = {k: 0.3 * rng.standard_normal(v.shape) for k, v in m.init().items()}
    B, T = 3, 5
    inputs = dict(X=rng.standard_normal((B, T, I)), L=np.array([5, 0, 2], np.int32),
                  R=rng.standard_normal((B, T, 2 * H)), Q=rng.standard_normal((2, B, H)))
    wrt = sorted(p) + ["X"]
    vi, gi = m.value_and_grad(p, wrt=wrt, backend="interp", **inputs)
    vc, gc = m.value_and_grad(p, wrt=wrt, backend="cpu", **inputs)
    for a, b in zip(vc, vi):
        assert rel_err(a, b) < 1e-12
    for k in wrt:
        assert rel_err(gc[k], gi[k]) < 1e-12, k


def _np_reverse_sequence(x, L, seq_axis, batch_axis):
    out = x.copy()
    for b, n in enumerate(L):
        src = [slice(None)] * x.ndim
        src[batch_axis] = b
        src[seq_axis] = slice(0, n)
        dst = tuple(src)
        out[dst] = np.flip(x[dst], axis=seq_axis - (batch_axis < seq_axis))
    return out


@pytest.mark.parametrize("seq_axis,batch_axis", [(1, 0), (0, 1), (2, 0)])
def test_reverse_sequence(seq_axis, batch_axis, rng):
    shape = [0, 0, 0]
    B, T, F = 3, 5, 2
    shape[batch_axis], shape[seq_axis] = B, T
    shape[3 - seq_axis - batch_axis] = F
    dims = tuple("B" if k == batch_axis else "T" if k == seq_axis else F for k in range(3))

    def f(X, L, W):
        y = rc.reverse_sequence(X, L, seq_axis=seq_axis, batch_axis=batch_axis)
        return y, rc.reduce_sum(y * W)

    m = rc.Model(f, {"X": rc.Input(dims), "L": rc.Input(("B",), "i32"), "W": rc.Input(dims)},
                 dtype="f64")
    X, W = rng.standard_normal(shape), rng.standard_normal(shape)
    L = np.array([5, 0, 3], np.int32)
    (y, _), g = m.value_and_grad({}, wrt=["X"], output=1, X=X, L=L, W=W)
    np.testing.assert_array_equal(y, _np_reverse_sequence(X, L, seq_axis, batch_axis))
    # it is a permutation that is its own inverse: the gradient is W reversed the same way
    np.testing.assert_array_equal(g["X"], _np_reverse_sequence(W, L, seq_axis, batch_axis))


def test_reverse_sequence_tf1_names():
    def f(X):
        return rc.reverse_sequence(X, [2, 1], seq_dim=1, batch_dim=0)

    m = rc.Model(f, {"X": rc.Input((2, 3))})
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(m({}, X=x), [[1, 0, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="seq_axis is required"):
        rc.Model(lambda X: rc.reverse_sequence(X, [2, 1]), {"X": rc.Input((2, 3))})


def test_errors():
    with pytest.raises(ValueError, match="cells_fw has 2 cells but cells_bw has 1"):
        rc.Model(lambda X: rc.contrib.rnn.stack_bidirectional_dynamic_rnn(
            [rc.GRUCell(2), rc.GRUCell(2)], [rc.GRUCell(2)], X)[0],
            {"X": rc.Input((None, None, 1))})
    with pytest.raises(ValueError, match=r"bidirectional_dynamic_rnn \(fw\): sequence_length"):
        rc.Model(lambda X, L: rc.bidirectional_dynamic_rnn(
            rc.GRUCell(2), rc.GRUCell(2), X, sequence_length=L)[0][0],
            {"X": rc.Input((None, None, 1)), "L": rc.Input((None,), "f32")})
