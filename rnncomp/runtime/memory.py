"""Freed memory kept for the next call: rnncomp asks the C allocator (glibc's malloc, Linux) not
to hand large blocks back to the operating system between model runs.

Why: a compiled kernel allocates its stacked step results, BPTT residuals and gradients afresh
on every call (about 100 MB for an LSTM with B=64, H=256 and T=100, forward + backward). glibc
serves blocks above its mmap threshold (128 KiB at start, rising to at most 32 MiB as such blocks
are freed) with fresh pages from the OS and unmaps them on free, and returns free memory above
128 KiB at the top of its heap to the OS (the trim threshold). Every call then pays one page
fault, and the zeroing of a page, per 4 KiB it writes: measured on the 2-core benchmark machine,
16,800 page faults per call and about a quarter of that LSTM's forward + backward time
(docs/benchmarks.md); a variable-length batch padded to 5x its longest sequence paid more for
its zero-filled padding than for its arithmetic.

What: the first time a model runs (not at ``import rnncomp``), rnncomp sets, once per process,

* M_MMAP_THRESHOLD to 256 MiB: blocks below it come from the heap, which reuses freed blocks;
* M_TRIM_THRESHOLD to 1 GiB: up to that much free memory stays mapped for the next call.

The cost: after a call the process keeps up to about 1 GiB of freed memory mapped (its resident
size does not shrink back after the call as it would otherwise). Other libraries in the process
(NumPy, PyTorch) allocate through the same malloc and behave the same way afterwards.

    RNNCOMP_MALLOC=off            # leave malloc's settings alone (the policy is never applied)
    RNNCOMP_MALLOC_KEEP=268435456 # bytes of freed memory kept (the trim threshold); default 1 GiB

Elsewhere (macOS, Windows, musl) nothing is changed. Nothing here imports Numba.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ensure_applied", "applied", "ENV_OFF", "ENV_KEEP", "DEFAULT_KEEP", "MMAP_THRESHOLD"]

ENV_OFF = "RNNCOMP_MALLOC"
ENV_KEEP = "RNNCOMP_MALLOC_KEEP"
DEFAULT_KEEP = 1 << 30
MMAP_THRESHOLD = 256 << 20
_GLIBC_MAX_MMAP_THRESHOLD = 32 << 20  # what every glibc accepts (HEAP_MAX_SIZE / 2)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1

_state: dict | None = None  # None: not tried yet; then what was applied (or why not)


def _keep_bytes() -> int:
    raw = os.environ.get(ENV_KEEP)
    if raw is None or not raw.strip():
        return DEFAULT_KEEP
    try:
        n = int(raw.strip())
    except ValueError:
        raise ValueError(f"${ENV_KEEP}: expected a number of bytes >= 0, received "
                         f"{raw!r}") from None
    if n < 0:
        raise ValueError(f"${ENV_KEEP}: expected a number of bytes >= 0, received {raw!r}")
    return min(n, _INT_MAX)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, not at import: `import rnncomp` does not pay for it
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):  # no glibc (musl has no mallopt tunables we need)
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def ensure_applied() -> dict:
    """Apply the policy once per process (cheap afterwards); returns what was done:
    {"applied": bool, "reason": str, "trim_threshold": int, "mmap_threshold": int}."""
    global _state
    if _state is not None:
        return _state
    off = os.environ.get(ENV_OFF, "").strip().lower()
    if off in ("off", "0", "false", "no"):
        _state = {"applied": False, "reason": f"${ENV_OFF}={os.environ[ENV_OFF]}"}
        return _state
    if off not in ("", "on", "1", "true", "yes"):
        raise ValueError(f"${ENV_OFF}: expected 'on' or 'off', received {os.environ[ENV_OFF]!r}")
    keep = _keep_bytes()
    mallopt = _libc()
    if mallopt is None:
        _state = {"applied": False, "reason": f"no glibc mallopt on {sys.platform}"}
        return _state
    mmap_t = min(MMAP_THRESHOLD, max(keep, 128 << 10))
    if not mallopt(_M_MMAP_THRESHOLD, mmap_t):
        mmap_t = min(mmap_t, _GLIBC_MAX_MMAP_THRESHOLD)  # an older glibc's cap
        if not mallopt(_M_MMAP_THRESHOLD, mmap_t):
            _state = {"applied": False, "reason": "mallopt(M_MMAP_THRESHOLD) refused"}
            return _state
    if not mallopt(_M_TRIM_THRESHOLD, keep):
        _state = {"applied": False, "reason": "mallopt(M_TRIM_THRESHOLD) refused"}
        return _state
    _state = {"applied": True, "reason": "", "trim_threshold": keep, "mmap_threshold": mmap_t}
    return _state


def applied() -> dict | None:
    """What ensure_applied() did in this process (None: no model has run yet)."""
    return _state
