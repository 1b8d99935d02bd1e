"""The on-disk kernel cache that every backend uses: content-hashed source files, written
atomically, imported as modules, with corrupt entries detected and recompiled.

Numba cannot disk-cache functions exec'd from a string, so a backend's rendered source is written
to a file named by the hash of everything that decides the compiled code (`key`), imported as a
module, and its functions are njit(cache=True) / cuda.jit: a second process finds both the source
file and Numba's compiled object code and starts without compiling.

A key covers: the rnncomp, numba, llvmlite and numpy versions, the Python version, the backend's
name, the rendered source, and the contents of every source file whose code ends up inside a
kernel (`code_files`: the backend's helper modules and the op template table), so kernels
compiled with old helper code are never reused after those files change.

Debug switches: RNNCOMP_CACHE_DIR (cache directory, default ~/.cache/rnncomp) and
RNNCOMP_ALWAYS_COMPILE (ignore existing entries: a fresh module name, recompiles).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..version import __version__


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


def always_compile(flag: bool | None = None) -> bool:
    """The keyword argument if given, else RNNCOMP_ALWAYS_COMPILE."""
    if flag is None:
        return os.environ.get("RNNCOMP_ALWAYS_COMPILE", "") not in ("", "0")
    return bool(flag)


@functools.lru_cache(maxsize=None)
def versions() -> str:
    """The versions that decide compiled code, read from package metadata (importing numba here
    would cost every `import rnncomp` half a second)."""

    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            mod = sys.modules.get(dist)
            return getattr(mod, "__version__", "absent")

    return (f"rnncomp={__version__} numba={v('numba')} llvmlite={v('llvmlite')} "
            f"numpy={v('numpy')} py={sys.version_info[:3]}")


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """One hash of the contents of these files (memoized per mtime and size)."""
    h = hashlib.sha256()
    for p in sorted(str(Path(p).resolve()) for p in paths):
        st = os.stat(p)
        h.update(p.encode() + b"\0" + _file_digest(p, st.st_mtime_ns, st.st_size).encode())
    return h.hexdigest()


def key(backend: str, *texts: str, code_files: Iterable[str | os.PathLike] = ()) -> str:
    """The cache key of one kernel module (24 hex digits)."""
    h = hashlib.sha256()
    for part in (versions(), backend, files_digest(code_files), *texts):
        h.update(part.encode())
        h.update(b"\n\0")
    return h.hexdigest()[:24]


def atomic_write(path: Path, text: str, replace: bool = True) -> None:
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


def import_file(path: Path, name: str) -> ModuleType:
    """Import the module at `path` under `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def warn_corrupt(path: Path, why: str) -> None:
    warnings.warn(f"rnncomp: kernel cache entry {path} is corrupt ({why}); clearing it and "
                  f"recompiling", RuntimeWarning, stacklevel=3)


def clear_entry(path: Path, fn: Any = None) -> None:
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


def reload(path: Path, source: str, fn: Any = None) -> ModuleType:
    """Clear a corrupt cache entry, rewrite its source and import it afresh (recompiles)."""
    clear_entry(path, fn)
    sys.modules.pop(path.stem, None)
    importlib.invalidate_caches()
    atomic_write(path, source)
    return import_file(path, path.stem)


def from_numba_cache(e: BaseException) -> bool:
    """Whether an exception was raised while Numba loaded or saved its on-disk cache."""
    tail = os.path.join("numba", "core", "caching.py")
    return any(f.filename.endswith(tail) for f in traceback.extract_tb(e.__traceback__))


def load(source: str, prefix: str, key: str, *, cache: str | os.PathLike | None = None,
         always: bool | None = None) -> tuple[ModuleType, Path]:
    """The module for `source`, from the cache when an entry for `key` exists (its content is
    checked against `source`), else written and imported. Returns (module, the file it came
    from)."""
    with _LOCK:  # threads calling a model for the first time at once import one module once
        return _load(source, prefix, key, cache, always)


_LOCK = threading.RLock()


def _load(source: str, prefix: str, key: str, cache, always) -> tuple[ModuleType, Path]:
    name = f"{prefix}_{key}"
    if always_compile(always):
        name += f"_{os.getpid()}_{time.time_ns()}"
    path = cache_dir(cache) / f"{name}.py"
    mod = sys.modules.get(name)
    if mod is None:
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = None
        if old is None:
            atomic_write(path, source, replace=False)
        elif old != source.encode():  # truncated, half-written or tampered with
            warn_corrupt(path, "its source differs from the rendered graph")
            clear_entry(path)
            atomic_write(path, source)
        try:
            mod = import_file(path, name)
        except Exception as e:  # e.g. a corrupt .pyc next to it
            warn_corrupt(path, f"importing it failed ({type(e).__name__}: {e})")
            mod = reload(path, source)
    # (the module may come from sys.modules, imported from another cache directory earlier in
    # this process: report the file it really came from)
    return mod, Path(getattr(mod, "__file__", None) or path)


__all__ = ["cache_dir", "always_compile", "versions", "files_digest", "key", "atomic_write",
           "import_file", "warn_corrupt", "clear_entry", "reload", "from_numba_cache", "load"]
