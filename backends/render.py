"""Scalar rendering shared by every backend: an elementwise node -> one Python expression that
Numba (CPU) and numba-cuda (GPU) both compile.

The per-op templates live in the op registry (rnncomp.ir.ops, `render`); SHARED_RENDER adds the
renderings both backends agree on that differ from the registry's, and each backend passes its
own overrides (fast math on the CPU, libdevice math on the GPU) to `template`. Imports only
rnncomp.ir: no Numba.
"""

from __future__ import annotations

from rnncomp.ir.dtypes import DType
from rnncomp.ir.graph import Node, Op
from rnncomp.ir.ops import REGISTRY

# dtype constructors as written in generated code (module-level `import numpy as np`)
NP_DT = {DType.f32: "np.float32", DType.f64: "np.float64", DType.i32: "np.int32",
         DType.i64: "np.int64", DType.bool: "np.bool_"}

SHARED_RENDER = {
    Op.AND: "({0} & {1})",
    Op.OR: "({0} | {1})",
    Op.NOT: "(not {0})",
    Op.STOP_GRADIENT: "{0}",
}


def template(op: Op, overrides: dict) -> str | None:
    """A backend's scalar template for `op`: its override, else the shared one, else the
    registry's."""
    return overrides.get(op) or SHARED_RENDER.get(op) or REGISTRY[op].render


def render_scalar(n: Node, args: list[str], flat_index: str, *, dtype_names: dict,
                  typed_math: dict, math_prefix: str, template, backend: str) -> str:
    """Scalar code for one elementwise node, shared by the CPU and CUDA renderers; each passes
    what differs: its dtype constructor names, its typed math functions (`{prefix}.{name}_f32`)
    and its template lookup (overrides first, then the shared registry table)."""
    op = n.op
    if op is Op.CAST:
        dt = n.attr("dtype")
        return f"({args[0]} != 0)" if dt is DType.bool else f"{dtype_names[dt]}({args[0]})"
    if op is Op.BROADCAST:
        return args[0]
    if op is Op.RANDOM_UNIFORM:
        index = f"({flat_index} + {args[3]})" if len(args) > 3 else flat_index
        return (f"{dtype_names[n.dtype]}(rt.hash_uniform({args[1]}, {n.attr('site')}, "
                f"{args[2]}, {index}))")
    if op in typed_math and n.dtype in (DType.f32, DType.f64):
        return f"{math_prefix}.{typed_math[op]}_{n.dtype.value}({args[0]})"
    tmpl = template(op)
    if tmpl is None:
        raise NotImplementedError(f"{backend} backend: no scalar rendering for {op.value}")
    return tmpl.format(*args)
