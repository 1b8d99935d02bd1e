"""The conversion policy of graph inputs (documented in docs/dsl.md), shared by Model and every
compiled backend: float inputs of another float or integer dtype are converted to the input's
dtype; non-contiguous and Fortran-ordered arrays are copied to C order; integer inputs (lengths,
labels) must be integers and fit their dtype. Errors name the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.context import InputError
from ..ir.dtypes import DType
from ..ir.graph import Node


def convert_input(name: str, value: Any, node: Node) -> np.ndarray:
    """`value` as the array bound to the input `node` (named `name` in errors)."""
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise InputError(f"input {name!r}: expected a rectangular array of shape "
                         f"[{', '.join(map(str, node.shape))}], received nested sequences of "
                         f"different lengths ({e})") from None
    if a.dtype.hasobject:
        raise InputError(f"input {name!r}: expected {node.dtype} values, received object "
                         f"values (ragged nested lists or mixed types)")
    want = node.dtype.np
    if a.dtype != want:
        if node.dtype.is_float and (np.issubdtype(a.dtype, np.floating)
                                    or np.issubdtype(a.dtype, np.integer)
                                    or a.dtype == np.bool_):
            a = a.astype(want)
        elif node.dtype.is_int and np.issubdtype(a.dtype, np.integer):
            info = np.iinfo(want)
            if a.size and not np.can_cast(a.dtype, want) and (a.min() < info.min
                                                              or a.max() > info.max):
                bad = a.min() if a.min() < info.min else a.max()
                raise InputError(f"input {name!r}: values must fit {node.dtype} "
                                 f"[{info.min}, {info.max}], received {bad}")
            a = a.astype(want)
        elif node.dtype is DType.bool and a.dtype == np.bool_:
            pass
        else:
            raise InputError(f"input {name!r}: expected {node.dtype} values, received {a.dtype}"
                             + (" (lengths and labels must be integers)" if node.dtype.is_int
                                else ""))
    return np.asarray(a, order="C")  # C order; 0-d stays 0-d (unlike np.ascontiguousarray)
