"""CPU kernels compiled with more than one thread: the fused loop nests iterate their first axis
(the batch rows of a cell) with prange, only those loops are parallel, and the results equal the
1-thread kernel's bit for bit and the interpreter's within the f32 tolerance (with 'arcp' in the
kernels' fast-math flags a division by a per-row value differed by 1e-6 between the two)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime import threads
from rnncomp.runtime.compiler import compile_graph
from rnncomp.runtime.grad import model_grad_graph
from rnncomp.runtime.interp import evaluate


@pytest.fixture
def restore_threads():
    yield
    threads._setting = None


def test_two_threads_split_rows_and_match(restore_threads, rng):
    def cell(x, h):  # row reductions and a division by a per-row value, as in a layer norm
        z = rc.matmul(rc.concat([x, h], 1), rc.param("W", (3 + 5, 5)))
        d = z - rc.mean(z, axis=1, keepdims=True)
        hn = rc.tanh(d / rc.sqrt(rc.mean(d * d, axis=1, keepdims=True) + 1e-5))
        return hn, hn

    def loss(X, R):
        out, _ = rc.dynamic_rnn(rc.FunctionCell(cell, 5, 5), X, time_major=True)
        return rc.sum(out * R)

    m = rc.Model(loss, {"X": rc.Input(("T", "B", 3)), "R": rc.Input(("T", "B", 5))})
    p = m.init(0)
    X = rng.standard_normal((4, 6, 3)).astype(np.float32)
    R = rng.standard_normal((4, 6, 5)).astype(np.float32)
    args = m.arguments(p, {"X": X, "R": R})
    g = model_grad_graph(m, wrt=list(m.param_specs) + ["X"], preoptimize=True)
    got = {}
    for n in (1, 2):
        rc.set_num_threads(n)
        cg = compile_graph(g, "cpu")
        assert ("prange(" in cg.source) == (n > 1)
        # the row reductions run inside the (parallel) row loops (passes.fuse_rows)
        assert "rt.vsum(" in cg.source and "rt.rowsum(" not in cg.source
        if n > 1:  # only the explicit prange loops are parallel (no parallel np.sum etc.)
            assert "'numpy': False" in cg.source and "'reduction': False" in cg.source
        got[n] = cg(*args)
    ref = evaluate(g, args)
    for a, b, r in zip(got[1], got[2], ref):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(b, r, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r).max())))


_WAIT_POLICY_CHILD = r"""
import os, numpy as np, rnncomp as rc
rc.set_num_threads(2)
def f(X):
    out, _ = rc.dynamic_rnn(rc.BasicLSTMCell(4), X)
    return out
m = rc.Model(f, {"X": rc.Input((None, None, 3))})
m(m.init(0), backend="cpu", X=np.ones((8, 2, 3), np.float32))
import numba.np.ufunc.parallel as p
print(p._is_initialized, os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("given,want", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_when_idle_unless_told_otherwise(given, want):
    # the pool's idle threads spinning between the cell loops took the cores OpenBLAS's GEMM
    # threads needed (10x slower with 2 threads on 2 CPUs); the user's own choice is kept
    import subprocess
    import sys

    from helpers import child_env

    env = child_env()
    env.pop("OMP_WAIT_POLICY", None)
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    r = subprocess.run([sys.executable, "-c", _WAIT_POLICY_CHILD], env=env, capture_output=True,
                       check=False, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["True", want], r.stdout
