"""Random custom cells (hypothesis): random op trees over the DSL, written as a FunctionCell or
an RNNCell subclass, unrolled with dynamic_rnn in the interpreter, against a NumPy evaluation of
the same tree description done here (the reference never touches rnncomp)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncomp as rc

B, T, I = 3, 4, 3
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A tree is a tuple: ("x",) | ("h",) | ("matmul", child, in_w, out_w) | (binop, a, b)
# | (unary, a) | ("concat", a, b) | ("slice", a, start, stop) | ("where", c, a, b);
# every tree evaluates to a [B, width] array.
BINOPS = ("add", "sub", "mul")
UNARY = ("sigmoid", "tanh", "relu", "exp_tanh")


def width_of(tree, S):
    kind = tree[0]
    if kind == "x":
        return I
    if kind == "h":
        return S
    if kind == "matmul":
        return tree[3]
    if kind == "concat":
        return width_of(tree[1], S) + width_of(tree[2], S)
    if kind == "slice":
        return tree[3] - tree[2]
    if kind == "where":
        return width_of(tree[2], S)
    return width_of(tree[1], S)


def trees(width: int, S: int, depth: int):
    leaves = []
    if width == I:
        leaves.append(st.just(("x",)))
    if width == S:
        leaves.append(st.just(("h",)))
    # a matmul of x or h adapts any width, so every width has a leaf-level tree
    leaves.append(st.sampled_from([("x",), ("h",)]).map(
        lambda c: ("matmul", c, I if c[0] == "x" else S, width)))
    if depth == 0:
        return st.one_of(leaves)
    sub = lambda w: trees(w, S, depth - 1)  # noqa: E731
    options = list(leaves) + [
        st.integers(1, 5).flatmap(lambda w_in: sub(w_in).map(
            lambda c: ("matmul", c, w_in, width))),
        st.tuples(st.sampled_from(BINOPS), sub(width), sub(width)),
        st.tuples(st.sampled_from(UNARY), sub(width)),
        st.tuples(st.just("where"), sub(width), sub(width), sub(width)),
        st.integers(0, 3).flatmap(lambda start: sub(width + start + 1).map(
            lambda c: ("slice", c, start, start + width))),
    ]
    if width >= 2:
        options.append(st.integers(1, width - 1).flatmap(lambda w1: st.tuples(
            st.just("concat"), sub(w1), sub(width - w1))))
    return st.one_of(options)


class Lib:
    """Evaluate a tree with rnncomp's DSL (make_param creates the parameters)."""

    def __init__(self, make_param):
        self.make_param = make_param
        self.k = 0

    def ev(self, tree, x, h):
        kind = tree[0]
        if kind == "x":
            return x
        if kind == "h":
            return h
        if kind == "matmul":
            name = f"w{self.k}"
            self.k += 1
            return rc.matmul(self.ev(tree[1], x, h), self.make_param(name, (tree[2], tree[3])))
        if kind in BINOPS:
            return getattr(rc, kind)(self.ev(tree[1], x, h), self.ev(tree[2], x, h))
        if kind == "exp_tanh":
            return rc.exp(rc.tanh(self.ev(tree[1], x, h)))
        if kind in UNARY:
            return getattr(rc, kind)(self.ev(tree[1], x, h))
        if kind == "concat":
            return rc.concat([self.ev(tree[1], x, h), self.ev(tree[2], x, h)], axis=1)
        if kind == "slice":
            a = self.ev(tree[1], x, h)
            if tree[2] == 0:  # exercise split too
                first, _ = rc.split(a, [tree[3], a.shape[1] - tree[3]], axis=1)
                return first
            return rc.slice(a, tree[2], tree[3], axis=1)
        if kind == "where":
            return rc.where(rc.greater(self.ev(tree[1], x, h), 0.0), self.ev(tree[2], x, h),
                            self.ev(tree[3], x, h))
        raise AssertionError(kind)


def np_eval(tree, x, h, params, counter):
    """The same tree, evaluated with NumPy."""
    kind = tree[0]
    rec = lambda t: np_eval(t, x, h, params, counter)  # noqa: E731
    if kind == "x":
        return x
    if kind == "h":
        return h
    if kind == "matmul":
        name = f"w{counter[0]}"
        counter[0] += 1
        return rec(tree[1]) @ params[name]
    if kind == "add":
        return rec(tree[1]) + rec(tree[2])
    if kind == "sub":
        return rec(tree[1]) - rec(tree[2])
    if kind == "mul":
        return rec(tree[1]) * rec(tree[2])
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-rec(tree[1])))
    if kind == "tanh":
        return np.tanh(rec(tree[1]))
    if kind == "relu":
        return np.maximum(rec(tree[1]), 0.0)
    if kind == "exp_tanh":
        return np.exp(np.tanh(rec(tree[1])))
    if kind == "concat":
        return np.concatenate([rec(tree[1]), rec(tree[2])], axis=1)
    if kind == "slice":
        return rec(tree[1])[:, tree[2]:tree[3]]
    if kind == "where":
        c = rec(tree[1])
        return np.where(c > 0, rec(tree[2]), rec(tree[3]))
    raise AssertionError(kind)


def np_unroll(out_tree, state_tree, X, params, seq):
    S = params["h0_size"]
    h = np.zeros((B, S))
    outs = []
    for t in range(X.shape[1]):
        counter = [0]
        o = np_eval(out_tree, X[:, t], h, params, counter)
        nh = np.tanh(np_eval(state_tree, X[:, t], h, params, counter))
        valid = (t < seq)[:, None]
        outs.append(np.where(valid, o, 0.0))
        h = np.where(valid, nh, h)
    return np.stack(outs, 1), h


@st.composite
def cells(draw):
    S = draw(st.integers(2, 4))
    O = draw(st.integers(1, 3))
    out_tree = draw(trees(O, S, 3))
    state_tree = draw(trees(S, S, 3))
    as_class = draw(st.booleans())
    seq = draw(st.one_of(st.none(), st.lists(st.integers(0, T), min_size=B, max_size=B)))
    return S, O, out_tree, state_tree, as_class, seq


def make_cell(S, O, out_tree, state_tree, as_class):
    if as_class:
        class TreeCell(rc.RNNCell):
            state_size = S
            output_size = O

            def call(self, x, h):
                lib = Lib(self.param)
                return lib.ev(out_tree, x, h), rc.tanh(lib.ev(state_tree, x, h))

        return TreeCell(name="tree_cell")

    def tree_cell(x, h):
        lib = Lib(lambda name, shape: rc.param(name, shape))
        return lib.ev(out_tree, x, h), rc.tanh(lib.ev(state_tree, x, h))

    return rc.FunctionCell(tree_cell, state_size=S, output_size=O)


@SETTINGS
@given(cells(), st.integers(0, 2**31 - 1))
def test_random_custom_cell_matches_numpy(cell_desc, seed):
    S, O, out_tree, state_tree, as_class, seq = cell_desc

    def fn(X, L=None):
        return rc.dynamic_rnn(make_cell(S, O, out_tree, state_tree, as_class), X,
                              sequence_length=L)

    inputs = {"X": rc.Input((None, None, I))}
    if seq is not None:
        inputs["L"] = rc.Input((None,), "i32")
    m = rc.Model(fn, inputs, dtype="f64")
    rc.verify(m.graph)
    rng = np.random.default_rng(seed)
    p = {k: rng.standard_normal(s.shape) / np.sqrt(s.shape[0])
         for k, s in m.param_specs.items()}
    X = rng.standard_normal((B, T, I))
    feeds = {"X": X} if seq is None else {"X": X, "L": np.array(seq, np.int32)}
    out, state = m(p, **feeds)

    prefix = "rnn/tree_cell/"  # FunctionCell takes the function name, TreeCell its name=
    plain = {k[len(prefix):]: v for k, v in p.items()}
    plain["h0_size"] = S
    L = np.full(B, T) if seq is None else np.array(seq)
    ref_out, ref_state = np_unroll(out_tree, state_tree, X, plain, L)
    assert out.shape == (B, T, O) and state.shape == (B, S)
    np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(state, ref_state, rtol=1e-9, atol=1e-11)
