"""Optional: the same TF1 code run by TensorFlow (tf.compat.v1 graph mode) and by rnncomp, with
the same weights, gives the same outputs, states and gradients, and TF's variable names and
shapes are rnncomp's parameter names and shapes.

Each case is one function written against a module `tf`; it is called once with
`tf.compat.v1` and once with `rnncomp` (the `tf.` -> `rc.` replacement, literally). Skipped
when TensorFlow is not installed: TensorFlow is never a dependency of rnncomp. TF 2.16+ needs
the `tf_keras` package for the TF1 cells (TF_USE_LEGACY_KERAS=1 is set here).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.frontend.trace import flatten

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1
try:
    v1.nn.rnn_cell.LSTMCell  # noqa: B018
except (AttributeError, ImportError):  # pragma: no cover - depends on the installed TF
    pytest.skip("tf.compat.v1.nn.rnn_cell needs tf_keras with this TensorFlow",
                allow_module_level=True)

B, T, I, H = 3, 4, 2, 4


def lstm_all_options(tf, X, L):
    cell = tf.nn.rnn_cell.LSTMCell(H, True, 0.8, None, 3, 0.5)  # peepholes, clips, projection
    outputs, state = tf.nn.dynamic_rnn(cell, X, sequence_length=L, dtype=tf.float64)
    loss = tf.reduce_sum(tf.square(outputs)) + tf.reduce_sum(state.c * state.c)
    return loss, (outputs, state)


def gru_relu_positional(tf, X, L):
    cell = tf.nn.rnn_cell.GRUCell(H, tf.nn.relu)  # TF1's GRUCell: reset before
    outputs, state = tf.nn.dynamic_rnn(cell, X, sequence_length=L, dtype=tf.float64)
    return tf.reduce_sum(tf.square(outputs)) + tf.reduce_sum(state), (outputs, state)


def deep_concat_time_major(tf, X, L):
    cells = [tf.nn.rnn_cell.BasicLSTMCell(H, 0.5, False),
             tf.nn.rnn_cell.LSTMCell(H, use_peepholes=True, num_proj=3, cell_clip=1.0),
             tf.nn.rnn_cell.BasicRNNCell(H, tf.nn.relu)]
    cell = tf.nn.rnn_cell.MultiRNNCell(cells)
    Xt = tf.transpose(X, perm=[1, 0, 2])
    outputs, state = tf.nn.dynamic_rnn(cell, Xt, L, None, tf.float64, 16, True, True)
    loss = tf.reduce_sum(tf.square(outputs)) + tf.reduce_sum(state[0]) + tf.reduce_sum(state[1].h)
    return loss, (outputs, state)


def static_classifier(tf, X, L, Y):
    X_seqs = tf.unstack(tf.transpose(X, perm=[1, 0, 2]))
    cell = tf.nn.rnn_cell.GRUCell(H)
    output_seqs, state = tf.nn.static_rnn(cell, X_seqs, dtype=tf.float64, sequence_length=L)
    outputs = tf.transpose(tf.stack(output_seqs), perm=[1, 0, 2])
    logits = tf.layers.dense(state, 5, name="logits")
    xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=Y, logits=logits)
    loss = tf.reduce_mean(xentropy) + tf.reduce_sum(outputs)
    return loss, (outputs, state, logits)


def tf_losses(tf, X, L, Y):
    cell = tf.nn.rnn_cell.BasicRNNCell(H)
    outputs, state = tf.nn.dynamic_rnn(cell, X, sequence_length=L, dtype=tf.float64)
    logits = tf.layers.dense(state, 5)
    # (TF's tf.losses.* return float32 whatever the inputs: cast back)
    loss = (tf.cast(tf.losses.sparse_softmax_cross_entropy(Y, logits), tf.float64)
            + tf.cast(tf.losses.mean_squared_error(tf.square(state), state), tf.float64))
    return loss, (outputs, logits)


CASES = {f.__name__: f for f in (lstm_all_options, gru_relu_positional, deep_concat_time_major,
                                 static_classifier, tf_losses)}
# TF's tf.losses.* round their mean through float32 (about 1e-8 relative in float64)
RTOL = {"tf_losses": 1e-6}


def _feeds(rng, case):
    feeds = {"X": rng.standard_normal((B, T, I)), "L": np.array([4, 1, 3], np.int32)}
    if "Y" in case.__code__.co_varnames[:case.__code__.co_argcount]:
        feeds["Y"] = rng.integers(0, 5, B).astype(np.int32)
    return feeds


def _run_tf(case, feeds, params):
    g = tf.Graph()
    with g.as_default():
        ph = {"X": v1.placeholder(tf.float64, [None, T, I]), "L": v1.placeholder(tf.int32, [None])}
        if "Y" in feeds:
            ph["Y"] = v1.placeholder(tf.int32, [None])
        loss, outs = case(v1, **ph)
        variables = {v.name[:-2]: v for v in v1.trainable_variables()}
        names = sorted(variables)
        grads = v1.gradients(loss, [variables[k] for k in names] + [ph["X"]])
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            shapes = {k: tuple(v.shape.as_list()) for k, v in variables.items()}
            for k in names:
                if k in params:
                    variables[k].load(params[k], sess)
            got_loss, got_outs, got_grads = sess.run(
                [loss, outs, grads], {ph[k]: v for k, v in feeds.items()})
    return shapes, got_loss, got_outs, dict(zip(names + ["X"], got_grads))


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_code_same_numbers_as_tensorflow(name, rng):
    case = CASES[name]
    feeds = _feeds(rng, case)
    inputs = {"X": rc.Input((None, T, I)), "L": rc.Input((None,), rc.int32)}
    if "Y" in feeds:
        inputs["Y"] = rc.Input((None,), rc.int32)
    m = rc.Model(lambda **kw: case(rc, **kw), inputs, dtype="f64")
    params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in m.init(0).items()}
    shapes, tf_loss, tf_outs, tf_grads = _run_tf(case, feeds, params)
    assert shapes == {k: v.shape for k, v in params.items()}, "TF variables != rnncomp params"
    (loss, outs), grads = m.value_and_grad(params, wrt=list(params) + ["X"], **feeds)
    rtol = RTOL.get(name, 1e-9)
    np.testing.assert_allclose(loss, tf_loss, rtol=rtol)
    ours, theirs = flatten(outs)[0], flatten(tf_outs)[0]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(g, tf_grads[k], rtol=10 * rtol, atol=1e-11, err_msg=k)
