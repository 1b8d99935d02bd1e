"""rnncomp.set_num_threads / get_num_threads: one setting for BLAS and Numba's loops, from
$RNNCOMP_NUM_THREADS / $OMP_NUM_THREADS by default, 1 thread on machines with <= 2 CPUs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime import threads

ENV = threads.ENV_VARS


@pytest.fixture
def clean(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    yield
    threads._setting = None  # back to the default (applied at the next run)


def test_default_does_not_oversubscribe(clean, monkeypatch):
    for cpus, want in ((1, 1), (2, 1), (4, 2), (16, 8), (64, 8)):
        monkeypatch.setattr(threads, "available_cpus", lambda c=cpus: c)
        assert threads.default_num_threads() == want
        assert rc.get_num_threads() == want


def test_environment_wins_in_order(clean, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")
    assert rc.get_num_threads() == 3
    monkeypatch.setenv("RNNCOMP_NUM_THREADS", "5")
    assert rc.get_num_threads() == 5
    monkeypatch.setenv("RNNCOMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="RNNCOMP_NUM_THREADS"):
        rc.get_num_threads()


def test_set_applies_to_blas(clean):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}

    assert rc.set_num_threads(2) == 2 and rc.get_num_threads() == 2
    assert blas_threads() <= {2}
    rc.set_num_threads(1)
    assert blas_threads() <= {1}
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            rc.set_num_threads(bad)
    assert rc.get_num_threads() == 1


def test_first_run_applies_the_default():
    """In a fresh process the BLAS pool follows the default on the first model run, not at
    import; OMP_NUM_THREADS is honoured."""
    code = """
import numpy as np, rnncomp as rc
from threadpoolctl import threadpool_info
blas = lambda: sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
m = rc.Model(lambda X: rc.tanh(X), {"X": rc.Input((None, 2))})
m(m.init(), X=np.ones((2, 2), np.float32), backend="interp")
print("after", blas(), rc.get_num_threads())
"""
    pytest.importorskip("threadpoolctl")
    env = {"PATH": "/usr/bin:/bin", "RNNCOMP_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "after [1] 1" in out.stdout, out.stdout


def test_results_do_not_depend_on_the_setting(clean, rng):
    m = rc.Model(lambda X: rc.dynamic_rnn(rc.BasicLSTMCell(8), X)[0],
                 {"X": rc.Input((None, None, 5))})
    p = m.init(0)
    x = rng.standard_normal((16, 6, 5)).astype(np.float32)
    rc.set_num_threads(1)
    a = m(p, X=x, backend="interp")
    rc.set_num_threads(2)
    b = m(p, X=x, backend="interp")
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_core_does_not_import_numba():
    code = ("import sys, numpy as np, rnncomp as rc; rc.set_num_threads(1); "
            "m = rc.Model(lambda X: rc.tanh(X), {'X': rc.Input((None, 2))}); "
            "m(m.init(), X=np.ones((2, 2), np.float32), backend='interp'); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
