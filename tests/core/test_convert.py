"""Tests for rnncomp.tools.convert (PyTorch <-> TF1 parameter layouts).

The TF1 side is evaluated with the independent NumPy oracle in tests/reference_cells.py;
the PyTorch side with real nn.LSTM / nn.GRU / nn.RNN modules (skipped without torch).
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for reference_cells

import reference_cells as ref  # noqa: E402
from reference_cells import gru_ref, layer_scope, lstm_ref, multi_ref, rnn_ref  # noqa: E402

from rnncomp import convert  # noqa: E402

B, T, I, H = 3, 6, 5, 4
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_params_equal(p, q):
    assert sorted(p) == sorted(q)
    for k in p:
        assert p[k].dtype == q[k].dtype, k
        assert p[k].shape == q[k].shape, k
        assert np.array_equal(p[k], q[k]), k


# --------------------------------------------------------------------------- torch helpers


def _torch():
    return pytest.importorskip("torch")


def make_torch(kind, num_layers, dtype, nonlinearity="tanh", seed=0, input_size=I, bias=True):
    torch = _torch()
    torch.manual_seed(seed)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    if kind == "lstm":
        m = torch.nn.LSTM(input_size, H, num_layers=num_layers, batch_first=True, bias=bias)
    elif kind == "gru":
        m = torch.nn.GRU(input_size, H, num_layers=num_layers, batch_first=True, bias=bias)
    else:
        m = torch.nn.RNN(input_size, H, num_layers=num_layers, batch_first=True,
                         nonlinearity=nonlinearity, bias=bias)
    m = m.to(tdtype)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in m.parameters():  # larger than default init to exercise the nonlinearities
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.5, size=tuple(p.shape)).astype(dtype)))
    return m


def state_dict_np(m):
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


def run_torch(m, X, seq_len=None):
    """Returns (outputs [B,T,H], h_n [L,B,H], c_n [L,B,H] or None) as numpy."""
    torch = _torch()
    x = torch.from_numpy(X)
    with torch.no_grad():
        if seq_len is None:
            out, st = m(x)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.as_tensor(seq_len), batch_first=True, enforce_sorted=False)
            out, st = m(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                            total_length=X.shape[1])
    if isinstance(st, tuple):
        h, c = st
        return out.numpy(), h.numpy(), c.numpy()
    return out.numpy(), st.numpy(), None


def tf_layers(kind, params, num_layers, scope="rnn", nonlinearity="tanh", forget_bias=1.0):
    """Per-layer oracle callables for the converted params."""
    cell = {"lstm": "basic_lstm_cell", "gru": "gru_cell", "rnn": "basic_rnn_cell"}[kind]
    scopes = ([f"{scope}/{cell}"] if num_layers == 1
              else [layer_scope(scope, k, cell) for k in range(num_layers)])
    if kind == "lstm":
        return [functools.partial(lstm_ref, params=params, scope=s, forget_bias=forget_bias)
                for s in scopes]
    if kind == "gru":
        return [functools.partial(gru_ref, params=params, scope=s, reset_after=True)
                for s in scopes]
    return [functools.partial(rnn_ref, params=params, scope=s, activation=nonlinearity)
            for s in scopes]


FROM = {"lstm": convert.from_torch_lstm, "gru": convert.from_torch_gru,
        "rnn": convert.from_torch_rnn}
TO = {"lstm": convert.to_torch_lstm, "gru": convert.to_torch_gru, "rnn": convert.to_torch_rnn}

KINDS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]


def compare_torch_vs_ref(kind, nonlinearity, m, params, num_layers, X, dtype, seq_len=None):
    tol = TOL[dtype]
    out_t, h_t, c_t = run_torch(m, X, seq_len)
    out_r, states = multi_ref(X, tf_layers(kind, params, num_layers, nonlinearity=nonlinearity),
                              seq_len=seq_len)
    assert out_r.dtype == dtype
    assert rel_err(out_r, out_t) < tol
    for k, st in enumerate(states):
        if kind == "lstm":
            c_r, h_r = st
            assert rel_err(c_r, c_t[k]) < tol
        else:
            h_r = st
        assert rel_err(h_r, h_t[k]) < tol


# --------------------------------------------------------------------------- torch parity


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind,nonlinearity", KINDS)
def test_from_torch_matches_torch(kind, nonlinearity, num_layers, dtype):
    m = make_torch(kind, num_layers, dtype, nonlinearity, seed=num_layers)
    params = FROM[kind](state_dict_np(m))
    cell = {"lstm": "basic_lstm_cell", "gru": "gru_cell", "rnn": "basic_rnn_cell"}[kind]
    if num_layers == 1:
        assert f"rnn/{cell}/" in next(iter(params))
    else:
        assert all(k.startswith("rnn/multi_rnn_cell/cell_") for k in params)
    for v in params.values():
        assert v.dtype == dtype and v.flags.c_contiguous
    X = np.random.default_rng(1).normal(size=(B, T, I)).astype(dtype)
    compare_torch_vs_ref(kind, nonlinearity, m, params, num_layers, X, dtype)


@pytest.mark.torch
@pytest.mark.parametrize("kind,nonlinearity", KINDS)
def test_from_torch_matches_torch_with_seq_len(kind, nonlinearity):
    """dynamic_rnn sequence_length semantics of the oracle == torch packed sequences."""
    dtype = np.float64
    m = make_torch(kind, 2, dtype, nonlinearity, seed=7)
    params = FROM[kind](state_dict_np(m))
    X = np.random.default_rng(2).normal(size=(4, T, I))
    seq_len = np.array([T, 2, 1, 4])
    compare_torch_vs_ref(kind, nonlinearity, m, params, 2, X, dtype, seq_len=seq_len)


@pytest.mark.torch
@pytest.mark.parametrize("kind,nonlinearity", KINDS)
def test_accepts_torch_tensors_directly(kind, nonlinearity):
    m = make_torch(kind, 1, np.float32, nonlinearity)
    p_tensors = FROM[kind](dict(m.named_parameters()))  # tensors that require grad
    assert_params_equal(p_tensors, FROM[kind](state_dict_np(m)))


@pytest.mark.torch
@pytest.mark.parametrize("kind,nonlinearity", KINDS)
def test_bias_false_module(kind, nonlinearity):
    m = make_torch(kind, 2, np.float64, nonlinearity, bias=False)
    sd = state_dict_np(m)
    assert not any(k.startswith("bias") for k in sd)
    params = FROM[kind](sd)
    X = np.random.default_rng(3).normal(size=(B, T, I))
    compare_torch_vs_ref(kind, nonlinearity, m, params, 2, X, np.float64)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind,nonlinearity", KINDS)
def test_torch_round_trip_module(kind, nonlinearity, num_layers, dtype):
    """to_torch(from_torch(sd)) loads into a fresh module with the same outputs."""
    torch = _torch()
    m = make_torch(kind, num_layers, dtype, nonlinearity, seed=3)
    sd2 = TO[kind](FROM[kind](state_dict_np(m)))
    assert sorted(sd2) == sorted(m.state_dict())
    for k, v in sd2.items():
        assert v.dtype == dtype and v.shape == tuple(m.state_dict()[k].shape)
    m2 = make_torch(kind, num_layers, dtype, nonlinearity, seed=99)
    m2.load_state_dict({k: torch.from_numpy(v) for k, v in sd2.items()})
    X = np.random.default_rng(4).normal(size=(B, T, I)).astype(dtype)
    o1, h1, c1 = run_torch(m, X)
    o2, h2, c2 = run_torch(m2, X)
    tol = TOL[dtype]
    assert rel_err(o2, o1) < tol and rel_err(h2, h1) < tol
    if c1 is not None:
        assert rel_err(c2, c1) < tol
    # Weights are copied bit-for-bit; only the bias split changes.
    for k, v in state_dict_np(m).items():
        if k.startswith("weight"):
            assert np.array_equal(sd2[k], v)


@pytest.mark.torch
def test_to_torch_from_random_tf_params_matches_oracle():
    """TF-layout params (not from torch) -> torch module == oracle, incl. forget_bias."""
    torch = _torch()
    rng = np.random.default_rng(5)
    fb = 0.7
    p = {"enc/multi_rnn_cell/cell_0/basic_lstm_cell/kernel": rng.normal(size=(I + H, 4 * H)),
         "enc/multi_rnn_cell/cell_0/basic_lstm_cell/bias": rng.normal(size=4 * H),
         "enc/multi_rnn_cell/cell_1/basic_lstm_cell/kernel": rng.normal(size=(2 * H, 4 * H)),
         "enc/multi_rnn_cell/cell_1/basic_lstm_cell/bias": rng.normal(size=4 * H)}
    sd = convert.to_torch_lstm(p, scope="enc", forget_bias=fb)
    m = make_torch("lstm", 2, np.float64)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    X = rng.normal(size=(B, T, I))
    out_t, h_t, c_t = run_torch(m, X)
    layers = [functools.partial(lstm_ref, params=p, scope=layer_scope("enc", k, "basic_lstm_cell"),
                                forget_bias=fb) for k in range(2)]
    out_r, ((c0, h0), (c1, h1)) = multi_ref(X, layers)
    assert rel_err(out_r, out_t) < 1e-10
    assert rel_err(c1, c_t[1]) < 1e-10 and rel_err(h0, h_t[0]) < 1e-10


# --------------------------------------------------------------------------- round trips (numpy)


def random_tf_params(kind, num_layers, dtype, seed=0, scope="rnn", cell=None):
    rng = np.random.default_rng(seed)
    cell = cell or {"lstm": "basic_lstm_cell", "gru": "gru_cell", "rnn": "basic_rnn_cell"}[kind]
    p = {}
    for k in range(num_layers):
        s = f"{scope}/{cell}" if num_layers == 1 else layer_scope(scope, k, cell)
        n_in = (I if k == 0 else H) + H
        if kind == "lstm":
            shapes = {"kernel": (n_in, 4 * H), "bias": (4 * H,)}
        elif kind == "gru":
            shapes = {"gates/kernel": (n_in, 2 * H), "gates/bias": (2 * H,),
                      "candidate/kernel": (n_in, H), "candidate/bias": (H,),
                      "candidate/recurrent_bias": (H,)}
        else:
            shapes = {"kernel": (n_in, H), "bias": (H,)}
        for name, shape in shapes.items():
            p[f"{s}/{name}"] = rng.normal(size=shape).astype(dtype)
    return p


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_round_trip_tf_exact(kind, num_layers, dtype):
    p = random_tf_params(kind, num_layers, dtype, seed=num_layers)
    sd = TO[kind](p)
    for v in sd.values():
        assert v.dtype == dtype and v.flags.c_contiguous
    assert_params_equal(FROM[kind](sd), p)


@pytest.mark.parametrize("fb", [0.0, 1.0, 0.3])
def test_round_trip_lstm_forget_bias_and_names(fb):
    p = random_tf_params("lstm", 1, np.float64, scope="outer/rnn", cell="lstm_cell")
    sd = convert.to_torch_lstm(p, scope="outer/rnn", forget_bias=fb, cell="lstm_cell",
                               prefix="lstm.")
    assert sorted(sd) == ["lstm.bias_hh_l0", "lstm.bias_ih_l0", "lstm.weight_hh_l0",
                          "lstm.weight_ih_l0"]
    # bias_ih carries the TF bias (i, f, g, o order); bias_hh only the constant forget_bias.
    b_hh = sd["lstm.bias_hh_l0"]
    assert np.all(b_hh[:H] == 0) and np.all(b_hh[H:2 * H] == fb) and np.all(b_hh[2 * H:] == 0)
    sd["other.weight"] = np.zeros(3)  # keys outside the prefix are ignored
    back = convert.from_torch_lstm(sd, scope="outer/rnn", forget_bias=fb, cell="lstm_cell",
                                   prefix="lstm.")
    assert_params_equal(back, p)


def test_lstm_gate_order_and_forget_bias_explicit():
    """Hand-built torch blocks land in the documented TF columns."""
    h, i_sz = 2, 3
    blocks = {g: np.full((h, i_sz + h), v) for g, v in zip("ifgo", [1.0, 2.0, 3.0, 4.0])}
    w = np.concatenate([blocks[g] for g in "ifgo"])
    sd = {"weight_ih_l0": w[:, :i_sz], "weight_hh_l0": w[:, i_sz:],
          "bias_ih_l0": np.repeat([10.0, 20.0, 30.0, 40.0], h),
          "bias_hh_l0": np.repeat([0.5, 0.25, 0.125, 1.0], h)}
    p = convert.from_torch_lstm(sd, forget_bias=1.0)
    k, b = p["rnn/basic_lstm_cell/kernel"], p["rnn/basic_lstm_cell/bias"]
    assert k.shape == (i_sz + h, 4 * h)
    np.testing.assert_array_equal(k[0, ::h], [1.0, 3.0, 2.0, 4.0])  # i, j(=g), f, o
    np.testing.assert_array_equal(b[::h], [10.5, 30.125, 20.25 - 1.0, 41.0])


def test_gru_layout_explicit():
    h, i_sz = 2, 3
    rng = np.random.default_rng(0)
    sd = {"weight_ih_l0": rng.normal(size=(3 * h, i_sz)),
          "weight_hh_l0": rng.normal(size=(3 * h, h)),
          "bias_ih_l0": rng.normal(size=3 * h), "bias_hh_l0": rng.normal(size=3 * h)}
    p = convert.from_torch_gru(sd, scope="g")
    s = "g/gru_cell"
    np.testing.assert_array_equal(p[f"{s}/gates/kernel"][:i_sz], sd["weight_ih_l0"][:2 * h].T)
    np.testing.assert_array_equal(p[f"{s}/gates/kernel"][i_sz:], sd["weight_hh_l0"][:2 * h].T)
    np.testing.assert_array_equal(p[f"{s}/candidate/kernel"][:i_sz], sd["weight_ih_l0"][2 * h:].T)
    np.testing.assert_array_equal(p[f"{s}/candidate/kernel"][i_sz:], sd["weight_hh_l0"][2 * h:].T)
    np.testing.assert_array_equal(p[f"{s}/gates/bias"],
                                  sd["bias_ih_l0"][:2 * h] + sd["bias_hh_l0"][:2 * h])
    np.testing.assert_array_equal(p[f"{s}/candidate/bias"], sd["bias_ih_l0"][2 * h:])
    np.testing.assert_array_equal(p[f"{s}/candidate/recurrent_bias"], sd["bias_hh_l0"][2 * h:])


def test_outputs_do_not_alias_inputs():
    p = random_tf_params("rnn", 1, np.float64)
    sd = convert.to_torch_rnn(p)
    for v in sd.values():
        v[...] = 0
    assert np.all(p["rnn/basic_rnn_cell/bias"] != 0)


def test_single_layer_multi_layout_and_num_layers():
    sd = convert.to_torch_rnn(random_tf_params("rnn", 1, np.float64))
    p = convert.from_torch_rnn(sd, num_layers=1, multi=True)
    assert sorted(p) == ["rnn/multi_rnn_cell/cell_0/basic_rnn_cell/bias",
                         "rnn/multi_rnn_cell/cell_0/basic_rnn_cell/kernel"]
    assert_params_equal(convert.from_torch_rnn(convert.to_torch_rnn(p), multi=True), p)


def test_mixed_dtypes_promote():
    sd = convert.to_torch_rnn(random_tf_params("rnn", 1, np.float32))
    sd["bias_hh_l0"] = sd["bias_hh_l0"].astype(np.float64)
    p = convert.from_torch_rnn(sd)
    assert all(v.dtype == np.float64 for v in p.values())


# --------------------------------------------------------------------------- errors


def _lstm_sd(num_layers=2):
    return convert.to_torch_lstm(random_tf_params("lstm", num_layers, np.float64))


def test_error_missing_torch_key():
    sd = _lstm_sd()
    del sd["weight_hh_l1"]
    with pytest.raises(ValueError, match=r"missing key 'weight_hh_l1'.*\[4\*H, H\]"):
        convert.from_torch_lstm(sd)
    sd = _lstm_sd()
    del sd["bias_ih_l0"]
    with pytest.raises(ValueError, match=r"missing key 'bias_ih_l0'.*\[16\]"):
        convert.from_torch_lstm(sd)
    with pytest.raises(ValueError, match=r"missing key 'weight_ih_l0'"):
        convert.from_torch_gru({})


def test_error_wrong_torch_shape():
    sd = _lstm_sd()
    sd["weight_ih_l0"] = sd["weight_ih_l0"][:-1]
    with pytest.raises(ValueError, match=r"'weight_ih_l0' has shape \(15, 5\), expected \(16, 5\)"):
        convert.from_torch_lstm(sd)
    sd = _lstm_sd()
    sd["bias_hh_l1"] = np.zeros(12)
    with pytest.raises(ValueError, match=r"'bias_hh_l1' has shape \(12,\), expected \(16,\)"):
        convert.from_torch_lstm(sd)
    # A GRU state dict given to the LSTM converter: 3H rows instead of 4H.
    gsd = convert.to_torch_gru(random_tf_params("gru", 1, np.float64))
    with pytest.raises(ValueError, match=r"'weight_hh_l0' has shape \(12, 4\), expected \(16, 4\)"):
        convert.from_torch_lstm(gsd)


def test_error_inconsistent_torch_layers():
    sd = _lstm_sd()
    sd["weight_ih_l1"] = np.zeros((16, 7))
    with pytest.raises(ValueError, match=r"inconsistent layer sizes.*'weight_ih_l1'.*\(16, 7\)"
                                         r".*expected \(16, 4\)"):
        convert.from_torch_lstm(sd)
    sd = _lstm_sd()
    sd["weight_hh_l1"] = np.zeros((20, 5))
    with pytest.raises(ValueError, match=r"inconsistent layer sizes.*'weight_hh_l1'"):
        convert.from_torch_lstm(sd)
    with pytest.raises(ValueError, match=r"layer 1 but num_layers=1"):
        convert.from_torch_lstm(_lstm_sd(), num_layers=1)
    with pytest.raises(ValueError, match=r"missing key 'weight_hh_l2'"):
        convert.from_torch_lstm(_lstm_sd(), num_layers=3)


def test_error_projection():
    sd = _lstm_sd(1)
    sd["weight_hr_l0"] = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"'weight_hr_l0'.*proj_size"):
        convert.from_torch_lstm(sd)
    sd = _lstm_sd(1)
    sd["weight_xx_l0"] = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"unexpected key 'weight_xx_l0'"):
        convert.from_torch_lstm(sd)


@pytest.mark.torch
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_bidirectional_torch_module_round_trip(kind, layers):
    """bidirectional=True state dicts map to bidirectional_dynamic_rnn's layout (one layer) or
    stack_bidirectional_dynamic_rnn's (several), and back to the same keys and values (the
    biases as to_torch_* always splits them). Against PyTorch's outputs:
    tests/core/test_bidirectional.py."""
    torch = _torch()
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        I, H, num_layers=layers, bidirectional=True)
    sd = state_dict_np(mod)
    p = FROM[kind](sd)
    cell = {"lstm": "basic_lstm_cell", "gru": "gru_cell", "rnn": "basic_rnn_cell"}[kind]
    probe = "gates/kernel" if kind == "gru" else "kernel"
    want = ([f"bidirectional_rnn/{d}/{cell}/{probe}" for d in ("fw", "bw")] if layers == 1 else
            [f"stack_bidirectional_rnn/cell_{k}/bidirectional_rnn/{d}/{cell}/{probe}"
             for k in range(layers) for d in ("fw", "bw")])
    assert all(k in p for k in want), sorted(p)
    if layers == 2:  # layer 1 reads [fw, bw] of layer 0
        k1 = f"stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/{cell}/{probe}"
        assert p[k1].shape[0] == 2 * H + H
    back = TO[kind](p)
    assert sorted(back) == sorted(sd)
    again = FROM[kind](back)
    assert sorted(again) == sorted(p) and all(np.array_equal(again[k], p[k]) for k in p)
    for k in sd:
        if k.startswith("weight"):
            np.testing.assert_array_equal(back[k], sd[k])
    # an explicit scope, both ways
    p2 = FROM[kind](sd, scope="enc", multi=True)
    assert f"enc/cell_0/bidirectional_rnn/fw/{cell}/{probe}" in p2
    assert sorted(TO[kind](p2, scope="enc")) == sorted(sd)


def test_error_bidirectional_mismatch():
    sd = _lstm_sd(1)
    sd["weight_ih_l0_reverse"] = sd["weight_ih_l0"]
    with pytest.raises(ValueError, match=r"missing key 'weight_hh_l0'"):
        convert.from_torch_lstm(sd)


def test_error_non_float():
    sd = convert.to_torch_rnn(random_tf_params("rnn", 1, np.float64))
    sd["weight_hh_l0"] = sd["weight_hh_l0"].astype(np.int64)
    with pytest.raises(ValueError, match=r"'weight_hh_l0' has dtype int64"):
        convert.from_torch_rnn(sd)


def test_error_missing_tf_key():
    p = random_tf_params("lstm", 2, np.float64)
    del p["rnn/multi_rnn_cell/cell_1/basic_lstm_cell/bias"]
    with pytest.raises(ValueError, match=r"missing key 'rnn/multi_rnn_cell/cell_1/basic_lstm_cell"
                                         r"/bias'.*\[16\]"):
        convert.to_torch_lstm(p)
    with pytest.raises(ValueError, match=r"missing key 'rnn/basic_lstm_cell/kernel'.*"
                                         r"'rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel'"):
        convert.to_torch_lstm(random_tf_params("gru", 1, np.float64))
    p = random_tf_params("gru", 1, np.float64)
    del p["rnn/gru_cell/candidate/recurrent_bias"]
    with pytest.raises(ValueError, match=r"missing key 'rnn/gru_cell/candidate/recurrent_bias'"
                                         r".*reset_after=False"):
        convert.to_torch_gru(p)
    p = random_tf_params("rnn", 3, np.float64)
    for k in [k for k in p if "cell_1" in k]:
        del p[k]
    with pytest.raises(ValueError, match=r"missing key 'rnn/multi_rnn_cell/cell_1/basic_rnn_cell"
                                         r"/kernel'"):
        convert.to_torch_rnn(p)


def test_error_wrong_tf_shape():
    p = random_tf_params("lstm", 1, np.float64)
    p["rnn/basic_lstm_cell/bias"] = np.zeros(12)
    with pytest.raises(ValueError, match=r"'rnn/basic_lstm_cell/bias' has shape \(12,\), "
                                         r"expected \(16,\)"):
        convert.to_torch_lstm(p)
    p = random_tf_params("lstm", 1, np.float64)
    p["rnn/basic_lstm_cell/kernel"] = np.zeros((9, 15))
    with pytest.raises(ValueError, match=r"'rnn/basic_lstm_cell/kernel' has shape \(9, 15\)"):
        convert.to_torch_lstm(p)
    p = random_tf_params("gru", 1, np.float64)
    p["rnn/gru_cell/candidate/kernel"] = np.zeros((9, 5))
    with pytest.raises(ValueError, match=r"'rnn/gru_cell/candidate/kernel' has shape \(9, 5\), "
                                         r"expected \(9, 4\)"):
        convert.to_torch_gru(p)


def test_error_inconsistent_tf_layers():
    p = random_tf_params("rnn", 2, np.float64)
    # Layer 1 with hidden size 4 but input size 6 (TF allows it, torch does not).
    p["rnn/multi_rnn_cell/cell_1/basic_rnn_cell/kernel"] = np.zeros((10, 4))
    with pytest.raises(ValueError, match=r"inconsistent layer sizes.*cell_1/basic_rnn_cell/kernel"
                                         r".*\(10, 4\).*expected \(8, 4\)"):
        convert.to_torch_rnn(p)
    p = random_tf_params("rnn", 2, np.float64)
    p["rnn/multi_rnn_cell/cell_1/basic_rnn_cell/kernel"] = np.zeros((9, 5))
    p["rnn/multi_rnn_cell/cell_1/basic_rnn_cell/bias"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"inconsistent layer sizes.*hidden size 5"):
        convert.to_torch_rnn(p)


def test_error_peepholes_to_torch():
    p = random_tf_params("lstm", 1, np.float64, cell="lstm_cell")
    p["rnn/lstm_cell/w_f_diag"] = np.zeros(H)
    with pytest.raises(ValueError, match=r"'rnn/lstm_cell/w_f_diag'.*peephole"):
        convert.to_torch_lstm(p, cell="lstm_cell")


# --------------------------------------------------------------------------- oracle self-checks


def _scalar_sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_oracle_scalar_cells_by_hand():
    """I = H = 1, one step, computed with the math module."""
    x, h, c = 0.3, -0.4, 0.25
    X = np.array([[[x]]])
    # BasicRNNCell
    p = {"s/kernel": np.array([[0.5], [-1.5]]), "s/bias": np.array([0.1])}
    out, hn = rnn_ref(X, p, "s", h0=np.array([[h]]))
    assert out[0, 0, 0] == pytest.approx(math.tanh(0.5 * x - 1.5 * h + 0.1), rel=1e-14)
    _, hn = rnn_ref(X, p, "s", "relu", h0=np.array([[h]]))
    assert hn[0, 0] == pytest.approx(max(0.0, 0.5 * x - 1.5 * h + 0.1), rel=1e-14)
    # LSTM with peepholes
    k = np.array([[0.1, 0.2, 0.3, 0.4], [-0.5, 0.6, -0.7, 0.8]])
    b = np.array([0.01, 0.02, 0.03, 0.04])
    p = {"l/kernel": k, "l/bias": b, "l/w_i_diag": np.array([0.9]),
         "l/w_f_diag": np.array([-0.8]), "l/w_o_diag": np.array([0.7])}
    z = [k[0, g] * x + k[1, g] * h + b[g] for g in range(4)]
    for peep in (False, True):
        pi, pf, po = (0.9, -0.8, 0.7) if peep else (0.0, 0.0, 0.0)
        ig = _scalar_sig(z[0] + pi * c)
        fg = _scalar_sig(z[2] + 0.5 + pf * c)
        c2 = fg * c + ig * math.tanh(z[1])
        h2 = _scalar_sig(z[3] + po * c2) * math.tanh(c2)
        _, (cn, hn) = lstm_ref(X, p, "l", forget_bias=0.5, peepholes=peep,
                               h0=np.array([[h]]), c0=np.array([[c]]))
        assert cn[0, 0] == pytest.approx(c2, rel=1e-14)
        assert hn[0, 0] == pytest.approx(h2, rel=1e-14)
    # GRU both forms
    gk = np.array([[0.3, -0.2], [0.5, 0.4]])
    gb = np.array([0.1, -0.1])
    ck = np.array([[0.6], [-0.9]])
    p = {"g/gates/kernel": gk, "g/gates/bias": gb, "g/candidate/kernel": ck,
         "g/candidate/bias": np.array([0.05]), "g/candidate/recurrent_bias": np.array([0.2])}
    r = _scalar_sig(gk[0, 0] * x + gk[1, 0] * h + gb[0])
    u = _scalar_sig(gk[0, 1] * x + gk[1, 1] * h + gb[1])
    cand_before = math.tanh(0.6 * x - 0.9 * (r * h) + 0.05)
    cand_after = math.tanh(0.6 * x + 0.05 + r * (-0.9 * h + 0.2))
    for ra, cand in ((False, cand_before), (True, cand_after)):
        _, hn = gru_ref(X, p, "g", reset_after=ra, h0=np.array([[h]]))
        assert hn[0, 0] == pytest.approx(u * h + (1 - u) * cand, rel=1e-14)


def _peephole_lstm_alt(X, p, s, fb, c0, h0):
    """Second implementation: split kernels, per-example loop, per-gate matrices."""
    Bn, Tn, In = X.shape
    Hn = h0.shape[1]
    K, bias = p[f"{s}/kernel"], p[f"{s}/bias"]
    Wx, Wh = K[:In], K[In:]
    gate = {g: (Wx[:, n * Hn:(n + 1) * Hn], Wh[:, n * Hn:(n + 1) * Hn], bias[n * Hn:(n + 1) * Hn])
            for n, g in enumerate("ijfo")}
    wi, wf, wo = p[f"{s}/w_i_diag"], p[f"{s}/w_f_diag"], p[f"{s}/w_o_diag"]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    outs = np.zeros((Bn, Tn, Hn))
    cs, hs = c0.copy(), h0.copy()
    for bi in range(Bn):
        c, h = c0[bi].copy(), h0[bi].copy()
        for t in range(Tn):
            pre = {g: X[bi, t] @ wx + h @ wh + bb for g, (wx, wh, bb) in gate.items()}
            i = sig(pre["i"] + wi * c)
            f = sig(pre["f"] + fb + wf * c)
            c = f * c + i * np.tanh(pre["j"])
            h = sig(pre["o"] + wo * c) * np.tanh(c)
            outs[bi, t] = h
        cs[bi], hs[bi] = c, h
    return outs, (cs, hs)


def _gru_before_alt(X, p, s, h0):
    Bn, Tn, In = X.shape
    Hn = h0.shape[1]
    Kg, bg = p[f"{s}/gates/kernel"], p[f"{s}/gates/bias"]
    Kc, bc = p[f"{s}/candidate/kernel"], p[f"{s}/candidate/bias"]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    outs = np.zeros((Bn, Tn, Hn))
    hs = h0.copy()
    for bi in range(Bn):
        h = h0[bi].copy()
        for t in range(Tn):
            x = X[bi, t]
            r = sig(x @ Kg[:In, :Hn] + h @ Kg[In:, :Hn] + bg[:Hn])
            u = sig(x @ Kg[:In, Hn:] + h @ Kg[In:, Hn:] + bg[Hn:])
            cand = np.tanh(x @ Kc[:In] + (r * h) @ Kc[In:] + bc)
            h = u * h + (1.0 - u) * cand
            outs[bi, t] = h
        hs[bi] = h
    return outs, hs


def test_oracle_peephole_lstm_self_consistent():
    rng = np.random.default_rng(11)
    s = "rnn/lstm_cell"
    p = {f"{s}/kernel": rng.normal(0, 0.5, (I + H, 4 * H)), f"{s}/bias": rng.normal(0, 0.5, 4 * H),
         f"{s}/w_i_diag": rng.normal(size=H), f"{s}/w_f_diag": rng.normal(size=H),
         f"{s}/w_o_diag": rng.normal(size=H)}
    X = rng.normal(size=(B, T, I))
    c0, h0 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    out, (c, h) = lstm_ref(X, p, s, forget_bias=1.0, peepholes=True, h0=h0, c0=c0)
    out2, (c2, h2) = _peephole_lstm_alt(X, p, s, 1.0, c0, h0)
    assert rel_err(out, out2) < 1e-12 and rel_err(c, c2) < 1e-12 and rel_err(h, h2) < 1e-12
    # Zero peephole weights reduce to the plain LSTM; nonzero ones matter.
    out_plain, _ = lstm_ref(X, p, s, peepholes=False, h0=h0, c0=c0)
    pz = dict(p, **{f"{s}/w_{g}_diag": np.zeros(H) for g in "ifo"})
    out_zero, _ = lstm_ref(X, pz, s, peepholes=True, h0=h0, c0=c0)
    np.testing.assert_array_equal(out_zero, out_plain)
    assert rel_err(out, out_plain) > 1e-3


def test_oracle_reset_before_gru_self_consistent():
    rng = np.random.default_rng(12)
    p = random_tf_params("gru", 1, np.float64, seed=12)
    s = "rnn/gru_cell"
    X = rng.normal(size=(B, T, I))
    h0 = rng.normal(size=(B, H))
    out, h = gru_ref(X, p, s, reset_after=False, h0=h0)
    out2, h2 = _gru_before_alt(X, p, s, h0)
    assert rel_err(out, out2) < 1e-12 and rel_err(h, h2) < 1e-12
    out_after, _ = gru_ref(X, p, s, reset_after=True, h0=h0)
    assert rel_err(out, out_after) > 1e-3  # the two forms really differ


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_oracle_seq_len_equals_truncation(kind):
    """Masked run == running each instance on its own truncated sequence."""
    rng = np.random.default_rng(13)
    p = random_tf_params(kind, 1, np.float64, seed=13)
    f = tf_layers(kind, p, 1)[0]
    X = rng.normal(size=(4, T, I))
    seq_len = np.array([0, 1, 3, T])
    out, st = f(X, seq_len=seq_len)
    for b, n in enumerate(seq_len):
        assert np.all(out[b, n:] == 0)
        if n == 0:
            final = np.zeros(H)
            np.testing.assert_array_equal(st[1][b] if kind == "lstm" else st[b], final)
            continue
        out_b, st_b = f(X[b:b + 1, :n])
        np.testing.assert_allclose(out[b, :n], out_b[0], rtol=0, atol=1e-14)
        if kind == "lstm":
            np.testing.assert_allclose(st[0][b], st_b[0][0], rtol=0, atol=1e-14)
            np.testing.assert_allclose(st[1][b], st_b[1][0], rtol=0, atol=1e-14)
        else:
            np.testing.assert_allclose(st[b], st_b[0], rtol=0, atol=1e-14)


def test_oracle_dtype_follows_inputs():
    p32 = random_tf_params("lstm", 1, np.float32)
    X32 = np.ones((1, 2, I), dtype=np.float32)
    out, (c, h) = lstm_ref(X32, p32)
    assert out.dtype == c.dtype == h.dtype == np.float32
    out, _ = lstm_ref(X32, p32, dtype=np.float64)
    assert out.dtype == np.float64
    assert ref.sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
