"""Decoding with TF1's tf.contrib.seq2seq names: BasicDecoder, TrainingHelper (teacher
forcing), GreedyEmbeddingHelper (greedy decoding) and dynamic_decode.

The decoding loop is one scan, compiled like any other:
- TrainingHelper: the scan reads the given decoder inputs and runs max(sequence_length) steps
  (a run-time trip count, as dynamic_rnn).
- GreedyEmbeddingHelper: the trip count is `maximum_iterations` (required): a scan's trip
  count is fixed when the loop starts, so the loop does not stop early when every sequence has
  produced end_token; instead each sequence is *finished-masked* from the step after its
  end_token on (state kept, outputs zero), which gives the same values as TF1 within each
  sequence's length. The outputs have maximum_iterations steps (TF1 trims to the longest
  decoded sequence); final_sequence_lengths says where each one ends (end_token included).

Outputs past a sequence's end are zeros (rnn_output) and 0 (sample_id), and its state stops
changing there: TF1's impute_finished=True, which rnncomp always does (impute_finished=False
is accepted; it only differs past each sequence's end).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Callable

import numpy as np

from . import dsl, layers
from ..ir import ops
from ..ir.dtypes import DType
from ..ir.graph import Node, shape_str
from .attention import AttentionWrapper
from .cells import RNNCell, as_cell
from .rnn import _check_new_state, _check_seq_len
from .trace import TraceError, flatten, trace_scan, unflatten, variable_scope

BasicDecoderOutput = namedtuple("BasicDecoderOutput", ["rnn_output", "sample_id"])
BasicDecoderOutput.__doc__ = "TF1's BasicDecoderOutput: rnn_output [B, T, units], sample_id [B, T]."


class Dense:
    """TF1 tf.layers.Dense(units, activation=None, use_bias=True, name=None) as an object (for
    BasicDecoder's output_layer): the parameters are made at the first call, in the scope of
    that call (e.g. decoder/dense/kernel), and shared by later calls."""

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = None, bias_initializer: Any = "zeros",
                 name: str | None = None):
        self.units, self.activation, self.use_bias = units, activation, use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.name = name or "dense"
        self.built = False

    def __call__(self, x: Node) -> Node:
        y = layers.dense(x, self.units, self.activation, self.use_bias, self.kernel_initializer,
                         self.bias_initializer, name=self.name, reuse=True if self.built else None)
        self.built = True
        return y


class TrainingHelper:
    """TF1 TrainingHelper(inputs, sequence_length, time_major=False): the decoder reads
    `inputs` [B, T, I] (teacher forcing); instance b stops after sequence_length[b] steps."""

    def __init__(self, inputs: Node, sequence_length: Any, time_major: bool = False,
                 name: str | None = None):
        if not isinstance(inputs, Node) or inputs.ndim != 3:
            raise ValueError(f"TrainingHelper: inputs must be a [batch, time, depth] array, "
                             f"received {inputs!r}")
        self.inputs = inputs if time_major else dsl.transpose(inputs, (1, 0, 2))  # [T, B, I]
        T, B = self.inputs.shape[0], self.inputs.shape[1]
        self.sequence_length = _check_seq_len(sequence_length, B, T, "TrainingHelper")
        self.batch_size = B


class GreedyEmbeddingHelper:
    """TF1 GreedyEmbeddingHelper(embedding, start_tokens, end_token): the decoder reads
    embedding(start_tokens) first, then the embedding of its own argmax output; a sequence is
    finished when it outputs end_token. embedding: a table [vocab, dim] or a callable ids ->
    [B, dim]. start_tokens: an integer array [B] (an input) or a list; end_token: an int."""

    def __init__(self, embedding: Any, start_tokens: Any, end_token: int):
        if callable(embedding) and not isinstance(embedding, Node):
            self.embed: Callable[[Node], Node] = embedding
        elif isinstance(embedding, Node) and embedding.ndim == 2:
            self.embed = lambda ids: dsl.embedding_lookup(embedding, ids)
        else:
            raise TypeError(f"GreedyEmbeddingHelper: embedding must be a [vocab, dim] array or a "
                            f"callable, received {embedding!r}")
        if isinstance(start_tokens, (list, tuple, np.ndarray)):
            vals = [int(v) for v in np.asarray(start_tokens).ravel()]
            start_tokens = dsl.concat([dsl.reshape(ops.const(v, DType.i32), (1,))
                                       for v in vals], 0)
        if not isinstance(start_tokens, Node) or start_tokens.ndim != 1 or \
                not start_tokens.dtype.is_int:
            raise ValueError(f"GreedyEmbeddingHelper: start_tokens must be an integer [batch] "
                             f"array, received {start_tokens!r}")
        if isinstance(end_token, bool) or not isinstance(end_token, (int, np.integer)):
            raise ValueError(f"GreedyEmbeddingHelper: end_token must be an int, received "
                             f"{end_token!r}")
        self.start_tokens = ops.cast(start_tokens, DType.i32)
        self.end_token = int(end_token)
        self.batch_size = start_tokens.shape[0]


class BasicDecoder:
    """TF1 BasicDecoder(cell, helper, initial_state, output_layer=None): each step runs the
    cell, then output_layer (a callable such as rc.seq2seq.Dense(vocab); None: the cell
    output) on its output; sample_id is the argmax of that."""

    def __init__(self, cell: RNNCell, helper: Any, initial_state: Any,
                 output_layer: Callable[[Node], Node] | None = None):
        self.cell = as_cell(cell)
        if not isinstance(helper, (TrainingHelper, GreedyEmbeddingHelper)):
            raise TypeError(f"BasicDecoder: helper must be a TrainingHelper or a "
                            f"GreedyEmbeddingHelper, received {type(helper).__name__}")
        if output_layer is not None and not callable(output_layer):
            raise TypeError(f"BasicDecoder: output_layer must be callable (e.g. "
                            f"rc.seq2seq.Dense(vocab)), received {output_layer!r}")
        self.helper = helper
        self.initial_state = initial_state
        self.output_layer = output_layer
        self.batch_size = helper.batch_size


def _check_state(cell, state, B, fn):
    flat, tree = flatten(state)
    sizes, _ = flatten(cell.state_size)
    if len(flat) != len(sizes) or not all(isinstance(x, Node) for x in flat):
        raise ValueError(f"{fn}: initial_state must have the structure of the cell's state "
                         f"{cell.state_size}")
    for k, (x, s) in enumerate(zip(flat, sizes)):
        if x.shape != (B, s):
            raise ValueError(f"{fn}: initial_state leaf {k} must have shape [{B},{s}], received "
                             f"[{shape_str(x.shape)}]")
    return flat, tree


def dynamic_decode(decoder: BasicDecoder, output_time_major: bool = False,
                   impute_finished: bool = False, maximum_iterations: int | None = None,
                   parallel_iterations: int = 32, swap_memory: bool = False,
                   scope: str | None = None):
    """TF1 tf.contrib.seq2seq.dynamic_decode: returns (BasicDecoderOutput(rnn_output [B, T, V],
    sample_id [B, T] i32), final_state, final_sequence_lengths [B] i32). Parameters under
    `decoder/` (scope replaces it). See the module doc for the loop (one scan) and the
    finished-masking; maximum_iterations is required with GreedyEmbeddingHelper (a static
    int), and with TrainingHelper limits the steps to min(max(sequence_length), it)."""
    fn = "dynamic_decode"
    if not isinstance(decoder, BasicDecoder):
        raise TypeError(f"{fn}: decoder must be a BasicDecoder (BeamSearchDecoder is not "
                        f"supported), received {type(decoder).__name__}")
    if maximum_iterations is not None and (isinstance(maximum_iterations, bool) or
                                           not isinstance(maximum_iterations, int) or
                                           maximum_iterations <= 0):
        raise ValueError(f"{fn}: maximum_iterations must be a positive int, received "
                         f"{maximum_iterations!r}")
    cell, helper, out_layer = decoder.cell, decoder.helper, decoder.output_layer
    B = decoder.batch_size
    flat0, tree = _check_state(cell, decoder.initial_state, B, fn)
    history = isinstance(cell, AttentionWrapper) and cell.alignment_history
    greedy = isinstance(helper, GreedyEmbeddingHelper)
    if greedy and maximum_iterations is None:
        raise ValueError(f"{fn}: GreedyEmbeddingHelper needs maximum_iterations (a static int): "
                         f"the loop runs that many steps, finished sequences masked")

    def step(inp, carries):
        state = unflatten(tree, carries)
        out, new_state = cell(inp, state)
        new_flat = _check_new_state(cell, new_state, tree, carries, fn)
        logits = out_layer(out) if out_layer is not None else out
        if not isinstance(logits, Node) or logits.ndim != 2:
            raise TraceError(f"{fn}: the decoder output must be [batch, units], received "
                             f"{logits!r}")
        ids = dsl.argmax(logits, axis=1, output_type="i32")
        return logits, ids, new_flat, new_state

    with variable_scope(scope or "decoder"):
        if not greedy:
            L = helper.sequence_length
            length_input = ops.cast(dsl.max(L), DType.i64)
            if maximum_iterations is not None:
                length_input = ops.minimum(length_input,
                                           ops.const(maximum_iterations, DType.i64))

            def body(t, carries, xs):
                logits, ids, new_flat, new_state = step(xs[0], carries)
                valid = ops.lt(ops.cast(t, L.dtype), L)
                v2 = dsl.reshape(valid, (B, 1))
                new_flat = [ops.where(v2, n, o) for n, o in zip(new_flat, carries)]
                ys = [ops.where(v2, logits, ops.const(0.0, logits.dtype)),
                      ops.where(valid, ids, ops.const(0, DType.i32))]
                if history:
                    ys.append(ops.where(v2, new_state.alignments,
                                        ops.const(0.0, logits.dtype)))
                return new_flat, ys

            res = trace_scan(body, flat0, [helper.inputs], length_input=length_input)
            final_flat = res[:len(flat0)]
            ys = res[len(flat0):]
            lengths = ops.cast(L, DType.i32)
            if maximum_iterations is not None:
                lengths = ops.minimum(lengths, ops.const(maximum_iterations, DType.i32))
        else:
            first = helper.embed(helper.start_tokens)
            finished0 = ops.lt(helper.start_tokens, ops.const(-1, DType.i32))  # all False
            len0 = ops.mul(helper.start_tokens, ops.const(0, DType.i32))        # zeros [B]
            end = ops.const(helper.end_token, DType.i32)
            n_state = len(flat0)

            def body(t, carries, xs):
                state_c = carries[:n_state]
                inp, finished, lens = carries[n_state:]
                logits, ids, new_flat, new_state = step(inp, state_c)
                f2 = dsl.reshape(finished, (B, 1))
                new_flat = [ops.where(f2, o, n) for n, o in zip(new_flat, state_c)]
                ids_out = ops.where(finished, ops.const(0, DType.i32), ids)
                ys = [ops.where(f2, ops.const(0.0, logits.dtype), logits), ids_out]
                if history:
                    ys.append(ops.where(f2, ops.const(0.0, logits.dtype), new_state.alignments))
                new_lens = ops.add(lens, ops.cast(dsl.logical_not(finished), DType.i32))
                new_finished = dsl.logical_or(finished, ops.eq(ids, end))
                nxt = helper.embed(ops.where(new_finished, end, ids))
                if nxt.shape != inp.shape or nxt.dtype != inp.dtype:
                    raise TraceError(f"{fn}: the embedding of the ids is "
                                     f"{nxt.dtype}[{shape_str(nxt.shape)}] but of the start "
                                     f"tokens {inp.dtype}[{shape_str(inp.shape)}]")
                return new_flat + [nxt, new_finished, new_lens], ys

            res = trace_scan(body, flat0 + [first, finished0, len0], [],
                             length=maximum_iterations)
            final_flat = res[:n_state]
            lengths = res[n_state + 2]
            ys = res[n_state + 3:]
    rnn_output, sample_id = ys[0], ys[1]
    if not output_time_major:
        rnn_output = dsl.transpose(rnn_output, (1, 0, 2))
        sample_id = dsl.transpose(sample_id, (1, 0))
    final_state = unflatten(tree, final_flat)
    if history:
        final_state = final_state._replace(alignment_history=ys[2])  # [T, B, Tm], as TF1's stack()
    return BasicDecoderOutput(rnn_output, sample_id), final_state, lengths


__all__ = ["BasicDecoder", "BasicDecoderOutput", "Dense", "GreedyEmbeddingHelper",
           "TrainingHelper", "dynamic_decode"]
