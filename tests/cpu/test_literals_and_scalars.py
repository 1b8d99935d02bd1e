"""Literals that have no Python spelling (inf, -inf, nan: an attention mask's -inf score)
render as float('...') in generated code: compiled CPU == interpreter."""

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
