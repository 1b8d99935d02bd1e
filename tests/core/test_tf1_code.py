"""A TF1 user's code runs as written: the RNN chapter's code patterns (Hands-On Machine Learning,
chapter 14, TF1) with `tf.` replaced by `rc.` and nothing else changed. Placeholders become
`rc.Input` declarations (the argument names of the model function), sessions become Model
calls (`m(params, **feed_dict)`), and `tf.Variable(...)` becomes `rc.param(...)`.

The numbers of each pattern are checked against the others (manual unroll == static_rnn ==
dynamic_rnn) and against NumPy; the options themselves are checked against NumPy oracles in
test_tf1_options.py, and against TensorFlow itself (when installed) in test_tf1_tensorflow.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.train import Trainer, optim

n_inputs, n_neurons, n_steps = 3, 5, 2
X0_batch = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)  # t = 0
X1_batch = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)  # t = 1
X_batch = np.stack([X0_batch, X1_batch], axis=1)  # [4, 2, 3]


def _run_ok(m, params=None, **feed):
    params = m.init(42) if params is None else params
    return params, m(params, **feed)


# --- "Basic RNNs in TensorFlow": the manual unroll, static_rnn, packing, dynamic_rnn ------------
def manual_unroll(X0, X1):
    Wx = rc.param("Wx", [n_inputs, n_neurons], rc.random_normal_initializer())
    Wy = rc.param("Wy", [n_neurons, n_neurons], rc.random_normal_initializer())
    b = rc.param("b", [1, n_neurons], rc.zeros_initializer())

    Y0 = rc.tanh(rc.matmul(X0, Wx) + b)
    Y1 = rc.tanh(rc.matmul(Y0, Wy) + rc.matmul(X1, Wx) + b)
    return Y0, Y1


def static_unroll(X0, X1):
    basic_cell = rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
    output_seqs, states = rc.contrib.rnn.static_rnn(basic_cell, [X0, X1], dtype=rc.float32)
    Y0, Y1 = output_seqs
    return Y0, Y1, states


def packed_static_unroll(X):
    X_seqs = rc.unstack(rc.transpose(X, perm=[1, 0, 2]))
    basic_cell = rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
    output_seqs, states = rc.contrib.rnn.static_rnn(basic_cell, X_seqs, dtype=rc.float32)
    outputs = rc.transpose(rc.stack(output_seqs), perm=[1, 0, 2])
    return outputs, states


def dynamic_unroll(X):
    basic_cell = rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
    outputs, states = rc.nn.dynamic_rnn(basic_cell, X, dtype=rc.float32)
    return outputs, states


def test_manual_static_packed_and_dynamic_unrolls_agree():
    X0 = rc.Input([None, n_inputs])  # tf.placeholder(tf.float32, [None, n_inputs])
    X1 = rc.Input([None, n_inputs])
    X = rc.Input([None, n_steps, n_inputs])
    manual = rc.Model(manual_unroll, {"X0": X0, "X1": X1})
    static = rc.Model(static_unroll, {"X0": X0, "X1": X1})
    packed = rc.Model(packed_static_unroll, {"X": X})
    dynamic = rc.Model(dynamic_unroll, {"X": X})

    p = static.init(0)
    assert sorted(p) == ["rnn/basic_rnn_cell/bias", "rnn/basic_rnn_cell/kernel"]
    assert packed.init(0).keys() == p.keys() == dynamic.init(0).keys()
    kernel = p["rnn/basic_rnn_cell/kernel"]
    pm = {"Wx": kernel[:n_inputs], "Wy": kernel[n_inputs:], "b": p["rnn/basic_rnn_cell/bias"][None]}

    Y0_val, Y1_val = manual(pm, X0=X0_batch, X1=X1_batch)
    s0, s1, s_state = static(p, X0=X0_batch, X1=X1_batch)
    outputs_val, p_state = packed(p, X=X_batch)
    d_out, d_state = dynamic(p, X=X_batch)
    for y in (s0, outputs_val[:, 0], d_out[:, 0]):
        np.testing.assert_allclose(y, Y0_val, rtol=1e-5, atol=1e-6)
    for y in (s1, s_state, outputs_val[:, 1], p_state, d_out[:, 1], d_state):
        np.testing.assert_allclose(y, Y1_val, rtol=1e-5, atol=1e-6)
    w = manual.init(1)["Wx"]
    assert abs(w.std() - 1.0) < 0.5  # tf.random_normal: stddev 1


# --- "Handling Variable Length Input Sequences" ---------------------------------------------------
def test_variable_length_sequences():
    def model(X, seq_length):
        basic_cell = rc.nn.rnn_cell.BasicRNNCell(num_units=n_neurons)
        outputs, states = rc.nn.dynamic_rnn(basic_cell, X, dtype=rc.float32,
                                            sequence_length=seq_length)
        return outputs, states

    m = rc.Model(model, {"X": rc.Input([None, n_steps, n_inputs]),
                         "seq_length": rc.Input([None], rc.int32)})
    seq_length_batch = np.array([2, 1, 2, 2])
    outputs_val, states_val = m(m.init(0), X=X_batch, seq_length=seq_length_batch)
    np.testing.assert_array_equal(outputs_val[1, 1], 0.0)  # past the second instance's length
    np.testing.assert_array_equal(states_val[1], outputs_val[1, 0])
    np.testing.assert_array_equal(states_val[0], outputs_val[0, 1])
    # a Python list is accepted as the fed value too
    o2, _ = m(m.init(0), X=X_batch, seq_length=[2, 1, 2, 2])
    np.testing.assert_array_equal(o2, outputs_val)


# --- "Training a Sequence Classifier" (MNIST rows as sequences) ---------------------------------
def mnist_classifier(X, y, n_outputs=10, learning_rate=0.001):
    basic_cell = rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
    outputs, states = rc.nn.dynamic_rnn(basic_cell, X, dtype=rc.float32)

    logits = rc.layers.dense(states, n_outputs)
    xentropy = rc.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    loss = rc.reduce_mean(xentropy)
    return loss, logits


def test_sequence_classifier_trains(rng):
    m = rc.Model(mnist_classifier, {"X": rc.Input([None, 4, 6]), "y": rc.Input([None], rc.int32)})
    assert sorted(m.init()) == ["dense/bias", "dense/kernel", "rnn/basic_rnn_cell/bias",
                                "rnn/basic_rnn_cell/kernel"]
    X = rng.standard_normal((16, 4, 6)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    p = m.init(0)
    loss0, logits = m(p, X=X, y=y)
    # the same loss as tf.losses.sparse_softmax_cross_entropy(labels, logits), TF1's order
    ref = rc.Model(lambda Z, y: rc.losses.sparse_softmax_cross_entropy(y, Z),
                   {"Z": rc.Input([None, 10]), "y": rc.Input([None], rc.int32)})
    np.testing.assert_allclose(ref({}, Z=logits, y=y), loss0, rtol=1e-6)
    trainer = Trainer(m, loss_output=0, optimizer=optim.Adam(0.01))
    state = trainer.init(p)
    params, opt_state = state.params, state.opt_state
    for _ in range(30):
        params, opt_state, loss, _ = trainer.step(params, opt_state, {"X": X, "y": y})
    assert loss < 0.7 * loss0


# --- "Training to Predict Time Series" ------------------------------------------------------------
def time_series_projection(X, y, n_outputs=1):
    cell = rc.contrib.rnn.OutputProjectionWrapper(
        rc.contrib.rnn.BasicRNNCell(num_units=n_neurons, activation=rc.nn.relu),
        output_size=n_outputs)
    outputs, states = rc.nn.dynamic_rnn(cell, X, dtype=rc.float32)
    loss = rc.reduce_mean(rc.square(outputs - y))
    return loss, outputs


def time_series_dense(X, y, n_outputs=1):
    cell = rc.contrib.rnn.BasicRNNCell(num_units=n_neurons, activation=rc.nn.relu)
    rnn_outputs, states = rc.nn.dynamic_rnn(cell, X, dtype=rc.float32)
    stacked_rnn_outputs = rc.reshape(rnn_outputs, [-1, n_neurons])
    stacked_outputs = rc.layers.dense(stacked_rnn_outputs, n_outputs)
    outputs = rc.reshape(stacked_outputs, [-1, n_steps, n_outputs])
    loss = rc.reduce_mean(rc.square(outputs - y))
    return loss, outputs


def test_time_series_both_ways(rng):
    inputs = {"X": rc.Input([None, n_steps, 1]), "y": rc.Input([None, n_steps, 1])}
    m = rc.Model(time_series_projection, inputs)
    assert sorted(m.init()) == [
        "rnn/output_projection_wrapper/basic_rnn_cell/bias",
        "rnn/output_projection_wrapper/basic_rnn_cell/kernel",
        "rnn/output_projection_wrapper/bias", "rnn/output_projection_wrapper/kernel"]
    X, y = rng.standard_normal((4, n_steps, 1)), rng.standard_normal((4, n_steps, 1))
    p = m.init(0)
    loss, outputs = m(p, X=X, y=y)
    np.testing.assert_allclose(loss, np.mean((outputs - y) ** 2), rtol=1e-6)
    # the book's second way reshapes to [-1, n_neurons]: -1 would hide the symbolic batch, so
    # rnncomp says what to do instead; with a static batch it runs as written
    with pytest.raises(rc.ShapeError, match="rc.layers.dense and matmul act on the last axis"):
        rc.Model(time_series_dense, inputs)
    md = rc.Model(time_series_dense, {"X": rc.Input([4, n_steps, 1]),
                                      "y": rc.Input([4, n_steps, 1])})
    pd = md.init(0)
    pd = {"rnn/basic_rnn_cell/kernel": p["rnn/output_projection_wrapper/basic_rnn_cell/kernel"],
          "rnn/basic_rnn_cell/bias": p["rnn/output_projection_wrapper/basic_rnn_cell/bias"],
          "dense/kernel": p["rnn/output_projection_wrapper/kernel"],
          "dense/bias": p["rnn/output_projection_wrapper/bias"]}
    loss_d, outputs_d = md(pd, X=X, y=y)
    np.testing.assert_allclose(outputs_d, outputs, rtol=1e-5, atol=1e-6)


# --- "Deep RNNs", dropout, LSTM, peepholes, GRU ---------------------------------------------------
def deep_rnn(X, n_layers=3):
    layers = [rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
              for layer in range(n_layers)]
    multi_layer_cell = rc.contrib.rnn.MultiRNNCell(layers)
    outputs, states = rc.nn.dynamic_rnn(multi_layer_cell, X, dtype=rc.float32)
    return outputs, states


def deep_rnn_dropout(X, n_layers=3, keep_prob=0.5):
    cells = [rc.contrib.rnn.BasicRNNCell(num_units=n_neurons)
             for layer in range(n_layers)]
    cells_drop = [rc.contrib.rnn.DropoutWrapper(cell, input_keep_prob=keep_prob)
                  for cell in cells]
    multi_layer_cell = rc.contrib.rnn.MultiRNNCell(cells_drop)
    rnn_outputs, states = rc.nn.dynamic_rnn(multi_layer_cell, X, dtype=rc.float32)
    return rnn_outputs, states


def lstm_classifier(X, n_layers=3, n_outputs=10):
    lstm_cells = [rc.contrib.rnn.BasicLSTMCell(num_units=n_neurons)
                  for layer in range(n_layers)]
    multi_cell = rc.contrib.rnn.MultiRNNCell(lstm_cells)
    outputs, states = rc.nn.dynamic_rnn(multi_cell, X, dtype=rc.float32)
    top_layer_h_state = states[-1][1]
    logits = rc.layers.dense(top_layer_h_state, n_outputs, name="softmax")
    return logits, states


def peephole(X):
    lstm_cell = rc.contrib.rnn.LSTMCell(num_units=n_neurons, use_peepholes=True)
    return rc.nn.dynamic_rnn(lstm_cell, X, dtype=rc.float32)


def gru(X):
    gru_cell = rc.contrib.rnn.GRUCell(num_units=n_neurons)
    return rc.nn.dynamic_rnn(gru_cell, X, dtype=rc.float32)


def test_deep_rnn_and_dropout_in_training_only():
    inp = {"X": rc.Input([None, n_steps, n_inputs])}
    p, (outputs, states) = _run_ok(rc.Model(deep_rnn, inp), X=X_batch)
    assert len(states) == 3 and outputs.shape == (4, n_steps, n_neurons)
    md = rc.Model(deep_rnn_dropout, inp)
    assert md.init(0).keys() == p.keys()
    test_out, _ = md(p, X=X_batch)  # is_training False: no dropout, the same as deep_rnn
    np.testing.assert_allclose(test_out, outputs, rtol=1e-6)
    train_out, _ = md(p, X=X_batch, training=True, seed=1)
    assert not np.allclose(train_out, outputs)


def test_lstm_peephole_and_gru_cells():
    inp = {"X": rc.Input([None, n_steps, n_inputs])}
    p, (logits, states) = _run_ok(rc.Model(lstm_classifier, inp), X=X_batch)
    assert "softmax/kernel" in p and "rnn/multi_rnn_cell/cell_2/basic_lstm_cell/kernel" in p
    assert logits.shape == (4, 10) and isinstance(states[-1], rc.LSTMStateTuple)
    p, (outputs, st) = _run_ok(rc.Model(peephole, inp), X=X_batch)
    assert {"rnn/lstm_cell/w_i_diag", "rnn/lstm_cell/w_f_diag", "rnn/lstm_cell/w_o_diag"} <= set(p)
    p, (outputs, st) = _run_ok(rc.Model(gru, inp), X=X_batch)
    assert sorted(p) == ["rnn/gru_cell/candidate/bias", "rnn/gru_cell/candidate/kernel",
                         "rnn/gru_cell/gates/bias", "rnn/gru_cell/gates/kernel"]  # TF1's form
    np.testing.assert_array_equal(st, outputs[:, -1])


# --- the TF1 names beyond the chapter's listings (issue items 1-6) --------------------------------
def test_every_rnn_cell_name_of_tf1_is_here():
    for ns in (rc.nn.rnn_cell, rc.contrib.rnn):
        for name in ("RNNCell", "BasicRNNCell", "BasicLSTMCell", "LSTMCell", "GRUCell",
                     "MultiRNNCell", "DropoutWrapper", "OutputProjectionWrapper",
                     "LSTMStateTuple"):
            assert getattr(ns, name) is getattr(rc, name)
    assert rc.nn.static_rnn is rc.contrib.rnn.static_rnn is rc.static_rnn
    assert rc.nn.dynamic_rnn is rc.dynamic_rnn
    assert "dynamic_rnn" in repr(rc.nn)


def test_tf1_keyword_arguments_run():
    def model(X):
        cells = [
            rc.nn.rnn_cell.BasicRNNCell(n_neurons, activation=None, reuse=None, name="a",
                                        dtype=rc.float32),
            rc.nn.rnn_cell.BasicLSTMCell(n_neurons, forget_bias=1.0, state_is_tuple=True,
                                         activation=None, reuse=None, name="b",
                                         dtype=rc.float32),
            rc.nn.rnn_cell.LSTMCell(n_neurons, use_peepholes=True, cell_clip=3.0,
                                    initializer=rc.glorot_uniform_initializer(), num_proj=4,
                                    proj_clip=2.0, num_unit_shards=None, num_proj_shards=None,
                                    forget_bias=1.0, state_is_tuple=True, activation=None,
                                    reuse=None, name="c", dtype=rc.float32),
            rc.nn.rnn_cell.GRUCell(n_neurons, activation=None, reuse=None,
                                   kernel_initializer=None, bias_initializer=None, name="d",
                                   dtype=rc.float32),
        ]
        cells = [rc.nn.rnn_cell.DropoutWrapper(c, input_keep_prob=1.0, output_keep_prob=0.9,
                                               state_keep_prob=0.8, variational_recurrent=True,
                                               input_size=None, dtype=rc.float32, seed=3,
                                               dropout_state_filter_visitor=None)
                 for c in cells]
        cell = rc.nn.rnn_cell.OutputProjectionWrapper(rc.nn.rnn_cell.MultiRNNCell(cells), 2,
                                                      activation=None, reuse=None)
        return rc.nn.dynamic_rnn(cell, X, sequence_length=None, initial_state=None,
                                 dtype=rc.float32, parallel_iterations=32, swap_memory=True,
                                 time_major=False, scope="rnn")

    m = rc.Model(model, {"X": rc.Input([None, None, n_inputs])})
    p = m.init(0)
    assert p["rnn/output_projection_wrapper/multi_rnn_cell/cell_2/c/projection/kernel"].shape \
        == (n_neurons, 4)
    out, st = m(p, X=X_batch)
    assert out.shape == (4, n_steps, 2) and st[2].h.shape == (4, 4)
    out_t, _ = m(p, X=X_batch, training=True, seed=5)
    assert not np.allclose(out_t, out)


def test_swap_memory_and_parallel_iterations_change_nothing():
    def model(X, **kw):
        return rc.nn.dynamic_rnn(rc.nn.rnn_cell.GRUCell(n_neurons), X, dtype=rc.float32, **kw)
    inp = {"X": rc.Input([None, None, n_inputs])}
    plain = rc.Model(model, inp)
    other = rc.Model(lambda X: model(X, parallel_iterations=1, swap_memory=True), inp)
    assert rc.pformat(plain.graph) == rc.pformat(other.graph)
