"""No Numba warnings reach users from generated code: compiling (afresh, in an empty kernel
cache) and running a model that exercises the GEMM helper on sliced weights (the split
concat([x, h]) @ W), an embedding gather/scatter-add, argmax and reductions, forward and
backward, emits no NumbaWarning (e.g. NumbaPerformanceWarning "np.vdot() is faster on
contiguous arrays", which views passed to np.dot used to cause)."""

from __future__ import annotations

import warnings

import numpy as np

import rnncomp as rc
from rnncomp import layers, losses


def test_compiling_and_running_emits_no_numba_warning(monkeypatch, tmp_path):
    from numba.core.errors import NumbaWarning

    monkeypatch.setenv("RNNCOMP_CACHE_DIR", str(tmp_path))  # a fresh compile, not a cache hit

    def model(X, ids, y):
        e = layers.embedding(ids, 30, 4)
        out, _ = rc.dynamic_rnn(rc.BasicLSTMCell(8), rc.concat([X, e], axis=-1))
        logits = layers.dense(rc.reduce_mean(out, axis=1), 5)
        return {"loss": losses.sparse_softmax_cross_entropy(labels=y, logits=logits),
                "pred": rc.argmax(logits, -1)}

    m = rc.Model(model, {"X": rc.Input((None, None, 3)), "ids": rc.Input((None, None), "i32"),
                         "y": rc.Input((None,), "i64")})
    p = m.init(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumbaWarning)
        for b in (2, 40):  # both branches of the GEMM helper (loops, BLAS)
            x = np.ones((b, 5, 3), np.float32)
            ids = np.zeros((b, 5), np.int32)
            y = np.zeros(b, np.int64)
            m.value_and_grad(p, output="loss", backend="cpu", X=x, ids=ids, y=y)
            m(p, backend="cpu", X=x, ids=ids, y=y)
