"""Time segments for BPTT checkpointing (`checkpoint_every=k`).

`segment_scans(graph, k)` rewrites every top-level scan over T steps into a scan over
ceil(T/k) segments whose body runs the original step k times (a nested scan):

    scan(body, c0, X, W)  ->  outer = scan(seg_body, c0, segment(X, k), W + [n])
                               seg_body(s, c, X_s, W, n) = scan(body', c, X_s, W + [s*k],
                                                                length = n - s*k)
                               ys = unsegment(outer ys, T)

body' is the original body with its step index t replaced by s*k + j (j: the step within the
segment), so dropout masks and sequence-length masks see the same global step. The inner scan's
run-time length n - s*k (clamped to 0..k by the scan) stops the last, partial segment at T (or
at the run-time length of a length-aware scan); segments past it run no step. Values are
unchanged; the point is autodiff's recompute mode (rnncomp.transforms.autodiff.vjp with
recompute=True), which stores only the carries entering each step of a top-level scan: after
this rewrite those are the carries entering each *segment* (ceil(T/k) checkpoints), and the
backward loop over segments re-runs one segment's forward, storing its residuals ([k, ...]
buffers), then runs the segment's reverse scan over them.
"""

from __future__ import annotations

from ..ir import ops
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node, Op, ceil_div_dim, substitute, toposort
from ..ir.ops import scan_info


def segment_scan(scan: Node, k: int) -> list[Node]:
    """The results of `scan` (final carries, then stacked ys), computed segment by segment."""
    info = scan_info(scan)
    body: Graph = scan.attr("body")
    nc, nx, ni = info.n_carry, info.n_xs, info.n_inv
    ins = list(scan.inputs)
    init, X, W = ins[:nc], ins[nc:nc + nx], ins[nc + nx:nc + nx + ni]
    T = X[0].shape[0] if X else scan.attr("length")
    if info.has_length:
        L = ins[-1]
        steps = ops.make(Op.DIMSIZE, X[0], axis=0, dtype=L.dtype) if X else ops.const(T, L.dtype)
        n = ops.minimum(L, steps)
    else:
        n = ops.make(Op.DIMSIZE, X[0], axis=0, dtype=DType.i32) if X else ops.const(T, DType.i32)

    # inner body: the original step at global step start + j
    b_t = body.inputs[0]
    j = ops.placeholder((), DType.i32, role="t")
    start_in = ops.placeholder((), DType.i32, role="inv")
    outs = substitute(body.outputs, {id(b_t): ops.add(start_in, j)}, ops.remake)
    inner_body = Graph([j] + list(body.inputs[1:]) + [start_in], outs)

    # outer body: one segment from its entering carries
    b_c = body.inputs[1:1 + nc]
    b_x = body.inputs[1 + nc:1 + nc + nx]
    b_w = body.inputs[1 + nc + nx:]
    s = ops.placeholder((), DType.i32, role="t")
    c_o = [ops.placeholder(p.shape, p.dtype, role="carry") for p in b_c]
    x_o = [ops.placeholder((k,) + tuple(p.shape), p.dtype, role="x") for p in b_x]
    w_o = [ops.placeholder(p.shape, p.dtype, role="inv") for p in b_w]
    n_o = ops.placeholder((), n.dtype, role="inv")
    start = ops.mul(s, ops.const(k, DType.i32))
    seg_len = ops.sub(n_o, ops.cast(start, n.dtype))
    attrs = {**dict(scan.attrs), "body": inner_body, "n_carry": nc, "n_xs": nx,
             "has_length": True, "length": None if X else k, "remat": None,
             # the `rows` hint counts active rows from the loop's own step, which is the step
             # within the segment here: the segmented loop runs masked (same values)
             "rows": None}
    inner = ops.make(Op.SCAN, *c_o, *x_o, *w_o, start, seg_len, **attrs)
    n_out = len(scan.shape[1])
    outer_body = Graph([s] + c_o + x_o + w_o + [n_o],
                       [ops.item(inner, i) for i in range(n_out)])
    res = ops.scan(outer_body, init, [ops.segment(x, k) for x in X], W + [n],
                   reverse=info.reverse, length=None if X else ceil_div_dim(T, k))
    return res[:nc] + [ops.unsegment(y, T) for y in res[nc:]]


def segment_scans(graph: Graph, k: int) -> Graph:
    """The graph with every top-level scan run in segments of k steps (see the module doc)."""
    memo: dict[int, Node] = {}
    segs: dict[int, list[Node]] = {}
    for n in toposort(list(graph.outputs)):
        new_in = [memo[id(i)] for i in n.inputs]
        if n.op is Op.ITEM and n.inputs[0].op is Op.SCAN:
            memo[id(n)] = segs[id(n.inputs[0])][n.attr("index")]
            continue
        m = n if all(a is b for a, b in zip(new_in, n.inputs)) else ops.remake(n, new_in)
        if n.op is Op.SCAN:
            segs[id(n)] = segment_scan(m, k)
        memo[id(n)] = m
    return Graph(graph.inputs, [memo[id(o)] for o in graph.outputs])
