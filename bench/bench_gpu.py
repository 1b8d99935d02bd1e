"""One-shot GPU check and benchmark of rnncomp's CUDA backend (about 3-4 minutes on an H100).

    PYTHONUNBUFFERED=1 timeout 280 python3 bench/bench_gpu.py --budget 170 2>&1 | tee $OUT/bench_gpu.log
    python3 bench/bench_gpu.py --sim        # same logic on numba's CUDA simulator, toy sizes

Phase 1, correctness: every built-in cell, forward and backward (grad_graph), float64, B2 H3 T3
with one short sequence, compiled with backend="cuda", against the reference interpreter; plus
the float32 persistent LSTM forward against the interpreter.
Phase 2, timings (float32, TF32 off everywhere): rnncomp (cuda backend; the persistent kernel
where it applies: LSTM forward, batch <= 16) against PyTorch cuDNN nn.LSTM / nn.GRU / nn.RNN and
a peephole LSTM written in plain PyTorch ops (the custom cell: cuDNN has none), configs
B1 I512 H512, B64 I256 H256, B64 I1024 H1024, B256 I1024 H1024 (T = 100), forward (inference)
and forward+backward (loss = sum(y^2)/numel, grads of all weights). Median ms, ratio = theirs /
ours (> 1: rnncomp faster). Per-config failures are printed and skipped. Writes
$OUT/bench_gpu.json when $OUT is set. Installs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T_START = time.perf_counter()


def log(*a):
    print(f"[{time.perf_counter() - T_START:6.1f}s]", *a, flush=True)


def setup(sim: bool):
    if sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    os.environ.setdefault("CUPY_TF32", "0")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import rnncomp

    try:
        import rnncomp.backends  # noqa: F401  (installed: package-dir mapping)
    except ImportError:  # running from a plain checkout: map rnncomp.backends -> ./backends
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "rnncomp.backends", ROOT / "backends" / "__init__.py",
            submodule_search_locations=[str(ROOT / "backends")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["rnncomp.backends"] = mod
        spec.loader.exec_module(mod)
        rnncomp.backends = mod
    return rnncomp


def cells(rc, H):
    return {
        "rnn_tanh": lambda: rc.BasicRNNCell(H),
        "lstm": lambda: rc.BasicLSTMCell(H, forget_bias=0.0),
        "lstm_peephole": lambda: rc.LSTMCell(H, use_peepholes=True),
        "gru_reset_before": lambda: rc.GRUCell(H, reset_after=False),
        "gru_reset_after": lambda: rc.GRUCell(H, reset_after=True),
        "multi_lstm_gru": lambda: rc.MultiRNNCell([rc.BasicLSTMCell(H),
                                                   rc.GRUCell(H, reset_after=True)]),
        "dropout_lstm": lambda: rc.DropoutWrapper(rc.BasicLSTMCell(H), 0.6, 0.7, 0.8),
    }


def model(rc, make, I, T, dtype, with_len=True, loss=True):
    def fn(X, L=None):
        out, state = rc.dynamic_rnn(make(), X, sequence_length=L)
        if loss:
            return rc.mean(out * out), out, state
        return out, state

    inputs = {"X": rc.Input((None, T, I))}
    if with_len:
        inputs["L"] = rc.Input((None,), "i32")
    return rc.Model(fn, inputs, dtype=dtype)


def args_for(g, rng, B, T, I, dtype, L=None, training=True):
    import numpy as np

    vals = {"X": rng.standard_normal((B, T, I)).astype(dtype), "@seed": np.int64(77),
            "@training": np.bool_(training)}
    if L is not None:
        vals["L"] = L
    out = []
    for n in g.inputs:
        if n.name in vals:
            out.append(vals[n.name])
        else:
            s = 1.0 / max(1, n.shape[0]) ** 0.5 if n.shape else 1.0
            out.append((s * rng.standard_normal(n.shape)).astype(dtype))
    return out


def correctness(rc, results):
    import numpy as np

    from rnncomp.transforms.autodiff import grad_graph
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.interp import evaluate

    B, H, T, I = 2, 3, 3, 2
    L = np.array([3, 1], np.int32)
    ok = True
    for name, make in cells(rc, H).items():
        for tag in ("fwd", "bwd"):
            try:
                m = model(rc, make, I, T, "f64")
                g = m.graph if tag == "fwd" else grad_graph(m.graph)
                rng = np.random.default_rng(0)
                a = args_for(g, rng, B, T, I, np.float64, L)
                c = compile_graph(g, backend="cuda")
                want = evaluate(g, a)
                got = c(*a)
                err = max(float(np.max(np.abs(o - w)) / (1e-12 + np.max(np.abs(w)) + 1e-300))
                          if w.size else 0.0 for o, w in zip(got, want))
                good = err < 1e-9 and all(o.shape == w.shape for o, w in zip(got, want))
            except Exception as e:  # noqa: BLE001
                err, good = float("nan"), False
                traceback.print_exc()
                log(f"  {name}/{tag}: ERROR {type(e).__name__}: {e}")
            ok &= good
            results["correctness"][f"{name}/{tag}"] = err
            log(f"  {name:18s} {tag}: max rel err {err:.2e}  {'ok' if good else 'FAIL'}")
    # float32 persistent LSTM forward (multi-block on a GPU)
    try:
        Bp, Hp, Tp, Ip = 3, 64, 7, 16
        m = model(rc, lambda: rc.BasicLSTMCell(Hp), Ip, Tp, "f32", loss=False)
        rng = np.random.default_rng(1)
        a = args_for(m.graph, rng, Bp, Tp, Ip, np.float32, np.array([7, 3, 5], np.int32))
        c = compile_graph(m.graph, backend="cuda")
        want = evaluate(m.graph, a)
        got = c(*a)
        err = max(float(np.max(np.abs(o - w))) for o, w in zip(got, want))
        good = err < 1e-4 and c.stats["persistent_runs"] == 1
        log(f"  persistent lstm f32 fwd: max abs err {err:.2e} persistent_runs="
            f"{c.stats['persistent_runs']}  {'ok' if good else 'FAIL'}")
        results["correctness"]["persistent_lstm_f32"] = err
        ok &= good
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        log(f"  persistent lstm: ERROR {type(e).__name__}: {e}")
        ok = False
    return ok


# ------------------------------------------------------------------------------------------
# timings
# ------------------------------------------------------------------------------------------
def median_ms(fn, sync, reps, warm=2):
    import statistics

    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def rnncomp_runner(rc, cell, B, I, H, T, mode, sim, persistent="auto"):
    """A zero-argument function running one forward (or forward+backward) on device arrays."""
    import numpy as np

    from rnncomp.transforms.autodiff import grad_graph
    from rnncomp.runtime.compiler import compile_graph

    m = model(rc, cells(rc, H)[cell], I, T, "f32", with_len=False, loss=(mode == "fwd+bwd"))
    g = m.graph if mode == "fwd" else grad_graph(m.graph)
    c = compile_graph(g, backend="cuda")
    c.persistent = persistent
    rng = np.random.default_rng(0)
    a = args_for(g, rng, B, T, I, np.float32)
    if sim:
        return (lambda: c(*a)), (lambda: None), c
    import cupy

    dev = [cupy.asarray(x) if isinstance(x, np.ndarray) and x.ndim else x for x in a]
    return (lambda: c.run_device(*dev)), cupy.cuda.Device().synchronize, c


def torch_runner(kind, B, I, H, T, mode, device):
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    x = torch.randn(T, B, I, device=device)
    if kind in ("lstm", "gru_reset_after", "rnn_tanh"):
        mod = {"lstm": torch.nn.LSTM, "gru_reset_after": torch.nn.GRU,
               "rnn_tanh": torch.nn.RNN}[kind](I, H).to(device)
        params = list(mod.parameters())

        def fwd():
            return mod(x)[0]
    else:  # peephole LSTM in plain PyTorch ops (no cuDNN kernel exists for it)
        Wx = (torch.randn(I, 4 * H, device=device) / I ** 0.5).requires_grad_()
        Wh = (torch.randn(H, 4 * H, device=device) / H ** 0.5).requires_grad_()
        b = torch.zeros(4 * H, device=device, requires_grad=True)
        wi, wf, wo = (torch.randn(H, device=device).requires_grad_() for _ in range(3))
        params = [Wx, Wh, b, wi, wf, wo]

        def fwd():
            xw = (x.reshape(T * B, I) @ Wx + b).reshape(T, B, 4 * H)
            h = torch.zeros(B, H, device=device)
            c = torch.zeros(B, H, device=device)
            ys = []
            for t in range(T):
                z = xw[t] + h @ Wh
                i, j, f, o = z.split(H, dim=1)
                i = torch.sigmoid(i + wi * c)
                f = torch.sigmoid(f + 1.0 + wf * c)
                c = f * c + i * torch.tanh(j)
                o = torch.sigmoid(o + wo * c)
                h = o * torch.tanh(c)
                ys.append(h)
            return torch.stack(ys)

    if mode == "fwd":
        def run():
            with torch.no_grad():
                fwd()
    else:
        def run():
            for p in params:
                p.grad = None
            y = fwd()
            (y * y).mean().backward()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return run, sync


THEIRS = {"lstm": ("cuDNN nn.LSTM", "lstm"), "gru_reset_after": ("cuDNN nn.GRU", "gru_reset_after"),
          "rnn_tanh": ("cuDNN nn.RNN", "rnn_tanh"),
          "lstm_peephole": ("torch ops peephole", "peephole")}


def timings(rc, configs, sim, budget, reps, results,
            cell_list=("lstm", "lstm_peephole", "gru_reset_after", "rnn_tanh")):
    rows = []
    t_end = time.perf_counter() + budget
    device = "cpu" if sim else "cuda"
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    for cell in cell_list:
        for (B, I, H, T) in configs:
            for mode in ("fwd", "fwd+bwd"):
                label = f"{cell:14s} B{B} I{I} H{H} T{T} {mode}"
                if time.perf_counter() > t_end:
                    log(f"  {label}: skipped (budget)")
                    rows.append((label, None, None, None, "skipped (budget)"))
                    continue
                ours = theirs = None
                note = ""
                try:
                    t0 = time.perf_counter()
                    run, sync, c = rnncomp_runner(rc, cell, B, I, H, T, mode, sim)
                    ours = median_ms(run, sync, reps)
                    note = (f"persistent={c.stats['persistent_runs'] > 0} graphs="
                            f"{c.stats['graph_replays'] > 0}")
                    if c.capture_error:
                        note += f" capture_error={c.capture_error[:60]}"
                        if not results.get("capture_tb_shown"):
                            results["capture_tb_shown"] = True
                            print(c.capture_traceback, flush=True)
                    log(f"  {label}: rnncomp {ours:.3f} ms ({note}; setup "
                        f"{time.perf_counter() - t0:.1f}s)")
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    note = f"rnncomp error {type(e).__name__}: {str(e)[:80]}"
                    log(f"  {label}: {note}")
                if have_torch:
                    try:
                        run, sync = torch_runner(THEIRS[cell][1], B, I, H, T, mode, device)
                        theirs = median_ms(run, sync, reps)
                    except Exception as e:  # noqa: BLE001
                        note += f" torch error {type(e).__name__}: {str(e)[:60]}"
                        log(f"  {label}: torch error {e}")
                ratio = theirs / ours if ours and theirs else None
                rows.append((label, ours, theirs, ratio, THEIRS[cell][0] + "; " + note))
    results["timings"] = rows
    print("\n| config | rnncomp ms | theirs ms | theirs/ours | vs, notes |", flush=True)
    print("| --- | --- | --- | --- | --- |", flush=True)
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for label, o, t, r, note in rows:
        print(f"| {label} | {f(o)} | {f(t)} | {f(r)} | {note} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", action="store_true", help="numba CUDA simulator, toy sizes")
    ap.add_argument("--budget", type=float, default=170.0, help="seconds for the timing phase")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--cells", default="lstm,lstm_peephole,gru_reset_after,rnn_tanh")
    a = ap.parse_args()
    rc = setup(a.sim)
    import numpy as np

    results = {"correctness": {}, "versions": {}}
    try:
        import numba
        import numba_cuda  # noqa: F401

        results["versions"]["numba"] = numba.__version__
    except Exception:
        pass
    results["versions"]["numpy"] = np.__version__
    log("versions:", results["versions"], "sim" if a.sim else "")
    if not a.sim:
        import cupy

        dev = cupy.cuda.Device()
        log("device:", cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode(),
            "cupy", cupy.__version__, "CUPY_TF32", os.environ.get("CUPY_TF32"))
    ok = True
    if not a.skip_check:
        log("phase 1: correctness (float64, B2 H3 T3, fwd and bwd, vs interpreter)")
        ok = correctness(rc, results)
        log("correctness:", "ALL OK" if ok else "FAILURES")
    if a.sim:
        configs = [(1, 4, 4, 3), (3, 4, 8, 3)]
        reps = 1
    else:
        T = a.T
        configs = [(1, 512, 512, T), (64, 256, 256, T), (64, 1024, 1024, T),
                   (256, 1024, 1024, T)]
        reps = a.reps
    log("phase 2: timings")
    timings(rc, configs, a.sim, a.budget, reps, results, a.cells.split(","))
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_gpu.json").write_text(json.dumps(results, indent=1, default=str))
    log("done", "correctness ok" if ok else "correctness FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
