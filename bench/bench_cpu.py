"""CPU benchmark: rnncomp (backend "cpu") vs PyTorch eager vs JAX lax.scan, one process.

What is timed (float32, time-major X[T, B, I], zero initial state):

* fwd  -- rnncomp: ``Model.compile("cpu")`` of a model returning the outputs [T, B, H], called
  on ``m.arguments(...)``; torch: ``nn.RNN/LSTM/GRU`` (or the custom cell in plain ops) under
  ``no_grad``; JAX: ``jit`` of a ``lax.scan``.
* f+b  -- the loss ``sum(outputs * R)`` and its gradient w.r.t. ALL parameters AND X.
  rnncomp: ``compile_graph(model_grad_graph(m, wrt=params+["X"], preoptimize=True))``;
  torch: ``loss.backward()`` with ``X.requires_grad``; JAX: ``jit(value_and_grad)``.

Cells: rnn (tanh), lstm (BasicLSTMCell), gru (GRUCell(reset_after=True)), gru_tf (GRUCell(),
TF1's reset-before form), custom (peephole LSTM, ``LSTMCell(use_peepholes=True)``), lnlstm (a
user-written layer-norm LSTM), zoneout (a user-written zoneout LSTM in training mode).
Sides: rnncomp; nn = torch.nn.RNN/LSTM/GRU (oneDNN) where one exists; eager = the cell in plain
torch ops (Python loop, input projection hoisted); jax = jit(lax.scan) with [x_t, h] @ K + b in
the body (how a user writes it); jax-h = the same with X @ K_x + b hoisted before the scan.
torch eager and JAX share one definition of each cell (cell_step). Weights are the same arrays
on all sides (via rnncomp.tools.convert for the torch modules); outputs and dX are compared once
per case (zoneout excepted: each side draws its own masks). The sides are timed interleaved.

GFLOP/s counts the gate GEMMs only: 2*B*(I+H)*G*H*T forward, 3x that for f+b
(G = 1/4/3/4 for rnn/lstm/gru/custom). The roofline is one [T*B, I+H] x [I+H, G*H] sgemm
through numpy in the same process (best of >= 7 calls: a peak); "%roof" = achieved GFLOP/s /
roofline GFLOP/s.

Every time is reported twice: wall time (perf_counter) and process CPU time (process_time).
On a shared machine (load average above the core count) long calls are time-sliced and their
wall time inflates while short calls do not; the CPU-time table is the load-robust one for the
1-thread setting (with 2 threads CPU time sums both threads and is not a latency).

Compile time is measured in FRESH processes: cold = empty RNNCOMP_CACHE_DIR, warm = the same
directory again (Numba's cache of the generated module lives there). Reported: time from
process start to the first result, and separately import, compile_graph() and the first call
(the Numba JIT happens on the first call, compile_graph only renders and imports the source).

    python bench/bench_cpu.py --quick                # small + mnist, few repeats (< 2 min)
    python bench/bench_cpu.py                        # all configs (< 10 min on a warm cache)
    python bench/bench_cpu.py --threads 1 2 --pin    # 1 and 2 threads, pinned to 1 and 2 cores
    python bench/bench_cpu.py --configs medium --cells lstm gru --repeat 9 --json out.json

PyTorch and JAX are optional: without them the tables have rnncomp's columns only (the other
columns read "-") and one line says what to install (`pip install torch jax`).

Each thread setting runs in its own subprocess (BLAS/OMP thread variables must be set before
numpy is imported). Timings on a shared machine are noisy: every number is a median of
repeated calls, all sides are timed in the same process, interleaved per case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {  # name: (B, I, H, T)
    "small": (1, 128, 128, 100),
    "medium": (64, 256, 256, 100),
    "large": (64, 1024, 1024, 100),
    "mnist": (150, 28, 150, 28),
}
CELLS = ("rnn", "lstm", "gru", "gru_tf", "custom", "lnlstm", "zoneout")
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_tf": 3, "custom": 4, "lnlstm": 4, "zoneout": 4}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None)
    ap.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed calls per case (median); default 7, 3 for large, 3 with --quick")
    ap.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="thread settings (BLAS, torch, XLA); each in its own subprocess")
    ap.add_argument("--pin", action="store_true",
                    help="pin each thread setting's process to its first N cores of this "
                         "process's affinity set (1 thread: one core, as taskset -c)")
    ap.add_argument("--quick", action="store_true", help="small + mnist, few repeats")
    ap.add_argument("--budget", type=float, default=None,
                    help="max seconds of timed calls per side and case (fewer repeats when a "
                         "call is slow); default 4 (2 with --quick)")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the fresh-process compile "
                                                              "measurements")
    ap.add_argument("--no-profile", action="store_true", help="skip the medium-LSTM profile")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-cpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.configs is None:
        a.configs = ["small", "mnist"] if a.quick else ["small", "medium", "mnist", "large"]
    if a.budget is None:
        a.budget = 1.0 if a.quick else 4.0
    return a


def thread_env(n: int) -> dict:
    env = dict(os.environ)
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMBA_NUM_THREADS"):
        env[v] = str(n)
    if n == 1:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    # the worker imports torch (which loads libgomp) before rnncomp, so rnncomp cannot set
    # this itself before libgomp reads it (backends/cpu/driver.quiet_openmp); with the default
    # (spinning idle threads) rnncomp's 2-thread kernels ran 10x slower on 2 CPUs. It applies
    # to torch's OpenMP threads too; a value the caller set is kept
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# =============================================================================================
# Everything below the worker entry runs with the thread environment already set.
# =============================================================================================
def _np():
    import numpy as np
    return np


def med_times(f, rep, budget):
    """(median wall ms, median process-CPU ms, repeats used, first-call s).

    The first call (JIT compile where there is one) is not timed; a second untimed call
    estimates the per-call time, and the repeats are cut so that the timed calls take about
    `budget` seconds at most (at least 1 timed call). CPU time (time.process_time, all threads
    of this process) is robust to other processes sharing the cores; with 1 thread it is the
    compute time of the call."""
    t0 = time.perf_counter()
    f()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    c0 = time.process_time()
    f()
    per = time.perf_counter() - t0
    if per > budget:  # slow case (large config): the second call is the one measurement
        return float(per * 1e3), float((time.process_time() - c0) * 1e3), 1, first
    n = max(1, min(rep, int(budget / max(per, 1e-9))))
    ts, cs = [], []
    for _ in range(n):
        t = time.perf_counter()
        c = time.process_time()
        f()
        cs.append(time.process_time() - c)
        ts.append(time.perf_counter() - t)

    def med(v):
        v = sorted(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    return float(med(ts) * 1e3), float(med(cs) * 1e3), n, first


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl)"
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "filepath")} for d in threadpool_info()]


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "numba", "llvmlite", "torch", "jax", "jaxlib"):
        try:
            vers[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            vers[mod] = None
    numba_cpu = None
    try:
        import llvmlite.binding as llb
        numba_cpu = llb.get_host_cpu_name()
    except Exception:  # noqa: BLE001
        pass
    src = {}
    for f in ("backends/cpu/codegen.py", "rnncomp/transforms/passes.py", "rnncomp/transforms/autodiff.py"):
        try:
            src[f] = time.strftime("%Y-%m-%d %H:%M:%S",
                                   time.gmtime(os.path.getmtime(os.path.join(ROOT, f))))
        except OSError:
            pass
    return {"cpu": cpu, "llvm_cpu": numba_cpu, "cores": os.cpu_count(), "versions": vers,
            "source_mtime_utc": src,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS",
                                                   "XLA_FLAGS")}}


# ---------------------------------------------------------------------------------------------
# rnncomp models
# ---------------------------------------------------------------------------------------------
LN_EPS = 1e-5
ZONEOUT = (0.5, 0.05)  # probabilities that a unit of c, of h keeps its previous value
_USER = {}


def user_cells():
    """The user-written cells (rnncomp.RNNCell subclasses, as a user would write them):
    a layer-norm LSTM (the one of examples/models.py: layer norm on each gate pre-activation
    and on c, no bias) and a zoneout LSTM (Krueger et al. 2016; training: each unit of c and h
    keeps its previous value with probability zc, zh; inference: the expectation)."""
    if _USER:
        return _USER
    import rnncomp as rc

    def layer_norm(x, gain, shift):
        mu = rc.mean(x, axis=1, keepdims=True)
        var = rc.mean(rc.square(x - mu), axis=1, keepdims=True)
        return (x - mu) / rc.sqrt(var + LN_EPS) * gain + shift

    class LayerNormLSTMCell(rc.RNNCell):
        default_name = "ln_lstm_cell"

        def __init__(self, num_units):
            super().__init__()
            self.num_units = num_units

        @property
        def state_size(self):
            return rc.LSTMStateTuple(self.num_units, self.num_units)

        @property
        def output_size(self):
            return self.num_units

        def call(self, x, state):
            c, h = state
            H = self.num_units
            kernel = self.param("kernel", (x.shape[1] + H, 4 * H))
            z = rc.matmul(rc.concat([x, h], axis=1), kernel)
            gates = []
            for k, part in enumerate(rc.split(z, 4, axis=1)):
                with rc.variable_scope(f"ln_{'ijfo'[k]}"):
                    g = self.param("gain", (H,), "ones")
                    b = self.param("shift", (H,), "zeros")
                gates.append(layer_norm(part, g, b))
            i, j, f, o = gates
            new_c = rc.sigmoid(f + 1.0) * c + rc.sigmoid(i) * rc.tanh(j)
            with rc.variable_scope("ln_c"):
                gc = self.param("gain", (H,), "ones")
                bc = self.param("shift", (H,), "zeros")
            new_h = rc.sigmoid(o) * rc.tanh(layer_norm(new_c, gc, bc))
            return new_h, rc.LSTMStateTuple(new_c, new_h)

    class ZoneoutLSTMCell(LayerNormLSTMCell):
        default_name = "zoneout_lstm_cell"

        def call(self, x, state):
            c, h = state
            H = self.num_units
            zc, zh = ZONEOUT
            kernel = self.param("kernel", (x.shape[1] + H, 4 * H))
            bias = self.param("bias", (4 * H,), "zeros")
            i, j, f, o = rc.split(rc.matmul(rc.concat([x, h], axis=1), kernel) + bias, 4,
                                  axis=1)
            new_c = rc.sigmoid(f + 1.0) * c + rc.sigmoid(i) * rc.tanh(j)
            new_h = rc.sigmoid(o) * rc.tanh(new_c)
            train = rc.training_flag()
            c2 = rc.where(train, rc.where(rc.random_uniform_like(new_c) < zc, c, new_c),
                          zc * c + (1.0 - zc) * new_c)
            h2 = rc.where(train, rc.where(rc.random_uniform_like(new_h) < zh, h, new_h),
                          zh * h + (1.0 - zh) * new_h)
            return h2, rc.LSTMStateTuple(c2, h2)

    _USER.update(lnlstm=LayerNormLSTMCell, zoneout=ZoneoutLSTMCell)
    return _USER


def rc_cell(cell, H):
    import rnncomp as rc
    if cell == "rnn":
        return rc.BasicRNNCell(H)
    if cell == "lstm":
        return rc.BasicLSTMCell(H)
    if cell == "gru":
        return rc.GRUCell(H, reset_after=True)
    if cell == "gru_tf":
        return rc.GRUCell(H)
    if cell == "custom":
        return rc.LSTMCell(H, use_peepholes=True)
    if cell in ("lnlstm", "zoneout"):
        return user_cells()[cell](H)
    raise KeyError(cell)


def rc_models(cell, I, H):
    import rnncomp as rc

    def fwd(X):
        out, _ = rc.dynamic_rnn(rc_cell(cell, H), X, time_major=True)
        return out

    def loss(X, R):
        out, _ = rc.dynamic_rnn(rc_cell(cell, H), X, time_major=True)
        return rc.sum(out * R)

    mf = rc.Model(fwd, {"X": rc.Input(("T", "B", I))}, name=f"{cell}_fwd")
    ml = rc.Model(loss, {"X": rc.Input(("T", "B", I)), "R": rc.Input(("T", "B", H))},
                  name=f"{cell}_loss")
    return mf, ml


def rc_grad_compiled(ml):
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.grad import model_grad_graph
    wrt = list(ml.param_specs) + ["X"]
    g = model_grad_graph(ml, wrt=wrt, preoptimize=True)
    return compile_graph(g, "cpu"), wrt


# ---------------------------------------------------------------------------------------------
# The cells in plain array ops (PyTorch eager and JAX share this one definition)
# ---------------------------------------------------------------------------------------------
def kernel_prefixes(cell):
    return ("gates/", "candidate/") if cell in ("gru", "gru_tf") else ("",)


def short_params(params):
    """rnncomp's parameter names without the 'rnn/<cell name>/' scope: 'kernel',
    'gates/bias', 'ln_i/gain', ..."""
    return {k.split("rnn/", 1)[1].split("/", 1)[1]: v for k, v in params.items()}


def cell_step(cell, o, P, lin, lin2, state, noise):
    """One step of `cell` in the array namespace `o` (torch or jax.numpy wrappers).
    lin(prefix, h): the step's pre-activation of kernel `prefix` ([x, h] @ K + b);
    lin2(prefix, h): its x part (+ b) and h part separately (GRU reset_after);
    noise(like): uniform [0, 1) numbers for zoneout. Returns (output, new state)."""
    sig, tanh = o.sigmoid, o.tanh
    if cell == "rnn":
        h = tanh(lin("", state))
        return h, h
    if cell in ("gru", "gru_tf"):
        h = state
        r, u = o.split(sig(lin("gates/", h)), 2)
        if cell == "gru":
            xc, hc = lin2("candidate/", h)
            c = tanh(xc + r * (hc + P["candidate/recurrent_bias"]))
        else:
            c = tanh(lin("candidate/", r * h))
        h = u * h + (1.0 - u) * c
        return h, h
    c, h = state
    zi, zj, zf, zo = o.split(lin("", h), 4)
    if cell == "custom":
        i = sig(zi + P["w_i_diag"] * c)
        f = sig(zf + 1.0 + P["w_f_diag"] * c)
        nc = f * c + i * tanh(zj)
        nh = sig(zo + P["w_o_diag"] * nc) * tanh(nc)
    elif cell == "lnlstm":
        def ln(x, s):
            mu = o.mean(x)
            d = x - mu
            return d / o.sqrt(o.mean(d * d) + LN_EPS) * P[s + "/gain"] + P[s + "/shift"]
        i, j, f, og = (ln(z, f"ln_{k}") for z, k in zip((zi, zj, zf, zo), "ijfo"))
        nc = sig(f + 1.0) * c + sig(i) * tanh(j)
        nh = sig(og) * tanh(ln(nc, "ln_c"))
    else:  # lstm, zoneout
        nc = sig(zf + 1.0) * c + sig(zi) * tanh(zj)
        nh = sig(zo) * tanh(nc)
    if cell == "zoneout":  # training mode
        zc, zh = ZONEOUT
        nc = o.where(noise(nc) < zc, c, nc)
        nh = o.where(noise(nh) < zh, h, nh)
    return nh, (nc, nh)


# ---------------------------------------------------------------------------------------------
# PyTorch side: nn.RNN/LSTM/GRU (oneDNN) where one exists, and the eager loop for every cell
# ---------------------------------------------------------------------------------------------
def torch_nn(cell, I, H, params):
    """nn.RNN / nn.LSTM / nn.GRU with rnncomp's weights (None for cells without one)."""
    import torch

    from rnncomp import convert
    if cell == "lstm":
        m, sd = torch.nn.LSTM(I, H), convert.to_torch_lstm(params)
    elif cell == "gru":
        m, sd = torch.nn.GRU(I, H), convert.to_torch_gru(params)
    elif cell == "rnn":
        m, sd = torch.nn.RNN(I, H, nonlinearity="tanh"), convert.to_torch_rnn(params)
    else:
        return None
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return lambda x: m(x)[0], m


def torch_eager(cell, I, H, params):
    """The cell in plain torch ops, a Python loop over time, input projection (with bias)
    hoisted out of the loop as one addmm."""
    import types

    import torch
    o = types.SimpleNamespace(
        sigmoid=torch.sigmoid, tanh=torch.tanh, sqrt=torch.sqrt, where=torch.where,
        split=lambda z, n: z.chunk(n, 1), mean=lambda x: x.mean(1, keepdim=True))
    mod = torch.nn.Module()
    P = {}
    for k, v in short_params(params).items():
        p = torch.nn.Parameter(torch.from_numpy(v).clone())
        mod.register_parameter(k.replace("/", "__"), p)
        P[k] = p
    pre = kernel_prefixes(cell)

    def run(X):
        T, B, _ = X.shape
        X2 = X.reshape(T * B, I)
        XW, Kh = {}, {}
        for p in pre:
            K, b = P[p + "kernel"], P.get(p + "bias")
            xw = X2 @ K[:I] if b is None else torch.addmm(b, X2, K[:I])
            XW[p], Kh[p] = xw.reshape(T, B, -1), K[I:]
        z = X.new_zeros(B, H)
        state = z if cell in ("rnn", "gru", "gru_tf") else (z, z)
        outs = []
        for s in range(T):
            out, state = cell_step(
                cell, o, P, lambda p, h: torch.addmm(XW[p][s], h, Kh[p]),
                lambda p, h: (XW[p][s], h @ Kh[p]), state, torch.rand_like)
            outs.append(out)
        return torch.stack(outs)

    return run, mod


# ---------------------------------------------------------------------------------------------
# JAX side: jit of lax.scan, two formulations
# ---------------------------------------------------------------------------------------------
def jax_side(cell, I, H, params, form):
    """form "concat": the cell as a user writes it, [x_t, h] @ K + b inside the scan body;
    form "hoisted": X @ K[:I] + b for all steps before the scan, h @ K[I:] inside it.
    Returns (params, jit forward, jit value_and_grad w.r.t. params and X)."""
    import types

    import jax
    import jax.numpy as jnp
    from jax import lax

    o = types.SimpleNamespace(
        sigmoid=jax.nn.sigmoid, tanh=jnp.tanh, sqrt=jnp.sqrt, where=jnp.where,
        split=lambda z, n: jnp.split(z, n, axis=1),
        mean=lambda x: jnp.mean(x, axis=1, keepdims=True))
    P = {k: jnp.asarray(v) for k, v in short_params(params).items()}
    pre = kernel_prefixes(cell)
    key0 = jax.random.PRNGKey(0)

    def run(P, X):
        T, B, _ = X.shape
        z = jnp.zeros((B, H), X.dtype)
        init = z if cell in ("rnn", "gru", "gru_tf") else (z, z)

        def bias(p):
            return P.get(p + "bias", 0.0)

        if form == "hoisted":
            xs = ({p: X @ P[p + "kernel"][:I] + bias(p) for p in pre}, jnp.arange(T))
        else:
            xs = (X, jnp.arange(T))

        def step(state, xt):
            x, t = xt
            if form == "hoisted":
                def lin(p, h):
                    return x[p] + h @ P[p + "kernel"][I:]

                def lin2(p, h):
                    return x[p], h @ P[p + "kernel"][I:]
            else:
                def lin(p, h):
                    return jnp.concatenate([x, h], axis=1) @ P[p + "kernel"] + bias(p)

                def lin2(p, h):
                    K = P[p + "kernel"]
                    return x @ K[:I] + bias(p), h @ K[I:]
            keys = iter(jax.random.split(jax.random.fold_in(key0, t), 2))

            def noise(like):
                return jax.random.uniform(next(keys), like.shape, like.dtype)

            out, state = cell_step(cell, o, P, lin, lin2, state, noise)
            return state, out

        return lax.scan(step, init, xs)[1]

    fwd = jax.jit(run)

    def loss(P, X, R):
        return jnp.sum(run(P, X) * R)

    fb = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return P, fwd, fb


# ---------------------------------------------------------------------------------------------
# One case: config x cell, all sides interleaved
# ---------------------------------------------------------------------------------------------
def gemm_roofline(B, I, H, T, G, rep):
    np = _np()
    rng = np.random.default_rng(1)
    A = rng.standard_normal((T * B, I + H)).astype(np.float32)
    W = rng.standard_normal((I + H, G * H)).astype(np.float32)
    O = np.empty((T * B, G * H), np.float32)
    np.dot(A, W, out=O)
    ts, cs = [], []
    for _ in range(max(rep, 7)):  # a roofline is a peak: best of the repeats
        t, c = time.perf_counter(), time.process_time()
        np.dot(A, W, out=O)
        cs.append(time.process_time() - c)
        ts.append(time.perf_counter() - t)
    ms, cpu = min(ts) * 1e3, min(cs) * 1e3
    f = 2.0 * T * B * (I + H) * G * H / 1e6
    return ms, f / ms, cpu, f / cpu


def time_interleaved(sides, rep, budget):
    """{side: (median wall ms, median CPU ms, calls timed, first-call s)} for the callables in
    `sides`, timed in rounds: every round calls each side once (the starting side rotates),
    so load changes hit all sides alike. The first call of each (JIT compile) is not timed; a
    second call estimates the slowest side, and the rounds are cut so that the slowest side's
    timed calls take about `budget` seconds (when one call already exceeds it, the second call
    is the measurement)."""
    names = list(sides)
    first, est = {}, {}
    for k in names:
        t0 = time.perf_counter()
        sides[k]()
        first[k] = time.perf_counter() - t0
    ts = {k: [] for k in names}
    cs = {k: [] for k in names}
    for k in names:
        t0, c0 = time.perf_counter(), time.process_time()
        sides[k]()
        est[k] = (time.perf_counter() - t0, time.process_time() - c0)
    slowest = max(e[0] for e in est.values())
    n = max(1, min(rep, int(budget / max(slowest, 1e-9))))
    if slowest > budget:
        for k in names:
            ts[k].append(est[k][0])
            cs[k].append(est[k][1])
        n = 0
    for r in range(n):
        for j in range(len(names)):
            k = names[(r + j) % len(names)]
            t, c = time.perf_counter(), time.process_time()
            sides[k]()
            cs[k].append(time.process_time() - c)
            ts[k].append(time.perf_counter() - t)

    def med(v):
        v = sorted(v)
        m = len(v)
        return v[m // 2] if m % 2 else (v[m // 2 - 1] + v[m // 2]) / 2

    return {k: (med(ts[k]) * 1e3, med(cs[k]) * 1e3, len(ts[k]), first[k]) for k in names}


SIDES = ("rc", "nn", "eager", "jax", "jaxh")  # rnncomp, torch nn.*, torch eager, JAX x2


def run_case(cfg, cell, rep, budget, use_jax, log, use_torch=True):
    np = _np()
    B, I, H, T = CONFIGS[cfg]
    G = GATES[cell]
    gflop = 2.0 * B * (I + H) * G * H * T / 1e9
    rng = np.random.default_rng(0)
    X = rng.standard_normal((T, B, I)).astype(np.float32)
    R = rng.standard_normal((T, B, H)).astype(np.float32)
    mf, ml = rc_models(cell, I, H)
    params = mf.init(seed=0)
    r = {"config": cfg, "cell": cell, "B": B, "I": I, "H": H, "T": T, "G": G,
         "gflop_fwd": gflop, "gflop_fb": 3 * gflop}
    training = cell == "zoneout"  # zoneout: the training mode (random masks)

    # rnncomp
    args_f = mf.arguments(params, {"X": X}, training)
    t0 = time.perf_counter()
    cf = mf.compile("cpu")
    r["rc_compile_graph_fwd_s"] = time.perf_counter() - t0
    args_l = ml.arguments(params, {"X": X, "R": R}, training)
    t0 = time.perf_counter()
    cg, wrt = rc_grad_compiled(ml)
    r["rc_compile_graph_fb_s"] = time.perf_counter() - t0
    fwd = {"rc": lambda: cf(*args_f)}
    fb = {"rc": lambda: cg(*args_l)}
    check = {}  # side: (y, dX) for the comparison with rnncomp

    if use_torch:
        import torch
        xt, Rt = torch.from_numpy(X), torch.from_numpy(R)
        for side, made in (("nn", torch_nn(cell, I, H, params)),
                           ("eager", torch_eager(cell, I, H, params))):
            if made is None:
                continue
            fn, mod = made
            xg = xt.clone().requires_grad_(True)

            def tf(fn=fn):
                with torch.no_grad():
                    return fn(xt)

            def tfb(fn=fn, mod=mod, xg=xg):
                mod.zero_grad(set_to_none=True)
                xg.grad = None
                (fn(xg) * Rt).sum().backward()
                return xg.grad

            fwd[side], fb[side] = tf, tfb
            check[side] = (lambda tf=tf: tf().numpy(), lambda tfb=tfb: tfb().numpy())
    if use_jax:
        import jax
        Xj, Rj = jax.numpy.asarray(X), jax.numpy.asarray(R)
        for side, form in (("jax", "concat"), ("jaxh", "hoisted")):
            P, jf, jfb = jax_side(cell, I, H, params, form)
            fwd[side] = lambda jf=jf, P=P: jf(P, Xj).block_until_ready()
            fb[side] = lambda jfb=jfb, P=P: jax.block_until_ready(jfb(P, Xj, Rj))
            check[side] = (lambda jf=jf, P=P: np.asarray(jf(P, Xj)),
                           lambda jfb=jfb, P=P: np.asarray(jfb(P, Xj, Rj)[1][1]))

    for mode, sides in (("fwd", fwd), ("fb", fb)):
        for side, (ms, cpu, n, first) in time_interleaved(sides, rep, budget).items():
            r[f"{side}_{mode}_ms"], r[f"{side}_{mode}_cpu_ms"] = ms, cpu
            r[f"{side}_{mode}_n"], r[f"{side}_{mode}_first_s"] = n, first
    log("  " + "  ".join(f"{s} fwd {r[f'{s}_fwd_ms']:.2f} f+b {r[f'{s}_fb_ms']:.2f} ms"
                         for s in SIDES if f"{s}_fwd_ms" in r))
    if not training:  # zoneout's masks come from each side's own generator: no comparison
        y_rc = cf(*args_f)[0]
        dX_rc = cg(*args_l)[1 + wrt.index("X")]
        errs = []
        for side, (fy, fdx) in check.items():
            y, dx = fy(), fdx()
            r[f"err_fwd_{side}"] = float(np.max(np.abs(y_rc - y)))
            r[f"err_dX_{side}"] = float(np.max(np.abs(dX_rc - dx)) /
                                        max(1e-30, float(np.max(np.abs(dx)))))
            errs.append(f"{side} {r[f'err_fwd_{side}']:.1e}/{r[f'err_dX_{side}']:.1e}")
        log("  max|y diff| / dX rel diff vs rnncomp: " + ", ".join(errs))

    r["roof_ms"], r["roof_gflops"], r["roof_cpu_ms"], r["roof_cpu_gflops"] = gemm_roofline(
        B, I, H, T, G, rep)
    for side in SIDES:
        for mode, gf in (("fwd", gflop), ("fb", 3 * gflop)):
            for clock in ("", "_cpu"):
                k = f"{side}_{mode}{clock}_ms"
                if k in r:
                    r[f"{side}_{mode}{clock}_gflops"] = gf / r[k] * 1e3
    return r


# ---------------------------------------------------------------------------------------------
# Profile of the generated medium-LSTM kernels: the pieces, mirrored line by line in njit
# ---------------------------------------------------------------------------------------------
def profile_lstm(cfg, rep, budget):
    """Time the pieces of the generated LSTM kernels (same shapes, same statements as the
    generated source) to split the total into GEMM / elementwise / memory traffic."""
    np = _np()
    from numba import njit
    B, I, H, T = CONFIGS[cfg]
    G = 4 * H
    rng = np.random.default_rng(0)
    f32 = np.float32
    X2 = rng.standard_normal((T * B, I)).astype(f32)
    Wx = (rng.standard_normal((I, G)) * 0.05).astype(f32)
    Wh = (rng.standard_normal((H, G)) * 0.05).astype(f32)
    h = rng.standard_normal((B, H)).astype(f32)
    gates = np.empty((B, G), f32)
    dG = rng.standard_normal((T * B, G)).astype(f32)
    dh = np.empty((B, H), f32)
    jit = dict(cache=False, error_model="numpy", nogil=True)

    @njit(**jit)
    def hoisted(X2, Wx):
        return np.dot(X2, Wx)

    @njit(**jit)
    def step_gemm(h, Wh, gates, T):
        for _ in range(T):
            np.dot(h, Wh, gates)

    @njit(**jit)
    def save_wh_per_step(Wh, T):
        # forward scan of the grad kernel: s5_y7 = zeros((T, H, 4H)); s5_y7[t] = Wh
        ys = np.zeros((T, Wh.shape[0], Wh.shape[1]), np.float32)
        for t in range(T):
            ys[t] = Wh
        return ys

    @njit(**jit)
    def bwd_step_gemm_with_transpose(dG, Wh, dh, T, B):
        # backward scan: v82 = ascontiguousarray(Wh_t.transpose()); rt.mm(v81, v82, v83)
        for t in range(T):
            WhT = np.ascontiguousarray(Wh.transpose((1, 0)))
            np.dot(dG[t * B:(t + 1) * B], WhT, dh)

    @njit(**jit)
    def bwd_step_gemm_no_transpose(dG, WhT, dh, T, B):
        for t in range(T):
            np.dot(dG[t * B:(t + 1) * B], WhT, dh)

    @njit(**jit)
    def per_step_dW(Hprev, dG, T, B, I, H):
        # backward scan: v84 = hprev^T @ dG_t; v85[I:] = v84; ys[t] = v85; after: colsum over T
        G = dG.shape[1]
        v85 = np.zeros((I + H, G), np.float32)
        ys = np.zeros((T, I + H, G), np.float32)
        for t in range(T):
            v84 = np.dot(np.ascontiguousarray(Hprev[t * B:(t + 1) * B]).T, dG[t * B:(t + 1) * B])
            v85[I:] = v84
            ys[t] = v85
        out = np.zeros((I + H) * G, np.float32)
        ys2 = ys.reshape((T, (I + H) * G))
        for t in range(T):
            for j in range((I + H) * G):
                out[j] += ys2[t, j]
        return out

    @njit(**jit)
    def one_dW(Hprev, dG):
        return np.dot(Hprev.T, dG)

    Hprev = rng.standard_normal((T * B, H)).astype(f32)
    WhT = np.ascontiguousarray(Wh.T)
    pieces = {}
    M = lambda f: med_times(f, rep, budget)[:2]  # noqa: E731
    pieces["fwd: hoisted X@Wx (1 GEMM)"] = M(lambda: hoisted(X2, Wx))
    pieces["fwd: per-step h@Wh x T"] = M(lambda: step_gemm(h, Wh, gates, T))
    pieces["grad fwd scan: save Wh every step (s5_y7[t] = Wh) x T"] = M(
        lambda: save_wh_per_step(Wh, T))
    pieces["bwd: per-step transpose(Wh) copy + dG@Wh^T x T"] = M(
        lambda: bwd_step_gemm_with_transpose(dG, Wh, dh, T, B))
    pieces["bwd: per-step dG@Wh^T x T, Wh^T hoisted"] = M(
        lambda: bwd_step_gemm_no_transpose(dG, WhT, dh, T, B))
    pieces["bwd: per-step dWh GEMM (K=B) + [I+H,4H] store per step + colsum"] = M(
        lambda: per_step_dW(Hprev, dG, T, B, I, H))
    pieces["bwd: one dWh GEMM over T*B rows"] = M(lambda: one_dW(Hprev, dG))
    pieces["bwd: dX = dG @ Wx^T (1 GEMM)"] = M(lambda: hoisted(dG, np.ascontiguousarray(Wx.T)))
    return pieces


# ---------------------------------------------------------------------------------------------
# Compile / start time in fresh processes
# ---------------------------------------------------------------------------------------------
COMPILE_CHILD = r"""
import time, json, sys
t_start = time.time()
import numpy as np
import rnncomp as rc
from rnncomp.runtime.compiler import compile_graph
from rnncomp.runtime.grad import model_grad_graph
sys.path.insert(0, {bench!r})
import bench_cpu as BC
t_imp = time.time()
mode, cell = {mode!r}, {cell!r}
B, I, H, T = BC.CONFIGS["small"]
mf, ml = BC.rc_models(cell, I, H)
params = mf.init(0)
X = np.ones((T, B, I), np.float32); R = np.ones((T, B, H), np.float32)
if mode == "fwd":
    m, g = mf, mf.graph
    args = mf.arguments(params, {{"X": X}})
else:
    m = ml
    g = model_grad_graph(ml, wrt=list(ml.param_specs) + ["X"], preoptimize=True)
    args = ml.arguments(params, {{"X": X, "R": R}})
t0 = time.time()
cg = compile_graph(g, "cpu")
t1 = time.time()
out = cg(*args)
t2 = time.time()
print(json.dumps(dict(import_s=t_imp - t_start, compile_graph_s=t1 - t0, first_call_s=t2 - t1,
                      t_result=t2, timings=cg.timings)))
"""


def compile_times(threads, modes=(("fb", "lstm"), ("fwd", "lstm")), quick=False):
    res = {}
    env0 = thread_env(threads)
    for mode, cell in modes:
        d = tempfile.mkdtemp(prefix="rnncomp_bench_cache_")
        env = dict(env0, RNNCOMP_CACHE_DIR=d)
        env.pop("RNNCOMP_ALWAYS_COMPILE", None)
        code = COMPILE_CHILD.format(bench=os.path.join(ROOT, "bench"), mode=mode, cell=cell)
        row = {}
        for label in ("cold", "warm") if quick else ("cold", "warm", "warm2"):
            t0 = time.time()
            s = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True)
            t_exit = time.time()
            if s.returncode:
                row[label] = {"error": s.stderr[-2000:]}
                continue
            v = json.loads(s.stdout.strip().splitlines()[-1])
            v["start_to_result_s"] = v.pop("t_result") - t0
            v["process_wall_s"] = t_exit - t0
            row[label] = v
        res[f"{cell} {mode}"] = row
    return res


# ---------------------------------------------------------------------------------------------
# Worker: one thread setting
# ---------------------------------------------------------------------------------------------
def worker(a):
    threads = a.worker
    if a.worker_cpus:  # before numpy / BLAS / torch start their threads
        os.sched_setaffinity(0, {int(c) for c in a.worker_cpus.split(",")})
    np = _np()
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS: numba's np.dot uses it)
    try:
        import torch
    except ImportError:
        torch = None
    else:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    use_jax = not a.no_jax
    jax_note = None
    if use_jax:
        try:
            import jax  # noqa: F401
        except ImportError as e:
            use_jax, jax_note = False, f"jax not installed ({e})"

    def log(s):
        print(s, flush=True)

    out = {"threads": threads, "machine": machine_info(), "blas": blas_info(),
           "cpus": sorted(os.sched_getaffinity(0)),
           "jax": jax_note or "lax.scan under jit", "cases": [], "load": [os.getloadavg()],
           "torch": torch.__version__ if torch is not None else None}
    log(f"[threads={threads}] load {os.getloadavg()}  torch "
        f"{torch.__version__ if torch is not None else 'not installed'}")
    for cfg in a.configs:
        for cell in a.cells:
            rep = a.repeat or (3 if (a.quick or cfg == "large") else 7)
            if cfg == "large":
                rep = min(rep, 3)
            log(f"{cfg} {CONFIGS[cfg]} {cell}")
            try:
                r = run_case(cfg, cell, rep, a.budget * (2 if cfg == "large" else 1),
                             use_jax, log, use_torch=torch is not None)
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                r = {"config": cfg, "cell": cell, "error": repr(e)}
            r["load"] = os.getloadavg()
            out["cases"].append(r)
            out["load"].append(os.getloadavg())
    if not a.no_profile and not a.quick and "lstm" in a.cells and "medium" in a.configs:
        log("profile medium LSTM pieces")
        out["profile_medium_lstm"] = profile_lstm("medium", 5, a.budget)
    np.asarray(0)
    with open(a.worker_out, "w") as f:
        json.dump(out, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def fmt(x, nd=1):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{nd}f}" if x >= 1 else f"{x:.{nd + 1}f}" if x >= 0.1 else f"{x:.3f}"


def table(results, clock=""):
    """Markdown table: one row per (threads, config, cell, mode).
    clock "" = wall time, "_cpu" = process CPU time. "x S" = S's time / rnncomp's time."""
    hdr = ["threads", "config", "cell", "mode", "rnncomp ms", "GFLOP/s", "%roof",
           "nn ms", "x nn", "eager ms", "x eager", "jax ms", "x jax", "jax-h ms", "x jax-h"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for w in results:
        for c in w["cases"]:
            for mode, label in (("fwd", "fwd"), ("fb", "f+b")):
                row = [str(w["threads"]), c["config"], c["cell"], label]
                if "error" in c:
                    lines.append("| " + " | ".join(row + ["error"] + ["-"] * 10) + " |")
                    continue
                ours = c[f"rc_{mode}{clock}_ms"]
                gfs = c[f"rc_{mode}{clock}_gflops"]
                row += [fmt(ours, 2), fmt(gfs), f"{100 * gfs / c[f'roof{clock}_gflops']:.0f}%"]
                for side in SIDES[1:]:
                    t = c.get(f"{side}_{mode}{clock}_ms")
                    row += [fmt(t, 2), f"{t / ours:.2f}x" if t else "-"]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _case(results, threads, cfg, cell):
    for w in results:
        if w["threads"] == threads:
            for c in w["cases"]:
                if c["config"] == cfg and c["cell"] == cell and "error" not in c:
                    return c
    return None


def goals(results, clock=""):
    """The performance goals, each judged on every config and thread setting measured:
    [(goal, [(where, value, met)])]. JAX is the faster of its two formulations."""
    out = []

    def ratio(c, side, mode):
        ours = c.get(f"rc_{mode}{clock}_ms")
        if side == "jax":
            ts = [c[k] for k in (f"jax_{mode}{clock}_ms", f"jaxh_{mode}{clock}_ms") if k in c]
            t = min(ts) if ts else None
        else:
            t = c.get(f"{side}_{mode}{clock}_ms")
        return t / ours if t and ours else None

    ths = sorted({w["threads"] for w in results})
    cfgs = [cf for cf in CONFIGS if any(c["config"] == cf for w in results for c in w["cases"])]
    spec = []
    for cell in ("lnlstm", "custom", "gru", "gru_tf", "zoneout"):
        spec += [(f"{cell} fwd >= 1.3x JAX jit", cell, "jax", "fwd", 1.3),
                 (f"{cell} f+b >= 2x JAX jit", cell, "jax", "fb", 2.0),
                 (f"{cell} f+b >= 2.5x PyTorch eager", cell, "eager", "fb", 2.5)]
    spec += [("lstm fwd >= 1.1x nn.LSTM", "lstm", "nn", "fwd", 1.1),
             ("lstm f+b >= 1.5x nn.LSTM", "lstm", "nn", "fb", 1.5),
             ("gru f+b >= 2x nn.GRU", "gru", "nn", "fb", 2.0),
             ("rnn f+b >= 2x nn.RNN", "rnn", "nn", "fb", 2.0)]
    for goal, cell, side, mode, want in spec:
        rows = []
        for th in ths:
            for cf in cfgs:
                c = _case(results, th, cf, cell)
                v = ratio(c, side, mode) if c else None
                if v is not None:
                    rows.append((f"{cf} {th}T", f"{v:.2f}x", v >= want))
        out.append((goal, rows))
    rows = []
    for cf in cfgs:
        c1, c2 = _case(results, 1, cf, "lstm"), _case(results, 2, cf, "lstm")
        if c1 and c2:
            v = c1["rc_fb_ms"] / c2["rc_fb_ms"]  # wall time: CPU time sums the threads
            rows.append((cf, f"{v:.2f}x", v >= 1.6))
    out.append(("lstm f+b: 2 threads >= 1.6x 1 thread (wall)", rows))
    for mode in ("fwd", "fb"):
        rows = []
        for th in ths:
            for cell in CELLS:
                c = _case(results, th, "large", cell)
                if c:
                    v = c[f"rc_{mode}{clock}_gflops"] / c[f"roof{clock}_gflops"]
                    rows.append((f"{cell} {th}T", f"{100 * v:.0f}%", v >= 0.85))
        out.append((f"large {'f+b' if mode == 'fb' else mode} >= 85% of the GEMM roofline",
                    rows))
    return out


def goals_table(results, clock=""):
    lines = ["| goal | measured | verdict |", "|---|---|---|"]
    for goal, rows in goals(results, clock):
        if not rows:
            lines.append(f"| {goal} | not measured | - |")
            continue
        met = sum(1 for r in rows if r[2])
        verdict = "**met**" if met == len(rows) else "**not met**" if not met else \
            f"**met {met} of {len(rows)}**"
        lines.append(f"| {goal} | {', '.join(f'{w}: {v}' for w, v, _ in rows)} | {verdict} |")
    return "\n".join(lines)


def roof_table(results):
    lines = ["| config | G | GEMM [T*B, I+H] x [I+H, G*H] | wall ms | GFLOP/s (wall) | "
             "GFLOP/s (CPU time) | threads |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for w in results:
        for c in w["cases"]:
            if "roof_ms" not in c or (c["config"], c["G"], w["threads"]) in seen:
                continue
            seen.add((c["config"], c["G"], w["threads"]))
            T, B, I, H, G = c["T"], c["B"], c["I"], c["H"], c["G"]
            lines.append(f"| {c['config']} | {G} | [{T * B}, {I + H}] x [{I + H}, "
                         f"{G * H}] | {fmt(c['roof_ms'], 2)} | {fmt(c['roof_gflops'])} | "
                         f"{fmt(c['roof_cpu_gflops'])} | {w['threads']} |")
    return "\n".join(lines)


def compile_table(ct):
    lines = ["| kernel (small config, H=128) | run | import s | compile_graph s | first call "
             "(JIT) s | start to first result s |", "|---|---|---|---|---|---|"]
    for k, row in ct.items():
        for label, v in row.items():
            if "error" in v:
                lines.append(f"| {k} | {label} | error | | | |")
                continue
            lines.append(f"| {k} | {label} | {v['import_s']:.2f} | {v['compile_graph_s']:.3f} "
                         f"| {v['first_call_s']:.2f} | {v['start_to_result_s']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    a = parse_args(argv)
    if a.worker is not None:
        worker(a)
        return
    t_all = time.time()
    load0 = os.getloadavg()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set: it chooses OpenBLAS's kernel / "
                  f"blocking and can halve its speed; run with `env -u {var}` for the numbers "
                  f"users get (the BLAS line below names the kernel that ran)")
    results = []
    for th in a.threads:
        fd, tmp = tempfile.mkstemp(prefix="bench_cpu_", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(th), "--worker-out",
               tmp, "--configs", *a.configs, "--cells", *a.cells, "--budget", str(a.budget)]
        if a.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < th:
                print(f"--pin: {th} threads need {th} cores, this process may use {cpus}",
                      file=sys.stderr)
                continue
            cmd += ["--worker-cpus", ",".join(str(c) for c in cpus[:th])]
        if a.repeat:
            cmd += ["--repeat", str(a.repeat)]
        for flag in ("quick", "no_jax", "no_profile"):
            if getattr(a, flag):
                cmd.append("--" + flag.replace("_", "-"))
        s = subprocess.run(cmd, env=thread_env(th))
        if s.returncode:
            print(f"worker threads={th} failed (rc {s.returncode})", file=sys.stderr)
            continue
        with open(tmp) as f:
            results.append(json.load(f))
        os.unlink(tmp)
    ct = None
    if not a.no_compile:
        print("compile / start time in fresh processes ...", flush=True)
        ct = compile_times(a.threads[0], (("fb", "lstm"),) if a.quick else
                           (("fb", "lstm"), ("fwd", "lstm")), a.quick)
    load1 = os.getloadavg()
    if not results:
        sys.exit(1)
    w0 = results[0]
    print()
    print(f"machine: {w0['machine']['cpu']} ({w0['machine']['llvm_cpu']}), "
          f"{w0['machine']['cores']} cores; load avg start {load0}, end {load1}")
    print("versions:", w0["machine"]["versions"])
    print("env:", w0["machine"]["env"])
    print("compiler sources (mtime UTC):", w0["machine"].get("source_mtime_utc"))
    for w in results:
        blas = w["blas"]
        if isinstance(blas, list):
            blas = "; ".join(f"{b['internal_api']} {b['version']} {b['architecture']} "
                             f"threads={b['num_threads']} ({os.path.basename(b['filepath'])})"
                             for b in blas)
        print(f"BLAS (threads={w['threads']}, cpus {w.get('cpus')}): {blas}")
        print(f"jax: {w['jax']}; load during worker: "
              f"{[round(x[0], 1) for x in w['load']]}")
    print()
    missing = [name for name, ok in (("torch", w0.get("torch")),
                                     ("jax", not w0["jax"].startswith("jax not installed")))
               if not ok]
    if missing:
        print(f"rnncomp columns only: {' and '.join(missing)} not installed (pip install "
              f"{' '.join(missing)} adds {'their' if len(missing) > 1 else 'its'} columns)")
    print("ratios: x S = S ms / rnncomp ms (> 1: rnncomp faster); nn = torch.nn.RNN/LSTM/GRU, "
          "eager = the cell in torch ops (Python loop), jax = jit(lax.scan) with [x, h] @ K "
          "in the body, jax-h = the same with X @ K_x hoisted before the scan")
    print("wall time (median):")
    print(table(results))
    print()
    print("process CPU time (median; robust to other load; with 2 threads it sums both threads):")
    print(table(results, "_cpu"))
    print()
    print(roof_table(results))
    print()
    print("goals (wall time):")
    print(goals_table(results))
    print()
    print("goals (process CPU time):")
    print(goals_table(results, "_cpu"))
    if ct:
        print()
        print(compile_table(ct))
    for w in results:
        if "profile_medium_lstm" in w:
            print(f"\nprofile: pieces of the generated medium LSTM kernels ({w['threads']} "
                  f"thread(s)), ms")
            print("   wall ms    CPU ms  piece")
            for k, (v, c) in w["profile_medium_lstm"].items():
                print(f"  {v:8.2f}  {c:8.2f}  {k}")
    print(f"\ntotal {time.time() - t_all:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"workers": results, "compile": ct, "load_start": load0,
                       "load_end": load1, "argv": sys.argv[1:]}, f, indent=1)


if __name__ == "__main__":
    main()
