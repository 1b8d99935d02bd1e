"""Attention with TF1's tf.contrib.seq2seq names and meaning: BahdanauAttention,
LuongAttention and AttentionWrapper.

They are ordinary DSL code: the wrapper is an RNNCell, so a decoder step with attention (the
scores, the masked softmax and the context) is traced into the same scan body as the cell and
is optimized, fused, differentiated and compiled like any cell. The memory projection
(memory_layer) is computed once, outside the loop, when the mechanism is built.

Parameter names (TF1's): `memory_layer/kernel` (in the scope where the mechanism is built),
and under the wrapper's scope (`<outer>/attention_wrapper/`): the cell's own parameters,
`bahdanau_attention/query_layer/kernel`, `bahdanau_attention/attention_v` (and
`attention_g`, `attention_b` when normalize=True), `luong_attention/attention_g` (scale=True),
`attention_layer/kernel` (attention_layer_size).
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any

from . import dsl, initializers
from ..ir import ops
from ..ir.dtypes import DType
from ..ir.graph import Node, shape_str
from .cells import RNNCell, _check_bool, _check_units, as_cell
from .rnn import _check_seq_len, scan, step_index
from .trace import TraceError, current, param, variable_scope

AttentionWrapperState = namedtuple(
    "AttentionWrapperState",
    ["cell_state", "attention", "time", "alignments", "alignment_history", "attention_state"])
AttentionWrapperState.__doc__ = (
    "TF1's AttentionWrapperState. rnncomp's state leaves are [batch, size] arrays, so `time` is "
    "() (the step is rnncomp.step_index()), `attention_state` is () (Bahdanau and Luong do not "
    "read it), and `alignment_history` is () inside the loop: dynamic_decode returns it "
    "stacked, [T, batch, memory_time], in the final state when alignment_history=True.")


def _clone(self, **kwargs):
    """TF1's AttentionWrapperState.clone(cell_state=...): a copy with some fields replaced."""
    return self._replace(**kwargs)


AttentionWrapperState.clone = _clone  # type: ignore[attr-defined]


def _iota_i32(x_time_major: Node) -> Node:
    """[0, 1, ..., T-1] for the leading axis of x (whose size may be symbolic)."""
    _, ys = scan(lambda c, x: (c, step_index()), (), xs=x_time_major)
    return ys


def sequence_mask(lengths: Node, like_time_major: Node) -> Node:
    """[B, T] bool: t < lengths[b], T the leading axis of `like_time_major` [T, B, ...]."""
    T = like_time_major.shape[0]
    B = lengths.shape[0]
    t = dsl.reshape(_iota_i32(like_time_major), (1, T))
    return ops.lt(t, dsl.reshape(ops.cast(lengths, DType.i32), (B, 1)))


class _BaseAttentionMechanism:
    """The memory (keys and values) of an attention mechanism; called on a query it returns
    (alignments [B, Tm], next attention state)."""

    scope_name = "attention"

    def __init__(self, num_units: int, memory: Node, memory_sequence_length: Any,
                 probability_fn: Any, score_mask_value: Any, name: str, fn: str):
        self.num_units = _check_units(num_units, f"{fn}: num_units")
        if not isinstance(memory, Node) or memory.ndim != 3:
            raise ValueError(f"{fn}: memory must be a [batch, memory_time, depth] array, "
                             f"received {memory!r}")
        if not isinstance(memory.shape[2], int):
            raise ValueError(f"{fn}: the memory depth must be static, received "
                             f"[{shape_str(memory.shape)}]")
        if probability_fn is not None and not callable(probability_fn):
            raise TypeError(f"{fn}: probability_fn must be callable, received {probability_fn!r}")
        self.name = name
        self.probability_fn = probability_fn or dsl.softmax
        self.score_mask_value = float("-inf") if score_mask_value is None else \
            float(score_mask_value)
        B, Tm, D = memory.shape
        self.batch_size, self.memory_time, self.memory_depth = B, Tm, D
        self.mask = None
        values = memory
        if memory_sequence_length is not None:
            L = _check_seq_len(memory_sequence_length, B, Tm, f"{fn}: memory_sequence_length")
            self.mask = sequence_mask(L, dsl.transpose(memory, (1, 0, 2)))  # [B, Tm]
            # TF1 (_prepare_memory): memory past each length is zeroed before the projection
            values = ops.mul(memory, ops.cast(dsl.reshape(self.mask, (B, Tm, 1)), memory.dtype))
        self.values = values                                            # [B, Tm, D]
        kernel = param("memory_layer/kernel", (D, self.num_units), owner=self)
        self.keys = dsl.matmul(values, kernel)                          # [B, Tm, U]

    @property
    def alignments_size(self):
        return self.memory_time

    @property
    def state_size(self):
        return self.memory_time

    def initial_alignments(self, batch_size, dtype) -> Node:
        return dsl.zeros((batch_size, self.memory_time), dtype)

    def _probabilities(self, score: Node, state: Node) -> Node:
        if self.mask is not None:
            score = ops.where(self.mask, score, ops.const(self.score_mask_value, score.dtype))
        return self.probability_fn(score)

    def _param(self, name, shape, init="glorot_uniform"):
        return param(name, shape, init, owner=self)

    def __call__(self, query: Node, state: Node) -> tuple[Node, Node]:
        if not isinstance(query, Node) or query.ndim != 2:
            raise TraceError(f"{type(self).__name__}: the query must be a [batch, depth] array, "
                             f"received {query!r}")
        with variable_scope(self.scope_name):
            score = self._score(query)
        alignments = self._probabilities(score, state)
        return alignments, alignments


class BahdanauAttention(_BaseAttentionMechanism):
    """TF1 tf.contrib.seq2seq.BahdanauAttention (additive): score_j =
    v . tanh(keys_j + W_q query) (normalize=True: weight-normalized v = g v / |v| and a bias b
    inside the tanh). keys = memory_layer(memory). Past memory_sequence_length the score is
    score_mask_value (default -inf) before the softmax (and the memory is zeroed), as TF1."""

    scope_name = "bahdanau_attention"

    def __init__(self, num_units: int, memory: Node, memory_sequence_length: Any = None,
                 normalize: bool = False, probability_fn: Any = None,
                 score_mask_value: Any = None, dtype: Any = None,
                 custom_key_value_fn: Any = None, name: str = "BahdanauAttention"):
        if custom_key_value_fn is not None:
            raise ValueError("BahdanauAttention: custom_key_value_fn is not supported")
        self.normalize = _check_bool(normalize, "BahdanauAttention: normalize")
        super().__init__(num_units, memory, memory_sequence_length, probability_fn,
                         score_mask_value, name, "BahdanauAttention")

    def _score(self, query: Node) -> Node:
        U = self.num_units
        B = query.shape[0]
        wq = self._param("query_layer/kernel", (query.shape[1], U))
        pq = dsl.reshape(dsl.matmul(query, wq), (B, 1, U))
        v = self._param("attention_v", (U,))
        if self.normalize:
            g = self._param("attention_g", (), initializers.constant(math.sqrt(1.0 / U)))
            b = self._param("attention_b", (U,), "zeros")
            v = g * v / dsl.sqrt(dsl.reduce_sum(dsl.square(v)))
            return dsl.reduce_sum(v * dsl.tanh(self.keys + pq + b), 2)
        return dsl.reduce_sum(v * dsl.tanh(self.keys + pq), 2)


class LuongAttention(_BaseAttentionMechanism):
    """TF1 tf.contrib.seq2seq.LuongAttention (multiplicative): score_j = query . keys_j
    (scale=True: times a scalar g, initialized to 1). The query depth must equal num_units.
    Masking as BahdanauAttention."""

    scope_name = "luong_attention"

    def __init__(self, num_units: int, memory: Node, memory_sequence_length: Any = None,
                 scale: bool = False, probability_fn: Any = None, score_mask_value: Any = None,
                 dtype: Any = None, custom_key_value_fn: Any = None,
                 name: str = "LuongAttention"):
        if custom_key_value_fn is not None:
            raise ValueError("LuongAttention: custom_key_value_fn is not supported")
        self.scale = _check_bool(scale, "LuongAttention: scale")
        super().__init__(num_units, memory, memory_sequence_length, probability_fn,
                         score_mask_value, name, "LuongAttention")

    def _score(self, query: Node) -> Node:
        U = self.num_units
        if query.shape[1] != U:
            raise TraceError(f"LuongAttention: the query depth ({query.shape[1]}) must equal "
                             f"num_units ({U}), as in TF1")
        B = query.shape[0]
        score = dsl.reduce_sum(dsl.reshape(query, (B, 1, U)) * self.keys, 2)
        if self.scale:
            score = self._param("attention_g", (), "ones") * score
        return score


class AttentionWrapper(RNNCell):
    """TF1 tf.contrib.seq2seq.AttentionWrapper(cell, attention_mechanism,
    attention_layer_size=None, alignment_history=False, cell_input_fn=None,
    output_attention=True, initial_cell_state=None, name=None).

    Each step: the cell reads concat([inputs, previous attention]); its output is the query;
    alignments = softmax(masked scores); context = sum_j alignments_j values_j; attention =
    attention_layer(concat([cell_output, context])) if attention_layer_size else context. The
    output is the attention (output_attention=True) or the cell output. The state is an
    AttentionWrapperState (see its doc for time, attention_state and alignment_history).
    One attention mechanism (TF1 also takes a list: not supported)."""

    default_name = "attention_wrapper"

    def __init__(self, cell: RNNCell, attention_mechanism: _BaseAttentionMechanism,
                 attention_layer_size: int | None = None, alignment_history: bool = False,
                 cell_input_fn: Any = None, output_attention: bool = True,
                 initial_cell_state: Any = None, name: str | None = None,
                 attention_layer: Any = None):
        super().__init__(name)
        self.cell = as_cell(cell)
        if isinstance(attention_mechanism, (list, tuple)):
            raise ValueError("AttentionWrapper: a list of attention mechanisms is not supported; "
                             "pass one")
        if not isinstance(attention_mechanism, _BaseAttentionMechanism):
            raise TypeError(f"AttentionWrapper: attention_mechanism must be a BahdanauAttention "
                            f"or LuongAttention, received {type(attention_mechanism).__name__}")
        if attention_layer is not None:
            raise ValueError("AttentionWrapper: attention_layer (a Keras layer) is not "
                             "supported; use attention_layer_size")
        self.mechanism = attention_mechanism
        self.attention_layer_size = None if attention_layer_size is None else \
            _check_units(attention_layer_size, "AttentionWrapper: attention_layer_size")
        self.alignment_history = _check_bool(alignment_history, "alignment_history")
        self.output_attention = _check_bool(output_attention, "output_attention")
        if cell_input_fn is not None and not callable(cell_input_fn):
            raise TypeError(f"AttentionWrapper: cell_input_fn must be callable, received "
                            f"{cell_input_fn!r}")
        self.cell_input_fn = cell_input_fn or (lambda x, a: dsl.concat([x, a], -1))
        self.initial_cell_state = initial_cell_state

    @property
    def attention_size(self) -> int:
        return self.attention_layer_size or self.mechanism.memory_depth

    @property
    def state_size(self):
        return AttentionWrapperState(cell_state=self.cell.state_size,
                                     attention=self.attention_size, time=(),
                                     alignments=self.mechanism.alignments_size,
                                     alignment_history=(), attention_state=())

    @property
    def output_size(self):
        return self.attention_size if self.output_attention else self.cell.output_size

    def zero_state(self, batch_size, dtype=None):
        dt = dtype if dtype is not None else current().dtype
        cs = self.initial_cell_state if self.initial_cell_state is not None else \
            self.cell.zero_state(batch_size, dt)
        return AttentionWrapperState(
            cell_state=cs, attention=dsl.zeros((batch_size, self.attention_size), dt), time=(),
            alignments=self.mechanism.initial_alignments(batch_size, dt),
            alignment_history=(), attention_state=())

    def call(self, inputs, state):
        if not isinstance(state, AttentionWrapperState):
            raise TraceError(f"AttentionWrapper: the state must be an AttentionWrapperState, "
                             f"received {type(state).__name__}")
        cell_inputs = self.cell_input_fn(inputs, state.attention)
        cell_output, next_cell_state = self.cell(cell_inputs, state.cell_state)
        m = self.mechanism
        alignments, _ = m(cell_output, state.alignments)
        B = alignments.shape[0]
        context = dsl.reduce_sum(dsl.reshape(alignments, (B, m.memory_time, 1)) * m.values, 1)
        if self.attention_layer_size is not None:
            w = self.param("attention_layer/kernel",
                           (cell_output.shape[1] + m.memory_depth, self.attention_layer_size))
            attention = dsl.matmul(dsl.concat([cell_output, context], 1), w)
        else:
            attention = context
        next_state = AttentionWrapperState(cell_state=next_cell_state, attention=attention,
                                           time=(), alignments=alignments,
                                           alignment_history=(), attention_state=())
        return (attention if self.output_attention else cell_output), next_state


__all__ = ["AttentionWrapper", "AttentionWrapperState", "BahdanauAttention", "LuongAttention",
           "sequence_mask"]
