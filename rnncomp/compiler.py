"""Compile a graph for a backend: optimize, render source, cache on disk, import, run.

Numba cannot disk-cache functions exec'd from a string, so the rendered source is written to a
content-hashed file in the cache directory (atomically: temp file, then rename), imported as a
module, and its function is njit(cache=True): a second process finds both the source file and
Numba's compiled object code and starts without compiling.

Debug switches (each also a keyword argument of compile_graph):
  RNNCOMP_CACHE_DIR       cache directory (default ~/.cache/rnncomp)
  RNNCOMP_ALWAYS_COMPILE  ignore existing cache entries (fresh module name, recompiles)
  RNNCOMP_PRINT_AFTER     print the IR after these passes (comma separated, or "all")
  RNNCOMP_VERIFY          verify the graph after every pass
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .interp import Context, InputError
from .ir import Graph, Op
from .passes import OptimizeResult, optimize
from .printer import pformat


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The kernel cache directory; falls back to a temporary one (with a warning) when the
    configured directory is not writable."""
    p = Path(path or os.environ.get("RNNCOMP_CACHE_DIR") or Path.home() / ".cache" / "rnncomp")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return p
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / f"rnncomp-cache-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        warnings.warn(f"rnncomp: cache directory {p} is not writable ({e.strerror}); using "
                      f"{fallback}", RuntimeWarning, stacklevel=3)
        return fallback


def _versions() -> str:
    import llvmlite
    import numba

    return f"rnncomp={__version__} numba={numba.__version__} llvmlite={llvmlite.__version__} " \
           f"numpy={np.__version__} py={sys.version_info[:3]}"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


class CompiledGraph:
    """A graph compiled for one backend. Call with positional arrays for graph.inputs.

    Attributes: `graph` (the input graph), `optimized` (after the pipeline), `source` (the
    generated Python), `path` (the file it was imported from), `key` (cache key), `timings`.
    """

    def __init__(self, graph: Graph, backend: str, opt: OptimizeResult, source: str, path: Path,
                 key: str, fn, timings: dict[str, float]):
        self.graph = graph
        self.backend = backend
        self.optimized = opt.graph
        self.stages = opt.stages
        self.source = source
        self.path = path
        self.key = key
        self.fn = fn
        self.timings = timings

    def prepare(self, args) -> list[Any]:
        if len(args) != len(self.graph.inputs):
            raise InputError(f"compiled graph takes {len(self.graph.inputs)} inputs, received "
                             f"{len(args)}")
        ctx = Context()
        out = []
        for node, a in zip(self.graph.inputs, args):
            a = np.asarray(a)
            if a.dtype != node.dtype.np:
                a = a.astype(node.dtype.np)
            ctx.bind(node, a, f"input {node.name!r}")
            if node.shape == ():
                out.append(a[()])
            else:
                out.append(np.ascontiguousarray(a))
        return out

    def __call__(self, *args) -> list[np.ndarray]:
        res = self.fn(*self.prepare(args))
        return [np.asarray(r) for r in res]

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.backend} {self.path}>"


def compile_graph(graph: Graph, backend: str = "cpu", *, cache: str | os.PathLike | None = None,
                  always_compile: bool | None = None, print_after=None,
                  verify: bool | None = None, fuse: bool = True) -> CompiledGraph:
    """Optimize and compile `graph` for `backend` ("cpu"; "cuda" where available)."""
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend: expected 'cpu' or 'cuda', received {backend!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    opt = optimize(graph, print_after=print_after, verify=verify, fuse=fuse)
    timings["optimize"] = time.perf_counter() - t0
    if always_compile is None:
        always_compile = os.environ.get("RNNCOMP_ALWAYS_COMPILE", "") not in ("", "0")
    if backend == "cuda":
        from .backends.cuda import compile as cuda_compile  # lazily: optional extra

        return cuda_compile.compile_optimized(graph, opt, timings)
    from .backends.cpu import codegen

    t0 = time.perf_counter()
    source = codegen.render(opt.graph)
    timings["render"] = time.perf_counter() - t0
    key = hashlib.sha256((_versions() + "\n" + backend + "\n" + pformat(opt.graph) + "\n" +
                          source).encode()).hexdigest()[:24]
    d = cache_dir(cache)
    name = f"rnncomp_k_{key}"
    if always_compile:
        name += f"_{os.getpid()}_{time.time_ns()}"
    path = d / f"{name}.py"
    t0 = time.perf_counter()
    if not path.exists() or path.read_text() != source:
        _atomic_write(path, source)
    mod = sys.modules.get(name) or _load_module(path, name)
    timings["import"] = time.perf_counter() - t0
    return CompiledGraph(graph, backend, opt, source, path, key, mod.kernel, timings)


__all__ = ["compile_graph", "CompiledGraph", "cache_dir", "Op"]
