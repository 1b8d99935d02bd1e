"""Decoding loops with a run-time stop on the CUDA backend (numba's simulator, NumPy standing in
for CuPy), against the reference interpreter: a scan whose stop carry ends the loop (forward
and BPTT: the reverse loop starts at the last step run) and beam search (BeamSearchDecoder,
gather_tree) with its gradients.

numba reads NUMBA_ENABLE_CUDASIM when numba.cuda is first imported, so unless the current
process already has it set, this module re-runs itself in a child process with it set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import numba_cuda_missing, run_pytest_child

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    def test_decode_in_simulator():
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"}, args=["-x"])

else:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from test_beam_search import _beam_model, _stop_model, _stopping_case  # noqa: E402

    from rnncomp.runtime.compiler import compile_graph  # noqa: E402
    from rnncomp.runtime.interp import evaluate  # noqa: E402
    from rnncomp.transforms.autodiff import grad_graph  # noqa: E402

    def _check(m, params, inputs, wrt):
        args = m.arguments(params, inputs)
        g = grad_graph(m.graph, 0, wrt)
        ref = evaluate(g, args)
        compiled = compile_graph(g, backend="cuda")
        got = compiled(*args)
        for r, o in zip(ref, got):
            assert np.asarray(o).dtype == np.asarray(r).dtype
            np.testing.assert_allclose(np.asarray(o), r, rtol=1e-10, atol=1e-12)
        return ref, compiled

    def test_scan_stop():
        m = _stop_model()
        rng = np.random.default_rng(0)
        inp = dict(X=rng.standard_normal((6, 4)), n=np.int32(3), w=rng.standard_normal(4),
                   R=rng.standard_normal(4))
        ref, compiled = _check(m, {}, inp, ["X", "w"])
        assert int(ref[2]) == 3
        assert compiled.stats["eager_steps"] == 3 + 3  # forward and reverse loops: 3 steps each
        assert np.all(ref[-2][3:] == 0) and np.any(ref[-2][:3] != 0)  # dX past the stop

    def test_beam_search():
        m = _beam_model(w=0.7)
        rng = np.random.default_rng(1234)
        p, H0, R = _stopping_case(rng, m)
        ref, _ = _check(m, p, dict(H0=H0, R=R), sorted(p))
        assert ref[6].max() < 6  # the loop stopped early
