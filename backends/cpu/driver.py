"""The CPU backend's driver: render the optimized graph into Numba source (codegen.py), compile
it through the kernel cache, and run it.

The generated module imports this folder's helper modules (fastmath.py: vectorizable exp, tanh,
sigmoid; runtime.py: GEMM and reduction helpers), so their contents are part of the cache key.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numba
import numba.np.ufunc.parallel as _numba_parallel
import numpy as np

from rnncomp.ir import Graph
from rnncomp.ir.ops import take_index_error
from rnncomp.runtime import kernel_cache, threads
from rnncomp.runtime.compiler import CompiledGraph
from rnncomp.transforms.passes import OptimizeResult, fuse_rows, run_stage

from . import codegen

HERE = Path(__file__).parent
# every source file whose code runs inside a CPU kernel (the templates are in the rendered source)
CODE_FILES = (HERE / "fastmath.py", HERE / "runtime.py")


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise
    (OMP_WAIT_POLICY set). Numba's pool (the OpenMP layer) and OpenBLAS's threads take turns
    within every time step: a GEMM, then the cell's parallel loop, then the next GEMM. With
    libgomp's default the pool's idle threads spin on the cores the GEMM's threads need:
    measured on a 2-CPU machine, a medium LSTM forward with 2 threads took 920 ms instead of
    86 ms with one (91 ms with this setting). libgomp reads the variable once, when it is first
    loaded: here, just before Numba's pool starts, unless another library (PyTorch) loaded
    libgomp earlier in the process; then only the environment of the process start counts."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def sync_threads(n: int, launch: bool = True) -> None:
    """Numba's thread pool follows rnncomp.set_num_threads (its setting is per calling thread,
    so each parallel kernel call checks; the pool cannot grow past NUMBA_NUM_THREADS, fixed
    when it starts). launch=False: only if the pool already runs (starting it costs threads)."""
    if not launch and not _numba_parallel._is_initialized:
        return
    if not _numba_parallel._is_initialized:
        quiet_openmp()
    want = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


class CompiledCpu(CompiledGraph):
    """A graph compiled for the CPU backend; `fn` is the module's njit `kernel`, called with the
    inputs and `sizes` (the graph's concrete sizes: the kernel is shape-generic, see
    codegen.Emitter.size)."""

    def __init__(self, graph: Graph, opt: OptimizeResult, source: str, path: Path, key: str, fn,
                 timings: dict[str, float], sizes=()):
        super().__init__(graph, "cpu", opt, source, path, key, timings)
        self.fn = fn
        self.sizes = np.array(sizes, dtype=np.int64)
        self.sizes.flags.writeable = False
        # only kernels with parallel loops need Numba's thread pool (syncing it launches it)
        self.parallel = "prange" in source

    def __call__(self, *args) -> list[np.ndarray]:
        prepared = self.prepare(args)
        n = threads.ensure_applied()  # BLAS pools (a no-op unless the setting changed)
        if self.parallel:
            sync_threads(n)
        try:
            res = self.fn(*prepared, self.sizes)
        except IndexError as e:
            if e.args[:1] != ("rnncomp take",):
                raise
            raise take_index_error(e.args[1], e.args[2]) from None
        except Exception as e:
            if not kernel_cache.from_numba_cache(e):
                raise
            # Numba's index (.nbi) or object code (.nbc) for this kernel is corrupt
            kernel_cache.warn_corrupt(self.path, f"loading Numba's cached code failed "
                                                 f"({type(e).__name__}: {e})")
            self.fn = kernel_cache.reload(self.path, self.source, self.fn).kernel
            res = self.fn(*prepared, self.sizes)
        # Numba boxes float32 scalars as Python floats: give every output its graph dtype
        return [np.asarray(r, dtype=o.dtype.np) for r, o in zip(res, self.graph.outputs)]


def compile_optimized(graph: Graph, opt: OptimizeResult, *, timings: dict[str, float],
                      cache=None, always_compile: bool | None = None) -> CompiledCpu:
    if "fuse_elementwise" in opt.stages:  # (not with fuse=False)
        # reductions over the last axis join the elementwise groups around them (the CUDA
        # backend, which shares the pipeline, renders plain elementwise groups only)
        run_stage(opt, "fuse_rows", fuse_rows)
    t0 = time.perf_counter()
    # with more than one thread the fused loops run in parallel over their rows; the choice is
    # part of the source (and so of the cache key), made when the kernel is compiled
    source, sizes = codegen.render(opt.graph, parallel=threads.get_num_threads() > 1)
    timings["render"] = time.perf_counter() - t0
    # the source decides the compiled code; the sizes are run-time arguments: graphs that
    # differ only in their sizes share one kernel (one Numba compile)
    key = kernel_cache.key("cpu", source, code_files=CODE_FILES)
    t0 = time.perf_counter()
    mod, path = kernel_cache.load(source, "rnncomp_k", key, cache=cache, always=always_compile)
    timings["import"] = time.perf_counter() - t0
    return CompiledCpu(graph, opt, source, path, key, mod.kernel, timings, sizes)
