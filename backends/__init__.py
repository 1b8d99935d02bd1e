"""Backends: one folder each, installed as rnncomp.backends.<name>.

The contract (docs/how_it_works.md): a backend package exposes

    compile_optimized(graph, opt, *, timings, cache=None, always_compile=None) -> CompiledGraph

which renders the optimized graph, compiles it through rnncomp.runtime.kernel_cache and returns
a subclass of rnncomp.runtime.compiler.CompiledGraph; it is registered by one line in
rnncomp.runtime.compiler.BACKENDS. Shared scalar rendering lives in render.py. Backends may
import rnncomp.runtime and below, and Numba; nothing in rnncomp imports a backend by name in code
(only through BACKENDS, on first use).
"""
