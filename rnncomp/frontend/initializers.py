"""Parameter initializers (pure NumPy, TF1-compatible semantics).

Every initializer is a plain function ``init(shape, dtype, rng) -> np.ndarray``
built by a factory (``glorot_uniform()``, ``orthogonal(gain=2.0)``, ...).  The
factory/closure split mirrors ``tf.compat.v1`` initializers so that
hyperparameters are bound once while shape and dtype are supplied by the layer
that owns the parameter.  All randomness comes from the ``np.random.Generator``
passed in, so a seeded generator reproduces the same parameters bit for bit;
random draws are made in float64 and cast to ``dtype`` at the end so the values
do not depend on the requested precision beyond rounding.  That closure is
written once (``_initializer``): a factory validates its hyperparameters and
binds them into a small draw function, and the named ``VarianceScaling``
special cases (``he_normal``, ``glorot_uniform``, ...) are rows of a table.

Fan computation follows TF1 ``_compute_fans``: a 2-D ``[fan_in, fan_out]``
kernel (e.g. the fused LSTM kernel ``[I + H, 4 H]``) uses its two dimensions
directly; for N-D shapes the leading dimensions are a receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Initializer",
    "compute_fans",
    "constant",
    "get",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "lstm_bias",
    "names",
    "ones",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "variance_scaling",
    "zeros",
]

Initializer = Callable[[tuple[int, ...], npt.DTypeLike, np.random.Generator], np.ndarray]

# Standard deviation of a unit normal truncated to [-2, 2]; TF1 divides by it so
# that the *truncated* distribution has the requested variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def _shape(shape: tuple[int, ...] | int) -> tuple[int, ...]:
    """Normalise and validate a shape so every initializer rejects bad input alike."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        out = tuple(int(d) for d in shape)
    except TypeError as exc:
        raise ValueError(f"shape must be a tuple of ints, got {shape!r}") from exc
    if any(d < 0 for d in out):
        raise ValueError(f"shape must have non-negative dimensions, got {out}")
    return out


def _float_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """Random initializers only make sense for real floating dtypes."""
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise ValueError(f"random initializers need a floating dtype, got {dt}")
    return dt


def _check_rng(rng: np.random.Generator) -> None:
    """Refuse the legacy global RNG so results are always reproducible from a seed."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _truncated_unit_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Unit normal truncated to [-2, 2] by redrawing outliers (as TF's op does)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out


def compute_fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Return ``(fan_in, fan_out)`` with TF1 ``_compute_fans`` rules.

    Scalars count as 1, vectors use their length for both, 2-D shapes are
    ``[fan_in, fan_out]`` and higher ranks multiply the leading receptive field.
    """
    shape = _shape(shape)
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _initializer(
    draw: Callable[..., np.ndarray],
    *,
    random: bool = True,
    shape_first: bool = False,
    shape_rule: Callable[[tuple[int, ...]], None] | None = None,
) -> Initializer:
    """The one ``init(shape, dtype, rng)`` closure that every factory below returns.

    A factory only binds its hyperparameters into ``draw``; validation and the
    dtype policy live here once.  ``random=False`` (the constant family):
    ``draw(shape, dtype)`` builds the array in any dtype and ``rng`` is ignored.
    Otherwise the dtype must be floating and ``rng`` a ``Generator``, and
    ``draw(shape, rng)`` returns float64 values that are cast to ``dtype`` last.

    Which check runs first decides which error a call with two bad arguments
    gets, and the families have always differed: the plain distributions check
    dtype and rng before the shape, while the shape-dependent ones
    (``shape_first=True``) normalise the shape first and apply ``shape_rule``
    to it before looking at dtype and rng.
    """

    def init(
        shape: tuple[int, ...],
        dtype: npt.DTypeLike = np.float32,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        if not random:
            return draw(_shape(shape), dtype=dtype)
        if shape_first:
            shp = _shape(shape)
            if shape_rule is not None:
                shape_rule(shp)
        dt = _float_dtype(dtype)
        _check_rng(rng)
        if not shape_first:
            shp = _shape(shape)
        return draw(shp, rng).astype(dt)

    return init


def zeros() -> Initializer:
    """All zeros; the TF1 default for biases (including BasicLSTMCell's bias)."""
    return _initializer(np.zeros, random=False)


def ones() -> Initializer:
    """All ones, e.g. for layer-norm gains."""
    return _initializer(np.ones, random=False)


def constant(value: float) -> Initializer:
    """Every element equal to ``value`` (cast to the requested dtype)."""
    return _initializer(lambda shp, dtype: np.full(shp, value, dtype=dtype), random=False)


def random_uniform(lo: float = -0.05, hi: float = 0.05) -> Initializer:
    """Uniform on ``[lo, hi)``; defaults match TF1 ``random_uniform_initializer``-style use."""
    if not hi > lo:
        raise ValueError(f"random_uniform needs lo < hi, got lo={lo}, hi={hi}")
    return _initializer(lambda shp, rng: rng.uniform(lo, hi, size=shp))


def random_normal(std: float = 0.05, mean: float = 0.0) -> Initializer:
    """Untruncated normal with the given ``std`` (and ``mean``)."""
    if std < 0:
        raise ValueError(f"random_normal needs std >= 0, got {std}")
    return _initializer(lambda shp, rng: mean + std * rng.standard_normal(shp))


def truncated_normal(std: float = 0.05, mean: float = 0.0) -> Initializer:
    """Normal truncated at two ``std`` (TF semantics: ``std`` is *before* truncation)."""
    if std < 0:
        raise ValueError(f"truncated_normal needs std >= 0, got {std}")
    return _initializer(lambda shp, rng: mean + std * _truncated_unit_normal(shp, rng))


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def variance_scaling(
    scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
) -> Initializer:
    """TF1 ``VarianceScaling``: target variance ``scale / n`` with ``n`` chosen by ``mode``.

    ``truncated_normal`` divides the std by 0.87962566103423978 (the std of a
    unit normal truncated to [-2, 2]) so the *resulting* variance is
    ``scale / n``; ``uniform`` uses limit ``sqrt(3 * scale / n)``.  ``"normal"``
    is accepted as the TF1 alias of ``"truncated_normal"``.
    """
    if scale <= 0.0:
        raise ValueError(f"variance_scaling needs scale > 0, got {scale}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if distribution == "normal":
        distribution = "truncated_normal"
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")

    def draw(shp: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        fan_in, fan_out = compute_fans(shp)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        var = scale / max(1.0, n)
        if distribution == "truncated_normal":
            std = math.sqrt(var) / _TRUNCATED_NORMAL_STD
            return std * _truncated_unit_normal(shp, rng)
        if distribution == "untruncated_normal":
            return math.sqrt(var) * rng.standard_normal(shp)
        limit = math.sqrt(3.0 * var)
        return rng.uniform(-limit, limit, size=shp)

    return _initializer(draw, shape_first=True)


# TF1's named special cases of VarianceScaling, as data: name -> (scale, mode,
# distribution, docstring).  Each becomes a zero-argument factory of that name.
_VARIANCE_SCALING_PRESETS: dict[str, tuple[float, str, str, str]] = {
    "he_normal": (2.0, "fan_in", "truncated_normal",
                  "He et al. 2015 (TF1 ``he_normal``): truncated normal, variance ``2 / fan_in``."),
    "he_uniform": (2.0, "fan_in", "uniform",
                   "He uniform (TF1 ``he_uniform``): limit ``sqrt(6 / fan_in)``."),
    "glorot_uniform": (1.0, "fan_avg", "uniform",
                       "Glorot/Xavier uniform, TF1's default kernel initializer: limit "
                       "``sqrt(6/(in+out))``."),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal",
                      "Glorot/Xavier normal (TF1): truncated normal, variance "
                      "``2 / (fan_in + fan_out)``."),
    "lecun_normal": (1.0, "fan_in", "truncated_normal",
                     "LeCun normal (TF1): truncated normal, variance ``1 / fan_in``."),
    "lecun_uniform": (1.0, "fan_in", "uniform",
                      "LeCun uniform (TF1): limit ``sqrt(3 / fan_in)``."),
}


def _variance_scaling_preset(name: str) -> Callable[[], Initializer]:
    """The public zero-argument factory for one row of ``_VARIANCE_SCALING_PRESETS``."""
    scale, mode, distribution, doc = _VARIANCE_SCALING_PRESETS[name]

    def factory() -> Initializer:
        return variance_scaling(scale, mode, distribution)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


he_normal = _variance_scaling_preset("he_normal")
he_uniform = _variance_scaling_preset("he_uniform")
glorot_uniform = _variance_scaling_preset("glorot_uniform")
glorot_normal = _variance_scaling_preset("glorot_normal")
lecun_normal = _variance_scaling_preset("lecun_normal")
lecun_uniform = _variance_scaling_preset("lecun_uniform")


def _rank_at_least_2(shp: tuple[int, ...]) -> None:
    if len(shp) < 2:
        raise ValueError(f"orthogonal needs a shape of rank >= 2, got {shp}")


def orthogonal(gain: float = 1.0) -> Initializer:
    """(Semi-)orthogonal matrix times ``gain`` (Saxe et al.; TF1 ``Orthogonal``).

    TF1 rule: flatten the shape to 2-D as ``[prod(shape[:-1]), shape[-1]]``,
    QR-decompose a Gaussian matrix of the taller orientation, fix column signs
    with ``sign(diag(R))`` so the result is Haar-distributed, and transpose back
    if the matrix is wide.  So a tall matrix has orthonormal columns
    (``Q^T Q = I``) and a wide one, such as a fused ``[I + H, 4 H]`` RNN
    kernel with ``I + H < 4 H``, has orthonormal rows (``Q Q^T = I``).
    """

    def draw(shp: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        rows = int(np.prod(shp[:-1]))
        cols = shp[-1]
        if rows == 0 or cols == 0:
            return np.zeros(shp)
        flat = (cols, rows) if rows < cols else (rows, cols)
        a = rng.standard_normal(flat)
        q, r = np.linalg.qr(a, mode="reduced")
        d = np.sign(np.diag(r))
        d[d == 0] = 1.0  # measure-zero event, but keep Q orthogonal if it happens
        q = q * d
        if rows < cols:
            q = q.T
        return (gain * q).reshape(shp)

    return _initializer(draw, shape_first=True, shape_rule=_rank_at_least_2)


def lstm_bias(
    forget_bias: float,
    num_units: int,
    gate_order: str = "ijfo",
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """Build a fused LSTM bias vector ``[4 * num_units]`` whose forget-gate block is ``forget_bias``.

    Forget-bias convention: TF1 ``BasicLSTMCell`` keeps a zero-initialized
    bias and *adds* ``forget_bias`` (default 1.0) to the forget-gate
    pre-activation at run time, whereas PyTorch users usually fold it into the
    stored parameter by initializing the forget-gate slice of the bias to 1.
    Use this helper for the latter; with TF1-style cells leave the bias at zero
    or the offset is applied twice.  ``gate_order`` names the gate blocks in
    memory order: TF1 uses ``"ijfo"`` (input, new input ``j``, forget,
    output), PyTorch ``"ifgo"``; only the position of ``"f"`` matters.
    """
    if num_units < 0:
        raise ValueError(f"num_units must be >= 0, got {num_units}")
    if len(gate_order) != 4 or len(set(gate_order)) != 4 or "f" not in gate_order:
        raise ValueError(
            f"gate_order must be 4 distinct gate letters including 'f' "
            f"(e.g. 'ijfo' for TF1, 'ifgo' for PyTorch), got {gate_order!r}"
        )
    bias = np.zeros(4 * num_units, dtype=dtype)
    k = gate_order.index("f")
    bias[k * num_units : (k + 1) * num_units] = forget_bias
    return bias


_REGISTRY: dict[str, Callable[[], Initializer]] = {
    "zeros": zeros,
    "ones": ones,
    "random_uniform": random_uniform,
    "random_normal": random_normal,
    "truncated_normal": truncated_normal,
    "variance_scaling": variance_scaling,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal,
}


def names() -> list[str]:
    """Sorted names accepted by :func:`get`, so error messages and docs stay in sync."""
    return sorted(_REGISTRY)


def get(name_or_fn: str | Initializer) -> Initializer:
    """Resolve a string name (with default hyperparameters) or pass a callable through.

    Lets model configs say ``kernel_initializer="orthogonal"`` while still
    accepting a fully configured initializer object.
    """
    if callable(name_or_fn):
        return name_or_fn
    if isinstance(name_or_fn, str):
        key = name_or_fn.strip().lower()
        if key in _REGISTRY:
            return _REGISTRY[key]()
        raise ValueError(
            f"unknown initializer {name_or_fn!r}; valid names are: {', '.join(names())}"
        )
    raise TypeError(f"initializer must be a name or a callable, got {type(name_or_fn).__name__}")
