"""Built-in cells and wrappers, with TF1 names and meaning, written in the same DSL users use.

Parameter layout (documented in docs/parameters.md): the TF1 convention of one kernel over the
concatenation [x, h]. The optimizer splits `concat([x, h]) @ kernel` into `x @ kernel[:I]` (hoisted
out of the time loop as one GEMM) and `h @ kernel[I:]` (the recurrent GEMM).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from . import dsl
from ..ir.dtypes import DType
from ..ir.graph import Node, shape_str
from .trace import TraceError, current, flatten, param, unflatten, variable_scope

LSTMStateTuple = namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "The (c, h) state of an LSTM cell, as in TF1."

_ACTIVATIONS: dict[str, Callable[[Node], Node]] = {
    "tanh": dsl.tanh,
    "relu": dsl.relu,
    "sigmoid": dsl.sigmoid,
}


def get_activation(act: str | Callable[[Node], Node]) -> Callable[[Node], Node]:
    if callable(act):
        return act
    if act not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, "
                         f"received {act!r}")
    return _ACTIVATIONS[act]


def _check_units(num_units: Any) -> int:
    if not isinstance(num_units, int) or isinstance(num_units, bool) or num_units <= 0:
        raise ValueError(f"num_units: expected a positive int, received {num_units!r}")
    return num_units


def _input_size(x: Node, cell: str) -> int:
    if x.ndim != 2:
        raise ValueError(f"{cell}: inputs must be [batch, features], received "
                         f"[{shape_str(x.shape)}]")
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ValueError(f"{cell}: the feature dimension must be static, received {d!r}")
    return d


class RNNCell:
    """Base class: subclass and implement `state_size`, `output_size` and `call(x, state)`.

    `state_size` is an int or a (nested) tuple of ints; the state passed to `call` has the same
    structure with arrays of shape [batch, size]. Parameters created with `self.param(...)` are
    named under the cell's scope and reused when the cell is called again (e.g. each step of
    static_rnn).
    """

    default_name = "rnn_cell"

    def __init__(self, name: str | None = None):
        self.name = name or self.default_name

    @property
    def state_size(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define state_size")

    @property
    def output_size(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define output_size")

    def call(self, inputs: Node, state: Any) -> tuple[Node, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define call(inputs, state)")

    def param(self, name: str, shape, init="glorot_uniform") -> Node:
        return param(name, shape, init, owner=self)

    def zero_state(self, batch_size: int | str, dtype=None) -> Any:
        dt = dtype if dtype is not None else current().dtype
        sizes, tree = flatten(self.state_size)
        return unflatten(tree, [dsl.zeros((batch_size, s), dt) for s in sizes])

    def __call__(self, inputs: Node, state: Any, scope: str | None = None) -> tuple[Node, Any]:
        with variable_scope(scope or self.name):
            return self.call(inputs, state)


class FunctionCell(RNNCell):
    """A custom cell from a plain function fn(x, state) -> (output, new_state)."""

    default_name = "cell"

    def __init__(self, fn: Callable[[Node, Any], tuple[Node, Any]], state_size: Any,
                 output_size: int | None = None, name: str | None = None):
        super().__init__(name or getattr(fn, "__name__", "cell"))
        self.fn = fn
        self._state_size = state_size
        self._output_size = output_size

    @property
    def state_size(self):
        return self._state_size

    @property
    def output_size(self):
        if self._output_size is None:
            sizes, _ = flatten(self._state_size)
            return sizes[-1]
        return self._output_size

    def call(self, inputs, state):
        return self.fn(inputs, state)


class BasicRNNCell(RNNCell):
    """h' = act([x, h] @ kernel + bias); output = state. act: tanh (default) or relu."""

    default_name = "basic_rnn_cell"

    def __init__(self, num_units: int, activation: str | Callable = "tanh",
                 name: str | None = None):
        super().__init__(name)
        self.num_units = _check_units(num_units)
        self.activation = get_activation(activation)

    @property
    def state_size(self):
        return self.num_units

    @property
    def output_size(self):
        return self.num_units

    def call(self, inputs, state):
        i = _input_size(inputs, self.name)
        H = self.num_units
        kernel = self.param("kernel", (i + H, H))
        bias = self.param("bias", (H,), "zeros")
        h = self.activation(dsl.matmul(dsl.concat([inputs, state], 1), kernel) + bias)
        return h, h


class BasicLSTMCell(RNNCell):
    """TF1 BasicLSTMCell: gates i, j, f, o from [x, h] @ kernel + bias; forget_bias added to f."""

    default_name = "basic_lstm_cell"

    def __init__(self, num_units: int, forget_bias: float = 1.0, activation="tanh",
                 name: str | None = None, state_is_tuple: bool = True):
        super().__init__(name)
        self.num_units = _check_units(num_units)
        self.forget_bias = float(forget_bias)
        self.activation = get_activation(activation)
        if not state_is_tuple:
            raise ValueError("state_is_tuple: only True is supported for LSTM cells (TF1 "
                             "deprecated False); received False")
        self.use_peepholes = False

    @property
    def state_size(self):
        return LSTMStateTuple(self.num_units, self.num_units)

    @property
    def output_size(self):
        return self.num_units

    def call(self, inputs, state):
        if not isinstance(state, tuple) or len(state) != 2:
            raise TraceError(f"{self.name}: state must be an LSTMStateTuple (c, h), received "
                             f"{type(state).__name__}")
        c, h = state
        isz = _input_size(inputs, self.name)
        H = self.num_units
        kernel = self.param("kernel", (isz + H, 4 * H))
        bias = self.param("bias", (4 * H,), "zeros")
        z = dsl.matmul(dsl.concat([inputs, h], 1), kernel) + bias
        zi, zj, zf, zo = dsl.split(z, 4, axis=1)
        act = self.activation
        if self.use_peepholes:
            wi = self.param("w_i_diag", (H,))
            wf = self.param("w_f_diag", (H,))
            wo = self.param("w_o_diag", (H,))
            i = dsl.sigmoid(zi + wi * c)
            f = dsl.sigmoid(zf + self.forget_bias + wf * c)
            new_c = f * c + i * act(zj)
            o = dsl.sigmoid(zo + wo * new_c)
        else:
            i = dsl.sigmoid(zi)
            f = dsl.sigmoid(zf + self.forget_bias)
            new_c = f * c + i * act(zj)
            o = dsl.sigmoid(zo)
        new_h = o * act(new_c)
        return new_h, LSTMStateTuple(new_c, new_h)


class LSTMCell(BasicLSTMCell):
    """TF1 LSTMCell: BasicLSTMCell plus optional peepholes (w_i_diag, w_f_diag, w_o_diag)."""

    default_name = "lstm_cell"

    def __init__(self, num_units: int, use_peepholes: bool = False, forget_bias: float = 1.0,
                 activation="tanh", name: str | None = None, state_is_tuple: bool = True,
                 **unsupported):
        if unsupported:
            raise ValueError(f"LSTMCell: unsupported options {sorted(unsupported)} (supported: "
                             f"num_units, use_peepholes, forget_bias, activation, name)")
        super().__init__(num_units, forget_bias, activation, name, state_is_tuple)
        if not isinstance(use_peepholes, bool):
            raise ValueError(f"use_peepholes: expected True or False, received {use_peepholes!r}")
        self.use_peepholes = use_peepholes


class GRUCell(RNNCell):
    """GRU with gates r (reset) and u (update); h' = u*h + (1-u)*c.

    reset_after=False: TF1 GRUCell, r applied to h before the candidate matmul.
    reset_after=True: the cuDNN / PyTorch form, r applied to (h @ K_h + recurrent_bias).
    The choice is explicit: there is no default, since the two forms compute different things.
    """

    default_name = "gru_cell"

    def __init__(self, num_units: int, reset_after: bool | None = None, activation="tanh",
                 name: str | None = None):
        super().__init__(name)
        self.num_units = _check_units(num_units)
        if reset_after is None:
            raise ValueError("GRUCell: reset_after is required: pass reset_after=False (TF1 "
                             "GRUCell: reset before the recurrent matmul) or reset_after=True "
                             "(cuDNN/PyTorch form); received None")
        if not isinstance(reset_after, bool):
            raise ValueError(f"reset_after: expected True or False, received {reset_after!r}")
        self.reset_after = reset_after
        self.activation = get_activation(activation)

    @property
    def state_size(self):
        return self.num_units

    @property
    def output_size(self):
        return self.num_units

    def call(self, inputs, state):
        isz = _input_size(inputs, self.name)
        H = self.num_units
        h = state
        with variable_scope("gates"):
            gk = self.param("kernel", (isz + H, 2 * H))
            gb = self.param("bias", (2 * H,), "ones")
        with variable_scope("candidate"):
            ck = self.param("kernel", (isz + H, H))
            cb = self.param("bias", (H,), "zeros")
            if self.reset_after:
                rb = self.param("recurrent_bias", (H,), "zeros")
        ru = dsl.sigmoid(dsl.matmul(dsl.concat([inputs, h], 1), gk) + gb)
        r, u = dsl.split(ru, 2, axis=1)
        if self.reset_after:
            kx, kh = dsl.split(ck, [isz, H], axis=0)
            c = self.activation(dsl.matmul(inputs, kx) + cb + r * (dsl.matmul(h, kh) + rb))
        else:
            c = self.activation(dsl.matmul(dsl.concat([inputs, r * h], 1), ck) + cb)
        new_h = u * h + (1.0 - u) * c
        return new_h, new_h


class MultiRNNCell(RNNCell):
    """Stacked cells; state is a tuple per layer, or one concatenated array if not tuple."""

    default_name = "multi_rnn_cell"

    def __init__(self, cells: Sequence[RNNCell], state_is_tuple: bool = True,
                 name: str | None = None):
        super().__init__(name)
        cells = list(cells)
        if not cells:
            raise ValueError("cells: expected at least one cell, received an empty list")
        if len({id(c) for c in cells}) != len(cells):
            raise ValueError("cells: the same cell object appears twice; create one cell per "
                             "layer (TF1 shares nothing between layers)")
        self.cells = cells
        self.state_is_tuple = bool(state_is_tuple)

    @property
    def state_size(self):
        sizes = tuple(c.state_size for c in self.cells)
        if self.state_is_tuple:
            return sizes
        flat, _ = flatten(sizes)
        return sum(flat)

    @property
    def output_size(self):
        return self.cells[-1].output_size

    def call(self, inputs, state):
        if self.state_is_tuple:
            if not isinstance(state, tuple) or len(state) != len(self.cells):
                raise TraceError(f"{self.name}: state must be a tuple of {len(self.cells)} layer "
                                 f"states, received {type(state).__name__}")
            layer_states = list(state)
        else:
            layer_states, off = [], 0
            for c in self.cells:
                sizes, tree = flatten(c.state_size)
                parts = []
                for s in sizes:
                    parts.append(dsl.slice(state, off, off + s, axis=1))
                    off += s
                layer_states.append(unflatten(tree, parts))
        x = inputs
        new_states = []
        for k, (cell, st) in enumerate(zip(self.cells, layer_states)):
            with variable_scope(f"cell_{k}"):
                x, ns = cell(x, st)
            new_states.append(ns)
        if self.state_is_tuple:
            return x, tuple(new_states)
        flat, _ = flatten(tuple(new_states))
        return x, dsl.concat(flat, axis=1)


class DropoutWrapper(RNNCell):
    """Dropout on the cell's input, output and state; active only when training.

    The training flag is the graph's run-time input "@training" (default False), so inference is
    deterministic. As in TF1, state dropout skips the memory c of an LSTMStateTuple.
    """

    def __init__(self, cell: RNNCell, input_keep_prob: float = 1.0,
                 output_keep_prob: float = 1.0, state_keep_prob: float = 1.0):
        super().__init__(cell.name)
        for nm, p in (("input_keep_prob", input_keep_prob), ("output_keep_prob", output_keep_prob),
                      ("state_keep_prob", state_keep_prob)):
            if not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
                raise ValueError(f"{nm}: expected a probability in (0, 1], received {p!r}")
        self.cell = cell
        self.input_keep_prob = float(input_keep_prob)
        self.output_keep_prob = float(output_keep_prob)
        self.state_keep_prob = float(state_keep_prob)

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    def __call__(self, inputs, state, scope=None):
        x = dsl.dropout(inputs, self.input_keep_prob)
        out, new_state = self.cell(x, state, scope)
        out = dsl.dropout(out, self.output_keep_prob)
        if self.state_keep_prob < 1.0:
            new_state = self._drop_state(new_state)
        return out, new_state

    def _drop_state(self, st):
        if isinstance(st, LSTMStateTuple):
            return LSTMStateTuple(st.c, dsl.dropout(st.h, self.state_keep_prob))
        if isinstance(st, tuple):
            return type(st)(self._drop_state(s) for s in st)
        return dsl.dropout(st, self.state_keep_prob)


class OutputProjectionWrapper(RNNCell):
    """A linear layer on every output step (shared weights); the state is untouched."""

    default_name = "output_projection_wrapper"

    def __init__(self, cell: RNNCell, output_size: int, activation=None, name=None):
        super().__init__(name)
        self.cell = cell
        self._output_size = _check_units(output_size)
        self.activation = get_activation(activation) if activation is not None else None

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self._output_size

    def call(self, inputs, state):
        out, new_state = self.cell(inputs, state)
        w = self.param("kernel", (self.cell.output_size, self._output_size))
        b = self.param("bias", (self._output_size,), "zeros")
        y = dsl.matmul(out, w) + b
        if self.activation is not None:
            y = self.activation(y)
        return y, new_state


def as_cell(cell: Any) -> RNNCell:
    if isinstance(cell, RNNCell):
        return cell
    raise TypeError(f"cell: expected an rnncomp RNNCell (or FunctionCell(fn, state_size) for a "
                    f"plain function), received {type(cell).__name__}")


__all__ = ["RNNCell", "FunctionCell", "BasicRNNCell", "BasicLSTMCell", "LSTMCell", "GRUCell",
           "MultiRNNCell", "DropoutWrapper", "OutputProjectionWrapper", "LSTMStateTuple",
           "DType"]
