"""The small-batch fast path: an LSTM forward scan as ONE persistent cooperative kernel.

`find_lstm_scans(graph)` recognises the optimized forward scan of an LSTM (BasicLSTMCell /
LSTMCell without peepholes, TF1 gate order i, j, f, o, any forget_bias, with or without
sequence_length) in two steps:

1. structure: 2 carries [B, H], one x_t [B, 4H] (the hoisted input projection), one output
   [B, H], one matmul in the body (a carry times an invariant [H, 4H]), the other invariants a
   [4H] bias and/or the int [B] sequence lengths, nothing else;
2. meaning: the body is run by the reference interpreter on random values (some batch rows
   masked) and compared with the LSTM step for each assignment of (c, h) to the carries and
   each forget_bias candidate (the body's float constants). Only an exact semantic match is
   accepted, so a custom cell that merely looks like an LSTM keeps the generic path.

`run_persistent` then launches the persistent forward kernel of backends/cuda/persistent.py
(grid = H / U blocks, clamped to the co-resident limit by the planner, one grid.sync per step)
instead of T x (GEMM + fused kernel). It applies to float32 graphs, batch <= persistent_max_batch
(16) under persistent="auto", when the shared-memory plan fits; otherwise the generic path runs.
Backward scans always use the generic path (CUDA-graph replay of GEMM + fused kernel per step).
"""

from __future__ import annotations

import numpy as np

from rnncomp.ir.dtypes import DType
from rnncomp.runtime.interp import Context, evaluate
from rnncomp.ir import Graph, Node, Op
from rnncomp.ir.ops import scan_info

from .compat import set_max_dynamic_shared, simulator


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _consts(g: Graph, out: set) -> None:
    for n in g.nodes:
        if n.op is Op.CONST and n.dtype is not None and n.dtype.is_float:
            out.add(float(n.attr("value")))
        b = n.attr("body")
        if isinstance(b, Graph):
            _consts(b, out)


def match_lstm_scan(n: Node) -> dict | None:
    if n.op is not Op.SCAN:
        return None
    info = scan_info(n)
    if info.n_carry != 2 or info.n_xs != 1 or info.reverse:
        return None
    body: Graph = n.attr("body")
    if len(body.outputs) != 3:
        return None
    b_c = body.inputs[1:3]
    b_x = body.inputs[3]
    b_w = list(body.inputs[4:])
    if any(p.dtype is not DType.f32 or p.ndim != 2 for p in b_c) or b_c[0].shape != b_c[1].shape:
        return None
    H = b_c[0].shape[1]
    if not isinstance(H, int) or b_x.ndim != 2 or b_x.shape[1] != 4 * H or b_x.dtype is not DType.f32:
        return None
    mms = [x for x in body.nodes if x.op in (Op.MATMUL, Op.TENSORDOT)]
    bad = [x for x in body.nodes if x.op in (Op.RANDOM_UNIFORM, Op.SCAN)]
    if len(mms) != 1 or mms[0].op is not Op.MATMUL or bad:
        return None
    a, w = mms[0].inputs
    if a not in b_c or w not in b_w or tuple(w.shape) != (H, 4 * H):
        return None
    wi = b_w.index(w)
    bi = li = None
    for k, p in enumerate(b_w):
        if k == wi:
            continue
        if p.dtype is DType.f32 and tuple(p.shape) == (4 * H,) and bi is None:
            bi = k
        elif p.dtype is DType.i32 and p.ndim == 1 and li is None:
            li = k
        else:
            return None
    # meaning: run the body on random values and compare with the LSTM step
    rng = np.random.default_rng(7)
    B = 3
    t = 1
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    xw = rng.standard_normal((B, 4 * H)).astype(np.float32)
    Wv = (0.5 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    bv = (0.5 * rng.standard_normal(4 * H)).astype(np.float32)
    L = np.array([5, 1, 2], np.int32)
    inv = []
    for k, p in enumerate(b_w):
        inv.append(Wv if k == wi else bv if k == bi else L)
    cands: set = {0.0, 1.0}
    _consts(body, cands)
    bias = bv if bi is not None else np.zeros(4 * H, np.float32)
    mask = (t < L)[:, None] if li is not None else np.ones((B, 1), bool)
    for ci in (0, 1):
        hi = 1 - ci
        if a is not b_c[hi]:
            continue
        carr = [c0, h0] if ci == 0 else [h0, c0]
        try:
            ctx = Context()
            ctx.dims.update({d: B for p in body.inputs for d in p.shape if isinstance(d, str)})
            outs = evaluate(body, [np.int32(t)] + carr + [xw] + inv, ctx)
        except Exception:
            return None
        z = xw.astype(np.float64) + h0.astype(np.float64) @ Wv + bias
        for fb in sorted(cands):
            i, j, f, o = _sig(z[:, :H]), np.tanh(z[:, H:2 * H]), _sig(z[:, 2 * H:3 * H] + fb), \
                _sig(z[:, 3 * H:])
            c = f * c0 + i * j
            h = o * np.tanh(c)
            want = [np.where(mask, c, c0), np.where(mask, h, h0), np.where(mask, h, 0.0)]
            got = [outs[ci], outs[hi], outs[2]]
            if all(np.allclose(g_, w_, rtol=1e-4, atol=1e-5) for g_, w_ in zip(got, want)):
                return dict(c=ci, h=hi, forget_bias=fb, W=wi, bias=bi, L=li, H=H)
    return None


def find_lstm_scans(graph: Graph) -> dict[int, dict]:
    out = {}
    for n in graph.nodes:
        if n.op is Op.SCAN:
            m = match_lstm_scan(n)
            if m is not None:
                out[id(n)] = m
    return out


def run_persistent(exe, m: dict, n: Node, ins: list, steps: int, carries: list,
                   ys: list) -> bool:
    """Run the matched LSTM scan with the persistent kernel; False when it does not apply
    (the caller then runs the generic path)."""
    if exe.persistent is False:
        return False
    from . import persistent as pk

    xp = exe.xp
    X = ins[2]
    T, B = X.shape[0], X.shape[1]
    H = m["H"]
    if exe.persistent == "auto" and B > exe.persistent_max_batch:
        return False
    sim = simulator()
    NT = 64 if sim else 256
    plan = pk.plan_persistent(B, H, NT)
    if plan is None:
        return False
    W = ins[3:3 + (len(ins) - 3)]
    Wh = xp.ascontiguousarray(W[m["W"]])
    xwb = exe.buf(("pxw", id(n)), X.shape, np.float32)
    if m["bias"] is not None:
        xp.add(X, W[m["bias"]], out=xwb)
    else:
        xwb[...] = X
    if m["L"] is not None:
        L = xp.ascontiguousarray(W[m["L"]].astype(np.int32))
    else:
        L = exe.buf(("pL", id(n)), (B,), np.int32)
        L.fill(T)
    hbuf = exe.buf(("ph", id(n)), (T + 1, B, H), np.float32)
    cbuf = exe.buf(("pc", id(n)), (T + 1, B, H), np.float32)
    gates = exe.buf(("pg", id(n)), (T, B, 4 * H), np.float32)
    hbuf[0] = carries[m["h"]]
    cbuf[0] = carries[m["c"]]
    kern, _ = pk.make_persistent_fwd(B, NT)
    args = [xwb, Wh, hbuf, cbuf, ys[0], gates, L, np.float32(m["forget_bias"]),
            np.int32(plan["U"]), np.int32(steps)]
    if sim:
        kern[plan["blocks"], NT, 0, plan["fwd_smem"]](*args)
    else:
        sig = pk.signatures()["lstm_fwd_persistent"]
        kern.compile(sig)
        if not set_max_dynamic_shared(kern, plan["fwd_smem"]) and plan["fwd_smem"] > 48 * 1024:
            return False
        try:
            limit = kern.overloads[sig.args].max_cooperative_grid_blocks(NT, plan["fwd_smem"])
            if plan["blocks"] > limit:
                return False
        except Exception:
            pass
        la = exe.launcher
        kern[plan["blocks"], NT, la.nb_stream, plan["fwd_smem"]](*[la.arg(a) for a in args])
    carries[m["c"]][...] = cbuf[steps]
    carries[m["h"]][...] = hbuf[steps]
    return True
