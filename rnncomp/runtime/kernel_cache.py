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
import importlib.metadata
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..version import __version__


def resolve_cache_path(path: str | os.PathLike | None = None) -> Path:
    """The configured cache directory (argument, else RNNCOMP_CACHE_DIR, else
    ~/.cache/rnncomp), with `~` expanded; nothing is created. The compiler and the CLI both use
    this one function."""
    raw = path or os.environ.get("RNNCOMP_CACHE_DIR") or Path.home() / ".cache" / "rnncomp"
    return Path(os.path.expanduser(os.fspath(raw)))


def _unsafe(p: Path) -> str | None:
    """Why a cache directory must not be trusted, or None: it must be a real directory owned by
    this user, writable by nobody else (code is imported from it)."""
    st = p.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory" + (" (a symbolic link)" if p.is_symlink() else "")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


_FALLBACK: Path | None = None


def _fallback(p: Path, why: str) -> Path:
    """A private temporary cache directory for this process (mkdtemp: mode 0700, a name nobody
    can predict), with one warning."""
    global _FALLBACK
    if _FALLBACK is None or not _FALLBACK.is_dir():
        _FALLBACK = Path(tempfile.mkdtemp(prefix="rnncomp-cache-"))
    warnings.warn(f"rnncomp: not using the kernel cache directory {p}: {why}; compiling into "
                  f"the private temporary directory {_FALLBACK} (kernels are not kept for the "
                  f"next process)", RuntimeWarning, stacklevel=4)
    return _FALLBACK


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The kernel cache directory, created private (0700). A directory that is not writable, not
    owned by this user, or writable by group or others is refused with a warning, and a private
    temporary directory is used instead."""
    p = resolve_cache_path(path)
    try:
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = _unsafe(p)
        if why:
            return _fallback(p, why)
        probe = p / f".probe-{os.getpid()}-{threading.get_ident()}"
        probe.write_text("")
        probe.unlink()
        return p
    except OSError as e:
        return _fallback(p, f"it is not writable ({e.strerror or e})")


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


def import_source(path: Path, name: str, source: str) -> ModuleType:
    """Execute `source` (already checked against the file at `path`) as the module `name`, with
    `path` as its file (tracebacks, pdb and Numba's on-disk cache locate it there). No `.pyc`
    is read or written: only the rendered source runs. The module is published in sys.modules
    only once it has finished executing."""
    code = compile(source, str(path), "exec", dont_inherit=True)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    exec(code, mod.__dict__)
    sys.modules[name] = mod
    return mod


def import_file(path: Path, name: str) -> ModuleType:
    """Import the cache entry at `path` as the module `name` (its current contents)."""
    return import_source(path, name, path.read_text())


def _in_memory(source: str, name: str, why: str) -> ModuleType:
    """Compile without a cache entry (the disk is full or the entry cannot be written)."""
    warnings.warn(f"rnncomp: cannot write the kernel cache entry {name} ({why}); compiling in "
                  f"memory (not cached)", RuntimeWarning, stacklevel=4)
    source = source.replace("cache=True", "cache=False")
    mod = types.ModuleType(name)
    exec(compile(source, f"<rnncomp kernel {name}>", "exec", dont_inherit=True), mod.__dict__)
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
    atomic_write(path, source)
    return import_source(path, path.stem, source)


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
    mod = sys.modules.get(name)
    if mod is not None:
        # (imported from another cache directory earlier in this process: report that file)
        return mod, Path(getattr(mod, "__file__", None) or resolve_cache_path(cache) / name)
    path = cache_dir(cache) / f"{name}.py"
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as e:  # e.g. a directory in the entry's place
        warn_corrupt(path, f"it cannot be read ({type(e).__name__}: {e.strerror or e})")
        _remove(path)
        old = None
    try:
        if old is None:
            atomic_write(path, source, replace=False)
        elif old != source.encode():  # truncated, half-written or tampered with
            warn_corrupt(path, "its source differs from the rendered graph")
            clear_entry(path)
            atomic_write(path, source)
    except OSError as e:  # disk full, read-only file system
        return _in_memory(source, name, f"{type(e).__name__}: {e.strerror or e}"), path
    try:
        mod = import_source(path, name, source)
    except Exception as e:  # e.g. Numba's cache files for it cannot be set up
        warn_corrupt(path, f"importing it failed ({type(e).__name__}: {e})")
        mod = reload(path, source)
    return mod, path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def entries(path: str | os.PathLike | None = None) -> list[Path]:
    """rnncomp's own files in a cache directory: generated modules and what Python and Numba
    keep for them in __pycache__ (nothing else that happens to be in the folder)."""
    d = resolve_cache_path(path)
    pats = ("rnncomp_k_*", "rnncomp_cuda_*")
    found = [f for pat in pats for f in d.glob(pat)]
    pyc = d / "__pycache__"
    if pyc.is_dir() and not pyc.is_symlink():
        found += [f for pat in pats for f in pyc.glob(pat)]
    return sorted(set(found))


def clear(path: str | os.PathLike | None = None) -> tuple[int, int]:
    """Remove rnncomp's entries from the cache directory; returns (files removed, bytes)."""
    n = total = 0
    for f in entries(path):
        try:
            total += f.lstat().st_size
        except OSError:
            continue
        _remove(f)
        n += 1
    return n, total


__all__ = ["resolve_cache_path", "cache_dir", "entries", "clear", "always_compile", "versions", "files_digest", "key", "atomic_write",
           "import_source", "import_file", "warn_corrupt", "clear_entry", "reload", "from_numba_cache", "load"]
