"""Prototype LSTM runners over the kernels of backends/cuda/proto_kernels.py.

Two runners share one set of preallocated buffers (no allocation inside the time loop, so the
loops can be captured into CUDA graphs):

* ``PersistentLSTM``: hoisted input GEMM (cuBLAS) + one persistent cooperative launch for the
  forward scan, one for the reverse scan, then the weight-gradient GEMMs.
* ``StepwiseLSTM``: hoisted input GEMM + per step (cuBLAS GEMM, fused elementwise kernel), both
  directions; on a GPU the forward and the backward loops are each captured once into a CUDA
  graph (CuPy stream capture) and replayed.

On a GPU the arrays are CuPy arrays, GEMMs are ``cupy.cublas.gemm`` with ``out=`` (one cuBLAS
call, no temporaries), kernels are numba-cuda launched on the same stream.  Under the CUDA
simulator (NUMBA_ENABLE_CUDASIM=1) the arrays are NumPy arrays and the GEMMs NumPy matmuls, so
the host logic can be checked without a GPU (no graphs there).

    python bench/proto_cuda_lstm.py --T 5 --B 2 --H 8          # simulator: set the env var
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("CUPY_TF32", "0")  # full fp32 GEMMs (TF32 off), as the targets require
os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")  # no stream syncs during capture

from rnncomp.backends.cuda import compat  # noqa: E402
from rnncomp.backends.cuda import proto_kernels as pk  # noqa: E402

from numba import cuda  # noqa: E402


class Ops:
    """Array/GEMM/stream operations: CuPy on a GPU, NumPy under the simulator."""

    def __init__(self):
        self.sim = compat.simulator()
        if self.sim:
            self.xp = np
            self.stream = None
            self.nb_stream = 0
        else:
            import cupy as cp

            self.xp = cp
            self.stream = cp.cuda.Stream(non_blocking=True)
            self.nb_stream = cuda.external_stream(self.stream.ptr)

    def nb(self, a):
        """numba view of an array (no copy, no sync)."""
        if self.sim:
            return a
        return cuda.as_cuda_array(a, sync=False)

    def gemm(self, ta, tb, a, b, out, beta=0.0):
        """out = op(a) @ op(b) + beta*out, op = transpose for 'T'."""
        if self.sim:
            A = a.T if ta == "T" else a
            Bm = b.T if tb == "T" else b
            r = A @ Bm
            if beta:
                out *= beta
                out += r
            else:
                out[...] = r
            return out
        import cupy.cublas

        return cupy.cublas.gemm(ta, tb, a, b, out=out, beta=beta)

    def asnumpy(self, a):
        return a if self.sim else self.xp.asnumpy(a)

    def sync(self):
        if not self.sim:
            self.stream.synchronize()


class _Base:
    """Buffers shared by both runners: X[T,B,I], Wx[I,4H], b[4H], Wh[H,4H] and outputs."""

    def __init__(self, ops: Ops, X, Wx, bias, Wh, h0, c0, seq_len, forget_bias=1.0, NT=256):
        xp = ops.xp
        self.ops, self.NT = ops, NT
        f32 = lambda a: xp.asarray(np.ascontiguousarray(a, np.float32))  # noqa: E731
        self.X, self.Wx, self.bias, self.Wh = f32(X), f32(Wx), f32(bias), f32(Wh)
        self.WhT = xp.ascontiguousarray(self.Wh.T)
        self.h0, self.c0 = f32(h0), f32(c0)
        self.seq_np = np.asarray(seq_len, np.int32)
        self.seq = xp.asarray(self.seq_np)
        self.fb = np.float32(forget_bias)
        T, B, I = X.shape
        H = Wh.shape[0]
        self.T, self.B, self.I, self.H = T, B, I, H
        self.T_run = int(min(T, self.seq_np.max())) if B else 0
        z = lambda *s: xp.zeros(s, np.float32)  # noqa: E731
        self.XW = z(T, B, 4 * H)
        self.hbuf, self.cbuf = z(T + 1, B, H), z(T + 1, B, H)
        self.y, self.gates = z(T, B, H), z(T, B, 4 * H)
        self.dy, self.dhT, self.dcT = z(T, B, H), z(B, H), z(B, H)
        self.dz = z(T, B, 4 * H)
        self.dh0, self.dc0 = z(B, H), z(B, H)
        self.dWx, self.dWh, self.db, self.dX = z(I, 4 * H), z(H, 4 * H), z(1, 4 * H), z(T, B, I)
        self.ones = xp.ones((1, T * B), np.float32)
        self.hT, self.cT = z(B, H), z(B, H)

    def set_grads(self, dy, dhT, dcT):
        xp = self.ops.xp
        self.dy[...] = xp.asarray(np.asarray(dy, np.float32))
        self.dhT[...] = xp.asarray(np.asarray(dhT, np.float32))
        self.dcT[...] = xp.asarray(np.asarray(dcT, np.float32))

    # hoisted GEMMs ------------------------------------------------------------------------
    def input_projection(self):
        T, B, I, H = self.T, self.B, self.I, self.H
        XW2 = self.XW.reshape(T * B, 4 * H)
        self.ops.gemm("N", "N", self.X.reshape(T * B, I), self.Wx, XW2)
        XW2 += self.bias  # in place, no temporary
        self.hbuf[0] = self.h0
        self.cbuf[0] = self.c0

    def finish_forward(self):
        self.hT[...] = self.hbuf[self.T_run]
        self.cT[...] = self.cbuf[self.T_run]

    def weight_gradients(self):
        T, B, I, H = self.T, self.B, self.I, self.H
        dz2 = self.dz.reshape(T * B, 4 * H)
        g = self.ops.gemm
        g("T", "N", self.hbuf[:T].reshape(T * B, H), dz2, self.dWh)
        g("T", "N", self.X.reshape(T * B, I), dz2, self.dWx)
        g("N", "N", self.ones, dz2, self.db)
        g("N", "T", dz2, self.Wx, self.dX.reshape(T * B, I))

    def results(self):
        a = self.ops.asnumpy
        return dict(y=a(self.y), hT=a(self.hT), cT=a(self.cT), dz=a(self.dz), dh0=a(self.dh0),
                    dc0=a(self.dc0), dWx=a(self.dWx), dWh=a(self.dWh), db=a(self.db)[0],
                    dX=a(self.dX))


class PersistentLSTM(_Base):
    """Small-batch strategy: one cooperative launch per direction."""

    def __init__(self, *a, units=None, **k):
        super().__init__(*a, **k)
        self.plan = pk.plan_persistent(self.B, self.H, self.NT, units)
        if self.plan is None:
            raise ValueError(f"B={self.B} H={self.H} does not fit the persistent kernels")
        self.kf, _ = pk.make_persistent_fwd(self.B, self.NT)
        self.kb, _ = pk.make_persistent_bwd(self.B, self.NT)
        n = self.ops.nb
        self.nbv = {k: n(getattr(self, k)) for k in (
            "XW", "Wh", "hbuf", "cbuf", "y", "gates", "seq", "dy", "dhT", "dcT", "dz", "dh0",
            "dc0")}
        if not self.ops.sim:
            sigs = pk.signatures()
            self.kf.compile(sigs["lstm_fwd_persistent"])
            self.kb.compile(sigs["lstm_bwd_persistent"])
            okf = compat.set_max_dynamic_shared(self.kf, self.plan["fwd_smem"])
            okb = compat.set_max_dynamic_shared(self.kb, self.plan["bwd_smem"])
            if not (okf and okb):
                raise RuntimeError("could not raise the dynamic shared-memory limit")
            for kern, key in ((self.kf, "lstm_fwd_persistent"), (self.kb, "lstm_bwd_persistent")):
                ov = kern.overloads[sigs[key].args]
                smem = self.plan["fwd_smem" if kern is self.kf else "bwd_smem"]
                mx = ov.max_cooperative_grid_blocks(self.NT, smem)
                if mx < self.plan["blocks"]:
                    raise RuntimeError(f"{key}: {self.plan['blocks']} blocks > co-resident {mx}")
            self.coresident = mx

    def forward_scan(self):
        v, p = self.nbv, self.plan
        self.kf[p["blocks"], self.NT, self.ops.nb_stream, p["fwd_smem"]](
            v["XW"], v["Wh"], v["hbuf"], v["cbuf"], v["y"], v["gates"], v["seq"], self.fb,
            np.int32(p["U"]), np.int32(self.T_run))

    def backward_scan(self):
        v, p = self.nbv, self.plan
        self.kb[p["blocks"], self.NT, self.ops.nb_stream, p["bwd_smem"]](
            v["dy"], v["dhT"], v["dcT"], v["Wh"], v["gates"], v["cbuf"], v["seq"], v["dz"],
            v["dh0"], v["dc0"], np.int32(p["U"]), np.int32(self.T_run))

    def forward(self):
        with self.ops.stream or _null():
            self.input_projection()
            self.forward_scan()
            self.finish_forward()

    def backward(self):
        with self.ops.stream or _null():
            self.backward_scan()
            self.weight_gradients()


class StepwiseLSTM(_Base):
    """Large-batch strategy: cuBLAS step GEMM + fused elementwise kernel, graph-captured."""

    def __init__(self, *a, use_graph=True, **k):
        super().__init__(*a, **k)
        xp = self.ops.xp
        B, H = self.B, self.H
        self.Z = xp.zeros((B, 4 * H), np.float32)
        self.dHrec = xp.zeros((B, H), np.float32)
        self.carry = xp.zeros((B, H), np.float32)
        self.dcs = xp.zeros((B, H), np.float32)
        n = self.ops.nb
        self.nbv = {k: n(getattr(self, k)) for k in (
            "Z", "XW", "hbuf", "cbuf", "y", "gates", "seq", "dHrec", "dy", "dz", "carry", "dcs")}
        self.nblk = (B * H + self.NT - 1) // self.NT
        self.use_graph = use_graph and not self.ops.sim
        self.graphs = {}
        self.graph_error = None

    def _fwd_body(self):
        v, s = self.nbv, self.ops.nb_stream
        self.input_projection()
        for t in range(self.T_run):
            self.ops.gemm("N", "N", self.hbuf[t], self.Wh, self.Z)
            pk.lstm_fwd_elem[self.nblk, self.NT, s](np.int32(t), v["Z"], v["XW"], v["hbuf"],
                                                    v["cbuf"], v["y"], v["gates"], v["seq"],
                                                    self.fb)
        self.finish_forward()

    def _bwd_body(self):
        v, s = self.nbv, self.ops.nb_stream
        self.dHrec[...] = self.dhT
        self.carry[...] = 0
        self.dcs[...] = self.dcT
        for t in range(self.T_run - 1, -1, -1):
            pk.lstm_bwd_elem[self.nblk, self.NT, s](np.int32(t), v["dHrec"], v["dy"],
                                                    v["gates"], v["cbuf"], v["seq"], v["dz"],
                                                    v["carry"], v["dcs"])
            self.ops.gemm("N", "N", self.dz[t], self.WhT, self.dHrec)
        self.dh0[...] = self.dHrec
        self.dh0 += self.carry
        self.dc0[...] = self.dcs
        self.weight_gradients()

    def _run(self, name, body):
        if not self.use_graph:
            with self.ops.stream or _null():
                body()
            return
        if name not in self.graphs and self.graph_error is None:
            st = self.ops.stream
            with st:
                body()  # warm-up: compiles kernels, creates cuBLAS handle/workspace
                st.synchronize()
                try:
                    st.begin_capture()
                    try:
                        body()
                    finally:
                        g = st.end_capture()
                    self.graphs[name] = g
                except Exception as exc:  # fall back to the plain host loop
                    self.graph_error = f"{type(exc).__name__}: {exc}"[:200]
        if name in self.graphs:
            self.graphs[name].launch(self.ops.stream)
        else:
            with self.ops.stream:
                body()

    def forward(self):
        self._run("fwd", self._fwd_body)

    def backward(self):
        self._run("bwd", self._bwd_body)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ------------------------------------------------------------------------------------------
# reference check
# ------------------------------------------------------------------------------------------


def make_problem(T, B, H, I=None, seed=0, seq=None, forget_bias=1.0):
    I = I or H
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H)
    p = dict(
        X=rng.standard_normal((T, B, I)).astype(np.float32),
        Wx=(rng.uniform(-s, s, (I, 4 * H))).astype(np.float32),
        bias=(rng.uniform(-s, s, 4 * H)).astype(np.float32),
        Wh=(rng.uniform(-s, s, (H, 4 * H))).astype(np.float32),
        h0=(0.5 * rng.standard_normal((B, H))).astype(np.float32),
        c0=(0.5 * rng.standard_normal((B, H))).astype(np.float32),
        seq_len=np.asarray(seq if seq is not None else
                           rng.integers(max(1, T // 2), T + 1, B), np.int32),
        forget_bias=forget_bias,
    )
    g = dict(dy=rng.standard_normal((T, B, H)).astype(np.float32),
             dhT=rng.standard_normal((B, H)).astype(np.float32),
             dcT=rng.standard_normal((B, H)).astype(np.float32))
    return p, g


def reference(p, g):
    """float64 NumPy forward + backward incl. the weight gradients."""
    d = lambda a: np.asarray(a, np.float64)  # noqa: E731
    T, B, I = p["X"].shape
    H = p["Wh"].shape[0]
    XW = d(p["X"]) @ d(p["Wx"]) + d(p["bias"])
    y, hb, cb, gates = pk.reference_forward(XW, d(p["Wh"]), d(p["h0"]), d(p["c0"]),
                                            p["seq_len"], p["forget_bias"])
    dz, dh0, dc0 = pk.reference_backward(d(g["dy"]), d(g["dhT"]), d(g["dcT"]), d(p["Wh"]),
                                         gates, cb, p["seq_len"])
    dz2 = dz.reshape(T * B, 4 * H)
    return dict(y=y, hT=hb[T], cT=cb[T], dz=dz, dh0=dh0, dc0=dc0,
                dWx=d(p["X"]).reshape(T * B, I).T @ dz2, dWh=hb[:T].reshape(T * B, H).T @ dz2,
                db=dz2.sum(0), dX=(dz2 @ d(p["Wx"]).T).reshape(T, B, I))


def rel_errors(got: dict, ref: dict) -> dict:
    out = {}
    for k, r in ref.items():
        a = np.asarray(got[k], np.float64)
        out[k] = float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30)) \
            if np.isfinite(a).all() else float("nan")
    return out


def run_check(kind, T, B, H, I=None, NT=256, units=None, seed=0, seq=None):
    """Build the runner, run fwd + bwd once, return max relative error over all outputs."""
    ops = Ops()
    p, g = make_problem(T, B, H, I, seed, seq)
    cls = PersistentLSTM if kind == "persistent" else StepwiseLSTM
    kw = dict(units=units) if kind == "persistent" else {}
    r = cls(ops, p["X"], p["Wx"], p["bias"], p["Wh"], p["h0"], p["c0"], p["seq_len"],
            p["forget_bias"], NT=NT, **kw)
    r.set_grads(**g)
    r.forward()
    r.backward()
    ops.sync()
    errs = rel_errors(r.results(), reference(p, g))
    return errs, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--NT", type=int, default=None)
    a = ap.parse_args(argv)
    NT = a.NT or (64 if compat.simulator() else 256)
    worst = 0.0
    for kind in ("persistent", "stepwise"):
        errs, _ = run_check(kind, a.T, a.B, a.H, NT=NT)
        worst = max(worst, max(errs.values()))
        print(kind, " ".join(f"{k}={v:.2e}" for k, v in errs.items()))
    print("max rel err", worst)
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
