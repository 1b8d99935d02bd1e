"""Run-time support of the CUDA backend: the array module, device helpers the generated kernels
call, kernel launching, and CUDA-graph capture.

Array module (``xp``): CuPy on a GPU (GEMMs through cuBLAS, movement ops and reductions as CuPy
kernels), NumPy in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), where kernels accept
NumPy arrays. Everything else in the backend is written against ``xp`` only.

float32 GEMMs are true fp32: CuPy uses TF32 tensor cores only when ``CUPY_TF32=1`` is set in
the environment (default ``0``); :func:`get_xp` warns when it finds TF32 switched on.
"""

from __future__ import annotations

import ctypes
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
    """rnncomp.ir.ops.hash_uniform_np bit for bit (uint64 arithmetic masked to 32 bits)."""
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


def scatter_add(xp, out, idx, src) -> None:
    """out[idx[i]] += src[i] along axis 0, repeated indices accumulating (np.add.at; on a GPU
    cupyx.scatter_add, atomic adds: the order of additions to one row is not fixed)."""
    if xp is np:
        np.add.at(out, idx, src)
    else:
        import cupyx

        cupyx.scatter_add(out, idx, src)


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


# ------------------------------------------------------------------------------------------
# GEMM: raw cuBLAS (CuPy's matmul refuses to run while a stream is being captured)
# ------------------------------------------------------------------------------------------
def _layout(x):
    """(transpose?, leading dimension) of a 2-D array with one unit stride, else None."""
    isz = x.itemsize
    s0, s1 = x.strides
    r, c = x.shape
    if (s1 == isz or c == 1) and s0 % isz == 0 and s0 // isz >= max(1, c):
        return 0, max(1, s0 // isz, c)
    if (s0 == isz or r == 1) and s1 % isz == 0 and s1 // isz >= max(1, r):
        return 1, max(1, s1 // isz, r)
    return None


def gemm_args(a, b) -> tuple[int, ...] | None:
    """cuBLAS (column-major) arguments of the row-major out[m, n] = a[m, k] @ b[k, n] into a
    C-contiguous out: (transa, transb, M, N, K, lda, ldb, ldc) of C^T = b^T a^T, i.e. cuBLAS's
    A is b and its B is a; None when a or b has no unit stride (then xp.matmul)."""
    la, lb = _layout(a), _layout(b)
    if la is None or lb is None:
        return None
    m, k = a.shape
    n = b.shape[1]
    return lb[0], la[0], n, m, k, lb[1], la[1], n


_LIB: list = []


def _cublas_lib():
    """libcublas through ctypes (the one CuPy loaded), or None."""
    if not _LIB:
        lib = None
        for name in ("libcublas.so.13", "libcublas.so.12", "libcublas.so"):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is not None:
            ci, vp = ctypes.c_int, ctypes.c_void_p
            for fn in (lib.cublasSgemm_v2, lib.cublasDgemm_v2):
                fn.argtypes = [vp, ci, ci, ci, ci, ci, vp, vp, ci, vp, ci, vp, vp, ci]
                fn.restype = ci
            lib.cublasSetStream_v2.argtypes = [vp, vp]
            lib.cublasSetStream_v2.restype = ci
        _LIB.append(lib)
    return _LIB[0]


def _check(status: int) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLAS error {status}")


class Gemm:
    """out[m, n] = a[m, k] @ b[k, n] (float32/float64, 2-D, beta = 0) on one stream through
    cuBLAS directly (true fp32: the handle's default math mode, no TF32 unless CUPY_TF32=1);
    falls back to xp.matmul for other layouts/dtypes and in the simulator."""

    def __init__(self, xp, sim: bool, stream=None):
        self.xp = xp
        self.sim = sim
        self.stream = stream
        self.consts = {np.dtype(np.float32): (np.ones((), np.float32), np.zeros((), np.float32)),
                       np.dtype(np.float64): (np.ones((), np.float64), np.zeros((), np.float64))}
        self.raw_calls = 0
        self.handle = None

    def __call__(self, a, b, out):
        dt = out.dtype
        if self.sim or a.ndim != 2 or b.ndim != 2 or dt not in self.consts or \
                a.dtype != dt or b.dtype != dt or not out.flags.c_contiguous:
            self.xp.matmul(a, b, out=out)
            return out
        args = gemm_args(a, b)
        m, k = a.shape
        n = b.shape[1]
        if args is None:
            self.xp.matmul(a, b, out=out)
            return out
        ta, tb, _, _, _, lda, ldb, ldc = args
        if m == 0 or n == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        if self.handle is None:
            # fetched once, eagerly (step 0 runs before capture): CuPy's get_cublas_handle()
            # and its cublas wrappers (re)bind the stream, which CuPy refuses during capture
            self.handle = self.xp.cuda.device.get_cublas_handle()
        sp = self.stream.ptr if self.stream is not None else 0
        one, zero = self.consts[dt]
        lib = _cublas_lib()
        if lib is None:
            from cupy_backends.cuda.libs import cublas

            f = cublas.sgemm if dt == np.float32 else cublas.dgemm
            f(self.handle, ta, tb, n, m, k, one.ctypes.data, b.data.ptr, lda,
              a.data.ptr, ldb, zero.ctypes.data, out.data.ptr, ldc)
            return out
        if not self.xp.cuda.runtime.streamIsCapturing(sp):
            _check(lib.cublasSetStream_v2(ctypes.c_void_p(self.handle), ctypes.c_void_p(sp)))
        f = lib.cublasSgemm_v2 if dt == np.float32 else lib.cublasDgemm_v2
        _check(f(ctypes.c_void_p(self.handle), ta, tb, n, m, k,
                 ctypes.c_void_p(one.ctypes.data), ctypes.c_void_p(b.data.ptr), lda,
                 ctypes.c_void_p(a.data.ptr), ldb, ctypes.c_void_p(zero.ctypes.data),
                 ctypes.c_void_p(out.data.ptr), ldc))
        self.raw_calls += 1
        return out


# ------------------------------------------------------------------------------------------
# variable-length batches: the valid (t, b) rows of a ragged GEMM (lengths known on the host)
# ------------------------------------------------------------------------------------------
def ragged_rows(lengths: np.ndarray, T: int) -> tuple[int, np.ndarray]:
    """(tf, idx) for valid[t, b] = t < lengths[b], t < T: the steps t < tf that every row runs
    (tf = min(lengths) clipped to [0, T]) and the flat row indices t * B + b of the other valid
    rows, in (t, b) order (int64, on the host)."""
    L = np.asarray(lengths).astype(np.int64)
    B = L.shape[0]
    if B == 0:
        return T, np.zeros(0, np.int64)
    tf = int(min(T, max(0, int(L.min()))))
    m = int(min(T, max(0, int(L.max()))))
    tt, bb = np.nonzero(np.arange(tf, m)[:, None] < L[None, :])
    return tf, ((tt + tf) * B + bb).astype(np.int64)


def ragged_matmul(xp, gemm, a3, w, tf: int, idx, out) -> None:
    """out[t, b] = a3[t, b] @ w on the valid rows (ragged_rows: the steps below tf as one GEMM,
    the rows idx (a device index array) of the others gathered into a second one and scattered
    back); the other rows of the steps >= tf are zero."""
    T, B, K = a3.shape
    N = w.shape[1]
    a2 = a3.reshape(T * B, K)
    o2 = out.reshape(T * B, N)
    m = tf * B
    if m:
        gemm(a2[:m], w, o2[:m])
    if m < T * B:
        o2[m:] = 0
    if idx.shape[0]:
        po = xp.empty((idx.shape[0], N), out.dtype)
        gemm(xp.take(a2, idx, axis=0), w, po)
        o2[idx] = po


def ragged_tensordot(xp, gemm, a3, c3, tf: int, idx, out) -> None:
    """out = sum over the valid rows (t, b) of outer(a3[t, b], c3[t, b]) [K, N]: a3^T c3 over
    the steps below tf (one GEMM, no copies), plus the gathered rows idx of the others."""
    T, B, K = a3.shape
    N = c3.shape[2]
    a2 = a3.reshape(T * B, K)
    c2 = c3.reshape(T * B, N)
    m = tf * B
    if m:
        gemm(a2[:m].T, c2[:m], out)
    else:
        out.fill(0)
    if idx.shape[0]:
        part = xp.empty((K, N), out.dtype)
        gemm(xp.take(a2, idx, axis=0).T, xp.take(c2, idx, axis=0), part)
        out += part
