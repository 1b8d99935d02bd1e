"""Model.predict / Model.evaluate (batched, outputs concatenated), rnncomp.accuracy, and the
keyword-only inputs' error message."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp import layers, losses


def _classifier(n_classes=4):
    def clf(X, y):
        _, h = rc.dynamic_rnn(rc.BasicRNNCell(5), X)
        logits = layers.dense(h, n_classes, name="logits")
        return {"loss": losses.sparse_softmax_cross_entropy(labels=y, logits=logits),
                "logits": logits, "pred": rc.argmax(logits, axis=-1)}

    return rc.Model(clf, {"X": rc.Input((None, None, 3)), "y": rc.Input((None,), "i64")})


@pytest.fixture
def data(rng):
    X = rng.standard_normal((23, 4, 3)).astype(np.float32)
    y = rng.integers(0, 4, 23).astype(np.int64)
    return X, y


def test_predict_concatenates_batches(data):
    X, y = data
    m = _classifier()
    p = m.init(0)
    whole = m(p, X=X, y=y, backend="interp")
    got = m.predict(p, batch_size=5, X=X, y=y, backend="interp")
    np.testing.assert_allclose(got["logits"], whole["logits"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["pred"], whole["pred"])
    assert got["pred"].dtype == np.int64
    # the scalar loss: the example-weighted mean of the batch means = the whole batch's mean
    np.testing.assert_allclose(got["loss"], whole["loss"], rtol=1e-5)
    # one output only; labels left out are filled with zeros
    logits = m.predict(p, batch_size=7, outputs="logits", X=X, backend="interp")
    np.testing.assert_allclose(logits, whole["logits"], rtol=1e-6, atol=1e-6)


def test_evaluate_accuracy(data):
    X, y = data
    m = _classifier()
    p = m.init(0)
    res = m.evaluate(p, labels=y, batch_size=6, X=X, y=y, backend="interp")
    logits = m(p, X=X, y=y, backend="interp")["logits"]
    assert res["n"] == 23
    assert res["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == y))
    assert res["accuracy"] == rc.accuracy(logits, y) == rc.accuracy(res["pred"], y)
    with pytest.raises(KeyError, match="logits=<name>"):
        m.evaluate(p, labels=y, logits="scores", X=X, y=y, backend="interp")


def test_accuracy_metric():
    assert rc.accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 0, 0])) == \
        pytest.approx(2 / 3)
    assert rc.accuracy(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="integer class ids"):
        rc.accuracy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="do not match"):
        rc.accuracy(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_predict_errors(data):
    X, y = data
    m = _classifier()
    p = m.init(0)
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(p, batch_size=0, X=X)
    with pytest.raises(rc.InputError, match="X=..."):
        m.predict(p, batch_size=4)
    with pytest.raises(rc.InputError, match="same number of examples"):
        m.predict(p, X=X, y=y[:5])


def test_positional_inputs_say_pass_by_name(data):
    X, y = data
    m = _classifier()
    p = m.init(0)
    for call in (lambda: m(p, X, y), lambda: m.value_and_grad(p, X, y),
                 lambda: m.predict(p, X), lambda: m.evaluate(p, X)):
        with pytest.raises(TypeError, match=r"pass inputs by name: X=\.\.\., y=\.\.\."):
            call()
