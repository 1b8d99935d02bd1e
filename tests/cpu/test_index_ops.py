"""rc.argmax and the embedding gather (layers.embedding, rc.embedding_lookup, rc.nn.
embedding_lookup): the interpreter against NumPy, the CPU backend against the interpreter,
the gradient against the one_hot @ table formulation it replaced, bad ids refused."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import layers
from rnncomp.ir.ops import IndexOutOfRange


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_argmax_matches_numpy_on_both_backends(axis, rng):
    x = np.round(rng.standard_normal((4, 5, 6)) * 1.5).astype(np.float32)  # many ties
    x[1, 2, 3] = np.nan
    m = rc.Model(lambda X: (rc.argmax(X, axis=axis), rc.argmax(X, axis, output_type="i32")),
                 {"X": rc.Input((None, 5, 6))})
    want = np.argmax(x, axis=axis)
    for backend in ("interp", "cpu"):
        a64, a32 = m(m.init(), X=x, backend=backend)
        assert a64.dtype == np.int64 and a32.dtype == np.int32
        np.testing.assert_array_equal(a64, want)
        np.testing.assert_array_equal(a32, want)


def test_argmax_defaults_and_errors():
    m = rc.Model(lambda X: rc.argmax(X), {"X": rc.Input((None, 3))})  # TF1: axis 0
    x = np.array([[0, 5, 1], [2, 1, 9]], np.float32)
    np.testing.assert_array_equal(m(m.init(), X=x, backend="interp"), [1, 0, 1])
    with pytest.raises(rc.ShapeError, match="integer"):
        rc.Model(lambda X: rc.argmax(X, 1, output_type="f32"), {"X": rc.Input((None, 3))})
    with pytest.raises(rc.ShapeError, match="out of range"):
        rc.Model(lambda X: rc.argmax(X, 2), {"X": rc.Input((None, 3))})


def test_argmax_has_no_gradient(rng):
    def f(X):
        return rc.reduce_sum(rc.cast(rc.argmax(X, -1), "f32")) + rc.reduce_sum(X)

    m = rc.Model(f, {"X": rc.Input((None, 3))})
    x = rng.standard_normal((2, 3)).astype(np.float32)
    _, g = m.value_and_grad(m.init(), wrt=["X"], X=x, backend="interp")
    np.testing.assert_array_equal(g["X"], np.ones_like(x))  # only the reduce_sum term


def _emb_model(vocab=50, dim=6):
    def f(ids, R):
        e = layers.embedding(ids, vocab, dim)
        return rc.reduce_sum(e * R), e

    def f_onehot(ids, R):
        with rc.variable_scope("embedding"):
            t = rc.param("embeddings", (vocab, dim), "random_uniform")
        e = rc.matmul(rc.one_hot(ids, vocab), t)
        return rc.reduce_sum(e * R), e

    ins = {"ids": rc.Input((None, None), "i32"), "R": rc.Input((None, None, dim))}
    return rc.Model(f, ins), rc.Model(f_onehot, ins)


def test_embedding_is_a_gather_with_a_scatter_add_gradient(rng):
    m, ref = _emb_model()
    assert "gather" in str(m.graph) and "one_hot" not in str(m.graph)
    assert "scatter_add" in str(m.grad_graph()) and "one_hot" not in str(m.grad_graph())
    p = m.init(0)
    ids = rng.integers(0, 50, (3, 7)).astype(np.int32)
    ids[0, :3] = 4  # repeated ids accumulate
    r = rng.standard_normal((3, 7, 6)).astype(np.float32)
    (loss_r, e_r), g_r = ref.value_and_grad(p, ids=ids, R=r, backend="interp")
    np.testing.assert_array_equal(e_r, p["embedding/embeddings"][ids])
    for backend in ("interp", "cpu"):
        (loss, e), g = m.value_and_grad(p, ids=ids, R=r, backend=backend)
        np.testing.assert_array_equal(e, e_r)
        np.testing.assert_allclose(loss, loss_r, rtol=1e-5)
        np.testing.assert_allclose(g["embedding/embeddings"], g_r["embedding/embeddings"],
                                   rtol=1e-5, atol=1e-6)


def test_embedding_lookup_tf1_names(rng):
    def f(ids):
        t = rc.param("table", (5, 2), "random_uniform")
        return rc.embedding_lookup(t, ids), rc.nn.embedding_lookup(t, ids)

    m = rc.Model(f, {"ids": rc.Input((None,), "i64")})
    p = m.init(0)
    a, b = m(p, ids=np.array([4, 0, 4]), backend="interp")
    np.testing.assert_array_equal(a, p["table"][[4, 0, 4]])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_bad_computed_id_is_an_index_error(backend):
    """Ids computed in the graph are not covered by the input range check: the gather itself
    refuses them, with the same error on every backend."""
    def f(ids):
        t = rc.param("table", (5, 2), "random_uniform")
        return rc.embedding_lookup(t, ids + 3)

    m = rc.Model(f, {"ids": rc.Input((None,), "i32")})
    with pytest.raises(IndexOutOfRange, match="index 6 is out of range for an axis of size 5"):
        m(m.init(0), ids=np.array([0, 3], np.int32), backend=backend)
