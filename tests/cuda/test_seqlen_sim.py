"""Variable-length batches on the CUDA backend (numba's simulator, NumPy standing in for CuPy):
length-aware execution (the scans' `rows` hint, ragged GEMMs over the valid rows).

One graph (an LSTM and a GRU side by side, forward outputs, final states and every gradient,
T and B symbolic) runs every length pattern, sorted and unsorted, lengths 0 and T, against the
masked whole-batch model (length_aware=False) in the reference interpreter, in both ways the
executor runs a hinted scan: exact rows per step (plain launches: graphs off) and the segments
a CUDA graph captures (rows rounded up per segment of steps, the finished rows computed masked).
`row_log` shows the rows each step computed: a batch with one long sequence must run one row
after its first step, or the rows are not skipped.

numba reads NUMBA_ENABLE_CUDASIM when numba.cuda is first imported, so unless the current
process already has it set, this module re-runs itself in a child process with it set."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import numba_cuda_missing, run_pytest_child

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    def test_seqlen_in_simulator():
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"}, args=["-x"])

else:
    import rnncomp as rc
    from rnncomp.ir import Op
    from rnncomp.backends.cuda.compile import row_segments
    from rnncomp.backends.cuda.runtime import gemm_args
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.grad import model_grad_graph
    from rnncomp.runtime.interp import interpret

    I, H = 3, 2

    def _model(aware: bool) -> rc.Model:
        def fn(X, X2, R, L):
            out, st = rc.dynamic_rnn(rc.BasicLSTMCell(H), X, sequence_length=L,
                                     length_aware=aware, scope="lstm")
            gout, gst = rc.dynamic_rnn(rc.GRUCell(H), X2, sequence_length=L,
                                       length_aware=aware, scope="gru")
            loss = rc.sum(out * R) + rc.sum(st.h * st.c) + rc.sum(gout * R) + \
                rc.sum(rc.tanh(gst))
            return loss, out, st.h, st.c, gout, gst

        return rc.Model(fn, {"X": rc.Input((None, None, I)), "X2": rc.Input((None, None, 2)),
                             "R": rc.Input((None, None, H)), "L": rc.Input((None,), "i32")},
                        dtype="f64")

    @pytest.fixture(scope="module")
    def compiled():
        m, ref = _model(True), _model(False)
        wrt = list(m.param_specs) + ["X", "X2"]
        g = model_grad_graph(m, wrt=wrt, preoptimize=True)
        c = compile_graph(g, "cuda")
        return m, ref, wrt, c

    PATTERNS = [
        ("unsorted with 0 and T", 5, [3, 0, 5, 1]),
        ("sorted", 5, [5, 4, 2, 0]),
        ("one long", 5, [5, 1, 1, 1]),
        ("all full", 4, [4, 4, 4]),
        ("all empty", 4, [0, 0, 0]),
        ("ascending, longer T", 7, [1, 2, 6, 7]),
    ]

    @pytest.mark.parametrize("graphs", [False, True], ids=["exact rows", "segments"])
    @pytest.mark.parametrize("name,T,lengths", PATTERNS, ids=[p[0] for p in PATTERNS])
    def test_equals_the_masked_interpreter(compiled, name, T, lengths, graphs):
        m, ref, wrt, c = compiled
        c.use_graphs = graphs
        c.row_chunk, c.row_levels = 3, 2  # segments of 3 steps, rows rounded to half of B
        rng = np.random.default_rng(len(lengths) * 10 + T)
        B = len(lengths)
        inputs = {"X": rng.standard_normal((B, T, I)), "X2": rng.standard_normal((B, T, 2)),
                  "R": rng.standard_normal((B, T, H)), "L": np.array(lengths, np.int32)}
        p = m.init(seed=3)
        got = c(*m.arguments(p, inputs))
        want = interpret(model_grad_graph(ref, wrt=wrt), ref.arguments(p, inputs))
        assert len(got) == len(want)
        for k, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                       err_msg=f"result {k} ({name})")
        out, h, gout, gh = got[1], got[2], got[4], got[5]
        for b, n in enumerate(lengths):  # zeros past each length, state at the last valid step
            assert not np.any(out[b, n:]) and not np.any(gout[b, n:]), name
            if n:
                np.testing.assert_allclose(h[b], out[b, n - 1], rtol=1e-12)
                np.testing.assert_allclose(gh[b], gout[b, n - 1], rtol=1e-12)
            else:
                assert not np.any(h[b]) and not np.any(gh[b])
        # the four hinted loops (forward and reverse, LSTM and GRU) run, none with more rows
        # than the batch; steps past the last length are not run at all
        runs = c.row_log
        assert len(runs) == (4 if max(lengths) else 0), runs
        for r in runs:
            assert len(r["rows"]) == min(max(lengths), T) and max(r["rows"]) <= B

    def test_rows_are_skipped(compiled):
        """[T, 1, 1, 1]: after its first step only the long row runs (forward), and before its
        last step (reverse); a segment runs the most rows of its steps, rounded up to a
        multiple of ceil(4 / row_levels)."""
        m, ref, wrt, c = compiled
        T, L = 6, np.array([1, 6, 1, 1], np.int32)  # unsorted: the long row is not row 0
        rng = np.random.default_rng(1)
        inputs = {"X": rng.standard_normal((4, T, I)), "X2": rng.standard_normal((4, T, 2)),
                  "R": rng.standard_normal((4, T, H)), "L": L}
        args = m.arguments(m.init(seed=3), inputs)
        c.use_graphs = False
        skipped = c.stats["rows_skipped"]
        c(*args)
        assert len(c.row_log) == 4
        for r in c.row_log:
            want = [4] + [1] * (T - 1)
            assert r["rows"] == (want[::-1] if r["reverse"] else want), r
        assert c.stats["rows_skipped"] - skipped == 4 * 3 * (T - 1)
        c.use_graphs, c.row_chunk, c.row_levels = True, 4, 2
        c(*args)
        for r in c.row_log:
            # forward: t = 0 alone, then t 1..3 and 4..5 with 1 row rounded up to 2; reverse:
            # t = 5 alone (1 row), t = 4 (2 rows), then t 3..0 with the 4 rows of t = 0
            want = [1, 2, 4, 4, 4, 4] if r["reverse"] else [4, 2, 2, 2, 2, 2]
            assert r["rows"] == want, r

    def test_the_graph_has_what_is_tested(compiled):
        """The optimized graph holds the length-aware ops this module checks: four hinted
        loops, ragged GEMMs, permutes over the steps below max(L) (reads and zero-filled
        results)."""
        c = compiled[3]
        ops = [n.op for n in c.optimized.nodes]
        assert len(c.row_classes) == 4
        assert Op.RAGGED_MATMUL in ops and Op.RAGGED_TENSORDOT in ops
        assert {k for k, _ in c.permute_modes.values()} == {"head", "zero"}

    def test_segments_recur_across_length_patterns(compiled):
        """The graph keys of a hinted scan's segments (recorded by the simulator) do not depend
        on the trip count or the exact lengths: other batches with the same rounded rows per
        segment reuse the graphs a GPU captured, and the buffers keep their addresses."""
        m, ref, wrt, c = compiled
        c.use_graphs, c.row_chunk, c.row_levels = True, 3, 2
        T, p = 7, m.init(seed=3)
        rng = np.random.default_rng(4)
        X, X2, R = (rng.standard_normal((4, T, d)) for d in (I, 2, H))

        def keys(lengths):
            c.sim_graph_keys.clear()
            c(*m.arguments(p, {"X": X, "X2": X2, "R": R, "L": np.array(lengths, np.int32)}))
            return set(c.sim_graph_keys)

        a = keys([1, 7, 5, 2])
        # four loops; forward steps 1..6 (after step 0) in 3 segments [1, 2] [3, 4, 5] [6],
        # reverse steps 5..0 (after step 6) in 2: [5, 4, 3] [2, 1, 0]
        assert len(a) == 2 * (3 + 2)
        assert keys([1, 7, 5, 2]) == a  # the same batch again: every graph replayed
        # other lengths, same rows per segment (rounded up to 2 or 4): the same graphs
        assert keys([2, 7, 1, 6]) == a
        # trip count 6: the forward segments recur; reverse [4, 3] is new (one per loop)
        assert len(keys([2, 6, 1, 5]) - a) == 2
        # more rows in steps 3..5: one new segment per loop
        assert len(keys([6, 7, 6, 6]) - a) == 4
        # (an already sorted batch is not copied, so its loops read other buffers: a second
        # set of graphs)
        assert not keys([7, 5, 2, 1]) & a

    def test_batch_size_inside_a_step_is_the_whole_batch():
        """A cell reading its batch size (rc.count over axis 0) inside a length-aware step
        sees B, not the rows the step computes."""
        class Scaled(rc.BasicRNNCell):
            def call(self, inputs, state):
                o, _ = super().call(inputs, state)
                o = o / rc.count(o, axis=0)
                return o, o

        def make(aware):
            def fn(X, L):
                return rc.dynamic_rnn(Scaled(3), X, sequence_length=L, length_aware=aware)

            return rc.Model(fn, {"X": rc.Input((None, None, 2)), "L": rc.Input((None,), "i32")},
                            dtype="f64")

        m, ref = make(True), make(False)
        p = m.init(seed=0)
        inputs = {"X": np.random.default_rng(0).standard_normal((4, 5, 2)),
                  "L": np.array([5, 1, 3, 1], np.int32)}
        c = compile_graph(m.graph, "cuda")
        c.use_graphs = False
        got = c(*m.arguments(p, inputs))
        assert [r["rows"] for r in c.row_log] == [[4, 2, 2, 1, 1]]
        for a, b in zip(got, interpret(ref.graph, ref.arguments(p, inputs))):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    def test_row_segments():
        nbs = [4, 4, 3, 3, 2, 1, 1, 1]
        # forward: step 0 runs alone, then the grid t // 3: [1, 2], [3, 4, 5], [6, 7]
        assert row_segments(list(range(1, 8)), nbs, 3, 1, 4) == \
            [([1, 2], 4), ([3, 4, 5], 3), ([6, 7], 1)]
        # reverse, rows rounded up to multiples of 2 (at most B)
        assert row_segments(list(range(6, -1, -1)), nbs, 3, 2, 4) == \
            [([6], 2), ([5, 4, 3], 4), ([2, 1, 0], 4)]
        assert row_segments([1, 2], [3, 3, 3], 8, 2, 3) == [([1, 2], 3)]

    def _cublas_gemm(transa, transb, M, N, K, A, lda, B, ldb, ldc):
        """cuBLAS's column-major C[M, N] = op(A) op(B) on flat buffers (with its lda/ldb/ldc
        checks): element (i, j) of a matrix with leading dimension ld is buf[i + j * ld]."""
        assert lda >= max(1, K if transa else M) and ldb >= max(1, N if transb else K)
        assert ldc >= max(1, M)

        def op(buf, trans, rows, cols, ld):
            i, p = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            return buf[p + i * ld] if trans else buf[i + p * ld]

        C = op(A, transa, M, K, lda) @ op(B, transb, K, N, ldb)
        flat = np.zeros(ldc * N)
        i, j = np.meshgrid(np.arange(M), np.arange(N), indexing="ij")
        flat[i + j * ldc] = C
        return flat

    def _from(x):
        """The flat buffer starting at x's first element (x a view of a C-contiguous base)."""
        base = x
        while base.base is not None:
            base = base.base
        off = (x.__array_interface__["data"][0] - base.__array_interface__["data"][0])
        return base.ravel()[off // x.itemsize:]

    @pytest.mark.parametrize("T,B,K,N", [(3, 2, 4, 5), (3, 2, 1, 5), (4, 3, 5, 1), (2, 3, 1, 1)])
    def test_gemm_arguments_of_the_ragged_layouts(T, B, K, N):
        """The raw cuBLAS call (runtime.gemm_args; the simulator runs xp.matmul instead) on the
        operands the ragged GEMMs pass: row prefixes (the steps every row runs), transposed row
        prefixes (weight gradients a^T c, K = 1 for the bias), transposed gathered rows."""
        rng = np.random.default_rng(T * 100 + K * 10 + N)
        a2, c2 = rng.standard_normal((T * B, K)), rng.standard_normal((T * B, N))
        w = rng.standard_normal((K, N))
        idx = np.array([0, 2, T * B - 1])
        cases = [(a2[:m], w) for m in range(1, T * B + 1)] + \
            [(a2[:m].T, c2[:m]) for m in range(1, T * B + 1)] + \
            [(np.take(a2, idx, axis=0).T, np.take(c2, idx, axis=0))]
        for a, b in cases:
            args = gemm_args(a, b)
            assert args is not None
            ta, tb, M, Nn, Kk, lda, ldb, ldc = args
            flat = _cublas_gemm(ta, tb, M, Nn, Kk, _from(b), lda, _from(a), ldb, ldc)
            np.testing.assert_allclose(flat[:a.shape[0] * b.shape[1]].reshape(a.shape[0], -1),
                                       a @ b, rtol=1e-12, atol=1e-12)
