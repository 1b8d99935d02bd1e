"""The optimizing passes: semantics preserved, golden before/after prints, and the structure the
CPU backend relies on. Interpreter only: nothing here compiles with Numba.

- Every pass of PIPELINE (run by `optimize` with the verifier after each pass) preserves the
  interpreter's results: on every built-in cell (forward and gradient graphs, dynamic and static
  unroll, with sequence_length), and on random custom cells (hypothesis, derandomized).
- Each pass has a golden before/after print on a small LSTM, a small GRU and the LSTM's gradient
  graph (tests/cpu/golden/passes/; regenerate with RNNCOMP_UPDATE_GOLDEN=1).
- Structure: the LSTM scan body keeps ONE matmul (the recurrent one), the input projection is one
  GEMM before the loop, the gate arithmetic of a step is one FUSED node; in the backward graph
  the weight-gradient tensordots and the dX matmul are outside the reverse scan.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncomp as rc
from rnncomp.transforms.autodiff import grad_graph
from rnncomp.runtime.interp import evaluate
from rnncomp.ir import Graph, GroupOp, Op, pformat
from rnncomp.transforms.passes import PIPELINE, optimize
from rnncomp.frontend.trace import flatten
from helpers import BUILTIN_CELLS

PASS_NAMES = [name for name, _ in PIPELINE]
B, T, I = 3, 4, 2
RTOL = 1e-12


def _run(g: Graph, args):
    return [np.asarray(o) for o in evaluate(g, args)]


def _assert_same(got, ref, what, rtol=RTOL):
    assert len(got) == len(ref), what
    for k, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: output {k}"
        if b.dtype.kind == "f":
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(scale, 1e-300),
                                       err_msg=f"{what}: output {k}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: output {k}")


def _args(m: rc.Model, rng, inputs, training=True, seed=5):
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in m.init(0).items()}
    return m.arguments(p, inputs, training, seed)


def check_stages(g: Graph, args, what: str):
    """optimize(g) with the verifier; every stage gives the results of the input graph, and the
    stages are exactly the passes applied one after another."""
    ref = _run(g, args)
    res = optimize(g, verify=True)
    assert list(res.stages) == ["traced"] + PASS_NAMES
    for name in PASS_NAMES:
        _assert_same(_run(res.stages[name], args), ref, f"{what}: after {name}")
    return res


# ---------------------------------------------------------------------------------------------
# Built-in cells
# ---------------------------------------------------------------------------------------------
CELLS = BUILTIN_CELLS


def _cell_model(make, dynamic: bool):
    def fn(X, L, R):
        if dynamic:
            out, st = rc.dynamic_rnn(make(), X, sequence_length=L)
        else:
            xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), (B, I)) for t in range(T)]
            outs, st = rc.static_rnn(make(), xs, sequence_length=L)
            out = rc.concat([rc.expand_dims(o, 1) for o in outs], axis=1)
        loss = rc.sum(out * R)
        for s in flatten(st)[0]:
            loss = loss + rc.sum(rc.tanh(s))
        return loss, out, st

    probe = make()
    return rc.Model(fn, {"X": rc.Input((B, T, I)), "L": rc.Input((B,), "i32"),
                         "R": rc.Input((B, T, probe.output_size))}, dtype="f64")


def _cell_case(cell: str, dynamic: bool, seed: int):
    """The model of a built-in cell and its arguments (lengths [0, T, 2], perturbed params)."""
    rng = np.random.default_rng(seed)
    m = _cell_model(CELLS[cell], dynamic)
    out_size = CELLS[cell]().output_size
    inputs = {"X": rng.standard_normal((B, T, I)), "L": np.array([0, T, 2], np.int32),
              "R": rng.standard_normal((B, T, out_size))}
    return m, _args(m, rng, inputs)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dyn", "static"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_passes_preserve_cells(cell, dynamic):
    m, args = _cell_case(cell, dynamic, seed=7)
    check_stages(m.graph, args, f"{cell} forward")
    wrt = m.graph.param_names + ["X"]
    for pre in (False, True):
        check_stages(grad_graph(m.graph, 0, wrt, preoptimize=pre), args,
                     f"{cell} gradient (preoptimize={pre})")


@pytest.mark.parametrize("dynamic", [True, False], ids=["dyn", "static"])
@pytest.mark.parametrize("cell", ["basic_lstm", "gru_after", "dropout", "multi_tuple"])
def test_optimizing_an_optimized_graph_changes_nothing_it_computes(cell, dynamic):
    """`rnncomp inspect --stage optimized --source cpu` compiles the optimized graph, so the
    pipeline runs again on FUSED nodes: it must keep their bodies as they are (fusing inside
    one made its results ITEMs, a ShapeError) and the results."""
    m, args = _cell_case(cell, dynamic, seed=3)
    for what, g in (("forward", m.graph),
                    ("gradient", grad_graph(m.graph, 0, m.graph.param_names + ["X"],
                                            preoptimize=True))):
        once = optimize(g, verify=True).graph
        assert any(n.op is Op.FUSED for n in once.all_nodes()), what
        twice = optimize(once, verify=True).graph
        _assert_same(_run(twice, args), _run(g, args), f"{cell} {what} optimized twice")


# ---------------------------------------------------------------------------------------------
# Random custom cells (hypothesis)
# ---------------------------------------------------------------------------------------------
HS = settings(max_examples=15, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
S = 3  # state size


def _expr(depth: int):
    """A random per-step expression: a tree over x [B, I] and h [B, S] giving [B, S]."""
    leaf = st.sampled_from(["x", "h"]).map(lambda v: ("proj", v))
    if depth == 0:
        return leaf
    sub = _expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(["add", "sub", "mul"]), sub, sub),
        st.tuples(st.sampled_from(["sigmoid", "tanh", "relu"]), sub),
        st.tuples(st.just("where"), sub, sub, sub),
        st.tuples(st.just("gate"), sub, sub),  # split/concat: a [B, 2S] matmul, halves mixed
        st.tuples(st.just("proj_of"), sub),  # a matmul of an intermediate (recurrent chain)
    )


def _build(tree, x, h, params):
    kind = tree[0]

    def P(shape):
        k = len(params)
        w = rc.param(f"w{k}", shape, "glorot_uniform")
        params.append(w)
        return w

    if kind == "proj":
        v = x if tree[1] == "x" else h
        return rc.matmul(v, P((v.shape[1], S)))
    if kind in ("add", "sub", "mul"):
        return getattr(rc, kind)(_build(tree[1], x, h, params), _build(tree[2], x, h, params))
    if kind in ("sigmoid", "tanh", "relu"):
        return getattr(rc, kind)(_build(tree[1], x, h, params))
    if kind == "where":
        c = _build(tree[1], x, h, params)
        return rc.where(rc.greater(c, rc.zeros_like(c)), _build(tree[2], x, h, params),
                        _build(tree[3], x, h, params))
    if kind == "gate":
        z = rc.matmul(rc.concat([x, h], 1), P((I + S, 2 * S)))
        a, b = rc.split(z, 2, axis=1)
        return rc.sigmoid(a) * _build(tree[1], x, h, params) + \
            rc.tanh(b) * _build(tree[2], x, h, params)
    if kind == "proj_of":
        return rc.matmul(_build(tree[1], x, h, params), P((S, S))) + P((S,))
    raise AssertionError(kind)


@HS
@given(tree=_expr(3), with_len=st.booleans(), reverse_bias=st.booleans())
def test_passes_preserve_random_custom_cells(tree, with_len, reverse_bias):
    def step(x, h):
        params: list = []
        new_h = rc.tanh(_build(tree, x, h, params))
        if reverse_bias:
            new_h = new_h + 0.5 * h
        return new_h, new_h

    def fn(X, L, R):
        cell = rc.FunctionCell(step, S)
        out, st = rc.dynamic_rnn(cell, X, sequence_length=L if with_len else None)
        return rc.sum(out * R) + rc.sum(st * st), out

    m = rc.Model(fn, {"X": rc.Input((B, T, I)), "L": rc.Input((B,), "i32"),
                      "R": rc.Input((B, T, S))}, dtype="f64")
    rng = np.random.default_rng(3)
    inputs = {"X": rng.standard_normal((B, T, I)), "L": np.array([0, T, 2], np.int32),
              "R": rng.standard_normal((B, T, S))}
    args = _args(m, rng, inputs)
    check_stages(m.graph, args, f"custom cell {tree} forward")
    check_stages(grad_graph(m.graph, 0, m.graph.param_names + ["X"], preoptimize=True), args,
                 f"custom cell {tree} gradient")


def test_non_recurrent_cell_gradient():
    def fn(X):
        cell = rc.FunctionCell(lambda x, h: (rc.tanh(rc.matmul(x, rc.param("w", (I, S)))),) * 2, S)
        out, st = rc.dynamic_rnn(cell, X)
        return rc.sum(st * st), out

    m = rc.Model(fn, {"X": rc.Input((B, T, I))}, dtype="f64")
    g = grad_graph(m.graph, 0, m.graph.param_names, preoptimize=True)
    rng = np.random.default_rng(5)
    args = _args(m, rng, {"X": rng.standard_normal((B, T, I))})
    ref = rc.interpret(grad_graph(m.graph, 0, m.graph.param_names), args)
    got = rc.interpret(g, args)
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(ref, got, strict=True))


# ---------------------------------------------------------------------------------------------
# Golden before/after prints
# ---------------------------------------------------------------------------------------------
def _lstm_model():
    def f(X):
        out, st = rc.dynamic_rnn(rc.BasicLSTMCell(4), X)
        return rc.sum(out * out), out

    return rc.Model(f, {"X": rc.Input((None, None, 3))}, dtype="f32")


def _gru_model():
    def f(X, L):
        out, st = rc.dynamic_rnn(rc.GRUCell(4, reset_after=False), X, sequence_length=L)
        return rc.sum(out * out), out

    return rc.Model(f, {"X": rc.Input((None, None, 3)), "L": rc.Input((None,), "i32")},
                    dtype="f32")


def _golden_graphs() -> dict[str, Graph]:
    lstm = _lstm_model()
    return {
        "lstm": lstm.graph,
        "gru": _gru_model().graph,
        "lstm_grad": grad_graph(lstm.graph, 0, lstm.graph.param_names + ["X"],
                                preoptimize=True),
    }


@pytest.fixture(scope="module")
def golden_stages():
    return {k: optimize(g, verify=True) for k, g in _golden_graphs().items()}


GOLDEN = [(g, k, name) for g in ("lstm", "gru", "lstm_grad")
          for k, name in enumerate(PASS_NAMES)]


@pytest.mark.parametrize("graph,k,name", GOLDEN, ids=[f"{g}-{n}" for g, _, n in GOLDEN])
def test_pass_golden(golden_stages, golden, graph, k, name):
    res = golden_stages[graph]
    before = res.stages["traced" if k == 0 else PASS_NAMES[k - 1]]
    after = res.stages[name]
    # the stage is exactly this pass applied to the previous stage (value names aside: the
    # pipeline's stages share one provenance table, a pass run alone prints in print order)
    again = PIPELINE[k][1](before)
    assert pformat(again, stable_names=False) == pformat(after, stable_names=False)
    text = f"# {graph}: before {name}\n{before}\n\n# {graph}: after {name}\n{after}\n"
    golden(f"passes/{graph}/{k:02d}_{name}.txt", text)


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------
def _scans(g: Graph):
    return [n for n in g.nodes if n.op is Op.SCAN]


def _count(g: Graph, op: Op, deep=False) -> int:
    return sum(n.op is op for n in (g.all_nodes() if deep else g.nodes))


@pytest.fixture(scope="module")
def lstm_opt():
    m = _lstm_model()
    fwd = optimize(m.graph, verify=True).graph
    bwd = optimize(grad_graph(m.graph, 0, m.graph.param_names + ["X"], preoptimize=True),
                   verify=True).graph
    return m, fwd, bwd


def test_lstm_forward_has_one_recurrent_matmul(lstm_opt):
    _, fwd, _ = lstm_opt
    (scan,) = _scans(fwd)
    body: Graph = scan.attr("body")
    mms = [n for n in body.all_nodes() if n.op in GroupOp.Contraction]
    assert len(mms) == 1, [str(n) for n in mms]
    (mm,) = mms
    carries = body.inputs[1:1 + scan.attr("n_carry")]
    assert mm.inputs[0] in carries, "the body's matmul must be the recurrent h @ U"
    # the input projection: ONE matmul over [T, B, I] before the loop, feeding the scan's xs
    outer = [n for n in fwd.nodes if n.op is Op.MATMUL]
    assert len(outer) == 1 and outer[0].ndim == 3
    xs = scan.inputs[scan.attr("n_carry"):scan.attr("n_carry") + scan.attr("n_xs")]
    assert outer[0] in xs


def test_lstm_gate_arithmetic_is_one_fused_node(lstm_opt):
    _, fwd, _ = lstm_opt
    (scan,) = _scans(fwd)
    body: Graph = scan.attr("body")
    fused = [n for n in body.nodes if n.op is Op.FUSED]
    assert len(fused) == 1
    inner = {n.op for n in fused[0].attr("body").nodes}
    assert {Op.SIGMOID, Op.TANH, Op.MUL, Op.ADD} <= inner
    # nothing elementwise is left outside the group in the step
    assert not [n for n in body.nodes if n.op in GroupOp.Elementwise], \
        [str(n) for n in body.nodes if n.op in GroupOp.Elementwise]


def test_lstm_backward_weight_and_input_gradients_leave_the_loop(lstm_opt):
    m, _, bwd = lstm_opt
    rev = [s for s in _scans(bwd) if s.attr("reverse")]
    assert len(rev) == 1
    body: Graph = rev[0].attr("body")
    assert _count(body, Op.TENSORDOT, deep=True) == 0
    mms = [n for n in body.all_nodes() if n.op is Op.MATMUL]
    assert len(mms) == 1, "only the recurrent dh = dz @ U^T stays in the reverse loop"
    # outside: dW_x, dW_h as tensordots over all T*B rows, dX as one [T, B, 4H] GEMM
    outer = bwd.nodes
    tds = [n for n in outer if n.op is Op.TENSORDOT]
    assert len(tds) == 2 and all(n.attr("a_axes") == (0, 1) for n in tds)
    rev_ys = {id(n) for n in outer if n.op is Op.ITEM and n.inputs[0] is rev[0]}
    assert all(any(id(i) in rev_ys for i in n.inputs) for n in tds)
    dx_mm = [n for n in outer if n.op is Op.MATMUL and n.ndim == 3 and n.inputs[0].op is Op.ITEM
             and n.inputs[0].inputs[0] is rev[0]]
    assert len(dx_mm) == 1
    n_fwd = len(m.graph.outputs)
    dX = bwd.outputs[n_fwd + len(m.graph.param_names)]
    assert dX.shape == ("B", "T", 3)


def test_sizes_read_in_a_loop_body_leave_the_loop():
    """A layer norm's element count (rc.mean divides by a DIMSIZE of a value computed in the
    step) is the same at every step: simplify traces it back to an input of the body and licm
    reads it from the initial carry or the stacked input outside the loop, so the forward scan
    computes no size and the backward pass gets no stacked [T] column of counts."""
    def ln(x):
        m = rc.mean(x, axis=-1, keepdims=True)
        v = rc.mean(rc.square(x - m), axis=-1, keepdims=True)
        return (x - m) / rc.sqrt(v + 1e-5)

    def cell(x, state):
        c, h = state
        z = rc.matmul(rc.concat([x, h], axis=1), rc.param("kernel", (I + 4, 8)))
        i, f = rc.split(z, 2, axis=1)
        c2 = rc.sigmoid(ln(f)) * c + rc.tanh(ln(i))
        h2 = rc.tanh(ln(c2))
        return h2, (c2, h2)

    def fn(X, R):
        out, st = rc.dynamic_rnn(rc.FunctionCell(cell, (4, 4), 4), X)
        return rc.sum(out * R) + rc.sum(st[0])

    m = rc.Model(fn, {"X": rc.Input((B, T, I)), "R": rc.Input((B, T, 4))}, dtype="f64")
    rng = np.random.default_rng(2)
    args = _args(m, rng, {"X": rng.standard_normal((B, T, I)),
                          "R": rng.standard_normal((B, T, 4))})
    res = check_stages(m.graph, args, "layer-norm cell forward")
    scans = [n for n in res.graph.nodes if n.op is Op.SCAN]
    assert scans and not any(n.op is Op.DIMSIZE for s in scans for n in s.attr("body").nodes)
    gres = check_stages(grad_graph(m.graph, 0, m.graph.param_names + ["X"], preoptimize=True),
                        args, "layer-norm cell gradient")
    for n in gres.graph.all_nodes():
        if n.op is Op.SCAN:
            assert not any(n2.op is Op.DIMSIZE for n2 in n.attr("body").nodes)
            # no per-step scalar (a stacked [T] output) crosses from the forward to the backward
            assert not any(n.inputs and len(i.shape) == 1 and i.shape[0] == T
                           for i in n.inputs)
