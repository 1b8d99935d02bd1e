"""The persistent LSTM kernels (backends/cuda/persistent.py) on numba's CUDA simulator, against
the NumPy reference.

The simulator runs every thread as a Python thread and its grid.sync() only synchronises one
block, so the persistent kernels run here with a single block (U = H) at toy sizes; the
multi-block forward with warp shuffles is checked on a GPU by bench/bench_gpu.py (phase 1).  The
simulator has no warp shuffles: the kernels compile in their shared-memory reduction there
(use_shfl=False).

The simulator is switched on for this module only (numba reads NUMBA_ENABLE_CUDASIM when
numba.cuda is first imported), so this file runs in a subprocess when the current process has
already imported numba.cuda for real.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import numba_cuda_missing, run_pytest_child

ROOT = Path(__file__).resolve().parents[2]


def _sim_ready() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


if not _sim_ready():
    # Re-run this file under the simulator in a child process (keeps other tests' numba.cuda real).

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    def test_simulator_subprocess():
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"})

else:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from rnncomp.backends.cuda import persistent as pk

    T, B, H = 5, 2, 8
    NT = 64  # two warps: exercises the cross-warp K-chunk split (NQ) in the backward matvec

    def _inputs(seed, seq=(5, 3)):
        rng = np.random.default_rng(seed)
        XW = rng.standard_normal((T, B, 4 * H))
        Wh = rng.standard_normal((H, 4 * H)) * 0.4
        h0 = rng.standard_normal((B, H)) * 0.5
        c0 = rng.standard_normal((B, H)) * 0.5
        dy = rng.standard_normal((T, B, H))
        dhT = rng.standard_normal((B, H))
        dcT = rng.standard_normal((B, H))
        return XW, Wh, h0, c0, np.array(seq, np.int32), dy, dhT, dcT

    def _f32(*a):
        return [x.astype(np.float32) if x.dtype == np.float64 else x for x in a]

    def _rel(a, b):
        return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)

    def test_reference_backward_matches_finite_differences():
        """The oracle itself: reference_backward is the VJP of reference_forward (float64)."""
        XW, Wh, h0, c0, seq, dy, dhT, dcT = _inputs(1)

        def loss(XW, h0, c0):
            y, hb, cb, _ = pk.reference_forward(XW, Wh, h0, c0, seq, 1.0)
            return (y * dy).sum() + (hb[T] * dhT).sum() + (cb[T] * dcT).sum()

        # final state of the masked instance is frozen => hb[T] is its last valid state
        y, hb, cb, g = pk.reference_forward(XW, Wh, h0, c0, seq, 1.0)
        dz, dh0, dc0 = pk.reference_backward(dy, dhT, dcT, Wh, g, cb, seq)
        rng = np.random.default_rng(7)
        for arr_idx, grad in ((0, dz), (1, dh0), (2, dc0)):
            args = [XW, h0, c0]
            v = rng.standard_normal(args[arr_idx].shape)
            eps = 1e-6
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[arr_idx] += eps * v
            minus[arr_idx] -= eps * v
            fd = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert abs(fd - (grad * v).sum()) < 1e-6 * max(1.0, abs(fd))

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_persistent_forward(dtype):
        XW, Wh, h0, c0, seq, *_ = _inputs(2)
        ref = pk.reference_forward(*(_f32(XW, Wh, h0, c0) if dtype == "float32"
                                     else (XW, Wh, h0, c0)), seq, 1.0)
        X32 = _f32(XW, Wh, h0, c0)
        out = pk.persistent_forward(*X32, seq, 1.0, NT=NT)
        tol = 1e-5 if dtype == "float32" else 1e-5
        for name, r in zip(["y", "hbuf", "cbuf", "gates"], ref):
            got = out[name].copy_to_host()
            assert np.isfinite(got).all()
            assert _rel(got, r) < tol, name
        # masking: outputs past the length are exactly zero, state frozen
        y = out["y"].copy_to_host()
        assert (y[3:, 1] == 0).all() and (y[:3, 1] != 0).any()
        hb = out["hbuf"].copy_to_host()
        np.testing.assert_array_equal(hb[5, 1], hb[3, 1])

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_persistent_backward(dtype):
        XW, Wh, h0, c0, seq, dy, dhT, dcT = _inputs(3)
        conv = _f32 if dtype == "float32" else (lambda *a: list(a))
        _, _, cb, g = pk.reference_forward(*conv(XW, Wh, h0, c0), seq, 1.0)
        ref = pk.reference_backward(*conv(dy, dhT, dcT, Wh), g, cb, seq)
        g32, cb32 = _f32(g, cb) if dtype == "float64" else (g, cb)
        out = pk.persistent_backward(*_f32(dy, dhT, dcT, Wh), g32, cb32, seq, T_run=5, NT=NT)
        for name, r in zip(["dz", "dh0", "dc0"], ref):
            got = out[name].copy_to_host()
            assert np.isfinite(got).all()
            assert _rel(got, r) < 1e-5, name
        dz = out["dz"].copy_to_host()
        assert (dz[3:, 1] == 0).all()

    def test_persistent_backward_nq_split():
        """NT=256 (8 warps) with U=8 rows -> NQ=1; NT=64 above gives NQ=1 too for U=8, so use
        H=4 here (U=4 rows, 8 warps -> NQ=2) to exercise the cross-warp partial sums."""
        rng = np.random.default_rng(4)
        T_, B_, H_ = 3, 1, 4
        XW = rng.standard_normal((T_, B_, 4 * H_)).astype(np.float32)
        Wh = (rng.standard_normal((H_, 4 * H_)) * 0.4).astype(np.float32)
        h0 = np.zeros((B_, H_), np.float32)
        c0 = np.zeros((B_, H_), np.float32)
        seq = np.array([3], np.int32)
        dy = rng.standard_normal((T_, B_, H_)).astype(np.float32)
        z = np.zeros((B_, H_), np.float32)
        out = pk.persistent_forward(XW, Wh, h0, c0, seq, 0.5, NT=256)
        ref = pk.reference_forward(XW.astype(np.float64), Wh.astype(np.float64), h0, c0, seq, 0.5)
        assert _rel(out["y"].copy_to_host(), ref[0]) < 1e-5
        bo = pk.persistent_backward(dy, z, z, Wh, out["gates"], out["cbuf"], seq, 3, NT=256)
        rb = pk.reference_backward(dy.astype(np.float64), z, z, Wh.astype(np.float64), ref[3],
                                   ref[2], seq)
        assert _rel(bo["dz"].copy_to_host(), rb[0]) < 1e-5
        assert _rel(bo["dh0"].copy_to_host(), rb[1]) < 1e-5
