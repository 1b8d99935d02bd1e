"""Research prototypes: hand-written Numba LSTM/GRU/RNN forward and BPTT vs PyTorch.

What the rnncomp CPU code generator should emit is modelled here by hand:

* ONE hoisted input-projection GEMM over all T*B rows before the time loop,
* per step ONE GEMM  h @ Wh  into a preallocated buffer (np.dot(a, b, out) in njit),
* per step ONE fused elementwise loop nest over [B, H] (bias add, all gate
  activations via backends.cpu.fastmath, state update, residual stores),
* backward: per step one fused elementwise nest producing dgates, one GEMM
  dgates @ Wh^T; the weight gradients as ONE GEMM each after the loop over all
  T*B rows.

Usage::

    python bench/proto_cpu_rnn.py               # check grads, 1 and 2 threads, table
    python bench/proto_cpu_rnn.py --threads 1   # only one thread setting
    python bench/proto_cpu_rnn.py --quick       # fewer configs
    python bench/proto_cpu_rnn.py --compile     # cold/warm compile time (cache=True)
    python bench/proto_cpu_rnn.py --fastmath    # elementwise math micro-bench

Thread control: each thread setting runs in a subprocess with OMP/OpenBLAS/
NUMBA thread env vars set, and torch.set_num_threads(n).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from rnncomp.backends.cpu import fastmath as fm  # noqa: E402

FM = fm.KERNEL_FASTMATH
JIT = dict(error_model="numpy", fastmath=FM, cache=True, nogil=True)
f32 = np.float32
ONE = np.float32(1.0)

# ===========================================================================
# LSTM (TF1 gate order i, j, f, o; forget_bias added to f)
# ===========================================================================


@njit(**JIT)
def lstm_ew_fwd(gates, xw, b, c, h_out, forget_bias):
    """Inference elementwise step: gates [B,4H] = h@Wh, xw [B,4H] = x@Wx."""
    B, H = c.shape
    for bb in range(B):
        for j in range(H):
            i = fm.sigmoid_f32(gates[bb, j] + xw[bb, j] + b[j])
            g = fm.tanh_f32(gates[bb, H + j] + xw[bb, H + j] + b[H + j])
            f = fm.sigmoid_f32(gates[bb, 2 * H + j] + xw[bb, 2 * H + j] + b[2 * H + j]
                               + forget_bias)
            o = fm.sigmoid_f32(gates[bb, 3 * H + j] + xw[bb, 3 * H + j] + b[3 * H + j])
            cn = f * c[bb, j] + i * g
            c[bb, j] = cn
            h_out[bb, j] = o * fm.tanh_f32(cn)


@njit(**JIT)
def lstm_fwd_a(X, Wx, Wh, b, h0, c0, forget_bias):
    """(a) whole forward in one njit function, np.dot(out=) per step. -> hs[T,B,H]"""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 4 * H
    XW = np.empty((T * B, G), np.float32)
    np.dot(X.reshape(T * B, I), Wx, XW)
    gates = np.empty((B, G), np.float32)
    c = c0.copy()
    hs = np.empty((T, B, H), np.float32)
    h = h0
    for t in range(T):
        np.dot(h, Wh, gates)
        lstm_ew_fwd(gates, XW[t * B:(t + 1) * B], b, c, hs[t], forget_bias)
        h = hs[t]
    return hs


def _lstm_fwd_a_par(X, Wx, Wh, b, h0, c0, forget_bias):
    """(a) + prange over hidden units in the elementwise nest (parallel=True below)."""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 4 * H
    XW = np.empty((T * B, G), np.float32)
    np.dot(X.reshape(T * B, I), Wx, XW)
    gates = np.empty((B, G), np.float32)
    c = c0.copy()
    hs = np.empty((T, B, H), np.float32)
    h = h0
    for t in range(T):
        np.dot(h, Wh, gates)
        xw = XW[t * B:(t + 1) * B]
        ht = hs[t]
        for bb in prange(B):
            for j in range(H):
                i = fm.sigmoid_f32(gates[bb, j] + xw[bb, j] + b[j])
                g = fm.tanh_f32(gates[bb, H + j] + xw[bb, H + j] + b[H + j])
                f = fm.sigmoid_f32(gates[bb, 2 * H + j] + xw[bb, 2 * H + j] + b[2 * H + j]
                                   + forget_bias)
                o = fm.sigmoid_f32(gates[bb, 3 * H + j] + xw[bb, 3 * H + j] + b[3 * H + j])
                cn = f * c[bb, j] + i * g
                c[bb, j] = cn
                ht[bb, j] = o * fm.tanh_f32(cn)
        h = ht
    return hs


lstm_fwd_a_par = njit(parallel=True, **JIT)(_lstm_fwd_a_par)


def lstm_fwd_b(X, Wx, Wh, b, h0, c0, forget_bias):
    """(b) Python time loop, numpy BLAS (out=) + one njit elementwise call per step."""
    T, B, I = X.shape
    H = Wh.shape[0]
    XW = (X.reshape(T * B, I) @ Wx)
    gates = np.empty((B, 4 * H), np.float32)
    c = c0.copy()
    hs = np.empty((T, B, H), np.float32)
    h = h0
    for t in range(T):
        np.dot(h, Wh, out=gates)
        lstm_ew_fwd(gates, XW[t * B:(t + 1) * B], b, c, hs[t], forget_bias)
        h = hs[t]
    return hs


@njit(**JIT)
def lstm_fwd_c(X, Wx, Wh, b, h0, c0, forget_bias):
    """(c) like (a) but the per-step h @ Wh as explicit loops (small B/H)."""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 4 * H
    XW = np.empty((T * B, G), np.float32)
    np.dot(X.reshape(T * B, I), Wx, XW)
    gates = np.empty((B, G), np.float32)
    c = c0.copy()
    hs = np.empty((T, B, H), np.float32)
    h = h0
    for t in range(T):
        for bb in range(B):
            for j in range(G):
                gates[bb, j] = 0.0
            for k in range(H):
                hk = h[bb, k]
                for j in range(G):
                    gates[bb, j] += hk * Wh[k, j]
        lstm_ew_fwd(gates, XW[t * B:(t + 1) * B], b, c, hs[t], forget_bias)
        h = hs[t]
    return hs


@njit(**JIT)
def lstm_fwd_train(X, Wx, Wh, b, h0, c0, forget_bias):
    """Training forward: saves acts[T,B,4H] (i,g,f,o post-activation),
    cs[T+1,B,H] (c_{t}, cs[0]=c0), tcs[T,B,H] = tanh(c_t), hs[T+1,B,H] (hs[0]=h0)."""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 4 * H
    acts = np.empty((T, B, G), np.float32)
    np.dot(X.reshape(T * B, I), Wx, acts.reshape(T * B, G))   # XW stored in acts
    gates = np.empty((B, G), np.float32)
    hs = np.empty((T + 1, B, H), np.float32)
    cs = np.empty((T + 1, B, H), np.float32)
    tcs = np.empty((T, B, H), np.float32)
    hs[0] = h0
    cs[0] = c0
    for t in range(T):
        np.dot(hs[t], Wh, gates)
        a = acts[t]
        cp = cs[t]
        cn_ = cs[t + 1]
        hn_ = hs[t + 1]
        tc_ = tcs[t]
        for bb in range(B):
            for j in range(H):
                i = fm.sigmoid_f32(gates[bb, j] + a[bb, j] + b[j])
                g = fm.tanh_f32(gates[bb, H + j] + a[bb, H + j] + b[H + j])
                f = fm.sigmoid_f32(gates[bb, 2 * H + j] + a[bb, 2 * H + j] + b[2 * H + j]
                                   + forget_bias)
                o = fm.sigmoid_f32(gates[bb, 3 * H + j] + a[bb, 3 * H + j] + b[3 * H + j])
                a[bb, j] = i
                a[bb, H + j] = g
                a[bb, 2 * H + j] = f
                a[bb, 3 * H + j] = o
                cn = f * cp[bb, j] + i * g
                cn_[bb, j] = cn
                tc = fm.tanh_f32(cn)
                tc_[bb, j] = tc
                hn_[bb, j] = o * tc
    return hs, cs, tcs, acts


@njit(**JIT)
def lstm_bwd(X, Wx, Wh, hs, cs, tcs, acts, dY):
    """BPTT. dY [T,B,H] = dL/dh_t. Returns dX, dWx, dWh, db, dh0, dc0."""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 4 * H
    dG = np.empty((T, B, G), np.float32)
    dh = np.zeros((B, H), np.float32)
    dc = np.zeros((B, H), np.float32)
    WhT = Wh.T
    for t in range(T - 1, -1, -1):
        a = acts[t]
        cp = cs[t]
        tc_ = tcs[t]
        dy = dY[t]
        dg_ = dG[t]
        for bb in range(B):
            for j in range(H):
                i = a[bb, j]
                g = a[bb, H + j]
                f = a[bb, 2 * H + j]
                o = a[bb, 3 * H + j]
                tc = tc_[bb, j]
                dht = dy[bb, j] + dh[bb, j]
                dct = dc[bb, j] + dht * o * (ONE - tc * tc)
                dc[bb, j] = dct * f
                dg_[bb, j] = dct * g * i * (ONE - i)
                dg_[bb, H + j] = dct * i * (ONE - g * g)
                dg_[bb, 2 * H + j] = dct * cp[bb, j] * f * (ONE - f)
                dg_[bb, 3 * H + j] = dht * tc * o * (ONE - o)
        np.dot(dg_, WhT, dh)
    dG2 = dG.reshape(T * B, G)
    dWh = np.empty((H, G), np.float32)
    np.dot(hs[0:T].reshape(T * B, H).T, dG2, dWh)
    dWx = np.empty((I, G), np.float32)
    X2 = X.reshape(T * B, I)
    np.dot(X2.T, dG2, dWx)
    db = dG2.sum(axis=0)
    dX = np.empty((T * B, I), np.float32)
    np.dot(dG2, Wx.T, dX)
    return dX.reshape(T, B, I), dWx, dWh, db, dh, dc


# ===========================================================================
# GRU (PyTorch reset-after form; gate blocks r, z, n)
# ===========================================================================


@njit(**JIT)
def gru_fwd_train(X, Wx, Wh, bx, bh, h0, save):
    """Returns hs[T+1,B,H] and residuals acts[T,B,4H] = (r, z, n, hn) when save."""
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 3 * H
    XW = np.empty((T * B, G), np.float32)
    np.dot(X.reshape(T * B, I), Wx, XW)
    hh = np.empty((B, G), np.float32)
    hs = np.empty((T + 1, B, H), np.float32)
    hs[0] = h0
    acts = np.empty((T if save else 1, B, 4 * H), np.float32)
    for t in range(T):
        np.dot(hs[t], Wh, hh)
        xw = XW[t * B:(t + 1) * B]
        hp = hs[t]
        hn_ = hs[t + 1]
        a = acts[t if save else 0]
        for bb in range(B):
            for j in range(H):
                r = fm.sigmoid_f32(xw[bb, j] + bx[j] + hh[bb, j] + bh[j])
                z = fm.sigmoid_f32(xw[bb, H + j] + bx[H + j] + hh[bb, H + j] + bh[H + j])
                hn = hh[bb, 2 * H + j] + bh[2 * H + j]
                n = fm.tanh_f32(xw[bb, 2 * H + j] + bx[2 * H + j] + r * hn)
                hprev = hp[bb, j]
                hn_[bb, j] = n + z * (hprev - n)
                if save:
                    a[bb, j] = r
                    a[bb, H + j] = z
                    a[bb, 2 * H + j] = n
                    a[bb, 3 * H + j] = hn
    return hs, acts


@njit(**JIT)
def gru_bwd(X, Wx, Wh, hs, acts, dY):
    T, B, I = X.shape
    H = Wh.shape[0]
    G = 3 * H
    dGx = np.empty((T, B, G), np.float32)
    dGh = np.empty((T, B, G), np.float32)
    dh = np.zeros((B, H), np.float32)
    dhn = np.empty((B, H), np.float32)
    WhT = Wh.T
    for t in range(T - 1, -1, -1):
        a = acts[t]
        hp = hs[t]
        dy = dY[t]
        gx = dGx[t]
        gh = dGh[t]
        for bb in range(B):
            for j in range(H):
                r = a[bb, j]
                z = a[bb, H + j]
                n = a[bb, 2 * H + j]
                hn = a[bb, 3 * H + j]
                d = dy[bb, j] + dh[bb, j]
                dan = d * (ONE - z) * (ONE - n * n)
                daz = d * (hp[bb, j] - n) * z * (ONE - z)
                dar = dan * hn * r * (ONE - r)
                gx[bb, j] = dar
                gx[bb, H + j] = daz
                gx[bb, 2 * H + j] = dan
                gh[bb, j] = dar
                gh[bb, H + j] = daz
                gh[bb, 2 * H + j] = dan * r
                dhn[bb, j] = d * z
        np.dot(gh, WhT, dh)
        for bb in range(B):
            for j in range(H):
                dh[bb, j] += dhn[bb, j]
    dGx2 = dGx.reshape(T * B, G)
    dGh2 = dGh.reshape(T * B, G)
    dWh = np.empty((H, G), np.float32)
    np.dot(hs[0:T].reshape(T * B, H).T, dGh2, dWh)
    dWx = np.empty((I, G), np.float32)
    np.dot(X.reshape(T * B, I).T, dGx2, dWx)
    dbx = dGx2.sum(axis=0)
    dbh = dGh2.sum(axis=0)
    dX = np.empty((T * B, I), np.float32)
    np.dot(dGx2, Wx.T, dX)
    return dX.reshape(T, B, I), dWx, dWh, dbx, dbh, dh


# ===========================================================================
# basic tanh RNN: h' = tanh(x Wx + bx + h Wh + bh)  (one bias b = bx + bh)
# ===========================================================================


@njit(**JIT)
def rnn_fwd(X, Wx, Wh, b, h0):
    T, B, I = X.shape
    H = Wh.shape[0]
    hs = np.empty((T + 1, B, H), np.float32)
    np.dot(X.reshape(T * B, I), Wx, hs[1:].reshape(T * B, H))   # XW into hs[1:]
    hs[0] = h0
    hh = np.empty((B, H), np.float32)
    for t in range(T):
        np.dot(hs[t], Wh, hh)
        hn_ = hs[t + 1]
        for bb in range(B):
            for j in range(H):
                hn_[bb, j] = fm.tanh_f32(hn_[bb, j] + hh[bb, j] + b[j])
    return hs


@njit(**JIT)
def rnn_bwd(X, Wx, Wh, hs, dY):
    T, B, I = X.shape
    H = Wh.shape[0]
    dA = np.empty((T, B, H), np.float32)
    dh = np.zeros((B, H), np.float32)
    WhT = Wh.T
    for t in range(T - 1, -1, -1):
        hn_ = hs[t + 1]
        dy = dY[t]
        da = dA[t]
        for bb in range(B):
            for j in range(H):
                y = hn_[bb, j]
                da[bb, j] = (dy[bb, j] + dh[bb, j]) * (ONE - y * y)
        np.dot(da, WhT, dh)
    dA2 = dA.reshape(T * B, H)
    dWh = np.empty((H, H), np.float32)
    np.dot(hs[0:T].reshape(T * B, H).T, dA2, dWh)
    dWx = np.empty((I, H), np.float32)
    np.dot(X.reshape(T * B, I).T, dA2, dWx)
    db = dA2.sum(axis=0)
    dX = np.empty((T * B, I), np.float32)
    np.dot(dA2, Wx.T, dX)
    return dX.reshape(T, B, I), dWx, dWh, db, dh


# ===========================================================================
# profiling pieces (medium LSTM): GEMM-only and elementwise-only loops
# ===========================================================================


@njit(**JIT)
def prof_step_gemm(hsrc, Wh, T):
    B = hsrc.shape[0]
    gates = np.empty((B, Wh.shape[1]), np.float32)
    for t in range(T):
        np.dot(hsrc, Wh, gates)
    return gates


@njit(**JIT)
def prof_step_ew(gates, XW, b, c0, T, forget_bias):
    B, H = c0.shape
    c = c0.copy()
    h = np.empty((B, H), np.float32)
    for t in range(T):
        lstm_ew_fwd(gates, XW[t * B:(t + 1) * B], b, c, h, forget_bias)
    return h


@njit(**JIT)
def prof_gemm(A, Bm, out):
    np.dot(A, Bm, out)


# ===========================================================================
# helpers: weights, torch mirrors, timing
# ===========================================================================


def make_params(cell, I, H, seed=0):
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    ng = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    p = dict(Wx=rng.uniform(-k, k, (I, ng * H)).astype(f32),
             Wh=rng.uniform(-k, k, (H, ng * H)).astype(f32),
             b=rng.uniform(-k, k, (ng * H,)).astype(f32))
    if cell == "gru":
        p["bh"] = rng.uniform(-k, k, (ng * H,)).astype(f32)
    return p


def torch_module(cell, I, H, p):
    import torch
    if cell == "lstm":
        m = torch.nn.LSTM(I, H)
        H_ = H
        # ours: [i | j | f | o]; torch: [i | f | g | o]
        perm = np.concatenate([np.arange(0, H_), np.arange(2 * H_, 3 * H_),
                               np.arange(H_, 2 * H_), np.arange(3 * H_, 4 * H_)])
        bias = p["b"].copy()
        bias[2 * H:3 * H] += 1.0          # forget_bias
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(p["Wx"][:, perm].T.copy()))
            m.weight_hh_l0.copy_(torch.from_numpy(p["Wh"][:, perm].T.copy()))
            m.bias_ih_l0.copy_(torch.from_numpy(bias[perm]))
            m.bias_hh_l0.zero_()
        m.perm = perm
    elif cell == "gru":
        m = torch.nn.GRU(I, H)
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
            m.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
            m.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            m.bias_hh_l0.copy_(torch.from_numpy(p["bh"]))
    else:
        m = torch.nn.RNN(I, H, nonlinearity="tanh")
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T.copy()))
            m.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T.copy()))
            m.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            m.bias_hh_l0.zero_()
    return m


_SPEC_CACHE = {}


def specialized(H):
    """Re-compile the training kernels with the hidden size H as a compile-time
    constant (source re-executed with ``H = HC``, HC a global), which is what the
    code generator emits. With a runtime H, LLVM cannot prove that the stores
    a[bb, j], a[bb, H+j], a[bb, 2H+j], a[bb, 3H+j] into ONE array do not overlap
    and the fused loop runs its scalar fallback (measured 5-8x slower)."""
    if H in _SPEC_CACHE:
        return _SPEC_CACHE[H]
    import inspect
    import types as _types
    g = dict(globals())
    g["HC"] = H
    ns = _types.SimpleNamespace()
    for fn in (lstm_fwd_train, lstm_bwd, gru_fwd_train, gru_bwd):
        src = inspect.getsource(fn.py_func)
        src = src.replace("    H = Wh.shape[0]\n", "    H = HC\n")
        assert "H = HC" in src
        src = src.split("\n", 1)[1]             # drop the decorator line
        exec(compile(src, f"<specialized {fn.py_func.__name__} H={H}>", "exec"), g)
        name = fn.py_func.__name__
        setattr(ns, name, njit(**dict(JIT, cache=False))(g[name]))
    _SPEC_CACHE[H] = ns
    return ns


SPECIALIZE = True


def ours_fwd(cell, X, p, h0, c0):
    if cell == "lstm":
        return lstm_fwd_a(X, p["Wx"], p["Wh"], p["b"], h0, c0, ONE)
    if cell == "gru":
        k = specialized(p["Wh"].shape[0]) if SPECIALIZE else sys.modules[__name__]
        return k.gru_fwd_train(X, p["Wx"], p["Wh"], p["b"], p["bh"], h0, False)[0]
    return rnn_fwd(X, p["Wx"], p["Wh"], p["b"], h0)


def ours_fwdbwd(cell, X, p, h0, c0, dY, spec=None):
    spec = SPECIALIZE if spec is None else spec
    k = specialized(p["Wh"].shape[0]) if spec else sys.modules[__name__]
    if cell == "lstm":
        hs, cs, tcs, acts = k.lstm_fwd_train(X, p["Wx"], p["Wh"], p["b"], h0, c0, ONE)
        dX, dWx, dWh, db, dh0, dc0 = k.lstm_bwd(X, p["Wx"], p["Wh"], hs, cs, tcs, acts, dY)
        return hs[1:], dict(dX=dX, dWx=dWx, dWh=dWh, db=db)
    if cell == "gru":
        hs, acts = k.gru_fwd_train(X, p["Wx"], p["Wh"], p["b"], p["bh"], h0, True)
        dX, dWx, dWh, dbx, dbh, dh0 = k.gru_bwd(X, p["Wx"], p["Wh"], hs, acts, dY)
        return hs[1:], dict(dX=dX, dWx=dWx, dWh=dWh, db=dbx, dbh=dbh)
    hs = rnn_fwd(X, p["Wx"], p["Wh"], p["b"], h0)
    dX, dWx, dWh, db, dh0 = rnn_bwd(X, p["Wx"], p["Wh"], hs, dY)
    return hs[1:], dict(dX=dX, dWx=dWx, dWh=dWh, db=db)


def check_grads(cell, T=12, B=5, I=20, H=24):
    import torch
    rng = np.random.default_rng(1)
    p = make_params(cell, I, H)
    X = rng.standard_normal((T, B, I)).astype(f32)
    dY = rng.standard_normal((T, B, H)).astype(f32)
    h0 = np.zeros((B, H), f32)
    c0 = np.zeros((B, H), f32)
    m = torch_module(cell, I, H, p)
    xt = torch.from_numpy(X.copy()).requires_grad_(True)
    y, _ = m(xt)
    y.backward(torch.from_numpy(dY))
    hs, g = ours_fwdbwd(cell, X, p, h0, c0, dY)
    yf = ours_fwd(cell, X, p, h0, c0)
    yf = yf[1:] if yf.shape[0] == T + 1 else yf

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    out = {"y": rel(hs, y.detach().numpy()), "y_inference": rel(yf, y.detach().numpy()),
           "dX": rel(g["dX"], xt.grad.numpy())}
    tWx = m.weight_ih_l0.grad.numpy().T
    tWh = m.weight_hh_l0.grad.numpy().T
    tb = m.bias_ih_l0.grad.numpy()
    if cell == "lstm":
        inv = np.argsort(m.perm)
        tWx, tWh, tb = tWx[:, inv], tWh[:, inv], tb[inv]
    out.update(dWx=rel(g["dWx"], tWx), dWh=rel(g["dWh"], tWh), db=rel(g["db"], tb))
    if cell == "gru":
        out["dbh"] = rel(g["dbh"], m.bias_hh_l0.grad.numpy())
    return out


def med_ms(f, rep=7, warm=1):
    for _ in range(warm):
        f()
    ts = []
    for _ in range(rep):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


CONFIGS = {
    "small": (1, 128, 128, 100),
    "medium": (64, 256, 256, 100),
    "mnist": (150, 28, 150, 28),
    "large": (64, 1024, 1024, 100),
}


def bench_config(cell, name, rep):
    import torch
    B, I, H, T = CONFIGS[name]
    rng = np.random.default_rng(0)
    p = make_params(cell, I, H)
    X = rng.standard_normal((T, B, I)).astype(f32)
    dY = rng.standard_normal((T, B, H)).astype(f32)
    h0 = np.zeros((B, H), f32)
    c0 = np.zeros((B, H), f32)
    m = torch_module(cell, I, H, p)
    xt = torch.from_numpy(X)
    dYt = torch.from_numpy(dY)
    r = {}
    with torch.no_grad():
        r["torch_fwd"] = med_ms(lambda: m(xt), rep)
    xg = xt.clone().requires_grad_(True)

    def tfb():
        m.zero_grad(set_to_none=True)
        y, _ = m(xg)
        y.backward(dYt)

    r["torch_fb"] = med_ms(tfb, rep)
    r["ours_fwd"] = med_ms(lambda: ours_fwd(cell, X, p, h0, c0), rep)
    r["ours_fb"] = med_ms(lambda: ours_fwdbwd(cell, X, p, h0, c0, dY), rep)
    if cell != "rnn" and name != "large":
        r["ours_fb_runtimeH"] = med_ms(lambda: ours_fwdbwd(cell, X, p, h0, c0, dY, False), rep)
    if cell == "lstm":
        args = (X, p["Wx"], p["Wh"], p["b"], h0, c0, ONE)
        r["ours_fwd_b_pyloop"] = med_ms(lambda: lstm_fwd_b(*args), rep)
        if name in ("small", "mnist"):
            r["ours_fwd_c_loopmm"] = med_ms(lambda: lstm_fwd_c(*args), rep)
        if name != "large":
            r["ours_fwd_a_prange"] = med_ms(lambda: lstm_fwd_a_par(*args), rep)
        # GEMM roofline: one [T*B, I+H] x [I+H, 4H] sgemm (same BLAS as njit np.dot)
        A = rng.standard_normal((T * B, I + H)).astype(f32)
        W = rng.standard_normal((I + H, 4 * H)).astype(f32)
        O = np.empty((T * B, 4 * H), f32)
        tg = med_ms(lambda: prof_gemm(A, W, O), rep)
        flops = 2.0 * T * B * (I + H) * 4 * H
        r["roof_gemm_ms"] = tg
        r["roof_gflops"] = flops / tg / 1e6
        r["fwd_gflops"] = flops / r["ours_fwd"] / 1e6
        r["fb_gflops"] = 3 * flops / r["ours_fb"] / 1e6   # fwd + (dh, dW, dX) = 3x
    return r


def profile_medium_lstm(rep=7):
    B, I, H, T = CONFIGS["medium"]
    rng = np.random.default_rng(0)
    p = make_params("lstm", I, H)
    X = rng.standard_normal((T, B, I)).astype(f32)
    dY = rng.standard_normal((T, B, H)).astype(f32)
    h0 = np.zeros((B, H), f32)
    G = 4 * H
    XW = np.empty((T * B, G), f32)
    X2 = X.reshape(T * B, I)
    r = {}
    r["fwd_total"] = med_ms(lambda: lstm_fwd_a(X, p["Wx"], p["Wh"], p["b"], h0, h0, ONE), rep)
    r["fwd_hoisted_gemm XW=X@Wx"] = med_ms(lambda: prof_gemm(X2, p["Wx"], XW), rep)
    hsrc = rng.standard_normal((B, H)).astype(f32)
    r["fwd_step_gemm x T (h@Wh)"] = med_ms(lambda: prof_step_gemm(hsrc, p["Wh"], T), rep)
    gates = rng.standard_normal((B, G)).astype(f32)
    r["fwd_elementwise x T"] = med_ms(
        lambda: prof_step_ew(gates, XW, p["b"], h0, T, ONE), rep)
    sp = specialized(H)
    hs, cs, tcs, acts = sp.lstm_fwd_train(X, p["Wx"], p["Wh"], p["b"], h0, h0, ONE)
    r["fwd_train (saves residuals)"] = med_ms(
        lambda: sp.lstm_fwd_train(X, p["Wx"], p["Wh"], p["b"], h0, h0, ONE), rep)
    r["fwd_train, runtime H (scalar ew)"] = med_ms(
        lambda: lstm_fwd_train(X, p["Wx"], p["Wh"], p["b"], h0, h0, ONE), rep)
    r["bwd_total"] = med_ms(lambda: sp.lstm_bwd(X, p["Wx"], p["Wh"], hs, cs, tcs, acts, dY), rep)
    r["bwd_total, runtime H"] = med_ms(
        lambda: lstm_bwd(X, p["Wx"], p["Wh"], hs, cs, tcs, acts, dY), rep)
    dG2 = rng.standard_normal((T * B, G)).astype(f32)
    dh = np.empty((B, H), f32)
    r["bwd_step_gemm x T (dG@Wh^T)"] = med_ms(
        lambda: [prof_gemm(dG2[:B], p["Wh"].T, dh) for _ in range(T)], rep)
    dW = np.empty((H, G), f32)
    r["bwd_dWh=Hprev^T@dG (same for dWx)"] = med_ms(lambda: prof_gemm(X2.T, dG2, dW), rep)
    dX = np.empty((T * B, I), f32)
    r["bwd_dX=dG@Wx^T"] = med_ms(lambda: prof_gemm(dG2, p["Wx"].T, dX), rep)
    return r


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("filepath", "internal_api", "version", "architecture",
                                       "num_threads")} for d in threadpool_info()]
    except ImportError:
        return "threadpoolctl not installed"


def worker(threads, quick, rep):
    import torch
    torch.set_num_threads(threads)
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, used by numba's np.dot)
    res = {"threads": threads, "blas": blas_info(), "grads": {}, "bench": {}}
    for cell in ("lstm", "gru", "rnn"):
        res["grads"][cell] = check_grads(cell)
    names = ["small", "medium", "mnist"] + ([] if quick else ["large"])
    for name in names:
        for cell in (("lstm",) if name == "large" else ("lstm", "gru", "rnn")):
            rr = 3 if name == "large" else rep
            res["bench"][f"{cell}/{name}"] = bench_config(cell, name, rr)
    res["profile_medium_lstm"] = profile_medium_lstm(rep)
    return res


def compile_times():
    """Cold (empty NUMBA_CACHE_DIR) vs warm (cache hit) first-call time in fresh processes."""
    import tempfile
    d = tempfile.mkdtemp(prefix="rnncomp_nbcache_")
    code = (
        "import time, sys; t0=time.perf_counter();"
        f"sys.path.insert(0, {_ROOT!r}); sys.path.insert(0, {os.path.join(_ROOT, 'bench')!r});"
        "import numpy as np; t_np=time.perf_counter();"
        "import proto_cpu_rnn as P; t_imp=time.perf_counter();"
        "B,I,H,T=4,8,16,5; p=P.make_params('lstm',I,H); X=np.ones((T,B,I),np.float32);"
        "h=np.zeros((B,H),np.float32); dY=np.ones((T,B,H),np.float32);"
        "t1=time.perf_counter(); r=P.lstm_fwd_train(X,p['Wx'],p['Wh'],p['b'],h,h,P.ONE);"
        "t2=time.perf_counter(); P.lstm_bwd(X,p['Wx'],p['Wh'],*r,dY); t3=time.perf_counter();"
        "P.lstm_fwd_a(X,p['Wx'],p['Wh'],p['b'],h,h,P.ONE); t4=time.perf_counter();"
        "print('%.3f %.3f %.3f %.3f %.3f' % (t_imp-t_np, t2-t1, t3-t2, t4-t3, t4-t0))"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=d)
    out = {}
    for label in ("cold", "warm", "warm2"):
        s = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if s.returncode:
            raise RuntimeError(s.stderr)
        v = [float(x) for x in s.stdout.split()]
        out[label] = dict(import_module=v[0], lstm_fwd_train=v[1], lstm_bwd=v[2],
                          lstm_fwd_a=v[3], process_total=v[4])
    return out


def fastmath_bench():
    import math
    n = 1 << 20
    x = np.random.default_rng(0).uniform(-6, 6, n).astype(f32)
    out = np.empty_like(x)

    def mk(f, **kw):
        @njit(**kw)
        def k(x, out):
            for i in range(x.shape[0]):
                out[i] = f(x[i])
        return k

    rows = [("np.tanh ufunc (numpy)", med_ms(lambda: np.tanh(x, out=out), 15))]
    for name, f, kw in [
        ("math.tanh in njit loop", njit(inline="always")(lambda v: math.tanh(v)),
         dict(error_model="numpy", fastmath=FM)),
        ("np.exp in njit loop", njit(inline="always")(lambda v: np.exp(v)),
         dict(error_model="numpy", fastmath=FM)),
        ("fm.tanh_f32, caller error_model=numpy", fm.tanh_f32, dict(error_model="numpy",
                                                                     fastmath=FM)),
        ("fm.tanh_f32, caller default flags", fm.tanh_f32, {}),
        ("fm.sigmoid_f32", fm.sigmoid_f32, dict(error_model="numpy", fastmath=FM)),
        ("fm.exp_f32", fm.exp_f32, dict(error_model="numpy", fastmath=FM)),
    ]:
        k = mk(f, **kw)
        rows.append((name, med_ms(lambda: k(x, out), 15)))
    print(f"elementwise over {n} float32, median ms")
    for nm, t in rows:
        print(f"  {nm:42s} {t:8.3f}")


def print_table(res):
    print(f"\n=== threads={res['threads']}  BLAS: {res['blas']}")
    print("grad check (rel L2 err vs torch autograd, float32):")
    for cell, g in res["grads"].items():
        print(f"  {cell:5s} " + "  ".join(f"{k}={v:.1e}" for k, v in g.items()))
    print(f"{'config':14s} {'torch fwd':>9s} {'ours fwd':>9s} {'x':>5s} {'torch f+b':>9s}"
          f" {'ours f+b':>9s} {'x':>5s}  extras")
    for k, r in res["bench"].items():
        ex = {kk: round(v, 3) for kk, v in r.items() if kk not in
              ("torch_fwd", "ours_fwd", "torch_fb", "ours_fb")}
        print(f"{k:14s} {r['torch_fwd']:9.3f} {r['ours_fwd']:9.3f} "
              f"{r['torch_fwd'] / r['ours_fwd']:5.2f} {r['torch_fb']:9.3f} {r['ours_fb']:9.3f} "
              f"{r['torch_fb'] / r['ours_fb']:5.2f}  {ex}")
    print("profile, medium LSTM (ms):")
    for k, v in res["profile_medium_lstm"].items():
        print(f"  {k:32s} {v:8.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rep", type=int, default=7)
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--fastmath", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.worker:
        print("JSON:" + json.dumps(worker(a.worker, a.quick, a.rep)))
        return
    if a.fastmath:
        fastmath_bench()
        return
    if a.compile:
        print(json.dumps(compile_times(), indent=1))
        return
    allres = []
    for n in a.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n),
                   MKL_NUM_THREADS=str(n), NUMBA_NUM_THREADS=str(n))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--rep", str(a.rep)]
        if a.quick:
            cmd.append("--quick")
        s = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if s.returncode:
            print(s.stdout, s.stderr)
            raise SystemExit(1)
        res = json.loads([ln for ln in s.stdout.splitlines() if ln.startswith("JSON:")][0][5:])
        allres.append(res)
        print_table(res)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(allres, fh, indent=1)


if __name__ == "__main__":
    main()
