"""The generated CPU source of a tiny LSTM (fixed sizes, f32) is golden-tested.

Any change to the optimizer or the code generator that changes the kernel shows up as a diff
against tests/cpu/golden/lstm_source.py.txt; regenerate with RNNCOMP_UPDATE_GOLDEN=1 after
reviewing it. The kernel is also run once (one Numba compile) against the interpreter.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime.compiler import compile_graph
from rnncomp.ir import Op
from rnncomp.frontend.trace import flatten

B, T, I, H = 2, 3, 2, 3


def _tiny_lstm() -> rc.Model:
    def f(X):
        out, st = rc.dynamic_rnn(rc.BasicLSTMCell(H), X)
        return out, st

    return rc.Model(f, {"X": rc.Input((B, T, I))}, dtype="f32")


@pytest.fixture(scope="module")
def lstm():
    m = _tiny_lstm()
    return m, compile_graph(m.graph, backend="cpu")


def test_lstm_source_golden(lstm, golden):
    _, cg = lstm
    golden("lstm_source.py.txt", cg.source)


def test_source_is_deterministic(lstm):
    """A second trace and compile of the same model gives the same text, key and file."""
    _, cg = lstm
    cg2 = compile_graph(_tiny_lstm().graph, backend="cpu")
    assert cg2.source == cg.source and cg2.key == cg.key and cg2.path == cg.path


def test_source_shape(lstm):
    _, cg = lstm
    src = cg.source
    # the kernel plus one separately compiled function per top-level time loop
    assert src.count("@njit(") == 2 and "def kernel(" in src
    assert src.count("for s") == 1, "one time loop (a loop, not T copies)"
    # float32 kernel: typed constants, no float64 buffers
    assert "np.float64" not in src
    assert "fm.sigmoid_f32(" in src and "fm.tanh_f32(" in src
    assert any(n.op is Op.FUSED for n in cg.optimized.all_nodes())


def test_lstm_kernel_runs(lstm):
    m, cg = lstm
    p = m.init(0)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    got = m(p, X=x, backend="cpu")
    ref = m(p, X=x)
    for a, b in zip(flatten(got)[0], flatten(ref)[0], strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert m.compile("cpu").key == cg.key
