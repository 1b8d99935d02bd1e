"""The evaluation context every op's NumPy `impl(ctx, attrs, *arrays)` receives: symbolic
dimensions bound from the arrays given for a graph's inputs, the debug switch for non-finite
values, and the time steps of the scans being evaluated (for error messages).

It is part of the op contract (rnncomp.ir.ops), so it lives in the IR; the interpreter
(rnncomp.runtime.interp) and constant folding (rnncomp.transforms.passes) both create one.
"""

from __future__ import annotations

import numpy as np

from .graph import Node, Shape, resolve_dim, shape_str


class InputError(ValueError):
    """An array given to a graph does not match the input it is bound to."""


class NonFiniteError(FloatingPointError):
    """Debug mode found a NaN or Inf; the message names the op and the time step."""


class Context:
    def __init__(self, check_finite: bool = False):
        self.dims: dict[str, int] = {}
        self.check_finite = check_finite
        self.steps: list[int] = []
        self.names: dict[int, str] | None = None

    def bind(self, node: Node, value: np.ndarray, what: str) -> None:
        shape = node.shape
        if value.ndim != len(shape):
            raise InputError(f"{what}: expected rank {len(shape)} [{shape_str(shape)}], received "
                             f"shape {tuple(value.shape)}")
        for k, (d, v) in enumerate(zip(shape, value.shape)):
            if isinstance(d, str):
                if d in self.dims and self.dims[d] != v:
                    raise InputError(
                        f"{what}: dimension {k} is {d} = {self.dims[d]} elsewhere, received {v} "
                        f"(shape {tuple(value.shape)})")
                self.dims[d] = v
            elif d != v:
                raise InputError(f"{what}: expected shape [{shape_str(shape)}], received "
                                 f"{tuple(value.shape)} (dimension {k} should be {d})")

    def resolve(self, shape: Shape) -> tuple[int, ...]:
        try:
            return tuple(resolve_dim(d, self.dims) for d in shape)
        except KeyError as e:
            raise InputError(f"symbolic dimension {e.args[0]!r} is not bound by any input") from e
