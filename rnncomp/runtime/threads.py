"""One thread setting for everything rnncomp runs: BLAS (NumPy's matrix products, in the
interpreter and in the compiled kernels' GEMMs) and the compiled backends' parallel loops
(Numba's thread pool).

    rnncomp.set_num_threads(1)        # both pools
    rnncomp.get_num_threads()         # the current setting

The default is, in this order: $RNNCOMP_NUM_THREADS, $OMP_NUM_THREADS, $OPENBLAS_NUM_THREADS,
$MKL_NUM_THREADS (the first that is set); otherwise 1 thread on machines with 2 or fewer CPUs
available to the process, and half the available CPUs (at most 8) on larger ones. Why: the
matrices of recurrent models are small (a batch of rows times a few hundred units per step), so
BLAS threads spend more time waiting for each other than multiplying, and on a small or shared
machine they wait for cores other processes hold. Measured on a shared 2-core machine: one
training step took 136 ms with OpenBLAS's default (2 threads) and 28 ms with one thread. Half
the CPUs approximates the physical cores (os.cpu_count() counts hyperthreads); the cap of 8 is
a conservative guess (not measured here) at where GEMMs of a few hundred rows stop gaining.

The setting is applied the first time a model runs (not at `import rnncomp`), and again when it
changes. BLAS threads are set through threadpoolctl (a dependency; without it only Numba's pool
follows the setting). Nothing here imports Numba: the CPU backend reads the setting when its
kernels run, and sets OMP_WAIT_POLICY=PASSIVE (unless set) before Numba's OpenMP pool starts:
idle pool threads spinning between the cell loops took the cores the GEMM threads needed
(rnncomp.backends.cpu.driver.quiet_openmp).
"""

from __future__ import annotations

import os

from . import memory

__all__ = ["set_num_threads", "get_num_threads", "default_num_threads", "ensure_applied",
           "available_cpus", "ENV_VARS"]

ENV_VARS = ("RNNCOMP_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAX_DEFAULT = 8

_setting: int | None = None  # set_num_threads(n); None: the default
_applied: int | None = None  # what the BLAS pools were last limited to
_blas_limiter = None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _parse(var: str, value: str) -> int:
    head = value.strip().split(",")[0].strip()  # OMP_NUM_THREADS may be a list: "4,2"
    try:
        n = int(head)
    except ValueError:
        raise ValueError(f"${var}: expected a positive number of threads, received "
                         f"{value!r}") from None
    if n < 1:
        raise ValueError(f"${var}: expected a positive number of threads, received {value!r}")
    return n


def default_num_threads() -> int:
    """The thread count used until set_num_threads is called (see the module docstring)."""
    for var in ENV_VARS:
        value = os.environ.get(var)
        if value is not None and value.strip():
            return _parse(var, value)
    cpus = available_cpus()
    return 1 if cpus <= 2 else min(cpus // 2, MAX_DEFAULT)


def get_num_threads() -> int:
    """The number of threads rnncomp's BLAS calls and compiled loops use."""
    return _setting if _setting is not None else default_num_threads()


def set_num_threads(n: int | None) -> int:
    """Use `n` threads for BLAS and for the compiled backends' parallel loops (None: back to
    the default). Applies at once, to this process. Returns the new setting."""
    global _setting
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: expected a positive int (or None for the default), "
                         f"received {n!r}")
    _setting = n
    ensure_applied()
    return get_num_threads()


def ensure_applied() -> int:
    """Apply the setting to the BLAS pools if it changed since the last call (cheap otherwise);
    returns it. Model runs call this; the CPU backend syncs Numba's pool per call itself.
    The first call also applies the allocator policy (rnncomp.runtime.memory)."""
    global _applied, _blas_limiter
    memory.ensure_applied()
    n = get_num_threads()
    if n != _applied:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional at run time: BLAS keeps its own setting
            pass
        else:
            # not used as a context manager: the limit stays until the next change
            _blas_limiter = threadpool_limits(limits=n, user_api="blas")
        _applied = n
        import sys

        cpu = sys.modules.get("rnncomp.backends.cpu.driver")
        if cpu is not None:  # the CPU backend is loaded: resize Numba's pool if it runs
            cpu.sync_threads(n, launch=False)
    return n
