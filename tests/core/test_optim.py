"""rnncomp.train.optim: textbook updates, torch.optim parity, purity, validation and clipping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rnncomp import optim


def problem(dtype=np.float64, seed: int = 0):
    """Tiny least-squares problem: params w [3, 2], b [2], s (0-d)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((5, 3))
    y = r.standard_normal((5, 2))
    params = {
        "rnn/kernel": r.standard_normal((3, 2)).astype(dtype),
        "rnn/bias": r.standard_normal(2).astype(dtype),
        "scale": np.array(0.5, dtype=dtype),
    }

    def grads_of(p):
        w = p["rnn/kernel"].astype(np.float64)
        b = p["rnn/bias"].astype(np.float64)
        s = float(p["scale"])
        pred = s * (x @ w) + b
        err = pred - y  # loss = 0.5 * sum(err^2)
        g = {
            "rnn/kernel": s * (x.T @ err),
            "rnn/bias": err.sum(0),
            "scale": np.array(np.sum(err * (x @ w))),
        }
        return {k: np.asarray(v, dtype=dtype) for k, v in g.items()}

    return params, grads_of


def copy(d):
    return {k: v.copy() for k, v in d.items()}


# ----------------------------------------------------------------- textbook


def test_adam_matches_textbook_over_several_steps():
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-6
    params, grads_of = problem()
    opt = optim.Adam(lr, b1, b2, eps)
    state = opt.init(params)
    ref = copy(params)
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(v) for k, v in ref.items()}
    for t in range(1, 7):
        g_ref = grads_of(ref)
        for k in ref:
            g = g_ref[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mh = m[k] / (1 - b1**t)
            vh = v[k] / (1 - b2**t)
            ref[k] = ref[k] - lr * mh / (np.sqrt(vh) + eps)
        params, state = opt.update(params, grads_of(params), state)
        assert state["adam/step"].shape == ()
        assert state["adam/step"].dtype == np.int64
        assert int(state["adam/step"]) == t
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(state[f"adam/m/{k}"], m[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(state[f"adam/v/{k}"], v[k], rtol=1e-13, atol=1e-15)


def test_adam_first_step_moves_each_element_by_lr():
    # With bias correction, step 1 is lr * g / (|g| + eps): every element moves ~lr.
    params = {"w": np.array([1.0, -2.0, 3.0])}
    grads = {"w": np.array([10.0, -0.001, 1e-3])}
    opt = optim.Adam(lr=0.1, eps=1e-12)
    new, _ = opt.update(params, grads, opt.init(params))
    np.testing.assert_allclose(new["w"], [0.9, -1.9, 2.9], rtol=1e-9)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_textbook(nesterov):
    lr, mu = 0.02, 0.9
    params, grads_of = problem()
    opt = optim.SGD(lr, momentum=mu, nesterov=nesterov)
    state = opt.init(params)
    ref = copy(params)
    buf = {k: np.zeros_like(v) for k, v in ref.items()}
    for t in range(1, 7):
        g_ref = grads_of(ref)
        for k in ref:
            buf[k] = mu * buf[k] + g_ref[k]
            d = g_ref[k] + mu * buf[k] if nesterov else buf[k]
            ref[k] = ref[k] - lr * d
        params, state = opt.step(params, grads_of(params), state)
        assert int(state["sgd/step"]) == t
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(state[f"sgd/momentum/{k}"], buf[k], rtol=1e-13)


def test_plain_sgd_exact():
    params = {"w": np.array([1.0, 2.0])}
    opt = optim.SGD(0.5)
    state = opt.init(params)
    assert set(state) == {"sgd/step"}
    new, state = opt.update(params, {"w": np.array([0.5, -4.0])}, state)
    np.testing.assert_array_equal(new["w"], [0.75, 4.0])
    assert int(state["sgd/step"]) == 1


# ------------------------------------------------------------------- torch


def _torch_trajectory(make_opt, params, grads_of, steps):
    torch = pytest.importorskip("torch")
    tparams = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    topt = make_opt(torch, list(tparams.values()))
    out = []
    for _ in range(steps):
        g = grads_of({k: t.detach().numpy() for k, t in tparams.items()})
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
        out.append({k: t.detach().numpy().copy() for k, t in tparams.items()})
    return out


def _ours_trajectory(opt, params, grads_of, steps):
    state = opt.init(params)
    out = []
    for _ in range(steps):
        params, state = opt.update(params, grads_of(params), state)
        out.append(params)
    return out


def _assert_traj_close(a, b):
    for pa, pb in zip(a, b, strict=True):
        for k in pa:
            rel = np.abs(pa[k] - pb[k]) / np.maximum(np.abs(pb[k]), 1e-12)
            assert rel.max() < 1e-6, (k, rel.max())


def test_adam_matches_torch():
    params, grads_of = problem()
    theirs = _torch_trajectory(
        lambda torch, ps: torch.optim.Adam(ps, lr=0.01, betas=(0.85, 0.99), eps=1e-7),
        params,
        grads_of,
        5,
    )
    ours = _ours_trajectory(optim.Adam(0.01, 0.85, 0.99, 1e-7), params, grads_of, 5)
    _assert_traj_close(ours, theirs)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_torch(nesterov):
    params, grads_of = problem()
    theirs = _torch_trajectory(
        lambda torch, ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9, nesterov=nesterov),
        params,
        grads_of,
        5,
    )
    ours = _ours_trajectory(optim.SGD(0.03, 0.9, nesterov), params, grads_of, 5)
    _assert_traj_close(ours, theirs)


# ------------------------------------------------------- purity and dtypes


@pytest.mark.parametrize("make", [lambda: optim.Adam(0.1), lambda: optim.SGD(0.1, 0.9, True)])
def test_update_is_pure_and_keeps_float32(make):
    params, grads_of = problem(np.float32)
    opt = make()
    state = opt.init(params)
    grads = grads_of(params)
    p0, g0, s0 = copy(params), copy(grads), copy(state)
    new_p, new_s = opt.update(params, grads, state)
    for d, d0 in ((params, p0), (grads, g0), (state, s0)):
        assert d.keys() == d0.keys()
        for k in d:
            np.testing.assert_array_equal(d[k], d0[k])
    for k, v in new_p.items():
        assert isinstance(v, np.ndarray)
        assert v.dtype == np.float32
        assert v.shape == params[k].shape
        assert not np.array_equal(v, params[k])
    for k, v in new_s.items():
        assert isinstance(v, np.ndarray), k
        if not k.endswith("/step"):
            assert v.dtype == np.float32, k
    assert new_p["scale"].shape == ()


def test_state_keys():
    params = {"rnn/basic_lstm_cell/kernel": np.zeros((4, 8)), "b": np.zeros(3, np.float32)}
    st = optim.Adam().init(params)
    assert set(st) == {
        "adam/step",
        "adam/m/rnn/basic_lstm_cell/kernel",
        "adam/v/rnn/basic_lstm_cell/kernel",
        "adam/m/b",
        "adam/v/b",
    }
    assert st["adam/m/b"].dtype == np.float32
    assert st["adam/step"].dtype == np.int64
    st = optim.SGD(0.1, momentum=0.5).init(params)
    assert set(st) == {"sgd/step", "sgd/momentum/rnn/basic_lstm_cell/kernel", "sgd/momentum/b"}


# -------------------------------------------------------------- validation


def test_grad_validation_messages():
    params = {"rnn/kernel": np.zeros((3, 4), np.float32), "rnn/bias": np.zeros(4, np.float32)}
    opt = optim.Adam()
    st = opt.init(params)
    with pytest.raises(ValueError, match="missing.*'rnn/bias'"):
        opt.update(params, {"rnn/kernel": np.zeros((3, 4), np.float32)}, st)
    bad = {"rnn/kernel": np.zeros((4, 3), np.float32), "rnn/bias": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match=r"'rnn/kernel'.*expected \(3, 4\).*received \(4, 3\)"):
        opt.update(params, bad, st)
    bad = {"rnn/kernel": np.zeros((3, 4), np.float64), "rnn/bias": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match="'rnn/kernel'.*expected float32.*received float64"):
        opt.update(params, bad, st)
    extra = {**{k: np.zeros_like(v) for k, v in params.items()}, "zzz": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="unknown parameter.*'zzz'"):
        opt.update(params, extra, st)
    with pytest.raises(ValueError, match="state is missing .adam/m/rnn/kernel"):
        opt.update(
            params, {k: np.zeros_like(v) for k, v in params.items()}, {"adam/step": st["adam/step"]}
        )


def test_hyperparameter_validation():
    with pytest.raises(ValueError):
        optim.Adam(lr=-1.0)
    with pytest.raises(ValueError):
        optim.Adam(beta1=1.0)
    with pytest.raises(ValueError):
        optim.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.SGD(0.1, momentum=-0.5)


def test_config_round_trip_through_json():
    for opt in (optim.Adam(0.002, 0.8, 0.9, 1e-7), optim.SGD(0.1, 0.9, True), optim.SGD(0.3)):
        cfg = json.loads(json.dumps(opt.config()))
        back = optim.from_config(cfg)
        assert type(back) is type(opt)
        assert back.config() == opt.config()
        assert back == opt
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'.*adam.*sgd"):
        optim.from_config({"name": "rmsprop", "lr": 0.1})
    with pytest.raises(ValueError, match="invalid config"):
        optim.from_config({"name": "adam", "momentum": 0.1})


# ---------------------------------------------------------------- clipping


def test_global_norm_and_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([[4.0]], np.float32)}
    assert optim.global_norm(grads) == 5.0
    clipped, norm = optim.clip_by_global_norm(grads, 2.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped["a"], [3.0 * 2 / 5, 0.0], rtol=1e-7)
    np.testing.assert_allclose(clipped["b"], [[4.0 * 2 / 5]], rtol=1e-7)
    assert clipped["a"].dtype == np.float32
    assert math.isclose(optim.global_norm(clipped), 2.0, rel_tol=1e-6)
    # below the threshold: unchanged, but a new dict
    same, norm = optim.clip_by_global_norm(grads, 10.0)
    assert norm == 5.0
    for k, g in grads.items():
        np.testing.assert_array_equal(same[k], g)
    # zero gradients stay zero (no 0/0)
    z, norm = optim.clip_by_global_norm({"a": np.zeros(3)}, 1.0)
    assert norm == 0.0
    np.testing.assert_array_equal(z["a"], 0.0)


def test_clip_by_global_norm_random_matches_formula():
    r = np.random.default_rng(3)
    grads = {f"g{i}": r.standard_normal((i + 1, 3)) * 10 for i in range(4)}
    expected_norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    clipped, norm = optim.clip_by_global_norm(grads, 1.5)
    assert math.isclose(norm, expected_norm, rel_tol=1e-12)
    scale = 1.5 / max(expected_norm, 1.5)
    for k, g in grads.items():
        np.testing.assert_allclose(clipped[k], g * scale, rtol=1e-14)


def test_global_norm_float32_does_not_overflow():
    grads = {"a": np.full(4, 1e30, np.float32)}
    assert math.isclose(optim.global_norm(grads), 2e30, rel_tol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_by_global_norm_nonfinite_propagates_nan(bad):
    grads = {"a": np.array([1.0, bad]), "b": np.array([2.0])}
    clipped, norm = optim.clip_by_global_norm(grads, 1.0)
    assert not math.isfinite(norm)
    assert np.isnan(clipped["a"]).all()
    assert np.isnan(clipped["b"]).all()


def test_clip_by_value():
    grads = {"a": np.array([-3.0, 0.5, 7.0], np.float32), "s": np.array(9.0)}
    out = optim.clip_by_value(grads, -1.0, 2.0)
    np.testing.assert_array_equal(out["a"], [-1.0, 0.5, 2.0])
    assert out["a"].dtype == np.float32
    assert isinstance(out["s"], np.ndarray)
    assert out["s"].shape == ()
    assert float(out["s"]) == 2.0
    np.testing.assert_array_equal(grads["a"], [-3.0, 0.5, 7.0])
    with pytest.raises(ValueError):
        optim.clip_by_value(grads, 1.0, -1.0)
    with pytest.raises(ValueError):
        optim.clip_by_global_norm(grads, 0.0)
