"""Optimizing passes: each a pure Graph -> Graph function, in one visible, ordered pipeline.

    PIPELINE = [("fold_constants", ...), ("simplify", ...), ...]
    result = optimize(graph, print_after={"hoist"}, verify=True)
    result.graph, result.stages (name -> graph), result.timings (name -> seconds)

Rewrites are small rules matched on op groups and run to a fixed point by one generic driver
(`rewrite`), which also descends into scan bodies. Loop-level passes (licm, hoist, sink, dce)
restructure scans explicitly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..ir import ops, provenance, rows
from ..ir.context import Context
from ..ir.dtypes import DType
from ..ir.graph import Graph, GroupOp, Node, Op, substitute, toposort
from ..ir.ops import REGISTRY, scan_info
from ..ir.printer import ensure_family
from ..ir.verify import verify as verify_graph

Rule = Callable[[Node], "Node | None"]


# ---------------------------------------------------------------------------------------------
# The generic driver
# ---------------------------------------------------------------------------------------------
def _with_body(n: Node, inputs, body: Graph) -> Node:
    return ops.make(n.op, *inputs, **{**dict(n.attrs), "body": body})


def map_graph(g: Graph, node_fn: Callable[[Node], Node], body_fn: Callable[[Graph], Graph],
              skip: frozenset[Op] = frozenset()) -> Graph:
    """Rebuild g bottom-up: bodies through body_fn (except those of ops in `skip`), then each
    node through node_fn."""
    memo: dict[int, Node] = {}
    for n in g.nodes:
        if n.op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER) and n in g.inputs:
            memo[id(n)] = n
            continue
        new_in = [memo[id(i)] for i in n.inputs]
        body = n.attr("body")
        if isinstance(body, Graph) and n.op not in skip:
            nb = body_fn(body)
            m = n if (nb is body and all(a is b for a, b in zip(new_in, n.inputs))) \
                else _with_body(n, new_in, nb)
        elif all(a is b for a, b in zip(new_in, n.inputs)):
            m = n
        else:
            m = ops.remake(n, new_in)
        memo[id(n)] = node_fn(m)
    return Graph(g.inputs, [memo[id(o)] for o in g.outputs])


def rewrite(g: Graph, rules: list[Rule], max_iter: int = 50) -> Graph:
    """Apply rules bottom-up (in bodies too) until nothing changes."""

    def apply(n: Node) -> Node:
        for _ in range(100):
            for r in rules:
                m = r(n)
                if m is not None and m is not n:
                    n = m
                    break
            else:
                return n
        return n

    def node_fn(n: Node) -> Node:
        # a replacement the rules build takes the name and source line of the node it replaces
        since = provenance.mark()
        return provenance.inherit(apply(n), n, since)

    for _ in range(max_iter):
        new = map_graph(g, node_fn, lambda b: rewrite(b, rules, max_iter))
        if all(a is b for a, b in zip(new.outputs, g.outputs)):
            return g
        g = new
    return g


# ---------------------------------------------------------------------------------------------
# Reroll: a static unroll (T copies of one step) becomes one scan
# ---------------------------------------------------------------------------------------------
class _NoReroll(Exception):
    pass


def _anti_unify(a_outs: list[Node], b_outs: list[Node], pairs: dict[tuple[int, int], Node],
                step: Node, literal_casts: set[int]) -> list[Node]:
    """The step function behind two consecutive steps a (= step 0) and b (= step 1): nodes equal
    in both are shared (invariants), the pairs (state_t, state_t+1), (x_t, x_t+1) become the
    body's placeholders, literals 0 / 1 (the step index, folded into a cast to any dtype) become
    the step index (every step is checked against the body afterwards), anything else must have
    the same op and attrs on both sides."""
    memo: dict[tuple[int, int], Node] = {}

    def au(a: Node, b: Node) -> Node:
        if a is b:
            return a
        key = (id(a), id(b))
        if key in pairs:
            return pairs[key]
        if key in memo:
            return memo[key]
        if (a.op is Op.CONST and b.op is Op.CONST and a.dtype is b.dtype and a.shape == ()
                and a.attr("value") == 0 and b.attr("value") == 1):
            r = ops.cast(step, a.dtype)
            literal_casts.add(id(r))  # step t instantiates it as the literal t, not a cast
        elif (a.op is b.op and a.op is not Op.SCAN and len(a.inputs) == len(b.inputs)
              and dict(a.attrs) == dict(b.attrs)):
            r = ops.remake(a, [au(x, y) for x, y in zip(a.inputs, b.inputs)])
        else:
            raise _NoReroll(f"steps differ at {a!r} / {b!r}")
        memo[key] = r
        return r

    return [au(a, b) for a, b in zip(a_outs, b_outs)]


def _instantiate(outs: list[Node], env: dict[int, Node], step: Node, t: int,
                 literal_casts: set[int]) -> list[Node]:
    """The body's outputs at step t (placeholders replaced, the step index a literal): the same
    interned nodes as the unrolled step t iff the two compute the same thing."""
    memo: dict[int, Node] = dict(env)
    memo[id(step)] = ops.const(t, DType.i32)
    for n in toposort(outs):
        if id(n) in memo:
            continue
        if id(n) in literal_casts:
            memo[id(n)] = ops.const(t, n.dtype)
            continue
        new = [memo.get(id(i), i) for i in n.inputs]
        memo[id(n)] = n if all(a is b for a, b in zip(new, n.inputs)) else ops.remake(n, new)
    return [memo[id(o)] for o in outs]


def _reroll_one(g: Graph, u) -> dict[int, Node] | None:
    """Replacements (id(old node) -> new) that turn unroll `u` into a scan, or None."""
    T = len(u.xs)
    if T < 2 or len(u.states) != T + 1 or len(u.outputs) != T:
        return None
    ns = len(u.states[0])
    step = ops.placeholder((), DType.i32, role="t")
    c_ph = [ops.placeholder(c.shape, c.dtype, role="carry") for c in u.states[0]]
    x_ph = ops.placeholder(u.xs[0].shape, u.xs[0].dtype, role="x")
    pairs = {(id(a), id(b)): ph for a, b, ph in zip(u.states[0], u.states[1], c_ph)}
    pairs[(id(u.xs[0]), id(u.xs[1]))] = x_ph
    literal_casts: set[int] = set()
    try:
        outs = _anti_unify(list(u.states[1]) + [u.outputs[0]],
                           list(u.states[2]) + [u.outputs[1]], pairs, step, literal_casts)
    except _NoReroll:
        return None
    for t in range(T):  # every step must be this body, exactly
        env = {id(ph): v for ph, v in zip(c_ph, u.states[t])}
        env[id(x_ph)] = u.xs[t]
        got = _instantiate(outs, env, step, t, literal_casts)
        if any(a is not b for a, b in zip(got, list(u.states[t + 1]) + [u.outputs[t]])):
            return None
    # which values of the unroll are used outside it: the outputs, the final state and (as
    # extra stacked outputs) any intermediate state; any other inner value blocks the reroll.
    # Inner values are those computed from a state after step 0: a value computed only from
    # the initial state, the inputs and free values (the step mask t < L; step 0's
    # concat([x_0, h_0]) when two cells start from the same zeros) may be shared with another
    # unroll, and stays in the graph for it (the scan body computes its own)
    roots = {id(n) for t in range(1, T + 1) for n in u.states[t]}
    inner: set[int] = set()
    for n in toposort(list(u.states[T]) + list(u.outputs)):
        if id(n) in roots or any(id(i) in inner for i in n.inputs):
            inner.add(id(n))
    inner -= {id(n) for n in toposort(list(u.states[0]) + list(u.xs))}
    mids = {id(n): (t, k) for t in range(1, T) for k, n in enumerate(u.states[t])}
    outs_at = {id(o): t for t, o in enumerate(u.outputs)}
    finals = {id(n) for n in u.states[T]}
    # an inner value that depends on the unroll only through its final states (tanh(c_T) of a
    # loss, interned to the node the last step's h_T = o * tanh(c_T) uses) is rebuilt from the
    # scan's final carries when the finals are substituted: it does not block the reroll
    after_final: set[int] = set()
    for n in toposort(list(u.states[T]) + list(u.outputs)):
        if (id(n) in inner and id(n) not in roots and n.inputs
                and all(id(i) not in inner or id(i) in finals or id(i) in after_final
                        for i in n.inputs)):
            after_final.add(id(n))
    free_ok = outs_at.keys() | finals | after_final
    stack_states = False
    for n in g.nodes:
        if id(n) in inner:
            continue
        for i in n.inputs:
            if id(i) in inner and id(i) not in free_ok:
                if id(i) not in mids:
                    return None
                stack_states = True
    live_out = [o for o in g.outputs if id(o) in inner]
    if any(id(o) in mids for o in live_out):
        stack_states = True
    if any(id(o) not in free_ok and id(o) not in mids for o in live_out):
        return None
    ys = [outs[ns]] + (list(outs[:ns]) if stack_states else [])
    body, free = ops.close_body([step] + c_ph + [x_ph], list(outs[:ns]) + ys)
    xs = ops.concat([ops.reshape(x, (1,) + tuple(x.shape)) for x in u.xs], axis=0)
    res = ops.scan(body, list(u.states[0]), [xs], free)
    carries, stacked = res[:ns], res[ns:]

    def at(y: Node, t: int, like: Node) -> Node:
        return ops.reshape(ops.slice_(y, 0, t, t + 1), tuple(like.shape))

    repl: dict[int, Node] = {}
    for t, o in enumerate(u.outputs):
        repl.setdefault(id(o), at(stacked[0], t, o))
    if stack_states:
        for t in range(1, T):
            for k, n in enumerate(u.states[t]):
                repl.setdefault(id(n), at(stacked[1 + k], t - 1, n))
    for k, n in enumerate(u.states[T]):
        repl[id(n)] = carries[k]
    return repl


def reroll(g: Graph) -> Graph:
    """Static unrolls become scans: T identical step bodies (recorded by static_rnn in
    Graph.unrolls) are anti-unified into one body, checked to reproduce every step exactly
    (nodes are interned, so "exactly" is object identity), and replaced by a scan over the
    stacked inputs; the step outputs become slices of its stacked outputs. The traced graph
    still shows T copies; compile time and code size no longer grow with T."""
    if not g.unrolls:
        return g
    done: list[dict[int, Node]] = []
    for u in g.unrolls:
        if done:  # earlier rerolls rebuilt nodes this unroll refers to: follow them
            T, ns = len(u.xs), len(u.states[0])
            flat = list(u.xs) + [n for st in u.states for n in st] + list(u.outputs)
            for r in done:
                flat = substitute(flat, r, ops.remake)
            xs, rest = flat[:T], flat[T:]
            states = tuple(tuple(rest[t * ns:(t + 1) * ns]) for t in range(T + 1))
            u = type(u)(tuple(xs), states, tuple(rest[(T + 1) * ns:]))
        repl = _reroll_one(g, u)
        if repl:
            g = Graph(g.inputs, substitute(g.outputs, repl, ops.remake), g.unrolls)
            done.append(repl)
    return Graph(g.inputs, g.outputs)


# ---------------------------------------------------------------------------------------------
# Constant folding and algebraic simplification
# ---------------------------------------------------------------------------------------------
def _fold(n: Node) -> Node | None:
    if n.op in GroupOp.Elementwise and n.inputs and all(i.op is Op.CONST for i in n.inputs):
        vals = [np.array(i.attr("value"), i.dtype.np) for i in n.inputs]
        v = REGISTRY[n.op].impl(Context(), dict(n.attrs), *vals)
        if np.ndim(v) == 0:
            return ops.const(np.asarray(v).item(), n.dtype)
    if n.op is Op.RESHAPE and n.inputs[0].op is Op.CONST and ops.numel_known(n.shape) == 1:
        return None
    return None


def _is(x: Node, v: float) -> bool:
    return x.op is Op.CONST and x.attr("value") == v


def _same_or_broadcast(x: Node, like: Node) -> Node:
    return x if x.shape == like.shape else ops.broadcast(x, like.shape)


def _simplify(n: Node) -> Node | None:
    op, ins = n.op, n.inputs
    if op is Op.ADD:
        a, b = ins
        if _is(b, 0.0) and a.shape == n.shape:
            return a
        if _is(a, 0.0) and b.shape == n.shape:
            return b
        # a sum of disjoint pads along one axis is a concat (the gate cotangents of a cell)
        r = _pads_to_concat(n)
        if r is not None:
            return r
    if op is Op.SUB and _is(ins[1], 0.0) and ins[0].shape == n.shape:
        return ins[0]
    if op is Op.MUL:
        a, b = ins
        if _is(b, 1.0) and a.shape == n.shape:
            return a
        if _is(a, 1.0) and b.shape == n.shape:
            return b
    if op is Op.DIV and _is(ins[1], 1.0) and ins[0].shape == n.shape:
        return ins[0]
    if op is Op.NEG and ins[0].op is Op.NEG:
        return ins[0].inputs[0]
    if op is Op.WHERE and ins[1] is ins[2] and ins[1].shape == n.shape:
        return ins[1]
    if op is Op.TRANSPOSE and ins[0].op is Op.TRANSPOSE:
        p1, p2 = ins[0].attr("perm"), n.attr("perm")
        return ops.transpose(ins[0].inputs[0], tuple(p1[p] for p in p2))
    if op is Op.RESHAPE and ins[0].op is Op.RESHAPE:
        return ops.reshape(ins[0].inputs[0], n.shape)
    if op is Op.SLICE:
        return _simplify_slice(n)
    if op is Op.DIMSIZE:
        src = _size_source(ins[0], n.attr("axis"))
        if src is not None:
            return ops.make(Op.DIMSIZE, src[0], axis=src[1], dtype=n.dtype)
    if op is Op.STOP_GRADIENT:
        return ins[0]  # after autodiff, stop_gradient is the identity
    if op in GroupOp.Binary and len(ins) == 2:
        # broadcast(reshape(literal)) feeding an elementwise op whose other operand already has
        # the result's shape is the literal itself (the seed cotangent 1.0 of a loss)
        for k in (0, 1):
            lit = _splat_literal(ins[k])
            if lit is not None and ins[1 - k].shape == n.shape:
                new = [ins[0], ins[1]]
                new[k] = lit
                return ops.remake(n, new)
    return None


def _size_source(x: Node, a: int) -> tuple[Node, int] | None:
    """An input of x (and its axis) whose size is x's size along axis a: the size of a value
    computed in a loop body then comes from an input of the body, which licm can read outside
    the loop (a layer norm's element count stops being a per-step result)."""
    if x.op in GroupOp.Elementwise:
        for i in x.inputs:
            if i.ndim == x.ndim and i.shape[a] == x.shape[a]:
                return i, a
        return None
    if x.op in (Op.SLICE, Op.CONCAT) and x.attr("axis") != a:
        return x.inputs[0], a
    if x.op is Op.TRANSPOSE:
        return x.inputs[0], x.attr("perm")[a]
    if x.op is Op.MATMUL and x.ndim == 2 and all(i.ndim == 2 for i in x.inputs):
        return (x.inputs[0], 0) if a == 0 else (x.inputs[1], 1)
    return None


def _splat_literal(x: Node) -> Node | None:
    seen = x
    while seen.op in (Op.BROADCAST, Op.RESHAPE):
        seen = seen.inputs[0]
    if seen is not x and seen.op is Op.CONST:
        return seen
    return None


def _simplify_slice(n: Node) -> Node | None:
    (x,) = n.inputs
    ax, s, e = n.attr("axis"), n.attr("start"), n.attr("stop")
    if x.op is Op.CONCAT and x.attr("axis") == ax:
        off = 0
        for p in x.inputs:
            d = p.shape[ax]
            if off <= s and e <= off + d:
                return ops.slice_(p, ax, s - off, e - off)
            off += d
    if x.op is Op.PAD and x.attr("axis") == ax:
        ps = x.attr("start")
        d = x.inputs[0].shape[ax]
        if ps <= s and e <= ps + d:
            return ops.slice_(x.inputs[0], ax, s - ps, e - ps)
        if e <= ps or s >= ps + d:
            return ops.zeros_like(n)
    if x.op is Op.SLICE and x.attr("axis") == ax:
        return ops.slice_(x.inputs[0], ax, x.attr("start") + s, x.attr("start") + e)
    if x.op is Op.MATMUL and ax == x.ndim - 1:
        # slicing the columns of a @ b is a @ (columns of b): splits the recurrent GEMM of a
        # cell's backward into the part the carries need and the part that can leave the loop
        a, b = x.inputs
        return ops.matmul(a, ops.slice_(b, 1, s, e))
    return None


def _pads_to_concat(n: Node) -> Node | None:
    terms: list[Node] = []

    def collect(e: Node) -> bool:
        if e.op is Op.ADD and e.inputs[0].shape == e.shape and e.inputs[1].shape == e.shape:
            return collect(e.inputs[0]) and collect(e.inputs[1])
        if e.op is Op.PAD:
            terms.append(e)
            return True
        return False

    if not collect(n) or len(terms) < 2:
        return None
    ax = terms[0].attr("axis")
    if any(t.attr("axis") != ax for t in terms):
        return None
    spans = sorted((t.attr("start"), t.attr("start") + t.inputs[0].shape[ax], t.inputs[0])
                   for t in terms)
    pos = spans[0][0]
    for s, e, _ in spans:
        if s != pos:
            return None  # overlap or gap
        pos = e
    cat = ops.concat([x for _, _, x in spans], ax)
    return ops.pad(cat, ax, spans[0][0], n.shape[ax])


def _split_concat_matmul(n: Node) -> Node | None:
    a, k = n.inputs
    if a.op is not Op.CONCAT or a.attr("axis") != a.ndim - 1:
        return None
    acc, off = None, 0
    for p in a.inputs:
        d = p.shape[-1]
        term = ops.matmul(p, ops.slice_(k, 0, off, off + d))
        acc = term if acc is None else ops.add(acc, term)
        off += d
    return acc


def fold_constants(g: Graph) -> Graph:
    """Evaluate elementwise ops whose inputs are all literals."""
    return rewrite(g, [_fold])


def simplify(g: Graph) -> Graph:
    """Algebraic identities; slices through concat/pad/matmul; disjoint pads -> concat;
    concat([x, h]) @ K -> x @ K[:I] + h @ K[I:] (so x @ K[:I] can leave the loop)."""
    return rewrite(g, [_fold, _simplify])


def cse(g: Graph) -> Graph:
    """Common subexpressions: rebuilding re-interns nodes, so equal expressions merge."""

    def rebuild(x: Graph) -> Graph:
        memo: dict[int, Node] = {}
        for n in x.nodes:
            if n in x.inputs:
                memo[id(n)] = n
                continue
            new_in = [memo[id(i)] for i in n.inputs]
            body = n.attr("body")
            if isinstance(body, Graph):
                memo[id(n)] = _with_body(n, new_in, rebuild(body))
            else:
                memo[id(n)] = ops.remake(n, new_in)
        return Graph(x.inputs, [memo[id(o)] for o in x.outputs])

    return rebuild(g)


# ---------------------------------------------------------------------------------------------
# Loop passes
# ---------------------------------------------------------------------------------------------
@dataclass
class _ScanParts:
    node: Node
    body: Graph
    t: Node
    carries: list[Node]  # body placeholders
    xs: list[Node]
    invs: list[Node]
    init: list[Node]  # outer values
    X: list[Node]
    W: list[Node]
    length: Node | None


def _parts(s: Node) -> _ScanParts:
    info = scan_info(s)
    b: Graph = s.attr("body")
    nc, nx = info.n_carry, info.n_xs
    ins = list(s.inputs)
    return _ScanParts(s, b, b.inputs[0], list(b.inputs[1:1 + nc]),
                      list(b.inputs[1 + nc:1 + nc + nx]), list(b.inputs[1 + nc + nx:]),
                      ins[:nc], ins[nc:nc + nx], ins[nc + nx:nc + nx + info.n_inv],
                      ins[-1] if info.has_length else None)


def _rebuild_scan(p: _ScanParts, xs: list[tuple[Node, Node]], invs: list[tuple[Node, Node]],
                  outputs: list[Node], items_map) -> Node:
    body = Graph([p.t] + p.carries + [a for a, _ in xs] + [a for a, _ in invs], outputs)
    ins = list(p.init) + [b for _, b in xs] + [b for _, b in invs]
    if p.length is not None:
        ins.append(p.length)
    attrs = {**dict(p.node.attrs), "body": body, "n_xs": len(xs), "n_carry": len(p.carries)}
    k = rows.rows_index(p.node)
    if k is not None:  # the `rows` hint follows its lengths invariant (or goes with it)
        at = [j for j, (a, _) in enumerate(invs) if a is p.invs[k]]
        attrs["rows"] = at[0] if at else None
    return ops.make(Op.SCAN, *ins, **attrs)


def _scan_pass(g: Graph, fn: Callable[[Node, list[Node]], dict[int, Node] | None]) -> Graph:
    """Run fn on each scan (bottom-up, bodies first) with the ITEM users of that scan.

    fn returns a mapping id(old item) -> replacement (or None to keep the scan).
    """

    def transform(x: Graph) -> Graph:
        # bodies first
        x = map_graph(x, lambda n: n, transform)
        # then each scan of this graph, one at a time in topological order (a scan's inputs may
        # be results of an earlier scan that was just rebuilt)
        for _ in range(10_000):
            nodes = x.nodes
            items: dict[int, list[Node]] = {}
            for n in nodes:
                if n.op is Op.ITEM:
                    items.setdefault(id(n.inputs[0]), []).append(n)
            for n in nodes:
                if n.op is Op.SCAN:
                    since = provenance.mark()
                    r = fn(n, items.get(id(n), []))
                    if r:
                        for it in items.get(id(n), []):  # the new results keep their names
                            if id(it) in r:
                                provenance.inherit(r[id(it)], it, since)
                        x = Graph(x.inputs, substitute(x.outputs, r, ops.remake))
                        break
            else:
                return x
        return x

    return transform(g)


def _depends(nodes_order: list[Node], roots: set[int]) -> dict[int, bool]:
    dep: dict[int, bool] = {}
    for n in nodes_order:
        dep[id(n)] = id(n) in roots or any(dep.get(id(i), False) for i in n.inputs)
    return dep


def licm(g: Graph) -> Graph:
    """Loop-invariant code motion: body computations that read only invariants leave the loop."""

    def fn(s: Node, items: list[Node]):
        p = _parts(s)
        # a size of a carry or a per-step input is the size of its initial value or of the
        # stacked input: the same at every step
        order = toposort(p.body.outputs)
        outer_of = {id(ph): (v, 0) for ph, v in zip(p.carries, p.init)}
        outer_of.update({id(ph): (v, 1) for ph, v in zip(p.xs, p.X)})  # (leading time axis)
        sizes: dict[int, Node] = {}
        for n in order:
            if n.op is Op.DIMSIZE and id(n.inputs[0]) in outer_of:
                v, shift = outer_of[id(n.inputs[0])]
                sizes[id(n)] = ops.make(Op.DIMSIZE, v, axis=n.attr("axis") + shift,
                                        dtype=n.dtype)
        if sizes:
            new_ph = {k: ops.placeholder((), v.dtype, role="inv") for k, v in sizes.items()}
            outputs = substitute(p.body.outputs, new_ph, ops.remake)
            invs = list(zip(p.invs, p.W)) + [(new_ph[k], sizes[k]) for k in sizes]
            new = _rebuild_scan(p, list(zip(p.xs, p.X)), invs, outputs, None)
            return {id(it): ops.item(new, it.attr("index")) for it in items}
        dep = _depends(order, {id(x) for x in [p.t] + p.carries + p.xs})
        lift: list[Node] = []
        seen: set[int] = set()
        for n in order:
            if dep[id(n)]:
                for i in n.inputs:
                    if not dep[id(i)] and i.op not in (Op.CONST, Op.PLACEHOLDER) and \
                            id(i) not in seen:
                        seen.add(id(i))
                        lift.append(i)
        for o in p.body.outputs:
            if not dep[id(o)] and o.op not in (Op.CONST, Op.PLACEHOLDER) and id(o) not in seen:
                seen.add(id(o))
                lift.append(o)
        if not lift:
            return None
        inv_map = {id(a): b for a, b in zip(p.invs, p.W)}
        outer = substitute(lift, inv_map, ops.remake)
        new_ph = [ops.placeholder(x.shape, x.dtype, role="inv") for x in lift]
        outputs = substitute(p.body.outputs, {id(a): b for a, b in zip(lift, new_ph)},
                             ops.remake)
        invs = list(zip(p.invs, p.W)) + list(zip(new_ph, outer))
        new = _rebuild_scan(p, list(zip(p.xs, p.X)), invs, outputs, None)
        return {id(it): ops.item(new, it.attr("index")) for it in items}

    return _scan_pass(g, fn)


def _batchable(n: Node, inner: Node) -> bool:
    return n.op in GroupOp.Elementwise or n.op in (Op.MATMUL, Op.SLICE, Op.CONCAT)


def _batch(n: Node, env: dict[int, tuple[Node, bool]]) -> tuple[Node, bool] | None:
    """Outer expression computing node n for all time steps at once (leading T axis)."""
    ins = []
    for i in n.inputs:
        if id(i) not in env:
            return None
        ins.append(env[id(i)])
    if not any(b for _, b in ins):
        return ops.remake(n, [x for x, _ in ins]), False
    if n.op in GroupOp.Elementwise:
        rank = n.ndim
        if any(not b and x.ndim > rank for x, b in ins):
            return None
        # a batched per-step value of lower rank (e.g. a per-step scalar stacked to [T]) keeps
        # its time axis leading: [T] -> [T, 1, ..., 1] before broadcasting with [T, ...]
        return ops.remake(n, [ops.reshape(x, (x.shape[0],) + (1,) * (rank + 1 - x.ndim)
                                          + tuple(x.shape[1:])) if b and x.ndim <= rank else x
                              for x, b in ins]), True
    if n.op is Op.MATMUL:
        (a, ba), (w, bw) = ins
        if not ba or bw:
            return None
        return ops.matmul(a, w), True
    if n.op is Op.SLICE:
        (x, _), = ins
        return ops.slice_(x, n.attr("axis") + 1, n.attr("start"), n.attr("stop")), True
    if n.op is Op.CONCAT and all(b for _, b in ins):
        return ops.concat([x for x, _ in ins], n.attr("axis") + 1), True
    return None


def hoist(g: Graph) -> Graph:
    """Move per-step work that does not depend on the carries out of the loop, batched over
    time, when it contains a matmul: x_t @ W_x becomes ONE GEMM over [T, B, I] before the loop.
    """

    def fn(s: Node, items: list[Node]):
        if s.attr("remat"):  # BPTT with recompute: the per-step work stays in the loop
            return None
        p = _parts(s)
        order = toposort(p.body.outputs)
        carry_dep = _depends(order, {id(x) for x in [p.t] + p.carries})
        # concat([x_t, h]) @ K -> x_t @ K[:I] + h @ K[I:]: separates the hoistable part
        split: dict[int, Node] = {}
        for n in order:
            if n.op is Op.MATMUL and n.inputs[0].op is Op.CONCAT and \
                    n.inputs[0].attr("axis") == n.inputs[0].ndim - 1 and \
                    not carry_dep[id(n.inputs[1])]:
                parts = n.inputs[0].inputs
                kinds = {carry_dep[id(q)] for q in parts}
                if kinds == {True, False}:
                    since = provenance.mark()
                    acc, off = None, 0
                    for q in parts:
                        d = q.shape[-1]
                        term = ops.matmul(q, ops.slice_(n.inputs[1], 0, off, off + d))
                        acc = term if acc is None else ops.add(acc, term)
                        off += d
                    split[id(n)] = provenance.inherit(acc, n, since)
        if split:
            outs = substitute(p.body.outputs, split, ops.remake)
            p.body = Graph(p.body.inputs, outs)
            order = toposort(outs)
            carry_dep = _depends(order, {id(x) for x in [p.t] + p.carries})
        env: dict[int, tuple[Node, bool]] = {}
        for a, b in zip(p.xs, p.X):
            env[id(a)] = (b, True)
        for a, b in zip(p.invs, p.W):
            env[id(a)] = (b, False)
        has_mm: dict[int, bool] = {}
        for n in order:
            if id(n) in env or n.op is Op.CONST:
                if n.op is Op.CONST:
                    env[id(n)] = (n, False)
                has_mm[id(n)] = False
                continue
            has_mm[id(n)] = n.op is Op.MATMUL or any(has_mm.get(id(i), False) for i in n.inputs)
            if not carry_dep[id(n)]:
                r = _batch(n, env)
                if r is not None:
                    env[id(n)] = r
        # frontier: batched, matmul-containing, x-dependent nodes read by carry-dependent ones
        frontier: list[Node] = []
        seen: set[int] = set()
        for n in order:
            if carry_dep[id(n)]:
                for i in n.inputs:
                    if id(i) in env and env[id(i)][1] and has_mm[id(i)] and \
                            i.op is not Op.PLACEHOLDER and id(i) not in seen:
                        seen.add(id(i))
                        frontier.append(i)
        for o in p.body.outputs:
            if id(o) in env and env[id(o)][1] and has_mm[id(o)] and o.op is not Op.PLACEHOLDER \
                    and id(o) not in seen:
                seen.add(id(o))
                frontier.append(o)
        if not frontier:
            return None
        new_ph = [ops.placeholder(f.shape, f.dtype, role="x") for f in frontier]
        outputs = substitute(p.body.outputs, {id(a): b for a, b in zip(frontier, new_ph)},
                             ops.remake)
        xs = list(zip(p.xs, p.X)) + [(ph, env[id(f)][0]) for ph, f in zip(new_ph, frontier)]
        new = _rebuild_scan(p, xs, list(zip(p.invs, p.W)), outputs, None)
        return {id(it): ops.item(new, it.attr("index")) for it in items}

    return _scan_pass(g, fn)


def sink(g: Graph) -> Graph:
    """Per-step outputs `u_t @ W` (W invariant) leave the loop as ONE GEMM over all steps: the
    loop emits u_t instead (in BPTT: dX = dZ @ W_x^T after the reverse loop)."""

    def fn(s: Node, items: list[Node]):
        p = _parts(s)
        info = scan_info(s)
        outs = list(p.body.outputs)
        nc = info.n_carry
        order = toposort(outs)
        used_in_body: set[int] = set()
        for n in order:
            for i in n.inputs:
                used_in_body.add(id(i))
        inv_outer = {id(a): b for a, b in zip(p.invs, p.W)}
        changes: dict[int, Node] = {}
        for k in range(nc, len(outs)):
            y = outs[k]
            if y.op is Op.MATMUL and id(y) not in used_in_body and \
                    id(y.inputs[1]) in inv_outer and all(o is not y for o in outs[:nc]):
                changes[k] = y
        if not changes:
            return None
        new_outs = [changes[k].inputs[0] if k in changes else o for k, o in enumerate(outs)]
        new = _rebuild_scan(p, list(zip(p.xs, p.X)), list(zip(p.invs, p.W)), new_outs, None)
        mapping = {}
        for it in items:
            k = it.attr("index")
            r = ops.item(new, k)
            if k in changes:
                r = ops.matmul(r, inv_outer[id(changes[k].inputs[1])])
            mapping[id(it)] = r
        return mapping

    return _scan_pass(g, fn)


def dce(g: Graph) -> Graph:
    """Drop scan outputs nobody reads, duplicate outputs, and body inputs the body ignores."""

    def fn(s: Node, items: list[Node]):
        p = _parts(s)
        info = scan_info(s)
        nc = info.n_carry
        outs = list(p.body.outputs)
        used = {it.attr("index") for it in items}
        # keep carries (they feed each other); keep used ys, deduplicated
        keep_ys: list[int] = []
        alias: dict[int, int] = {}
        for k in range(nc, len(outs)):
            if k not in used:
                continue
            for j in keep_ys:
                if outs[j] is outs[k]:
                    alias[k] = j
                    break
            else:
                keep_ys.append(k)
        # a y that is just an x_t placeholder is the stacked input itself
        passthrough: dict[int, Node] = {}
        xs_outer = {id(a): b for a, b in zip(p.xs, p.X)}
        for k in list(keep_ys):
            if id(outs[k]) in xs_outer and s.attr("has_length") is not True and \
                    s.attr("stop") is None:
                passthrough[k] = xs_outer[id(outs[k])]
                keep_ys.remove(k)
        new_outs = outs[:nc] + [outs[k] for k in keep_ys]
        reach = {id(n) for n in toposort(new_outs)}
        xs = [(a, b) for a, b in zip(p.xs, p.X) if id(a) in reach]
        keep = rows.lengths_placeholder(s)  # the `rows` hint's lengths stay
        invs = [(a, b) for a, b in zip(p.invs, p.W) if id(a) in reach or a is keep]
        if not xs and s.attr("length") is None:
            # keep one xs so the trip count stays known
            xs = [(p.xs[0], p.X[0])]
        if len(new_outs) == len(outs) and len(xs) == len(p.xs) and len(invs) == len(p.invs):
            return None
        new = _rebuild_scan(p, xs, invs, new_outs, None)
        pos = {k: nc + j for j, k in enumerate(keep_ys)}
        mapping = {}
        for it in items:
            k = it.attr("index")
            k = alias.get(k, k)  # (a duplicate of a passthrough y is that input too)
            if k < nc:
                mapping[id(it)] = ops.item(new, k)
            elif k in passthrough:
                mapping[id(it)] = passthrough[k]
            else:
                mapping[id(it)] = ops.item(new, pos[k])
        return mapping

    return _scan_pass(g, fn)


# ---------------------------------------------------------------------------------------------
# Gate fusion
# ---------------------------------------------------------------------------------------------
def gate_fusion(g: Graph) -> Graph:
    """The gate matmuls of a cell become one matmul with concatenated weights:
    x @ W1, x @ W2, ... (same left operand) -> x @ [W1 | W2 | ...] read back through slices, and
    a @ W1 + b @ W2 (same output) -> [a | b] @ [W1 ; W2]. Weight concatenations that depend on
    invariants only leave the loop by the following LICM."""

    def transform(x: Graph) -> Graph:
        x = map_graph(x, lambda n: n, transform)
        nodes = x.nodes
        by_lhs: dict[int, list[Node]] = {}
        for n in nodes:
            if n.op is Op.MATMUL and n.inputs[1].op is not Op.CONCAT:
                by_lhs.setdefault(id(n.inputs[0]), []).append(n)
        mapping: dict[int, Node] = {}
        for lhs_id, mms in by_lhs.items():
            mms = [m for i, m in enumerate(mms) if all(m.inputs[1] is not o.inputs[1]
                                                       for o in mms[:i])]
            if len(mms) < 2:
                continue
            a = mms[0].inputs[0]
            w = ops.concat([m.inputs[1] for m in mms], 1)
            fused = ops.matmul(a, w)
            off = 0
            for m in mms:
                n_ = m.inputs[1].shape[1]
                mapping[id(m)] = ops.slice_(fused, fused.ndim - 1, off, off + n_)
                off += n_
        for n in nodes:
            if n.op is Op.ADD and id(n) not in mapping:
                a, b = n.inputs
                if a.op is Op.MATMUL and b.op is Op.MATMUL and a.shape == b.shape == n.shape \
                        and a.ndim == 2 and id(a) not in mapping and id(b) not in mapping \
                        and a.inputs[0].shape[0] == b.inputs[0].shape[0]:
                    lhs = ops.concat([a.inputs[0], b.inputs[0]], 1)
                    mapping[id(n)] = ops.matmul(lhs, ops.concat([a.inputs[1], b.inputs[1]], 0))
        if not mapping:
            return x
        return Graph(x.inputs, substitute(x.outputs, mapping, ops.remake))

    return transform(g)


# ---------------------------------------------------------------------------------------------
# Variable-length batches: the `rows` hint and ragged GEMMs
# ---------------------------------------------------------------------------------------------
def _sink_concat_ys(g: Graph) -> Graph:
    """concat(ys_a, ys_b, ...) on the feature axis of one hinted scan's stacked results (a GRU's
    BPTT cotangents of its two input projections) -> one more stacked result of that scan,
    the per-step concat of its parts: the loop writes it straight into one [T, B, N] buffer
    over the valid steps (no zero-filled parts, no copy over every padded step afterwards).
    Other readers of a part read a slice of it; the parts' own buffers are dropped."""
    for _ in range(100):
        nodes = g.nodes
        cat = None
        for n in nodes:
            if n.op is Op.CONCAT and n.ndim >= 3 and n.attr("axis") == n.ndim - 1 and \
                    all(i.op is Op.ITEM for i in n.inputs) and \
                    len({id(i.inputs[0]) for i in n.inputs}) == 1 and \
                    len({id(i) for i in n.inputs}) == len(n.inputs):
                s = n.inputs[0].inputs[0]
                if s.op is Op.SCAN and rows.rows_index(s) is not None and \
                        all(i.attr("index") >= scan_info(s).n_carry for i in n.inputs):
                    cat = n
                    break
        if cat is None:
            return g
        since = provenance.mark()
        s = cat.inputs[0].inputs[0]
        body: Graph = s.attr("body")
        outs = list(body.outputs)
        y = ops.concat([outs[i.attr("index")] for i in cat.inputs], cat.attr("axis") - 1)
        new = ops.make(Op.SCAN, *s.inputs, **{**dict(s.attrs),
                                              "body": Graph(body.inputs, outs + [y])})
        mapping: dict[int, Node] = {}
        for n in nodes:
            if n.op is Op.ITEM and n.inputs[0] is s:
                mapping[id(n)] = ops.item(new, n.attr("index"))
        whole = ops.item(new, len(outs))
        mapping[id(cat)] = whole
        off = 0
        for i in cat.inputs:
            w = i.shape[-1]
            mapping[id(i)] = ops.slice_(whole, cat.attr("axis"), off, off + w)
            off += w
        for n in nodes:
            if id(n) in mapping:
                provenance.inherit(mapping[id(n)], n, since)
        g = Graph(g.inputs, substitute(g.outputs, mapping, ops.remake))
        g = dce(g)
    return g


def ragged(g: Graph) -> Graph:
    """For scans with the `rows` hint (a batch sorted by length, rnncomp.ir.rows): drop the
    hint where the optimized body is not row-separable, and run the GEMMs around the loop over
    the valid (t, b) rows only (rows past a length are zero): the hoisted input projection
    feeding the loop, `ys @ W` (dX) and the weight-gradient tensordots over [T, B]."""
    # 1. keep the hint only where it holds; a loop whose stacked results are read per step by
    # an unhinted loop (BPTT residuals) loses it too: that loop reads every row
    def unhint(s: Node) -> Node:
        return ops.make(Op.SCAN, *s.inputs, **{**dict(s.attrs), "rows": None})

    def drop(s: Node, items: list[Node]):
        if rows.rows_index(s) is None or rows.check(s) is not None:
            return None
        new = unhint(s)
        return {id(it): ops.item(new, it.attr("index")) for it in items}

    g = _scan_pass(g, drop)
    for _ in range(100):
        nodes = g.nodes
        feeds: dict[int, Node] = {}
        for n in nodes:
            if n.op is Op.SCAN and rows.rows_index(n) is None:
                info = scan_info(n)
                for x in n.inputs[info.n_carry:info.n_carry + info.n_xs]:
                    if x.op is Op.ITEM and x.inputs[0].op is Op.SCAN and \
                            rows.rows_index(x.inputs[0]) is not None:
                        feeds[id(x.inputs[0])] = x.inputs[0]
        if not feeds:
            break
        repl: dict[int, Node] = {}
        for n in nodes:
            if n.op is Op.ITEM and id(n.inputs[0]) in feeds:
                repl[id(n)] = ops.item(unhint(n.inputs[0]), n.attr("index"))
        g = Graph(g.inputs, substitute(g.outputs, repl, ops.remake))
    nodes = g.nodes
    users: dict[int, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(id(i), []).append(n)
    hinted = [n for n in nodes if n.op is Op.SCAN and rows.rows_index(n) is not None]
    if not hinted:
        return g
    g = _sink_concat_ys(g)
    nodes = g.nodes
    users = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(id(i), []).append(n)
    hinted = [n for n in nodes if n.op is Op.SCAN and rows.rows_index(n) is not None]
    since = provenance.mark()

    # 2. an input projection read only (directly or through row-local ops) as the xs of
    # hinted scans with the same lengths
    mapping: dict[int, Node] = {}
    cands: dict[int, Node] = {}
    for s in hinted:
        info = scan_info(s)
        L = rows.lengths_input(s)
        for x in s.inputs[info.n_carry:info.n_carry + info.n_xs]:
            while x.op is Op.SLICE or (x.op in GroupOp.Elementwise and x.inputs):
                x = x.inputs[0] if x.op is Op.SLICE else max(
                    x.inputs, key=lambda i: (i.ndim == 3 and i.op is Op.MATMUL, i.ndim))
            if x.op is Op.MATMUL and x.ndim == 3 and x.inputs[1].ndim == 2 and \
                    id(x) not in cands:
                cands[id(x)] = x
                if rows.valid_rows_only(x, L, users):
                    mapping[id(x)] = ops.ragged_matmul(x.inputs[0], x.inputs[1], L)
    if mapping:
        for n in nodes:
            if id(n) in mapping:
                provenance.inherit(mapping[id(n)], n, since)
        g = Graph(g.inputs, substitute(g.outputs, mapping, ops.remake))
        nodes = g.nodes
        mapping = {}
    # 3. products with a hinted scan's stacked ys (zero past each length)
    zero_rows: dict[int, Node] = {}
    for n in nodes:
        if n.op is Op.ITEM and n.inputs[0].op is Op.SCAN and \
                rows.rows_index(n.inputs[0]) is not None and n.ndim == 3 and \
                n.attr("index") >= scan_info(n.inputs[0]).n_carry and rows.zero_past_length(
                    n.inputs[0], n.attr("index") - scan_info(n.inputs[0]).n_carry):
            zero_rows[id(n)] = rows.lengths_input(n.inputs[0])
    for n in nodes:  # sums and feature-axis concats of such values are zero there too
        if n.ndim == 3 and n.dtype is not None and n.dtype.is_float and (
                (n.op in (Op.ADD, Op.SUB) and all(i.shape == n.shape for i in n.inputs)) or
                (n.op is Op.CONCAT and n.attr("axis") == 2)):
            Ls = {id(zero_rows.get(id(i))) for i in n.inputs}
            if len(Ls) == 1 and id(None) not in Ls:
                zero_rows[id(n)] = zero_rows[id(n.inputs[0])]
    parts: dict[int, Node] = {}  # slices of the feature axis of such values
    for n in nodes:
        if n.op is Op.SLICE and n.ndim == 3 and n.attr("axis") == 2 and \
                id(n.inputs[0]) in zero_rows:
            parts[id(n)] = n
    for n in nodes:
        if n.op is Op.REDUCE_SUM and n.attr("axes") == (0, 1) and \
                not n.attr("keepdims", False) and id(n.inputs[0]) in parts:
            # a bias gradient of one part: the part of the sum over the whole value (one
            # ragged reduction per value, shared by its parts after cse)
            sl = n.inputs[0]
            y = sl.inputs[0]
            ones = ops.full(tuple(y.shape[:2]) + (1,), 1.0, y.dtype)
            total = ops.reshape(ops.ragged_tensordot(ones, y, zero_rows[id(y)]), (y.shape[2],))
            mapping[id(n)] = ops.slice_(total, 0, sl.attr("start"), sl.attr("stop"))
    for n in nodes:
        if n.op is Op.MATMUL and id(n.inputs[0]) in zero_rows and n.inputs[1].ndim == 2:
            mapping[id(n)] = ops.ragged_matmul(n.inputs[0], n.inputs[1],
                                               zero_rows[id(n.inputs[0])])
        elif n.op is Op.TENSORDOT and n.attr("a_axes") == (0, 1) and \
                n.attr("b_axes") == (0, 1) and n.inputs[0].ndim == 3 and \
                n.inputs[1].ndim == 3:
            L = zero_rows.get(id(n.inputs[0]), zero_rows.get(id(n.inputs[1])))
            if L is not None and L.shape[0] == n.inputs[0].shape[1]:
                mapping[id(n)] = ops.ragged_tensordot(n.inputs[0], n.inputs[1], L)
        elif n.op is Op.REDUCE_SUM and n.attr("axes") == (0, 1) and \
                not n.attr("keepdims", False) and id(n.inputs[0]) in zero_rows:
            # a bias gradient: sum over the valid rows = ones [T, B, 1] (x) ys over them
            y = n.inputs[0]
            ones = ops.full(tuple(y.shape[:2]) + (1,), 1.0, y.dtype)
            mapping[id(n)] = ops.reshape(ops.ragged_tensordot(ones, y, zero_rows[id(y)]),
                                         n.shape)
    if not mapping:
        return g
    for n in nodes:
        if id(n) in mapping:
            provenance.inherit(mapping[id(n)], n, since)
    return cse(Graph(g.inputs, substitute(g.outputs, mapping, ops.remake)))


# ---------------------------------------------------------------------------------------------
# Elementwise fusion
# ---------------------------------------------------------------------------------------------
def _fusible(n: Node) -> bool:
    return (n.op in GroupOp.Elementwise or n.op is Op.RANDOM_UNIFORM) and n.dtype is not None \
        and n.shape != ()


def _push_slices(x: Graph) -> Graph:
    """slice(f(a, b)) -> f(slice(a), slice(b)) when every user of the elementwise f is a slice on
    its last axis: the [B, 4H] gate pre-activation add then fuses into the per-gate loop."""
    nodes = x.nodes
    usr: dict[int, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            usr.setdefault(id(i), []).append(n)
    out_ids = {id(o) for o in x.outputs}
    mapping: dict[int, Node] = {}
    for n in nodes:
        if n.op is not Op.SLICE or n.attr("axis") != n.ndim - 1:
            continue
        src = n.inputs[0]
        if src.op not in GroupOp.Elementwise or src.op is Op.CAST or id(src) in out_ids:
            continue
        if not all(u.op is Op.SLICE and u.attr("axis") == n.ndim - 1 for u in usr[id(src)]):
            continue
        parts = []
        for i in src.inputs:
            if i.ndim == 0 or i.shape[-1] == 1:
                parts.append(i)
            elif i.shape[-1] == src.shape[-1]:
                parts.append(ops.slice_(i, i.ndim - 1, n.attr("start"), n.attr("stop")))
            else:
                break
        else:
            mapping[id(n)] = ops.remake(src, parts)
    if not mapping:
        return x
    return Graph(x.inputs, substitute(x.outputs, mapping, ops.remake))


def fuse_elementwise(g: Graph) -> Graph:
    """Group connected elementwise ops of one iteration shape into FUSED nodes: all gate
    arithmetic of a step becomes one loop nest. A FUSED node's body is an elementwise graph; its
    results (the values used outside the group) are read with ITEM. Groups never form a cycle
    through outside nodes."""

    def transform(x: Graph) -> Graph:
        # a FUSED node's body is one group already (a graph optimized before, as `rnncomp
        # inspect --stage optimized --source cpu` compiles it): fusing inside it would make
        # its results ITEMs
        x = map_graph(x, lambda n: n, transform, skip=frozenset({Op.FUSED}))
        for _ in range(8):
            y = _push_slices(x)
            if y is x:
                break
            x = simplify_graph_once(y)
        nodes = x.nodes
        fus = [n for n in nodes if _fusible(n)]
        parent: dict[int, int] = {id(n): id(n) for n in fus}

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def acyclic() -> bool:
            return _contracted_acyclic(
                nodes, lambda n: find(id(n)) if id(n) in parent else id(n))

        gid: dict[int, int] = {}
        for n in fus:
            for i in n.inputs:
                if id(i) in parent and i.shape == n.shape:
                    a, b = find(id(i)), find(id(n))
                    if a == b:
                        continue
                    saved = dict(parent)
                    parent[b] = a
                    if not acyclic():
                        parent.clear()
                        parent.update(saved)
        for n in fus:
            gid[id(n)] = find(id(n))
        members: dict[int, list[Node]] = {}
        for n in nodes:
            if id(n) in gid:
                members.setdefault(find(gid[id(n)]), []).append(n)
        groups = {k: v for k, v in members.items() if len(v) >= 2}
        if not groups:
            return x
        return _build_fused(x, groups)

    return transform(g)


def _build_fused(x: Graph, groups: dict[int, list[Node]]) -> Graph:
    """x with each group (member lists in x's node order) made one FUSED node: its
    inputs are the values the group reads from outside, its results (read with ITEM) the
    members used outside the group or as outputs."""
    nodes = x.nodes
    vid = {id(n): k for k, v in groups.items() for n in v}
    # build in a topological order of the contracted graph (each group one vertex)
    out_ids = {id(o) for o in x.outputs}
    usr: dict[int, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            usr.setdefault(id(i), []).append(n)
    memo: dict[int, Node] = {}
    done: set = set()
    order: list = []

    def vertex(n: Node):
        return ("g", vid[id(n)]) if id(n) in vid else ("n", id(n))

    by_id = {id(n): n for n in nodes}
    preds: dict = {}
    for n in nodes:
        v = vertex(n)
        ps = preds.setdefault(v, [])
        for i in n.inputs:
            w = vertex(i)
            if w != v and w not in ps:
                ps.append(w)
    for n in nodes:
        stack = [(vertex(n), 0)]
        if stack[0][0] in done:
            continue
        done.add(stack[0][0])
        while stack:
            v, k = stack[-1]
            ps = preds.get(v, [])
            if k < len(ps):
                stack[-1] = (v, k + 1)
                if ps[k] not in done:
                    done.add(ps[k])
                    stack.append((ps[k], 0))
            else:
                stack.pop()
                order.append(v)
    for kind, key in order:
        if kind == "n":
            n = by_id[key]
            if n in x.inputs:
                memo[id(n)] = n
                continue
            new_in = [memo[id(i)] for i in n.inputs]
            memo[id(n)] = n if all(a is b for a, b in zip(new_in, n.inputs)) \
                else ops.remake(n, new_in)
            continue
        grp = groups[key]
        ids = {id(m) for m in grp}
        ext_in: list[Node] = []
        seen: set[int] = set()
        for m in grp:
            for i in m.inputs:
                if id(i) not in ids and i.op is not Op.CONST and id(i) not in seen:
                    seen.add(id(i))
                    ext_in.append(i)
        results = [m for m in grp if id(m) in out_ids or
                   any(id(u) not in ids for u in usr.get(id(m), []))]
        since = provenance.mark()
        ph = [ops.placeholder(i.shape, i.dtype, role="in") for i in ext_in]
        body_out = substitute(results, {id(a): b for a, b in zip(ext_in, ph)}, ops.remake)
        f = ops.make(Op.FUSED, *[memo[id(i)] for i in ext_in], body=Graph(ph, body_out))
        for k, r in enumerate(results):  # a result keeps the name of the value it replaces
            memo[id(r)] = provenance.inherit(ops.item(f, k), r, since)
    return Graph(x.inputs, [memo[id(o)] for o in x.outputs])


# ---------------------------------------------------------------------------------------------
# Row fusion (CPU lowering): last-axis reductions with the elementwise ops around them
# ---------------------------------------------------------------------------------------------
def _row_reduce(n: Node) -> bool:
    """A float sum or max over the last axis of a value of rank >= 2: a per-row statistic (a
    layer norm's mean and variance, a softmax's max and sum, their gradients' row sums)."""
    if n.op not in GroupOp.Reduce or n.dtype is None or not n.dtype.is_float:
        return False
    x = n.inputs[0]
    return x.ndim >= 2 and tuple(n.attr("axes")) == (x.ndim - 1,) and x.shape[-1] != 1


def _row_candidate(n: Node) -> bool:
    if _fusible(n) or _row_reduce(n):
        return True
    if n.op is Op.BROADCAST:
        return n.shape != ()
    if n.op is Op.RESHAPE and n.shape and n.inputs[0].shape:  # [rows] <-> [rows, 1]
        a, b = n.shape, n.inputs[0].shape
        return a == b + (1,) or b == a + (1,)
    return False


def row_group_shape(members) -> tuple | None | bool:
    """The iteration shape S of a row group (rows S[:-1], each row one inner loop over S[-1]):
    every member has shape S, S[:-1] + (1,) (a per-row value) or S[:-1] (one without keepdims),
    and every reduction reduces a value of shape S. None: a plain elementwise group (one shape,
    no reduction); False: the members do not form a row group."""
    shapes = {m.shape for m in members}
    special = any(m.op in GroupOp.Reduce or m.op in (Op.BROADCAST, Op.RESHAPE)
                  for m in members)
    if len(shapes) == 1 and not special:
        return None
    cand = {m.inputs[0].shape for m in members if m.op in GroupOp.Reduce}
    if not cand:  # (a [rows] value is not a candidate: the largest rank is)
        full = [s for s in shapes if len(s) >= 2 and s[-1] != 1]
        top = max((len(s) for s in full), default=0)
        cand = {s for s in full if len(s) == top}
    if len(cand) != 1:
        return False
    S = cand.pop()
    if len(S) < 2 or S[-1] == 1:
        return False
    rk, rn = S[:-1] + (1,), S[:-1]
    ids = {id(m) for m in members}
    for m in members:
        if m.shape not in (S, rk, rn):
            return False
        if m.op in GroupOp.Reduce and not _row_reduce(m):
            return False
        if m.op is Op.RESHAPE and (m.shape == S or m.inputs[0].shape not in (rk, rn)):
            return False
        for i in m.inputs:
            if id(i) not in ids:
                continue
            if m.op in GroupOp.Reduce:
                ok = i.shape == S
            elif m.op is Op.RESHAPE:
                ok = True
            elif m.shape == S:  # a full-shape op reads full values and per-row values [rows, 1]
                ok = i.shape in (S, rk)
            else:
                ok = i.shape == m.shape
            if not ok:
                return False
    return S


def _inline_fused(x: Graph) -> Graph:
    """The graph with every FUSED node's body inlined (its items replaced by the body's
    results): fusion then starts again from single ops."""
    memo: dict[int, Node] = {}
    inl: dict[int, list[Node]] = {}
    for n in x.nodes:
        if n in x.inputs:
            memo[id(n)] = n
            continue
        new_in = [memo[id(i)] for i in n.inputs]
        if n.op is Op.FUSED:
            body: Graph = n.attr("body")
            inl[id(n)] = substitute(body.outputs, {id(p): a for p, a in zip(body.inputs, new_in)},
                                    ops.remake)
            memo[id(n)] = n  # read through its items only
            continue
        if n.op is Op.ITEM and id(n.inputs[0]) in inl:
            memo[id(n)] = provenance.inherit(inl[id(n.inputs[0])][n.attr("index")], n,
                                             provenance.mark())
            continue
        memo[id(n)] = n if all(a is b for a, b in zip(new_in, n.inputs)) \
            else ops.remake(n, new_in)
    return Graph(x.inputs, [memo[id(o)] for o in x.outputs])


def _contracted_acyclic(nodes: list[Node], vert: Callable[[Node], int]) -> bool:
    """Kahn's algorithm on the graph with each group (vert) contracted to one vertex."""
    indeg: dict[int, int] = {}
    succ: dict[int, set[int]] = {}
    for n in nodes:
        v = vert(n)
        indeg.setdefault(v, 0)
        for i in n.inputs:
            w = vert(i)
            if w != v and v not in succ.setdefault(w, set()):
                succ[w].add(v)
                indeg[v] = indeg.get(v, 0) + 1
    ready = [v for v, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        v = ready.pop()
        seen += 1
        for w in succ.get(v, ()):
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return seen == len(indeg)


def fuse_rows(g: Graph) -> Graph:
    """The CPU backend's row fusion (after fuse_elementwise; not in PIPELINE, which the CUDA
    backend shares): in a graph with a last-axis reduction, the elementwise groups are formed
    again with the reductions, the per-row values ([rows, 1]: a mean, a variance) and their
    broadcasts as members, so a layer norm and the ops around it become one FUSED node whose
    body mixes shapes S, S[:-1] + (1,) and S[:-1] (`row_group_shape`). The CPU code generator
    renders it as one loop over the rows, each row running its inner loops and reductions in
    order (docs/design-cpu-kernels.md, "Row fusion")."""

    def transform(x: Graph) -> Graph:
        x = map_graph(x, lambda n: n, transform)
        if not any(_row_reduce(n) for n in x.nodes):
            return x
        x = _inline_fused(x)
        nodes = x.nodes
        cand = [n for n in nodes if _row_candidate(n)]
        parent: dict[int, int] = {id(n): id(n) for n in cand}
        members: dict[int, list[Node]] = {id(n): [n] for n in cand}

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def vert(n: Node) -> int:
            return find(id(n)) if id(n) in parent else id(n)

        for n in cand:
            for i in n.inputs:
                if id(i) not in parent:
                    continue
                a, b = find(id(i)), find(id(n))
                if a == b:
                    continue
                merged = members[a] + members[b]
                if row_group_shape(merged) is False:
                    continue
                saved = dict(parent)  # (find compresses paths through b)
                parent[b] = a
                if not _contracted_acyclic(nodes, vert):
                    parent.clear()
                    parent.update(saved)
                    continue
                members[a] = merged
                del members[b]
        pos = {id(n): k for k, n in enumerate(nodes)}
        groups = {k: sorted(v, key=lambda m: pos[id(m)]) for k, v in members.items()
                  if len(v) >= 2}
        if not groups:
            return x
        return _build_fused(x, groups)

    return transform(g)


def _simplify_keep_matmul(n: Node) -> Node | None:
    if n.op is Op.SLICE and n.inputs[0].op is Op.MATMUL:
        return None  # one [B, 4H] GEMM beats four [B, H] ones inside the loop
    return _simplify(n)


def simplify_graph_once(g: Graph) -> Graph:
    return rewrite(g, [_fold, _simplify_keep_matmul], max_iter=4)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
PIPELINE: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("reroll", reroll),
    ("fold_constants", fold_constants),
    ("simplify", simplify),
    ("cse", cse),
    ("licm", licm),
    ("hoist", hoist),
    ("sink", sink),
    ("simplify2", simplify),
    ("licm2", licm),
    ("dce", dce),
    ("gate_fusion", gate_fusion),
    ("licm3", licm),
    ("dce2", dce),
    ("ragged", ragged),
    ("fuse_elementwise", fuse_elementwise),
]


# the part of the pipeline that runs on a forward graph before autodiff (no fusion: autodiff
# differentiates ordinary ops)
FORWARD_PIPELINE = [p for p in PIPELINE if p[0] in ("reroll", "fold_constants", "simplify", "cse", "licm",
                                                     "hoist", "licm2", "dce", "gate_fusion",
                                                     "licm3", "dce2")]


@dataclass
class OptimizeResult:
    graph: Graph
    stages: dict[str, Graph] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        w = max(len(k) for k in self.timings) if self.timings else 4
        return "\n".join(f"{k:<{w}}  {v * 1e3:8.2f} ms" for k, v in self.timings.items())


def optimize(g: Graph, *, print_after: set[str] | str | None = None, verify: bool | None = None,
             passes: list[tuple[str, Callable[[Graph], Graph]]] | None = None,
             fuse: bool = True) -> OptimizeResult:
    """Run the pipeline. print_after: pass names (or "all") whose output IR is printed;
    also set by RNNCOMP_PRINT_AFTER=name,name. verify: run the verifier after every pass (also
    RNNCOMP_VERIFY=1; tests always turn it on)."""
    if print_after is None:
        env = os.environ.get("RNNCOMP_PRINT_AFTER", "")
        print_after = {s for s in env.split(",") if s}
    elif isinstance(print_after, str):
        print_after = {print_after}
    if verify is None:
        verify = os.environ.get("RNNCOMP_VERIFY", "") not in ("", "0")
    res = OptimizeResult(g, {"traced": g})
    # every stage shares one provenance table (a child of the input's): a value keeps its
    # printed name from pass to pass, and two runs on one graph print the same
    prov = ensure_family(g).child()
    with provenance.recording(prov):
        for name, fn in passes or PIPELINE:
            if name == "fuse_elementwise" and not fuse:
                continue
            t0 = time.perf_counter()
            g = provenance.attach(fn(g), prov)
            res.timings[name] = time.perf_counter() - t0
            if verify:
                verify_graph(g)
            res.stages[name] = g
            if "all" in print_after or name in print_after:
                print(f"# --- after {name} ---")
                print(g)
    res.graph = g
    return res



def run_stage(opt: OptimizeResult, name: str, fn: Callable[[Graph], Graph]) -> OptimizeResult:
    """One more pass on an optimized graph, recorded as the pipeline's are (a stage, its time,
    the values keep their names): a backend's own lowering (the CPU backend's fuse_rows).
    opt.graph becomes its result."""
    verify = os.environ.get("RNNCOMP_VERIFY", "") not in ("", "0")
    prov = ensure_family(opt.graph).child()
    with provenance.recording(prov):
        t0 = time.perf_counter()
        g = provenance.attach(fn(opt.graph), prov)
        opt.timings[name] = time.perf_counter() - t0
    if verify:
        verify_graph(g)
    opt.stages[name] = g
    opt.graph = g
    return opt

def pass_names() -> list[str]:
    return [n for n, _ in PIPELINE]


__all__ = ["PIPELINE", "optimize", "OptimizeResult", "rewrite", "map_graph", "fold_constants",
           "simplify", "cse", "licm", "hoist", "sink", "dce", "gate_fusion", "ragged",
           "fuse_elementwise", "fuse_rows", "row_group_shape", "run_stage",
           "pass_names",
           "DType"]
