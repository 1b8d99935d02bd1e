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
import traceback
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


def _atomic_write(path: Path, text: str, replace: bool = True) -> None:
    """Write via a temp file and a rename. With replace=False an existing file is kept (first
    writer wins: processes racing on one cache entry do not change its mtime, which Numba's
    cache index is stamped with)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                os.replace(tmp, path)
            if os.path.exists(tmp):
                os.unlink(tmp)
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
        from .model import _convert  # the conversion policy of Model inputs (docs/dsl.md)

        ctx = Context()
        out = []
        for node, a in zip(self.graph.inputs, args):
            a = _convert(node.name, a, node)  # floats are never silently truncated to ints
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
        prepared = self.prepare(args)
        try:
            res = self.fn(*prepared)
        except Exception as e:
            if not _from_numba_cache(e):
                raise
            # Numba's index (.nbi) or object code (.nbc) for this kernel is corrupt
            _warn_corrupt(self.path, f"loading Numba's cached code failed "
                                     f"({type(e).__name__}: {e})")
            self.fn = _reload(self.path, self.source, self.fn).kernel
            res = self.fn(*prepared)
        # Numba boxes float32 scalars as Python floats: give every output its graph dtype
        return [np.asarray(r, dtype=o.dtype.np) for r, o in zip(res, self.graph.outputs)]

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
    mod = sys.modules.get(name)
    if mod is None:
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = None
        if old is None:
            _atomic_write(path, source, replace=False)
        elif old != source.encode():  # truncated, half-written or tampered with
            _warn_corrupt(path, "its source differs from the rendered graph")
            _clear_entry(path)
            _atomic_write(path, source)
        try:
            mod = _load_module(path, name)
        except Exception as e:  # e.g. a corrupt .pyc next to it
            _warn_corrupt(path, f"importing it failed ({type(e).__name__}: {e})")
            mod = _reload(path, source)
    timings["import"] = time.perf_counter() - t0
    # (the module may come from sys.modules, imported from another cache directory earlier in
    # this process: report the file it really came from)
    path = Path(getattr(mod, "__file__", None) or path)
    return CompiledGraph(graph, backend, opt, source, path, key, mod.kernel, timings)


def _warn_corrupt(path: Path, why: str) -> None:
    warnings.warn(f"rnncomp: kernel cache entry {path} is corrupt ({why}); clearing it and "
                  f"recompiling", RuntimeWarning, stacklevel=3)


def _clear_entry(path: Path, fn: Any = None) -> None:
    """Remove one cache entry: the source, its .pyc and Numba's index/object files."""
    name = path.stem
    dirs = {path.parent / "__pycache__"}
    cache_path = getattr(getattr(fn, "_cache", None), "_cache_path", None)  # Numba's locator
    if cache_path:
        dirs.add(Path(cache_path))
    files = [path] + [f for d in dirs if d.is_dir() for f in d.glob(f"{name}.*")]
    for f in files:
        try:
            f.unlink()
        except OSError:
            pass


def _reload(path: Path, source: str, fn: Any = None):
    """Clear a corrupt cache entry, rewrite its source and import it afresh (recompiles)."""
    _clear_entry(path, fn)
    sys.modules.pop(path.stem, None)
    importlib.invalidate_caches()
    _atomic_write(path, source)
    return _load_module(path, path.stem)


def _from_numba_cache(e: BaseException) -> bool:
    """Whether an exception was raised while Numba loaded or saved its on-disk cache."""
    tail = os.path.join("numba", "core", "caching.py")
    return any(f.filename.endswith(tail) for f in traceback.extract_tb(e.__traceback__))


__all__ = ["compile_graph", "CompiledGraph", "cache_dir", "Op"]
