"""Variable-length batches: rnncomp (backend "cpu") vs PyTorch packed sequences, one process.

``--cell gru``: GRUCell(reset_after=True) against nn.GRU instead of the LSTM.

What is timed (float32, time-major X[T, B, I], LSTM or GRU, zero initial state): the loss
``sum(outputs * R)`` and its gradient w.r.t. all parameters and X (forward + backward).

* rnncomp: ``compile_graph(model_grad_graph(m, wrt=params+["X"], preoptimize=True), "cpu")`` of
  ``dynamic_rnn(BasicLSTMCell(H), X, sequence_length=L, time_major=True)``; ONE compiled kernel
  runs every length pattern (T and B are symbolic). Two more kernels for the reference rows: the
  same model without sequence_length, and with ``length_aware=False`` (every step computes the
  whole batch and masks the finished rows, as TF1).
* PyTorch: ``nn.LSTM`` on ``pack_padded_sequence(X, lengths, enforce_sorted=False)``, outputs
  through ``pad_packed_sequence(total_length=T)``, ``loss.backward()`` with X.requires_grad.
  Same weights (rnncomp.tools.convert.to_torch_lstm); outputs, gradients and dX are compared.

Length patterns (B=64, I=H=256, T=100 unless said):

* full      -- all lengths 100 (and the same batch without sequence_length: "no lengths")
* one-long  -- one sequence of 100, 63 of length 5
* uniform20 -- lengths uniform in 1..20, padded to T=100; and the same batch cut to T=20

Goals (ratios of medians): full with lengths <= 1.05x no lengths; one-long <= 0.30x full and
faster than PyTorch packed; uniform20 padded <= 1.15x the same batch cut to T=20.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE taskset -c 0 python bench/bench_seqlen.py
    python bench/bench_seqlen.py --quick          # small sizes, few repeats (a smoke run)

Every number is the median of repeated calls, all sides interleaved per round; wall time and
process CPU time are both reported (CPU time is the load-robust one on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--I", type=int, default=256)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=9, help="interleaved rounds (median)")
    ap.add_argument("--cell", choices=("lstm", "gru"), default="lstm",
                    help="BasicLSTMCell (nn.LSTM) or GRUCell(reset_after=True) (nn.GRU)")
    ap.add_argument("--quick", action="store_true", help="B=8, I=H=32, T=30, 3 rounds")
    ap.add_argument("--no-torch", action="store_true", help="rnncomp rows only")
    ap.add_argument("--json", default=None, help="write the results to this file")
    a = ap.parse_args(argv)
    if a.quick:
        a.B, a.I, a.H, a.T, a.repeat = 8, 32, 32, 30, 3
    return a


def patterns(B, T, rng):
    short = max(1, T // 20)
    cut = max(2, T // 5)
    return {
        "full": (np.full(B, T, np.int32), T),
        "one-long": (np.array([T] + [short] * (B - 1), np.int32), T),
        "uniform20": (rng.integers(1, cut + 1, B).astype(np.int32), T),
        "uniform20 cut": (None, cut),  # the same lengths, X cut to T = cut
    }


def rc_kernels(I, H, cell="lstm"):
    import rnncomp as rc
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.grad import model_grad_graph

    def model(lengths: bool, aware: bool):
        def loss(X, R, L=None):
            c = rc.BasicLSTMCell(H) if cell == "lstm" else rc.GRUCell(H, reset_after=True)
            out, _ = rc.dynamic_rnn(c, X, sequence_length=L, time_major=True,
                                    length_aware=aware)
            return rc.sum(out * R)
        ins = {"X": rc.Input(("T", "B", I)), "R": rc.Input(("T", "B", H))}
        if lengths:
            ins["L"] = rc.Input(("B",), "i32")
        return rc.Model(loss, ins, name=f"{cell}_seqlen_{int(lengths)}{int(aware)}")

    out = {}
    for key, (lengths, aware) in {"aware": (True, True), "masked": (True, False),
                                  "none": (False, True)}.items():
        m = model(lengths, aware)
        wrt = list(m.param_specs) + ["X"]
        out[key] = (m, compile_graph(model_grad_graph(m, wrt=wrt, preoptimize=True), "cpu"), wrt)
    return out


def torch_side(I, H, params, cell="lstm"):
    import torch

    from rnncomp import convert
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)
    conv = convert.to_torch_lstm if cell == "lstm" else convert.to_torch_gru
    m.load_state_dict({k: torch.from_numpy(v) for k, v in conv(params).items()})

    def fb(X, R, L):
        x = torch.from_numpy(X).requires_grad_(True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(L.astype(np.int64)),
                                                         enforce_sorted=False)
        y, _ = m(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=X.shape[0])
        loss = (out * torch.from_numpy(R)).sum()
        m.zero_grad()
        loss.backward()
        return loss, x.grad
    return fb


def _minflt() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv=None):
    a = parse_args(argv)
    rng = np.random.default_rng(0)
    B, I, H, T = a.B, a.I, a.H, a.T
    pats = patterns(B, T, rng)
    pats["uniform20 cut"] = (pats["uniform20"][0], pats["uniform20 cut"][1])
    X = rng.standard_normal((T, B, I)).astype(np.float32)
    R = rng.standard_normal((T, B, H)).astype(np.float32)
    t0 = time.perf_counter()
    ks = rc_kernels(I, H, a.cell)
    compile_s = time.perf_counter() - t0
    m = ks["aware"][0]
    params = m.init(seed=0)
    use_torch = not a.no_torch
    if use_torch:
        try:
            import torch
            torch.set_num_threads(1)
            tfb = torch_side(I, H, params, a.cell)
        except ImportError:
            use_torch = False

    calls = {}  # name -> zero-arg callable
    for name, (L, Tp) in pats.items():
        Xp, Rp = np.ascontiguousarray(X[:Tp]), np.ascontiguousarray(R[:Tp])
        if name == "uniform20 cut":
            Xp = Xp.copy()
        mm, cg, wrt = ks["aware"]
        args = mm.arguments(params, {"X": Xp, "R": Rp, "L": L})
        calls[f"rc {name}"] = (lambda cg=cg, args=args: cg(*args))
        if name == "full":
            mn, cn, _ = ks["none"]
            an = mn.arguments(params, {"X": Xp, "R": Rp})
            calls["rc full, no lengths"] = (lambda cg=cn, args=an: cg(*args))
            mk, ck, _ = ks["masked"]
            ak = mk.arguments(params, {"X": Xp, "R": Rp, "L": L})
            calls["rc full, length_aware=False"] = (lambda cg=ck, args=ak: cg(*args))
        if name == "one-long":
            mk, ck, _ = ks["masked"]
            ak = mk.arguments(params, {"X": Xp, "R": Rp, "L": L})
            calls["rc one-long, length_aware=False"] = (lambda cg=ck, args=ak: cg(*args))
        if use_torch:
            calls[f"torch {name}"] = (lambda Xp=Xp, Rp=Rp, L=L: tfb(Xp, Rp, L))
    # correctness: rnncomp vs torch (loss and dX), aware vs masked
    errs = {}
    for name, (L, Tp) in pats.items():
        r = calls[f"rc {name}"]()
        if use_torch:
            loss, dx = calls[f"torch {name}"]()
            dX = r[1 + ks["aware"][2].index("X")]
            errs[name] = float(np.max(np.abs(dX - dx.numpy())) / (np.max(np.abs(dX)) + 1e-30))
    for f in calls.values():  # warm-up (JIT of the first call, caches)
        f()
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    faults = {k: [] for k in calls}
    for _ in range(a.repeat):
        for k, f in calls.items():
            f0 = _minflt()
            t, c = time.perf_counter(), time.process_time()
            f()
            cpu[k].append((time.process_time() - c) * 1e3)
            wall[k].append((time.perf_counter() - t) * 1e3)
            faults[k].append(_minflt() - f0)
    med = lambda v: float(np.median(v))  # noqa: E731
    res = {k: {"wall_ms": med(wall[k]), "cpu_ms": med(cpu[k]), "page_faults": med(faults[k])}
           for k in calls}

    def ratio(a_, b_, kind="cpu_ms"):
        return res[a_][kind] / res[b_][kind]

    goals = [
        ("full with lengths / no lengths", "rc full", "rc full, no lengths", 1.05),
        ("one-long / full", "rc one-long", "rc full", 0.30),
        ("uniform20 padded to T / cut to T/5", "rc uniform20", "rc uniform20 cut", 1.15),
    ]
    if use_torch:
        goals.append(("one-long rnncomp / torch packed", "rc one-long", "torch one-long", 1.0))
    lines = [f"# {a.cell.upper()} B={B} I={I} H={H} T={T}, fwd+bwd, {a.repeat} rounds, medians; "
             f"compile {compile_s:.1f} s",
             "| case | wall ms | CPU ms | page faults per call |", "|---|---|---|---|"]
    for k, v in res.items():
        lines.append(f"| {k} | {v['wall_ms']:.1f} | {v['cpu_ms']:.1f} | {v['page_faults']:.0f} |")
    lines += ["", "| goal | ratio (CPU) | ratio (wall) | target | met |", "|---|---|---|---|---|"]
    for label, x, y, target in goals:
        rc_, rw = ratio(x, y), ratio(x, y, "wall_ms")
        lines.append(f"| {label} | {rc_:.3f} | {rw:.3f} | <= {target} | "
                     f"{'yes' if rc_ <= target else 'no'} |")
    if errs:
        lines += ["", "max |dX rnncomp - dX torch| / max |dX|: " +
                  ", ".join(f"{k} {v:.1e}" for k, v in errs.items())]
    try:
        from threadpoolctl import threadpool_info
        blas = [(d.get("internal_api"), d.get("architecture"), d.get("num_threads"))
                for d in threadpool_info()]
    except ImportError:
        blas = "threadpoolctl not installed"
    lines += ["", f"BLAS: {blas}; python {platform.python_version()}; load "
              f"{os.getloadavg() if hasattr(os, 'getloadavg') else '?'}; OPENBLAS_CORETYPE="
              f"{os.environ.get('OPENBLAS_CORETYPE')}"]
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": res, "errors": errs, "args": vars(a)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
