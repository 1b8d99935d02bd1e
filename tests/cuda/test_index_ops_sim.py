"""argmax, the embedding gather and its scatter-add gradient on the CUDA backend (numba's
simulator, NumPy standing in for CuPy), against the reference interpreter; a bad id raises the
same IndexOutOfRange as on the other backends.

numba reads NUMBA_ENABLE_CUDASIM when numba.cuda is first imported, so unless the current
process already has it set, this module re-runs itself in a child process with it set."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import numba_cuda_missing, run_pytest_child

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    def test_index_ops_in_simulator():
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"}, args=["-x"])

else:
    import rnncomp as rc
    from rnncomp import layers
    from rnncomp.ir.ops import IndexOutOfRange
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.interp import evaluate
    from rnncomp.transforms.autodiff import grad_graph

    def _model():
        def fn(X, ids):
            e = layers.embedding(ids, 9, 4)
            out, _ = rc.dynamic_rnn(rc.BasicRNNCell(3), rc.concat([X, e], axis=-1))
            return rc.reduce_sum(out * out), rc.argmax(out, -1), rc.argmax(e, 0, output_type="i32")

        return rc.Model(fn, {"X": rc.Input((None, None, 2)), "ids": rc.Input((None, None), "i32")},
                        dtype="f64")

    def test_forward_and_backward_match_the_interpreter():
        m = _model()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 2))
        ids = np.array([[1, 8, 1], [0, 1, 1]], np.int32)  # repeated rows: scatter-add sums
        args = m.arguments(m.init(0), {"X": x, "ids": ids})
        names = list(m.param_specs)
        g = grad_graph(m.graph, 0, names)
        ref = evaluate(g, args)
        got = compile_graph(g, backend="cuda")(*args)
        for r, o in zip(ref, got):
            assert np.asarray(o).dtype == np.asarray(r).dtype
            np.testing.assert_allclose(np.asarray(o), r, rtol=1e-10, atol=1e-12)

    def test_bad_id_is_an_index_error():
        m = _model()
        args = m.arguments(m.init(0), {"X": np.zeros((1, 2, 2)), "ids": np.zeros((1, 2), np.int32)})
        k = [n.name for n in m.graph.inputs].index("ids")
        args[k] = np.array([[0, 9]], np.int32)  # past the range check of Model inputs
        with pytest.raises(IndexOutOfRange, match="index 9 is out of range"):
            compile_graph(m.graph, backend="cuda")(*args)
