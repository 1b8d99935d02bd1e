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

backend="auto" (the default of Model.__call__/run, value_and_grad, Trainer, the CLI's run and
the examples) means: the compiled CPU backend; the reference interpreter only where compiling
is impossible (Numba missing, or the compiler raised), after a one-line RuntimeWarning naming
why. RNNCOMP_DEFAULT_BACKEND=interp|cpu|cuda changes what "auto" picks (the test suite sets
interp for tests that do not name a backend). An explicit backend name is never substituted.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
import warnings
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


AUTO = "auto"
DEFAULT_BACKEND_ENV = "RNNCOMP_DEFAULT_BACKEND"


def default_backend() -> str:
    """What backend="auto" compiles for: $RNNCOMP_DEFAULT_BACKEND if set (interp, cpu or cuda),
    else "cpu". CUDA is used only when asked for by name."""
    env = os.environ.get(DEFAULT_BACKEND_ENV, "").strip()
    if not env:
        return "cpu"
    if env != "interp" and env not in BACKENDS:
        raise ValueError(f"{DEFAULT_BACKEND_ENV}: expected 'interp' or one of "
                         f"{', '.join(map(repr, BACKENDS))}, received {env!r}")
    return env


def check_backend_name(backend: str) -> None:
    """Refuse a misspelt backend before any work (auto, interp, or a name in BACKENDS)."""
    if backend not in (AUTO, "interp") and backend not in BACKENDS:
        names = [repr(b) for b in (AUTO, "interp", *BACKENDS)]
        raise ValueError(f"backend: expected {', '.join(names[:-1])} or {names[-1]}, received "
                         f"{backend!r}")


def unavailable_reason(backend: str) -> str | None:
    """Why `backend` cannot compile on this installation, or None."""
    need = {"cpu": "numba", "cuda": "numba.cuda"}.get(backend)
    try:
        if need is not None and importlib.util.find_spec(need) is None:
            return f"{need.split('.')[0] if backend == 'cpu' else 'numba-cuda'} is not installed"
    except (ImportError, ValueError):  # numba.cuda probed without numba itself
        return "numba-cuda is not installed"
    return None


def compile_auto(graph: Graph, cache: dict, key: Any = None) -> "CompiledGraph | None":
    """backend="auto": `graph` compiled for default_backend(), or None meaning "run it on the
    interpreter" (the default is interp, or compiling is impossible: then one RuntimeWarning
    says why). The outcome, a failure included, is kept in `cache[key]`, so a model warns once."""
    name = default_backend()
    if name == "interp":
        return None
    key = (AUTO, name, id(graph)) if key is None else key
    if key in cache:
        return cache[key]
    reason = unavailable_reason(name)
    compiled = None
    if reason is None:
        try:
            compiled = compile_graph(graph, backend=name)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the interpreter runs it
            msg = str(e).strip().splitlines()
            reason = f"compiling for {name!r} failed ({type(e).__name__}: " \
                     f"{msg[0][:200] if msg else ''})"
    if reason is not None:
        warnings.warn(f"backend='auto': {reason}; running on the reference interpreter "
                      f"(slow; pass backend='interp' to choose it)", RuntimeWarning, stacklevel=3)
    cache[key] = compiled
    return compiled


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


__all__ = ["compile_graph", "compile_auto", "default_backend", "check_backend_name",
           "CompiledGraph", "BACKENDS", "AUTO", "backend_module", "cache_dir", "Op"]
