"""Statistics, shapes and determinism of rnncomp.frontend.initializers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnncomp import initializers as I

TRUNC_STD = 0.87962566103423978


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_truncated_normal_constant_matches_truncated_unit_normal_std():
    # The TF1 correction constant is the std of N(0,1) truncated to [-2, 2].
    from scipy.stats import truncnorm

    assert math.isclose(truncnorm(-2, 2).std(), TRUNC_STD, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("factory", "value"), [(I.zeros, 0.0), (I.ones, 1.0), (lambda: I.constant(-2.5), -2.5)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_constant_family(factory, value, dtype):
    w = factory()((3, 4), dtype, rng())
    assert w.shape == (3, 4)
    assert w.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(w, np.full((3, 4), value, dtype=dtype))


def test_compute_fans_tf1_rules():
    assert I.compute_fans(()) == (1.0, 1.0)
    assert I.compute_fans((7,)) == (7.0, 7.0)
    assert I.compute_fans((30, 80)) == (30.0, 80.0)
    # conv-style: receptive field 3*5 = 15
    assert I.compute_fans((3, 5, 4, 6)) == (60.0, 90.0)


@pytest.mark.parametrize(
    ("name", "shape", "expected_std", "bound"),
    [
        # glorot_uniform: U(-l, l), l = sqrt(6 / (in + out)), std = l / sqrt(3)
        ("glorot_uniform", (300, 500), math.sqrt(2.0 / 800), math.sqrt(6.0 / 800)),
        ("glorot_normal", (300, 500), math.sqrt(2.0 / 800), 2 * math.sqrt(2.0 / 800) / TRUNC_STD),
        ("he_normal", (400, 300), math.sqrt(2.0 / 400), 2 * math.sqrt(2.0 / 400) / TRUNC_STD),
        ("he_uniform", (400, 300), math.sqrt(2.0 / 400), math.sqrt(6.0 / 400)),
        ("lecun_normal", (250, 400), math.sqrt(1.0 / 250), 2 * math.sqrt(1.0 / 250) / TRUNC_STD),
    ],
)
def test_variance_scaling_presets_std_and_bounds(name, shape, expected_std, bound):
    w = I.get(name)(shape, np.float64, rng(1))
    assert w.shape == shape
    # 120k-200k samples: relative std error of the sample std is well below 1%.
    assert abs(w.std() / expected_std - 1.0) < 0.01
    assert abs(w.mean()) < 0.01 * expected_std * 10
    assert np.abs(w).max() <= bound * (1 + 1e-12)
    # bounds are actually approached (distribution fills its support)
    assert np.abs(w).max() > 0.95 * bound


@pytest.mark.parametrize(("mode", "n"), [("fan_in", 200.0), ("fan_out", 600.0), ("fan_avg", 400.0)])
def test_variance_scaling_modes_untruncated(mode, n):
    w = I.variance_scaling(3.0, mode, "untruncated_normal")((200, 600), np.float64, rng(2))
    assert abs(w.std() / math.sqrt(3.0 / n) - 1.0) < 0.01
    # untruncated: some values beyond 2 std (about 4.55% of them)
    frac = np.mean(np.abs(w) > 2 * math.sqrt(3.0 / n))
    assert 0.04 < frac < 0.051


def test_truncated_normal_std_correction_and_tail():
    w = I.variance_scaling(1.0, "fan_in", "truncated_normal")((500, 400), np.float64, rng(3))
    target = math.sqrt(1.0 / 500)
    assert abs(w.std() / target - 1.0) < 0.01
    assert np.abs(w).max() <= 2 * target / TRUNC_STD


def test_random_uniform_and_normal():
    u = I.random_uniform(-0.3, 0.1)((400, 500), np.float32, rng(4))
    assert u.dtype == np.float32
    assert u.min() >= -0.3
    assert u.max() < 0.1
    assert abs(u.mean() - (-0.1)) < 0.002
    assert abs(u.std() - 0.4 / math.sqrt(12)) < 0.002
    n = I.random_normal(0.2)((400, 500), np.float64, rng(5))
    assert abs(n.std() / 0.2 - 1) < 0.01
    assert abs(n.mean()) < 0.002


@pytest.mark.parametrize("shape", [(64, 64), (100, 30), (24, 64), (3, 4, 10)])
def test_orthogonal(shape):
    gain = 1.7
    w = I.orthogonal(gain)(shape, np.float64, rng(6))
    assert w.shape == shape
    flat = w.reshape(-1, shape[-1]) / gain
    rows, cols = flat.shape
    if rows >= cols:
        np.testing.assert_allclose(flat.T @ flat, np.eye(cols), atol=1e-12)
    else:
        np.testing.assert_allclose(flat @ flat.T, np.eye(rows), atol=1e-12)


def test_orthogonal_lstm_kernel_float32():
    # [I + H, 4 H] fused LSTM kernel, I=8, H=16: wide, so rows are orthonormal.
    w = I.get("orthogonal")((24, 64), np.float32, rng(7))
    assert w.dtype == np.float32
    np.testing.assert_allclose(w @ w.T, np.eye(24), atol=1e-5)
    # square hidden kernel: both ways
    h = I.orthogonal()((16, 16), np.float64, rng(8))
    np.testing.assert_allclose(h.T @ h, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(h @ h.T, np.eye(16), atol=1e-12)


def test_orthogonal_sign_correction_gives_unbiased_distribution():
    # Without sign correction diag(Q) would be biased; with it E[Q_00] = 0.
    # (LAPACK's Householder QR alone would fix the sign of Q_00 for every draw.)
    vals = np.array([I.orthogonal()((4, 4), np.float64, rng(s))[0, 0] for s in range(2000)])
    assert abs(np.mean(vals)) < 0.03
    assert 0.45 < np.mean(vals > 0) < 0.55
    # Q_00 is a coordinate of a uniform unit vector in R^4:
    # E|x_1| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) = 0.4244 for n = 4.
    expected = math.gamma(2.0) / (math.sqrt(math.pi) * math.gamma(2.5))
    assert abs(np.mean(np.abs(vals)) - expected) < 0.02


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError, match="rank >= 2"):
        I.orthogonal()((5,), np.float32, rng())


@pytest.mark.parametrize(
    "name",
    ["glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "orthogonal", "random_normal"],
)
def test_deterministic_given_rng(name):
    init = I.get(name)
    a = init((20, 30), np.float32, rng(42))
    b = init((20, 30), np.float32, rng(42))
    c = init((20, 30), np.float32, rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # float32 is the rounded float64 draw
    d = init((20, 30), np.float64, rng(42))
    np.testing.assert_array_equal(a, d.astype(np.float32))


def test_random_initializers_reject_int_dtype_and_missing_rng():
    with pytest.raises(ValueError, match="floating dtype"):
        I.glorot_uniform()((2, 2), np.int32, rng())
    with pytest.raises(TypeError, match="Generator"):
        I.glorot_uniform()((2, 2), np.float32, None)


def test_lstm_bias():
    b = I.lstm_bias(1.0, 3)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    b = I.lstm_bias(2.0, 2, gate_order="ifgo", dtype=np.float64)
    assert b.dtype == np.float64
    np.testing.assert_array_equal(b, [0, 0, 2, 2, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="gate_order"):
        I.lstm_bias(1.0, 2, gate_order="ijco")


def test_get():
    assert I.get("zeros")((2,), np.float32, rng()).sum() == 0
    f = I.he_normal()
    assert I.get(f) is f
    assert "orthogonal" in I.names()
    with pytest.raises(ValueError, match="unknown initializer 'nope'.*glorot_uniform") as ei:
        I.get("nope")
    for n in ("zeros", "ones", "he_normal", "orthogonal"):
        assert n in str(ei.value)
    with pytest.raises(TypeError):
        I.get(3)


def test_variance_scaling_validation():
    with pytest.raises(ValueError, match="mode"):
        I.variance_scaling(mode="fan_sideways")
    with pytest.raises(ValueError, match="distribution"):
        I.variance_scaling(distribution="cauchy")
    with pytest.raises(ValueError, match="scale"):
        I.variance_scaling(scale=0.0)
