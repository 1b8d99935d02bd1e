"""Every op a user graph can contain, compiled for the CPU backend, against the interpreter.

Registry driven: CASES has an input factory for every op of rnncomp.ir.ops.REGISTRY except the
leaves/structural ops listed in NOT_USER_OPS, and `test_every_op_has_a_case` fails when an op
is registered without one.

To keep Numba compiles few, the cases live in a few graphs per dtype (CHUNK cases each; each
case has its own inputs and its own output(s)), and each graph's gradient graph (the forward
outputs followed by the gradients of L = sum_case sum(out_case * R_case)) is compiled once.
Each test checks one (dtype, op, case) triple, so a failure names the op.

Tolerances: rtol 1e-5 in f32 and 1e-12 in f64. Cases whose ops the CPU backend renders with
the fast-math library (tanh, sigmoid, exp, log; backends/cpu/fastmath.py documents ~1-2 ulp:
rel. error <= 5e-7 for f32 tanh/sigmoid, ~2e-7 for exp, < 1e-15 for f64) also get an absolute
tolerance of FASTMATH_SLACK x that accuracy x the size of the reference (derivatives such as
1 - tanh(x)^2 amplify a relative error by cancellation).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import ops
from rnncomp.transforms.autodiff import grad_graph
from rnncomp.runtime.compiler import compile_graph
from rnncomp.runtime.grad import model_grad_graph
from rnncomp.ir.dtypes import DType, as_dtype
from rnncomp.ir import Graph, Op, toposort
from rnncomp.ir.ops import NOT_DIFFERENTIABLE, REGISTRY

# Ops a user graph does not contain as such: graph inputs, scan-body placeholders, the result
# selector of multi-result nodes (exercised through every SCAN case) and fusion groups (made by
# the optimizer; exercised by every compiled graph).
NOT_USER_OPS = {Op.INPUT, Op.PARAM, Op.PLACEHOLDER, Op.ITEM, Op.FUSED}

RTOL = {DType.f32: 1e-5, DType.f64: 1e-12}
# documented accuracy of backends/cpu/fastmath.py (relative), per dtype
FASTMATH_REL = {DType.f32: 5e-7, DType.f64: 1e-15}
FASTMATH_SLACK = 20
FASTMATH_OPS = {Op.TANH, Op.SIGMOID, Op.EXP, Op.LOG}

DTYPES = [DType.f32, DType.f64]


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


# ---------------------------------------------------------------------------------------------
# Cases: (rng, dt) -> (arrays, build(*input nodes) -> output node or tuple of output nodes)
# Float inputs are made in dt; symbolic dims are given as strings in `shapes` (optional).
# ---------------------------------------------------------------------------------------------
@dataclass
class Inp:
    value: np.ndarray
    shape: tuple | None = None  # IR shape (may hold symbols); default: value.shape


def _n(rng, dt, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dt)


def _pos(rng, dt, *shape):
    return rng.uniform(0.5, 2.0, shape).astype(dt)


def _away0(rng, dt, *shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, x + np.sign(x + 1e-12) * 0.2, x).astype(dt)


def _unary(op, gen=_n, **kw):
    return lambda rng, dt: ([gen(rng, dt, 3, 4, **kw)], lambda x: ops.make(op, x))


def _binary(op, gen_a=_n, gen_b=_n):
    # broadcasting: [2, 1, 4] with [3, 1] -> [2, 3, 4]
    return lambda rng, dt: ([gen_a(rng, dt, 2, 1, 4), gen_b(rng, dt, 3, 1)],
                            lambda a, b: ops.make(op, a, b))


def _compare(op):
    def f(rng, dt):
        # rounded values so that equality happens (for EQ/LE/GE)
        a = np.round(rng.standard_normal((2, 1, 4)) * 2).astype(dt)
        b = np.round(rng.standard_normal((3, 1)) * 2).astype(dt)
        return [a, b], lambda x, y: ops.make(op, x, y)

    return f


def _logical(op):
    def f(rng, dt):
        return ([_n(rng, dt, 3, 4), _n(rng, dt, 3, 4)],
                lambda a, b: ops.make(op, ops.gt(a, ops.const(0.0, a.dtype)),
                                      ops.lt(b, ops.const(0.3, b.dtype))))

    return f


def _not_case(rng, dt):
    return [_n(rng, dt, 3, 4)], lambda x: ops.make(Op.NOT, ops.gt(x, ops.const(0.0, x.dtype)))


def _const_case(rng, dt):
    return ([_n(rng, dt, 3, 4)],
            lambda x: ops.mul(ops.add(x, ops.const(0.75, x.dtype)), ops.const(-1.5, x.dtype)))


def _full_case(rng, dt):
    # a symbolic shape, bound at run time from the input
    return ([Inp(_n(rng, dt, 3, 4), ("N", 4))],
            lambda x: ops.mul(x, ops.full(("N", 4), 2.5, x.dtype)))


def _cast_case(rng, dt):
    other = np.float32 if dt == np.float64 else np.float64

    def build(x, i):
        there_and_back = ops.cast(ops.make(Op.CAST, x, dtype=as_dtype(other)), x.dtype)
        return (ops.add(there_and_back, ops.cast(i, x.dtype)),
                ops.cast(ops.mul(x, ops.const(3.0, x.dtype)), DType.i32),
                ops.cast(x, DType.bool))

    x = _n(rng, dt, 3, 4)
    x[0, 0] = 0.0  # cast to bool of an exact zero
    return [x, np.arange(12, dtype=np.int32).reshape(3, 4) - 5], build


def _stop_gradient_case(rng, dt):
    # d/dx sum(sg(x) * x * R) = x * R: the stop_gradient path contributes nothing
    return [_n(rng, dt, 3, 4)], lambda x: ops.mul(ops.stop_gradient(x), x)


def _where_case(rng, dt):
    c = rng.random((3, 4)) < 0.5
    return [c, _n(rng, dt, 3, 4), _n(rng, dt, 4)], lambda c, a, b: ops.where(c, a, b)


def _random_case(rng, dt):
    def build(x, seed, step):
        u = ops.make(Op.RANDOM_UNIFORM, x, seed, step, site=5, dtype=x.dtype)
        return ops.add(ops.mul(u, x), u), u  # the draws themselves must be bit-identical

    return [_n(rng, dt, 3, 4), np.array(2**40 + 7, np.int64), np.array(3, np.int32)], build


def _take_case(rng, dt):
    return ([_n(rng, dt, 3, 5), np.array([0, 4, 2], np.int32)],
            lambda x, i: ops.make(Op.TAKE, x, i))


def _one_hot_case(rng, dt):
    return ([_n(rng, dt, 3, 5), np.array([1, 4, 0], np.int32)],
            lambda x, i: ops.mul(x, ops.one_hot(i, 5, x.dtype)))


def _argmax_case(rng, dt):
    # ties (rounded values) pick the first index; the result enters the loss as a float
    x = np.round(rng.standard_normal((2, 3, 5)) * 2).astype(dt)
    return ([x], lambda x: ops.cast(ops.argmax(x, 2), x.dtype))


def _argmax_axis0_case(rng, dt):
    return ([Inp(_n(rng, dt, 3, 4), ("M", 4))],
            lambda x: ops.cast(ops.argmax(x, 0, "i32"), x.dtype))


def _gather_case(rng, dt):
    # repeated rows: the gradient accumulates them (scatter-add)
    return ([_n(rng, dt, 6, 4), np.array([[0, 5, 2], [5, 5, 1]], np.int32)],
            lambda t, i: ops.gather(t, i))


def _argsort_case(rng, dt):
    # ties keep their order (stable), longest first
    # lengths from a float input (ties: equal values keep their order); the order enters the
    # loss as a float
    return ([Inp(np.array([3.0, 5.0, 3.0], dt), ("M",))],
            lambda x: ops.cast(ops.argsort(ops.cast(x, "i32")), x.dtype))


def _permute_case(rng, dt):
    return ([Inp(_n(rng, dt, 2, 3, 4), (2, "M", 4)), Inp(np.array([2, 0, 1], np.int32), ("M",))],
            lambda x, p: ops.permute(x, p, 1))


def _permute_inverse_case(rng, dt):
    return ([_n(rng, dt, 4, 3), np.array([2, 0, 3, 1], np.int64)],
            lambda x, p: ops.permute(x, p, 0, inverse=True))


def _ragged_matmul_case(rng, dt):
    # one step all rows run (a GEMM), then packed rows; a length 0 row
    return ([Inp(_n(rng, dt, 3, 4, 2), ("N", 4, 2)), _n(rng, dt, 2, 5),
             np.array([3, 1, 0, 2], np.int32)], lambda a, w, L: ops.ragged_matmul(a, w, L))


def _ragged_tensordot_case(rng, dt):
    return ([_n(rng, dt, 4, 3, 2), _n(rng, dt, 4, 3, 5), np.array([1, 4, 3], np.int32)],
            lambda a, c, L: ops.ragged_tensordot(a, c, L))


def _scatter_add_case(rng, dt):
    return ([Inp(_n(rng, dt, 3, 4), ("M", 4)), Inp(np.array([2, 0, 2], np.int64), ("M",))],
            lambda s, i: ops.scatter_add(s, i, 5))


def _dimsize_case(rng, dt):
    return ([Inp(_n(rng, dt, 3, 5), ("M", 5))],
            lambda x: ops.mul(x, ops.make(Op.DIMSIZE, x, axis=0, dtype=x.dtype)))


def _scan_case(reverse=False, with_length=False):
    """2 carries, 1 xs, 2 invariants (and optionally a length input), time-dependent."""

    def f(rng, dt):
        T, B, H, I = 4, 2, 3, 2
        arrays = [_n(rng, dt, B, H, scale=0.5), _n(rng, dt, B, H, scale=0.5),
                  _n(rng, dt, T, B, I), _n(rng, dt, I, H), _n(rng, dt, H, H, scale=0.5)]
        if with_length:
            arrays.append(np.array(3, np.int64))

        def build(c0, h0, X, W, U, *ln):
            F = c0.dtype
            t = ops.placeholder((), DType.i32)
            pc = ops.placeholder((B, H), F)
            ph = ops.placeholder((B, H), F)
            px = ops.placeholder((B, I), F)
            pw = ops.placeholder((I, H), F)
            pu = ops.placeholder((H, H), F)
            z = ops.add(ops.matmul(px, pw), ops.matmul(ph, pu))
            nc = ops.add(ops.mul(ops.sigmoid(z), pc), ops.tanh(z))
            nh = ops.mul(ops.tanh(nc), ops.sigmoid(ops.add(z, pc)))
            y = ops.mul(nh, ops.cast(t, F))
            body = Graph([t, pc, ph, px, pw, pu], [nc, nh, y])
            cT, hT, ys = ops.scan(body, [c0, h0], [X], [W, U], reverse=reverse,
                                  length_input=ln[0] if ln else None)
            return ys, ops.mul(cT, hT)

        return arrays, build

    return f


CASES: dict[Op, list[Callable]] = {
    Op.CONST: [_const_case],
    Op.FULL: [_full_case],
    Op.NEG: [_unary(Op.NEG)],
    Op.EXP: [_unary(Op.EXP, scale=3.0)],
    Op.LOG: [_unary(Op.LOG, _pos)],
    Op.TANH: [_unary(Op.TANH, scale=3.0)],
    Op.SIGMOID: [_unary(Op.SIGMOID, scale=4.0)],
    Op.RELU: [_unary(Op.RELU, _away0)],
    Op.SQRT: [_unary(Op.SQRT, _pos)],
    Op.ABS: [_unary(Op.ABS, _away0)],
    Op.NOT: [_not_case],
    Op.CAST: [_cast_case],
    Op.STOP_GRADIENT: [_stop_gradient_case],
    Op.ADD: [_binary(Op.ADD)],
    Op.SUB: [_binary(Op.SUB)],
    Op.MUL: [_binary(Op.MUL)],
    Op.DIV: [_binary(Op.DIV, _n, _pos)],
    Op.MAXIMUM: [_binary(Op.MAXIMUM)],
    Op.MINIMUM: [_binary(Op.MINIMUM)],
    Op.POW: [_binary(Op.POW, _pos, _n)],
    Op.LT: [_compare(Op.LT)],
    Op.LE: [_compare(Op.LE)],
    Op.GT: [_compare(Op.GT)],
    Op.GE: [_compare(Op.GE)],
    Op.EQ: [_compare(Op.EQ)],
    Op.AND: [_logical(Op.AND)],
    Op.OR: [_logical(Op.OR)],
    Op.WHERE: [_where_case],
    Op.RANDOM_UNIFORM: [_random_case],
    Op.RESHAPE: [lambda rng, dt: ([_n(rng, dt, 3, 4)], lambda x: ops.reshape(x, (2, 6))),
                 lambda rng, dt: ([_n(rng, dt, 1, 1)], lambda x: ops.reshape(x, ()))],
    Op.TRANSPOSE: [lambda rng, dt: ([_n(rng, dt, 2, 3, 4)],
                                    lambda x: ops.transpose(x, (2, 0, 1)))],
    Op.BROADCAST: [lambda rng, dt: ([_n(rng, dt, 3, 1)], lambda x: ops.broadcast(x, (2, 3, 4)))],
    Op.SLICE: [lambda rng, dt: ([_n(rng, dt, 3, 6)], lambda x: ops.slice_(x, 1, 2, 5)),
               lambda rng, dt: ([_n(rng, dt, 4, 3)], lambda x: ops.slice_(x, 0, 1, 3))],
    Op.PAD: [lambda rng, dt: ([_n(rng, dt, 3, 2)], lambda x: ops.pad(x, 1, 1, 5)),
             lambda rng, dt: ([_n(rng, dt, 2, 3)], lambda x: ops.pad(x, 0, 2, 4))],
    Op.CONCAT: [lambda rng, dt: ([_n(rng, dt, 2, 1), _n(rng, dt, 2, 3), _n(rng, dt, 2, 2)],
                                 lambda a, b, c: ops.concat([a, b, c], 1)),
                lambda rng, dt: ([_n(rng, dt, 1, 3), _n(rng, dt, 2, 3)],
                                 lambda a, b: ops.concat([a, b], 0))],
    Op.SEGMENT: [lambda rng, dt: ([_n(rng, dt, 5, 2)], lambda x: ops.segment(x, 2)),
                 lambda rng, dt: ([_n(rng, dt, 4, 3)], lambda x: ops.segment(x, 2))],
    Op.UNSEGMENT: [lambda rng, dt: ([_n(rng, dt, 3, 2, 2)], lambda y: ops.unsegment(y, 5)),
                   lambda rng, dt: ([_n(rng, dt, 2, 2, 3)], lambda y: ops.unsegment(y, 4))],
    Op.REDUCE_SUM: [lambda rng, dt: ([_n(rng, dt, 2, 3, 4)], lambda x: ops.reduce_sum(x, (0, 2))),
                    lambda rng, dt: ([_n(rng, dt, 2, 3, 4)],
                                     lambda x: ops.reduce_sum(x, (1,), keepdims=True)),
                    lambda rng, dt: ([_n(rng, dt, 2, 3, 4)],
                                     lambda x: ops.reduce_sum(x, (0, 1))),
                    lambda rng, dt: ([_n(rng, dt, 2, 3)], lambda x: ops.reduce_sum(x, (0, 1)))],
    Op.REDUCE_MAX: [lambda rng, dt: ([_n(rng, dt, 2, 3, 4)], lambda x: ops.reduce_max(x, (1,))),
                    lambda rng, dt: ([_n(rng, dt, 2, 3, 4)],
                                     lambda x: ops.reduce_max(x, (0, 2), keepdims=True)),
                    lambda rng, dt: ([_n(rng, dt, 2, 3)],
                                     lambda x: ops.reduce_max(x, (0, 1)))],
    Op.MATMUL: [lambda rng, dt: ([_n(rng, dt, 3, 4), _n(rng, dt, 4, 5)], ops.matmul),
                lambda rng, dt: ([_n(rng, dt, 2, 3, 4), _n(rng, dt, 4, 5)], ops.matmul)],
    Op.TENSORDOT: [lambda rng, dt: ([_n(rng, dt, 2, 3, 4), _n(rng, dt, 4, 5, 3)],
                                    lambda a, b: ops.tensordot(a, b, (1, 2), (2, 0))),
                   lambda rng, dt: ([_n(rng, dt, 3, 4), _n(rng, dt, 3, 5)],
                                    lambda a, b: ops.tensordot(a, b, (0,), (0,)))],
    Op.TAKE: [_take_case],
    Op.ONE_HOT: [_one_hot_case],
    Op.DIMSIZE: [_dimsize_case],
    Op.ARGMAX: [_argmax_case, _argmax_axis0_case],
    Op.GATHER: [_gather_case],
    Op.SCATTER_ADD: [_scatter_add_case],
    Op.ARGSORT: [_argsort_case],
    Op.PERMUTE: [_permute_case, _permute_inverse_case],
    Op.RAGGED_MATMUL: [_ragged_matmul_case],
    Op.RAGGED_TENSORDOT: [_ragged_tensordot_case],
    Op.SCAN: [_scan_case(), _scan_case(reverse=True), _scan_case(with_length=True)],
}

# the values the symbolic dims of the cases take at run time
SYMBOLS = {"N": 3, "M": 3}

CASE_IDS = [(op, k) for op in CASES for k in range(len(CASES[op]))]
# Numba's compile time grows faster than linearly with the kernel's size: the cases are split
# into a few graphs (per dtype): CHUNK cases each, the scans in a graph of their own
CHUNK = 18
_FLAT = [c for c in CASE_IDS if c[0] is not Op.SCAN]
CHUNK_OF = {c: i // CHUNK for i, c in enumerate(_FLAT)}
CHUNK_OF.update({c: len(_FLAT) // CHUNK + 1 for c in CASE_IDS if c[0] is Op.SCAN})


def _case_name(op: Op, k: int) -> str:
    return f"{op.value}{k}"


# ---------------------------------------------------------------------------------------------
# One graph per dtype
# ---------------------------------------------------------------------------------------------
_NP2DT = {np.dtype(np.float32): DType.f32, np.dtype(np.float64): DType.f64,
          np.dtype(np.int32): DType.i32, np.dtype(np.int64): DType.i64,
          np.dtype(np.bool_): DType.bool}


@dataclass
class Built:
    dtype: DType
    graph: Graph  # inputs: case inputs then R inputs; outputs: loss, then every case output
    args: list[np.ndarray]
    out_slots: dict[tuple[Op, int], list[int]]  # case -> indices into graph.outputs
    wrt: list[str]
    wrt_case: dict[str, tuple[Op, int]]
    fastmath_cases: set[tuple[Op, int]]


def _build(dt: DType, cases=None) -> Built:
    npdt = dt.np.type
    inputs, args, outs = [], [], []
    r_inputs, r_args = [], []
    out_slots: dict = {}
    wrt: list[str] = []
    wrt_case: dict = {}
    fm_cases: set = set()
    loss = None
    for op, k in (CASE_IDS if cases is None else cases):
        rng = np.random.default_rng(_seed(op.value, k, dt.value))
        arrays, build = CASES[op][k](rng, npdt)
        name = _case_name(op, k)
        nodes = []
        for j, a in enumerate(arrays):
            shape = None
            if isinstance(a, Inp):
                a, shape = a.value, a.shape
            a = np.asarray(a)
            nm = f"{name}/x{j}"
            node = ops.make(Op.INPUT, name=nm, shape=tuple(shape or a.shape),
                            dtype=_NP2DT[a.dtype])
            nodes.append(node)
            inputs.append(node)
            args.append(a)
            if node.dtype.is_float:
                wrt.append(nm)
                wrt_case[nm] = (op, k)
        res = build(*nodes)
        res = list(res) if isinstance(res, tuple) else [res]
        reach = [n.op for n in toposort(res)]
        bodies = [m.op for n in toposort(res) if isinstance(n.attr("body"), Graph)
                  for m in n.attr("body").all_nodes()]
        assert op in reach, f"case {name} does not use {op.value}"
        if FASTMATH_OPS & set(reach + bodies):
            fm_cases.add((op, k))
        slots = []
        for j, o in enumerate(res):
            slots.append(len(outs) + 1)
            outs.append(o)
            if o.dtype is dt and REGISTRY[o.op].vjp != NOT_DIFFERENTIABLE:
                # loss term sum(o * R) with a random R of o's (run-time) shape
                shape = tuple(SYMBOLS.get(d, d) for d in o.shape)
                rn = ops.make(Op.INPUT, name=f"{name}/R{j}", shape=o.shape, dtype=dt)
                r_inputs.append(rn)
                r_args.append(_n(rng, npdt, *shape))
                term = ops.reduce_sum(ops.mul(o, rn), tuple(range(o.ndim))) if o.ndim \
                    else ops.mul(o, rn)
                loss = term if loss is None else ops.add(loss, term)
        out_slots[(op, k)] = slots
    g = Graph(inputs + r_inputs, [loss] + outs)
    return Built(dt, g, args + r_args, out_slots, wrt, wrt_case, fm_cases)


def _compile(dt: DType, cases) -> tuple:
    """(Built, grad graph, interpreter results, compiled results, CompiledGraph)."""
    b = _build(dt, cases)
    gg = grad_graph(b.graph, 0, b.wrt)
    ref = rc.interpret(gg, b.args)
    cg = compile_graph(gg, backend="cpu")
    got = cg(*b.args)
    return b, gg, ref, got, cg


@pytest.fixture(scope="module")
def compiled():
    """compiled(dtype, case) -> the results of the graph holding that case (compiled once)."""
    memo: dict = {}

    def get(dt: DType, case):
        key = (dt, CHUNK_OF[case])
        if key not in memo:
            memo[key] = _compile(dt, [c for c in CASE_IDS if CHUNK_OF[c] == key[1]])
        return memo[key]

    return get


def _tol(b: Built, case) -> dict:
    rtol = RTOL[b.dtype]
    if case in b.fastmath_cases:
        fm = FASTMATH_SLACK * FASTMATH_REL[b.dtype]
        return {"rtol": max(rtol, fm), "atol_scale": max(rtol, fm)}
    return {"rtol": rtol, "atol_scale": rtol}


def _close(got, ref, *, rtol, atol_scale, what):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol_scale * max(scale, 1e-30),
                               err_msg=what)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_every_op_has_a_case():
    missing = [op.value for op in REGISTRY if op not in NOT_USER_OPS and op not in CASES]
    assert not missing, f"add a case to tests/cpu/test_compiled_ops.py CASES for: {missing}"
    assert NOT_USER_OPS <= set(REGISTRY), "NOT_USER_OPS names an op that no longer exists"


def test_graph_covers_every_op():
    b = _build(DType.f64)
    used = {n.op for n in b.graph.all_nodes()}
    missing = set(REGISTRY) - {Op.FUSED, Op.PARAM} - used
    assert not missing, f"no case uses {sorted(o.value for o in missing)}"


PARAMS = [(dt, op, k) for dt in DTYPES for op, k in CASE_IDS]
PARAM_IDS = [f"{dt.value}-{_case_name(op, k)}" for dt, op, k in PARAMS]


@pytest.mark.parametrize("dt,op,k", PARAMS, ids=PARAM_IDS)
def test_forward(compiled, dt, op, k):
    b, gg, ref, got, _ = compiled(dt, (op, k))
    tol = _tol(b, (op, k))
    for s in b.out_slots[(op, k)]:
        what = f"{op.value} case {k} ({b.dtype}): forward output {gg.outputs[s]!r}"
        _close(got[s], ref[s], what=what, **tol)
    if op is Op.RANDOM_UNIFORM:
        s = b.out_slots[(op, k)][1]
        np.testing.assert_array_equal(got[s], ref[s], err_msg="random draws must be identical")


@pytest.mark.parametrize("dt,op,k", PARAMS, ids=PARAM_IDS)
def test_backward(compiled, dt, op, k):
    b, gg, ref, got, _ = compiled(dt, (op, k))
    n_fwd = len(b.graph.outputs)
    tol = _tol(b, (op, k))
    names = [w for w in b.wrt if b.wrt_case[w] == (op, k)]
    assert names, f"case {op.value}{k} has no float input"
    # ops whose results are bool/int do not enter the loss: their inputs get zero gradients
    differentiable = REGISTRY[op].vjp != NOT_DIFFERENTIABLE or op in (Op.CONST, Op.FULL)
    for w in names:
        j = n_fwd + b.wrt.index(w)
        _close(got[j], ref[j], what=f"{op.value} case {k} ({b.dtype}): d loss / d {w}", **tol)
        if differentiable:
            assert np.any(ref[j] != 0), f"no gradient reaches {w}"
        else:
            assert not np.any(ref[j]), f"{w} should get a zero gradient"


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.value)
@pytest.mark.parametrize("chunk", sorted(set(CHUNK_OF.values())))
def test_loss(compiled, dt, chunk):
    b, gg, ref, got, _ = compiled(dt, [c for c in CASE_IDS if CHUNK_OF[c] == chunk][0])
    _close(got[0], ref[0], rtol=1e-4 if b.dtype is DType.f32 else 1e-11,
           atol_scale=1e-4 if b.dtype is DType.f32 else 1e-11, what="loss")


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.value)
def test_compiled_graph_is_optimized(compiled, dt):
    """The pipeline ran (with the verifier: RNNCOMP_VERIFY=1) and produced fused loops."""
    b, gg, ref, got, cg = compiled(dt, CASE_IDS[0])
    assert "fuse_elementwise" in cg.stages
    assert any(n.op is Op.FUSED for n in cg.optimized.all_nodes())
    assert cg.path.exists() and cg.path.read_text() == cg.source


def test_row_reductions_fuse_with_their_neighbours(rng):
    """Reductions over the last axis join the elementwise ops around them (passes.fuse_rows,
    CPU only): a layer norm (keepdims), a row sum without keepdims read back through
    expand_dims, a row sum feeding several consumers, a softmax (row max, row sum), in a time
    loop and on the stacked outputs after it. Forward outputs and every gradient (whose bodies
    hold row sums of products) equal the interpreter's, and no row reduction is left to a
    separate pass (rt.rowsum)."""
    H = 5

    def layer_norm(z, axis):
        d = z - rc.mean(z, axis=axis, keepdims=True)
        return d / rc.sqrt(rc.mean(d * d, axis=axis, keepdims=True) + 1e-5)

    def cell(x, h):
        z = rc.matmul(rc.concat([x, h], 1), rc.param("W", (3 + H, H)))
        ln = layer_norm(z, 1) * rc.param("g", (H,), "ones")
        s = rc.sum(ln * z, axis=1)  # no keepdims: [B]
        r = rc.sum(rc.tanh(ln), axis=1, keepdims=True)  # read by several ops
        sm = rc.softmax(ln * r)
        hn = rc.tanh(ln) * r + sm + rc.expand_dims(s, 1) * 0.1 + r * r * 0.01
        return hn, hn

    def f(X, R):
        out, _ = rc.dynamic_rnn(rc.FunctionCell(cell, H, H), X, time_major=True)
        return rc.sum(out * R) + rc.sum(layer_norm(out, 2) * R)

    # float64: the f32 gradients of this (deliberately ill-conditioned) graph are only good
    # to 1e-4 in either kernel; in f64 a wrong fusion cannot hide in the tolerance
    m = rc.Model(f, {"X": rc.Input(("T", "B", 3)), "R": rc.Input(("T", "B", H))}, dtype="f64")
    p = m.init(0)
    args = m.arguments(p, {"X": rng.standard_normal((4, 3, 3)),
                           "R": rng.standard_normal((4, 3, H))})
    g = model_grad_graph(m, wrt=list(m.param_specs) + ["X"], preoptimize=True)
    cg = compile_graph(g, "cpu")
    assert "fuse_rows" in cg.stages
    assert "rt.vsum(" in cg.source and "rt.vmax(" in cg.source
    assert "rt.rowsum(" not in cg.source and "rt.rowmax(" not in cg.source
    rows = [n for n in cg.optimized.all_nodes() if n.op is Op.FUSED and
            any(x.op in (Op.REDUCE_SUM, Op.REDUCE_MAX) for x in n.attr("body").nodes)]
    assert len(rows) >= 3  # the forward step, the backward step, the stacked layer norm
    ref = rc.interpret(g, args)
    for a, b, o in zip(cg(*args), ref, g.outputs):
        _close(a, b, rtol=1e-10, atol_scale=1e-10, what=f"{o!r}")
