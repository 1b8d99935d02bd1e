"""GPU check and benchmark of length-aware variable-length batches on the CUDA backend (about
2 minutes on an H100/H200).

    PYTHONUNBUFFERED=1 timeout 280 python3 bench/bench_gpu_seqlen.py 2>&1 | tee $OUT/seqlen.log
    python3 bench/bench_gpu_seqlen.py --sim     # same logic on numba's CUDA simulator, toy sizes

Phase 1, correctness (float64): an LSTM and a GRU with sequence_length, forward outputs, final
states and every gradient from one compiled graph, against the masked model (length_aware=False)
in the reference interpreter, for several length patterns (0 and T, sorted, unsorted), each
called twice (the second call replays the CUDA graphs captured by the first); checks that
graphs were captured and replayed without a capture error and that rows were skipped.
Phase 2, timings (float32, TF32 off, fwd+bwd, loss = sum(y^2)/numel, B64 I256 H256 T100):
length-aware vs the masked whole-batch execution (length_aware=False) of the same model, for
the length patterns "full" (all T), "one long" (one T, the others T/10), "uniform" (8 batches of
lengths uniform in [1, T], cycled). Median ms; "ideal" = mean(L) / T (the share of the padded
work that is real). Writes $OUT/bench_gpu_seqlen.json when $OUT is set. Installs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import log, median_ms, setup  # noqa: E402


def model(rc, cell, I, H, T, aware, loss_only=False):
    def fn(X, L):
        make = {"lstm": lambda: rc.BasicLSTMCell(H), "gru": lambda: rc.GRUCell(H)}
        outs = []
        loss = None
        for name in cell.split("+"):
            out, st = rc.dynamic_rnn(make[name](), X, sequence_length=L, length_aware=aware,
                                     scope=name)
            part = rc.mean(out * out)
            loss = part if loss is None else loss + part
            outs += [out, st]
        return (loss,) if loss_only else (loss, *outs)

    return rc.Model(fn, {"X": rc.Input((None, T, I)), "L": rc.Input((None,), "i32")},
                    dtype="f64" if not loss_only else "f32")


def correctness(rc, results, sim):
    import numpy as np

    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.grad import model_grad_graph
    from rnncomp.runtime.interp import interpret

    I, H, T = 3, 4, 6
    m, ref = model(rc, "lstm+gru", I, H, T, True), model(rc, "lstm+gru", I, H, T, False)
    wrt = list(m.param_specs) + ["X"]
    c = compile_graph(model_grad_graph(m, wrt=wrt, preoptimize=True), backend="cuda")
    c.persistent = False
    g_ref = model_grad_graph(ref, wrt=wrt)
    ok = True
    for lengths in ([6, 0, 3, 1], [6, 5, 2, 2], [6, 1, 1, 1], [6, 6, 6, 6], [4, 2, 3, 1],
                    [0, 0, 0, 0]):
        L = np.array(lengths, np.int32)
        rng = np.random.default_rng(len(lengths) + int(L.sum()))
        p = m.init(seed=1)
        inputs = {"X": rng.standard_normal((len(L), T, I)), "L": L}
        want = interpret(g_ref, ref.arguments(p, inputs))
        for call in range(2):
            try:
                got = c(*m.arguments(p, inputs))
                err = max(float(np.max(np.abs(o - w)) / (1e-12 + np.max(np.abs(w))))
                          if np.size(w) else 0.0 for o, w in zip(got, want))
                good = err < 1e-9
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                err, good = float("nan"), False
                log(f"  lengths {lengths} call {call}: ERROR {type(e).__name__}: {e}")
            ok &= good
            results["correctness"][f"{lengths}/{call}"] = err
            log(f"  lengths {lengths} call {call}: max rel err {err:.2e} rows "
                f"{[r['rows'] for r in c.row_log]}  {'ok' if good else 'FAIL'}")
    st = dict(c.stats)
    log(f"  stats {st} capture_error={c.capture_error}")
    if c.capture_traceback:
        print(c.capture_traceback, flush=True)
    graphs_ok = sim or (st["captures"] > 0 and st["graph_replays"] > st["captures"] and
                        c.capture_error is None)
    ok &= graphs_ok and st["rows_skipped"] > 0
    results["stats"] = st
    return ok


def timings(rc, sim, reps, results):
    import numpy as np

    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.transforms.autodiff import grad_graph

    B, I, H, T = (4, 3, 4, 6) if sim else (64, 256, 256, 100)
    rng = np.random.default_rng(0)
    short = max(1, T // 10)
    patterns = {
        "full": [np.full(B, T, np.int32)],
        "one long": [np.array([T] + [short] * (B - 1), np.int32)],
        "uniform": [rng.integers(1, T + 1, B).astype(np.int32) for _ in range(8)],
    }
    rows = []
    for cell in ("lstm", "gru"):
        runners = {}
        for aware in (True, False):
            m = model(rc, cell, I, H, T, aware, loss_only=True)
            g = grad_graph(m.graph)
            c = compile_graph(g, backend="cuda")
            c.persistent = False
            runners[aware] = (m, g, c)
        for pname, Ls in patterns.items():
            ms = {}
            for aware in (True, False):
                m, g, c = runners[aware]
                x = rng.standard_normal((B, T, I)).astype(np.float32)
                p = m.init(seed=0)
                argsets = [m.arguments(p, {"X": x, "L": L}) for L in Ls]
                if not sim:
                    import cupy

                    # float arrays on the device; the lengths stay NumPy (mirrored on the
                    # host: no device-to-host read per call)
                    argsets = [[cupy.asarray(a) if isinstance(a, np.ndarray) and a.ndim and
                                a.dtype.kind == "f" else a for a in args] for args in argsets]
                k = [0]

                def run(c=c, argsets=argsets, k=k):
                    args = argsets[k[0] % len(argsets)]
                    k[0] += 1
                    return c(*args) if sim else c.run_device(*args)

                sync = (lambda: None) if sim else __import__("cupy").cuda.Device().synchronize
                try:
                    ms[aware] = median_ms(run, sync, reps, warm=2 * len(argsets))
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    log(f"  {cell} {pname} aware={aware}: ERROR {type(e).__name__}: {e}")
                    ms[aware] = None
            ideal = float(np.mean([np.mean(np.minimum(L, T)) for L in Ls])) / T
            a, b = ms[True], ms[False]
            ratio = b / a if a and b else None
            rows.append((f"{cell} B{B} I{I} H{H} T{T} fwd+bwd, {pname}", a, b, ratio, ideal,
                         runners[True][2].stats.get("captures"),
                         runners[True][2].capture_error))
            log(f"  {rows[-1]}")
    results["timings"] = rows
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print("\n| config, lengths | length-aware ms | masked ms | masked/aware | ideal mean(L)/T |",
          flush=True)
    print("| --- | --- | --- | --- | --- |", flush=True)
    for label, a, b, r, ideal, _, _ in rows:
        print(f"| {label} | {f(a)} | {f(b)} | {f(r)} | {ideal:.2f} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", action="store_true", help="numba CUDA simulator, toy sizes")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--skip-check", action="store_true")
    a = ap.parse_args()
    rc = setup(a.sim)
    results = {"correctness": {}}
    ok = True
    if not a.skip_check:
        log("phase 1: correctness (float64, LSTM + GRU with lengths, all gradients)")
        ok = correctness(rc, results, a.sim)
        log("correctness:", "ALL OK" if ok else "FAILURES")
    log("phase 2: timings (length-aware vs masked)")
    t0 = time.perf_counter()
    timings(rc, a.sim, 1 if a.sim else a.reps, results)
    log(f"timings took {time.perf_counter() - t0:.1f}s")
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_gpu_seqlen.json").write_text(json.dumps(results, indent=1,
                                                                 default=str))
    log("done", "correctness ok" if ok else "correctness FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
