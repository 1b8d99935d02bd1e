"""Accuracy, special-value and vectorization tests for backends/cpu/fastmath.py: the functions
generated kernels call (fm.tanh / sigmoid / exp / log / relu, dispatching on the dtype to the
_f32 / _f64 versions). Speed is measured by bench/, not asserted here (a wall-clock bound
fails on a loaded machine and passes on a broken one)."""

import re

import numpy as np
import pytest
from numba import njit

from rnncomp.backends.cpu import fastmath as fm

KW = dict(error_model="numpy", fastmath=fm.KERNEL_FASTMATH)


def _apply(f):
    @njit(**KW)
    def k(x, out):
        for i in range(x.shape[0]):
            out[i] = f(x[i])

    def run(x):
        out = np.empty_like(x)
        k(x, out)
        return out

    run.kernel = k
    return run


def _sigmoid64(x):
    from scipy.special import expit

    return expit(x)


EXTREMES = [np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40,
            3e38, -3e38, 1e-7, -1e-7]


def _sweep(dtype):
    x = np.concatenate([np.linspace(-20.0, 20.0, 400_001), EXTREMES])
    return x.astype(dtype)


@pytest.mark.parametrize("name,ref", [("tanh", np.tanh), ("sigmoid", _sigmoid64)])
def test_f32_abs_error(name, ref):
    f = _apply(getattr(fm, name + "_f32"))
    x = _sweep(np.float32)
    y = f(x)
    assert y.dtype == np.float32
    r = ref(x.astype(np.float64))
    err = np.abs(y.astype(np.float64) - r)
    assert err.max() <= 1e-6, err.max()
    # better than required: ~1-2 ulp relative, also near 0 and in the sigmoid tail
    nz = np.abs(r) > 1e-37
    rel = err[nz] / np.abs(r[nz])
    assert rel.max() <= 5e-7, rel.max()


@pytest.mark.parametrize("name,ref", [("tanh", np.tanh), ("sigmoid", _sigmoid64)])
def test_f64_rel_error(name, ref):
    f = _apply(getattr(fm, name + "_f64"))
    x = np.concatenate([_sweep(np.float64), np.logspace(-300, 2, 20001),
                        -np.logspace(-300, 2, 20001)])
    y = f(x)
    r = ref(x)
    nz = np.abs(r) > 1e-300
    rel = np.abs(y[nz] - r[nz]) / np.abs(r[nz])
    assert rel.max() <= 1e-14, rel.max()
    assert np.abs(y - r).max() <= 1e-15


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_rel_error(dtype):
    suf = "_f32" if dtype == np.float32 else "_f64"
    f = _apply(getattr(fm, "exp" + suf))
    lo, hi = (-87.0, 88.5) if dtype == np.float32 else (-707.0, 709.5)
    x = np.linspace(lo, hi, 300_001).astype(dtype)
    y = f(x)
    r = np.exp(x.astype(np.float64))
    rel = np.abs(y - r) / r
    assert rel.max() <= (3e-7 if dtype == np.float32 else 1e-15), rel.max()


def test_exp_f32_underflow_overflow():
    f = _apply(fm.exp_f32)
    x = np.array([-100.0, -103.0, -110.0, -np.inf, 88.7, 88.8, 100.0, np.inf, np.nan],
                 np.float32)
    y = f(x)
    r = np.exp(x.astype(np.float64))
    # gradual underflow: denormal results within one denormal ulp (1.4e-45)
    assert np.all(np.abs(y[:4] - r[:4]) <= 1.5e-45)
    assert y[3] == 0.0
    assert abs(y[4] / r[4] - 1) < 3e-7
    assert np.all(np.isinf(y[5:8])) and np.all(y[5:8] > 0)
    assert np.isnan(y[8])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log(dtype):
    suf = "_f32" if dtype == np.float32 else "_f64"
    f = _apply(getattr(fm, "log" + suf))
    lo, hi = (-44.0, 38.0) if dtype == np.float32 else (-320.0, 308.0)
    x = np.logspace(lo, hi, 200_001).astype(dtype)
    x = x[(x > 0) & np.isfinite(x)]
    y = f(x)
    r = np.log(x.astype(np.float64))
    err = np.abs(y - r) / np.maximum(np.abs(r), 1.0)
    assert err.max() <= (3e-7 if dtype == np.float32 else 1e-15), err.max()
    s = f(np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0], dtype))
    assert s[0] == -np.inf and s[1] == -np.inf
    assert np.isnan(s[2]) and np.isnan(s[4]) and np.isnan(s[5])
    assert s[3] == np.inf and s[6] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_specials(dtype):
    suf = "_f32" if dtype == np.float32 else "_f64"
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0], dtype)
    t = _apply(getattr(fm, "tanh" + suf))(x)
    s = _apply(getattr(fm, "sigmoid" + suf))(x)
    e = _apply(getattr(fm, "exp" + suf))(x)
    r = _apply(getattr(fm, "relu" + suf))(x)
    for y in (t, s, e, r):
        assert y.dtype == dtype
        assert np.isnan(y[0])
    assert list(t[1:]) == [1.0, -1.0, 1.0, -1.0, 0.0, 0.0]
    assert np.signbit(t[6])
    assert list(s[1:]) == [1.0, 0.0, 1.0, 0.0, 0.5, 0.5]
    assert e[1] == np.inf and e[2] == 0.0 and e[3] == np.inf and e[4] == 0.0 and e[5] == 1.0
    assert list(r[1:]) == [np.inf, 0.0, 1e30 if dtype == np.float64 else np.float32(1e30),
                           0.0, 0.0, 0.0]


def test_generic_dispatch_keeps_dtype():
    @njit(**KW)
    def k(a32, a64):
        return (fm.tanh(a32[0]), fm.sigmoid(a32[0]), fm.exp(a32[0]), fm.relu(a32[0]),
                fm.log(a32[0]), fm.tanh(a64[0]), fm.sigmoid(a64[0]), fm.exp(a64[0]))

    out = k(np.array([0.5], np.float32), np.array([0.5], np.float64))
    assert [type(v) for v in out[:5]] == [float] * 5  # boxed to Python float
    sig = k.nopython_signatures[0]
    assert str(sig.return_type).count("float32") == 5
    assert str(sig.return_type).count("float64") == 3
    assert abs(out[0] - np.tanh(0.5)) < 1e-7 and abs(out[5] - np.tanh(0.5)) < 1e-16
    # pure-Python fallback
    assert abs(fm.tanh(0.5) - np.tanh(0.5)) < 1e-16


@pytest.mark.parametrize("name", ["tanh_f32", "sigmoid_f32", "exp_f32", "tanh_f64"])
def test_loop_is_vectorized(name):
    """The loop body must compile to packed (ymm/zmm) code with no libm calls."""
    f = _apply(getattr(fm, name))
    dt = np.float32 if name.endswith("f32") else np.float64
    f(np.zeros(64, dt))
    k = f.kernel
    asm = k.inspect_asm(k.signatures[0])
    packed = re.findall(r"\bv(?:fmadd|fmsub|fnmadd|mul|add|div)\w*p[sd]\s+[^\n]*[yz]mm", asm)
    assert len(packed) >= 8, "no packed float ops: loop not vectorized"
    assert not re.search(r"call[^\n]*(tanh|expf?\b|exp@)", asm)
