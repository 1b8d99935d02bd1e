"""Every built-in cell and wrapper, compiled for the CPU backend, equals the interpreter.

Each configuration (cell, unroll, sequence_length or not, dtype) is one model whose output 0 is
a scalar loss sum(out * R) + sum_k sum(tanh(state_k) * Q_k); `value_and_grad(backend="cpu")`
compiles ONE graph (forward outputs + gradients) that is compared with
`value_and_grad(backend="interp")`: loss, outputs, final states and every parameter gradient
Dropout runs in training mode with a fixed seed, so its masks must
agree bit for bit (checked on the zero pattern of the outputs). A Trainer step with backend="cpu"
reuses the same compiled graph and must equal the interpreter's step.

Numba compiles are expensive, so not every combination is compiled:
- every cell: (dynamic, with sequence_length, f64) and (static, without, f32);
- LSTM and GRU (reset_after): also (dynamic, without, f32) and (static, with, f64);
- the inference path (`m(params, backend="cpu")`, no autodiff) once per dtype on ONE model
  holding every cell: (dynamic, with, f32) and (dynamic, without, f64).
sequence_length is [0, T, 2]: an empty, a full and a partial sequence.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import optim
from rnncomp.train import Trainer
from rnncomp.frontend.trace import flatten, unflatten
from cell_zoo import BUILTIN_CELLS

B, T, I = 3, 3, 2
SEED = 11
LENGTHS = np.array([0, T, 2], np.int32)
RTOL = {"f32": 2e-5, "f64": 1e-11}


def _cells():
    return dict(BUILTIN_CELLS)


CELLS = _cells()
CONFIGS = [(c, True, True, "f64") for c in CELLS] + [(c, False, False, "f32") for c in CELLS] + \
    [(c, True, False, "f32") for c in ("basic_lstm", "gru_after")] + \
    [(c, False, True, "f64") for c in ("basic_lstm", "gru_after")]


def _cfg_id(cfg) -> str:
    c, dyn, ln, dt = cfg
    return f"{c}-{'dyn' if dyn else 'static'}-{'len' if ln else 'full'}-{dt}"


def _unroll(cell, X, dynamic: bool, L, init=None, scope=None):
    if dynamic:
        return rc.dynamic_rnn(cell, X, sequence_length=L, initial_state=init, scope=scope)
    xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), (X.shape[0], X.shape[2])) for t in range(T)]
    outs, st = rc.static_rnn(cell, xs, sequence_length=L, initial_state=init, scope=scope)
    return rc.concat([rc.expand_dims(o, 1) for o in outs], axis=1), st


def _make_model(cell_name: str, dynamic: bool, with_len: bool, dtype: str):
    probe = CELLS[cell_name]()
    sizes, tree = flatten(probe.state_size)
    specs = {"X": rc.Input((None, T, I))}
    if with_len:
        specs["L"] = rc.Input((None,), "i32")
    for k, s in enumerate(sizes):
        specs[f"s{k}"] = rc.Input((None, s))
        specs[f"Q{k}"] = rc.Input((None, s))
    specs["R"] = rc.Input((None, T, probe.output_size))

    def fn(**kw):
        init = unflatten(tree, [kw[f"s{k}"] for k in range(len(sizes))])
        out, st = _unroll(CELLS[cell_name](), kw["X"], dynamic, kw.get("L"), init)
        loss = rc.sum(out * kw["R"])
        for k, s in enumerate(flatten(st)[0]):
            loss = loss + rc.sum(rc.tanh(s) * kw[f"Q{k}"])
        return loss, out, st

    return rc.Model(fn, specs, dtype=dtype), sizes, probe.output_size


def _inputs(rng, with_len, sizes, out_size, dtype):
    npdt = np.dtype(np.float32 if dtype == "f32" else np.float64)
    inputs = {"X": rng.standard_normal((B, T, I)).astype(npdt)}
    if with_len:
        inputs["L"] = LENGTHS
    for k, s in enumerate(sizes):
        inputs[f"s{k}"] = (0.5 * rng.standard_normal((B, s))).astype(npdt)
        inputs[f"Q{k}"] = rng.standard_normal((B, s)).astype(npdt)
    inputs["R"] = rng.standard_normal((B, T, out_size)).astype(npdt)
    return inputs


def _params(m, rng):
    # zero-initialized biases are perturbed so that every parameter matters
    return {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in m.init(0).items()}


def _close(got, ref, rtol, what):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, \
        f"{what}: {got.dtype}{got.shape} != {ref.dtype}{ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * max(scale, 1e-30), err_msg=what)


@pytest.fixture(scope="module", params=CONFIGS, ids=_cfg_id)
def case(request):
    cell_name, dynamic, with_len, dtype = request.param
    rng = np.random.default_rng(5)
    m, sizes, out_size = _make_model(cell_name, dynamic, with_len, dtype)
    p = _params(m, rng)
    inputs = _inputs(rng, with_len, sizes, out_size, dtype)
    # wrt=None: every trainable parameter, as the Trainer uses (so it reuses the compile)
    kw = dict(training=True, seed=SEED)
    ref = m.value_and_grad(p, backend="interp", **kw, **inputs)
    got = m.value_and_grad(p, backend="cpu", **kw, **inputs)
    return dict(cfg=request.param, model=m, params=p, inputs=inputs, ref=ref, got=got,
                rtol=RTOL[dtype])


def test_forward(case):
    (ref_out, _), (got_out, _) = case["ref"], case["got"]
    rf, _ = flatten(ref_out)
    gf, _ = flatten(got_out)
    assert len(rf) == len(gf)
    for k, (a, b) in enumerate(zip(gf, rf)):
        _close(a, b, case["rtol"], f"{_cfg_id(case['cfg'])}: forward output {k}")
    out_ref, out_got = rf[1], gf[1]
    # dropout masks (and sequence_length zeroing) agree exactly
    np.testing.assert_array_equal(out_got == 0, out_ref == 0)
    if case["cfg"][2]:  # with sequence_length: instance 0 (length 0) has all-zero outputs
        assert not np.any(out_got[0])


def test_backward(case):
    (_, ref_g), (_, got_g) = case["ref"], case["got"]
    assert set(ref_g) == set(got_g)
    for name in ref_g:
        assert got_g[name].dtype == ref_g[name].dtype
        _close(got_g[name], ref_g[name], case["rtol"], f"{_cfg_id(case['cfg'])}: d loss / d {name}")
        assert np.any(ref_g[name] != 0), f"no gradient reaches {name}"


def test_train_step(case):
    """One Trainer step with backend="cpu" (it reuses the compiled gradient graph) equals the
    interpreter's step."""
    m, p, inputs = case["model"], case["params"], case["inputs"]
    results = {}
    for backend in ("interp", "cpu"):
        tr = Trainer(m, loss_output=0, optimizer=optim.Adam(1e-2), clip_norm=5.0,
                     backend=backend)
        st = tr.init(p)
        results[backend] = tr.step(st.params, st.opt_state, inputs, seed=SEED)
    (p_ref, s_ref, l_ref, n_ref), (p_got, s_got, l_got, n_got) = results["interp"], results["cpu"]
    rtol = case["rtol"]
    assert abs(l_got - l_ref) <= rtol * max(1.0, abs(l_ref)) * 10
    assert abs(n_got - n_ref) <= rtol * max(1.0, abs(n_ref)) * 10
    for name in p_ref:
        # Adam's first step moves each weight by ~lr * sign(g): compare the update itself
        _close(p_got[name] - p[name], p_ref[name] - p[name], 1e-3 if rtol > 1e-6 else 1e-8,
               f"{_cfg_id(case['cfg'])}: updated {name}")
    for name in s_ref:
        _close(s_got[name], s_ref[name], rtol * 10, f"{_cfg_id(case['cfg'])}: opt state {name}")


# ---------------------------------------------------------------------------------------------
# The inference path (no autodiff): one model with every cell, compiled once per dtype
# ---------------------------------------------------------------------------------------------
# (one straight-line kernel for a static unroll of every cell compiles far too slowly: the
# static unroll is covered per cell above)
INFER = [(True, True, "f32"), (True, False, "f64")]


@pytest.fixture(scope="module", params=INFER,
                ids=lambda c: f"{'dyn' if c[0] else 'static'}-{'len' if c[1] else 'full'}-{c[2]}")
def all_cells(request):
    dynamic, with_len, dtype = request.param
    specs = {"X": rc.Input((None, T, I))}
    if with_len:
        specs["L"] = rc.Input((None,), "i32")

    def fn(X, L=None):
        res = {}
        for name, make in CELLS.items():
            out, st = _unroll(make(), X, dynamic, L, scope=name)
            res[name] = (out, st)
        return res

    m = rc.Model(fn, specs, dtype=dtype)
    rng = np.random.default_rng(3)
    p = _params(m, rng)
    npdt = np.float32 if dtype == "f32" else np.float64
    inputs = {"X": rng.standard_normal((B, T, I)).astype(npdt)}
    if with_len:
        inputs["L"] = LENGTHS
    out = {}
    for training in (False, True):
        ref = m(p, training=training, seed=SEED, **inputs)
        got = m(p, training=training, seed=SEED, backend="cpu", **inputs)
        out[training] = (ref, got)
    return dtype, out


@pytest.mark.parametrize("training", [False, True], ids=["infer", "training"])
@pytest.mark.parametrize("cell_name", list(CELLS))
def test_inference_path(all_cells, cell_name, training):
    dtype, out = all_cells
    ref, got = out[training]
    rf, _ = flatten(ref[cell_name])
    gf, _ = flatten(got[cell_name])
    for k, (a, b) in enumerate(zip(gf, rf)):
        _close(a, b, RTOL[dtype], f"{cell_name} ({dtype}, training={training}): output {k}")
    np.testing.assert_array_equal(gf[0] == 0, rf[0] == 0)
