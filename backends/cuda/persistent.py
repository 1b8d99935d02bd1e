"""Persistent cooperative LSTM kernels (forward and backward) and their planner.

The small-batch fast path of the CUDA backend: one launch runs a whole LSTM scan, instead of
T x (cuBLAS GEMM + fused kernel).  `kernels_lstm.run_persistent` plans with `plan_persistent`,
builds the forward kernel with `make_persistent_fwd` and compiles it with `signatures()`; it
launches the kernel itself on the executor's stream and buffers.  The backward kernel
(`make_persistent_bwd`) is verified (simulator, PTX, ptxas) but not yet wired to the autodiff
graph; backward scans take the generic path.  Design, measurements and open risks:
docs/design-cuda-kernels.md.

Semantics (TF1 LSTMCell): gate layout along the 4H axis is i, j, f, o (j is the tanh
candidate), forget_bias added to f before the sigmoid:

    z = XW[t] + h_{t-1} @ Wh                      XW[T, B, 4H] = x @ Wx + b, hoisted GEMM
    i, j, f, o = sig(z_i), tanh(z_j), sig(z_f + forget_bias), sig(z_o)
    c_t = f * c_{t-1} + i * j ;  h_t = o * tanh(c_t)

sequence_length: for t >= len[b] the state of instance b is frozen and y[t, b] = 0.

Work split: grid = H / U blocks, block `blk` owns hidden units [u0, u0+U), one ``grid.sync()``
per step in each direction.
- forward: the block's Wh columns (4U of them, all H rows, stored transposed so lanes read
  consecutive k) live in shared memory for the whole sequence; per step it stages h_{t-1} (all
  units, written by every block) from global ``hbuf[t]`` into shared memory, does the 4U x H
  matvec for every batch row, applies the cell, writes ``hbuf[t+1]`` for its units, syncs the grid.
- backward (reverse scan): transposed ownership.  The block owns *rows* [u0, u0+U) of Wh (U x 4H,
  in shared memory).  The cell backward of its units needs dh of its units only, which is
  exactly what its own matvec produced the step before (dh_prev[:, u0:u0+U] = dz @ Wh[u0:u0+U].T),
  so dh/dc stay in shared memory; only dz is exchanged: each block writes dz[t] for its units'
  4 gates, syncs the grid, stages the whole dz[t] and does its U-row matvec.  dz[T, B, 4H] feeds
  the cuBLAS weight-gradient GEMMs (dWh = hbuf[:T]^T dz, dWx = X^T dz, db = sum dz, dX = dz Wx^T).

Kernels are built by factories so that the batch size B and the block size NT are compile-time
constants: the per-lane accumulators ``acc[B]`` then unroll into registers.  Warp reductions use
``shfl_down_sync`` on hardware; the CUDA simulator has no shuffles, so there a shared-memory
reduction (with block barriers, hence the uniform per-warp trip counts) is compiled in instead.

Also here: the shared-memory formulas (`fwd_smem_floats`, `bwd_smem_floats`), simple launchers
that allocate their own buffers (`persistent_forward`, `persistent_backward`; the tests use them)
and the NumPy reference (`reference_forward`, `reference_backward`, any float dtype), the oracle
of tests/cuda/test_persistent_sim.py.
"""

from __future__ import annotations

import math

import numpy as np

from .compat import ensure_numpy_compat, simulator

ensure_numpy_compat()

from numba import cuda  # noqa: E402  (after the NumPy shim)
from numba import float32 as nb_float32  # noqa: E402

F0 = np.float32(0.0)
F1 = np.float32(1.0)
FULL_MASK = 0xFFFFFFFF


@cuda.jit(device=True, inline="always")
def _sigmoid(x):
    return F1 / (F1 + math.exp(-x))


# --------------------------------------------------------------------------------------------
# shared-memory budgets (bytes); the launchers and the docs use the same formulas
# --------------------------------------------------------------------------------------------


def _nq(nrows: int, nwarps: int) -> int:
    """How many K-chunks a row's dot product is split into, so every warp gets work."""
    return max(1, nwarps // max(1, nrows))


def fwd_smem_floats(B: int, H: int, U: int, NT: int, sim: bool | None = None) -> int:
    sim = simulator() if sim is None else sim
    nw = NT // 32
    nc = 4 * U
    n = nc * H + B * H + _nq(nc, nw) * B * nc
    if sim:
        n += nw * B * 32
    return n


def bwd_smem_floats(B: int, H: int, U: int, NT: int, sim: bool | None = None) -> int:
    sim = simulator() if sim is None else sim
    nw = NT // 32
    n = U * 4 * H + B * 4 * H + _nq(U, nw) * B * U + 2 * B * U
    if sim:
        n += nw * B * 32
    return n


# --------------------------------------------------------------------------------------------
# persistent cooperative forward
# --------------------------------------------------------------------------------------------

_cache: dict = {}


def make_persistent_fwd(B: int, NT: int = 256, use_shfl: bool | None = None):
    """Persistent forward kernel for batch B, NT threads per block (multiple of 32).

    Signature: (XW[T,B,4H], Wh[H,4H], hbuf[T+1,B,H], cbuf[T+1,B,H], y[T,B,H], gates[T,B,4H],
                seq_len[B] int32, forget_bias f32, U int32, T int32)
    hbuf[0], cbuf[0] hold h0, c0 on entry.  Grid = H // U blocks, dynamic shared memory
    4 * fwd_smem_floats(B, H, U, NT) bytes, cooperative (numba launches it so: it uses grid sync).
    """
    USE_SHFL = (not simulator()) if use_shfl is None else use_shfl
    key = ("pfwd", B, NT, USE_SHFL)
    if key in _cache:
        return _cache[key]
    NW = NT // 32

    def lstm_fwd_persistent(XW, Wh, hbuf, cbuf, y, gates, seq_len, forget_bias, U, T):
        H = Wh.shape[0]
        tid = cuda.threadIdx.x
        lane = tid % 32
        warp = tid // 32
        u0 = cuda.blockIdx.x * U
        NC = 4 * U
        NQ = max(1, NW // NC)
        ntask = NC * NQ
        smem = cuda.shared.array(0, dtype=nb_float32)
        HOFF = NC * H  # h_{t-1}: [B][H]
        POFF = HOFF + B * H  # partial sums: [NQ][B][NC]
        ROFF = POFF + NQ * B * NC  # simulator-only reduction scratch: [NW][B][32]
        grid = cuda.cg.this_grid()

        # Wh slice, transposed: smem[c*H + k] = Wh[k, gate*H + u0 + u], c = gate*U + u
        for e in range(tid, NC * H, NT):
            k = e // NC
            c = e - k * NC
            gate = c // U
            u = c - gate * U
            smem[c * H + k] = Wh[k, gate * H + u0 + u]

        for t in range(T):
            for e in range(tid, B * H, NT):
                b = e // H
                k = e - b * H
                smem[HOFF + e] = hbuf[t, b, k]
            cuda.syncthreads()

            # matvec: task = (column c, K-chunk q); lanes stride over k
            for base in range(0, ntask, NW):
                task = base + warp
                acc = cuda.local.array(B, dtype=nb_float32)
                for b in range(B):
                    acc[b] = F0
                c = task % NC
                q = task // NC
                if task < ntask:
                    wrow = c * H
                    for k in range(q * 32 + lane, H, 32 * NQ):
                        w = smem[wrow + k]
                        for b in range(B):
                            acc[b] += w * smem[HOFF + b * H + k]
                if USE_SHFL:
                    for b in range(B):
                        v = acc[b]
                        v += cuda.shfl_down_sync(FULL_MASK, v, 16)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 8)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 4)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 2)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 1)
                        if lane == 0 and task < ntask:
                            smem[POFF + (q * B + b) * NC + c] = v
                else:
                    for b in range(B):
                        smem[ROFF + (warp * B + b) * 32 + lane] = acc[b]
                    cuda.syncthreads()
                    if lane == 0 and task < ntask:
                        for b in range(B):
                            v = F0
                            for r in range(32):
                                v += smem[ROFF + (warp * B + b) * 32 + r]
                            smem[POFF + (q * B + b) * NC + c] = v
                    cuda.syncthreads()
            cuda.syncthreads()

            # cell: one thread per (b, u) of this block's units
            for e in range(tid, B * U, NT):
                b = e // U
                u = e - b * U
                j = u0 + u
                cp = cbuf[t, b, j]
                if t < seq_len[b]:
                    zi = XW[t, b, j]
                    zj = XW[t, b, H + j]
                    zf = XW[t, b, 2 * H + j]
                    zo = XW[t, b, 3 * H + j]
                    for q in range(NQ):
                        pb = POFF + (q * B + b) * NC
                        zi += smem[pb + u]
                        zj += smem[pb + U + u]
                        zf += smem[pb + 2 * U + u]
                        zo += smem[pb + 3 * U + u]
                    gi = _sigmoid(zi)
                    gj = math.tanh(zj)
                    gf = _sigmoid(zf + forget_bias)
                    go = _sigmoid(zo)
                    cn = gf * cp + gi * gj
                    hn = go * math.tanh(cn)
                    gates[t, b, j] = gi
                    gates[t, b, H + j] = gj
                    gates[t, b, 2 * H + j] = gf
                    gates[t, b, 3 * H + j] = go
                    y[t, b, j] = hn
                else:
                    cn = cp
                    hn = smem[HOFF + b * H + j]
                    gates[t, b, j] = F0
                    gates[t, b, H + j] = F0
                    gates[t, b, 2 * H + j] = F0
                    gates[t, b, 3 * H + j] = F0
                    y[t, b, j] = F0
                cbuf[t + 1, b, j] = cn
                hbuf[t + 1, b, j] = hn
            grid.sync()

    k = cuda.jit(lstm_fwd_persistent)
    _cache[key] = (k, lstm_fwd_persistent)
    return _cache[key]


# --------------------------------------------------------------------------------------------
# persistent cooperative backward (reverse scan)
# --------------------------------------------------------------------------------------------


def make_persistent_bwd(B: int, NT: int = 256, use_shfl: bool | None = None):
    """Persistent BPTT kernel for batch B.

    Signature: (dy[T,B,H], dhT[B,H], dcT[B,H], Wh[H,4H], gates[T,B,4H], cbuf[T+1,B,H],
                seq_len[B] int32, dz[T,B,4H] out, dh0[B,H] out, dc0[B,H] out, U int32, T int32)
    Grid = H // U blocks, dynamic shared memory 4 * bwd_smem_floats(B, H, U, NT) bytes.
    """
    USE_SHFL = (not simulator()) if use_shfl is None else use_shfl
    key = ("pbwd", B, NT, USE_SHFL)
    if key in _cache:
        return _cache[key]
    NW = NT // 32

    def lstm_bwd_persistent(dy, dhT, dcT, Wh, gates, cbuf, seq_len, dz, dh0, dc0, U, T):
        H = Wh.shape[0]
        H4 = 4 * H
        tid = cuda.threadIdx.x
        lane = tid % 32
        warp = tid // 32
        u0 = cuda.blockIdx.x * U
        NQ = max(1, NW // U)
        ntask = U * NQ
        smem = cuda.shared.array(0, dtype=nb_float32)
        ZOFF = U * H4  # dz[t]: [B][4H]
        POFF = ZOFF + B * H4  # partial sums [NQ][B][U]
        DHOFF = POFF + NQ * B * U  # carried dh of own units [B][U]
        DCOFF = DHOFF + B * U  # carried dc of own units [B][U]
        ROFF = DCOFF + B * U  # simulator-only scratch [NW][B][32]
        grid = cuda.cg.this_grid()

        # own rows of Wh, row-major: smem[u*4H + c] = Wh[u0 + u, c]  (coalesced both sides)
        for e in range(tid, U * H4, NT):
            u = e // H4
            c = e - u * H4
            smem[e] = Wh[u0 + u, c]
        for e in range(tid, B * U, NT):
            b = e // U
            u = e - b * U
            smem[DHOFF + e] = dhT[b, u0 + u]
            smem[DCOFF + e] = dcT[b, u0 + u]
        cuda.syncthreads()

        for s in range(T):
            t = T - 1 - s
            # cell backward for own units
            for e in range(tid, B * U, NT):
                b = e // U
                u = e - b * U
                j = u0 + u
                if t < seq_len[b]:
                    dh = smem[DHOFF + e] + dy[t, b, j]
                    dc = smem[DCOFF + e]
                    gi = gates[t, b, j]
                    gj = gates[t, b, H + j]
                    gf = gates[t, b, 2 * H + j]
                    go = gates[t, b, 3 * H + j]
                    tc = math.tanh(cbuf[t + 1, b, j])
                    cp = cbuf[t, b, j]
                    dgo = dh * tc
                    dc = dc + dh * go * (F1 - tc * tc)
                    smem[DCOFF + e] = dc * gf
                    smem[DHOFF + e] = F0  # replaced by the recurrent term below
                    dz[t, b, j] = dc * gj * gi * (F1 - gi)
                    dz[t, b, H + j] = dc * gi * (F1 - gj * gj)
                    dz[t, b, 2 * H + j] = dc * cp * gf * (F1 - gf)
                    dz[t, b, 3 * H + j] = dgo * go * (F1 - go)
                else:  # frozen step: dh, dc pass through, no gate gradient
                    dz[t, b, j] = F0
                    dz[t, b, H + j] = F0
                    dz[t, b, 2 * H + j] = F0
                    dz[t, b, 3 * H + j] = F0
            grid.sync()

            for e in range(tid, B * H4, NT):
                b = e // H4
                c = e - b * H4
                smem[ZOFF + e] = dz[t, b, c]
            cuda.syncthreads()

            # dh_prev[b, u0+u] = sum_c dz[b, c] * Wh[u0+u, c]; task = (row u, chunk q)
            for base in range(0, ntask, NW):
                task = base + warp
                acc = cuda.local.array(B, dtype=nb_float32)
                for b in range(B):
                    acc[b] = F0
                u = task % U
                q = task // U
                if task < ntask:
                    wrow = u * H4
                    for c in range(q * 32 + lane, H4, 32 * NQ):
                        w = smem[wrow + c]
                        for b in range(B):
                            acc[b] += w * smem[ZOFF + b * H4 + c]
                if USE_SHFL:
                    for b in range(B):
                        v = acc[b]
                        v += cuda.shfl_down_sync(FULL_MASK, v, 16)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 8)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 4)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 2)
                        v += cuda.shfl_down_sync(FULL_MASK, v, 1)
                        if lane == 0 and task < ntask:
                            smem[POFF + (q * B + b) * U + u] = v
                else:
                    for b in range(B):
                        smem[ROFF + (warp * B + b) * 32 + lane] = acc[b]
                    cuda.syncthreads()
                    if lane == 0 and task < ntask:
                        for b in range(B):
                            v = F0
                            for r in range(32):
                                v += smem[ROFF + (warp * B + b) * 32 + r]
                            smem[POFF + (q * B + b) * U + u] = v
                    cuda.syncthreads()
            cuda.syncthreads()
            for e in range(tid, B * U, NT):
                b = e // U
                u = e - b * U
                v = smem[DHOFF + e]
                for q in range(NQ):
                    v += smem[POFF + (q * B + b) * U + u]
                smem[DHOFF + e] = v
            cuda.syncthreads()

        for e in range(tid, B * U, NT):
            b = e // U
            u = e - b * U
            dh0[b, u0 + u] = smem[DHOFF + e]
            dc0[b, u0 + u] = smem[DCOFF + e]

    k = cuda.jit(lstm_bwd_persistent)
    _cache[key] = (k, lstm_bwd_persistent)
    return _cache[key]


def signatures():
    """numba signatures of the persistent kernels (C-contiguous float32 arrays), for
    ``kernel.compile`` before a launch and for compile_ptx in tests/cuda/test_ptx.py."""
    from numba import float32, int32, void

    a1i = int32[::1]
    a2 = float32[:, ::1]
    a3 = float32[:, :, ::1]
    return {
        "lstm_fwd_persistent": void(a3, a2, a3, a3, a3, a3, a1i, float32, int32, int32),
        "lstm_bwd_persistent": void(a3, a2, a2, a2, a3, a3, a1i, a3, a2, a2, int32, int32),
    }


# --------------------------------------------------------------------------------------------
# host-side launchers (work on real GPUs and in the simulator)
# --------------------------------------------------------------------------------------------


def _is_dev(a) -> bool:
    return hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")


def _dev(a):
    """Device array as is (numba or anything with __cuda_array_interface__), else copy NumPy."""
    return a if _is_dev(a) else cuda.to_device(np.ascontiguousarray(a))


def _fill_tail(hbuf, cbuf, T_run):
    """Steps past max(seq_len) are skipped; the state buffers repeat the final state there."""
    for t in range(T_run + 1, hbuf.shape[0]):
        hbuf[t].copy_to_device(hbuf[T_run])
        cbuf[t].copy_to_device(cbuf[T_run])


def _sm_count() -> int:
    if simulator():
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def plan_persistent(B: int, H: int, NT: int = 256, units: int | None = None,
                    smem_limit: int = 227 * 1024):
    """Pick U (units per block) for the fwd and bwd persistent kernels.

    Grid = H // U must be co-resident (cooperative launch): at most one block per SM is assumed
    (each block's shared memory is large); returns dict(U, blocks, fwd_smem, bwd_smem) in bytes,
    or None when the shape does not fit (the caller then takes the generic path).
    """
    if simulator():
        U = H if units is None else units
        return dict(U=U, blocks=H // U, fwd_smem=4 * fwd_smem_floats(B, H, U, NT),
                    bwd_smem=4 * bwd_smem_floats(B, H, U, NT))
    nsm = _sm_count()
    cands = [units] if units else [U for U in range(1, H + 1) if H % U == 0 and H // U <= nsm]
    for U in cands:
        fs = 4 * fwd_smem_floats(B, H, U, NT)
        bs = 4 * bwd_smem_floats(B, H, U, NT)
        if fs <= smem_limit and bs <= smem_limit:
            return dict(U=U, blocks=H // U, fwd_smem=fs, bwd_smem=bs)
    return None


def persistent_forward(XW, Wh, h0, c0, seq_len, forget_bias=1.0, NT=256, units=None,
                       stream=0, plan=None, bufs=None):
    """Run the persistent forward.  Arrays may be NumPy (copied) or device arrays.

    Returns dict of device arrays: y, hbuf, cbuf, gates (T_run = max(seq_len) steps computed; the
    rest of y/gates stays zero and hbuf/cbuf past T_run repeat the final state).
    """
    T, B, H4 = XW.shape
    H = H4 // 4
    plan = plan or plan_persistent(B, H, NT, units)
    if plan is None:
        raise ValueError("shape does not fit the persistent kernel")
    seq_np = np.asarray(seq_len.copy_to_host() if hasattr(seq_len, "copy_to_host") else seq_len)
    T_run = int(min(T, seq_np.max())) if seq_np.size else 0
    kern, _ = make_persistent_fwd(B, NT)
    if not simulator():
        from .compat import set_max_dynamic_shared
        kern.compile(signatures()["lstm_fwd_persistent"])
        set_max_dynamic_shared(kern, plan["fwd_smem"])
    d = _dev
    if bufs is None:
        bufs = dict(
            hbuf=cuda.to_device(np.zeros((T + 1, B, H), np.float32)),
            cbuf=cuda.to_device(np.zeros((T + 1, B, H), np.float32)),
            y=cuda.to_device(np.zeros((T, B, H), np.float32)),
            gates=cuda.to_device(np.zeros((T, B, H4), np.float32)),
        )
    bufs["hbuf"][0].copy_to_device(d(h0))
    bufs["cbuf"][0].copy_to_device(d(c0))
    kern[plan["blocks"], NT, stream, plan["fwd_smem"]](
        d(XW), d(Wh), bufs["hbuf"], bufs["cbuf"], bufs["y"], bufs["gates"],
        d(seq_np.astype(np.int32)), np.float32(forget_bias), np.int32(plan["U"]),
        np.int32(T_run))
    _fill_tail(bufs["hbuf"], bufs["cbuf"], T_run)
    bufs["T_run"] = T_run
    return bufs


def persistent_backward(dy, dhT, dcT, Wh, gates, cbuf, seq_len, T_run, NT=256, units=None,
                        stream=0, plan=None):
    """Run the persistent BPTT kernel; returns device arrays dz[T,B,4H], dh0, dc0."""
    T, B, H = dy.shape
    plan = plan or plan_persistent(B, H, NT, units)
    kern, _ = make_persistent_bwd(B, NT)
    if not simulator():
        from .compat import set_max_dynamic_shared
        kern.compile(signatures()["lstm_bwd_persistent"])
        set_max_dynamic_shared(kern, plan["bwd_smem"])
    d = _dev
    seq_np = np.asarray(seq_len.copy_to_host() if hasattr(seq_len, "copy_to_host") else seq_len)
    dz = cuda.to_device(np.zeros((T, B, 4 * H), np.float32))
    dh0 = cuda.device_array((B, H), np.float32)
    dc0 = cuda.device_array((B, H), np.float32)
    kern[plan["blocks"], NT, stream, plan["bwd_smem"]](
        d(dy), d(dhT), d(dcT), d(Wh), d(gates), d(cbuf), d(seq_np.astype(np.int32)),
        dz, dh0, dc0, np.int32(plan["U"]), np.int32(T_run))
    return dict(dz=dz, dh0=dh0, dc0=dc0)


# --------------------------------------------------------------------------------------------
# NumPy reference (any float dtype), the oracle of the simulator tests
# --------------------------------------------------------------------------------------------


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_forward(XW, Wh, h0, c0, seq_len, forget_bias=1.0):
    """Returns y[T,B,H], hbuf[T+1,B,H], cbuf[T+1,B,H], gates[T,B,4H] in XW's dtype."""
    T, B, H4 = XW.shape
    H = H4 // 4
    dt = XW.dtype
    fb = dt.type(forget_bias)
    hbuf = np.zeros((T + 1, B, H), dt)
    cbuf = np.zeros((T + 1, B, H), dt)
    y = np.zeros((T, B, H), dt)
    gates = np.zeros((T, B, H4), dt)
    hbuf[0], cbuf[0] = h0, c0
    for t in range(T):
        z = XW[t] + hbuf[t] @ Wh
        i, j, f, o = _sig(z[:, :H]), np.tanh(z[:, H:2 * H]), _sig(z[:, 2 * H:3 * H] + fb), \
            _sig(z[:, 3 * H:])
        c = f * cbuf[t] + i * j
        h = o * np.tanh(c)
        m = (t < np.asarray(seq_len))[:, None]
        cbuf[t + 1] = np.where(m, c, cbuf[t])
        hbuf[t + 1] = np.where(m, h, hbuf[t])
        y[t] = np.where(m, h, 0)
        gates[t] = np.where(m, np.concatenate([i, j, f, o], 1), 0)
    return y, hbuf, cbuf, gates


def reference_backward(dy, dhT, dcT, Wh, gates, cbuf, seq_len):
    """Returns dz[T,B,4H] (= dL/dXW), dh0, dc0."""
    T, B, H = dy.shape
    dt = dy.dtype
    dz = np.zeros((T, B, 4 * H), dt)
    dh = dhT.astype(dt).copy()
    dc = dcT.astype(dt).copy()
    for t in range(T - 1, -1, -1):
        m = (t < np.asarray(seq_len))[:, None]
        i, j, f, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dht = dh + dy[t]
        tc = np.tanh(cbuf[t + 1])
        dct = dc + dht * o * (1 - tc * tc)
        g = np.concatenate([dct * j * i * (1 - i), dct * i * (1 - j * j),
                            dct * cbuf[t] * f * (1 - f), dht * tc * o * (1 - o)], 1)
        g = np.where(m, g, 0)
        dz[t] = g
        dh = np.where(m, g @ Wh.T, dh)
        dc = np.where(m, dct * f, dc)
    return dz, dh, dc
