"""A traced value used as a Python value (issue: silent wrong models): `if rc.sum(X) > 0:`
used to trace silently and always take the true branch. Every such use raises a TraceError
that names the fix."""

from __future__ import annotations

import pytest

import rnncomp as rc

USES = {
    "if": lambda v: 1 if v > 0 else 0,
    "while": lambda v: [None for _ in iter(lambda: bool(v > 0), False)],
    "and": lambda v: (v > 0) and v,
    "or": lambda v: (v > 0) or v,
    "not": lambda v: not v,
    "bool": lambda v: bool(v),
    "int": lambda v: int(v),
    "float": lambda v: float(v),
    "index": lambda v: [1, 2, 3][v],
    "range": lambda v: range(v),
}


@pytest.mark.parametrize("use", list(USES))
def test_python_use_of_a_traced_value_raises(use):
    def model(X):
        v = rc.sum(X)
        USES[use](v)
        return v

    with pytest.raises(rc.TraceError, match=r"has no Python value .* use rc\.|has no Python value"):
        rc.Model(model, {"X": rc.Input((None, 3))})


def test_the_message_names_the_fix():
    def model(X):
        return X if rc.sum(X) > 0 else -X

    with pytest.raises(rc.TraceError) as e:
        rc.Model(model, {"X": rc.Input((None, 3))})
    msg = str(e.value)
    assert "rc.where" in msg and "bool[]" in msg and "op gt" in msg


def test_where_is_the_working_form():
    import numpy as np

    m = rc.Model(lambda X: rc.where(rc.sum(X) > 0, X, -X), {"X": rc.Input((None, 3))})
    x = -np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(m({}, X=x), -x)
