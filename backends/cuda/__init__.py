"""The numba-cuda GPU backend: fused kernels rendered from the shared template table, cuBLAS
GEMMs, scans captured once as CUDA graphs, and persistent kernels for recurrent loops that fit.

Entry point: `compile_optimized` (compile.py). codegen.py renders the kernels, runtime.py holds
the launch, GEMM and graph-capture helpers, compat.py the NumPy/driver shims, kernels_lstm.py
and persistent.py the persistent LSTM path.
"""


def compile_optimized(graph, opt, *, timings, cache=None, always_compile=None):
    from .compile import compile_optimized as impl  # imports numba.cuda: only when compiling

    return impl(graph, opt, timings=timings, cache=cache, always_compile=always_compile)
