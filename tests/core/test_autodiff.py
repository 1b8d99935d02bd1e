"""Autodiff checked against finite differences in float64, driven by the op registry.

The check (as in autograd's check_grads / JAX's check_vjp): for a loss L = sum(f(x) * R) with a
fixed random R, compare the gradient projected on a random direction d, sum(grad * d), with the
central difference (L(x + eps d) - L(x - eps d)) / (2 eps), eps = 1e-6, in float64. One VJP and
two evaluations check a whole gradient, for whole sequences.

Every op of rnncomp.ir.ops.REGISTRY that is differentiable must have an input factory in OP_CASES:
a new op without one fails `test_every_differentiable_op_has_a_case`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import ops
from rnncomp.transforms.autodiff import grad_graph, vjp_graph
from rnncomp.ir.dtypes import DType
from rnncomp.ir import Graph, Op
from rnncomp.ir.ops import NOT_DIFFERENTIABLE, REGISTRY
from helpers import BUILTIN_CELLS

EPS = 1e-6
RTOL = 1e-6
F64 = DType.f64


def _seed(*parts) -> int:
    """A per-case seed that does not depend on PYTHONHASHSEED."""
    return zlib.crc32(repr(parts).encode())


def rel_err(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0.0 else abs(a - b) / scale


# ---------------------------------------------------------------------------------------------
# Graph-level check: inputs are named INPUT nodes, loss = sum(out * R)
# ---------------------------------------------------------------------------------------------
def _input(name: str, a: np.ndarray):
    dt = {np.dtype(np.float64): DType.f64, np.dtype(np.int32): DType.i32,
          np.dtype(np.int64): DType.i64, np.dtype(np.bool_): DType.bool}[a.dtype]
    return ops.make(Op.INPUT, name=name, shape=tuple(a.shape), dtype=dt)


def check_graph_grad(arrays: list[np.ndarray], build: Callable, rng, expect_zero=False):
    """FD-check d sum(build(*inputs) * R) / d (float inputs) along a random direction."""
    leaves = [_input(f"x{k}", a) for k, a in enumerate(arrays)]
    out = build(*leaves)
    assert out.dtype is F64, f"the op under test must give f64, got {out.dtype}"
    R = rng.standard_normal(tuple(out.shape))
    r_in = ops.make(Op.INPUT, name="R", shape=tuple(out.shape), dtype=F64)
    loss = ops.reduce_sum(ops.mul(out, r_in), tuple(range(out.ndim)))
    g = Graph(leaves + [r_in], [loss])
    wrt = [f"x{k}" for k, a in enumerate(arrays) if a.dtype == np.float64]
    gg = grad_graph(g, 0, wrt)
    res = rc.interpret(gg, list(arrays) + [R])
    grads = dict(zip(wrt, res[1:]))
    for w in wrt:
        assert grads[w].shape == arrays[int(w[1:])].shape and grads[w].dtype == np.float64
    dirs = {w: rng.standard_normal(arrays[int(w[1:])].shape) for w in wrt}

    def L(sign):
        xs = [a + sign * EPS * dirs[f"x{k}"] if f"x{k}" in dirs else a
              for k, a in enumerate(arrays)]
        return float(rc.interpret(g, xs + [R])[0])

    fd = (L(1) - L(-1)) / (2 * EPS)
    an = float(sum(np.sum(grads[w] * dirs[w]) for w in wrt))
    if expect_zero:
        assert all(np.all(grads[w] == 0) for w in wrt)
    else:
        assert rel_err(fd, an) < RTOL, (fd, an)
        assert an != 0.0
    return grads


# ---------------------------------------------------------------------------------------------
# Per-op input factories: rng -> (arrays, build(*input_nodes) -> node using the op)
# ---------------------------------------------------------------------------------------------
def _n(rng, *shape):
    return rng.standard_normal(shape)


def _pos(rng, *shape):
    return rng.uniform(0.5, 2.0, shape)


def _away0(rng, *shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, x + np.sign(x + 1e-12) * 0.2, x)


def _unary(op, gen=_n):
    return lambda rng: ([gen(rng, 3, 4)], lambda x: ops.make(op, x))


def _binary(op, gen_a=_n, gen_b=_n):
    # a broadcast case: [3, 4] with [4] and [2, 1, 4] with [3, 1]
    def f(rng):
        return ([gen_a(rng, 2, 1, 4), gen_b(rng, 3, 1)], lambda a, b: ops.make(op, a, b))
    return f


def _scan_case(reverse=False, with_length=False):
    """A small scan with 2 carries, 1 xs, 2 invariants (and optionally a length input)."""

    def f(rng):
        T, B, H, I = 4, 2, 3, 2
        arrays = [_n(rng, B, H) * 0.5, _n(rng, B, H) * 0.5, _n(rng, T, B, I), _n(rng, I, H),
                  _n(rng, H, H) * 0.5]
        if with_length:
            arrays.append(np.array(3, np.int64))

        def build(c0, h0, X, W, U, *ln):
            t = ops.placeholder((), DType.i32)
            pc = ops.placeholder((B, H), F64)
            ph = ops.placeholder((B, H), F64)
            px = ops.placeholder((B, I), F64)
            pw = ops.placeholder((I, H), F64)
            pu = ops.placeholder((H, H), F64)
            z = ops.add(ops.matmul(px, pw), ops.matmul(ph, pu))
            nc = ops.add(ops.mul(ops.sigmoid(z), pc), ops.tanh(z))
            nh = ops.mul(ops.tanh(nc), ops.sigmoid(ops.add(z, pc)))
            y = ops.mul(nh, ops.cast(t, F64))
            body = Graph([t, pc, ph, px, pw, pu], [nc, nh, y])
            res = ops.scan(body, [c0, h0], [X], [W, U], reverse=reverse,
                           length_input=ln[0] if ln else None)
            cT, hT, ys = res
            return ops.add(ops.reduce_sum(ys, (0,)), ops.mul(cT, hT))

        return arrays, build

    return f


def _random_case(rng):
    arrays = [_n(rng, 3, 4), np.array(7, np.int64), np.array(2, np.int32)]

    def build(x, seed, step):
        u = ops.make(Op.RANDOM_UNIFORM, x, seed, step, site=1, dtype=F64)
        return ops.add(ops.mul(u, x), u)  # d/dx = u; the draw itself has no gradient

    return arrays, build


def _take_case(rng):
    return ([_n(rng, 3, 5), np.array([0, 4, 2], np.int32)],
            lambda x, i: ops.make(Op.TAKE, x, i))


def _one_hot_case(rng):
    return ([_n(rng, 3, 5), np.array([1, 4, 0], np.int32)],
            lambda x, i: ops.mul(x, ops.one_hot(i, 5, F64)))


def _permute_case(rng):
    return ([_n(rng, 2, 4, 3), np.array([2, 0, 3, 1], np.int32)],
            lambda x, p: ops.permute(x, p, 1))


def _permute_inverse_case(rng):
    return ([_n(rng, 4, 3), np.array([2, 0, 3, 1], np.int32)],
            lambda x, p: ops.permute(x, p, 0, inverse=True))


def _ragged_matmul_case(rng):
    return ([_n(rng, 4, 3, 2), _n(rng, 2, 5), np.array([4, 0, 2], np.int32)],
            lambda a, w, L: ops.ragged_matmul(a, w, L))


def _ragged_tensordot_case(rng):
    return ([_n(rng, 4, 3, 2), _n(rng, 4, 3, 5), np.array([1, 4, 3], np.int32)],
            lambda a, c, L: ops.ragged_tensordot(a, c, L))


def _gather_case(rng):
    return ([_n(rng, 6, 4), np.array([[0, 5, 2], [5, 5, 1]], np.int32)],
            lambda t, i: ops.gather(t, i))


def _scatter_add_case(rng):
    return ([_n(rng, 3, 4), np.array([2, 0, 2], np.int64)],
            lambda s, i: ops.scatter_add(s, i, 5))


def _dimsize_case(rng):
    return ([_n(rng, 3, 5)],
            lambda x: ops.mul(x, ops.make(Op.DIMSIZE, x, axis=0, dtype=F64)))


def _where_case(rng):
    c = rng.random((3, 4)) < 0.5
    return ([c, _n(rng, 3, 4), _n(rng, 4)], lambda c, a, b: ops.where(c, a, b))


def _cast_case(rng):
    # f64 -> f64 keeps precision for FD; the int -> f64 input receives no gradient
    return ([_n(rng, 3, 4), np.arange(12, dtype=np.int32).reshape(3, 4)],
            lambda x, i: ops.add(ops.make(Op.CAST, x, dtype=F64), ops.cast(i, F64)))


OP_CASES: dict[Op, list[Callable]] = {
    Op.NEG: [_unary(Op.NEG)],
    Op.EXP: [_unary(Op.EXP)],
    Op.LOG: [_unary(Op.LOG, _pos)],
    Op.TANH: [_unary(Op.TANH)],
    Op.SIGMOID: [_unary(Op.SIGMOID)],
    Op.RELU: [_unary(Op.RELU, _away0)],
    Op.SQRT: [_unary(Op.SQRT, _pos)],
    Op.ABS: [_unary(Op.ABS, _away0)],
    Op.CAST: [_cast_case],
    Op.STOP_GRADIENT: [_unary(Op.STOP_GRADIENT)],  # expect_zero (see EXPECT_ZERO)
    Op.ADD: [_binary(Op.ADD)],
    Op.SUB: [_binary(Op.SUB)],
    Op.MUL: [_binary(Op.MUL)],
    Op.DIV: [_binary(Op.DIV, _n, _pos)],
    Op.MAXIMUM: [_binary(Op.MAXIMUM)],
    Op.MINIMUM: [_binary(Op.MINIMUM)],
    Op.POW: [_binary(Op.POW, _pos, _n)],
    Op.WHERE: [_where_case],
    Op.RANDOM_UNIFORM: [_random_case],
    Op.RESHAPE: [lambda rng: ([_n(rng, 3, 4)], lambda x: ops.reshape(x, (2, 6)))],
    Op.TRANSPOSE: [lambda rng: ([_n(rng, 2, 3, 4)], lambda x: ops.transpose(x, (2, 0, 1)))],
    Op.BROADCAST: [lambda rng: ([_n(rng, 3, 1)], lambda x: ops.broadcast(x, (2, 3, 4)))],
    Op.SLICE: [lambda rng: ([_n(rng, 3, 6)], lambda x: ops.slice_(x, 1, 2, 5))],
    Op.PAD: [lambda rng: ([_n(rng, 3, 2)], lambda x: ops.pad(x, 1, 1, 5))],
    Op.CONCAT: [lambda rng: ([_n(rng, 2, 1), _n(rng, 2, 3), _n(rng, 2, 2)],
                             lambda a, b, c: ops.concat([a, b, c], 1))],
    Op.SEGMENT: [lambda rng: ([_n(rng, 5, 2)], lambda x: ops.segment(x, 2)),  # zero-padded
                 lambda rng: ([_n(rng, 4, 3)], lambda x: ops.segment(x, 2))],
    Op.UNSEGMENT: [lambda rng: ([_n(rng, 3, 2, 2)], lambda y: ops.unsegment(y, 5)),
                   lambda rng: ([_n(rng, 2, 2, 3)], lambda y: ops.unsegment(y, 4))],
    Op.REDUCE_SUM: [lambda rng: ([_n(rng, 2, 3, 4)], lambda x: ops.reduce_sum(x, (0, 2))),
                    lambda rng: ([_n(rng, 2, 3, 4)],
                                 lambda x: ops.reduce_sum(x, (1,), keepdims=True))],
    Op.REDUCE_MAX: [lambda rng: ([_n(rng, 2, 3, 4)], lambda x: ops.reduce_max(x, (1,))),
                    lambda rng: ([_n(rng, 2, 3, 4)],
                                 lambda x: ops.reduce_max(x, (0, 2), keepdims=True))],
    Op.MATMUL: [lambda rng: ([_n(rng, 3, 4), _n(rng, 4, 5)], ops.matmul),
                lambda rng: ([_n(rng, 2, 3, 4), _n(rng, 4, 5)], ops.matmul)],
    Op.TENSORDOT: [lambda rng: ([_n(rng, 2, 3, 4), _n(rng, 4, 5, 3)],
                                lambda a, b: ops.tensordot(a, b, (1, 2), (2, 0))),
                   lambda rng: ([_n(rng, 3, 4), _n(rng, 3, 5)],
                                lambda a, b: ops.tensordot(a, b, (0,), (0,)))],
    Op.TAKE: [_take_case],
    Op.ONE_HOT: [_one_hot_case],
    Op.DIMSIZE: [_dimsize_case],
    Op.GATHER: [_gather_case],
    Op.SCATTER_ADD: [_scatter_add_case],
    Op.PERMUTE: [_permute_case, _permute_inverse_case],
    Op.RAGGED_MATMUL: [_ragged_matmul_case],
    Op.RAGGED_TENSORDOT: [_ragged_tensordot_case],
    Op.SCAN: [_scan_case(), _scan_case(reverse=True), _scan_case(with_length=True)],
    Op.ITEM: [_scan_case()],
}
EXPECT_ZERO = {Op.STOP_GRADIENT}


# FUSED nodes are made by the elementwise-fusion pass, which runs after autodiff on the
# already-differentiated graph; autodiff never sees them (it raises AutodiffError if asked).
MADE_AFTER_AUTODIFF = {Op.FUSED}


def _differentiable_ops() -> list[Op]:
    return [op for op, d in REGISTRY.items()
            if d.vjp != NOT_DIFFERENTIABLE and op not in MADE_AFTER_AUTODIFF]


def test_every_differentiable_op_has_a_case():
    missing = [op.value for op in _differentiable_ops() if op not in OP_CASES]
    assert not missing, f"add input factories to OP_CASES for: {missing}"
    # and non-differentiable ops are declared so (no silent None rules except scan/item,
    # which autodiff transposes structurally)
    for op, d in REGISTRY.items():
        if d.vjp is None:
            assert op in (Op.SCAN, Op.ITEM) or op in MADE_AFTER_AUTODIFF, op


CASES = [(op, k) for op in OP_CASES for k in range(len(OP_CASES[op]))]


@pytest.mark.parametrize("op,k", CASES, ids=[f"{op.value}-{k}" for op, k in CASES])
def test_op_vjp_matches_finite_differences(op, k):
    rng = np.random.default_rng(_seed(op.value, k))
    arrays, build = OP_CASES[op][k](rng)
    out = build(*[_input(f"x{j}", a) for j, a in enumerate(arrays)])
    from rnncomp.ir import toposort

    assert any(n.op is op for n in toposort([out])), f"the case for {op.value} does not use it"
    check_graph_grad(arrays, build, rng, expect_zero=op in EXPECT_ZERO)


def test_stop_gradient_blocks_only_its_path(rng):
    # d/da sum(sg(a) * a + a) = sg(a) + 1 = a + 1 (FD cannot see stop_gradient: exact check)
    x = rng.standard_normal((3, 4))
    a = _input("a", x)
    loss = ops.reduce_sum(ops.add(ops.mul(ops.stop_gradient(a), a), a), (0, 1))
    (_, g) = rc.interpret(grad_graph(Graph([a], [loss]), 0, ["a"]), [x])
    np.testing.assert_array_equal(g, x + 1)


def test_vjp_graph_matches_grad_graph(rng):
    def f(X):
        out, st = rc.dynamic_rnn(rc.GRUCell(3, reset_after=False), X)
        return out, st

    m = rc.Model(f, {"X": rc.Input((None, None, 2))}, dtype="f64")
    p = m.init(1)
    x = rng.standard_normal((2, 4, 2))
    R1, R2 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 3))
    vg = vjp_graph(m.graph, wrt=m.graph.param_names + ["X"])
    args = m.arguments(p, {"X": x}) + [R1, R2]
    res = rc.interpret(vg, args)
    grads = res[2:]

    def model2(X, R1, R2):
        out, st = f(X)
        return rc.sum(out * R1) + rc.sum(st * R2)

    m2 = rc.Model(model2, {"X": rc.Input((None, None, 2)), "R1": rc.Input((None, None, 3)),
                           "R2": rc.Input((None, 3))}, dtype="f64")
    _, g2 = m2.value_and_grad(p, wrt=m2.graph.param_names + ["X"], X=x, R1=R1, R2=R2)
    for a, name in zip(grads, m2.graph.param_names + ["X"]):
        np.testing.assert_allclose(a, g2[name], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Cells, wrappers, static and dynamic unroll, sequence_length, initial state
# ---------------------------------------------------------------------------------------------
B, T, I = 3, 4, 2


def _cells():
    return dict(BUILTIN_CELLS)


def _fd_model_check(m: rc.Model, inputs: dict, wrt_inputs: list[str], rng, *, training=False,
                    seed=0, params=None):
    """FD check of m's output 0 (a scalar) w.r.t. every param and `wrt_inputs`, in f64."""
    p = params if params is not None else _jitter(m.init(0), rng)
    wrt = list(m.param_specs) + wrt_inputs
    out, grads = m.value_and_grad(p, wrt=wrt, training=training, seed=seed, **inputs)
    dirs = {w: rng.standard_normal(grads[w].shape) for w in wrt}

    def L(sign):
        pp = {k: v + sign * EPS * dirs[k] if k in dirs else v for k, v in p.items()}
        ii = {k: v + sign * EPS * dirs[k] if k in dirs else v for k, v in inputs.items()}
        o = m(pp, training=training, seed=seed, **ii)
        return float(o[0] if isinstance(o, (tuple, list)) else o)

    fd = (L(1) - L(-1)) / (2 * EPS)
    an = float(sum(np.sum(grads[w] * dirs[w]) for w in wrt))
    assert rel_err(fd, an) < RTOL, (fd, an)
    if not training:  # (in training mode dropout may zero a whole small input)
        for w in wrt_inputs:
            assert np.any(grads[w] != 0), f"no gradient reached input {w}"
    return grads


def _jitter(params, rng):
    # zero-initialized biases are perturbed so that every parameter matters generically
    return {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}


def _state_inputs(cell):
    from rnncomp.frontend.trace import flatten

    sizes, tree = flatten(cell.state_size)
    return {f"s{k}": rc.Input((None, s)) for k, s in enumerate(sizes)}, tree


def _make_rnn_model(cell_factory, dynamic: bool, with_len: bool, with_state: bool):
    from rnncomp.frontend.trace import flatten, unflatten

    probe = cell_factory()
    st_specs, st_tree = _state_inputs(probe)
    specs = {"X": rc.Input((None, T, I))} if dynamic else \
        {f"X{t}": rc.Input((None, I)) for t in range(T)}
    if with_len:
        specs["L"] = rc.Input((None,), "i32")
    if with_state:
        specs.update(st_specs)
    H_out = probe.output_size
    specs["R"] = rc.Input((None, T, H_out))
    st_sizes, _ = flatten(probe.state_size)
    for k, s in enumerate(st_sizes):
        specs[f"Q{k}"] = rc.Input((None, s))

    def fn(**kw):
        cell = cell_factory()
        init = unflatten(st_tree, [kw[f"s{k}"] for k in range(len(st_sizes))]) \
            if with_state else None
        ln = kw.get("L")
        if dynamic:
            out, st = rc.dynamic_rnn(cell, kw["X"], sequence_length=ln, initial_state=init)
        else:
            outs, st = rc.static_rnn(cell, [kw[f"X{t}"] for t in range(T)], initial_state=init,
                                     sequence_length=ln)
            out = rc.concat([rc.expand_dims(o, 1) for o in outs], axis=1)
        flat, _ = flatten(st)
        loss = rc.sum(out * kw["R"])
        for k, s in enumerate(flat):
            loss = loss + rc.sum(rc.tanh(s) * kw[f"Q{k}"])
        return loss, out, st

    return rc.Model(fn, specs, dtype="f64"), st_sizes


def _rnn_inputs(rng, dynamic, with_len, with_state, st_sizes, H_out):
    X = rng.standard_normal((B, T, I))
    inputs = {"X": X} if dynamic else {f"X{t}": X[:, t] for t in range(T)}
    if with_len:
        inputs["L"] = np.array([0, T, 2], np.int32)  # an empty, a full and a partial sequence
    if with_state:
        for k, s in enumerate(st_sizes):
            inputs[f"s{k}"] = 0.5 * rng.standard_normal((B, s))
    inputs["R"] = rng.standard_normal((B, T, H_out))
    for k, s in enumerate(st_sizes):
        inputs[f"Q{k}"] = rng.standard_normal((B, s))
    return inputs


CELL_CASES = [(c, dyn, ln) for c in _cells() for dyn in (True, False) for ln in (False, True)]


@pytest.mark.parametrize("cell,dynamic,with_len", CELL_CASES,
                         ids=[f"{c}-{'dyn' if d else 'static'}-{'len' if ln else 'full'}"
                              for c, d, ln in CELL_CASES])
def test_cell_gradients_match_finite_differences(cell, dynamic, with_len):
    rng = np.random.default_rng(_seed(cell, dynamic, with_len))
    factory = _cells()[cell]
    with_state = True
    m, st_sizes = _make_rnn_model(factory, dynamic, with_len, with_state)
    inputs = _rnn_inputs(rng, dynamic, with_len, with_state, st_sizes, factory().output_size)
    wrt_inputs = (["X"] if dynamic else [f"X{t}" for t in range(T)]) + \
        [f"s{k}" for k in range(len(st_sizes))]
    training = cell == "dropout"
    grads = _fd_model_check(m, inputs, wrt_inputs, rng, training=training, seed=5)
    if with_len:
        # the empty sequence: its inputs get no gradient, its initial state passes through
        xg = grads["X"] if dynamic else np.stack([grads[f"X{t}"] for t in range(T)], 1)
        assert np.all(xg[0] == 0)
        assert np.all(xg[2, 2:] == 0)  # past the length of instance 2
        if not training:  # the full-length instance reaches its last step
            assert np.any(xg[1, -1] != 0)
    if training:
        # the masks are a function of the seed only: same seed, same gradient
        _, g2 = m.value_and_grad(_jitter(m.init(0), np.random.default_rng(0)),
                                 wrt=list(m.param_specs), training=True, seed=5, **inputs)
        _, g3 = m.value_and_grad(_jitter(m.init(0), np.random.default_rng(0)),
                                 wrt=list(m.param_specs), training=True, seed=5, **inputs)
        for k in g2:
            np.testing.assert_array_equal(g2[k], g3[k])


def test_static_and_dynamic_gradients_agree(rng):
    factory = _cells()["lstm_peep"]
    md, sizes = _make_rnn_model(factory, True, True, True)
    ms, _ = _make_rnn_model(factory, False, True, True)
    inp = _rnn_inputs(rng, True, True, True, sizes, 3)
    inp_s = {k: v for k, v in inp.items() if k != "X"}
    inp_s.update({f"X{t}": inp["X"][:, t] for t in range(T)})
    p = _jitter(md.init(0), rng)
    _, gd = md.value_and_grad(p, wrt=list(md.param_specs) + ["X"], **inp)
    _, gs = ms.value_and_grad(p, wrt=list(ms.param_specs) + [f"X{t}" for t in range(T)], **inp_s)
    for k in md.param_specs:
        np.testing.assert_allclose(gd[k], gs[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gd["X"], np.stack([gs[f"X{t}"] for t in range(T)], 1),
                               rtol=1e-10, atol=1e-12)


def test_loss_over_a_subset_of_steps(rng):
    """Slicing outputs [:, t_min:t_max] before the loss: later steps get no gradient, earlier
    steps still do (through the state)."""

    def fn(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(3), X)
        return rc.sum(rc.square(rc.slice(out, 1, 3, axis=1) - Y))

    m = rc.Model(fn, {"X": rc.Input((None, 5, 2)), "Y": rc.Input((None, 2, 3))}, dtype="f64")
    inputs = {"X": rng.standard_normal((2, 5, 2)), "Y": rng.standard_normal((2, 2, 3))}
    grads = _fd_model_check(m, inputs, ["X"], rng)
    assert np.all(grads["X"][:, 3:] == 0)
    assert np.all(np.abs(grads["X"][:, :3]).sum(axis=(0, 2)) > 0)


# ---------------------------------------------------------------------------------------------
# Random custom cells (hypothesis, bounded and derandomized)
# ---------------------------------------------------------------------------------------------
try:
    import hypothesis as hyp
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    hyp = None

_ACTS = {"tanh": rc.tanh, "sigmoid": rc.sigmoid, "softsign": lambda z: z / (1.0 + rc.abs(z)),
         "sq": lambda z: rc.tanh(z) * rc.tanh(z)}


def _custom_cell_case(act, gate, H, use_len):
    rng = np.random.default_rng(_seed(act, gate, H, use_len))
    f = _ACTS[act]

    def cell_fn(x, state):
        h = state[0] if gate == "two_state" else state
        Wx = rc.param("Wx", (I, H), "glorot_uniform")
        Wh = rc.param("Wh", (H, H), "orthogonal")
        b = rc.param("b", (H,), "zeros")
        z = rc.matmul(x, Wx) + rc.matmul(h, Wh) + b
        if gate == "plain":
            new = f(z)
        elif gate == "gated":
            a = rc.sigmoid(z * 0.5 + h)
            new = a * h + (1.0 - a) * f(z)
        elif gate == "residual":
            new = h + 0.5 * f(z)
        else:
            c = state[1]
            nc = rc.sigmoid(z) * c + f(z)
            new = rc.tanh(nc) * rc.maximum(z, -z * 0.3)
            return new, (new, nc)
        return new, new

    size = (H, H) if gate == "two_state" else H

    def fn(X, R, L):
        cell = rc.FunctionCell(cell_fn, size, output_size=H, name="custom")
        out, _ = rc.dynamic_rnn(cell, X, sequence_length=L if use_len else None)
        return rc.sum(out * R)

    m = rc.Model(fn, {"X": rc.Input((None, T, I)), "R": rc.Input((None, T, H)),
                      "L": rc.Input((None,), "i32")}, dtype="f64")
    inputs = {"X": rng.standard_normal((B, T, I)), "R": rng.standard_normal((B, T, H)),
              "L": np.array([1, T, 3], np.int32)}
    _fd_model_check(m, inputs, ["X"], rng)


if hyp is not None:
    @hyp.settings(max_examples=6, deadline=None, derandomize=True, database=None)
    @hyp.given(act=st.sampled_from(sorted(_ACTS)),
               gate=st.sampled_from(["plain", "gated", "residual", "two_state"]),
               H=st.integers(1, 3), use_len=st.booleans())
    def test_random_custom_cells(act, gate, H, use_len):
        _custom_cell_case(act, gate, H, use_len)


@pytest.mark.parametrize("gate", ["plain", "gated", "residual", "two_state"])
def test_custom_cell_forms(gate):
    _custom_cell_case("softsign", gate, 2, True)


# ---------------------------------------------------------------------------------------------
# Structure of the backward graph
# ---------------------------------------------------------------------------------------------
def _lstm_model():
    def fn(X):
        out, _ = rc.dynamic_rnn(rc.BasicLSTMCell(4), X)
        return rc.sum(out)

    return rc.Model(fn, {"X": rc.Input((None, None, 3))})


def test_lstm_backward_is_one_reverse_scan_with_weight_gemm_after_it():
    m = _lstm_model()
    g = m.grad_graph()
    scans = [n for n in g.all_nodes() if n.op is Op.SCAN]
    reverse = [n for n in scans if n.attr("reverse")]
    assert len(reverse) == 1 and len(scans) == 2  # one forward, one reverse (BPTT)
    assert all(n in g.nodes for n in scans)  # neither is nested
    names = m.graph.param_names
    kgrad = g.outputs[1 + names.index("rnn/basic_lstm_cell/kernel")]
    assert kgrad.op is Op.TENSORDOT
    assert kgrad.attr("a_axes") == (0, 1) == kgrad.attr("b_axes")  # over time AND batch
    for inp in kgrad.inputs:
        assert inp.op is Op.ITEM and inp.inputs[0] is reverse[0]
    bgrad = g.outputs[1 + names.index("rnn/basic_lstm_cell/bias")]
    assert bgrad.op is Op.REDUCE_SUM and bgrad.inputs[0].inputs[0] is reverse[0]
    # the reverse body has no weight-gradient contraction inside it
    body = reverse[0].attr("body")
    assert not any(n.op is Op.TENSORDOT for n in body.all_nodes())
    text = str(g)
    assert "reverse=True" in text and "tensordot[a_axes=(0, 1) b_axes=(0, 1)]" in text


def test_grad_graph_is_cached_and_printable(capsys):
    m = _lstm_model()
    assert m.grad_graph() is m.grad_graph(0, None)
    assert m.grad_graph(wrt=["X"]) is not m.grad_graph()
    text = m.print_backward()
    assert text == str(m.grad_graph()) and "reverse=True" in capsys.readouterr().out


def test_value_and_grad_api_errors_and_outputs(rng):
    def fn(X, L):
        out, st = rc.dynamic_rnn(rc.BasicRNNCell(3), X, sequence_length=L)
        return {"loss": rc.mean(rc.square(out)), "out": out, "state": st}

    m = rc.Model(fn, {"X": rc.Input((None, None, 2)), "L": rc.Input((None,), "i32")})
    x = rng.standard_normal((2, 4, 2)).astype(np.float32)
    L = np.array([4, 2], np.int32)
    outs, grads = m.value_and_grad(m.init(0), output="loss", wrt=None, X=x, L=L)
    assert set(outs) == {"loss", "out", "state"} and outs["out"].shape == (2, 4, 3)
    np.testing.assert_allclose(outs["loss"], m(m.init(0), X=x, L=L)["loss"], rtol=1e-6)
    assert set(grads) == set(m.param_specs)
    assert all(g.dtype == np.float32 for g in grads.values())
    _, gx = m.value_and_grad(m.init(0), output="loss", wrt="X", X=x, L=L)
    assert gx["X"].shape == x.shape and gx["X"].dtype == np.float32
    with pytest.raises(KeyError, match="no key 'los'"):
        m.value_and_grad(m.init(0), output="los", X=x, L=L)
    with pytest.raises(ValueError, match="float scalar"):
        m.value_and_grad(m.init(0), output="out", X=x, L=L)
    with pytest.raises(ValueError, match="integer"):
        m.value_and_grad(m.init(0), output="loss", wrt=["L"], X=x, L=L)
    with pytest.raises(KeyError, match="unknown"):
        m.value_and_grad(m.init(0), output="loss", wrt=["nope"], X=x, L=L)


# ---------------------------------------------------------------------------------------------
# Backends: value_and_grad goes through rnncomp.runtime.compiler.compile_graph for backend != "interp"
# ---------------------------------------------------------------------------------------------
def test_value_and_grad_dispatches_to_compile_graph(monkeypatch, rng):
    calls = []

    def compile_graph(graph, backend="cpu", **options):
        calls.append((graph, backend))
        return lambda *args: rc.interpret(graph, list(args))

    from rnncomp.runtime import compiler

    monkeypatch.setattr(compiler, "compile_graph", compile_graph)
    monkeypatch.setitem(compiler.BACKENDS, "fake", "no.such.module")  # a registered name
    m = _lstm_model()
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    ref_out, ref = m.value_and_grad(m.init(0), X=x, backend="interp")
    from rnncomp.runtime.grad import model_grad_graph

    for _ in range(2):
        out, g = m.value_and_grad(m.init(0), backend="fake", X=x)
        # compiled backends differentiate the pre-optimized forward graph: same values up to
        # float32 rounding (the input projection is summed in another order)
        assert np.allclose(out, ref_out, rtol=1e-5)
        assert all(np.allclose(g[k], ref[k], rtol=1e-4, atol=1e-6) for k in ref)
    # compiled once, cached; the graph is the pre-optimized gradient graph
    assert len(calls) == 1 and calls[0] == (model_grad_graph(m, preoptimize=True), "fake")


def test_compiled_cpu_gradients_equal_the_interpreter(rng):
    def fn(X, L):
        out, _ = rc.dynamic_rnn(rc.LSTMCell(4, use_peepholes=True), X, sequence_length=L)
        return rc.mean(rc.square(out))

    m = rc.Model(fn, {"X": rc.Input((None, None, 3)), "L": rc.Input((None,), "i32")},
                 dtype="f64")
    inp = {"X": rng.standard_normal((3, 5, 3)), "L": np.array([5, 0, 2], np.int32)}
    wrt = list(m.param_specs) + ["X"]
    out_i, g_i = m.value_and_grad(m.init(0), wrt=wrt, **inp)
    out_c, g_c = m.value_and_grad(m.init(0), wrt=wrt, backend="cpu", **inp)
    np.testing.assert_allclose(out_c, out_i, rtol=1e-10)
    for k in wrt:
        np.testing.assert_allclose(g_c[k], g_i[k], rtol=1e-9, atol=1e-12)
