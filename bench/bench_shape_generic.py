#!/usr/bin/env python3
"""Run time of shape-generic CPU kernels (sizes read from the kernel's `sz` argument, the
default) against the same kernels with every size rendered as a literal (what the code
generator emitted before; `codegen.render(..., literal_sizes=True)`), in one process, the two
timed interleaved, medians of --repeat calls. Models as in bench_cpu.py (time-major X[T, B, I],
fwd = the outputs, f+b = loss sum(out * R) and its gradient w.r.t. every parameter and X).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE taskset -c 0 python bench/bench_shape_generic.py
    python bench/bench_shape_generic.py --configs medium --cells lstm --repeat 15

Prints per case: literal ms, generic ms, generic / literal (> 1: the generic kernel is slower),
for wall time and for process CPU time (the load-robust one on a shared machine: one thread).
On a loaded machine the small B=1 cases are bimodal: some module instances run 2-3x slower
than others for the same code, literal or generic alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

# one thread (set before numpy starts its BLAS): with two BLAS threads on one pinned core the
# per-step GEMMs of a B=1 model stall at random and the times become bimodal
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import CONFIGS, rc_grad_compiled, rc_models  # noqa: E402


def literal_twin(cg):
    """The compiled graph `cg` again, rendered with literal sizes (its own cache entry)."""
    from rnncomp.backends.cpu import codegen, driver
    from rnncomp.runtime import kernel_cache

    src, _ = codegen.render(cg.optimized, parallel="prange(" in cg.source, literal_sizes=True)
    key = kernel_cache.key("cpu", src, code_files=driver.CODE_FILES)
    mod, path = kernel_cache.load(src, "rnncomp_k", key)
    opt = SimpleNamespace(graph=cg.optimized, stages=cg.stages)
    return driver.CompiledCpu(cg.graph, opt, src, path, key, mod.kernel, {}, ())


def timed(fn, args) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["small", "medium"], choices=list(CONFIGS))
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    ap.add_argument("--repeat", type=int, default=11)
    a = ap.parse_args()
    from rnncomp.runtime.compiler import compile_graph

    print(f"{'case':<22} {'literal ms':>10} {'generic ms':>10} {'gen/lit':>8}   {'cpu lit':>8} "
          f"{'cpu gen':>8} {'gen/lit':>8}   (wall and process CPU time, medians of {a.repeat}, "
          f"interleaved)")
    for cfg in a.configs:
        B, I, H, T = CONFIGS[cfg]
        for cell in a.cells:
            mf, ml = rc_models(cell, I, H)
            p = mf.init(0)
            pl = ml.init(0)
            rng = np.random.default_rng(0)
            X = rng.standard_normal((T, B, I)).astype(np.float32)
            R = rng.standard_normal((T, B, H)).astype(np.float32)
            gen_f = compile_graph(mf.graph, "cpu")
            gen_g, _ = rc_grad_compiled(ml)
            cases = [("fwd", gen_f, mf.arguments(p, {"X": X})),
                     ("f+b", gen_g, ml.arguments(pl, {"X": X, "R": R}))]
            for what, gen, args in cases:
                lit = literal_twin(gen)
                assert lit.source != gen.source
                for x, y in zip(lit(*args), gen(*args)):  # the first calls compile
                    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
                ts: dict[str, list[tuple[float, float]]] = {"lit": [], "gen": []}
                for _ in range(a.repeat):
                    ts["lit"].append(timed(lit, args))
                    ts["gen"].append(timed(gen, args))
                ml_, mg = (statistics.median(t[0] for t in ts[k]) * 1e3 for k in ("lit", "gen"))
                nl, ng = (statistics.median(t[1] for t in ts[k]) * 1e3 for k in ("lit", "gen"))
                print(f"{f'{cfg} {cell} {what}':<22} {ml_:>10.2f} {mg:>10.2f} {mg / ml_:>8.3f}   "
                      f"{nl:>8.2f} {ng:>8.2f} {ng / nl:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
