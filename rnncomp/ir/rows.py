"""The `rows` hint of a scan: a variable-length batch sorted by length, longest first.

A scan with the attribute `rows=k` promises, for its invariant k (`lengths`, an integer [B]
array sorted in descending order):

- axis 0 of every carry, every x_t and every y_t is the batch (B rows);
- a row b at a step t >= lengths[b] is a no-op: its carries are unchanged and its y rows are
  zero (the body's own masks make it so: dynamic_rnn's select(t < len, new, old));
- the body is row-separable: row b of every result depends on row b of the per-row values only
  (no op mixes rows), so the rows can be computed or skipped independently.

The interpreter ignores the hint (the masks keep the semantics). A backend may then compute only
the active rows [:nb_t] of step t, nb_t = #{b : lengths[b] > t} (non-increasing in t): an uneven
batch costs its real number of steps.

`classify` checks row separability on a body (the frontend before it sorts a batch, the `ragged`
pass and the CPU code generator before they rely on the hint); a body that fails it loses the
hint and runs masked, which is still exact.
"""

from __future__ import annotations

from .graph import Graph, GroupOp, Node, Op
from . import ops

R = "R"  # axis 0 is the batch; row b depends on row b of per-row values only
S0 = "S0"  # no per-row data, and the same along axis 0 (or no axis 0)
S1 = "S1"  # no per-row data, but may vary along its axis 0 (an invariant: a weight)


def rows_index(scan: Node) -> int | None:
    """The invariant index named by a scan's `rows` hint, or None."""
    k = scan.attr("rows")
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def _batch(body: Graph, n_carry: int) -> object | None:
    carries = body.inputs[1:1 + n_carry]
    if not carries or any(c.ndim < 1 for c in carries):
        return None
    b = carries[0].shape[0]
    return b if all(c.shape[0] == b for c in carries) else None


def classify(body: Graph, n_carry: int, n_xs: int, lengths_index: int) -> dict[int, str] | None:
    """Row classes of the body's nodes (R, S0, S1) by id, or None if the body is not
    row-separable with invariant `lengths_index` as the sorted lengths (see the module doc)."""
    B = _batch(body, n_carry)
    if B is None:
        return None
    ins = body.inputs
    n_inv = len(ins) - 1 - n_carry - n_xs
    if not 0 <= lengths_index < n_inv:
        return None
    lph = ins[1 + n_carry + n_xs + lengths_index]
    if lph.shape != (B,) or not lph.dtype.is_int:
        return None
    cls: dict[int, str] = {id(ins[0]): S0}
    for k, p in enumerate(ins[1:]):
        if k < n_carry + n_xs or p is lph:
            if p.ndim < 1 or p.shape[0] != B:
                return None
            cls[id(p)] = R
        else:
            cls[id(p)] = S1 if p.ndim >= 1 and p.shape[0] != 1 else S0
    if not _classify_nodes(body, cls, B):
        return None
    for o in body.outputs:
        if cls.get(id(o)) != R:
            return None
    return cls


def _classify_nodes(g: Graph, cls: dict[int, str], B) -> bool:
    for n in g.nodes:
        if id(n) in cls:
            continue
        c = _rule(n, cls, B)
        if c is None:
            return False
        cls[id(n)] = c
    return True


def _shared(n: Node, ins: list[Node], cls: dict[int, str]) -> str:
    if n.shape == () or n.shape is None:
        return S0
    if n.op in GroupOp.Elementwise or n.op is Op.BROADCAST:
        varies = any(cls[id(i)] == S1 and i.ndim == n.ndim and i.shape[0] == n.shape[0]
                     for i in ins)
        return S1 if varies else S0
    if n.op in (Op.FULL, Op.DIMSIZE):
        return S0
    return S1


def _rule(n: Node, cls: dict[int, str], B) -> str | None:
    op = n.op
    if op is Op.CONST or op is Op.FULL:
        return S0
    if op in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER):
        return S1  # read from outside the body's inputs (a nested body's leaves)
    ins = list(n.inputs)
    if op is Op.ITEM:
        src = ins[0]
        if src.op is Op.FUSED and id(src) in cls:
            return cls[id(src)]
        return S1 if cls.get(id(src)) != R else None
    kinds = [cls[id(i)] for i in ins]
    if op is Op.DIMSIZE:
        return S0
    if R not in kinds:
        if op is Op.FUSED:
            return S1
        return _shared(n, ins, cls)
    if op is Op.FUSED:
        body: Graph = n.attr("body")
        inner = {id(p): cls[id(i)] for p, i in zip(body.inputs, ins)}
        if not _classify_nodes(body, inner, B):
            return None
        if any(o.shape == () or o.shape[0] != B for o in body.outputs):
            return None
        return R
    if n.shape is None or n.ndim < 1 or n.shape[0] != B:
        return None
    if op in GroupOp.Elementwise or op is Op.BROADCAST:
        for i, k in zip(ins, kinds):
            if k == R and (i.ndim != n.ndim or i.shape[0] != B):
                return None
            if k == S1 and i.ndim == n.ndim and i.shape[0] != 1:
                return None
        return R
    if op is Op.MATMUL:
        a, w = ins
        return R if kinds[0] == R and kinds[1] != R and a.ndim >= 2 else None
    if op in (Op.SLICE, Op.PAD):
        return R if n.attr("axis") != 0 else None
    if op is Op.CONCAT:
        if n.attr("axis") == 0 or S1 in kinds:
            return None
        return R
    if op is Op.RESHAPE:
        x = ins[0]
        return R if x.ndim >= 1 and x.shape[0] == B else None
    if op is Op.TRANSPOSE:
        return R if n.attr("perm")[0] == 0 else None
    if op in GroupOp.Reduce:
        return R if 0 not in n.attr("axes") else None
    return None  # indexing, contractions over rows, random numbers, nested loops: not per-row


def check(scan: Node) -> dict[int, str] | None:
    """The row classes of a hinted scan's body, or None (no hint, or the body fails)."""
    k = rows_index(scan)
    if k is None:
        return None
    info = ops.scan_info(scan)
    if info.n_xs == 0:
        return None
    return classify(scan.attr("body"), info.n_carry, info.n_xs, k)


def lengths_placeholder(scan: Node) -> Node | None:
    k = rows_index(scan)
    if k is None:
        return None
    info = ops.scan_info(scan)
    return scan.attr("body").inputs[1 + info.n_carry + info.n_xs + k]


def lengths_input(scan: Node) -> Node | None:
    """The outer (sorted) lengths a hinted scan reads."""
    k = rows_index(scan)
    if k is None:
        return None
    info = ops.scan_info(scan)
    return scan.inputs[info.n_carry + info.n_xs + k]


def valid_mask(t: Node, lengths: Node, rank: int) -> Node:
    """lengths > t, shaped [B, 1, ..., 1] (rank axes) to select rows of [B, ...] values.
    (Written `lengths > t`, not dynamic_rnn's `t < lengths`: in a reverse loop the forward's
    own mask arrives as a saved per-step value, and an equal expression would be replaced by
    it; this one is recognised as a validity mask of the loop itself.)"""
    m = ops.gt(lengths, ops.cast(t, lengths.dtype))
    return ops.reshape(m, (lengths.shape[0],) + (1,) * (rank - 1))


def mask_rows(t: Node, lengths: Node, y: Node) -> Node:
    """y with the rows past their length zero (false for bool values)."""
    zero = ops.const(0, y.dtype)
    return ops.where(valid_mask(t, lengths, y.ndim), y, zero)


def is_valid_mask(n: Node, t: Node, lengths: Node) -> bool:
    """n is `t < lengths` (reshaped to [B, 1, ...]): true on every active row."""
    while n.op is Op.RESHAPE and n.shape and n.inputs[0].shape and \
            n.shape[0] == n.inputs[0].shape[0] and all(d == 1 for d in n.shape[1:]):
        n = n.inputs[0]
    if n.op is Op.LT and n.inputs[1] is lengths:
        a = n.inputs[0]
    elif n.op is Op.GT and n.inputs[0] is lengths:
        a = n.inputs[1]
    else:
        return False
    if a.op is Op.CAST:
        a = a.inputs[0]
    return a is t


def valid_rows_only(x: Node, L: Node, users: dict[int, list[Node]]) -> bool:
    """Every reader of x [T, B, ...] reads its valid rows (t, b), t < L[b], only: hinted scans
    with the sorted lengths L taking it as an x_t, directly or through row-local ops (slices of
    a feature axis, float elementwise ops and fused groups of them: a GRU's sliced input
    projection and its hoisted bias add). Whatever those ops compute on the other rows is
    never read, so x's other rows may be left unset. `users`: id(node) -> its readers."""
    seen: set[int] = set()

    def ok(v: Node) -> bool:
        us = users.get(id(v), [])
        for u in us:
            if id(u) in seen:
                continue
            seen.add(id(u))
            if u.op is Op.SCAN:
                info = ops.scan_info(u)
                if lengths_input(u) is not L or check(u) is None or \
                        any(w is v for w in u.inputs[:info.n_carry]) or \
                        any(w is v for w in u.inputs[info.n_carry + info.n_xs:]):
                    return False
            elif u.op is Op.ITEM and u.inputs[0].op is Op.FUSED:
                if not ok(u):
                    return False
            elif _row_local(u, v):
                if not ok(u):
                    return False
            else:
                return False
        return bool(us)

    return ok(x)


def _row_local(u: Node, v: Node) -> bool:
    """u (a reader of v [T, B, ...]) computes its row (t, b) from row (t, b) of v only."""
    if u.op is Op.FUSED:  # elementwise ops only (its items are checked as readers)
        return all(o.ndim == v.ndim and tuple(o.shape[:2]) == tuple(v.shape[:2])
                   for o in u.attr("body").outputs)
    if u.ndim != v.ndim or u.ndim < 3 or tuple(u.shape[:2]) != tuple(v.shape[:2]):
        return False
    if u.op is Op.SLICE:
        return u.attr("axis") >= 2
    return u.op in GroupOp.Elementwise and u.dtype is not None and u.dtype.is_float


def zero_past_length(scan: Node, k: int) -> bool:
    """The stacked ys k of a hinted scan is zero at the rows past their length: its body
    output is select(valid, y, 0) (dynamic_rnn's outputs, the reverse loop's results; not the
    residuals BPTT saves)."""
    lph = lengths_placeholder(scan)
    if lph is None:
        return False
    body: Graph = scan.attr("body")
    return _zero_past(body.outputs[ops.scan_info(scan).n_carry + k], body.inputs[0], lph)


def _zero_past(y: Node, t: Node, lph: Node) -> bool:
    if y.op is Op.CONCAT and y.attr("axis") == y.ndim - 1:  # parts on the feature axis
        return all(_zero_past(i, t, lph) for i in y.inputs)
    outer: dict[int, Node] = {}
    if y.op is Op.ITEM and y.inputs[0].op is Op.FUSED:  # after elementwise fusion
        f = y.inputs[0]
        outer = {id(p): i for p, i in zip(f.attr("body").inputs, f.inputs)}
        y = f.attr("body").outputs[y.attr("index")]
    if y.op is not Op.WHERE or y.inputs[2].op is not Op.CONST or y.inputs[2].attr("value"):
        return False
    return is_valid_mask(outer.get(id(y.inputs[0]), y.inputs[0]), t, lph)


def _sorted_by(L: Node, perm: Node, L0: Node) -> bool:
    """L is permute(L0, perm) (the lengths sorted by the batch's own order)."""
    return L.op is Op.PERMUTE and L.inputs[0] is L0 and L.inputs[1] is perm and \
        not L.attr("inverse", False)


def steps_read(x: Node, users: dict[int, list[Node]], outputs: set[int]) -> Node | None:
    """For x = permute(v [T, B, ...], argsort(L), axis=1) (a batch sorted by length): L, when
    every user of x (users: node id -> its users; outputs: ids of graph outputs) reads its
    steps t < max(L) only (ragged GEMMs with the sorted L, loops whose trip count is max(L));
    else None. A backend then permutes those steps only."""
    perm = x.inputs[1]
    if x.attr("axis") != 1 or x.attr("inverse", False) or perm.op is not Op.ARGSORT or \
            id(x) in outputs:
        return None
    L0 = perm.inputs[0]
    us = users.get(id(x), [])
    for u in us:
        if u.op in (Op.RAGGED_MATMUL, Op.RAGGED_TENSORDOT):
            if not _sorted_by(u.inputs[-1], perm, L0):
                return None
        elif u.op is Op.SCAN:
            ui = ops.scan_info(u)
            if not ui.has_length or any(v is x for v in u.inputs[:ui.n_carry]) or \
                    any(v is x for v in u.inputs[ui.n_carry + ui.n_xs:]):
                return None
            n = u.inputs[-1]
            while n.op in (Op.CAST, Op.MINIMUM):
                n = n.inputs[0]
            if not (n.op is Op.REDUCE_MAX and n.inputs[0] is L0):
                return None
        else:
            return None
    return L0 if us else None


def zero_steps(x: Node) -> Node | None:
    """For x = inverse permute(v [T, B, ...], argsort(L), axis=1) of a value zero past each
    sorted length (a hinted loop's masked results, a ragged matmul over the sorted lengths): L
    (v is zero at the steps t >= max(L): a backend copies the steps below it only)."""
    perm = x.inputs[1]
    if x.attr("axis") != 1 or not x.attr("inverse", False) or perm.op is not Op.ARGSORT or \
            x.ndim != 3:
        return None
    L0, v = perm.inputs[0], x.inputs[0]
    if v.op is Op.ITEM and v.inputs[0].op is Op.SCAN:
        s = v.inputs[0]
        L = lengths_input(s)
        k = v.attr("index") - ops.scan_info(s).n_carry
        ok = L is not None and k >= 0 and zero_past_length(s, k)
    elif v.op is Op.RAGGED_MATMUL:
        L = v.inputs[-1]
        ok = True
    else:
        return None
    return L0 if ok and _sorted_by(L, perm, L0) else None


__all__ = ["rows_index", "classify", "check", "lengths_placeholder", "lengths_input",
           "valid_mask", "mask_rows", "is_valid_mask", "zero_past_length", "valid_rows_only",
           "steps_read", "zero_steps", "R", "S0", "S1"]
