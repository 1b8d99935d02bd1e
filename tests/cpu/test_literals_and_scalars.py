"""Corner cases attention met: literals that have no Python spelling (inf, -inf, nan: the
masked score) render as float('...') in generated code (compiled CPU == interpreter), and a
scalar parameter's gradient is a scalar."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc


@pytest.mark.parametrize("value", [float("-inf"), float("inf"), float("nan")])
def test_nonfinite_literal_compiles(value):
    pytest.importorskip("numba")
    m = rc.Model(lambda X: rc.where(X > 0, X, value), {"X": rc.Input((None, 3))})
    x = np.array([[1.0, -1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(m({}, X=x, backend="cpu"), m({}, X=x, backend="interp"))


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_scalar_parameter_gradient_has_its_shape(backend):
    """A scalar parameter (attention_g) gets a scalar gradient, not shape (1,)."""
    if backend == "cpu":
        pytest.importorskip("numba")

    def f(X):
        return rc.reduce_sum(X * rc.param("g", (), "ones"))

    m = rc.Model(f, {"X": rc.Input((None, 3))})
    _, g = m.value_and_grad(m.init(), X=np.ones((2, 3), np.float32), backend=backend)
    assert g["g"].shape == () and g["g"] == 6.0
