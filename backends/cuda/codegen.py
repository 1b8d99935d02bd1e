"""Render the elementwise parts of an optimized graph as numba.cuda kernels.

Every FUSED node (an elementwise group made by passes.fuse_elementwise) and every lone
elementwise op (also broadcast and random_uniform) becomes one kernel: a grid-stride loop over
the flattened iteration shape; each thread unflattens its index, loads its inputs with
broadcasting (size-1 axes read index 0; a slice on the last axis is read from its contiguous
base at an offset, like the CPU renderer), evaluates the group's scalar code and stores its
results. The scalar code comes from the op registry's shared templates (REGISTRY[op].render,
as on the CPU, through the CPU renderer's table): only what differs on a GPU is overridden here
(math.* instead of the CPU fast-math library, typed device functions for sigmoid/relu, the
counter-based hash as a device function, numba type names for casts).

Everything that is not elementwise (GEMMs, movement, reductions, scans) runs on the host side
of the executor (backends/cuda/compile.py) through CuPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rnncomp.ir.dtypes import DType
from rnncomp.ir import Graph, GroupOp, Node, Op, toposort
from rnncomp.ir.ops import REGISTRY, scan_info

from ..render import NP_DT, render_scalar, template

# GPU overrides of the shared scalar templates (backends/render.py, then REGISTRY[op].render)
CUDA_RENDER = {
    Op.TANH: "math.tanh({0})",
    Op.EXP: "math.exp({0})",
    Op.LOG: "math.log({0})",
    Op.SQRT: "math.sqrt({0})",
}
_TYPED = {Op.SIGMOID: "sigmoid", Op.RELU: "relu"}  # rt.sigmoid_f32 etc: typed constants inside
NB_DT = {DType.f32: "float32", DType.f64: "float64", DType.i32: "int32", DType.i64: "int64"}

ELEMENTWISE = GroupOp.Elementwise | {Op.RANDOM_UNIFORM, Op.BROADCAST}


def cuda_template(op: Op) -> str | None:
    """The scalar template of an op on the GPU: CUDA override, else the shared one."""
    return template(op, CUDA_RENDER)


# ------------------------------------------------------------------------------------------
# host / device placement of scalars
# ------------------------------------------------------------------------------------------
def mirrored_inputs(graph: Graph) -> set[int]:
    """Integer and bool graph inputs with an array shape: kept on the host too (lengths)."""
    return {id(n) for n in graph.inputs
            if n.shape != () and n.dtype is not None and not n.dtype.is_float}


def classify(graph: Graph, host: set[int], mirrored: set[int], top: bool = True) -> None:
    """Add to `host` the ids of scalar nodes computed on the host (NumPy, no device sync):
    constants, scalar inputs, the scan step, and scalar ops of those (or of mirrored inputs).
    Recurses into scan bodies; device scalars are 0-d CuPy arrays."""
    if top:
        for n in graph.inputs:
            if n.shape == ():
                host.add(id(n))
    for n in graph.nodes:
        if n.op is Op.SCAN:
            _classify_scan(n, host, mirrored)
            continue
        if n.shape != () or id(n) in host:
            continue
        if n.op in (Op.CONST, Op.FULL, Op.DIMSIZE):
            host.add(id(n))
        elif n.op is Op.ITEM:
            src = n.inputs[0]
            if src.op is Op.SCAN and ("scan", id(src), n.attr("index")) in host:
                host.add(id(n))
        elif n.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER):
            pass
        elif n.inputs and all(id(i) in host or id(i) in mirrored for i in n.inputs) and \
                n.op not in (Op.SCAN, Op.FUSED, Op.MATMUL, Op.TENSORDOT):
            host.add(id(n))


def _classify_scan(n: Node, host: set[int], mirrored: set[int]) -> None:
    info = scan_info(n)
    body: Graph = n.attr("body")
    b_in = body.inputs
    carries = list(range(info.n_carry))
    inv0 = 1 + info.n_carry + info.n_xs
    assumed = {k for k in carries if id(n.inputs[k]) in host}
    for _ in range(info.n_carry + 1):
        bh: set[int] = set(host)
        bh.add(id(b_in[0]))
        for k in assumed:
            bh.add(id(b_in[1 + k]))
        for j, pn in enumerate(b_in[inv0:]):
            if id(n.inputs[info.n_carry + info.n_xs + j]) in host:
                bh.add(id(pn))
        classify(body, bh, set(), top=False)
        bad = {k for k in assumed if id(body.outputs[k]) not in bh}
        if not bad:
            break
        assumed -= bad
    host |= bh
    for k in assumed:
        host.add(("scan", id(n), k))  # type: ignore[arg-type]


def scan_carries_host(n: Node, host: set) -> set[int]:
    return {k for k in range(scan_info(n).n_carry) if ("scan", id(n), k) in host}


# ------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------
@dataclass
class KernelSpec:
    name: str
    node: Node                    # the FUSED node or the lone elementwise node
    outs: list[Node]              # nodes whose values the kernel stores (in order o0, o1, ..)
    args: list[Node]              # outer nodes passed after the outputs (a0, a1, ..)
    kinds: list[str]              # "array" | "host" (host scalar) | "dev" (1-element array)
    scalar_iter: bool             # iteration shape () (one element, outputs are 1-element)
    source: str = ""
    arg_dtypes: list = field(default_factory=list)  # (dtype, ndim) of every argument (PTX)


class _Consts:
    def __init__(self):
        self.table: dict[tuple, str] = {}

    def __call__(self, value, dtype: DType) -> str:
        # inf/nan (an attention mask's -inf score) have no Python literal: float('-inf')
        finite = not isinstance(value, float) or abs(value) < float("inf")
        key = (repr(value) if finite else f"float('{value!r}')", dtype)
        if key not in self.table:
            self.table[key] = f"_C{len(self.table)}"
        return self.table[key]

    def defs(self) -> list[str]:
        return [f"{name} = {NP_DT[dt]}({v})" for (v, dt), name in self.table.items()]


def _slice_base(x: Node) -> tuple[Node, int] | None:
    """(contiguous base, offset) for a chain of last-axis slices, else None."""
    off = 0
    base = x
    while base.op is Op.SLICE and base.attr("axis") == base.ndim - 1:
        off += base.attr("start")
        base = base.inputs[0]
    return (base, off) if base is not x else None


def _scalar_expr(n: Node, args: list[str], const: _Consts, flat: str) -> str:
    return render_scalar(n, args, flat, dtype_names=NB_DT, typed_math=_TYPED, math_prefix="rt",
                         template=cuda_template, backend="CUDA")


def render_kernel(name: str, node: Node, host: set[int], const: _Consts) -> KernelSpec:
    """One kernel for a FUSED node or a lone elementwise node."""
    if node.op is Op.FUSED:
        body: Graph = node.attr("body")
        order = [x for x in toposort(body.outputs) if x.op not in (Op.PLACEHOLDER, Op.CONST)]
        outs_inner = list(body.outputs)
        leaf_outer = {id(p): o for p, o in zip(body.inputs, node.inputs)}
        out_nodes = outs_inner
    else:
        order = [node]
        outs_inner = [node]
        leaf_outer = {id(i): i for i in node.inputs if i.op is not Op.CONST}
        out_nodes = [node]
    shape = outs_inner[0].shape
    r = len(shape)
    args: list[Node] = []
    kinds: list[str] = []
    argname: dict[tuple[int, str], str] = {}

    def arg(outer: Node, kind: str) -> str:
        key = (id(outer), kind)
        if key not in argname:
            argname[key] = f"a{len(args)}"
            args.append(outer)
            kinds.append(kind)
        return argname[key]

    idx = [f"i{k}" for k in range(r)]
    body_lines: list[str] = []
    vals: dict[int, str] = {}
    counter = [0]

    def load(x: Node) -> str:
        if id(x) in vals:
            return vals[id(x)]
        if x.op is Op.CONST:
            return const(x.attr("value"), x.dtype)
        outer = leaf_outer[id(x)]
        if outer.op is Op.CONST:
            return const(outer.attr("value"), outer.dtype)
        if outer.shape == ():
            if id(outer) in host:
                return arg(outer, "host")
            return arg(outer, "dev") + "[0]"
        xs = outer.shape
        off = r - len(xs)
        sub = ["0" if (d == 1 and shape[off + j] != 1) else idx[off + j]
               for j, d in enumerate(xs)]
        sb = _slice_base(outer)
        if sb is not None and sub[-1] != "0":
            base, o = sb
            sub[-1] = f"{sub[-1]} + {o}"
            return f"{arg(base, 'array')}[{', '.join(sub)}]"
        return f"{arg(outer, 'array')}[{', '.join(sub)}]"

    for x in order:
        a = [load(i) for i in x.inputs]
        counter[0] += 1
        t = f"e{counter[0]}"
        body_lines.append(f"{t} = {_scalar_expr(x, a, const, 'i')}")
        vals[id(x)] = t
    stores = []
    for k, o in enumerate(outs_inner):
        src = vals[id(o)] if id(o) in vals else load(o)
        dst = f"o{k}[{', '.join(idx)}]" if r else f"o{k}[0]"
        stores.append(f"{dst} = {src}")
    params = [f"o{k}" for k in range(len(outs_inner))] + [f"a{k}" for k in range(len(args))]
    lines = ["@cuda.jit(cache=True)", f"def {name}({', '.join(params)}):"]
    if r:
        lines.append("    n = o0.size")
        for k in range(1, r):
            d = shape[k]
            lines.append(f"    d{k} = {d if isinstance(d, int) else f'o0.shape[{k}]'}")
    else:
        lines.append("    n = 1")
    lines.append("    for i in range(cuda.grid(1), n, cuda.gridsize(1)):")
    ind = " " * 8
    if r:
        if r == 1:
            lines.append(ind + "i0 = i")
        else:
            lines.append(ind + "q = i")
            for k in range(r - 1, 0, -1):
                lines.append(ind + f"i{k} = q % d{k}")
                lines.append(ind + f"q = q // d{k}")
            lines.append(ind + "i0 = q")
    lines += [ind + s for s in body_lines + stores]
    spec = KernelSpec(name, node, out_nodes, args, kinds, r == 0)
    spec.source = "\n".join(lines) + "\n"
    spec.arg_dtypes = [(o.dtype, max(1, len(o.shape))) for o in outs_inner] + \
        [(a.dtype, 0 if k == "host" else (1 if k == "dev" else len(a.shape)))
         for a, k in zip(args, kinds)]
    return spec


def collect(graph: Graph) -> list[Node]:
    """Every node that becomes a kernel, in a deterministic order (scan bodies included)."""
    out: list[Node] = []
    seen: set[int] = set()

    def walk(g: Graph) -> None:
        for n in g.nodes:
            if n.op is Op.SCAN:
                walk(n.attr("body"))
            elif (n.op is Op.FUSED or n.op in ELEMENTWISE) and id(n) not in seen:
                seen.add(id(n))
                out.append(n)

    walk(graph)
    return out


def render(graph: Graph, host: set[int]) -> tuple[str, dict[int, KernelSpec]]:
    """The kernel module's source and, per kernel node id, its spec. Scalar elementwise nodes
    computed on the host get no kernel."""
    const = _Consts()
    specs: dict[int, KernelSpec] = {}
    chunks = []
    for n in collect(graph):
        if n.shape == () and id(n) in host:
            continue
        spec = render_kernel(f"k{len(specs)}", n, host, const)
        specs[id(n)] = spec
        chunks.append(spec.source)
    src = [
        '"""Generated by rnncomp (CUDA backend): do not edit."""',
        "import math",
        "import numpy as np",
        "from numba import cuda, float32, float64, int32, int64",
        "from rnncomp.backends.cuda import runtime as rt",
        "",
        *const.defs(),
        "",
        "",
        "\n\n".join(chunks),
    ]
    return "\n".join(src), specs
