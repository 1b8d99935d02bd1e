"""Run-time support of the CUDA backend: the array module, device helpers the generated kernels
call, kernel launching, and CUDA-graph capture.

Array module (``xp``): CuPy on a GPU (GEMMs through cuBLAS, movement ops and reductions as CuPy
kernels), NumPy in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), where kernels accept
NumPy arrays. Everything else in the backend is written against ``xp`` only.

float32 GEMMs are true fp32: CuPy uses TF32 tensor cores only when ``CUPY_TF32=1`` is set in
the environment (default ``0``); :func:`get_xp` warns when it finds TF32 switched on.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from .compat import ensure_numpy_compat, simulator

ensure_numpy_compat()
# numba must not synchronise on foreign (CuPy) arrays' streams at launch: that is forbidden
# while a stream is being captured into a CUDA graph. Ordering is guaranteed because every
# launch of a compiled graph goes to one stream.
os.environ.setdefault("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", "0")

from numba import cuda  # noqa: E402  (after the NumPy shim)

F32_1 = np.float32(1.0)
F64_1 = np.float64(1.0)
F32_0 = np.float32(0.0)
F64_0 = np.float64(0.0)


# ------------------------------------------------------------------------------------------
# device functions used by the generated kernels (typed constants: no float64 promotion)
# ------------------------------------------------------------------------------------------
@cuda.jit(device=True, inline="always")
def sigmoid_f32(x):
    return F32_1 / (F32_1 + math.exp(-x))


@cuda.jit(device=True, inline="always")
def sigmoid_f64(x):
    return F64_1 / (F64_1 + math.exp(-x))


@cuda.jit(device=True, inline="always")
def relu_f32(x):
    return x if x > F32_0 else F32_0


@cuda.jit(device=True, inline="always")
def relu_f64(x):
    return x if x > F64_0 else F64_0


_M32 = np.uint64(0xFFFFFFFF)


@cuda.jit(device=True, inline="always")
def hash_uniform(seed, site, step, idx):
    """rnncomp.ops.hash_uniform_np bit for bit (uint64 arithmetic masked to 32 bits)."""
    m = _M32
    sd = np.uint64(seed)
    s = (sd & m) ^ (((sd >> np.uint64(32)) & m) * np.uint64(0x27D4EB2F) & m)
    h = ((np.uint64(idx) * np.uint64(0x9E3779B1)) & m) ^ \
        ((np.uint64(step) & m) * np.uint64(0x85EBCA77) & m) ^ \
        ((np.uint64(site) & m) * np.uint64(0xC2B2AE3D) & m) ^ s
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    # exact in float32 (a 24-bit integer times 2^-24): no double arithmetic in f32 kernels
    return np.float32(h >> np.uint64(8)) * np.float32(1.0 / 16777216.0)


# ------------------------------------------------------------------------------------------
# array module and launching
# ------------------------------------------------------------------------------------------
def get_xp():
    """cupy on a GPU, numpy in the simulator."""
    if simulator():
        return np
    import cupy

    if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        warnings.warn("rnncomp cuda: CUPY_TF32 is set: float32 GEMMs use TF32 (10-bit mantissa)",
                      RuntimeWarning, stacklevel=2)
    return cupy


NT = 256  # threads per block of the elementwise kernels


class Launcher:
    """Launches numba kernels on one stream with CuPy (or, simulated, NumPy) arrays.

    On a GPU, CuPy arrays are wrapped once per (pointer, shape, strides) as numba device arrays
    without a stream sync (capture-safe); the wrappers are cached because the executor keeps
    its buffers (same pointers) between calls.
    """

    def __init__(self, sim: bool, stream=None):
        self.sim = sim
        self.stream = stream  # cupy Stream or None
        self.nb_stream = None
        if not sim and stream is not None:
            self.nb_stream = cuda.external_stream(stream.ptr)
        self._views: dict = {}
        self.nsm = 1 if sim else cuda.get_current_device().MULTIPROCESSOR_COUNT

    def arg(self, a):
        if self.sim or not hasattr(a, "__cuda_array_interface__"):
            return a
        cai = a.__cuda_array_interface__
        key = (cai["data"][0], cai["shape"], cai["strides"], cai["typestr"])
        v = self._views.get(key)
        if v is None:
            if len(self._views) > 4096:
                self._views.clear()
            v = cuda.as_cuda_array(a, sync=False)
            self._views[key] = v
        return v

    def launch(self, kern, n: int, args) -> None:
        if self.sim:
            nt = 32
            blocks = max(1, min((n + nt - 1) // nt, 2))
            kern[blocks, nt](*args)
            return
        blocks = max(1, min((n + NT - 1) // NT, 32 * self.nsm))
        kern[blocks, NT, self.nb_stream](*[self.arg(a) for a in args])


class GraphCapture:
    """Record a host function's launches on `stream` into a CUDA graph (CuPy stream capture)."""

    @staticmethod
    def capture(stream, fn):
        import cupy

        try:
            mode = cupy.cuda.runtime.streamCaptureModeRelaxed
            stream.begin_capture(mode=mode)
        except TypeError:
            stream.begin_capture()
        try:
            fn()
        except BaseException:
            try:
                stream.end_capture()
            except Exception:
                pass
            raise
        return stream.end_capture()


def as_host(x) -> np.ndarray:
    """Device (CuPy) or NumPy value -> NumPy array (a copy)."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (np.generic, int, float, bool)):
        return np.asarray(x)
    if hasattr(x, "get"):
        return x.get()
    return np.array(x)
