"""Element types of the IR and their NumPy equivalents.

The IR uses a closed set of element types, named like jaxpr does (f32, f64, i32, i64, bool), so
the printed form is short and the cache key is stable across NumPy versions.
"""

from __future__ import annotations

import enum

import numpy as np


class DType(enum.Enum):
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def np(self) -> np.dtype:
        return _TO_NP[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


_TO_NP = {
    DType.f32: np.dtype(np.float32),
    DType.f64: np.dtype(np.float64),
    DType.i32: np.dtype(np.int32),
    DType.i64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}
_FROM_NP = {v: k for k, v in _TO_NP.items()}

f32, f64, i32, i64, bool_ = DType.f32, DType.f64, DType.i32, DType.i64, DType.bool


def as_dtype(x: object) -> DType:
    """Accept a DType, its name ("f32", "float32"), or anything np.dtype accepts."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in DType.__members__:
        return DType[x]
    try:
        d = np.dtype(x)  # type: ignore[call-overload]
    except TypeError as e:
        raise ValueError(f"dtype: expected one of f32, f64, i32, i64, bool; received {x!r}") from e
    if d not in _FROM_NP:
        raise ValueError(f"dtype: expected one of f32, f64, i32, i64, bool; received {d}")
    return _FROM_NP[d]
