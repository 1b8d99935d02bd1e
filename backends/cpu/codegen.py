"""Render an optimized graph to Python source for Numba: one kernel function, plus one function
per top-level time loop (Numba's compile time grows faster than linearly with function size).

The time loop stays a loop (a scan renders as `for _it in range(n)`), every scan-body value
lives in a buffer allocated before the loop (no per-step allocation), fused elementwise groups
become one loop nest over their iteration shape with scalar code from the per-op template
table (rnncomp.ir.ops render strings, backends/render.py, with CPU overrides), float constants are typed module-level
globals (np.float32(...)): Python float literals would promote float32 math to float64.
"""

from __future__ import annotations

import re

from rnncomp.ir.dtypes import DType
from rnncomp.ir import Graph, GroupOp, Node, Op, rows, toposort
from rnncomp.ir.graph import derived_dim, users
from rnncomp.ir.ops import REGISTRY, scan_info
from rnncomp.transforms.passes import row_group_shape

from ..render import NP_DT, render_scalar, template

# CPU overrides of the shared scalar templates: fast, vectorizable math (no libm tanh calls)
CPU_RENDER = {
    Op.SIGMOID: "fm.sigmoid({0})",
    Op.TANH: "fm.tanh({0})",
    Op.EXP: "fm.exp({0})",
    Op.LOG: "fm.log({0})",
    Op.RELU: "fm.relu({0})",
    Op.SQRT: "np.sqrt({0})",
}


# dtype-specific entry points of the fast math library (called directly: no overload dispatch)
_TYPED_MATH = {Op.SIGMOID: "sigmoid", Op.TANH: "tanh", Op.EXP: "exp", Op.LOG: "log",
               Op.RELU: "relu"}


# no 'arcp' (fastmath.FASTMATH_FLAGS has it): LLVM applies the reciprocal rewrite of x / s
# differently to a serial loop and to Numba's outlined prange body, so kernels compiled for one
# and for several threads differed in the last bits wherever a cell divides (a layer norm)
JIT_LINE = "@njit(cache=True, error_model='numpy', nogil=True, fastmath={'contract', 'afn'})"
# functions with prange loops: only the explicit prange loops run in parallel (Numba's other
# automatic parallelizations, e.g. of np.sum, would make results depend on the thread count)
JIT_LINE_PAR = JIT_LINE[:-1] + (", parallel={'prange': True, 'comprehension': False, "
                                "'reduction': False, 'inplace_binop': False, 'setitem': False, "
                                "'numpy': False, 'stencil': False, 'fusion': False})")


class Emitter:
    def __init__(self, literal_sizes: bool = False):
        self.consts: dict[tuple, str] = {}
        # concrete sizes are run-time values (see `size`): slot k of the kernel's `sz` argument
        # holds sizes[k]
        self.literal_sizes = literal_sizes
        self.sizes: list[int] = []
        self.counter = 0
        self.dims: dict[str, str] = {}
        self.slices: dict[int, tuple[str, int]] = {}  # id(slice node) -> (base expr, offset)
        self.functions: list[str] = []  # separately compiled loop functions (source lines)
        # a scan with the `rows` hint (rnncomp.ir.rows): per-row body values by id -> the
        # variable holding the step's number of active rows; masks true on active rows
        self.row_of: dict[int, str] = {}
        self.true_masks: set[int] = set()
        self.users: dict[int, list[Node]] = {}  # the top-level graph's users of each node
        self.outputs: set[int] = set()
        self.parallel = False  # fused loop nests iterate their first axis with prange
        self.used_prange = False  # the function being rendered has a prange loop
        self.any_prange = False  # the module has one

    def fresh(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value, dtype: DType) -> str:
        # inf/nan (an attention mask's -inf score) have no Python literal: float('-inf')
        finite = not isinstance(value, float) or abs(value) < float("inf")
        key = (repr(value) if finite else f"float('{value!r}')", dtype)
        if key not in self.consts:
            self.consts[key] = f"_C{len(self.consts)}"
        return self.consts[key]

    def const_defs(self) -> list[str]:
        out = []
        for (value, dtype), name in self.consts.items():
            out.append(f"{name} = {NP_DT[dtype]}({value})")
        return out

    def shape(self, shape) -> str:
        parts = [self.dim(d) for d in shape]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def dim(self, d) -> str:
        der = derived_dim(d)
        if der is not None and d not in self.dims:  # ceil(T/k): segments of a time axis
            return f"(({self.dim(der[0])} + {der[1] - 1}) // {der[1]})"
        return self.dims[d] if isinstance(d, str) else self.size(d)

    def size(self, value: int) -> str:
        """A concrete size (a dim, or an offset or bound computed from dims) as a run-time value:
        a new slot of `sz`, read into the local z<k> at the top of the function, so that graphs
        that differ only in sizes render the same source and share one compiled kernel. Every
        decision codegen takes from a size (a broadcast index 0, an offset 0) is written into
        the source instead, so a kernel never runs with sizes it was not rendered for."""
        if self.literal_sizes:
            return str(value)
        k = len(self.sizes)
        self.sizes.append(int(value))
        return f"z{k}"

    def offset(self, value: int) -> str:
        """An offset: 0 stays a literal (a structural fact: the first part, the first column)."""
        return self.size(value) if value else "0"


_SIZES_HERE = "    # (sizes)"  # where a function's sizes are unpacked (see _bind_sizes)
_SLOT = re.compile(r"\bz(\d+)\b")


def _bind_sizes(src: str, sizes: list[int]) -> tuple[str, list[int]]:
    """Number the size slots the source reads in order of first use (render asks for more than
    it writes: shapes it does not print) and unpack each function's slots at its top. max(., 0):
    LLVM then knows that `i + z` >= 0 and drops the negative-index wraparound, which otherwise
    keeps loops reading at run-time offsets from vectorizing (13x slower)."""
    order: dict[int, int] = {}
    for m in _SLOT.finditer(src):
        order.setdefault(int(m.group(1)), len(order))
    src = _SLOT.sub(lambda m: f"z{order[int(m.group(1))]}", src)
    parts = src.split(_SIZES_HERE + "\n")
    for k in range(1, len(parts)):
        body = parts[k].split("\n@njit", 1)[0]
        used = sorted({int(m.group(1)) for m in _SLOT.finditer(body)})
        parts[k] = "".join(f"    z{j} = max(sz[{j}], 0)\n" for j in used) + parts[k]
    return "".join(parts), [sizes[old] for old, _ in sorted(order.items(), key=lambda kv: kv[1])]


class Block:
    """Lines at one indentation, plus the pre-loop section where buffers go."""

    def __init__(self, lines: list[str], indent: int, pre: list[str] | None, pre_indent: int):
        self.lines = lines
        self.indent = indent
        self.pre = pre
        self.pre_indent = pre_indent
        self.direct: dict[tuple[int, int], str] = {}  # (id(fused), k) -> ys row to write into
        self.concat_into: dict[tuple[int, int], tuple[Node, int]] = {}  # -> (concat, offset)
        self.direct_concat: dict[int, str] = {}  # id(concat) -> ys row it is written into
        self.into: dict[int, str] = {}  # id(matmul) -> the buffer it writes (a carry's next)
        # (id(scan), k) -> the enclosing loop's ys row that a nested scan's stacked output k is
        # written into (a segment's outputs go straight into the segmented result)
        self.direct_scan: dict[tuple[int, int], str] = {}

    def emit(self, s: str) -> None:
        self.lines.append(" " * self.indent + s)

    def alloc(self, s: str) -> None:
        if self.pre is None:
            self.emit(s)
        else:
            self.pre.append(" " * self.pre_indent + s)

    @property
    def in_loop(self) -> bool:
        return self.pre is not None


def _is_scalar(n: Node) -> bool:
    return n.shape == ()


def render(graph: Graph, fn_name: str = "kernel", parallel: bool = False,
           literal_sizes: bool = False) -> tuple[str, list[int]]:
    """The module source and its sizes: the kernel takes the graph's inputs and then `sz`, an
    int64 array of these sizes (Emitter.size; literal_sizes: render them as literals instead,
    and `sz` is empty). parallel: the fused loop nests of rank >= 2 split their first axis
    (the batch rows of a cell) over Numba's threads; each row is computed by one thread with
    the same code, so results do not depend on the thread count."""
    em = Emitter(literal_sizes)
    em.parallel = parallel
    names: dict[int, str] = {}
    args = []
    prologue = []
    for k, n in enumerate(graph.inputs):
        a = f"a{k}"
        args.append(a)
        names[id(n)] = a
        for j, d in enumerate(n.shape):
            if isinstance(d, str) and d not in em.dims:
                em.dims[d] = f"d_{d}"
                prologue.append(f"    d_{d} = {a}.shape[{j}]")
    body: list[str] = []
    blk = Block(body, 4, None, 4)
    for n in graph.nodes:
        for i in n.inputs:
            em.users.setdefault(id(i), []).append(n)
    em.outputs = {id(o) for o in graph.outputs}
    _emit_graph(graph, em, names, blk)
    outs = ", ".join(names[id(o)] if o.op is not Op.CONST else em.const(o.attr("value"), o.dtype)
                     for o in graph.outputs)
    src = [
        '"""Generated by rnncomp: do not edit (regenerated from the optimized graph)."""',
        "import math",
        "import numpy as np",
        "from numba import njit, prange" if em.any_prange else "from numba import njit",
        "from rnncomp.backends.cpu import fastmath as fm",
        "from rnncomp.backends.cpu import runtime as rt",
        "",
        *em.const_defs(),
        "",
        *em.functions,
        "",
        JIT_LINE_PAR if em.used_prange else JIT_LINE,
        f"def {fn_name}({', '.join(args + ['sz'])}):",
        *prologue,
        _SIZES_HERE,
        *body,
        f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})",
        "",
    ]
    if em.literal_sizes:
        return "\n".join(src).replace(_SIZES_HERE + "\n", ""), []
    return _bind_sizes("\n".join(src), em.sizes)


def _emit_graph(graph: Graph, em: Emitter, names: dict[int, str], blk: Block) -> None:
    # fused results gathered by a concat on the last axis are stored straight into the
    # concat's buffer (the cell's gate cotangents -> one [B, 4H] array, no copy)
    for n in graph.nodes:
        if n.op is Op.CONCAT and n.attr("axis") == n.ndim - 1 and all(
                i.op is Op.ITEM and i.inputs[0].op is Op.FUSED for i in n.inputs) and \
                len({id(i) for i in n.inputs}) == len(n.inputs):
            keys = [(id(i.inputs[0]), i.attr("index")) for i in n.inputs]
            # all parts or none: a part that already has a store target (a scan's ys row, or
            # another concat) keeps it, and this concat is then emitted as a copy
            if any(k in blk.concat_into or k in blk.direct for k in keys):
                continue
            off = 0
            for i, key in zip(n.inputs, keys):
                blk.concat_into[key] = (n, off)
                off += i.shape[-1]
    for n in graph.nodes:
        if id(n) in names:
            continue
        _emit_node(n, em, names, blk)


def _ref(n: Node, em: Emitter, names: dict[int, str]) -> str:
    if n.op is Op.CONST:
        return em.const(n.attr("value"), n.dtype)
    return names[id(n)]


def _emit_node(n: Node, em: Emitter, names: dict[int, str], blk: Block) -> None:
    op = n.op
    if op is Op.CONST:
        names[id(n)] = em.const(n.attr("value"), n.dtype)
        return
    ins = [_ref(i, em, names) for i in n.inputs]
    if op is Op.ITEM:
        names[id(n)] = names[id(n.inputs[0])][n.attr("index")]  # type: ignore[index]
        return
    if op is Op.SCAN:
        if blk.pre is None:
            names[id(n)] = _emit_scan_function(n, em, names, blk)  # type: ignore[assignment]
        else:  # a scan nested in a loop body stays inline
            names[id(n)] = _emit_scan(n, em, names, blk)  # type: ignore[assignment]
        return
    if op is Op.FUSED:
        body: Graph = n.attr("body")
        outs = []
        offsets = []
        for k, o in enumerate(body.outputs):
            v = em.fresh("f")
            direct = blk.direct.get((id(n), k))
            target = blk.concat_into.get((id(n), k))
            off = 0
            if _is_scalar(o):
                pass
            elif target is not None:
                cat, off = target
                if id(cat) not in names:
                    names[id(cat)] = em.fresh("v")
                    if id(cat) in blk.direct_concat:  # the concat is a scan output: ys[t]
                        blk.emit(f"{names[id(cat)]} = {blk.direct_concat[id(cat)]}")
                    else:
                        blk.alloc(f"{names[id(cat)]} = np.empty({em.shape(cat.shape)}, "
                                  f"{NP_DT[cat.dtype]})")
                v = names[id(cat)]
            elif direct is not None:
                blk.emit(f"{v} = {direct}")
            else:
                blk.alloc(f"{v} = np.empty({em.shape(o.shape)}, {NP_DT[o.dtype]})")
            outs.append(v)
            offsets.append(off)
        order = [x for x in toposort(body.outputs) if x.op not in (Op.PLACEHOLDER, Op.CONST)]
        leaf_of = {id(p): (s, i) for p, s, i in zip(body.inputs, ins, n.inputs)}
        S = row_group_shape(order)
        bound = em.row_of.get(id(n))
        if S:  # a row group (passes.fuse_rows): reductions inside the loop over the rows
            _emit_row_loop(order, leaf_of, S, list(body.outputs), outs, em, blk, offsets,
                           rows=bound)
        else:
            if bound is None and blk.pre is None:
                bound = _steps_bound(n, list(body.outputs), em, names, blk)
            _emit_loop(order, leaf_of, list(body.outputs), outs, em, blk, offsets, rows=bound)
        names[id(n)] = [o if not off and (id(n), k) not in blk.concat_into
                        else f"{o}[{', '.join([':'] * (body.outputs[k].ndim - 1))}, "
                             f"{em.offset(off)}:{em.size(off + body.outputs[k].shape[-1])}]"
                        for k, (o, off) in enumerate(zip(outs, offsets))]  # type: ignore
        for k, o in enumerate(body.outputs):
            direct = blk.direct.get((id(n), k))
            if direct is not None and (id(n), k) in blk.concat_into:
                # stored into a concat buffer and also a scan output: copy the row as well
                blk.lines.extend(copy_loop(direct, names[id(n)][k], o.shape, em, blk.indent,
                                           rows=em.row_of.get(id(n))))
        return
    v = em.fresh()
    names[id(n)] = v
    if op in GroupOp.Elementwise or op in (Op.RANDOM_UNIFORM, Op.BROADCAST):
        if _is_scalar(n):
            blk.emit(f"{v} = {_scalar_expr(n, ins, em, '0')}")
            return
        blk.alloc(f"{v} = np.empty({em.shape(n.shape)}, {NP_DT[n.dtype]})")
        leaf_of = {id(i): (s, i) for s, i in zip(ins, n.inputs)}
        bound = em.row_of.get(id(n))
        if bound is None and blk.pre is None:
            bound = _steps_bound(n, [n], em, names, blk)
        _emit_loop([n], leaf_of, [n], [v], em, blk, rows=bound)
        return
    x = ins[0] if ins else None
    rw = em.row_of.get(id(n))  # active rows of a hinted scan's step (None: all rows)
    sh = em.shape(n.shape) if n.shape is not None else None
    dt = NP_DT.get(n.dtype) if n.dtype is not None else None
    if op is Op.FULL:
        if _is_scalar(n):
            names[id(n)] = em.const(n.attr("value"), n.dtype)
            return
        blk.alloc(f"{v} = np.full({sh}, {em.const(n.attr('value'), n.dtype)}, {dt})")
        return
    if op is Op.MATMUL:
        a, b = n.inputs
        if a.ndim == 2 and rw is not None:
            blk.alloc(f"{v} = np.empty({sh}, {dt})")
            blk.emit(f"rt.mm({ins[0]}[:{rw}], {ins[1]}, {v}[:{rw}])")
        elif a.ndim == 2:
            if id(n) in blk.into:
                blk.emit(f"{v} = {blk.into[id(n)]}")
            else:
                blk.alloc(f"{v} = np.empty({sh}, {dt})")
            blk.emit(f"rt.mm({ins[0]}, {ins[1]}, {v})")
        else:
            m = " * ".join(em.dim(d) for d in a.shape[:-1])
            blk.emit(f"{v} = np.dot(np.ascontiguousarray({ins[0]}).reshape(({m}, "
                     f"{em.dim(a.shape[-1])})), np.ascontiguousarray({ins[1]})).reshape({sh})")
        return
    if op is Op.TENSORDOT:
        _emit_tensordot(n, ins, v, em, blk)
        return
    if op is Op.TRANSPOSE:
        blk.alloc(f"{v} = np.empty({sh}, {dt})")
        blk.lines.extend(copy_loop(v, x, n.shape, em, blk.indent, src_perm=n.attr("perm"),
                                   rows=rw))
        return
    if op is Op.RESHAPE:
        if _is_scalar(n.inputs[0]):
            blk.emit(f"{v} = np.full({sh}, {x}, {dt})")
        elif _is_scalar(n):
            blk.emit(f"{v} = {x}.ravel()[0]")
        else:
            blk.emit(f"{v} = np.ascontiguousarray({x}).reshape({sh})")
        return
    if op is Op.SLICE:
        ax = n.attr("axis")
        idx = ", ".join([":"] * ax + [f"{em.offset(n.attr('start'))}:{em.size(n.attr('stop'))}"])
        blk.emit(f"{v} = {x}[{idx}]")
        if ax == n.ndim - 1:
            # fused loops read the (contiguous) base at an offset instead of this strided view
            base, off = em.slices.get(id(n.inputs[0]), (x, 0))
            em.slices[id(n)] = (base, off + n.attr("start"))
        return
    if op is Op.PAD:
        ax, s = n.attr("axis"), n.attr("start")
        blk.alloc(f"{v} = np.zeros({sh}, {dt})")
        blk.lines.extend(copy_loop(v, x, n.inputs[0].shape, em, blk.indent,
                                   dst_off={ax: em.offset(s)}, rows=rw))
        return
    if op is Op.SEGMENT:  # a view when k divides T, else one zero-padded copy
        xn = n.inputs[0]
        r = " * ".join(em.dim(d) for d in xn.shape[1:]) or "1"
        blk.emit(f"{v} = rt.segment_rows(np.ascontiguousarray({x}).reshape(({em.dim(xn.shape[0])}, "
                 f"{r})), {n.attr('k')}).reshape({sh})")
        return
    if op is Op.UNSEGMENT:  # a view of the first T rows
        yn = n.inputs[0]
        r = " * ".join(em.dim(d) for d in yn.shape[2:]) or "1"
        blk.emit(f"{v} = np.ascontiguousarray({x}).reshape(({em.dim(yn.shape[0])} * "
                 f"{yn.shape[1]}, {r}))[:{em.dim(n.shape[0])}].reshape({sh})")
        return
    if op is Op.CONCAT and all((id(i.inputs[0]), i.attr("index")) in blk.concat_into
                               for i in n.inputs if i.op is Op.ITEM) and \
            all(i.op is Op.ITEM for i in n.inputs) and id(n) in names:
        return
    if op is Op.CONCAT:
        ax = n.attr("axis")
        if id(n) in blk.direct_concat:  # a scan output: assemble it in ys[t] directly
            blk.emit(f"{v} = {blk.direct_concat[id(n)]}")
        else:
            blk.alloc(f"{v} = np.empty({sh}, {dt})")
        off = 0
        for src, i in zip(ins, n.inputs):
            blk.lines.extend(copy_loop(v, src, i.shape, em, blk.indent,
                                       dst_off={ax: em.offset(off)}, rows=rw))
            off += i.shape[ax]
        return
    if op in (Op.REDUCE_SUM, Op.REDUCE_MAX):
        _emit_reduce(n, ins, v, em, blk)
        return
    if op is Op.TAKE:
        xn, idn = n.inputs
        m = " * ".join(em.dim(d) for d in idn.shape) or "1"
        blk.emit(f"{v} = rt.take_last(np.ascontiguousarray({ins[0]}).reshape(({m}, "
                 f"{em.dim(xn.shape[-1])})), np.ascontiguousarray({ins[1]}).reshape({m}))"
                 + (f".reshape({sh})" if n.ndim != 1 else ""))
        if _is_scalar(n):
            blk.emit(f"{v} = {v}[0]")
        return
    if op is Op.ONE_HOT:
        (idn,) = n.inputs
        m = " * ".join(em.dim(d) for d in idn.shape) or "1"
        depth = em.size(n.attr("depth"))
        blk.emit(f"{v} = rt.one_hot(np.ascontiguousarray({x}).reshape({m}), {depth}, "
                 f"np.empty(({m}, {depth}), {dt})).reshape({sh})")
        return
    if op is Op.DIMSIZE:
        blk.emit(f"{v} = {dt}({x}.shape[{n.attr('axis')}])")
        return
    if op is Op.GATHER:
        tn, idn = n.inputs
        m = " * ".join(em.dim(d) for d in idn.shape) or "1"
        r = " * ".join(em.dim(d) for d in tn.shape[1:]) or "1"
        call = (f"rt.gather_rows(np.ascontiguousarray({ins[0]}).reshape(({em.dim(tn.shape[0])}, "
                f"{r})), np.ascontiguousarray({ins[1]}).reshape({m}), np.empty(({m}, {r}), {dt}))")
        blk.emit(f"{v} = {call}[0, 0]" if _is_scalar(n) else f"{v} = {call}.reshape({sh})")
        return
    if op is Op.SCATTER_ADD:
        src, idn = n.inputs
        m = " * ".join(em.dim(d) for d in idn.shape) or "1"
        r = " * ".join(em.dim(d) for d in n.shape[1:]) or "1"
        rows_ = em.size(n.attr("rows"))
        blk.emit(f"{v} = rt.scatter_add_rows(np.ascontiguousarray({ins[0]}).reshape(({m}, {r})), "
                 f"np.ascontiguousarray({ins[1]}).reshape({m}), np.zeros(({rows_}, "
                 f"{r}), {dt})).reshape({sh})")
        return
    if op is Op.ARGSORT:
        blk.emit(f"{v} = rt.argsort_desc(np.ascontiguousarray({x}))")
        return
    if op is Op.PERMUTE:
        ax = n.attr("axis")
        pre = " * ".join(em.dim(d) for d in n.shape[:ax]) or "1"
        post = " * ".join(em.dim(d) for d in n.shape[ax + 1:]) or "1"
        x3 = (f"np.ascontiguousarray({x}).reshape(({pre}, {em.dim(n.shape[ax])}, {post})), "
              f"np.ascontiguousarray({ins[1]})")
        L0 = rows.steps_read(n, em.users, em.outputs) if blk.pre is None else None
        Lz = rows.zero_steps(n) if blk.pre is None else None
        if Lz is not None:  # results zero past max(L): copy the steps below it only
            blk.emit(f"{v} = rt.unpermute3_head({x3}, np.ascontiguousarray("
                     f"{_ref(Lz, em, names)})).reshape({sh})")
        elif L0 is not None:  # x [T, B, ...] sorted by length: the steps anyone reads only
            blk.emit(f"{v} = rt.permute3_head({x3}, np.ascontiguousarray({_ref(L0, em, names)}))"
                     f".reshape({sh})")
        else:
            blk.emit(f"{v} = rt.permute3({x3}, {bool(n.attr('inverse', False))}).reshape({sh})")
        return
    if op in (Op.RAGGED_MATMUL, Op.RAGGED_TENSORDOT):
        f = "rt.ragged_matmul" if op is Op.RAGGED_MATMUL else "rt.ragged_tensordot"
        # the input projection of hinted loops with these lengths: they read the valid rows
        # only, the others need not be zeroed
        zero = ""
        if op is Op.RAGGED_MATMUL:
            us = em.users.get(id(n), [])
            inner = id(n) not in em.outputs and bool(us)
            if inner and _valid_rows_only(n, em):
                zero = ", 0"
            elif inner and all(u.op is Op.PERMUTE and u.inputs[0] is n and
                               rows.zero_steps(u) is not None for u in us):
                zero = ", 2"  # read below max(L) only (dX permuted back)
            else:
                zero = ", 1"
        blk.emit(f"{v} = {f}(np.ascontiguousarray({ins[0]}), np.ascontiguousarray({ins[1]}), "
                 f"np.ascontiguousarray({ins[2]}){zero})")
        return
    if op is Op.ARGMAX:
        xn = n.inputs[0]
        ax = n.attr("axis")
        o = " * ".join(em.dim(d) for d in xn.shape[:ax]) or "1"
        i = " * ".join(em.dim(d) for d in xn.shape[ax + 1:]) or "1"
        call = (f"rt.argmax3(np.ascontiguousarray({x}).reshape(({o}, {em.dim(xn.shape[ax])}, "
                f"{i})), np.empty(({o}, {i}), {dt}))")
        blk.emit(f"{v} = {call}[0, 0]" if _is_scalar(n) else f"{v} = {call}.reshape({sh})")
        return
    raise NotImplementedError(f"CPU backend: no template for op {op.value}")


def _steps_bound(n: Node, outs: list[Node], em: Emitter, names: dict[int, str],
                 blk: Block) -> str | None:
    """The bound of axis 0 for a top-level elementwise loop whose results [T, ...] are read
    only as the x_t of loops with one run-time trip count (a variable-length batch: max(L)):
    the steps t >= that count are never read, so they are not computed (their rows stay
    unset). None when some reader reads every step."""
    readers = [u for it in em.users.get(id(n), []) for u in em.users.get(id(it), [])] \
        if n.op is Op.FUSED else em.users.get(id(n), [])
    if n.op is Op.FUSED:
        items = em.users.get(id(n), [])
        if not items or any(u.op is not Op.ITEM or id(u) in em.outputs for u in items):
            return None
        vals = items
    else:
        vals = [n]
    if id(n) in em.outputs or not readers or any(o.ndim < 2 for o in outs):
        return None
    length = None
    for u in readers:
        if u.op is not Op.SCAN:
            return None
        ui = scan_info(u)
        if not ui.has_length or (length is not None and u.inputs[-1] is not length):
            return None
        length = u.inputs[-1]
        vid = {id(v) for v in vals}
        xs = u.inputs[ui.n_carry:ui.n_carry + ui.n_xs]
        other = u.inputs[:ui.n_carry] + u.inputs[ui.n_carry + ui.n_xs:]
        if any(id(w) in vid for w in other) or not any(id(x) in vid for x in xs) or \
                any(x.shape[0] != outs[0].shape[0] for x in xs if id(x) in vid):
            return None
    if length is None or length.shape != () or not _cheap_cone(length, names):
        return None
    _emit_now(length, em, names, blk)
    return f"min(max(np.int64({_ref(length, em, names)}), 0), {em.dim(outs[0].shape[0])})"


def _cheap_cone(n: Node, names: dict[int, str]) -> bool:
    """n can be emitted ahead of its turn: what it needs and is not emitted yet holds no
    loop and no random draw (a length computed from the inputs: max(L))."""
    if id(n) in names or n.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER, Op.CONST):
        return True
    if n.op in (Op.SCAN, Op.RANDOM_UNIFORM, Op.FUSED):
        return False
    return all(_cheap_cone(i, names) for i in n.inputs)


def _emit_now(n: Node, em: Emitter, names: dict[int, str], blk: Block) -> None:
    """Emit a top-level node (and what it needs) ahead of its turn: a loop bound."""
    if id(n) in names or n.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER):
        return
    for i in n.inputs:
        _emit_now(i, em, names, blk)
    _emit_node(n, em, names, blk)


def _valid_rows_only(x: Node, em: Emitter) -> bool:
    """Every reader of the [T, B, ...] value x (a ragged op's result) is a hinted scan reading
    it as an x_t with the lengths of x's ragged op, directly or through row-local ops: the
    loop reads rows (t, b) with t < lengths[b] only (rnncomp.ir.rows.valid_rows_only)."""
    return rows.valid_rows_only(x, x.inputs[-1], em.users)


def _tail_unread(scan: Node, k: int, em: Emitter) -> bool:
    """The stacked ys k of a top-level scan with a length input is read at steps t < its trip
    count only: its users are loops with the same length input (BPTT residuals) or ragged ops
    with the scan's own sorted lengths; its rows t >= n need no zero fill."""
    info = scan_info(scan)
    if not info.has_length:
        return False
    L = rows.lengths_input(scan)
    its = [u for u in em.users.get(id(scan), [])
           if u.op is Op.ITEM and u.attr("index") == info.n_carry + k]
    for it in its:
        if id(it) in em.outputs:
            return False
        for u in em.users.get(id(it), []):
            if u.op is Op.SCAN:
                ui = scan_info(u)
                if not ui.has_length or u.inputs[-1] is not scan.inputs[-1] or \
                        any(v is it for v in u.inputs[:ui.n_carry]) or \
                        any(v is it for v in u.inputs[ui.n_carry + ui.n_xs:]):
                    return False
            elif u.op is Op.PERMUTE and u.inputs[0] is it and rows.zero_steps(u) is not None:
                continue  # copies the steps below max(L) only
            elif u.op not in (Op.RAGGED_MATMUL, Op.RAGGED_TENSORDOT) or L is None or \
                    u.inputs[-1] is not L:
                return False
    return bool(its)


def copy_loop(dst: str, src: str, shape, em: Emitter, indent: int, dst_off: dict | None = None,
              src_perm: tuple | None = None, lead: str = "", rows: str | None = None,
              op: str = "=") -> list[str]:
    """Explicit loops for dst[...] = src (optionally transposed / at an offset): slice
    assignment and ndarray.transpose cost seconds of Numba compile time each; loops don't.
    rows: the bound of axis 0 (a hinted scan's active rows) instead of its size; op="+=":
    accumulate instead."""
    r = len(shape)
    if r == 0:
        return [" " * indent + (f"{dst}[{lead[:-2]}] = {src}" if lead else f"{dst} = {src}")]
    idx = [em.fresh("j") for _ in range(r)]
    lines = []
    for k in range(r):
        bound = rows if k == 0 and rows is not None else em.dim(shape[k])
        lines.append(" " * (indent + 4 * k) + f"for {idx[k]} in range({bound}):")
    d_idx = [f"{i} + {dst_off[k]}" if dst_off and dst_off.get(k) not in (None, 0, "0") else i
             for k, i in enumerate(idx)]
    if src_perm is None:
        s_idx = idx
    else:  # out[i] = x[...] with out axis k = x axis perm[k]
        s_idx = [""] * r
        for k, p in enumerate(src_perm):
            s_idx[p] = idx[k]
    lines.append(" " * (indent + 4 * r) +
                 f"{dst}[{lead}{', '.join(d_idx)}] {op} {src}[{', '.join(s_idx)}]")
    return lines


def _emit_tensordot(n: Node, ins: list[str], v: str, em: Emitter, blk: Block) -> None:
    a, b = n.inputs
    aa, ba = list(n.attr("a_axes")), list(n.attr("b_axes"))
    a_free = [k for k in range(a.ndim) if k not in aa]
    b_free = [k for k in range(b.ndim) if k not in ba]
    K = " * ".join(em.dim(a.shape[k]) for k in aa) or "1"
    M = " * ".join(em.dim(a.shape[k]) for k in a_free) or "1"
    N = " * ".join(em.dim(b.shape[k]) for k in b_free) or "1"
    sh = em.shape(n.shape)
    if aa == list(range(len(aa))) and ba == list(range(len(ba))):
        # contraction over leading axes (weight gradients over all T*B rows): A^T B, no copies
        blk.emit(f"{v} = np.dot(np.ascontiguousarray({ins[0]}).reshape(({K}, {M})).T, "
                 f"np.ascontiguousarray({ins[1]}).reshape(({K}, {N}))).reshape({sh})")
        return
    pa = tuple(a_free + aa)
    pb = tuple(ba + b_free)
    blk.emit(f"{v} = np.dot(np.ascontiguousarray({ins[0]}.transpose({pa})).reshape(({M}, {K})), "
             f"np.ascontiguousarray({ins[1]}.transpose({pb})).reshape(({K}, {N})))"
             f".reshape({sh})")


def _emit_reduce(n: Node, ins: list[str], v: str, em: Emitter, blk: Block) -> None:
    (x,) = n.inputs
    axes = list(n.attr("axes"))
    is_sum = n.op is Op.REDUCE_SUM
    sh = em.shape(n.shape)
    if len(axes) == x.ndim:
        f = "np.sum" if is_sum else "np.max"
        if n.shape == ():
            blk.emit(f"{v} = {f}({ins[0]})")
        else:
            blk.emit(f"{v} = np.full({sh}, {f}({ins[0]}), {NP_DT[n.dtype]})")
        return
    keep = [k for k in range(x.ndim) if k not in axes]
    R = " * ".join(em.dim(x.shape[k]) for k in axes)
    M = " * ".join(em.dim(x.shape[k]) for k in keep)
    if is_sum and axes == list(range(len(axes))):
        blk.emit(f"{v} = rt.colsum(np.ascontiguousarray({ins[0]}).reshape(({R}, {M})))"
                 f".reshape({sh})")
        return
    perm = tuple(keep + axes)
    f = "rt.rowsum" if is_sum else "rt.rowmax"
    blk.emit(f"{v} = {f}(np.ascontiguousarray({ins[0]}.transpose({perm})).reshape(({M}, {R})))"
             f".reshape({sh})")


def cpu_template(op: Op) -> str | None:
    return template(op, CPU_RENDER)


def _scalar_expr(n: Node, args: list[str], em: Emitter, flat_index: str) -> str:
    return render_scalar(n, args, flat_index, dtype_names=NP_DT, typed_math=_TYPED_MATH,
                         math_prefix="fm", template=cpu_template, backend="CPU")


def _emit_loop(order: list[Node], leaf_of: dict[int, tuple[str, Node]], out_nodes: list[Node],
               outs: list[str], em: Emitter, blk: Block, offsets: list[int] | None = None,
               rows: str | None = None) -> None:
    """One loop nest over the iteration shape computing every node of `order` as scalar code;
    `leaf_of` maps the group's inputs to (expression, outer node) for broadcasting loads.
    rows: the bound of axis 0 (a hinted scan's active rows), where a validity mask is true."""
    shape = out_nodes[0].shape
    r = len(shape)
    idx = [f"i{k}" for k in range(r)]
    ind = blk.indent
    lines = []
    bounds = []
    for k in range(r):
        bound = rows if k == 0 and rows is not None else em.dim(shape[k])
        bounds.append(bound)
        rng = "prange" if k == 0 and r >= 2 and em.parallel else "range"
        lines.append(" " * (ind + 4 * k) + f"for {idx[k]} in {rng}({bound}):")
    em.used_prange = em.used_prange or (r >= 2 and em.parallel)
    em.any_prange = em.any_prange or em.used_prange
    inner = ind + 4 * r
    flat = "0"
    if r:
        flat = idx[0]
        for k in range(1, r):
            flat = f"({flat} * {em.dim(shape[k])} + {idx[k]})"
    vals: dict[int, str] = {}

    def load(x: Node) -> str:
        if id(x) in vals:
            return vals[id(x)]
        if x.op is Op.CONST:
            return em.const(x.attr("value"), x.dtype)
        expr, outer = leaf_of[id(x)]
        if rows is not None and id(outer) in em.true_masks:
            return "True"  # select(t < len, new, old) on an active row: new
        if outer.shape == ():
            return expr
        xs = outer.shape
        off = r - len(xs)
        sub = []
        for j, d in enumerate(xs):
            sub.append("0" if (d == 1 and shape[off + j] != 1) else idx[off + j])
        if id(outer) in em.slices and sub[-1] != "0":
            base, o = em.slices[id(outer)]
            sub[-1] = f"{sub[-1]} + {em.offset(o)}"
            return f"{base}[{', '.join(sub)}]"
        return f"{expr}[{', '.join(sub)}]"

    for node in order:
        args = [load(i) for i in node.inputs]
        t = em.fresh("e")
        lines.append(" " * inner + f"{t} = {_scalar_expr(node, args, em, flat)}")
        vals[id(node)] = t
    # several outputs stored into one buffer at run-time offsets (the gate blocks of a concat):
    # LLVM cannot prove such stores apart and runs the loop's scalar version (about 2.5x
    # slower), so each goes to a buffer of its own and is copied into place row by row (a
    # loop with one store stream vectorizes; the row is still in L1)
    shared = set()
    if r and offsets and any(offsets) and not em.literal_sizes:
        shared = {d for d in outs if outs.count(d) > 1}
    copies: list[str] = []
    for k, (o, dst) in enumerate(zip(out_nodes, outs)):
        src = vals[id(o)] if id(o) in vals else load(o)
        off = offsets[k] if offsets else 0
        d_idx = idx[:-1] + [idx[-1] + f" + {em.size(off)}"] if off else idx
        if r == 0:
            lines.append(" " * inner + f"{dst} = {src}")
        elif dst in shared:
            row = em.fresh("r")
            # [rows, last axis]: each row of the first axis has its own (prange: one thread's)
            blk.alloc(f"{row} = np.empty({em.shape([shape[0], shape[-1]][:min(r, 2)])}, "
                      f"{NP_DT[o.dtype]})")
            r_idx = ", ".join(idx[:1] + idx[1:][-1:])
            lines.append(" " * inner + f"{row}[{r_idx}] = {src}")
            copies.append(" " * (inner - 4) + f"for {idx[-1]} in range({bounds[-1]}):")
            copies.append(" " * inner + f"{dst}[{', '.join(d_idx)}] = {row}[{r_idx}]")
        else:
            lines.append(" " * inner + f"{dst}[{', '.join(d_idx)}] = {src}")
    blk.lines.extend(lines + copies)


# ---------------------------------------------------------------------------------------------
# Row groups (passes.fuse_rows): reductions over the last axis inside one loop over the rows
# ---------------------------------------------------------------------------------------------
# ops cheap enough to compute again in a later phase instead of storing them for it
_RECOMPUTE = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.NEG, Op.BROADCAST, Op.CAST, Op.MAXIMUM,
                        Op.MINIMUM, Op.ABS, Op.STOP_GRADIENT})


def _emit_row_loop(order: list[Node], leaf_of: dict[int, tuple[str, Node]], S: tuple,
                   out_nodes: list[Node], outs: list[str], em: Emitter, blk: Block,
                   offsets: list[int], rows: str | None = None) -> None:
    """One loop over the rows S[:-1] of a row group; per row, phases: phase p is one inner
    loop over S[-1] computing the full-shape values that need the per-row values of phase p
    (a reduction's operand is computed in its phase and reduced right after it, by
    rt.vsum / rt.vmax over a row buffer: an output's row, the operand's input row, or a
    preallocated scratch row). A full-shape value needed in several phases is computed again
    when it is a short chain of cheap ops, else stored in a scratch row. No allocation inside
    the loops; with em.parallel the row loop is a prange (one row, one thread, one code path)."""
    r = len(S)
    rk, rn = S[:-1] + (1,), S[:-1]
    ridx = [f"i{k}" for k in range(r - 1)]
    jn = f"i{r - 1}"
    fidx = ridx + [jn]
    members = {id(x) for x in order}
    full = {id(x) for x in order if x.shape == S and x.op not in GroupOp.Reduce}
    out_pos: dict[int, int] = {}
    for k, o in enumerate(out_nodes):
        out_pos.setdefault(id(o), k)

    # --- levels: a per-row value of level p exists before phase p's loop
    lvl: dict[int, int] = {}
    for x in order:
        ins_m = [i for i in x.inputs if id(i) in members]
        if x.op in GroupOp.Reduce:
            a = x.inputs[0]
            lvl[id(x)] = lvl[id(a)] + 1 if id(a) in members else 0
        else:
            lvl[id(x)] = max((lvl[id(i)] for i in ins_m), default=0)
    users: dict[int, list[Node]] = {}
    for x in order:
        for i in x.inputs:
            if id(i) in members:
                users.setdefault(id(i), []).append(x)

    def cheap(x: Node, depth: int = 2) -> bool:
        if x.op not in _RECOMPUTE or depth == 0:
            return False
        return all(id(i) not in full or cheap(i, depth - 1) for i in x.inputs)

    # --- phases in which each full-shape value is needed / computed (consumers first)
    needed: dict[int, set[int]] = {}
    evalp: dict[int, set[int]] = {}
    stored: set[int] = set()  # computed once and written to a row buffer (output or scratch)
    red_operand: set[int] = set()
    for x in reversed(order):
        if id(x) not in full:
            continue
        need: set[int] = set()
        for u in users.get(id(x), []):
            if u.op in GroupOp.Reduce:
                need.add(lvl[id(x)])
                red_operand.add(id(x))
            else:  # a full-shape user (per-row users of full values do not exist)
                need |= evalp[id(u)]
        if id(x) in out_pos:
            need.add(lvl[id(x)])
        needed[id(x)] = need
        if id(x) in out_pos or id(x) in red_operand or (len(need) > 1 and not cheap(x)):
            stored.add(id(x))
            evalp[id(x)] = {min(need)}
        else:
            evalp[id(x)] = need
    nphase = max([lvl[id(x)] for x in order if id(x) in full] +
                 [lvl[id(x)] - 1 for x in order if x.op in GroupOp.Reduce], default=0) + 1

    # --- row buffers: outputs write their own; other stored values share scratch buffers
    rowbuf: dict[int, tuple[str, int]] = {}  # id -> (buffer, offset on the last axis)
    free: dict[str, list[tuple[float, str]]] = {}  # dtype -> [(busy until, buffer)]
    for x in order:
        if id(x) not in stored:
            continue
        if id(x) in out_pos:
            k = out_pos[id(x)]
            rowbuf[id(x)] = (outs[k], offsets[k] if offsets else 0)
            continue
        start = min(evalp[id(x)])
        until = max(max(needed[id(x)]), start + (0.5 if id(x) in red_operand else 0))
        dt = NP_DT[x.dtype]
        pool = free.setdefault(dt, [])
        for k, (busy, buf) in enumerate(pool):
            if busy < start:
                pool[k] = (until, buf)
                break
        else:
            buf = em.fresh("w")
            blk.alloc(f"{buf} = np.empty({em.shape(S)}, {dt})")
            pool.append((until, buf))
        rowbuf[id(x)] = (buf, 0)

    def at(idx: list[str], off: int) -> str:
        if off:
            idx = idx[:-1] + [f"{idx[-1]} + {off}"]
        return ", ".join(idx)

    def leaf(x: Node, shape: tuple, idx: list[str]) -> str:
        """A value from outside the group at index idx of the iteration shape `shape`."""
        if x.op is Op.CONST:
            return em.const(x.attr("value"), x.dtype)
        expr, outer = leaf_of[id(x)]
        if rows is not None and id(outer) in em.true_masks:
            return "True"
        if outer.shape == ():
            return expr
        xs = outer.shape
        off = len(shape) - len(xs)
        sub = ["0" if (d == 1 and shape[off + k] != 1) else idx[off + k]
               for k, d in enumerate(xs)]
        if id(outer) in em.slices and sub[-1] != "0":
            base, o = em.slices[id(outer)]
            sub[-1] = f"{sub[-1]} + {o}"
            return f"{base}[{', '.join(sub)}]"
        return f"{expr}[{', '.join(sub)}]"

    def row_of_leaf(x: Node) -> str:
        """The 1-D row (over the last axis) of an outside value of shape S."""
        expr, outer = leaf_of[id(x)]
        if id(outer) in em.slices:
            base, o = em.slices[id(outer)]
            n = em.dim(S[-1])
            return f"{base}[{', '.join(ridx)}, {o}:{o} + {n}]"
        return f"{expr}[{', '.join(ridx)}]"

    def flat(shape: tuple, idx: list[str]) -> str:
        f = idx[0] if idx else "0"
        for k in range(1, len(shape)):
            f = f"({f} * {em.dim(shape[k])} + {idx[k]})"
        return f

    ind = blk.indent
    lines: list[str] = []
    for k in range(r - 1):
        bound = rows if k == 0 and rows is not None else em.dim(S[k])
        rng = "prange" if k == 0 and em.parallel else "range"
        lines.append(" " * (ind + 4 * k) + f"for {ridx[k]} in {rng}({bound}):")
    em.used_prange = em.used_prange or em.parallel
    em.any_prange = em.any_prange or em.used_prange
    rind = ind + 4 * (r - 1)  # row-level code
    rowv: dict[int, str] = {}  # per-row values (variables of the row body)

    def row_value(x: Node) -> None:
        shape, idx = (rk, ridx + ["0"]) if x.shape == rk else (rn, list(ridx))
        t = em.fresh("e")
        if x.op in GroupOp.Reduce:
            a = x.inputs[0]
            if id(a) in members:
                buf, off = rowbuf[id(a)]
                n = em.dim(S[-1])
                row = f"{buf}[{', '.join(ridx)}, {off}:{off} + {n}]" if off else \
                    f"{buf}[{', '.join(ridx)}]"
            else:
                row = row_of_leaf(a)
            f = "rt.vsum" if x.op is Op.REDUCE_SUM else "rt.vmax"
            lines.append(" " * rind + f"{t} = {f}({row})")
        elif x.op is Op.RESHAPE:
            a = x.inputs[0]
            src_idx = ridx + ["0"] if a.shape == rk else list(ridx)
            lines.append(" " * rind + f"{t} = "
                         f"{rowv[id(a)] if id(a) in members else leaf(a, a.shape, src_idx)}")
        else:
            args = [rowv[id(i)] if id(i) in members else leaf(i, shape, idx) for i in x.inputs]
            lines.append(" " * rind + f"{t} = {_scalar_expr(x, args, em, flat(shape, idx))}")
        rowv[id(x)] = t
        if id(x) in out_pos:
            for k, o in enumerate(out_nodes):
                if o is x:
                    off = offsets[k] if offsets else 0
                    lines.append(" " * rind + f"{outs[k]}[{at(idx, off)}] = {t}")

    per_row = [x for x in order if id(x) not in full]
    for p in range(nphase):
        for x in per_row:
            if lvl[id(x)] == p:
                row_value(x)
        todo = [x for x in order if id(x) in full and p in needed[id(x)]]
        if not todo:
            continue
        lines.append(" " * rind + f"for {jn} in range({em.dim(S[-1])}):")
        jind = rind + 4
        vals: dict[int, str] = {}
        fl = flat(S, fidx)
        for x in todo:
            if p not in evalp[id(x)]:  # computed in an earlier phase: read its row buffer
                buf, off = rowbuf[id(x)]
                vals[id(x)] = f"{buf}[{at(fidx, off)}]"
                continue
            args = []
            for i in x.inputs:
                if id(i) in full:
                    args.append(vals[id(i)])
                elif id(i) in members:
                    args.append(rowv[id(i)])
                else:
                    args.append(leaf(i, S, fidx))
            t = em.fresh("e")
            lines.append(" " * jind + f"{t} = {_scalar_expr(x, args, em, fl)}")
            vals[id(x)] = t
            if id(x) in stored:
                if id(x) in out_pos:
                    for k, o in enumerate(out_nodes):
                        if o is x:
                            off = offsets[k] if offsets else 0
                            lines.append(" " * jind + f"{outs[k]}[{at(fidx, off)}] = {t}")
                else:
                    buf, off = rowbuf[id(x)]
                    lines.append(" " * jind + f"{buf}[{at(fidx, off)}] = {t}")
    for x in per_row:  # reductions of the last phase and what follows them
        if lvl[id(x)] >= nphase:
            row_value(x)
    blk.lines.extend(lines)


def _emit_scan_function(n: Node, em: Emitter, names: dict[int, str], blk: Block) -> list[str]:
    """A top-level scan becomes its own njit function called from the kernel: Numba's compile
    time grows faster than linearly with function size, so one function per loop compiles much
    faster than one function for the whole graph (and each is cached on its own)."""
    fid = em.fresh("loop")
    fn_names: dict[int, str] = {}
    params: list[str] = []
    args: list[str] = []
    info = scan_info(n)
    xs_at = set(range(info.n_carry, info.n_carry + info.n_xs))
    based: dict[int, tuple[str, int]] = {}
    for k, inp in enumerate(n.inputs):
        if inp.op is Op.CONST or id(inp) in fn_names:
            continue
        p = f"p{len(params)}"
        fn_names[id(inp)] = p
        params.append(p)
        sl = em.slices.get(id(inp))
        if sl is not None and inp.ndim >= 2 and \
                all(j in xs_at for j, i in enumerate(n.inputs) if i is inp):
            # a per-step input that is a last-axis slice of a contiguous array (a GRU's gate
            # columns of the hoisted projection): the loop gets the array and reads its rows
            # at an offset; as a strided view its loops would not vectorize
            args.append(sl[0])
            based[id(inp)] = (p, sl[1])
        else:
            args.append(_ref(inp, em, names))
    dim_names = list(em.dims.values())
    saved_slices = em.slices
    em.slices = dict(based)  # slice bases of the caller are not visible inside the function
    lines: list[str] = []
    fblk = Block(lines, 4, None, 4)
    saved_prange, em.used_prange = em.used_prange, False
    res = _emit_scan(n, em, fn_names, fblk)
    em.slices = saved_slices
    jit = JIT_LINE_PAR if em.used_prange else JIT_LINE
    em.used_prange = saved_prange
    em.functions += ["", jit, f"def {fid}({', '.join(params + dim_names + ['sz'])}):",
                     _SIZES_HERE, *lines,
                     f"    return ({', '.join(res)},)", ""]
    outs = [f"{fid}_r{k}" for k in range(len(res))]
    blk.emit(f"{', '.join(outs)}, = {fid}({', '.join(args + dim_names + ['sz'])})")
    return outs


def _emit_scan(n: Node, em: Emitter, names: dict[int, str], blk: Block) -> list[str]:
    info = scan_info(n)
    body: Graph = n.attr("body")
    ins = [_ref(i, em, names) for i in n.inputs]
    init = ins[:info.n_carry]
    X = ins[info.n_carry:info.n_carry + info.n_xs]
    W = ins[info.n_carry + info.n_xs:info.n_carry + info.n_xs + info.n_inv]
    sid = em.fresh("s")
    T = f"{X[0]}.shape[0]" if X else em.size(n.attr("length"))
    blk.emit(f"{sid}_T = {T}")
    if info.has_length:
        blk.emit(f"{sid}_n = min(max(np.int64({ins[-1]}), 0), {sid}_T)")
    else:
        blk.emit(f"{sid}_n = {sid}_T")
    carries = []
    b_carry = body.inputs[1:1 + info.n_carry]
    for k, (c, pn) in enumerate(zip(init, b_carry)):
        cv = f"{sid}_c{k}"
        if _is_scalar(pn):
            blk.emit(f"{cv} = {c}")
        else:
            blk.emit(f"{cv} = np.copy({c})")
        carries.append(cv)
    hinted = rows.check(n)  # the `rows` hint, if this loop has a valid one (see below)
    ys = []
    tail: list[int] = []  # ys whose rows t >= n nobody reads (no zero fill; see _tail_unread)
    zero_after: list[int] = []  # ys whose rows t >= n are zeroed after the loop
    for k, y in enumerate(body.outputs[info.n_carry:]):
        yv = f"{sid}_y{k}"
        dims = ", ".join([f"{sid}_T"] + [em.dim(d) for d in y.shape])
        target = blk.direct_scan.get((id(n), info.n_carry + k))
        if target is not None:
            # the enclosing loop's ys row (registered only for loops without a stop or a rows
            # hint; rows t >= n zeroed after the loop, as below)
            blk.emit(f"{yv} = {target}")
            if info.has_length:
                zero_after.append(k)
        elif blk.pre is None and y.shape and _tail_unread(n, k, em):
            blk.emit(f"{yv} = np.empty(({dims},), {NP_DT[y.dtype]})")
            tail.append(k)
        elif not info.has_length and info.stop is None and hinted is None:
            # every row is written when the scan runs all T steps on every row: no zero fill
            blk.emit(f"{yv} = np.empty(({dims},), {NP_DT[y.dtype]})")
        elif info.stop is None and hinted is None:
            # a run-time trip count n: only the rows t >= n are zeroed, after the loop (a
            # segment of a checkpointed loop zero-filled its whole buffers on every call)
            blk.emit(f"{yv} = np.empty(({dims},), {NP_DT[y.dtype]})")
            zero_after.append(k)
        else:
            blk.emit(f"{yv} = np.zeros(({dims},), {NP_DT[y.dtype]})")
        ys.append(yv)
    # body: buffers before the loop, work inside it
    pre: list[str] = []
    loop: list[str] = []
    ind = blk.indent
    inner = Block(loop, ind + 4, pre, ind)
    bnames = dict(names)
    t_ph = body.inputs[0]
    bnames[id(t_ph)] = f"{sid}_t"
    for pn, cv in zip(b_carry, carries):
        bnames[id(pn)] = cv
    for k, pn in enumerate(body.inputs[1 + info.n_carry:1 + info.n_carry + info.n_xs]):
        bnames[id(pn)] = f"{sid}_x{k}"
    for pn, w in zip(body.inputs[1 + info.n_carry + info.n_xs:], W):
        bnames[id(pn)] = w
    # the `rows` hint (rnncomp.ir.rows): the batch is sorted by length, longest first, and a
    # row past its length is a no-op: each step computes its active rows [:nb] only (carry rows
    # past nb stay frozen, ys rows stay zero) and validity masks are true on them
    cls = hinted
    rw = None
    saved_rows = (em.row_of, em.true_masks)
    if cls is not None:
        lengths = W[rows.rows_index(n)]
        rw = f"{sid}_nb"
        blk.emit(f"rt.check_sorted({lengths})")
        lph = rows.lengths_placeholder(n)
        em.row_of = {**em.row_of, **{i: rw for i, c in cls.items() if c == rows.R}}
        em.true_masks = em.true_masks | {id(x) for x in body.nodes
                                         if rows.is_valid_mask(x, t_ph, lph)}
    written: set[int] = set()
    for k, y in enumerate(body.outputs[info.n_carry:]):
        if y.op is Op.ITEM and y.inputs[0].op is Op.SCAN and rw is None and \
                y.attr("index") >= scan_info(y.inputs[0]).n_carry and \
                (id(y.inputs[0]), y.attr("index")) not in inner.direct_scan and \
                y.inputs[0].attr("stop") is None and rows.check(y.inputs[0]) is None:
            inner.direct_scan[(id(y.inputs[0]), y.attr("index"))] = f"{ys[k]}[{sid}_t]"
            written.add(k)
            continue
        if y.op is Op.ITEM and y.inputs[0].op is Op.FUSED and \
                (id(y.inputs[0]), y.attr("index")) not in inner.direct:
            inner.direct[(id(y.inputs[0]), y.attr("index"))] = f"{ys[k]}[{sid}_t]"
            written.add(k)
        elif y.op is Op.CONCAT and y.attr("axis") == y.ndim - 1 and id(y) not in \
                inner.direct_concat and all(i.op is Op.ITEM and i.inputs[0].op is Op.FUSED
                                            for i in y.inputs) and \
                len({id(i) for i in y.inputs}) == len(y.inputs):
            inner.direct_concat[id(y)] = f"{ys[k]}[{sid}_t]"
            written.add(k)
    if info.stop is not None:  # run-time stop: the flag carry ends the loop
        loop.append(" " * (ind + 4) + f"if {carries[info.stop]}:")
        loop.append(" " * (ind + 8) + "break")
    # a carry computed by a fused loop is written straight into a second buffer that is then
    # swapped with the carry (no copy), or, when it is also a scan output, the carry becomes
    # that output's row (y[t], h_prev of the next step)
    swaps: dict[int, str] = {}
    aliases: dict[int, str] = {}
    rebinds: set[int] = set()  # carries that become a nested scan's final carry (no copy)
    accums: dict[int, Node] = {}  # carries updated in place: c += x
    own: set[tuple[int, int]] = set()
    body_users = users(body.nodes)

    def only_a_carry(o: Node) -> bool:  # read by no body node, this carry's output only
        return not body_users.get(id(o)) and sum(x is o for x in body.outputs) == 1

    for k, (o, pn) in enumerate(zip(body.outputs[:info.n_carry], b_carry)):
        if o is pn or _is_scalar(pn) or rw is not None:
            # (with the rows hint, carry rows past the active ones stay frozen: copied rows)
            continue
        if o.op is Op.ITEM and o.inputs[0].op is Op.SCAN and only_a_carry(o) and \
                o.attr("index") < scan_info(o.inputs[0]).n_carry:
            # a nested loop's final carry is a buffer of its own, made fresh on every step
            # (np.copy of its initial value, then swapped): take it over
            rebinds.add(k)
            continue
        other = o.inputs[1] if o.op is Op.ADD and o.inputs[0] is pn else \
            o.inputs[0] if o.op is Op.ADD and o.inputs[1] is pn else None
        if other is not None and only_a_carry(o) and \
                all(i.shape == o.shape and i.dtype == o.dtype for i in o.inputs) and \
                all(x is not pn for x in toposort([other])):
            # an accumulator (a weight gradient summed over segments): added in place after
            # the step, not computed into a temporary and copied back (the addend must not be
            # computed from the carry: a view of it would be read while it is written)
            accums[k] = other
            bnames[id(o)] = carries[k]
            continue
        if o.op is Op.MATMUL and o.inputs[0].ndim == 2 and id(o) not in inner.into:
            swaps[k] = f"{carries[k]}n"
            inner.into[id(o)] = swaps[k]
            blk.emit(f"{swaps[k]} = np.empty_like({carries[k]})")
            continue
        if o.op is not Op.ITEM or o.inputs[0].op is not Op.FUSED:
            continue
        key = (id(o.inputs[0]), o.attr("index"))
        if key in own:
            continue
        if key in inner.direct:
            aliases[k] = inner.direct[key]
        else:
            swaps[k] = f"{carries[k]}n"
            inner.direct[key] = swaps[k]
            blk.emit(f"{swaps[k]} = np.empty_like({carries[k]})")
        own.add(key)
    loop.append(" " * (ind + 4) + (f"{sid}_t = np.int32({sid}_n - 1 - {sid}_it)" if info.reverse
                                   else f"{sid}_t = np.int32({sid}_it)"))
    if rw is not None:
        loop.append(" " * (ind + 4) + f"{rw} = rt.active_rows({lengths}, {sid}_t)")
        for k in tail:  # the rows past their length of an unfilled ys: zero
            y = body.outputs[info.n_carry + k]
            idx = [em.fresh("j") for _ in y.shape]
            for d, (j, dim) in enumerate(zip(idx, y.shape)):
                lo = f"{rw}, " if d == 0 else ""
                loop.append(" " * (ind + 4 + 4 * d) + f"for {j} in range({lo}{em.dim(dim)}):")
            loop.append(" " * (ind + 4 + 4 * len(idx)) +
                        f"{ys[k]}[{sid}_t, {', '.join(idx)}] = 0")
    b_xs = body.inputs[1 + info.n_carry:1 + info.n_carry + info.n_xs]
    for k, (x, xn) in enumerate(zip(X, n.inputs[info.n_carry:info.n_carry + info.n_xs])):
        sl = em.slices.get(id(xn))
        if sl is not None and xn.ndim >= 2:
            # x is a slice of `base` on the last axis: step t's row of the base, and the
            # placeholder's loops read that contiguous row at the offset
            base, off = sl
            cols = f"{em.offset(off)}:{em.size(off + xn.shape[-1])}"
            loop.append(" " * (ind + 4) + f"{sid}_xb{k} = {base}[{sid}_t]")
            loop.append(" " * (ind + 4) + f"{sid}_x{k} = {sid}_xb{k}"
                        f"[{', '.join([':'] * (xn.ndim - 2) + [cols])}]")
            em.slices[id(b_xs[k])] = (f"{sid}_xb{k}", off)
        else:
            loop.append(" " * (ind + 4) + f"{sid}_x{k} = {x}[{sid}_t]")
    _emit_graph(body, em, bnames, inner)
    outs = body.outputs
    for k, y in enumerate(outs[info.n_carry:]):
        if k not in written:
            loop.extend(copy_loop(ys[k], _ref(y, em, bnames), y.shape, em, ind + 4,
                                  lead=f"{sid}_t, ", rows=rw))
    for k, (o, pn) in enumerate(zip(outs[:info.n_carry], b_carry)):
        src = _ref(o, em, bnames)
        if o is pn or k in swaps or k in aliases or k in rebinds or k in accums:
            continue
        if _is_scalar(pn):
            loop.append(" " * (ind + 4) + f"{carries[k]} = {src}")
        else:
            loop.extend(copy_loop(carries[k], src, pn.shape, em, ind + 4, rows=rw))
    # after the copies (which may read the old carries)
    for k, x in accums.items():
        loop.extend(copy_loop(carries[k], _ref(x, em, bnames), b_carry[k].shape, em, ind + 4,
                              op="+="))
    for k in sorted(rebinds):
        loop.append(" " * (ind + 4) + f"{carries[k]} = {_ref(outs[k], em, bnames)}")
    for k, nb in swaps.items():
        loop.append(" " * (ind + 4) + f"{carries[k]}, {nb} = {nb}, {carries[k]}")
    for k, row in aliases.items():
        loop.append(" " * (ind + 4) + f"{carries[k]} = {row}")
    em.row_of, em.true_masks = saved_rows
    blk.lines.extend(pre)
    blk.emit(f"for {sid}_it in range({sid}_n):")
    blk.lines.extend(loop)
    for k in zero_after:
        zero = "False" if body.outputs[info.n_carry + k].dtype is DType.bool else "0"
        blk.emit(f"{ys[k]}[{sid}_n:] = {zero}")
    for k in aliases:  # the final state must not share memory with the outputs
        blk.emit(f"{carries[k]} = np.copy({carries[k]})")
    return carries + ys
