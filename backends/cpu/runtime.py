"""Small njit helpers the generated CPU kernels call (reductions, indexing, hashing, GEMMs)."""

from __future__ import annotations

import llvmlite.binding as _llvm
import numpy as np
from numba import njit

# A loop LLVM cannot prove free of aliasing is vectorized behind run-time overlap checks, but
# only up to 128 of them (stores x (stores + loads) over distinct arrays); a fused cell loop
# writing a dozen saved values while reading a dozen others needs more and stayed scalar, at
# several times the cost. The checks run once per loop entry (a row of a cell, per phase). This
# is a process-wide LLVM setting: it only lets more loops vectorize, never changes a result.
_llvm.set_option("rnncomp", "-vectorize-memory-check-threshold=1024")

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


@njit(**_JIT)
def segment_rows(x2, k):
    """[T, R] -> [ceil(T/k), k, R]: a view when k divides T, else a zero-padded copy."""
    T = x2.shape[0]
    S = (T + k - 1) // k
    if S * k == T:
        return x2.reshape((S, k, x2.shape[1]))
    out = np.zeros((S * k, x2.shape[1]), x2.dtype)
    out[:T] = x2
    return out.reshape((S, k, x2.shape[1]))


# ---------------------------------------------------------------------------------------------
# Variable-length batches (sequence_length): sort by length, ragged GEMMs, active rows
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def argsort_desc(x1):
    """The stable order of x1, largest first (sequence lengths, longest first)."""
    return np.argsort(-x1.astype(np.int64), kind="mergesort").astype(np.int32)


@njit(**_JIT)
def _identity_perm(perm, n):
    """Whether perm is 0..n-1 in order; an index outside [0, n) raises rnncomp's take error."""
    ident = True
    for j in range(n):
        p = perm[j]
        if p < 0 or p >= n:
            raise IndexError("rnncomp take", p, n)
        if p != j:
            ident = False
    return ident


@njit(**_JIT)
def permute3(x3, perm, inverse):
    """x3 [pre, n, post] with axis 1 permuted: out[:, j] = x3[:, perm[j]] (inverse: out[:,
    perm[j]] = x3[:, j]). The identity returns x3 itself (a batch that is already sorted costs
    no copy)."""
    n = x3.shape[1]
    if _identity_perm(perm, n):
        return x3
    out = np.empty_like(x3)
    for i in range(x3.shape[0]):
        for j in range(n):
            p = perm[j]
            if inverse:
                out[i, p, :] = x3[i, j, :]
            else:
                out[i, j, :] = x3[i, p, :]
    return out


@njit(**_JIT)
def permute3_head(x3, perm, lengths):
    """permute3(x3, perm, False) for the rows i < max(lengths) of axis 0 only (the steps of a
    variable-length batch that anyone reads); the other rows are left unset."""
    n = x3.shape[1]
    m = 0
    for b in range(lengths.shape[0]):
        m = max(m, lengths[b])
    m = min(m, x3.shape[0])
    if _identity_perm(perm, n):
        return x3
    out = np.empty_like(x3)
    for i in range(m):
        for j in range(n):
            out[i, j, :] = x3[i, perm[j], :]
    return out


@njit(**_JIT)
def unpermute3_head(x3, perm, lengths):
    """permute3(x3, perm, True) for x3 [T, B, ...] zero at the steps t >= max(lengths) (a
    variable-length batch's results): those steps are zero-filled, not read."""
    n = x3.shape[1]
    m = 0
    for b in range(lengths.shape[0]):
        m = max(m, lengths[b])
    m = max(min(m, x3.shape[0]), 0)
    out = np.empty_like(x3)
    for i in range(m):
        for j in range(n):
            p = perm[j]
            if p < 0 or p >= n:
                raise IndexError("rnncomp take", p, n)
            out[i, p, :] = x3[i, j, :]
    out[m:] = 0
    return out


@njit(**_JIT)
def active_rows(lengths, t):
    """#{b : lengths[b] > t} for lengths sorted in descending order (binary search)."""
    lo = 0
    hi = lengths.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if lengths[mid] > t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_JIT)
def check_sorted(lengths):
    for b in range(1, lengths.shape[0]):
        if lengths[b] > lengths[b - 1]:
            raise ValueError("rnncomp: the rows hint needs lengths sorted longest first")


@njit(**_JIT)
def _full_steps(lengths, T):
    m = T
    for b in range(lengths.shape[0]):
        if lengths[b] < m:
            m = max(lengths[b], 0)
    return m


@njit(**_JIT)
def _ragged_count(lengths, t0, T):
    r = 0
    for t in range(t0, T):
        for b in range(lengths.shape[0]):
            if lengths[b] > t:
                r += 1
    return r


@njit(**_JIT)
def ragged_matmul(a3, w, lengths, zero):
    """out[t, b] = a3[t, b] @ w where t < lengths[b], zero elsewhere. zero=0: the other rows
    are left unset (a consumer that reads the valid rows only), 2: zeroed below max(lengths)
    only (a consumer that reads those steps only). The steps every row runs are one GEMM; the
    rows of the other steps are packed into a second one."""
    T, B, K = a3.shape
    N = w.shape[1]
    out = np.zeros((T, B, N), a3.dtype) if zero == 1 else np.empty((T, B, N), a3.dtype)
    a2 = a3.reshape(T * B, K)
    o2 = out.reshape(T * B, N)
    tf = _full_steps(lengths, T)
    if tf > 0:
        mm(a2[:tf * B], w, o2[:tf * B])
    r = _ragged_count(lengths, tf, T)
    m = 0
    for b in range(B):
        m = max(m, lengths[b])
    pa = np.empty((r, K), a3.dtype)
    k = 0
    for t in range(tf, T):
        for b in range(B):
            if lengths[b] > t:
                pa[k, :] = a3[t, b, :]
                k += 1
    po = np.empty((r, N), a3.dtype)
    if r > 0:
        mm(pa, w, po)
    k = 0
    for t in range(tf, T):
        for b in range(B):
            if lengths[b] > t:
                out[t, b, :] = po[k, :]
                k += 1
            elif zero == 2 and t < m:
                out[t, b, :] = 0
    return out


@njit(**_JIT)
def ragged_tensordot(a3, c3, lengths):
    """sum over (t, b) with t < lengths[b] of outer(a3[t, b], c3[t, b]) -> [K, N]: one GEMM
    over the steps every row runs, one over the packed rows of the others."""
    T, B, K = a3.shape
    N = c3.shape[2]
    tf = _full_steps(lengths, T)
    out = np.zeros((K, N), a3.dtype)
    if tf > 0:
        m = tf * B
        out += np.dot(np.ascontiguousarray(a3.reshape(T * B, K)[:m]).T,
                      np.ascontiguousarray(c3.reshape(T * B, N)[:m]))
    r = _ragged_count(lengths, tf, T)
    if r > 0:
        pa = np.empty((r, K), a3.dtype)
        pc = np.empty((r, N), a3.dtype)
        k = 0
        for t in range(tf, T):
            for b in range(B):
                if lengths[b] > t:
                    pa[k, :] = a3[t, b, :]
                    pc[k, :] = c3[t, b, :]
                    k += 1
        out += np.dot(pa.T, pc)
    return out


@njit(**_SUM)
def vsum(x1):
    """The sum of a 1-D row (a row group's reduction: rnncomp.transforms.passes.fuse_rows);
    reassociated, so LLVM vectorizes it (the generated kernels have no 'reassoc')."""
    n = x1.shape[0]
    if n == 0:
        return np.zeros(1, x1.dtype)[0]
    acc = x1[0]
    for j in range(1, n):
        acc += x1[j]
    return acc


@njit(**_JIT)
def vmax(x1):
    """The largest entry of a 1-D row, NaN if there is one (as rowmax and numpy.max)."""
    n = x1.shape[0]
    if n == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    acc = x1[0]
    for j in range(1, n):
        v = x1[j]
        if v > acc or v != v:
            acc = v
    return acc
