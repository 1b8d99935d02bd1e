"""Small example models for the `rnncomp` command line (and the docs).

Each function returns an `rnncomp.Model`; point the CLI at one with `FILE:FUNCTION`:

    rnncomp inspect examples/models.py:lstm --stage traced
    rnncomp inspect examples/models.py:peephole --format svg -o peephole.svg
    rnncomp run examples/models.py:gru --batch 8 --time 20

Sizes are tiny on purpose: the printed graphs stay readable and every model runs in the
reference interpreter in milliseconds. Keyword arguments (e.g. `units`) can be set from the CLI
with `-k units=32`.
"""

from __future__ import annotations

import rnncomp as rc

# [batch, time, features]: batch and time are symbolic (B, T), bound when the model runs.
N_INPUTS = 3


def _seq(n_inputs: int = N_INPUTS) -> dict[str, rc.Input]:
    return {"X": rc.Input((None, None, n_inputs))}


def basic_rnn(units: int = 5, activation: str = "tanh") -> rc.Model:
    """tf.nn.dynamic_rnn(BasicRNNCell(units), X): outputs [B, T, units] and the final state."""

    def basic_rnn(X):
        return rc.dynamic_rnn(rc.BasicRNNCell(units, activation=activation), X)

    return rc.Model(basic_rnn, _seq())


def lstm(units: int = 4) -> rc.Model:
    """tf.nn.dynamic_rnn(BasicLSTMCell(units), X): outputs and the final (c, h) state."""

    def lstm(X):
        return rc.dynamic_rnn(rc.BasicLSTMCell(units), X)

    return rc.Model(lstm, _seq())


def peephole(units: int = 4) -> rc.Model:
    """LSTMCell(units, use_peepholes=True) unrolled by dynamic_rnn."""

    def peephole(X):
        return rc.dynamic_rnn(rc.LSTMCell(units, use_peepholes=True), X)

    return rc.Model(peephole, _seq())


def gru(units: int = 4, reset_after: bool = False) -> rc.Model:
    """GRUCell(units); reset_after=False is TF1's GRUCell, True the cuDNN/PyTorch form."""

    def gru(X):
        return rc.dynamic_rnn(rc.GRUCell(units, reset_after=reset_after), X)

    return rc.Model(gru, _seq())


def varlen_lstm(units: int = 4) -> rc.Model:
    """An LSTM over a padded batch with sequence_length L [B] (TF1 dynamic_rnn semantics)."""

    def varlen_lstm(X, L):
        return rc.dynamic_rnn(rc.BasicLSTMCell(units), X, sequence_length=L)

    return rc.Model(varlen_lstm, {**_seq(), "L": rc.Input((None,), "i32")})


def static_rnn(units: int = 5, steps: int = 2) -> rc.Model:
    """tf.nn.static_rnn over `steps` inputs X0, X1, ...: one cell copy per step in the IR."""

    def static_rnn(**xs):
        outputs, state = rc.static_rnn(rc.BasicRNNCell(units), [xs[k] for k in sorted(xs)])
        return outputs, state

    return rc.Model(static_rnn, {f"X{k}": rc.Input((None, N_INPUTS)) for k in range(steps)})


def deep(units: int = 4, layers: int = 3, keep_prob: float = 0.5) -> rc.Model:
    """MultiRNNCell of `layers` GRU cells, each wrapped in DropoutWrapper (active in training
    only), with an OutputProjectionWrapper to one output per step."""

    def deep(X):
        cells = [rc.DropoutWrapper(rc.GRUCell(units, reset_after=True, name=f"gru_{k}"),
                                   input_keep_prob=keep_prob)
                 for k in range(layers)]
        cell = rc.OutputProjectionWrapper(rc.MultiRNNCell(cells), 1)
        return rc.dynamic_rnn(cell, X)

    return rc.Model(deep, _seq())


def custom_cell(units: int = 4, eps: float = 1e-5) -> rc.Model:
    """A layer-normalized LSTM written as an RNNCell subclass (see docs/custom_cell_tutorial.md)."""
    return rc.Model(lambda X: rc.dynamic_rnn(LayerNormLSTMCell(units, eps), X), _seq(),
                    name="custom_cell")


def layer_norm(x: rc.Node, gain: rc.Node, shift: rc.Node, eps: float) -> rc.Node:
    """Normalize each row of x [B, H] to zero mean and unit variance, then scale and shift."""
    mu = rc.mean(x, axis=1, keepdims=True)
    var = rc.mean(rc.square(x - mu), axis=1, keepdims=True)
    return (x - mu) / rc.sqrt(var + eps) * gain + shift


class LayerNormLSTMCell(rc.RNNCell):
    """LSTM with layer normalization of each gate pre-activation and of the cell state
    (Ba et al. 2016), in the same DSL as the built-in cells."""

    default_name = "ln_lstm_cell"

    def __init__(self, num_units: int, eps: float = 1e-5, name: str | None = None):
        super().__init__(name)
        self.num_units = num_units
        self.eps = eps

    @property
    def state_size(self):
        return rc.LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self):
        return self.num_units

    def call(self, x, state):
        c, h = state
        H = self.num_units
        kernel = self.param("kernel", (x.shape[1] + H, 4 * H))
        z = rc.matmul(rc.concat([x, h], axis=1), kernel)
        gates = []
        for k, part in enumerate(rc.split(z, 4, axis=1)):
            with rc.variable_scope(f"ln_{'ijfo'[k]}"):
                g = self.param("gain", (H,), "ones")
                b = self.param("shift", (H,), "zeros")
            gates.append(layer_norm(part, g, b, self.eps))
        i, j, f, o = gates
        new_c = rc.sigmoid(f + 1.0) * c + rc.sigmoid(i) * rc.tanh(j)
        with rc.variable_scope("ln_c"):
            gc = self.param("gain", (H,), "ones")
            bc = self.param("shift", (H,), "zeros")
        new_h = rc.sigmoid(o) * rc.tanh(layer_norm(new_c, gc, bc, self.eps))
        return new_h, rc.LSTMStateTuple(new_c, new_h)


def zoneout(units: int = 4, z: float = 0.1) -> rc.Model:
    """A GRU with zoneout (Krueger et al. 2016) as a FunctionCell-style wrapper: in training each
    unit keeps its previous value with probability z; at inference the update is averaged."""
    inner = {}

    def zoneout_cell(x, h):
        cell = inner.setdefault("gru", rc.GRUCell(units, reset_after=True))
        out, new_h = cell(x, h)
        keep = rc.random_uniform_like(new_h) < z
        train_h = rc.where(keep, h, new_h)
        infer_h = z * h + (1.0 - z) * new_h
        h2 = rc.where(rc.training_flag(), train_h, infer_h)
        return h2, h2

    def zoneout_model(X):
        return rc.dynamic_rnn(rc.FunctionCell(zoneout_cell, units, name="zoneout"), X)

    return rc.Model(zoneout_model, _seq())


def lstm_graph(units: int = 4) -> rc.Graph:
    """The traced graph of `lstm()` alone (the CLI accepts a Graph as well as a Model)."""
    return lstm(units).graph


def lstm_loss(units: int = 4) -> rc.Model:
    """An LSTM with a scalar loss (mean squared output) first: `--stage backward` then shows
    grad_graph(loss) rather than the general vector-Jacobian product."""

    def lstm_loss(X):
        outputs, state = rc.dynamic_rnn(rc.BasicLSTMCell(units), X)
        return rc.mean(rc.square(outputs)), outputs

    return rc.Model(lstm_loss, _seq())
