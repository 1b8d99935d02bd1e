"""Fast, vectorizable scalar math for generated Numba CPU kernels.

Why this module exists
----------------------
This machine's Numba has no SVML (``numba -s``: "SVML Operational: False").
Without a vector math library LLVM cannot vectorize a loop that calls
``math.tanh`` / ``np.tanh`` / ``np.exp`` / ``math.exp``: every element becomes
a scalar libm call (measured: tanh ~87x, exp ~10-20x slower than the forms
below, see docs/design-cpu-kernels.md, finding 1).

Everything here is built only from operations LLVM vectorizes on x86
(fmul/fadd/fma, fdiv, compares+select, fabs, bitcast, integer add/shift), so a
loop such as::

    for i in range(n):
        out[i] = tanh_f32(x[i])

compiles to AVX-512 (zmm) / AVX2 (ymm) code.

How to use from generated code
------------------------------
* Call the dtype-specific functions (``tanh_f32``, ``sigmoid_f64`` ...) or the
  generic ones (``tanh``, ``sigmoid``, ``exp``, ``log``, ``relu``) which
  dispatch on the argument type at compile time.
* Compile the *calling* kernel with ``error_model='numpy'`` (otherwise every
  float division gets a ZeroDivisionError check that blocks vectorization)
  and with ``fastmath=KERNEL_FASTMATH`` (``{'contract', 'arcp', 'afn'}``); the generated
  kernels leave out ``'arcp'`` (codegen.JIT_LINE: it made parallel and serial kernels differ).
  Do NOT use ``fastmath=True`` if NaN/inf must propagate: it adds ``nnan``/
  ``ninf`` which lets LLVM rewrite the NaN-propagating clamps below.
  The functions are ``inline='always'`` (inlined at Numba-IR level), so the
  caller's flags are the ones that apply.
* Use typed constants (``np.float32(1.0)``) in float32 kernels; a Python float
  literal promotes the whole expression to float64.

Accuracy (asserted in tests/cpu/test_fastmath.py)
-------------------------------------------------
float32 (computed in float32), vs float64 numpy reference:
  tanh, sigmoid: max abs err < 1e-6 on [-20, 20] (measured ~1.2e-7, i.e. ~1 ulp),
  relative err ~ 1e-7 everywhere including |x| -> 0 (odd Taylor branch) and the
  sigmoid tail (e/(1+e) form).
  exp: max rel err ~ 2e-7 over the whole range, incl. gradual underflow.
float64: tanh/sigmoid/exp/log rel err < 1e-15 (a few ulp).
Specials: NaN -> NaN; tanh(+-inf) = +-1; sigmoid(+inf) = 1, sigmoid(-inf) = 0;
exp(+inf) = inf, exp(-inf) = 0; log(0) = -inf, log(x<0) = NaN, log(inf) = inf.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = [
    "FASTMATH_FLAGS",
    "KERNEL_FASTMATH",
    "exp_f32", "exp_f64", "tanh_f32", "tanh_f64", "sigmoid_f32", "sigmoid_f64",
    "log_f32", "log_f64", "relu_f32", "relu_f64",
    "dtanh_from_y", "dsigmoid_from_y",
    "exp", "tanh", "sigmoid", "log", "relu",
]

# Flags used to compile the functions here and recommended for generated
# kernels. 'contract' allows FMA; 'arcp'/'afn' are harmless for our
# formulas. Deliberately excluded: 'nsz' (tanh(-0.0) would return +0.0),
# 'nnan', 'ninf' (would break NaN/inf
# propagation through the clamps) and 'reassoc' (would fold the
# round-to-integer magic-number trick (x + M) - M into x).
FASTMATH_FLAGS = frozenset({"contract", "arcp", "afn"})
KERNEL_FASTMATH = set(FASTMATH_FLAGS)
_FM = set(FASTMATH_FLAGS)
# float32 entry points are small enough for LLVM to inline (and vectorize) them at the call site,
# so Numba-level inlining (which re-types the callee at every call and dominates cold compile
# time) is not needed; the float64 tanh is too big for LLVM's inliner and must be inlined by
# Numba to vectorize (measured: 1.6 ms vs 21-30 ms per 1M elements).
_JIT = dict(inline="never", error_model="numpy", fastmath=_FM, cache=True)
_JIT64 = dict(inline="always", error_model="numpy", fastmath=_FM, cache=False)

_F32 = np.float32
_F64 = np.float64

# ---------------------------------------------------------------------------
# bit-level helpers (LLVM IR intrinsics -> vectorizable bitcasts / int ops)
# ---------------------------------------------------------------------------


def _scale_codegen(fty, ity, magic_bits, bias, mbits):
    """p * 2**n where n is encoded in the low bits of k = n + magic.

    2**n is applied as two factors 2**(n>>1) * 2**(n - (n>>1)) so that the
    result is right both for gradual underflow (denormals) and for the last
    binade before overflow, without any branches.
    """

    def codegen(context, builder, sig, args):
        p, k = args
        bits = builder.bitcast(k, ity)
        n = builder.sub(bits, ir.Constant(ity, magic_bits))
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)
        b = ir.Constant(ity, bias)
        sh = ir.Constant(ity, mbits)
        s1 = builder.bitcast(builder.shl(builder.add(n1, b), sh), fty)
        s2 = builder.bitcast(builder.shl(builder.add(n2, b), sh), fty)
        return builder.fmul(builder.fmul(p, s1), s2)

    return codegen


@intrinsic
def _ldexp_magic_f32(typingctx, p, k):
    if p != types.float32 or k != types.float32:
        return None
    sig = types.float32(types.float32, types.float32)
    return sig, _scale_codegen(ir.FloatType(), ir.IntType(32), 0x4B400000, 127, 23)


@intrinsic
def _ldexp_magic_f64(typingctx, p, k):
    if p != types.float64 or k != types.float64:
        return None
    sig = types.float64(types.float64, types.float64)
    return sig, _scale_codegen(ir.DoubleType(), ir.IntType(64), 0x4338000000000000, 1023, 52)


def _frexp_codegen(fty, ity, mbits, bias, mant_mask, half_bits):
    """x -> (m, e) with x = m * 2**e, m in [0.5, 1) (x normal, positive)."""

    def codegen(context, builder, sig, args):
        (x,) = args
        bits = builder.bitcast(x, ity)
        ebits = builder.lshr(bits, ir.Constant(ity, mbits))
        e = builder.sub(ebits, ir.Constant(ity, bias - 1))
        mb = builder.or_(builder.and_(bits, ir.Constant(ity, mant_mask)),
                         ir.Constant(ity, half_bits))
        m = builder.bitcast(mb, fty)
        ef = builder.sitofp(e, fty)
        return context.make_tuple(builder, sig.return_type, [m, ef])

    return codegen


@intrinsic
def _frexp_f32(typingctx, x):
    if x != types.float32:
        return None
    sig = types.UniTuple(types.float32, 2)(types.float32)
    return sig, _frexp_codegen(ir.FloatType(), ir.IntType(32), 23, 127, 0x007FFFFF, 0x3F000000)


@intrinsic
def _frexp_f64(typingctx, x):
    if x != types.float64:
        return None
    sig = types.UniTuple(types.float64, 2)(types.float64)
    return sig, _frexp_codegen(ir.DoubleType(), ir.IntType(64), 52, 1023,
                               0x000FFFFFFFFFFFFF, 0x3FE0000000000000)


# ---------------------------------------------------------------------------
# exp: Cody-Waite range reduction + polynomial
# ---------------------------------------------------------------------------
# float32 (Cephes expf coefficients, |r| <= ln2/2, rel err ~1 ulp)
_E32_LO = _F32(-104.0)     # exp(-104) < min denormal / 2 -> 0
_E32_HI = _F32(89.0)       # exp(89) > FLT_MAX -> inf (via the scale)
_E32_LOG2E = _F32(1.44269504088896341)
_E32_MAGIC = _F32(12582912.0)        # 1.5 * 2**23
_E32_C1 = _F32(0.693359375)          # ln2 split, C1 has few bits -> n*C1 exact
_E32_C2 = _F32(-2.12194440e-4)
_E32_P0 = _F32(1.9875691500e-4)
_E32_P1 = _F32(1.3981999507e-3)
_E32_P2 = _F32(8.3334519073e-3)
_E32_P3 = _F32(4.1665795894e-2)
_E32_P4 = _F32(1.6666665459e-1)
_E32_P5 = _F32(5.0000001201e-1)
_ONE32 = _F32(1.0)


@njit(**_JIT)
def exp_f32(x):
    # clamp, written so that NaN falls through unchanged
    xc = _E32_HI if x > _E32_HI else x
    xc = _E32_LO if xc < _E32_LO else xc
    k = xc * _E32_LOG2E + _E32_MAGIC       # round(x*log2e) in the low bits
    n = k - _E32_MAGIC
    r = xc - n * _E32_C1
    r = r - n * _E32_C2
    y = _E32_P0 * r + _E32_P1
    y = y * r + _E32_P2
    y = y * r + _E32_P3
    y = y * r + _E32_P4
    y = y * r + _E32_P5
    y = y * (r * r) + r + _ONE32
    return _ldexp_magic_f32(y, k)


# float64: fdlibm ln2 split, Taylor polynomial to r**13 (|r| <= ln2/2,
# truncation 1.7e-16 relative)
_E64_LO = _F64(-746.0)
_E64_HI = _F64(710.0)
_E64_LOG2E = _F64(1.4426950408889634074)
_E64_MAGIC = _F64(6755399441055744.0)   # 1.5 * 2**52
_E64_LN2HI = _F64(6.93147180369123816490e-01)
_E64_LN2LO = _F64(1.90821492927058770002e-10)
_E64_C = tuple(_F64(1.0 / f) for f in
               (6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0,
                5040.0, 720.0, 120.0, 24.0, 6.0, 2.0))  # 1/13! ... 1/2!
(_E64_C13, _E64_C12, _E64_C11, _E64_C10, _E64_C9, _E64_C8, _E64_C7,
 _E64_C6, _E64_C5, _E64_C4, _E64_C3, _E64_C2) = _E64_C
_ONE64 = _F64(1.0)


@njit(**_JIT64)
def exp_f64(x):
    xc = _E64_HI if x > _E64_HI else x
    xc = _E64_LO if xc < _E64_LO else xc
    k = xc * _E64_LOG2E + _E64_MAGIC
    n = k - _E64_MAGIC
    r = xc - n * _E64_LN2HI
    r = r - n * _E64_LN2LO
    y = _E64_C13 * r + _E64_C12
    y = y * r + _E64_C11
    y = y * r + _E64_C10
    y = y * r + _E64_C9
    y = y * r + _E64_C8
    y = y * r + _E64_C7
    y = y * r + _E64_C6
    y = y * r + _E64_C5
    y = y * r + _E64_C4
    y = y * r + _E64_C3
    y = y * r + _E64_C2
    y = y * (r * r) + r + _ONE64
    return _ldexp_magic_f64(y, k)


# ---------------------------------------------------------------------------
# tanh: odd Taylor polynomial for |x| < 0.25 (relative accuracy near 0),
# (1 - e) / (1 + e) with e = exp(-2|x|) elsewhere. Branch-free (select).
# ---------------------------------------------------------------------------
_T_SMALL32 = _F32(0.25)
_T32_C3 = _F32(-1.0 / 3.0)
_T32_C5 = _F32(2.0 / 15.0)
_T32_C7 = _F32(-17.0 / 315.0)
_T32_C9 = _F32(62.0 / 2835.0)
_T32_C11 = _F32(-1382.0 / 155925.0)
_M2_32 = _F32(-2.0)


@njit(**_JIT)
def tanh_f32(x):
    a = abs(x)
    e = exp_f32(_M2_32 * a)
    t = (_ONE32 - e) / (_ONE32 + e)
    t = t if x >= _F32(0.0) else -t          # NaN -> -NaN (still NaN)
    x2 = x * x
    p = _T32_C11 * x2 + _T32_C9
    p = p * x2 + _T32_C7
    p = p * x2 + _T32_C5
    p = p * x2 + _T32_C3
    p = x + x * (x2 * p)
    p = x if x == _F32(0.0) else p        # keep the sign of -0.0
    return p if a < _T_SMALL32 else t


_T_SMALL64 = _F64(0.25)
_T64_C = (
    _F64(18888466084.0 / 194896477400625.0),   # x**21
    _F64(-443861162.0 / 1856156927625.0),      # x**19
    _F64(6404582.0 / 10854718875.0),           # x**17
    _F64(-929569.0 / 638512875.0),             # x**15
    _F64(21844.0 / 6081075.0),                 # x**13
    _F64(-1382.0 / 155925.0),                  # x**11
    _F64(62.0 / 2835.0),                       # x**9
    _F64(-17.0 / 315.0),                       # x**7
    _F64(2.0 / 15.0),                          # x**5
    _F64(-1.0 / 3.0),                          # x**3
)
(_T64_C21, _T64_C19, _T64_C17, _T64_C15, _T64_C13, _T64_C11, _T64_C9,
 _T64_C7, _T64_C5, _T64_C3) = _T64_C
_M2_64 = _F64(-2.0)


@njit(**_JIT64)
def tanh_f64(x):
    a = abs(x)
    e = exp_f64(_M2_64 * a)
    t = (_ONE64 - e) / (_ONE64 + e)
    t = t if x >= _F64(0.0) else -t
    x2 = x * x
    p = _T64_C21 * x2 + _T64_C19
    p = p * x2 + _T64_C17
    p = p * x2 + _T64_C15
    p = p * x2 + _T64_C13
    p = p * x2 + _T64_C11
    p = p * x2 + _T64_C9
    p = p * x2 + _T64_C7
    p = p * x2 + _T64_C5
    p = p * x2 + _T64_C3
    p = x + x * (x2 * p)
    p = x if x == _F64(0.0) else p        # keep the sign of -0.0
    return p if a < _T_SMALL64 else t


# ---------------------------------------------------------------------------
# sigmoid: e = exp(-|x|) in (0, 1]; 1/(1+e) for x >= 0, e/(1+e) for x < 0
# (relative accuracy in the left tail, a single division).
# ---------------------------------------------------------------------------
@njit(**_JIT)
def sigmoid_f32(x):
    e = exp_f32(-abs(x))
    r = _ONE32 / (_ONE32 + e)
    return r if x >= _F32(0.0) else e * r


@njit(**_JIT64)
def sigmoid_f64(x):
    e = exp_f64(-abs(x))
    r = _ONE64 / (_ONE64 + e)
    return r if x >= _F64(0.0) else e * r


# ---------------------------------------------------------------------------
# relu (NaN propagates, -0.0 stays -0.0) and activation derivatives expressed
# through the saved output y (what BPTT kernels use).
# ---------------------------------------------------------------------------
@njit(**_JIT)
def relu_f32(x):
    return _F32(0.0) if x < _F32(0.0) else x


@njit(**_JIT64)
def relu_f64(x):
    return _F64(0.0) if x < _F64(0.0) else x


@njit(**_JIT)
def dtanh_from_y(y):
    """d tanh / dx given y = tanh(x): 1 - y*y (dtype follows y)."""
    return 1 - y * y


@njit(**_JIT)
def dsigmoid_from_y(y):
    """d sigmoid / dx given y = sigmoid(x): y * (1 - y)."""
    return y * (1 - y)


# ---------------------------------------------------------------------------
# log: frexp via bit manipulation, m in [sqrt(1/2), sqrt(2)),
# log(m) = 2 atanh(s), s = (m-1)/(m+1), odd series in s.
# Denormal inputs are pre-scaled by 2**K. Not hot in RNN kernels (loss only).
# ---------------------------------------------------------------------------
_L32_LN2 = _F32(0.693147180559945309)
_L32_SQRTH = _F32(0.707106781186547524)
_L32_TINY = _F32(1.17549435e-38)
_L32_UP = _F32(16777216.0)      # 2**24
_L32_UPE = _F32(24.0)


@njit(**_JIT)
def log_f32(x):
    den = x < _L32_TINY
    xs = x * _L32_UP if den else x
    m, e = _frexp_f32(xs)
    e = e - _L32_UPE if den else e
    small = m < _L32_SQRTH
    m = m + m if small else m
    e = e - _ONE32 if small else e
    s = (m - _ONE32) / (m + _ONE32)
    s2 = s * s
    q = _F32(2.0 / 9.0) * s2 + _F32(2.0 / 7.0)
    q = q * s2 + _F32(2.0 / 5.0)
    q = q * s2 + _F32(2.0 / 3.0)
    q = q * s2 + _F32(2.0)
    y = s * q + e * _L32_LN2
    inf = _F32(np.inf)
    y = inf if x == inf else y
    y = -inf if x == _F32(0.0) else y
    y = _F32(np.nan) if x < _F32(0.0) else y
    return y if x == x else x


_L64_LN2HI = _F64(6.93147180369123816490e-01)
_L64_LN2LO = _F64(1.90821492927058770002e-10)
_L64_SQRTH = _F64(0.70710678118654752440)
_L64_TINY = _F64(2.2250738585072014e-308)
_L64_UP = _F64(18014398509481984.0)    # 2**54
_L64_UPE = _F64(54.0)


@njit(**_JIT64)
def log_f64(x):
    den = x < _L64_TINY
    xs = x * _L64_UP if den else x
    m, e = _frexp_f64(xs)
    e = e - _L64_UPE if den else e
    small = m < _L64_SQRTH
    m = m + m if small else m
    e = e - _ONE64 if small else e
    f = m - _ONE64
    s = f / (m + _ONE64)
    s2 = s * s
    # 2*atanh(s) = 2s + 2s^3/3 + ... ; |s| <= 0.1716, terms to s**23
    q = _F64(2.0 / 23.0) * s2 + _F64(2.0 / 21.0)
    q = q * s2 + _F64(2.0 / 19.0)
    q = q * s2 + _F64(2.0 / 17.0)
    q = q * s2 + _F64(2.0 / 15.0)
    q = q * s2 + _F64(2.0 / 13.0)
    q = q * s2 + _F64(2.0 / 11.0)
    q = q * s2 + _F64(2.0 / 9.0)
    q = q * s2 + _F64(2.0 / 7.0)
    q = q * s2 + _F64(2.0 / 5.0)
    q = q * s2 + _F64(2.0 / 3.0)
    y = e * _L64_LN2HI + ((s + s) + (s * s2 * q + e * _L64_LN2LO))
    inf = _F64(np.inf)
    y = inf if x == inf else y
    y = -inf if x == _F64(0.0) else y
    y = _F64(np.nan) if x < _F64(0.0) else y
    return y if x == x else x


# ---------------------------------------------------------------------------
# Generic, dtype-dispatching entry points. In plain Python they fall back to
# numpy; inside @njit code they resolve at compile time to the *_f32/*_f64
# implementations above (inlined).
# ---------------------------------------------------------------------------
def exp(x):
    return np.exp(x)


def tanh(x):
    return np.tanh(x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log(x):
    return np.log(x)


def relu(x):
    return np.maximum(x, 0)


def _register(generic, f32impl, f64impl):
    @overload(generic, inline="never")
    def _ov(x):
        if x == types.float32:
            return lambda x: f32impl(x)
        if x == types.float64:
            return lambda x: f64impl(x)
        return None


_register(exp, exp_f32, exp_f64)
_register(tanh, tanh_f32, tanh_f64)
_register(sigmoid, sigmoid_f32, sigmoid_f64)
_register(log, log_f32, log_f64)
_register(relu, relu_f32, relu_f64)
