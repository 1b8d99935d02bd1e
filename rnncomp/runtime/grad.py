"""The user-facing gradient API: gradients of one model output w.r.t. parameters and inputs.

    m = rnncomp.Model(fn, {"X": rnncomp.Input((None, None, 3)), "Y": ...})
    loss, grads = m.value_and_grad(params, X=x, Y=y)       # grads: {param name: array}
    print(m.grad_graph())                                  # forward + BPTT graph, jaxpr style

Everything here sits on `rnncomp.transforms.autodiff.grad_graph`: the backward graph is an ordinary IR
graph (forward outputs, then one gradient per `wrt` name), so it runs on the reference
interpreter or on any compiled backend, and prints like any other graph.

Truncated BPTT (`tbptt_value_and_grad`) threads the final state of one chunk of k steps into the
state inputs of the next chunk. Feeding the state as a new input *value* stops the gradient at
the chunk boundary by construction; with k >= T it is exactly full BPTT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..transforms.autodiff import check_checkpoint_every, grad_graph as _grad_graph
from . import threads
from .interp import Context, evaluate
from ..ir.graph import Graph, Op
from ..frontend.trace import unflatten

__all__ = [
    "output_index",
    "model_grad_graph",
    "value_and_grad",
    "tbptt_value_and_grad",
    "run_graph",
]


# ---------------------------------------------------------------------------------------------
# Selecting one output of a model's output pytree
# ---------------------------------------------------------------------------------------------
def output_index(model: Any, output: int | str | Sequence[int | str] = 0) -> int:
    """The flat graph-output index of one leaf of the model's output structure.

    `output` is an int (position in a tuple/list output), a str (key of a dict output), or a
    tuple path of those for nested outputs (e.g. ``("state", 1)``). A model returning a single
    array has one output: 0.
    """
    path = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    treedef = model.output_tree
    off = 0
    walked: list[Any] = []
    for key in path:
        if treedef is None:
            if key == 0 and not walked:
                break  # a single-array model: output 0 is that array
            raise KeyError(f"output {output!r}: {walked or 'the output'} is a single array, "
                           f"it cannot be indexed by {key!r}")
        kind, extra, defs = treedef
        if kind == "dict":
            if key not in extra:
                raise KeyError(f"output {output!r}: no key {key!r}; the outputs are "
                               f"{list(extra)}")
            pos = list(extra).index(key)
        else:
            if not isinstance(key, (int, np.integer)) or isinstance(key, bool) or \
                    not -len(defs) <= key < len(defs):
                raise KeyError(f"output {output!r}: expected an index in [0, {len(defs)}) of "
                               f"the {kind} of outputs, received {key!r}")
            pos = int(key) % len(defs)
        off += sum(n for n, _ in defs[:pos])
        treedef = defs[pos][1]
        walked.append(key)
    if treedef is not None:
        n = sum(k for k, _ in treedef[2])
        raise ValueError(f"output {output!r} selects a structure of {n} arrays, not one array; "
                         f"select a single array (e.g. the loss)")
    return off


def _default_wrt(model: Any) -> list[str]:
    return [name for name, spec in model.param_specs.items() if spec.trainable]


def _check_wrt(model: Any, wrt: Sequence[str] | None) -> tuple[str, ...]:
    if wrt is None:
        return tuple(_default_wrt(model))
    if isinstance(wrt, str):
        wrt = [wrt]
    names = tuple(wrt)
    known = {n.name: n for n in model.graph.inputs}
    bad = [w for w in names if w not in known or w.startswith("@")]
    if bad:
        raise KeyError(f"wrt: unknown name(s) {bad}; parameters and inputs are "
                       f"{[n for n in known if not n.startswith('@')]}")
    ints = [w for w in names if not known[w].dtype.is_float]
    if ints:
        raise ValueError(f"wrt: {ints} are integer/bool inputs; gradients exist for float "
                         f"parameters and inputs only")
    if len(set(names)) != len(names):
        raise ValueError(f"wrt: duplicate names in {list(names)}")
    return names


def model_grad_graph(model: Any, output: int | str | Sequence = 0,
                     wrt: Sequence[str] | None = None, preoptimize: bool = False,
                     recompute: bool = False, checkpoint_every: int | None = None) -> Graph:
    """The graph (model inputs) -> (forward outputs..., d output / d wrt ...), cached on the
    model. `wrt` defaults to every trainable parameter. recompute=True: BPTT keeps only each
    step's carries and recomputes the rest backwards (rnncomp.transforms.autodiff.vjp);
    checkpoint_every=k: BPTT keeps the carries every k steps and recomputes segment by segment
    (k=1 is recompute=True)."""
    idx = output_index(model, output)
    names = _check_wrt(model, wrt)
    k = check_checkpoint_every(checkpoint_every, recompute)
    cache = model.__dict__.setdefault("_grad_graphs", {})
    key = (idx, names, preoptimize, k)
    if key not in cache:
        cache[key] = _grad_graph(model.graph, idx, list(names), preoptimize=preoptimize,
                                 checkpoint_every=k)
    return cache[key]


def run_graph(model: Any, graph: Graph, args: list[np.ndarray], backend: str = "auto",
              check_finite: bool = False) -> list[np.ndarray]:
    """Run one of the model's graphs on positional arrays with a backend (compiled graphs are
    cached on the model per backend). "auto": compiled for the default backend, the
    interpreter where compiling is impossible (rnncomp.runtime.compiler.compile_auto)."""
    from .compiler import AUTO, check_backend_name, compile_auto, compile_graph

    check_backend_name(backend)
    threads.ensure_applied()
    cache = model.__dict__.setdefault("_compiled_grad", {})
    if backend == AUTO:
        compiled = compile_auto(graph, cache)  # (compiled.graph keeps id(graph) unique)
        if compiled is None:
            return evaluate(graph, args, Context(check_finite=check_finite))
        return list(compiled(*args))
    if backend == "interp":
        return evaluate(graph, args, Context(check_finite=check_finite))
    key = (id(graph), backend)
    if key not in cache:
        cache[key] = (graph, compile_graph(graph, backend=backend))
    return list(cache[key][1](*args))


def value_and_grad(model: Any, params: Mapping[str, Any], *, wrt: Sequence[str] | None = None,
                   output: int | str | Sequence = 0, training: bool = False, seed: int = 0,
                   backend: str = "auto", check_finite: bool = False,
                   example_offset: int = 0, recompute: bool = False,
                   checkpoint_every: int | None = None,
                   **inputs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(outputs with the model's structure, {name: d output / d name}) in one run.

    The selected output must be a float scalar (the loss). Gradients have the dtype and shape
    of their parameter or input. `training` and `seed` set the dropout mode and masks exactly
    as in `model(...)`, so the gradient is the gradient of the very function that was run.
    `example_offset`: the global index of the batch's first example (dropout masks are keyed
    by it; a data-parallel shard passes its start). `recompute`: BPTT stores only the carries
    of each step and recomputes the step's other values in the reverse scan (about 4x less
    activation memory for an LSTM, one more forward step of work per step); the gradients are
    the same. `checkpoint_every=k`: BPTT stores the carries every k steps only and recomputes
    the forward segment by segment in the backward pass (k=1 is recompute=True; larger k keeps
    fewer checkpoints, plus one segment's residuals; the same gradients).
    """
    # compiled backends get the forward graph optimized before differentiation
    from .compiler import AUTO, default_backend

    compiled = backend != "interp" and not (backend == AUTO and default_backend() == "interp")
    g = model_grad_graph(model, output, wrt, preoptimize=compiled, recompute=recompute,
                         checkpoint_every=checkpoint_every)
    names = _check_wrt(model, wrt)
    args = model.arguments(params, inputs, training, seed, example_offset)
    outs = run_graph(model, g, args, backend, check_finite)
    n_fwd = len(model.graph.outputs)
    fwd = unflatten(model.output_tree, outs[:n_fwd])
    grads = {}
    for name, gr in zip(names, outs[n_fwd:]):
        want = model.graph.input_named(name).dtype.np
        # (np.ascontiguousarray would make a scalar parameter's gradient shape (1,))
        grads[name] = np.asarray(gr, dtype=want, order="C")
    return fwd, grads


# ---------------------------------------------------------------------------------------------
# Truncated BPTT
# ---------------------------------------------------------------------------------------------
def _leaf(outputs_flat: list[np.ndarray], model: Any, sel: Any) -> np.ndarray:
    return outputs_flat[output_index(model, sel)]


def tbptt_value_and_grad(model: Any, params: Mapping[str, Any], inputs: Mapping[str, Any], *,
                         k: int, state: Mapping[str, Any], seq_inputs: Sequence[str],
                         initial_state: Mapping[str, Any] | None = None,
                         loss_output: int | str | Sequence = 0,
                         wrt: Sequence[str] | None = None, time_axis: int = 1,
                         length_input: str | None = None, reduce: str = "sum",
                         training: bool = False, seed: int = 0,
                         backend: str = "auto") -> tuple[float, dict[str, np.ndarray],
                                                           dict[str, np.ndarray]]:
    """Truncated BPTT over chunks of k steps: returns (loss, grads, final state).

    The model is written for one chunk: it takes the recurrent state as ordinary inputs
    (e.g. "c0", "h0" passed as `initial_state=` to dynamic_rnn) and returns its final state
    among its outputs. `state` maps each state input name to the output holding its next value
    (e.g. ``{"c0": "c", "h0": "h"}`` for a dict output). `seq_inputs` are the inputs cut along
    `time_axis` into chunks of k steps (X, targets, ...); other inputs are passed unchanged to
    every chunk. `initial_state` gives the first chunk's state values (default: zeros shaped
    like the state output, found by a probe of the first chunk).

    The state of chunk j+1 is the *value* of chunk j's final state, so no gradient flows across
    the boundary (truncation); gradients of all chunks are summed (`reduce="sum"`) or weighted
    by each chunk's share of the steps (`reduce="mean"`, which matches a per-step-mean loss).
    `length_input` names a sequence_length input: each chunk gets the lengths clipped to it.
    With k >= T there is one chunk and the result is exactly full BPTT.
    """
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k: expected a positive number of steps, received {k!r}")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce: expected 'sum' or 'mean', received {reduce!r}")
    seq_inputs = list(seq_inputs)
    if not seq_inputs:
        raise ValueError("seq_inputs: name at least one input to cut along time (e.g. 'X')")
    missing = [n for n in list(seq_inputs) + list(state) if n not in model.input_names]
    if missing:
        raise KeyError(f"inputs {missing} are not inputs of the model ({model.input_names})")
    arrays = {n: np.asarray(v) for n, v in inputs.items()}
    T = arrays[seq_inputs[0]].shape[time_axis]
    for n in seq_inputs:
        if arrays[n].shape[time_axis] != T:
            raise ValueError(f"seq_inputs: {n!r} has {arrays[n].shape[time_axis]} steps on "
                             f"axis {time_axis}, {seq_inputs[0]!r} has {T}")
    names = _check_wrt(model, wrt)
    total_loss = 0.0
    total: dict[str, np.ndarray] | None = None
    cur = dict(initial_state) if initial_state is not None else None
    for start in range(0, T, k):
        stop = min(start + k, T)
        chunk = time_chunk(arrays, seq_inputs, start, stop, time_axis, length_input)
        if cur is None:
            cur = _zero_state(model, params, chunk, state, training, seed)
        chunk.update(cur)
        fwd_flat, grads = _flat_value_and_grad(model, params, chunk, names, loss_output,
                                               training, seed, backend)
        w = (stop - start) / T if reduce == "mean" else 1.0
        total_loss += w * float(_leaf(fwd_flat, model, loss_output))
        if total is None:
            total = {n: (g * g.dtype.type(w) if w != 1.0 else g.copy()) for n, g in grads.items()}
        else:
            for n, g in grads.items():
                total[n] = total[n] + (g * g.dtype.type(w) if w != 1.0 else g)
        cur = {inp: np.array(_leaf(fwd_flat, model, sel)) for inp, sel in state.items()}
    assert total is not None
    return total_loss, total, cur


def time_chunk(arrays: Mapping[str, np.ndarray], seq_inputs: Sequence[str], start: int,
               stop: int, time_axis: int = 1, length_input: str | None = None
               ) -> dict[str, np.ndarray]:
    """The inputs of steps [start, stop): sequence inputs sliced along `time_axis`, lengths
    shifted and clipped to the chunk, everything else as it is (truncated BPTT's chunks)."""
    chunk = dict(arrays)
    for n in seq_inputs:
        idx = [slice(None)] * arrays[n].ndim
        idx[time_axis] = slice(start, stop)
        chunk[n] = arrays[n][tuple(idx)]
    if length_input is not None:
        ln = np.asarray(arrays[length_input])
        chunk[length_input] = np.clip(ln - start, 0, stop - start).astype(ln.dtype)
    return chunk


def _flat_value_and_grad(model, params, inputs, names, output, training, seed, backend):
    g = model_grad_graph(model, output, names)
    args = model.arguments(params, inputs, training, seed)
    outs = run_graph(model, g, args, backend)
    n_fwd = len(model.graph.outputs)
    grads = {n: np.asarray(o).astype(model.graph.input_named(n).dtype.np, copy=False)
             for n, o in zip(names, outs[n_fwd:])}
    return list(outs[:n_fwd]), grads


def _zero_state(model, params, chunk, state, training, seed) -> dict[str, np.ndarray]:
    """Zero initial state values: shapes from the state inputs' declared shapes, with symbolic
    dimensions bound by the chunk's other inputs."""
    out = {}
    dims: dict[str, int] = {}
    for node in model.graph.inputs:
        if node.op is Op.INPUT and node.name in chunk and node.name not in state:
            a = np.asarray(chunk[node.name])
            for d, v in zip(node.shape, a.shape):
                if isinstance(d, str):
                    dims.setdefault(d, v)
    for name in state:
        node = model.graph.input_named(name)
        try:
            shape = tuple(dims[d] if isinstance(d, str) else d for d in node.shape)
        except KeyError as e:
            raise ValueError(f"initial_state: cannot infer the shape of {name!r} "
                             f"[{node.shape}]; pass initial_state=") from e
        out[name] = np.zeros(shape, node.dtype.np)
    return out
