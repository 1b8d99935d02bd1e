"""Index ops check their indices on every backend (issue: `rc.take` on the cpu backend read out
of bounds: index 4 on an axis of 4 returned the next row's value, 100000 garbage, 2e9 a segfault;
-1 wrapped silently). The rule, the same everywhere (TF1's): 0 <= i < n, negative indices are
errors. The error names the op, the bad value and the axis size."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.ir.ops import IndexOutOfRange

BACKENDS = ["interp", "cpu"]


def picker():
    return rc.Model(lambda X, I: rc.take(X, I), {"X": rc.Input((None, 4)),
                                                 "I": rc.Input((None,), "i32")}, name="picker")


M = picker()
X = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_indices(backend):
    np.testing.assert_array_equal(M({}, X=X, I=np.array([0, 3, 2], np.int32), backend=backend),
                                  [0, 7, 10])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [4, 100000, 2_000_000_000, -1, -5])
def test_out_of_range_raises(backend, bad):
    idx = np.array([0, bad, 1], np.int32)
    with pytest.raises(IndexOutOfRange, match=rf"take/gather: index {bad} is out of range for an "
                                              rf"axis of size 4 \(valid: 0 to 3"):
        M({}, X=X, I=idx, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_computed_labels_in_the_loss_are_checked(backend):
    """Labels computed inside the model (not an input, so no up-front range check) reach take."""
    def model(logits, y):
        return rc.losses.sparse_softmax_cross_entropy(logits=logits, labels=y + 3)  # pushes 1 and 2 out of range

    m = rc.Model(model, {"logits": rc.Input((None, 4)), "y": rc.Input((None,), "i32")})
    with pytest.raises(IndexOutOfRange, match="index 4 is out of range"):
        m({}, logits=X, y=np.array([0, 1, 0], np.int32), backend=backend)


def test_it_is_an_input_error_and_an_index_error():
    assert issubclass(IndexOutOfRange, rc.InputError) and issubclass(IndexOutOfRange, IndexError)
