"""Small njit helpers the generated CPU kernels call (reductions, indexing, hashing, GEMMs)."""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, error_model="numpy", nogil=True)
# sums may be reassociated: LLVM then vectorizes them (a serial float chain costs its add
# latency per element: 8 us instead of 0.7 us for a [64, 256] row sum); NaN and inf keep their
# meaning (no 'nnan' / 'ninf')
_SUM = dict(_JIT, fastmath={"reassoc", "contract"})


@njit(**_SUM)
def rowsum(x2):
    m, n = x2.shape
    out = np.zeros(m, x2.dtype)
    for i in range(m):
        acc = out[i]
        for j in range(n):
            acc += x2[i, j]
        out[i] = acc
    return out


@njit(**_SUM)
def colsum(x2):
    m, n = x2.shape
    out = np.zeros(n, x2.dtype)
    for i in range(m):
        for j in range(n):
            out[j] += x2[i, j]
    return out


@njit(**_JIT)
def rowmax(x2):
    m, n = x2.shape
    out = np.empty(m, x2.dtype)
    for i in range(m):
        acc = x2[i, 0]
        for j in range(1, n):
            v = x2[i, j]
            if v > acc or v != v:
                acc = v
        out[i] = acc
    return out


@njit(**_JIT)
def take_last(x2, idx1):
    m = x2.shape[0]
    n = x2.shape[1]
    out = np.empty(m, x2.dtype)
    for i in range(m):
        k = idx1[i]
        if k < 0 or k >= n:  # the driver turns this into take_index_error (rnncomp.ir.ops)
            raise IndexError("rnncomp take", k, n)
        out[i] = x2[i, k]
    return out


@njit(**_JIT)
def gather_rows(table2, idx1, out2):
    """out2[i] = table2[idx1[i]] (an embedding lookup)."""
    n = table2.shape[0]
    r = table2.shape[1]
    for i in range(idx1.shape[0]):
        k = idx1[i]
        if k < 0 or k >= n:  # the driver turns this into take_index_error (rnncomp.ir.ops)
            raise IndexError("rnncomp take", k, n)
        for j in range(r):
            out2[i, j] = table2[k, j]
    return out2


@njit(**_JIT)
def scatter_add_rows(src2, idx1, out2):
    """out2 (zeros) with src2[i] added to row idx1[i] (the gradient of gather_rows)."""
    n = out2.shape[0]
    r = out2.shape[1]
    for i in range(idx1.shape[0]):
        k = idx1[i]
        if k < 0 or k >= n:
            raise IndexError("rnncomp take", k, n)
        for j in range(r):
            out2[k, j] += src2[i, j]
    return out2


@njit(**_JIT)
def argmax3(x3, out2):
    """out2[a, c] = argmax_j x3[a, j, c]: the first maximum; a NaN counts as the maximum (the
    first NaN), as numpy.argmax."""
    for a in range(x3.shape[0]):
        for c in range(x3.shape[2]):
            best = x3[a, 0, c]
            bi = 0
            if best == best:
                for j in range(1, x3.shape[1]):
                    v = x3[a, j, c]
                    if v != v:
                        bi = j
                        break
                    if v > best:
                        best = v
                        bi = j
            out2[a, c] = bi
    return out2


@njit(**_JIT)
def one_hot(idx1, depth, out2):
    m = idx1.shape[0]
    for i in range(m):
        for j in range(depth):
            out2[i, j] = 1 if idx1[i] == j else 0
    return out2


@njit(inline="always", **_JIT)
def hash_uniform(seed, site, step, idx):
    """The counter-based generator of rnncomp.ir.ops.hash_uniform_np, bit for bit."""
    m = np.uint64(0xFFFFFFFF)
    s = np.uint64(seed & 0xFFFFFFFF) ^ ((np.uint64((seed >> 32) & 0xFFFFFFFF)
                                         * np.uint64(0x27D4EB2F)) & m)
    h = ((np.uint64(idx) * np.uint64(0x9E3779B1)) & m) ^ \
        ((np.uint64(step & 0xFFFFFFFF) * np.uint64(0x85EBCA77)) & m) ^ \
        ((np.uint64(site & 0xFFFFFFFF) * np.uint64(0xC2B2AE3D)) & m) ^ s
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    return np.float64(h >> np.uint64(8)) * (1.0 / 16777216.0)


@njit(**_JIT)
def mm(a, b, out):
    """out[:] = a @ b for 2-D arrays: BLAS above a size threshold, explicit loops below (the
    per-call cost of BLAS dominates tiny products, e.g. batch-1 inference)."""
    m, k = a.shape
    n = b.shape[1]
    if m * n * k >= 32 * 32 * 32 or m >= 32:
        # views (slices of a weight matrix or a time step) are typed with an unknown layout:
        # ascontiguousarray checks at run time and copies only if needed (np.dot on such
        # arrays would copy them every call, and make Numba warn "np.vdot() is faster on
        # contiguous arrays")
        oc = np.ascontiguousarray(out)
        np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), oc)
        if not out.flags.c_contiguous:
            out[:, :] = oc
        return out
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            av = a[i, p]
            for j in range(n):
                out[i, j] += av * b[p, j]
    return out
