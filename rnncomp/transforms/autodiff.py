"""Reverse-mode automatic differentiation over the IR.

No backward code is written for any cell: every op's VJP rule lives in its registry record
(rnncomp/ir/ops.py) and builds IR nodes; this module only walks graphs.

Scans are handled the way JAX transposes them (`_scan_partial_eval` / `_scan_transpose`):

1. The body is differentiated symbolically (recursively, so nested scans work).
2. The primal values the body's VJP needs are split into
   - step index, x_t and loop invariants, which the backward loop reads directly, and
   - residuals (anything that depends on the carries): the forward scan is *augmented* to emit
     them as extra stacked outputs, so nothing is recomputed.
3. The transposed loop is a scan with reverse=True over the cotangents of the carries, with the
   stacked residuals and output cotangents as its per-step inputs.
4. Cotangents of loop invariants (the weights) are not accumulated inside the loop: their
   per-step terms leave the loop as stacked outputs and are reduced after it; a term
   `tensordot(u_t, v_t)` (the weight VJP of a matmul) becomes ONE tensordot over all T*B rows.

The result is an ordinary graph: forward outputs followed by gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import ops, provenance, rows
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node, Op, substitute, toposort
from ..ir.ops import NOT_DIFFERENTIABLE, REGISTRY, scan_info
from ..ir.printer import ensure_family


class AutodiffError(ValueError):
    pass


def _is_float(n: Node) -> bool:
    return n.dtype is not None and n.dtype.is_float


def _add_ct(ct: dict[int, Node], node: Node, g: Node | None) -> None:
    if g is None:
        return
    if g.shape != node.shape:
        raise AutodiffError(f"internal: cotangent {g!r} does not match {node!r}")
    prev = ct.get(id(node))
    ct[id(node)] = g if prev is None else ops.add(prev, g)


@dataclass
class _ScanVJP:
    """What the transpose of one augmented scan needs."""

    fwd: Node  # the augmented forward scan
    n_carry: int
    n_ys: int  # original ys (residual ys follow them)
    carry_float: list[bool]
    ys_float: list[bool]
    body: Graph  # augmented forward body
    dcs: list[Node | None]  # cotangent placeholders for carries (float ones)
    dys: list[Node | None]  # cotangent placeholders for ys (float ones)
    grads: list[Node | None]  # body grads for [t, carries..., xs..., invs...]
    residuals: list[Node]  # primal body nodes saved per step
    res_ph: list[Node]  # their placeholders in the backward body
    recompute: bool = False  # residuals are the carries only; weight cotangents accumulate


# ops the backward body may compute again from saved values instead of reading a saved result:
# cheap arithmetic (no transcendental function, no reduction)
_REBUILD_OPS = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.NEG, Op.CAST, Op.BROADCAST})
_REBUILD_LIMIT = 4  # ops per rebuilt value


def _rebuilt_residuals_dropped(residuals: list[Node], free) -> list[Node]:
    """The residuals without those the backward body rebuilds from the others with a few cheap
    elementwise ops (a layer norm's normalized value (x - mean) / std from the saved x - mean
    and std): each saved [T, B, H] value costs a store per step in the forward loop, a load in
    the backward one and T*B*H*4 bytes of memory, more than a division per element. `free`:
    values the backward body reads anyway (t, x_t, invariants, literals). Residuals are taken
    in the forward body's order, so a value is dropped only when what it is rebuilt from is
    kept (or rebuilt in turn within the limit)."""
    res_ids = {id(r) for r in residuals}
    kept: set[int] = set()

    def cost(n: Node, top: bool) -> int | None:
        if not top and (id(n) in kept or free(n)):
            return 0
        if n.op not in _REBUILD_OPS:
            return None
        total = 1
        for i in n.inputs:
            c = cost(i, False)
            if c is None:
                return None
            total += c
            if total > _REBUILD_LIMIT:
                return None
        return total

    out = []
    for r in toposort(residuals):
        if id(r) not in res_ids:
            continue
        if cost(r, True) is None:
            kept.add(id(r))
            out.append(r)
    order = {id(r): k for k, r in enumerate(residuals)}
    return sorted(out, key=lambda r: order[id(r)])


def _augment(scan: Node, new_inputs: Sequence[Node],
             recompute: bool = False) -> tuple[Node, _ScanVJP]:
    info = scan_info(scan)
    body: Graph = scan.attr("body")
    outs = list(body.outputs)
    n_ys = len(outs) - info.n_carry
    carry_float = [_is_float(o) for o in outs[:info.n_carry]]
    ys_float = [_is_float(o) for o in outs[info.n_carry:]]
    dcs = [ops.placeholder(o.shape, o.dtype, role="ct") if f else None
           for o, f in zip(outs[:info.n_carry], carry_float)]
    dys = [ops.placeholder(o.shape, o.dtype, role="ct") if f else None
           for o, f in zip(outs[info.n_carry:], ys_float)]
    prim_outs, grads = vjp(outs, dcs + dys, list(body.inputs))

    # Which primal values does the backward body read?
    prim_ids = {id(n) for n in toposort(prim_outs)} | {id(n) for n in body.inputs}
    free_ph = {id(n) for n in body.inputs[:1]} | \
        {id(n) for n in body.inputs[1 + info.n_carry:]}  # t, x_t and invariants
    bwd_roots = [g for g in grads if g is not None]
    # values computed from invariants only are recomputed by the backward body (and leave it
    # again by LICM): saving them per step would store a weight matrix T times
    per_step_ph = {id(n) for n in body.inputs[:1 + info.n_carry + info.n_xs]}
    varies: dict[int, bool] = {}
    for n in toposort(list(prim_outs) + list(body.inputs)):
        varies[id(n)] = id(n) in per_step_ph or any(varies.get(id(i), False) for i in n.inputs)

    def is_residual(x: Node) -> bool:
        return id(x) in prim_ids and id(x) not in free_ph and x.op is not Op.CONST and \
            varies.get(id(x), True)

    residuals: list[Node] = []
    seen: set[int] = set()
    for n in toposort(bwd_roots):
        if id(n) in prim_ids and not is_residual(n) and id(n) not in free_ph and \
                n.op is not Op.CONST and not varies.get(id(n), True):
            continue  # an invariant-only primal value: recomputed, its inputs are not residuals
        if id(n) in prim_ids:
            continue
        for i in n.inputs:
            if is_residual(i) and id(i) not in seen:
                seen.add(id(i))
                residuals.append(i)
    for g in bwd_roots:
        if is_residual(g) and id(g) not in seen:
            seen.add(id(g))
            residuals.append(g)
    if not recompute:
        residuals = _rebuilt_residuals_dropped(residuals, lambda x: id(x) in free_ph or
                                               x.op is Op.CONST or not varies.get(id(x), True))
    if recompute:
        # rematerialisation: save only the carries entering each step; the backward body
        # recomputes the step's forward values from them (substituting the saved carry for the
        # carry placeholder rebuilds every primal node that depends on it)
        reach = {id(n) for n in toposort(bwd_roots)}
        residuals = [c for c in body.inputs[1:1 + info.n_carry] if id(c) in reach]
    res_ph = [ops.placeholder(r.shape, r.dtype, role="res") for r in residuals]
    extra: list[Node] = []
    if info.stop is not None:
        # a loop with a run-time stop also marks each step it runs (1, stacked: 0 where it
        # stopped before), so the reverse loop starts at the last step run
        extra.append(ops.cast(ops.ge(body.inputs[0], ops.const(0, DType.i32)), DType.i64))
    aug_body = Graph(body.inputs, list(prim_outs) + residuals + extra)
    attrs = {**dict(scan.attrs), "body": aug_body}
    if recompute:  # keep the forward's per-step work in its loop too: no [T, B, 4H] buffers
        attrs["remat"] = True
    fwd = ops.make(Op.SCAN, *new_inputs, **attrs)
    return fwd, _ScanVJP(fwd, info.n_carry, n_ys, carry_float, ys_float, aug_body, dcs, dys,
                         grads, residuals, res_ph, recompute)


def _split_terms(e: Node) -> list[Node]:
    if e.op is Op.ADD and e.inputs[0].shape == e.shape and e.inputs[1].shape == e.shape:
        return _split_terms(e.inputs[0]) + _split_terms(e.inputs[1])
    return [e]


def _transpose_scan(sv: _ScanVJP, cts: list[Node | None]) -> list[Node | None]:
    """Build the reverse scan; returns cotangents for the forward scan's inputs."""
    fwd = sv.fwd
    info = scan_info(fwd)
    body = sv.body
    t_ph = body.inputs[0]
    x_ph = list(body.inputs[1 + info.n_carry:1 + info.n_carry + info.n_xs])
    inv_ph = list(body.inputs[1 + info.n_carry + info.n_xs:])
    outer_in = list(fwd.inputs)
    outer_xs = outer_in[info.n_carry:info.n_carry + info.n_xs]
    outer_inv = outer_in[info.n_carry + info.n_xs:info.n_carry + info.n_xs + info.n_inv]
    n_carry, n_ys = sv.n_carry, sv.n_ys

    # cotangents flowing in from outside
    ct_final = cts[:n_carry]
    ct_ys = cts[n_carry:n_carry + n_ys]

    # backward body: substitute residuals by placeholders, absent y-cotangents by zeros
    mapping: dict[int, Node] = {id(r): p for r, p in zip(sv.residuals, sv.res_ph)}
    for dy, c in zip(sv.dys, ct_ys):
        if dy is not None and c is None:
            mapping[id(dy)] = ops.zeros_like(dy)
    g_carry = sv.grads[1:1 + n_carry]
    g_xs = sv.grads[1 + n_carry:1 + n_carry + info.n_xs]
    g_inv = sv.grads[1 + n_carry + info.n_xs:]

    # invariant cotangent terms: tensordot(u_t, v_t) over leading axes leaves as (u, v) pairs
    inv_plan: list[list[tuple]] = []
    body_ys: list[Node] = []

    def y_index(v: Node) -> int:
        for j, y in enumerate(body_ys):
            if y is v:
                return j
        body_ys.append(v)
        return len(body_ys) - 1

    # with recompute, the loop keeps O(1) memory in T: invariant cotangents are accumulated in
    # carries (one small GEMM per step) instead of leaving as stacked per-step terms
    acc_ph: list[Node | None] = []
    for g, p in zip(g_inv, inv_ph):
        acc_ph.append(ops.placeholder(p.shape, p.dtype, role="acc")
                      if sv.recompute and g is not None else None)
    for g, acc in zip(g_inv, acc_ph):
        plan: list[tuple] = []
        if acc is not None:
            plan.append(("acc",))
        elif g is not None:
            for term in _split_terms(g):
                aa = term.attr("a_axes")
                lead = tuple(range(len(aa))) if aa else None
                if term.op is Op.TENSORDOT and aa == term.attr("b_axes") and aa == lead:
                    # sum_t tensordot(u_t, v_t) = one tensordot over (t, leading axes)
                    plan.append(("td", y_index(term.inputs[0]), y_index(term.inputs[1]), len(aa)))
                elif term.op is Op.REDUCE_SUM and not term.attr("keepdims") and \
                        term.attr("axes") == tuple(range(len(term.attr("axes")))):
                    # sum_t reduce_sum(v_t, leading) = one reduction over (t, leading axes)
                    plan.append(("rs", y_index(term.inputs[0]), len(term.attr("axes"))))
                else:
                    plan.append(("rs", y_index(term), 0))
        inv_plan.append(plan)
    float_xs = [k for k in range(info.n_xs) if g_xs[k] is not None]
    new_carries = []
    for k in range(n_carry):
        if sv.carry_float[k]:
            g = g_carry[k]
            new_carries.append(g if g is not None else ops.zeros_like(sv.dcs[k]))
    acc_new = [ops.add(a, g) for a, g in zip(acc_ph, g_inv) if a is not None]
    per_row = [g_xs[k] for k in float_xs] + body_ys
    rows_at = rows.rows_index(fwd)
    lph = inv_ph[rows_at] if rows_at is not None else None
    if lph is not None and not acc_new and all(
            y.ndim >= 1 and y.shape[0] == lph.shape[0] for y in per_row):
        # the reverse loop of a hinted scan is hinted too: a row past its length passes its
        # carry cotangent through unchanged (the VJP of select(t < len, new, old)), and its
        # per-step results are masked to zero so that every backend agrees on them
        per_row = [rows.mask_rows(t_ph, lph, y) for y in per_row]
    else:
        lph = None
    outputs = new_carries + acc_new + per_row
    outputs = substitute(outputs, mapping, ops.remake)

    # the backward body's inputs: whatever placeholders it reads
    reach = {id(n) for n in toposort(outputs)}
    b_carry = [d for d, f in zip(sv.dcs, sv.carry_float) if f] + [a for a in acc_ph if a is not None]
    used_dys = [(dy, c) for dy, c in zip(sv.dys, ct_ys) if dy is not None and c is not None]
    xs_pairs: list[tuple[Node, Node]] = []  # (body placeholder, outer stacked value)
    for dy, c in used_dys:
        xs_pairs.append((dy, c))
    for r, p in zip(sv.residuals, sv.res_ph):
        if id(p) in reach:
            idx = n_carry + n_ys + sv.residuals.index(r)
            xs_pairs.append((p, ops.item(fwd, idx)))
    for p, o in zip(x_ph, outer_xs):
        if id(p) in reach:
            xs_pairs.append((p, o))
    if not xs_pairs and fwd.attr("length") is None and x_ph:
        # the backward body reads no per-step value (e.g. a cell whose state ignores the old
        # state): keep one stacked input so the reverse loop still knows its trip count
        xs_pairs.append((x_ph[0], outer_xs[0]))
    inv_pairs = [(p, o) for p, o in zip(inv_ph, outer_inv) if id(p) in reach or p is lph]
    known = {id(t_ph)} | {id(p) for p in b_carry} | {id(p) for p, _ in xs_pairs} | \
        {id(p) for p, _ in inv_pairs}
    for n in toposort(outputs):
        if n.op in (Op.PLACEHOLDER, Op.INPUT, Op.PARAM) and id(n) not in known:
            raise AutodiffError(f"internal: backward body reads {n!r} which it cannot receive")
    bwd_body = Graph([t_ph] + b_carry + [p for p, _ in xs_pairs] + [p for p, _ in inv_pairs],
                     outputs)
    init = []
    for k in range(n_carry):
        if sv.carry_float[k]:
            c = ct_final[k]
            init.append(c if c is not None else ops.zeros_like(sv.dcs[k]))
    acc_at: dict[int, int] = {}  # invariant k -> its accumulator's index among the carries
    for k, a in enumerate(acc_ph):
        if a is not None:
            acc_at[k] = len(init)
            init.append(ops.zeros_like(a))
    length_input = outer_in[-1] if info.has_length else None
    if info.stop is not None:  # the steps the forward loop ran (see _augment)
        length_input = ops.reduce_sum(ops.item(fwd, n_carry + n_ys + len(sv.residuals)), (0,))
    res = ops.scan(bwd_body, init, [o for _, o in xs_pairs], [o for _, o in inv_pairs],
                   reverse=not info.reverse, length_input=length_input,
                   length=fwd.attr("length"), remat=sv.recompute,
                   rows=[p for p, _ in inv_pairs].index(lph) if lph is not None else None)
    nb = len(init)
    out_cts: list[Node | None] = [None] * len(outer_in)
    j = 0
    for k in range(n_carry):
        if sv.carry_float[k]:
            out_cts[k] = res[j]
            j += 1
    for m, k in enumerate(float_xs):
        out_cts[n_carry + k] = res[nb + m]
    ys0 = nb + len(float_xs)
    for k, plan in enumerate(inv_plan):
        acc = None
        for step in plan:
            if step[0] == "acc":
                term = res[acc_at[k]]
            elif step[0] == "td":
                _, iu, iv, nlead = step
                U, V = res[ys0 + iu], res[ys0 + iv]
                axes = tuple(range(nlead + 1))
                term = ops.tensordot(U, V, axes, axes)
            else:
                _, iv, nlead = step
                term = ops.reduce_sum(res[ys0 + iv], tuple(range(nlead + 1)))
            acc = term if acc is None else ops.add(acc, term)
        out_cts[n_carry + info.n_xs + k] = acc
    return out_cts


def vjp(outputs: Sequence[Node], seeds: Sequence[Node | None],
        wrt: Sequence[Node], recompute: bool = False) -> tuple[list[Node], list[Node | None]]:
    """Cotangents of `wrt` given cotangent seeds for `outputs` (None = zero).

    Returns (primal outputs, grads): the primal outputs may differ from `outputs` because scans
    are augmented to save residuals; use them in place of the originals. With recompute=True
    scans save only their carries per step and the reverse scans recompute each step's forward
    values from them (less memory, one more forward step of work per step).
    """
    # Phase A: augment every scan so that it saves the residuals its transpose needs.
    memo: dict[int, Node] = {}
    aug: dict[int, _ScanVJP] = {}
    for n in toposort(outputs):
        new_in = [memo[id(i)] for i in n.inputs]
        if n.op is Op.SCAN:
            s, sv = _augment(n, new_in, recompute)
            aug[id(s)] = sv
            memo[id(n)] = s
        elif all(a is b for a, b in zip(new_in, n.inputs)):
            memo[id(n)] = n
        else:
            memo[id(n)] = ops.remake(n, new_in)
    prim = [memo[id(o)] for o in outputs]

    # Phase B: reverse sweep.
    ct: dict[int, Node] = {}
    tuple_ct: dict[int, dict[int, Node]] = {}
    for o, s in zip(prim, seeds):
        if s is not None:
            _add_ct(ct, o, s)
    for n in reversed(toposort(prim)):
        if n.op is Op.SCAN:
            got = tuple_ct.get(id(n))
            if not got:
                continue
            sv = aug[id(n)]
            cts = [got.get(k) for k in range(sv.n_carry + sv.n_ys)]
            in_cts = _transpose_scan(sv, cts)
            for inp, g in zip(n.inputs, in_cts):
                if g is not None and _is_float(inp):
                    _add_ct(ct, inp, g)
            continue
        c = ct.get(id(n))
        if c is None:
            continue
        if n.op is Op.ITEM:
            d = tuple_ct.setdefault(id(n.inputs[0]), {})
            k = n.attr("index")
            d[k] = c if k not in d else ops.add(d[k], c)
            continue
        if not n.inputs:
            continue
        rule = REGISTRY[n.op].vjp
        if rule is None:
            raise AutodiffError(f"no VJP rule for op {n.op.value}")
        if rule == NOT_DIFFERENTIABLE:
            continue
        gs = rule(n, c, *n.inputs)
        for inp, g in zip(n.inputs, gs):
            if g is not None and _is_float(inp):
                if g.dtype != inp.dtype:
                    g = ops.cast(g, inp.dtype)
                _add_ct(ct, inp, g)
    return prim, [ct.get(id(w)) for w in wrt]


def check_checkpoint_every(checkpoint_every: Any, recompute: Any = False) -> int | None:
    """The BPTT checkpoint interval the options ask for: None (store every step's residuals)
    or k >= 1 (store the carries every k steps, recompute the rest; recompute=True is k=1).
    Bad values raise naming the argument, what it expects and what it received."""
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute: expected True or False, received {recompute!r}")
    if checkpoint_every is None:
        return 1 if recompute else None
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)):
        raise TypeError(f"checkpoint_every: expected a positive int (BPTT keeps the carries "
                        f"every that many steps) or None, received {checkpoint_every!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: expected a positive int (BPTT keeps the carries "
                         f"every that many steps) or None, received {checkpoint_every!r}")
    if recompute and checkpoint_every != 1:
        raise ValueError(f"checkpoint_every: expected None or 1 with recompute=True (recompute="
                         f"True means checkpoint_every=1), received {checkpoint_every!r}; pass "
                         f"only checkpoint_every")
    return int(checkpoint_every)


def grad_graph(graph: Graph, loss_index: int = 0, wrt: Sequence[str] | None = None,
               extra_outputs: bool = True, preoptimize: bool = False,
               recompute: bool = False, checkpoint_every: int | None = None) -> Graph:
    """A graph computing the forward outputs and d(outputs[loss_index])/d(wrt).

    The loss must be a float scalar. `wrt` names parameters and/or inputs (default: every
    parameter). Outputs: the forward outputs (if extra_outputs) then one gradient per wrt name
    (zeros if the loss does not depend on it). recompute=True: BPTT stores only each step's
    carries and recomputes the rest in the reverse scan (see `vjp`). checkpoint_every=k > 1:
    BPTT stores the carries every k steps only; the reverse loop runs over segments of k steps,
    re-running a segment's forward (storing its residuals) before its reverse scan
    (rnncomp.transforms.remat). checkpoint_every=1 is recompute=True.
    """
    k = check_checkpoint_every(checkpoint_every, recompute)
    recompute = k is not None
    if preoptimize:
        # Optimize the forward graph first (the input projection leaves the loop as one GEMM):
        # its VJP is then one GEMM for dW_x and one for dX outside the reverse loop, and the
        # loop saves only what the recurrent part needs.
        from .passes import FORWARD_PIPELINE, optimize

        # with recompute the input projection stays in the loop: hoisted, it would be a
        # [T, B, 4H] buffer kept alive for the backward pass, the largest thing saved
        passes = [p for p in FORWARD_PIPELINE if not (recompute and p[0] == "hoist")]
        graph = optimize(graph, passes=passes).graph
    loss = graph.outputs[loss_index]
    if loss.shape != () or not _is_float(loss):
        raise AutodiffError(f"the loss (output {loss_index}) must be a float scalar, received "
                            f"{loss.dtype}[{','.join(map(str, loss.shape))}]")
    names = list(wrt) if wrt is not None else graph.param_names
    by_name = {n.name: n for n in graph.inputs}
    missing = [w for w in names if w not in by_name]
    if missing:
        raise AutodiffError(f"wrt: unknown names {missing}; the graph has {sorted(by_name)}")
    targets = [by_name[w] for w in names]
    for w, t in zip(names, targets):
        if not _is_float(t):
            raise AutodiffError(f"wrt: {w!r} is {t.dtype}; gradients exist for float inputs only")
    seeds: list[Node | None] = [None] * len(graph.outputs)
    seeds[loss_index] = ops.const(1.0, loss.dtype)
    # the forward values keep their printed names; gradient values continue the count
    prov = ensure_family(graph).child()
    with provenance.recording(prov):
        fwd = list(graph.outputs)
        if k is not None and k > 1:
            from .remat import segment_scans

            fwd = list(segment_scans(Graph(graph.inputs, fwd), k).outputs)
        prim, grads = vjp(fwd, seeds, targets, recompute)
        grads = [g if g is not None else ops.zeros_like(t) for g, t in zip(grads, targets)]
    outs = (list(prim) if extra_outputs else []) + grads
    return provenance.attach(Graph(graph.inputs, outs), prov)


def vjp_graph(graph: Graph, wrt: Sequence[str] | None = None) -> Graph:
    """Graph(inputs..., one cotangent input "@ct/k" per float output) -> (outputs, grads)."""
    names = list(wrt) if wrt is not None else graph.param_names
    by_name = {n.name: n for n in graph.inputs}
    targets = [by_name[w] for w in names]
    ct_inputs = []
    seeds: list[Node | None] = []
    for k, o in enumerate(graph.outputs):
        if _is_float(o):
            c = ops.make(Op.INPUT, name=f"@ct/{k}", shape=o.shape, dtype=o.dtype)
            ct_inputs.append(c)
            seeds.append(c)
        else:
            seeds.append(None)
    prov = ensure_family(graph).child()  # as in grad_graph: forward values keep their names
    with provenance.recording(prov):
        prim, grads = vjp(list(graph.outputs), seeds, targets)
        grads = [g if g is not None else ops.zeros_like(t) for g, t in zip(grads, targets)]
    return provenance.attach(Graph(list(graph.inputs) + ct_inputs, list(prim) + grads), prov)


__all__ = ["vjp", "grad_graph", "vjp_graph", "check_checkpoint_every", "AutodiffError", "DType"]
