"""The compile driver: optimize a graph, then hand it to a backend chosen by name.

A backend is one folder, `rnncomp.backends.<name>`, whose package exposes one entry point,

    compile_optimized(graph, opt, *, timings, cache=None, always_compile=None) -> CompiledGraph

that renders the optimized graph (`opt.graph`), compiles it through the kernel cache
(rnncomp.runtime.kernel_cache) and returns a callable CompiledGraph. Adding a backend is that
folder and one line in BACKENDS. Backends are imported by name on first use: nothing here
imports Numba.

Debug switches (each also a keyword argument of compile_graph):
  RNNCOMP_CACHE_DIR       cache directory (default ~/.cache/rnncomp)
  RNNCOMP_ALWAYS_COMPILE  ignore existing cache entries (fresh module name, recompiles)
  RNNCOMP_PRINT_AFTER     print the IR after these passes (comma separated, or "all")
  RNNCOMP_VERIFY          verify the graph after every pass
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.context import Context, InputError
from ..ir.graph import Graph, Op
from ..transforms.passes import OptimizeResult, optimize
from .inputs import convert_input
from .kernel_cache import cache_dir

# backend name -> the package that implements it (its compile_optimized is the entry point)
BACKENDS: dict[str, str] = {
    "cpu": "rnncomp.backends.cpu",
    "cuda": "rnncomp.backends.cuda",
}


class CompiledGraph:
    """A graph compiled for one backend. Call with positional arrays for graph.inputs.

    Attributes: `graph` (the input graph), `backend`, `optimized` (after the pipeline), `stages`,
    `source` (the generated code), `path` (the file it was imported from), `key` (cache key),
    `timings`. Backends subclass it and implement `__call__`.
    """

    def __init__(self, graph: Graph, backend: str, opt: OptimizeResult, source: str, path: Path,
                 key: str, timings: dict[str, float]):
        self.graph = graph
        self.backend = backend
        self.optimized = opt.graph
        self.stages = opt.stages
        self.source = source
        self.path = path
        self.key = key
        self.timings = timings

    def prepare(self, args) -> list[Any]:
        """Check and convert positional arguments (the Model input policy, rnncomp.runtime.inputs):
        C-contiguous arrays of the inputs' dtypes, 0-d inputs as scalars."""
        if len(args) != len(self.graph.inputs):
            raise InputError(f"compiled graph takes {len(self.graph.inputs)} inputs, received "
                             f"{len(args)}")
        ctx = Context()
        out = []
        for node, a in zip(self.graph.inputs, args):
            a = convert_input(node.name, a, node)  # floats are never silently truncated to ints
            ctx.bind(node, a, f"input {node.name!r}")
            if node.shape == ():
                out.append(a[()])
            else:
                out.append(np.ascontiguousarray(a))
        empty = [d for d, v in ctx.dims.items() if v == 0]
        if empty:
            raise InputError(f"compiled graph: dimension {empty[0]} is 0 (bound by the inputs "
                             f"{[n.name for n in self.graph.inputs if empty[0] in n.shape]}); "
                             f"every symbolic dimension must be >= 1")
        return out

    def __call__(self, *args) -> list[np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.path}>"


def backend_module(backend: str):
    """The package implementing `backend` (imported on first use)."""
    if backend not in BACKENDS:
        names = [repr(b) for b in BACKENDS]
        expected = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise ValueError(f"backend: expected {expected}, received {backend!r}")
    return importlib.import_module(BACKENDS[backend])


def compile_graph(graph: Graph, backend: str = "cpu", *, cache: str | os.PathLike | None = None,
                  always_compile: bool | None = None, print_after=None,
                  verify: bool | None = None, fuse: bool = True) -> CompiledGraph:
    """Optimize and compile `graph` for `backend` (a name in BACKENDS: "cpu", "cuda")."""
    impl = backend_module(backend)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    opt = optimize(graph, print_after=print_after, verify=verify, fuse=fuse)
    timings["optimize"] = time.perf_counter() - t0
    return impl.compile_optimized(graph, opt, timings=timings, cache=cache,
                                  always_compile=always_compile)


__all__ = ["compile_graph", "CompiledGraph", "BACKENDS", "backend_module", "cache_dir", "Op"]
