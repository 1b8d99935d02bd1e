"""Shape-generic CPU kernels: the generated source reads every concrete size (dims, slice and
concat offsets, loop bounds) from the kernel's `sz` argument, so a model that differs only in
its hidden, input or batch size reuses the kernel compiled for another size (same source, same
cache key, same module, no new Numba compile), with results equal to the interpreter's; a size
that changes what the code does (a dim of 1 that broadcasts) changes the source and so the key.
"""

from __future__ import annotations

import numba
import numpy as np

import rnncomp as rc
from rnncomp.backends.cpu import codegen
from rnncomp.runtime.compiler import compile_graph
from rnncomp.transforms.passes import optimize

from helpers import assert_close


def _lstm(H: int, I: int) -> rc.Model:
    def f(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicLSTMCell(H), X)
        return rc.mean(rc.square(out - Y))

    return rc.Model(f, {"X": rc.Input((None, None, I)), "Y": rc.Input((None, None, H))})


def _compiled_overloads(cg) -> int:
    """Numba compilations held by the kernel module (the kernel and its loop functions)."""
    mod = cg.fn.py_func.__globals__
    return sum(len(v.overloads) for v in mod.values()
               if isinstance(v, numba.core.registry.CPUDispatcher))


def _run(H: int, I: int, B: int, T: int = 3):
    m = _lstm(H, I)
    p = m.init(0)
    rng = np.random.default_rng(H)
    feeds = {"X": rng.standard_normal((B, T, I)).astype(np.float32),
             "Y": rng.standard_normal((B, T, H)).astype(np.float32)}
    got = m.value_and_grad(p, backend="cpu", **feeds)
    want = m.value_and_grad(p, backend="interp", **feeds)
    assert_close(got[0], want[0], 2e-5, f"H{H} loss")
    assert got[1].keys() == want[1].keys()
    for k in want[1]:
        assert_close(got[1][k], want[1][k], 2e-5, f"H{H} d{k}")
    ((_, cg),) = m._compiled_grad.values()
    return cg


def test_other_hidden_input_and_batch_size_reuse_the_kernel():
    first = _run(H=8, I=5, B=3)
    n = _compiled_overloads(first)
    # the kernel, and its loop functions when compiled here: loaded from the kernel cache
    # (another worker of a parallel run compiled the same source first) they are linked
    # into the kernel and hold no overload of their own
    assert n >= 1
    second = _run(H=12, I=7, B=2)
    assert second.source == first.source
    assert second.key == first.key and second.path == first.path
    assert second.fn is first.fn
    assert _compiled_overloads(second) == n, "the second size compiled anew"
    assert list(second.sizes) != list(first.sizes)


def _add_model(a: int, b: int) -> rc.Model:
    def f(X, Y):
        return rc.tanh(X * 2.0 + Y)

    return rc.Model(f, {"X": rc.Input((None, a)), "Y": rc.Input((None, b))})


def test_broadcast_dim_of_one_gets_its_own_kernel():
    """X [B, 1] broadcast against Y [B, n] reads X[i, 0]: not the kernel of [B, n] + [B, n],
    which reads X[i, j] (run with the broadcast case's sizes it would read past X's row)."""
    rng = np.random.default_rng(0)
    cgs = {}
    for a, b in [(1, 4), (4, 4), (1, 1), (3, 3)]:
        m = _add_model(a, b)
        cg = compile_graph(m.graph, backend="cpu")
        x = rng.standard_normal((2, a)).astype(np.float32)
        y = rng.standard_normal((2, b)).astype(np.float32)
        got = m(m.init(0), backend="cpu", X=x, Y=y)
        assert_close(got, np.tanh(x * 2.0 + y), 1e-6, f"[B, {a}] + [B, {b}]")
        cgs[a, b] = cg
    assert cgs[1, 4].key != cgs[4, 4].key
    assert "[i0, 0]" in cgs[1, 4].source and "[i0, 0]" not in cgs[4, 4].source
    # no broadcast: one kernel for every size, a dim of 1 included
    assert cgs[1, 1].key == cgs[4, 4].key == cgs[3, 3].key


def test_sizes_are_not_in_the_source():
    """No concrete size of the LSTM's graph is printed into its source: two graphs that differ
    in H and I render the same text, and the literal rendering (the benchmarks' baseline)
    differs between them."""
    srcs, lits = [], []
    for H, I in [(8, 5), (12, 7)]:
        g = optimize(_lstm(H, I).graph).graph
        src, sizes = codegen.render(g)
        assert H in sizes and I in sizes and 4 * H in sizes
        srcs.append(src)
        lits.append(codegen.render(g, literal_sizes=True))
    assert srcs[0] == srcs[1]
    assert lits[0][0] != lits[1][0] and lits[0][1] == []
