"""The built-in cells and wrappers every registry- and backend-driven test runs through: one
table, so a new cell or wrapper added here is covered by autodiff, pass and CPU-backend tests."""

from __future__ import annotations

import rnncomp as rc

BUILTIN_CELLS = {
    "rnn_tanh": lambda: rc.BasicRNNCell(3),
    "rnn_relu": lambda: rc.BasicRNNCell(3, activation="relu"),
    "basic_lstm": lambda: rc.BasicLSTMCell(3),
    "lstm_peep": lambda: rc.LSTMCell(3, use_peepholes=True),
    "gru_before": lambda: rc.GRUCell(3, reset_after=False),
    "gru_after": lambda: rc.GRUCell(3, reset_after=True),
    "multi_tuple": lambda: rc.MultiRNNCell([rc.BasicLSTMCell(3), rc.GRUCell(2, reset_after=False)]),
    "multi_concat": lambda: rc.MultiRNNCell([rc.BasicRNNCell(2), rc.LSTMCell(3, True)],
                                            state_is_tuple=False),
    "dropout": lambda: rc.DropoutWrapper(rc.BasicLSTMCell(3), input_keep_prob=0.7,
                                         output_keep_prob=0.8, state_keep_prob=0.9),
    "projection": lambda: rc.OutputProjectionWrapper(rc.GRUCell(3, reset_after=True), 2),
}
