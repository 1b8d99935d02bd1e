"""Compatibility shims and capability probes for the numba-cuda backend.

Why this module exists
----------------------
numba-cuda 0.30.x (the version in the GPU image, next to NumPy 2.5.x) registers its NumPy
overloads lazily, the first time a CUDA target context is built (that is: the first kernel
compile, ``cuda.jit`` call or ``cuda.compile_ptx``).  One of those registrations,
``numba/cuda/np/arrayobj.py``::

    if numpy_version >= (2, 0):
        overload(np.row_stack)(impl_np_vstack)

evaluates ``np.row_stack``, an alias deprecated in NumPy 2.0 and removed in NumPy 2.5.  On
NumPy 2.5 the first compile therefore dies with
``AttributeError: module 'numpy' has no attribute 'row_stack'``.  (Numba's CPU target guards the
same line with ``numpy_version < (2, 5)``; numba-cuda 0.30.4 does not.)

``ensure_numpy_compat()`` puts the alias back (``np.row_stack = np.vstack``, which is exactly what
the alias was) when it is missing.  It must run before the first CUDA compile; it is harmless if
``numba.cuda`` was already imported, because the failing line runs at first compile, not at import.
Every module of this backend that compiles kernels calls it at import time, so users never need to.
It is idempotent and never replaces an attribute NumPy still has.

Audit of numba-cuda 0.30.4 against NumPy removals (done by scanning every ``np.<name>`` reference
in the installed ``numba_cuda`` sources, see docs/design-cuda-kernels.md):

* ``np.row_stack``  -- unguarded, breaks on NumPy >= 2.5: shimmed here.
* ``np.trapz``, ``np.in1d`` -- guarded by ``numpy_version < (2, 4)``: fine.
* ``np.round_``, ``np.asfarray`` -- guarded by ``numpy_version < (2, 0)``: fine.
* ``np.core.*``, ``np.MachAr`` -- only mentioned in comments: fine.
* NumPy 2.x deprecations not yet removed (``maximum_sctype``, ``get_array_wrap``, ``deprecate``,
  ``safe_eval``, ``recfromtxt``/``recfromcsv``) -- not referenced by numba-cuda.

Other helpers: ``simulator()`` says whether the CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``),
``available()`` whether real kernels can run (numba.cuda importable, not the simulator, a GPU seen),
``nvvm_available()`` whether PTX can be generated on this machine without a GPU.
"""

from __future__ import annotations

import os

import numpy as np

# Aliases that NumPy removed and that numba-cuda (some version) still evaluates at compile time.
# name -> attribute of numpy that the alias always meant.
_REMOVED_ALIASES = {
    "row_stack": "vstack",  # deprecated NumPy 2.0, removed NumPy 2.5; numba-cuda 0.30.x arrayobj.py
}

_installed: list[str] = []


def ensure_numpy_compat() -> list[str]:
    """Install NumPy aliases removed in NumPy 2.5 that numba-cuda 0.30.x still touches.

    Returns the names installed by this process so far (empty when NumPy still has them all).
    Idempotent: an alias NumPy has is never replaced, one we installed is not installed twice.
    """
    for alias, target in _REMOVED_ALIASES.items():
        if alias in np.__dict__:  # NumPy has it (native or installed before): leave it
            continue
        try:
            getattr(np, alias)  # NumPy < 2.5 serves deprecated aliases via module __getattr__
            continue
        except AttributeError:
            pass
        setattr(np, alias, getattr(np, target))
        _installed.append(alias)
    return list(_installed)


def simulator() -> bool:
    """True when numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover - numba missing
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_importable() -> bool:
    """True when ``numba.cuda`` imports (numba-cuda installed, or the simulator)."""
    ensure_numpy_compat()
    try:
        from numba import cuda  # noqa: F401
    except Exception:
        return False
    return True


def available() -> bool:
    """True when real CUDA kernels can run: numba.cuda importable, not simulated, a GPU present."""
    if simulator() or not cuda_importable():
        return False
    from numba import cuda

    try:
        return bool(cuda.is_available()) and len(cuda.gpus) > 0
    except Exception:
        return False


def nvvm_available() -> bool:
    """True when NVVM can be loaded, i.e. ``cuda.compile_ptx`` works without a GPU."""
    if simulator() or not cuda_importable():
        return False
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        return True
    except Exception:
        return False


def find_ptxas() -> str | None:
    """Path of a ptxas matching the PTX that NVVM emits, or None.

    Prefers the pip wheel (``nvidia-cuda-nvcc``, found through cuda.pathfinder), whose version
    matches the pip NVVM; falls back to PATH.  A ptxas older than NVVM rejects the PTX
    (``Unsupported .version``); callers should treat that as "not available".
    """
    try:
        from cuda import pathfinder

        p = pathfinder.find_nvidia_binary_utility("ptxas")
        if p:
            return p
    except Exception:
        pass
    import shutil

    return shutil.which("ptxas")


def set_max_dynamic_shared(dispatcher, nbytes: int, signature=None) -> bool:
    """Raise a compiled kernel's dynamic shared-memory limit above 48 KB (opt-in on sm_70+).

    numba-cuda 0.30 has no public API for CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; its
    kernels are cuLibrary ``CUkernel`` handles (cuda.core ``Kernel``).  We try
    ``cuKernelSetAttribute`` first, then ``cuFuncSetAttribute`` on the same handle (a CUkernel is
    accepted as a CUfunction in the current context).  Returns True on success.  Unverified on a
    GPU at the time of writing: callers must fall back to <= 48 KB configurations on False.
    """
    if nbytes <= 48 * 1024:
        return True
    try:
        from cuda.bindings import driver as drv
    except Exception:
        return False
    kernels = dispatcher.overloads.values() if signature is None else [dispatcher.overloads[signature]]
    ok = True
    for kern in kernels:
        h = kern._codelibrary.get_cufunc().handle
        attr = drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        done = False
        try:
            from numba import cuda

            dev = cuda.get_current_device().id
            (err,) = drv.cuKernelSetAttribute(attr, int(nbytes), drv.CUkernel(int(h)), dev)
            done = err == drv.CUresult.CUDA_SUCCESS
        except Exception:
            done = False
        if not done:
            try:
                (err,) = drv.cuFuncSetAttribute(drv.CUfunction(int(h)), attr, int(nbytes))
                done = err == drv.CUresult.CUDA_SUCCESS
            except Exception:
                done = False
        ok = ok and done
    return ok


class _FakeDevice:
    def __init__(self, cc):
        self.compute_capability = tuple(cc)
        self.id = 0


def compile_ptx_nogpu(pyfunc, sig, cc=(9, 0), **kw):
    """``cuda.compile_ptx`` that also works on a machine without a GPU (or driver).

    numba-cuda 0.30.x compiles ``@overload(..., target="cuda")`` implementations -- among them
    ``cuda.cg.this_grid()`` and ``GridGroup.sync()`` -- as device functions through
    ``CUDADispatcher.compile_device``, which asks the *current device* for its compute capability
    even inside ``compile_ptx(cc=...)``.  Without a driver that raises CudaSupportError.  When no
    GPU is usable we answer that one question with ``cc`` for the duration of the call.  Returns
    (ptx, return_type) like ``cuda.compile_ptx``.
    """
    ensure_numpy_compat()
    from numba import cuda
    from numba.cuda import dispatcher as _disp

    if available():
        return cuda.compile_ptx(pyfunc, sig, cc=cc, **kw)
    orig = _disp.get_current_device
    _disp.get_current_device = lambda: _FakeDevice(cc)
    try:
        return cuda.compile_ptx(pyfunc, sig, cc=cc, **kw)
    finally:
        _disp.get_current_device = orig
