#!/usr/bin/env python3
"""One-shot GPU check of the prototype CUDA LSTM kernels: correctness, then timings vs cuDNN.

Designed to finish in well under 2 minutes on an H100 (a --budget deadline skips what is left),
to install nothing, and to print one table.  On the lent GPU machine (python3 = torch's venv,
numba-cuda, cupy-cuda13x and torch already there) run from the repo root:

    PYTHONUNBUFFERED=1 python3 bench/gpu_check_proto.py 2>&1 | tee $OUT/gpu_check.log

What it does
  0. environment: versions, GPU, SM count; applies the NumPy-2.5 shim (backends/cuda/compat.py)
  1. correctness on the GPU with many blocks (the simulator only ever ran one block):
     persistent fwd+bwd B1 H512 and B8 H512 (128 blocks, grid.sync between steps), stepwise
     (graph-captured) fwd+bwd B64 H256, each against a float64 NumPy reference including the
     weight gradients; and the forward against torch's cuDNN LSTM with mapped weights
  2. timings (CUDA events, median), fp32, TF32 off everywhere:
     A  B1  H512  inference  persistent (input GEMM + 1 launch)   vs cuDNN   target < 1.15 ms
     B  B64 H1024 fwd+bwd    stepwise + CUDA graph                 vs cuDNN   target <= 1.2x
     C  B64 H256  fwd+bwd    stepwise + CUDA graph (LSTM as the custom-cell proxy)  <= 6 ms
     D  B8  H512  fwd+bwd    persistent and stepwise               vs cuDNN   (crossover)
  --sim: run the same logic under NUMBA_ENABLE_CUDASIM=1 at toy size (no torch, no timings of
  meaning), to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", action="store_true", help="CUDA simulator, toy sizes")
    ap.add_argument("--T", type=int, default=100, help="sequence length for the timings")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=100.0, help="seconds; later phases skipped")
    ap.add_argument("--no-torch", action="store_true")
    return ap.parse_args()


ARGS = parse()
if ARGS.sim:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
os.environ.setdefault("CUPY_TF32", "0")
os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")

import numpy as np  # noqa: E402

from rnncomp.backends.cuda import compat  # noqa: E402

compat.ensure_numpy_compat()
import proto_cuda_lstm as pl  # noqa: E402
from rnncomp.backends.cuda import proto_kernels as pk  # noqa: E402

T0 = time.time()
ROWS: list[dict] = []


def left():
    return ARGS.budget - (time.time() - T0)


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def get_torch():
    if ARGS.sim or ARGS.no_torch:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        return torch
    except Exception as exc:
        log("torch unavailable:", exc)
        return None


def env_report(torch):
    import numba

    info = dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                shim=compat.ensure_numpy_compat(), sim=compat.simulator())
    try:
        import importlib.metadata as md

        info["numba_cuda"] = md.version("numba-cuda")
        info["cupy"] = md.version("cupy-cuda13x")
    except Exception:
        pass
    if not ARGS.sim:
        from numba import cuda

        dev = cuda.get_current_device()
        info.update(gpu=dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
                    sms=dev.MULTIPROCESSOR_COUNT, cc=dev.compute_capability)
    if torch is not None:
        info["torch"] = torch.__version__
        info["cudnn"] = torch.backends.cudnn.version()
    log("env", json.dumps(info, default=str))
    return info


# ---------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------


def time_ours(fn, ops, warm=2, reps=None):
    reps = reps or ARGS.reps
    for _ in range(warm):
        fn()
    ops.sync()
    ts = []
    if ops.sim:
        for _ in range(min(reps, 2)):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ts)
    import cupy as cp

    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(ops.stream)
        fn()
        b.record(ops.stream)
        b.synchronize()
        ts.append(cp.cuda.get_elapsed_time(a, b))
    return statistics.median(ts)


def time_torch(torch, fn, warm=2, reps=None):
    reps = reps or ARGS.reps
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def torch_lstm(torch, T, B, H, I, train):
    lstm = torch.nn.LSTM(I, H).cuda().float()
    x = torch.randn(T, B, I, device="cuda", requires_grad=train)
    if not train:
        def f():
            with torch.no_grad():
                lstm(x)
        return f
    gy = torch.randn(T, B, H, device="cuda")

    def f():
        out, _ = lstm(x)
        out.backward(gy)
    return f


def runner(kind, T, B, H, I=None, seq_full=True, **kw):
    ops = pl.Ops()
    p, g = pl.make_problem(T, B, H, I, seed=1, seq=[T] * B if seq_full else None)
    cls = pl.PersistentLSTM if kind == "persistent" else pl.StepwiseLSTM
    r = cls(ops, p["X"], p["Wx"], p["bias"], p["Wh"], p["h0"], p["c0"], p["seq_len"],
            p["forget_bias"], NT=64 if ARGS.sim else 256, **kw)
    r.set_grads(**g)
    return r, ops


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------


def phase_correctness(torch):
    checks = ([("persistent", 3, 2, 8), ("stepwise", 3, 2, 8)] if ARGS.sim else
              [("persistent", 16, 1, 512), ("persistent", 16, 8, 512), ("stepwise", 8, 64, 256)])
    ok = True
    for kind, T, B, H in checks:
        if left() < 20:
            log("budget: skipping remaining correctness checks")
            break
        try:
            errs, r = pl.run_check(kind, T, B, H, NT=64 if ARGS.sim else 256, seed=2)
            worst = max(errs.values())
            extra = ""
            if kind == "persistent" and not ARGS.sim:
                extra = (f" plan={r.plan} coresident={getattr(r, 'coresident', '?')}"
                         f" regs_fwd={r.kf.get_regs_per_thread()}"
                         f" regs_bwd={r.kb.get_regs_per_thread()}")
            if kind == "stepwise" and getattr(r, "graph_error", None):
                extra = f" graph_error={r.graph_error}"
            good = worst < 1e-4  # fp32 vs float64: ~1e-6 expected
            ok &= good
            log(f"check {kind:10s} T{T} B{B} H{H}: max rel err {worst:.2e}"
                f" {'OK' if good else 'FAIL'} {extra}")
            if not good:
                log("  ", {k: f"{v:.1e}" for k, v in errs.items()})
        except Exception:
            ok = False
            log(f"check {kind} T{T} B{B} H{H} raised:\n" + traceback.format_exc(limit=6))
    if torch is not None and left() > 20:
        try:
            ok &= check_vs_torch(torch)
        except Exception:
            log("torch cross-check raised:\n" + traceback.format_exc(limit=4))
    return ok


def check_vs_torch(torch):
    """Forward vs cuDNN with mapped weights: ours (i,j,f,o), forget_bias=0 == torch (i,f,g,o)."""
    T, B, H, I = 16, 8, 512, 256
    lstm = torch.nn.LSTM(I, H).cuda().float()
    x = torch.randn(T, B, I, device="cuda")
    with torch.no_grad():
        yt, (hn, cn) = lstm(x)
        Wih, Whh = lstm.weight_ih_l0, lstm.weight_hh_l0  # [4H, I], [4H, H], rows i,f,g,o
        bsum = lstm.bias_ih_l0 + lstm.bias_hh_l0
        perm = torch.cat([torch.arange(0, H), torch.arange(2 * H, 3 * H),
                          torch.arange(H, 2 * H), torch.arange(3 * H, 4 * H)]).cuda()
        Wx = Wih[perm].T.contiguous().cpu().numpy()
        Wh = Whh[perm].T.contiguous().cpu().numpy()
        b = bsum[perm].cpu().numpy()
    z = np.zeros((B, H), np.float32)
    ops = pl.Ops()
    r = pl.PersistentLSTM(ops, x.cpu().numpy(), Wx, b, Wh, z, z, np.full(B, T, np.int32), 0.0)
    r.forward()
    ops.sync()
    y = ops.asnumpy(r.y)
    err = float(np.linalg.norm(y - yt.cpu().numpy()) / np.linalg.norm(yt.cpu().numpy()))
    good = err < 1e-4
    log(f"check vs cuDNN forward T{T} B{B} H{H}: rel err {err:.2e} {'OK' if good else 'FAIL'}")
    return good


def phase_timings(torch):
    T = 4 if ARGS.sim else ARGS.T
    cfgs = [  # label, kind, B, H, train, target_text, target_ms, target_ratio
        ("A B1 H512 inference", "persistent", 1, 512, False, "< 1.15 ms (cuDNN), goal 0.4", 1.15,
         None),
        ("B B64 H1024 fwd+bwd", "stepwise", 64, 1024, True, "<= 1.2x cuDNN", None, 1.2),
        ("C B64 H256 fwd+bwd", "stepwise", 64, 256, True, "<= 6 ms", 6.0, None),
        ("D B8 H512 fwd+bwd", "persistent", 8, 512, True, "(crossover)", None, None),
        ("D B8 H512 fwd+bwd", "stepwise", 8, 512, True, "(crossover)", None, None),
    ]
    if ARGS.sim:
        cfgs = [(lab, kind, 2, 8, tr, txt, None, None) for lab, kind, _, _, tr, txt, _, _ in cfgs]
    cudnn_cache = {}
    for lab, kind, B, H, train, txt, tms, tratio in cfgs:
        if left() < 10:
            log(f"budget: skipping {lab} {kind}")
            ROWS.append(dict(config=lab, strategy=kind, ours_ms=None, note="skipped (budget)"))
            continue
        row = dict(config=lab, strategy=kind, T=T, target=txt)
        try:
            r, ops = runner(kind, T, B, H)
            if train:
                def fn():
                    r.forward()
                    r.backward()
            else:
                fn = r.forward
            row["ours_ms"] = time_ours(fn, ops)
            if kind == "persistent" and not ARGS.sim:
                row["scan_only_ms"] = time_ours(r.forward_scan, ops)
            if kind == "stepwise":
                row["graph"] = bool(r.graphs) if r.use_graph else False
                if r.graph_error:
                    row["note"] = r.graph_error
            del r
        except Exception as exc:
            row["ours_ms"] = None
            row["note"] = f"{type(exc).__name__}: {exc}"[:160]
            log(f"{lab} {kind} raised:\n" + traceback.format_exc(limit=5))
        if torch is not None:
            key = (B, H, train)
            if key not in cudnn_cache:
                try:
                    cudnn_cache[key] = time_torch(torch, torch_lstm(torch, T, B, H, H, train))
                except Exception as exc:
                    cudnn_cache[key] = None
                    log("cuDNN timing raised:", exc)
            row["cudnn_ms"] = cudnn_cache[key]
        o, c = row.get("ours_ms"), row.get("cudnn_ms")
        if o and c:
            row["ratio"] = o / c
        if o is not None and not ARGS.sim:
            if tms is not None:
                row["meets"] = o <= tms
            elif tratio is not None and c:
                row["meets"] = o <= tratio * c
        ROWS.append(row)
        log(json.dumps(row))


def print_table():
    hdr = f"{'config':22s} {'strategy':10s} {'ours ms':>9s} {'scan ms':>8s} {'cuDNN ms':>9s}" \
          f" {'ours/cuDNN':>10s} {'target':24s} {'meets':5s} note"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    f = lambda v, w, p=3: f"{v:{w}.{p}f}" if isinstance(v, (int, float)) and v is not None \
        else f"{'-':>{w}s}"  # noqa: E731
    for r in ROWS:
        print(f"{r['config']:22s} {r['strategy']:10s} {f(r.get('ours_ms'), 9)} "
              f"{f(r.get('scan_only_ms'), 8)} {f(r.get('cudnn_ms'), 9)} "
              f"{f(r.get('ratio'), 10, 2)} {r.get('target', ''):24s} "
              f"{str(r.get('meets', '-')):5s} {r.get('note', '')}")


def main():
    if not ARGS.sim and not compat.available():
        print("no usable CUDA GPU here (numba.cuda.is_available() is False); use --sim")
        return 2
    torch = get_torch()
    info = env_report(torch)
    ok = phase_correctness(torch)
    phase_timings(torch)
    print_table()
    log("correctness", "OK" if ok else "FAIL", f"total {time.time() - T0:.1f}s")
    out = os.environ.get("OUT")
    if out and os.path.isdir(out):
        Path(out, "gpu_check_proto.json").write_text(
            json.dumps(dict(env=info, ok=ok, rows=ROWS), default=str, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
