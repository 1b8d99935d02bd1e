"""Decoding with TF1's tf.contrib.seq2seq names: BasicDecoder, TrainingHelper (teacher
forcing), GreedyEmbeddingHelper (greedy decoding), BeamSearchDecoder (beam search, with
tile_batch and gather_tree) and dynamic_decode.

The decoding loop is one scan, compiled like any other:
- TrainingHelper: the scan reads the given decoder inputs and runs max(sequence_length) steps
  (a run-time trip count, as dynamic_rnn).
- GreedyEmbeddingHelper and BeamSearchDecoder: the scan has room for `maximum_iterations`
  steps (required) and a run-time stop (the scan's `stop` carry): the loop ends before the
  first step at which every sequence (every beam) has finished. Each sequence is
  *finished-masked* from the step after its end_token on (greedy: state kept, outputs zero;
  beam search: TF1's rule, a finished beam keeps emitting end_token at no cost), so the steps
  the stop skips would change nothing: the outputs are those of TF1 within each sequence's
  length. The outputs have maximum_iterations steps (TF1 trims them to the steps run); the
  steps after the stop hold zeros (beam search's predicted_ids: end_token, as gather_tree
  fills them); final_sequence_lengths says where each sequence ends (end_token included).

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


def _all(x: Node) -> Node:
    """A bool scalar: every element of the bool array x is True."""
    n_false = dsl.reduce_sum(ops.cast(dsl.logical_not(x), DType.i32))
    return ops.eq(n_false, ops.const(0, DType.i32))


def dynamic_decode(decoder: Any, output_time_major: bool = False,
                   impute_finished: bool = False, maximum_iterations: int | None = None,
                   parallel_iterations: int = 32, swap_memory: bool = False,
                   scope: str | None = None, stop_early: bool = True):
    """TF1 tf.contrib.seq2seq.dynamic_decode: returns (BasicDecoderOutput(rnn_output [B, T, V],
    sample_id [B, T] i32), final_state, final_sequence_lengths [B] i32); with a
    BeamSearchDecoder (FinalBeamSearchDecoderOutput, BeamSearchDecoderState,
    final_sequence_lengths [B, beam] i32). Parameters under `decoder/` (scope replaces it). See
    the module doc for the loop (one scan), its run-time stop and the finished-masking;
    maximum_iterations is required with GreedyEmbeddingHelper and BeamSearchDecoder (a static
    int), and with TrainingHelper limits the steps to min(max(sequence_length), it).
    stop_early=False (rnncomp's): no run-time stop, the loop runs maximum_iterations steps
    (the same results: the skipped steps change nothing)."""
    fn = "dynamic_decode"
    if not isinstance(decoder, (BasicDecoder, BeamSearchDecoder)):
        raise TypeError(f"{fn}: decoder must be a BasicDecoder or a BeamSearchDecoder, "
                        f"received {type(decoder).__name__}")
    if maximum_iterations is not None and (isinstance(maximum_iterations, bool) or
                                           not isinstance(maximum_iterations, int) or
                                           maximum_iterations <= 0):
        raise ValueError(f"{fn}: maximum_iterations must be a positive int, received "
                         f"{maximum_iterations!r}")
    if not isinstance(stop_early, bool):
        raise TypeError(f"{fn}: stop_early must be True or False, received {stop_early!r}")
    if isinstance(decoder, BeamSearchDecoder):
        if maximum_iterations is None:
            raise ValueError(f"{fn}: BeamSearchDecoder needs maximum_iterations (a static int): "
                             f"the loop has room for that many steps and stops when every "
                             f"beam has finished")
        with variable_scope(scope or "decoder"):
            return _beam_search_decode(decoder, maximum_iterations, output_time_major,
                                       stop_early)
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
                inp, finished, lens = carries[n_state:n_state + 3]
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
                return new_flat + [nxt, new_finished, new_lens, _all(new_finished)], ys

            res = trace_scan(body, flat0 + [first, finished0, len0, _all(finished0)], [],
                             length=maximum_iterations, stop=n_state + 3 if stop_early else None)
            final_flat = res[:n_state]
            lengths = res[n_state + 2]
            ys = res[n_state + 4:]
    rnn_output, sample_id = ys[0], ys[1]
    if not output_time_major:
        rnn_output = dsl.transpose(rnn_output, (1, 0, 2))
        sample_id = dsl.transpose(sample_id, (1, 0))
    final_state = unflatten(tree, final_flat)
    if history:
        final_state = final_state._replace(alignment_history=ys[2])  # [T, B, Tm], as TF1's stack()
    return BasicDecoderOutput(rnn_output, sample_id), final_state, lengths


BeamSearchDecoderOutput = namedtuple("BeamSearchDecoderOutput",
                                     ["scores", "predicted_ids", "parent_ids"])
BeamSearchDecoderOutput.__doc__ = (
    "TF1's BeamSearchDecoderOutput, each [B, T, beam] (time-major: [T, B, beam]): scores (the "
    "beam's score after each step, length penalty applied), predicted_ids (the token chosen), "
    "parent_ids (the beam it continues).")
BeamSearchDecoderState = namedtuple(
    "BeamSearchDecoderState",
    ["cell_state", "log_probs", "finished", "lengths", "accumulated_attention_probs"])
BeamSearchDecoderState.__doc__ = (
    "TF1's BeamSearchDecoderState: cell_state (leaves [B*beam, ...]), log_probs [B, beam], "
    "finished [B, beam] bool, lengths [B, beam] i64 (each hypothesis's length, end_token "
    "included), accumulated_attention_probs () (no coverage penalty).")
FinalBeamSearchDecoderOutput = namedtuple("FinalBeamSearchDecoderOutput",
                                          ["predicted_ids", "beam_search_decoder_output"])
FinalBeamSearchDecoderOutput.__doc__ = (
    "TF1's FinalBeamSearchDecoderOutput: predicted_ids [B, T, beam] (whole hypotheses, "
    "backtracked by gather_tree, best beam first), beam_search_decoder_output (the per-step "
    "BeamSearchDecoderOutput).")


def _embedding_fn(embedding: Any, fn: str) -> Callable[[Node], Node]:
    if callable(embedding) and not isinstance(embedding, Node):
        return embedding
    if isinstance(embedding, Node) and embedding.ndim == 2:
        return lambda ids: dsl.embedding_lookup(embedding, ids)
    raise TypeError(f"{fn}: embedding must be a [vocab, dim] array or a callable, received "
                    f"{embedding!r}")


def _int_vector(x: Any, what: str, fn: str) -> Node:
    if isinstance(x, (list, tuple, np.ndarray)):
        vals = [int(v) for v in np.asarray(x).ravel()]
        x = dsl.concat([dsl.reshape(ops.const(v, DType.i32), (1,)) for v in vals], 0)
    if not isinstance(x, Node) or x.ndim != 1 or not x.dtype.is_int:
        raise ValueError(f"{fn}: {what} must be an integer [batch] array, received {x!r}")
    return ops.cast(x, DType.i32)


def _check_int(v: Any, what: str, fn: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{fn}: {what} must be an int >= {low}, received {v!r}")
    return int(v)


def tile_batch(t: Any, multiplier: int, name: str | None = None) -> Any:
    """TF1 tf.contrib.seq2seq.tile_batch: each array of the structure t, [B, ...], becomes
    [B*multiplier, ...] with every batch entry repeated multiplier times in a row (entry b's
    copies are rows b*multiplier ... b*multiplier + multiplier-1), the layout BeamSearchDecoder
    expects for its initial_state and for an attention mechanism's memory. The batch size must
    be static (rnncomp keeps a symbolic batch B as an axis of its own: B*multiplier is not a
    shape it can name); leaves that are not arrays (None, ()) are kept."""
    m = _check_int(multiplier, "multiplier", "tile_batch", 1)
    flat, tree = flatten(t)
    out = []
    for k, x in enumerate(flat):
        if not isinstance(x, Node):
            out.append(x)
            continue
        if x.ndim == 0:
            raise ValueError(f"tile_batch: leaf {k} is a scalar; expected [batch, ...]")
        B, rest = x.shape[0], tuple(x.shape[1:])
        if not isinstance(B, int):
            raise ValueError(f"tile_batch: leaf {k} has the symbolic batch size {B!r} "
                             f"([{shape_str(x.shape)}]); beam search needs a static batch size "
                             f"(e.g. rc.Input((64, None), 'i64') for the source ids)")
        y = ops.broadcast(dsl.reshape(x, (B, 1) + rest), (B, m) + rest)
        out.append(dsl.reshape(y, (B * m,) + rest))
    return unflatten(tree, out)


def _pick_beams(x: Node, idx: Node) -> Node:
    """x [B, K, *R], idx [B, K'] in [0, K) -> y [B, K', *R] with y[b, j] = x[b, idx[b, j]]."""
    B, K = x.shape[0], x.shape[1]
    Kp = idx.shape[1]
    R = tuple(x.shape[2:])
    nr = len(R)
    xt = dsl.transpose(x, (0,) + tuple(range(2, 2 + nr)) + (1,))            # [B, *R, K]
    xb = ops.broadcast(dsl.reshape(xt, (B, 1) + R + (K,)), (B, Kp) + R + (K,))
    ib = ops.broadcast(dsl.reshape(idx, (B, Kp) + (1,) * nr), (B, Kp) + R)
    return dsl.take(xb, ib)


def gather_tree(step_ids: Node, parent_ids: Node, max_sequence_lengths: Node,
                end_token: int, name: str | None = None) -> Node:
    """TF1 tf.contrib.seq2seq.gather_tree: whole beams from per-step choices, time-major.
    step_ids, parent_ids: [T, B, beam] ints (a step's token and the beam it continues);
    max_sequence_lengths [B]. Returns [T, B, beam] i32: for batch b and beam k, the tokens of
    the hypothesis that is beam k at step max_sequence_lengths[b]-1, followed back through the
    parents; end_token from that step on and after the first end_token. Parents must be in
    [0, beam) (an index error otherwise). Two scans (back, then forward), compiled."""
    fn = "gather_tree"
    for what, x in (("step_ids", step_ids), ("parent_ids", parent_ids)):
        if not isinstance(x, Node) or x.ndim != 3 or not x.dtype.is_int:
            raise ValueError(f"{fn}: {what} must be an integer [time, batch, beam] array, "
                             f"received {x!r}")
    if tuple(step_ids.shape) != tuple(parent_ids.shape):
        raise ValueError(f"{fn}: step_ids [{shape_str(step_ids.shape)}] and parent_ids "
                         f"[{shape_str(parent_ids.shape)}] must have one shape")
    T, B, K = step_ids.shape
    if not isinstance(max_sequence_lengths, Node) or max_sequence_lengths.ndim != 1 or \
            not max_sequence_lengths.dtype.is_int or max_sequence_lengths.shape[0] != B:
        raise ValueError(f"{fn}: max_sequence_lengths must be an integer [{B}] array, "
                         f"received {max_sequence_lengths!r}")
    end_token = _check_int(end_token, "end_token", fn, 0)
    end = ops.const(end_token, DType.i32)
    ids, par = ops.cast(step_ids, DType.i32), ops.cast(parent_ids, DType.i32)
    L = ops.cast(max_sequence_lengths, DType.i32)
    iota = dsl.concat([dsl.reshape(ops.const(k, DType.i32), (1,)) for k in range(K)], 0)
    cur0 = ops.broadcast(dsl.reshape(iota, (1, K)), (B, K))

    def back(t, carries, xs):
        (cur,) = carries
        valid = dsl.reshape(ops.lt(t, L), (B, 1))
        tok = _pick_beams(dsl.reshape(xs[0], (B, K)), cur)
        parent = _pick_beams(dsl.reshape(xs[1], (B, K)), cur)
        return [ops.where(valid, parent, cur)], [ops.where(valid, tok, end)]

    (_, beams) = trace_scan(back, [cur0], [ids, par], reverse=True)
    ended0 = ops.lt(cur0, ops.const(0, DType.i32))  # all False [B, K]

    def fwd(t, carries, xs):
        (ended,) = carries
        tok = ops.where(ended, end, xs[0])
        return [dsl.logical_or(ended, ops.eq(tok, end))], [tok]

    (_, out) = trace_scan(fwd, [ended0], [beams])
    return out


class BeamSearchDecoder:
    """TF1 BeamSearchDecoder(cell, embedding, start_tokens, end_token, initial_state,
    beam_width, output_layer=None, length_penalty_weight=0.0, coverage_penalty_weight=0.0):
    beam search inside dynamic_decode. start_tokens [B] (static B); initial_state: the cell's
    state for B*beam_width rows, tiled with tile_batch (an AttentionWrapper's memory too). Each
    step scores every continuation of every beam, log_prob(beam) + log_softmax(logits), divided
    by TF1's length penalty ((5 + length) / 6) ** length_penalty_weight, and keeps the
    beam_width best per batch entry (ties: the lower beam, then the lower token first). A
    finished beam continues only with end_token, at log-prob 0 (its other tokens at the most
    negative float). At the first step only beam 0 is live (the others start at -inf)."""

    def __init__(self, cell: RNNCell, embedding: Any, start_tokens: Any, end_token: int,
                 initial_state: Any, beam_width: int,
                 output_layer: Callable[[Node], Node] | None = None,
                 length_penalty_weight: float = 0.0, coverage_penalty_weight: float = 0.0,
                 reorder_tensor_arrays: bool = True):
        fn = "BeamSearchDecoder"
        self.cell = as_cell(cell)
        self.embed = _embedding_fn(embedding, fn)
        self.start_tokens = _int_vector(start_tokens, "start_tokens", fn)
        self.batch_size = self.start_tokens.shape[0]
        if not isinstance(self.batch_size, int):
            raise ValueError(f"{fn}: start_tokens has the symbolic batch size "
                             f"{self.batch_size!r}; beam search needs a static batch size "
                             f"(the cell runs on B*beam_width rows, see tile_batch)")
        self.end_token = _check_int(end_token, "end_token", fn, 0)
        self.beam_width = _check_int(beam_width, "beam_width", fn, 1)
        if output_layer is not None and not callable(output_layer):
            raise TypeError(f"{fn}: output_layer must be callable (e.g. rc.seq2seq.Dense(vocab)),"
                            f" received {output_layer!r}")
        self.output_layer = output_layer
        for what, v in (("length_penalty_weight", length_penalty_weight),
                        ("coverage_penalty_weight", coverage_penalty_weight)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ValueError(f"{fn}: {what} must be a float, received {v!r}")
        if coverage_penalty_weight != 0:
            raise NotImplementedError(f"{fn}: coverage_penalty_weight={coverage_penalty_weight}:"
                                      f" rnncomp has no coverage penalty (0.0 only)")
        self.length_penalty_weight = float(length_penalty_weight)
        self.initial_state = initial_state


def _beam_search_decode(dec: BeamSearchDecoder, max_iter: int, time_major: bool,
                        stop_early: bool):
    fn = "dynamic_decode"
    cell, B, K = dec.cell, dec.batch_size, dec.beam_width
    N = B * K
    flat0, tree = _check_state(cell, dec.initial_state, N, fn)
    n_state = len(flat0)
    dt = flat0[0].dtype
    end = ops.const(dec.end_token, DType.i32)
    start = dsl.reshape(tile_batch(dec.start_tokens, K), (N,))
    first = dec.embed(start)
    if not isinstance(first, Node) or first.ndim != 2 or first.shape[0] != N:
        raise TraceError(f"{fn}: the embedding of the start tokens must be [{N}, dim], received "
                         f"{first!r}")
    zeros_bk = dsl.reshape(ops.mul(tile_batch(dec.start_tokens, K), ops.const(0, DType.i32)),
                           (B, K))
    first_beam = ops.eq(dsl.one_hot(ops.cast(ops.mul(dec.start_tokens, ops.const(0, DType.i32)),
                                             DType.i32), K, DType.i32),
                        ops.const(1, DType.i32))                              # [B, K]
    log_probs0 = ops.where(first_beam, ops.const(0.0, dt), ops.const(float("-inf"), dt))
    finished0 = ops.lt(zeros_bk, ops.const(0, DType.i32))                    # all False
    lengths0 = ops.cast(zeros_bk, DType.i64)
    seq_len0 = zeros_bk
    w = dec.length_penalty_weight

    def body(t, carries, xs):
        state_c = carries[:n_state]
        inp, log_probs, finished, lengths, seq_len, done = carries[n_state:]
        out, new_state = cell(inp, unflatten(tree, state_c))
        new_flat = _check_new_state(cell, new_state, tree, state_c, fn)
        logits = dec.output_layer(out) if dec.output_layer is not None else out
        if not isinstance(logits, Node) or logits.ndim != 2 or logits.shape[0] != N or \
                not isinstance(logits.shape[1], int):
            raise TraceError(f"{fn}: the decoder output must be [{N}, vocab] (static vocab), "
                             f"received {logits!r}")
        V = logits.shape[1]
        if K > V:
            raise TraceError(f"{fn}: beam_width {K} is larger than the vocabulary ({V})")
        if not dec.end_token < V:
            raise TraceError(f"{fn}: end_token {dec.end_token} is not in the vocabulary ({V})")
        step_lp = dsl.reshape(dsl.log_softmax(logits, -1), (B, K, V))
        eos_row = ops.eq(dsl.one_hot(end, V, DType.i32), ops.const(1, DType.i32))   # [V]
        fin3 = dsl.reshape(finished, (B, K, 1))
        masked = ops.where(fin3, ops.where(eos_row, ops.const(0.0, dt),
                                           ops.const(float(np.finfo(dt.np).min), dt)), step_lp)
        total = ops.add(dsl.reshape(log_probs, (B, K, 1)), masked)          # [B, K, V]
        if w != 0:
            grow = dsl.logical_and(dsl.logical_not(fin3), dsl.logical_not(eos_row))
            new_len = ops.add(dsl.reshape(lengths, (B, K, 1)), ops.cast(grow, DType.i64))
            penalty = ops.pow_(ops.div(ops.add(ops.cast(new_len, dt), ops.const(5.0, dt)),
                                      ops.const(6.0, dt)), ops.const(w, dt))
            scores = ops.div(total, penalty)
        else:
            scores = total
        flat_scores = dsl.reshape(scores, (B, K * V))
        flat_total = dsl.reshape(total, (B, K * V))
        picks, vals, lps = [], [], []
        cand = flat_scores
        for _ in range(K):  # top-k by repeated argmax: ties go to the lower index
            idx = dsl.argmax(cand, axis=1, output_type="i32")                  # [B]
            picks.append(idx)
            vals.append(dsl.take(flat_scores, idx))
            lps.append(dsl.take(flat_total, idx))
            hit = ops.eq(dsl.one_hot(idx, K * V, DType.i32), ops.const(1, DType.i32))
            cand = ops.where(hit, ops.const(float("-inf"), dt), cand)
        oh = dsl.stack([dsl.one_hot(i, K * V, DType.i32) for i in picks], 1)   # [B, K, K*V]
        oh4 = dsl.reshape(oh, (B, K, K, V))
        parent = dsl.argmax(dsl.reduce_sum(oh4, 3), axis=2, output_type="i32")  # [B, K]
        word = dsl.argmax(dsl.reduce_sum(oh4, 2), axis=2, output_type="i32")    # [B, K]
        next_scores = dsl.stack(vals, 1)
        next_lp = dsl.stack(lps, 1)
        prev_fin = ops.eq(_pick_beams(ops.cast(finished, DType.i32), parent),
                          ops.const(1, DType.i32))
        next_fin = dsl.logical_or(prev_fin, ops.eq(word, end))
        next_len = ops.add(_pick_beams(lengths, parent),
                           ops.cast(dsl.logical_not(prev_fin), DType.i64))
        moved = []
        for x in new_flat:
            x3 = dsl.reshape(x, (B, K) + tuple(x.shape[1:]))
            moved.append(dsl.reshape(_pick_beams(x3, parent), tuple(x.shape)))
        nxt = dec.embed(dsl.reshape(word, (N,)))
        if nxt.shape != inp.shape or nxt.dtype != inp.dtype:
            raise TraceError(f"{fn}: the embedding of the ids is "
                             f"{nxt.dtype}[{shape_str(nxt.shape)}] but of the start tokens "
                             f"{inp.dtype}[{shape_str(inp.shape)}]")
        t_len = ops.broadcast(dsl.reshape(ops.add(t, ops.const(1, DType.i32)), (1, 1)), (B, K))
        next_seq_len = ops.where(finished, seq_len, t_len)
        new_c = moved + [nxt, next_lp, next_fin, next_len, next_seq_len]
        old_c = list(state_c) + [inp, log_probs, finished, lengths, seq_len]
        # a step after every beam finished changes nothing (what the run-time stop skips)
        new_c = [ops.where(done, o, n) for n, o in zip(new_c, old_c)]
        ys = [ops.where(done, ops.const(0.0, dt), next_scores),
              ops.where(done, ops.const(0, DType.i32), word),
              ops.where(done, ops.const(0, DType.i32), parent)]
        return new_c + [dsl.logical_or(done, _all(next_fin))], ys

    init = flat0 + [first, log_probs0, finished0, lengths0, seq_len0, _all(finished0)]
    res = trace_scan(body, init, [], length=max_iter,
                     stop=n_state + 5 if stop_early else None)
    final_flat = res[:n_state]
    log_probs, finished, lengths, seq_len = res[n_state + 1:n_state + 5]
    scores, ids, parents = res[n_state + 6:]
    max_len = ops.cast(dsl.reduce_max(lengths, axis=1), DType.i32)
    predicted = gather_tree(ids, parents, max_len, dec.end_token)
    if not time_major:
        scores, ids, parents, predicted = (dsl.transpose(x, (1, 0, 2))
                                           for x in (scores, ids, parents, predicted))
    state = BeamSearchDecoderState(unflatten(tree, final_flat), log_probs, finished, lengths, ())
    out = FinalBeamSearchDecoderOutput(predicted, BeamSearchDecoderOutput(scores, ids, parents))
    return out, state, seq_len


__all__ = ["BasicDecoder", "BasicDecoderOutput", "BeamSearchDecoder", "BeamSearchDecoderOutput",
           "BeamSearchDecoderState", "Dense", "FinalBeamSearchDecoderOutput",
           "GreedyEmbeddingHelper", "TrainingHelper", "dynamic_decode", "gather_tree",
           "tile_batch"]
