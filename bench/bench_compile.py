#!/usr/bin/env python3
"""Compile time of rnncomp's CPU backend: cold (empty kernel cache), warm (cache on disk) and
per stage, each in a fresh process, medians of --repeat runs.

    python bench/bench_compile.py                  # every model, 3 repeats
    python bench/bench_compile.py --models lstm ln_lstm --repeat 5 --json out.json
    python bench/bench_compile.py --models lstm --resize 128,64 256,32   # a changed size

A run is one fresh Python process that imports rnncomp, builds the model, and computes the
first forward+gradient result (`Model.value_and_grad(backend="cpu")`) on B64 I256 H256 T100
(the static MNIST model: B150 28x28 H32, 3 layers). "cold" uses an empty RNNCOMP_CACHE_DIR,
"warm" the directory the cold run filled. Stages (from the compiled graph's `timings` and
Numba's dispatcher statistics): import, trace, optimize+autodiff, render, Numba (typing,
lowering and LLVM of the generated module, first call included), run.

Models: rnn, lstm, gru (BasicRNNCell, BasicLSTMCell, TF1 GRUCell), peephole (LSTMCell with
peepholes), ln_lstm (a user-written layer-norm LSTM: layer norm on the four gates and on c),
static_mnist (static_rnn over 28 steps of a 3-layer MultiRNNCell GRU/LSTM/LSTM, 32 units).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rnncomp as rc
t_import = time.perf_counter() - t0
which = sys.argv[1]
B, I, H, T = 64, 256, 256, 100
if len(sys.argv) > 2:  # --resize: another hidden size (and batch size) of the same model
    H, B = int(sys.argv[2]), int(sys.argv[3])

def ln(x):
    m = rc.mean(x, axis=-1, keepdims=True)
    v = rc.mean(rc.square(x - m), axis=-1, keepdims=True)
    return (x - m) / rc.sqrt(v + 1e-5)

def ln_cell(x, state):
    c, h = state
    z = rc.matmul(rc.concat([x, h], axis=1), rc.param("kernel", (I + H, 4 * H)))
    i, j, f, o = rc.split(z, 4, axis=1)
    i, j, f, o = ln(i), ln(j), ln(f), ln(o)
    c2 = rc.sigmoid(f + 1.0) * c + rc.sigmoid(i) * rc.tanh(j)
    h2 = rc.sigmoid(o) * rc.tanh(ln(c2))
    return h2, (c2, h2)

CELLS = {
    "rnn": lambda: rc.BasicRNNCell(H),
    "lstm": lambda: rc.BasicLSTMCell(H),
    "gru": lambda: rc.GRUCell(H),
    "peephole": lambda: rc.LSTMCell(H, use_peepholes=True),
    "ln_lstm": lambda: rc.FunctionCell(ln_cell, (H, H), H),
}
if which == "static_mnist":
    B, T, I, H = 150, 28, 28, 32
    def fn(X, Y):
        xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), (X.shape[0], I)) for t in range(T)]
        cell = rc.MultiRNNCell([rc.GRUCell(H), rc.BasicLSTMCell(H), rc.BasicLSTMCell(H)])
        outs, _ = rc.static_rnn(cell, xs)
        return rc.losses.sparse_softmax_cross_entropy(labels=Y, logits=rc.layers.dense(outs[-1], 10))
    specs = {"X": rc.Input((None, T, I)), "Y": rc.Input((None,), "i32")}
    rng = np.random.default_rng(0)
    inputs = {"X": rng.standard_normal((B, T, I)).astype(np.float32),
              "Y": rng.integers(0, 10, B).astype(np.int32)}
else:
    def fn(X, Y):
        out, _ = rc.dynamic_rnn(CELLS[which](), X)
        return rc.mean(rc.square(out - Y))
    specs = {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, H))}
    rng = np.random.default_rng(0)
    inputs = {"X": rng.standard_normal((B, T, I)).astype(np.float32),
              "Y": rng.standard_normal((B, T, H)).astype(np.float32)}
t1 = time.perf_counter()
m = rc.Model(fn, specs)
p = m.init(0)
t_trace = time.perf_counter() - t1
from rnncomp.runtime.grad import model_grad_graph
t2 = time.perf_counter()
g = model_grad_graph(m, preoptimize=True)
from rnncomp.runtime.compiler import compile_graph
cg = compile_graph(g, backend="cpu")
t_compile_graph = time.perf_counter() - t2
t3 = time.perf_counter()
m.value_and_grad(p, backend="cpu", **inputs)
t_first = time.perf_counter() - t3
t4 = time.perf_counter()
m.value_and_grad(p, backend="cpu", **inputs)
t_run = time.perf_counter() - t4
fn_ = getattr(cg, "fn", None)
hits = sum(fn_.stats.cache_hits.values()) if fn_ is not None else -1
print(json.dumps({"import": t_import, "trace": t_trace, "autodiff+optimize+render+import":
                  t_compile_graph, "optimize": cg.timings.get("optimize", 0.0),
                  "render": cg.timings.get("render", 0.0), "first_call(numba)": t_first,
                  "run": t_run, "total": time.perf_counter() - t0, "cache_hits": hits}))
"""

MODELS = ["rnn", "lstm", "gru", "peephole", "ln_lstm", "static_mnist"]


def one(model: str, cache: str, size: tuple[int, int] | None = None) -> dict:
    env = {**os.environ, "RNNCOMP_CACHE_DIR": cache}
    extra = [str(v) for v in size] if size else []
    r = subprocess.run([sys.executable, "-c", CHILD, model, *extra], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=1800)
    if r.returncode:
        raise RuntimeError(f"{model}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write all runs to this file")
    ap.add_argument("--resize", nargs="+", metavar="H,B", default=None,
                    help="instead: compile the model at these hidden,batch sizes one after the "
                         "other, each in a fresh process, all sharing one cache directory (the "
                         "first is cold; the others show what a changed size costs)")
    a = ap.parse_args()
    if a.resize:
        resize(a)
        return
    results = {}
    print(f"{'model':<13} {'cold total':>10} {'cold numba':>10} {'warm total':>10} "
          f"{'warm import':>11} {'run':>7}   (seconds, medians of {a.repeat})")
    for model in a.models:
        cold, warm = [], []
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as d:
                cold.append(one(model, d))
                warm.append(one(model, d))
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        results[model] = {"cold": cold, "warm": warm}
        print(f"{model:<13} {med(cold, 'total'):>10.2f} {med(cold, 'first_call(numba)'):>10.2f} "
              f"{med(warm, 'total'):>10.2f} {med(warm, 'import'):>11.2f} {med(warm, 'run'):>7.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


def resize(a) -> None:
    sizes = [tuple(int(v) for v in s.split(",")) for s in a.resize]
    print(f"{'model':<13} " + " ".join(f"{f'H{h} B{b}':>12}" for h, b in sizes) +
          f"   (total seconds of each fresh process, one cache directory, medians of {a.repeat})")
    results = {}
    for model in a.models:
        runs: list[list[dict]] = [[] for _ in sizes]
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as d:
                for k, s in enumerate(sizes):
                    runs[k].append(one(model, d, s))
        results[model] = {f"H{h},B{b}": r for (h, b), r in zip(sizes, runs)}
        print(f"{model:<13} " + " ".join(f"{statistics.median(r['total'] for r in rs):>12.2f}"
                                         for rs in runs))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
