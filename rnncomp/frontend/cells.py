"""Built-in cells and wrappers, with TF1 names and meaning, written in the same DSL users use.

Parameter layout (documented in docs/parameters.md): the TF1 convention of one kernel over the
concatenation [x, h]. The optimizer splits `concat([x, h]) @ kernel` into `x @ kernel[:I]` (hoisted
out of the time loop as one GEMM) and `h @ kernel[I:]` (the recurrent GEMM).
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from . import dsl, initializers
from ..ir import ops
from ..ir.dtypes import DType, as_dtype
from ..ir.graph import Node, shape_str
from .trace import (
    AUTO_REUSE,
    TraceError,
    check_reuse,
    current,
    flatten,
    param,
    unflatten,
    variable_scope,
)

LSTMStateTuple = namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "The (c, h) state of an LSTM cell, as in TF1."

_ACTIVATIONS: dict[str, Callable[[Node], Node]] = {
    "tanh": dsl.tanh,
    "relu": dsl.relu,
    "sigmoid": dsl.sigmoid,
}


def get_activation(act: str | Callable[[Node], Node] | None) -> Callable[[Node], Node]:
    """An activation by name or callable; None is TF1's default for cells: tanh."""
    if act is None:
        return dsl.tanh
    if callable(act):
        return act
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, a callable (e.g. "
                         f"rc.nn.relu) or None (tanh), received {act!r}")
    return _ACTIVATIONS[act]


def _check_units(num_units: Any, what: str = "num_units") -> int:
    if not isinstance(num_units, int) or isinstance(num_units, bool) or num_units <= 0:
        raise ValueError(f"{what}: expected a positive int, received {num_units!r}")
    return num_units


def _check_bool(x: Any, what: str) -> bool:
    if not isinstance(x, bool):
        raise ValueError(f"{what}: expected True or False, received {x!r}")
    return x


def _check_clip(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not float(x) > 0.0:
        raise ValueError(f"{what}: expected a positive number or None, received {x!r}")
    return float(x)


def _check_init(x: Any, what: str) -> Any:
    """None (the parameter's default) or anything rnncomp.initializers.get accepts."""
    if x is None:
        return None
    try:
        initializers.get(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from None
    return x


def _check_dtype(dtype: Any, who: str) -> DType | None:
    if dtype is None:
        return None
    dt = as_dtype(dtype)
    if not dt.is_float:
        raise ValueError(f"{who}: dtype must be a float type (f32 or f64), received {dt}")
    return dt


def _no_other_options(cls: type, given: dict) -> None:
    """TF1 cells take Keras layer keyword arguments (**kwargs); rnncomp's take none of them."""
    if given:
        names = [p for p in inspect.signature(cls.__init__).parameters
                 if p not in ("self", "kwargs")]
        raise ValueError(f"{cls.__name__}: unsupported options {sorted(given)} (supported: "
                         f"{', '.join(names)})")


def _input_size(x: Node, cell: str) -> int:
    if x.ndim != 2:
        raise ValueError(f"{cell}: inputs must be [batch, features], received "
                         f"[{shape_str(x.shape)}]")
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ValueError(f"{cell}: the feature dimension must be static, received {d!r}")
    return d


def _clip(x: Node, c: float | None) -> Node:
    return x if c is None else dsl.clip_by_value(x, -c, c)


class RNNCell:
    """Base class: subclass and implement `state_size`, `output_size` and `call(x, state)`.

    `state_size` is an int or a (nested) tuple of ints; the state passed to `call` has the same
    structure with arrays of shape [batch, size]. Parameters created with `self.param(...)` are
    named under the cell's scope and reused when the cell is called again (e.g. each step of
    static_rnn).

    TF1's `reuse` and `dtype` arguments: reuse=True shares the parameters an earlier cell of the
    same scoped name created (a missing one is an error), rnncomp.AUTO_REUSE shares or creates;
    dtype must be the model's float dtype (an rnncomp model has one), else calling the cell is
    an error that says so.
    """

    default_name = "rnn_cell"

    def __init__(self, name: str | None = None, *, reuse: Any = None, dtype: Any = None):
        self.name = name or self.default_name
        self.reuse = check_reuse(reuse, type(self).__name__)
        self.dtype = _check_dtype(dtype, type(self).__name__)

    @property
    def state_size(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define state_size")

    @property
    def output_size(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define output_size")

    def call(self, inputs: Node, state: Any) -> tuple[Node, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define call(inputs, state)")

    def param(self, name: str, shape, init="glorot_uniform") -> Node:
        return param(name, shape, init, owner=self, reuse=getattr(self, "reuse", None))

    def zero_state(self, batch_size: int | str, dtype=None) -> Any:
        dt = dtype if dtype is not None else current().dtype
        sizes, tree = flatten(self.state_size)
        return unflatten(tree, [dsl.zeros((batch_size, s), dt) for s in sizes])

    def _check_call_dtype(self, inputs: Any) -> None:
        want = getattr(self, "dtype", None)
        if want is not None and isinstance(inputs, Node) and inputs.dtype != want:
            raise TraceError(f"{self.name}: the cell was built with dtype={want}, but its inputs "
                             f"are {inputs.dtype}: an rnncomp model has one float dtype; build "
                             f"the Model with dtype='{want}' (rc.Model(fn, inputs, "
                             f"dtype='{want}')) or drop dtype=")

    def __call__(self, inputs: Node, state: Any, scope: str | None = None) -> tuple[Node, Any]:
        self._check_call_dtype(inputs)
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
    """TF1 BasicRNNCell: h' = act([x, h] @ kernel + bias); output = state.

    activation: None (tanh, TF1's default), "tanh", "relu", "sigmoid" or a callable.
    """

    default_name = "basic_rnn_cell"

    def __init__(self, num_units: int, activation: str | Callable | None = None,
                 reuse: Any = None, name: str | None = None, dtype: Any = None, **kwargs):
        _no_other_options(type(self), kwargs)
        super().__init__(name, reuse=reuse, dtype=dtype)
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
    """TF1 BasicLSTMCell: gates i, j, f, o from [x, h] @ kernel + bias; forget_bias added to f.

    state_is_tuple=True: the state is LSTMStateTuple(c, h); False (deprecated in TF1): one
    array concat([c, h], axis=1).
    """

    default_name = "basic_lstm_cell"

    def __init__(self, num_units: int, forget_bias: float = 1.0, state_is_tuple: bool = True,
                 activation: str | Callable | None = None, reuse: Any = None,
                 name: str | None = None, dtype: Any = None, **kwargs):
        _no_other_options(type(self), kwargs)
        super().__init__(name, reuse=reuse, dtype=dtype)
        self.num_units = _check_units(num_units)
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise ValueError(f"forget_bias: expected a number, received {forget_bias!r}")
        self.forget_bias = float(forget_bias)
        self.state_is_tuple = _check_bool(state_is_tuple, "state_is_tuple")
        self.activation = get_activation(activation)
        # LSTMCell's options, all off for BasicLSTMCell
        self.use_peepholes = False
        self.cell_clip: float | None = None
        self.num_proj: int | None = None
        self.proj_clip: float | None = None
        self.initializer: Any = None

    @property
    def state_size(self):
        P = self.num_proj or self.num_units
        if self.state_is_tuple:
            return LSTMStateTuple(self.num_units, P)
        return self.num_units + P

    @property
    def output_size(self):
        return self.num_proj or self.num_units

    def call(self, inputs, state):
        H = self.num_units
        P = self.num_proj or H
        if self.state_is_tuple:
            if not isinstance(state, tuple) or len(state) != 2:
                raise TraceError(f"{self.name}: state must be an LSTMStateTuple (c, h), "
                                 f"received {type(state).__name__}")
            c, h = state
        else:
            if not isinstance(state, Node) or state.ndim != 2 or state.shape[1] != H + P:
                raise TraceError(f"{self.name}: with state_is_tuple=False the state must be one "
                                 f"[batch, {H + P}] array concat([c, h], axis=1), received "
                                 f"{state!r}")
            c, h = dsl.slice(state, 0, H, axis=1), dsl.slice(state, H, H + P, axis=1)
        isz = _input_size(inputs, self.name)
        kinit = self.initializer if self.initializer is not None else "glorot_uniform"
        kernel = self.param("kernel", (isz + P, 4 * H), kinit)
        bias = self.param("bias", (4 * H,), "zeros")
        z = dsl.matmul(dsl.concat([inputs, h], 1), kernel) + bias
        zi, zj, zf, zo = dsl.split(z, 4, axis=1)
        act = self.activation
        if self.use_peepholes:
            wi = self.param("w_i_diag", (H,), kinit)
            wf = self.param("w_f_diag", (H,), kinit)
            wo = self.param("w_o_diag", (H,), kinit)
            i = dsl.sigmoid(zi + wi * c)
            f = dsl.sigmoid(zf + self.forget_bias + wf * c)
            new_c = _clip(f * c + i * act(zj), self.cell_clip)
            o = dsl.sigmoid(zo + wo * new_c)
        else:
            i = dsl.sigmoid(zi)
            f = dsl.sigmoid(zf + self.forget_bias)
            new_c = _clip(f * c + i * act(zj), self.cell_clip)
            o = dsl.sigmoid(zo)
        new_h = o * act(new_c)
        if self.num_proj is not None:
            with variable_scope("projection"):
                proj = self.param("kernel", (H, self.num_proj), kinit)
            new_h = _clip(dsl.matmul(new_h, proj), self.proj_clip)
        if self.state_is_tuple:
            return new_h, LSTMStateTuple(new_c, new_h)
        return new_h, dsl.concat([new_c, new_h], 1)


class LSTMCell(BasicLSTMCell):
    """TF1 LSTMCell: BasicLSTMCell plus peepholes, cell clipping and an output projection.

    use_peepholes: diagonal peepholes w_i_diag, w_f_diag (see c_{t-1}) and w_o_diag (sees c_t).
    cell_clip: c_t is clipped to [-cell_clip, cell_clip] (before the output gate sees it).
    num_proj: h_t = (o * act(c_t)) @ projection/kernel [H, num_proj], clipped to
    [-proj_clip, proj_clip] if proj_clip is given; the state is (c [B, H], h [B, num_proj]).
    initializer: of the kernels and peephole weights (bias: zeros).
    num_unit_shards / num_proj_shards: TF1 variable partitioning; only None or 1 here.
    """

    default_name = "lstm_cell"

    def __init__(self, num_units: int, use_peepholes: bool = False,
                 cell_clip: float | None = None, initializer: Any = None,
                 num_proj: int | None = None, proj_clip: float | None = None,
                 num_unit_shards: int | None = None, num_proj_shards: int | None = None,
                 forget_bias: float = 1.0, state_is_tuple: bool = True,
                 activation: str | Callable | None = None, reuse: Any = None,
                 name: str | None = None, dtype: Any = None, **kwargs):
        _no_other_options(type(self), kwargs)
        super().__init__(num_units, forget_bias, state_is_tuple, activation, reuse, name, dtype)
        self.use_peepholes = _check_bool(use_peepholes, "use_peepholes")
        self.cell_clip = _check_clip(cell_clip, "cell_clip")
        self.initializer = _check_init(initializer, "initializer")
        self.num_proj = None if num_proj is None else _check_units(num_proj, "num_proj")
        # as in TF1, proj_clip only acts on a projection (it has no effect without num_proj)
        self.proj_clip = _check_clip(proj_clip, "proj_clip")
        for nm, v in (("num_unit_shards", num_unit_shards), ("num_proj_shards", num_proj_shards)):
            if v is None or v == 1 and not isinstance(v, bool):
                continue
            raise ValueError(f"LSTMCell: {nm}={v!r}: TF1 splits the variables into shards "
                             f"(kernel/part_0, ...; deprecated there); rnncomp keeps one array "
                             f"per parameter, which computes the same: drop {nm} (to load a "
                             f"sharded TF1 checkpoint, concatenate the parts along axis 0)")


class GRUCell(RNNCell):
    """TF1 GRUCell: gates r (reset) and u (update); h' = u*h + (1-u)*c.

    reset_after=False (default): TF1's GRUCell, r applied to h before the candidate matmul.
    reset_after=True (keyword only): the cuDNN / PyTorch form, r applied to
    (h @ K_h + recurrent_bias); rnncomp.tools.convert's PyTorch GRUs use it.
    kernel_initializer: both kernels (default glorot_uniform); bias_initializer: every bias
    (default: ones for gates/bias, zeros for the candidate biases, as TF1).
    """

    default_name = "gru_cell"

    def __init__(self, num_units: int, activation: str | Callable | None = None,
                 reuse: Any = None, kernel_initializer: Any = None, bias_initializer: Any = None,
                 name: str | None = None, dtype: Any = None, *, reset_after: bool = False,
                 **kwargs):
        _no_other_options(type(self), kwargs)
        super().__init__(name, reuse=reuse, dtype=dtype)
        self.num_units = _check_units(num_units)
        if isinstance(activation, bool):
            raise ValueError(f"GRUCell: the second argument is activation (TF1's order), "
                             f"received {activation!r}; to choose the GRU form pass "
                             f"reset_after={activation!r} by keyword")
        if not isinstance(reset_after, bool):
            raise ValueError(f"reset_after: expected True or False, received {reset_after!r}")
        self.reset_after = reset_after
        self.activation = get_activation(activation)
        self.kernel_initializer = _check_init(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _check_init(bias_initializer, "bias_initializer")

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
        kinit = self.kernel_initializer if self.kernel_initializer is not None else \
            "glorot_uniform"
        binit = self.bias_initializer
        with variable_scope("gates"):
            gk = self.param("kernel", (isz + H, 2 * H), kinit)
            gb = self.param("bias", (2 * H,), binit if binit is not None else "ones")
        with variable_scope("candidate"):
            ck = self.param("kernel", (isz + H, H), kinit)
            cb = self.param("bias", (H,), binit if binit is not None else "zeros")
            if self.reset_after:
                rb = self.param("recurrent_bias", (H,), binit if binit is not None else "zeros")
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


def _default_state_filter(substate: Any) -> Any:
    """TF1's default dropout_state_filter_visitor: every state part but an LSTM's memory c."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


def _traverse_filter(visitor: Callable[[Any], Any], st: Any) -> Any:
    """TF1's nest.get_traverse_shallow_structure: which parts of the state `visitor` selects
    (True descends into a tuple and asks again; a tuple of bools selects per element)."""
    sel = visitor(st)
    is_seq = isinstance(st, (tuple, list))
    if not is_seq:
        if not isinstance(sel, bool):
            raise TypeError(f"dropout_state_filter_visitor: expected a bool for an array, "
                            f"received {sel!r}")
        return sel
    if isinstance(sel, bool):
        if not sel:
            return False
        parts = [_traverse_filter(visitor, x) for x in st]
    else:
        if not isinstance(sel, (tuple, list)) or len(sel) != len(st):
            raise TypeError(f"dropout_state_filter_visitor: expected a bool or a structure of "
                            f"{len(st)} bools for {type(st).__name__}, received {sel!r}")
        parts = []
        for t, x in zip(sel, st):
            if not isinstance(t, bool):
                raise TypeError(f"dropout_state_filter_visitor: expected bools, received {t!r}")
            parts.append(_traverse_filter(visitor, x) if t else False)
    return parts


class DropoutWrapper(RNNCell):
    """Dropout on the cell's input, output and state; active only when training.

    The training flag is the graph's run-time input "@training" (default False), so inference is
    deterministic. As in TF1, state dropout skips the memory c of an LSTMStateTuple (the
    default `dropout_state_filter_visitor`).

    variational_recurrent=True (Gal & Ghahramani): one mask per sequence, drawn once per run
    and used at every step, for the input, the output and each part of the state; TF1 needs
    `dtype`, and `input_size` when input_keep_prob < 1, and so does rnncomp. Unlike TF1, whose
    masks have a batch dimension of 1 (one mask for the whole batch), each sequence of the
    batch gets its own mask, as in the paper.

    seed: an int mixed into this wrapper's random streams (masks also depend on the run-time
    seed, m(params, training=True, seed=s, ...)). name: accepted; the wrapper has no parameters
    and adds no scope, as in TF1.
    """

    def __init__(self, cell: RNNCell, input_keep_prob: float = 1.0,
                 output_keep_prob: float = 1.0, state_keep_prob: float = 1.0,
                 variational_recurrent: bool = False, input_size: int | None = None,
                 dtype: Any = None, seed: int | None = None,
                 dropout_state_filter_visitor: Callable[[Any], Any] | None = None,
                 name: str | None = None):
        cell = as_cell(cell)
        super().__init__(cell.name, dtype=dtype)
        for nm, p in (("input_keep_prob", input_keep_prob), ("output_keep_prob", output_keep_prob),
                      ("state_keep_prob", state_keep_prob)):
            if isinstance(p, Node):
                raise TypeError(f"{nm}: expected a Python number, received an array (a TF1 "
                                f"keep_prob placeholder?): pass the training value, e.g. 0.5; "
                                f"rnncomp's dropout is active only in training, "
                                f"m(params, training=True, ...), and off at inference, which "
                                f"is what feeding keep_prob=1.0 did in TF1")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
                raise ValueError(f"{nm}: expected a probability in (0, 1], received {p!r}")
        self.cell = cell
        self.input_keep_prob = float(input_keep_prob)
        self.output_keep_prob = float(output_keep_prob)
        self.state_keep_prob = float(state_keep_prob)
        self.variational_recurrent = _check_bool(variational_recurrent, "variational_recurrent")
        if input_size is not None:
            input_size = _check_units(input_size, "input_size")
        self.input_size = input_size
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an int or None, received {seed!r}")
        self.seed = seed
        if dropout_state_filter_visitor is not None and not callable(dropout_state_filter_visitor):
            raise TypeError(f"dropout_state_filter_visitor: expected a callable, received "
                            f"{dropout_state_filter_visitor!r}")
        self.dropout_state_filter_visitor = dropout_state_filter_visitor or _default_state_filter
        self.wrapper_name = name
        if self.variational_recurrent:
            if dtype is None:
                raise ValueError("DropoutWrapper: variational_recurrent=True needs dtype= (the "
                                 "model's float dtype, e.g. rc.float32), as in TF1")
            if self.input_keep_prob < 1.0 and input_size is None:
                raise ValueError("DropoutWrapper: variational_recurrent=True with "
                                 "input_keep_prob < 1 needs input_size= (the number of input "
                                 "features), as in TF1")

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    def _site(self, kind: str, index: int) -> int:
        """One random site per (wrapper, kind, state part) per trace: the same numbers at every
        step and in every static_rnn copy of the cell."""
        ctx = current()
        key = ("variational_dropout", id(self), kind, index)
        if key not in ctx.memo:
            ctx.random_sites += 1
            ctx.memo[key] = ctx.random_sites
        return self._seeded(ctx.memo[key])

    def _seeded(self, site: int) -> int:
        return site if self.seed is None else (site + self.seed * 0x9E3779B1) & 0xFFFFFFFF

    def _drop(self, x: Node, keep: float, kind: str, index: int = 0) -> Node:
        if keep == 1.0:
            return x
        if self.variational_recurrent:
            if x.ndim != 2:
                raise TraceError(f"DropoutWrapper: variational dropout expects [batch, size] "
                                 f"arrays, received [{shape_str(x.shape)}]")
            template = dsl.zeros(x.shape, x.dtype)  # no dependence on the step: a loop invariant
            noise = dsl.random_uniform_like(template, site=self._site(kind, index),
                                            step=ops.const(0, DType.i32))
            return dsl.dropout(x, keep, noise=noise)
        if self.seed is None:
            return dsl.dropout(x, keep)
        ctx = current()
        ctx.random_sites += 1
        noise = dsl.random_uniform_like(x, site=self._seeded(ctx.random_sites))
        return dsl.dropout(x, keep, noise=noise)

    def __call__(self, inputs, state, scope=None):
        self._check_call_dtype(inputs)
        if self.variational_recurrent and self.input_size is not None and \
                isinstance(inputs, Node) and inputs.ndim == 2 and \
                inputs.shape[1] != self.input_size:
            raise TraceError(f"DropoutWrapper: input_size={self.input_size} but the inputs have "
                             f"{inputs.shape[1]} features")
        x = self._drop(inputs, self.input_keep_prob, "input")
        out, new_state = self.cell(x, state, scope)
        out = self._drop(out, self.output_keep_prob, "output")
        if self.state_keep_prob < 1.0:
            sel = _traverse_filter(self.dropout_state_filter_visitor, new_state)
            counter = [0]
            new_state = self._drop_state(new_state, sel, counter)
        return out, new_state

    def _drop_state(self, st, sel, counter):
        if isinstance(st, (tuple, list)):
            subs = sel if isinstance(sel, list) else [False] * len(st)
            parts = [self._drop_state(x, s, counter) for x, s in zip(st, subs)]
            return st._make(parts) if hasattr(st, "_fields") else type(st)(parts)
        k = counter[0]
        counter[0] += 1
        return self._drop(st, self.state_keep_prob, "state", k) if sel else st


class OutputProjectionWrapper(RNNCell):
    """A linear layer on every output step (shared weights); the state is untouched.

    TF1 order (cell, output_size, activation=None, reuse=None); `name` (keyword) is the scope,
    "output_projection_wrapper" by default.
    """

    default_name = "output_projection_wrapper"

    def __init__(self, cell: RNNCell, output_size: int, activation=None, reuse: Any = None,
                 *, name: str | None = None):
        super().__init__(name, reuse=reuse)
        self.cell = as_cell(cell)
        self._output_size = _check_units(output_size, "output_size")
        self.activation = get_activation(activation) if activation is not None else None

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self._output_size

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

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
           "DType", "AUTO_REUSE"]
