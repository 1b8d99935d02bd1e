#!/usr/bin/env python3
"""BPTT memory and time, stored residuals vs recomputation (value_and_grad(checkpoint_every=k);
k=1 is recompute=True).

    python bench/bench_memory.py                       # LSTM B64 I256 H256, T=100 and 400
    python bench/bench_memory.py --T 400 --repeat 5 --cell gru --k 1 20 sqrt

Each measurement is a fresh process (so peak RSS belongs to one configuration): it compiles the
forward+gradient graph for the cpu backend, runs it once to warm up, records the resident set
size, runs it --calls more times and reports the peak RSS growth over the warm-up baseline (the
activation memory the backward pass keeps alive, plus temporaries) and the median call time.
These children run with RNNCOMP_MALLOC=off: with rnncomp's allocator policy the warm-up call's
freed buffers would stay mapped and hide the growth; the timing process keeps the policy.
The configurations (stored, then each k; "sqrt" is round(sqrt(T))) alternate within a round,
and the table gives the median peak over --repeat rounds. Time is measured apart, in ONE
process holding every configuration, one call of each in turn for --rounds rounds: the time
ratio is the median over rounds of (call time / the stored call's time in the same round), so
a load change on a shared machine does not land on one configuration only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
import rnncomp as rc
rc.set_num_threads(1) if hasattr(rc, "set_num_threads") else None
cell, T, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
k = None if sys.argv[3] == "stored" else int(sys.argv[3])
B, I, H = 64, 256, 256
make = {"lstm": lambda: rc.BasicLSTMCell(H), "gru": lambda: rc.GRUCell(H),
        "rnn": lambda: rc.BasicRNNCell(H)}[cell]
def fn(X, Y):
    out, _ = rc.dynamic_rnn(make(), X)
    return rc.mean(rc.square(out - Y))
m = rc.Model(fn, {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, H))})
p = m.init(0)
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, I)).astype(np.float32)
Y = rng.standard_normal((B, T, H)).astype(np.float32)
m.value_and_grad(p, backend="cpu", checkpoint_every=k, X=X, Y=Y)
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
def hwm_mb():
    # this process's own peak (ru_maxrss would carry the parent's peak over fork and exec)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
base = rss_mb()
times = []
for _ in range(calls):
    t0 = time.perf_counter()
    m.value_and_grad(p, backend="cpu", checkpoint_every=k, X=X, Y=Y)
    times.append(time.perf_counter() - t0)
peak = hwm_mb()
print(json.dumps({"peak_growth_mb": peak - base, "peak_mb": peak, "base_mb": base,
                  "ms": 1e3 * sorted(times)[len(times) // 2]}))
"""

# time: one process, every configuration compiled first, then one call of each in turn per
# round (a load change on a shared machine hits all of them alike); the ratio of a round is
# taken within that round
TIMER = r"""
import json, statistics, sys, time
import numpy as np
import rnncomp as rc
cell, T, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
ks = [None if v == "stored" else int(v) for v in sys.argv[3].split(",")]
B, I, H = 64, 256, 256
make = {"lstm": lambda: rc.BasicLSTMCell(H), "gru": lambda: rc.GRUCell(H),
        "rnn": lambda: rc.BasicRNNCell(H)}[cell]
def fn(X, Y):
    out, _ = rc.dynamic_rnn(make(), X)
    return rc.mean(rc.square(out - Y))
m = rc.Model(fn, {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, H))})
p = m.init(0)
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, I)).astype(np.float32)
Y = rng.standard_normal((B, T, H)).astype(np.float32)
for k in ks:
    m.value_and_grad(p, backend="cpu", checkpoint_every=k, X=X, Y=Y)
ms = {str(k): [] for k in ks}
for _ in range(rounds):
    for k in ks:
        t0 = time.perf_counter()
        m.value_and_grad(p, backend="cpu", checkpoint_every=k, X=X, Y=Y)
        ms[str(k)].append(1e3 * (time.perf_counter() - t0))
print(json.dumps(ms))
"""


def timed(cell: str, T: int, ks: list, rounds: int) -> dict:
    arg = ",".join("stored" if k is None else str(k) for k in ks)
    r = subprocess.run([sys.executable, "-c", TIMER, cell, str(T), arg, str(rounds)],
                       capture_output=True, text=True, cwd=ROOT, timeout=3600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def one(cell: str, T: int, k: int | None, calls: int) -> dict:
    arg = "stored" if k is None else str(k)
    r = subprocess.run([sys.executable, "-c", CHILD, cell, str(T), arg, str(calls)],
                       capture_output=True, text=True, cwd=ROOT, timeout=1800,
                       env={**os.environ, "OMP_NUM_THREADS": "1",
                            # peaks over a baseline: freed buffers must go back to the
                            # OS between calls (rnncomp.runtime.memory keeps them otherwise)
                            "RNNCOMP_MALLOC": "off"})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    ap.add_argument("--T", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--k", nargs="+", default=["1", "5", "10", "20", "sqrt"],
                    help="checkpoint_every values (ints or 'sqrt' for round(sqrt(T)))")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3, help="calls per memory measurement")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds for the time")
    ap.add_argument("--json")
    a = ap.parse_args()
    out = {}
    print(f"{a.cell} B64 I256 H256, fwd+bwd, cpu backend, 1 thread; peak: median of {a.repeat} "
          f"processes; time: median of {a.rounds} interleaved rounds")
    print(f"{'T':>5} {'checkpoint_every':>17} {'peak MB':>8} {'mem ratio':>10} {'ms':>9} "
          f"{'time ratio':>11}")
    for T in a.T:
        ks: list[int | None] = [None]
        for v in a.k:
            kv = max(1, round(T ** 0.5)) if v == "sqrt" else int(v)
            if kv not in ks:
                ks.append(kv)
        runs: dict = {kv: [] for kv in ks}
        for _ in range(a.repeat):  # memory: a fresh process per configuration
            for kv in ks:
                runs[kv].append(one(a.cell, T, kv, a.calls))
        mem = {kv: statistics.median(r["peak_growth_mb"] for r in rs) for kv, rs in runs.items()}
        tm = timed(a.cell, T, ks, a.rounds)
        st = tm["None"]
        for kv in ks:
            t = tm[str(kv)]
            ratio = statistics.median(x / y for x, y in zip(t, st))
            name = "stored" if kv is None else str(kv) + (" (sqrt T)" if kv == round(T ** 0.5)
                                                          else "")
            print(f"{T:>5} {name:>17} {mem[kv]:>8.0f} {mem[None] / max(mem[kv], 1e-9):>10.2f} "
                  f"{statistics.median(t):>9.1f} {ratio:>11.2f}")
        out[T] = {"memory": {str(kv): rs for kv, rs in runs.items()}, "ms": tm}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
