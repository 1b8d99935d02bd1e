"""The Numba CPU backend: optimized graph -> one generated module (a kernel plus one njit
function per top-level time loop) in the kernel cache; fused elementwise loops, BLAS GEMMs.

Entry point: `compile_optimized` (driver.py). codegen.py renders, fastmath.py and runtime.py are
the helpers the generated code calls.
"""


def compile_optimized(graph, opt, *, timings, cache=None, always_compile=None):
    from .driver import compile_optimized as impl  # imports Numba: only when compiling

    return impl(graph, opt, timings=timings, cache=cache, always_compile=always_compile)
