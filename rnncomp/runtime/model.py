"""Model: a traced function with named inputs and parameters, run by any backend.

    m = rnncomp.Model(fn, inputs={"X": rnncomp.Input((None, 28, 28))})
    params = m.init(seed=0)
    out = m(params, X=x)                    # reference interpreter
    out = m(params, X=x)                    # backend="auto": compiled (Numba), cached
    out = m(params, X=x, backend="interp")  # the NumPy reference interpreter
    logits = m.predict(params, batch_size=1000, X=x_test)   # batched, outputs concatenated

Input conversion policy (documented in docs/dsl.md): float inputs of another float or integer
dtype are converted to the input's dtype; non-contiguous and Fortran-ordered arrays are copied to
C order; integer inputs (lengths, labels) must be integers; every value check (shape, dtype,
ranges) happens before any kernel runs, with an error naming the argument.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..frontend import initializers
from ..ir.dtypes import DType, as_dtype
from . import threads
from .inputs import convert_input
from .interp import Context, InputError, NonFiniteError, evaluate
from ..ir import provenance
from ..ir.printer import adopt
from ..ir.graph import Graph, Node, Op, Shape, shape_str
from ..frontend.trace import ParamSpec, TraceContext, TraceError, flatten, tracing, unflatten


@dataclass(frozen=True)
class Input:
    """Declares a model input: shape entries are ints or symbol names; None means "B" first and
    "T" second (the usual [batch, time, features] layout)."""

    shape: tuple
    dtype: Any = None

    def resolved_shape(self) -> Shape:
        out = []
        for k, d in enumerate(self.shape):
            if d is None:
                out.append({0: "B", 1: "T"}.get(k, f"D{k}"))
            elif isinstance(d, str):
                out.append(d)
            elif isinstance(d, (int, np.integer)) and d > 0:
                out.append(int(d))
            else:
                raise ValueError(f"Input: dimension {k} must be a positive int, a symbol name or "
                                 f"None, received {d!r}")
        return tuple(out)


@dataclass
class Traced:
    graph: Graph
    params: dict[str, ParamSpec]
    output_tree: Any
    checks: list
    input_names: list[str]


def trace(fn: Callable[..., Any], inputs: Mapping[str, Input | tuple], dtype: Any = "f32") -> Traced:
    """Trace fn(**inputs) into a Graph whose inputs are the named inputs, the implicit
    "@training"/"@seed"/"@example_offset" inputs if used, then the parameters in creation
    order."""
    dtype = as_dtype(dtype)
    ctx = TraceContext(dtype)
    nodes: dict[str, Node] = {}
    for name, spec in inputs.items():
        if not isinstance(spec, Input):
            spec = Input(tuple(spec))
        if name.startswith("@"):
            raise ValueError(f"inputs: names starting with '@' are reserved, received {name!r}")
        nodes[name] = _input_node(name, spec, dtype)
    prov = provenance.Provenance()  # creation order and source lines (printed names, inspect)
    with tracing(ctx), provenance.recording(prov, tracing=True):
        out = fn(**nodes)
    flat, tree = flatten(out)
    for k, o in enumerate(flat):
        if not isinstance(o, Node):
            raise TraceError(f"the model function must return rnncomp arrays (in tuples, lists "
                             f"or dicts); output leaf {k} is {type(o).__name__}")
    implicit = [ctx.inputs[k] for k in sorted(ctx.inputs)]
    params = [node for node, _, _ in ctx.params.values()]
    graph = Graph(list(nodes.values()) + implicit + params, flat, ctx.unrolls)
    adopt(graph, prov)
    return Traced(graph, {k: s for k, (_, s, _) in ctx.params.items()}, tree, ctx.checks,
                  list(nodes))


def _input_node(name: str, spec: Input, dtype: DType) -> Node:
    from ..ir import ops

    dt = as_dtype(spec.dtype) if spec.dtype is not None else dtype
    return ops.make(Op.INPUT, name=name, shape=spec.resolved_shape(), dtype=dt)


class Model:
    """A traced model: its graph, parameter specs, and runners for every backend."""

    def __init__(self, fn: Callable[..., Any], inputs: Mapping[str, Input | tuple],
                 dtype: Any = "f32", name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "model")
        self.dtype = as_dtype(dtype)
        self.input_specs = dict(inputs)
        t = trace(fn, inputs, self.dtype)
        self.graph: Graph = t.graph
        self.param_specs: dict[str, ParamSpec] = t.params
        self.output_tree = t.output_tree
        self.checks = t.checks
        self.input_names = t.input_names
        self._compiled: dict[Any, Any] = {}

    # -- parameters ---------------------------------------------------------------------------
    def init(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Fresh parameters. Each parameter's generator is derived from (seed, its name), so
        adding a parameter to a model does not change the others."""
        out = {}
        for name, spec in self.param_specs.items():
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
            init = initializers.get(spec.init)
            # np.asarray(order="C"), not ascontiguousarray: that turns 0-d arrays into 1-d ones
            out[name] = np.asarray(init(spec.shape, spec.dtype.np, rng), dtype=spec.dtype.np,
                                   order="C")
        return out

    def check_params(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a dict of arrays, received {type(params).__name__}")
        missing = [k for k in self.param_specs if k not in params]
        if missing:
            extra = [k for k in params if k not in self.param_specs]
            raise InputError(f"params: missing {len(missing)} parameter(s): {', '.join(missing)}"
                             + (f" (unexpected: {', '.join(map(str, extra))})" if extra else ""))
        out = {}
        for name, spec in self.param_specs.items():
            a = np.asarray(params[name])
            if tuple(a.shape) != spec.shape:
                raise InputError(f"params[{name!r}]: expected shape {spec.shape}, received "
                                 f"{tuple(a.shape)}")
            if a.dtype != spec.dtype.np:
                if not np.issubdtype(a.dtype, np.floating):
                    raise InputError(f"params[{name!r}]: expected {spec.dtype}, received {a.dtype}")
                a = a.astype(spec.dtype.np)
            out[name] = np.asarray(a, order="C")
        return out

    # -- inputs -------------------------------------------------------------------------------
    def check_inputs(self, inputs: Mapping[str, Any], training: bool = False,
                     seed: int = 0, example_offset: int = 0
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Validate and convert inputs; returns (arrays by name, bound symbolic dims).

        example_offset: the global index of the batch's first example (random numbers of a
        batch-leading tensor are keyed by it, so a data-parallel shard draws what the whole
        batch draws for its examples)."""
        unknown = [k for k in inputs if k not in self.input_names]
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}; this model takes "
                             f"{', '.join(self.input_names)}")
        ctx = Context()
        out: dict[str, np.ndarray] = {}
        for node in self.graph.inputs:
            if node.op is not Op.INPUT:
                continue
            name = node.name
            if name == "@training":
                out[name] = np.asarray(bool(training))
                continue
            if name == "@seed":
                out[name] = _int64_arg("seed", seed)
                continue
            if name == "@example_offset":
                out[name] = _int64_arg("example_offset", example_offset)
                continue
            if name not in inputs:
                raise InputError(f"missing input {name!r}: expected {node.dtype}"
                                 f"[{shape_str(node.shape)}]")
            out[name] = convert_input(name, inputs[name], node)
            ctx.bind(node, out[name], f"input {name!r}")
        for sym, v in ctx.dims.items():
            if v == 0:
                who = [n.name for n in self.graph.inputs if n.op is Op.INPUT and sym in n.shape]
                what = {"B": "batch instance", "T": "time step"}.get(sym, "element")
                raise InputError(f"input {who[0]!r}: dimension {sym} is 0; rnncomp needs at least "
                                 f"one {what} ({sym} >= 1)")
        for chk in self.checks:
            self._run_check(chk, out, ctx)
        return out, dict(ctx.dims)

    def _run_check(self, chk, arrays, ctx) -> None:
        a = arrays.get(chk.input_name)
        if a is None:
            return
        if chk.kind == "range":
            hi = chk.args["hi"]
            hi = ctx.dims.get(hi, hi) if isinstance(hi, str) else hi
            lo = chk.args["lo"]
            bad = (a < lo) | (a > hi)
            if bad.any():
                k = int(np.argmax(bad))
                raise InputError(f"{chk.input_name!r} ({chk.args['what']}): values must be in "
                                 f"[{lo}, {hi}], received {a.flat[k]} at index {k}")
        elif chk.kind == "labels":
            depth = chk.args["depth"]
            bad = (a < 0) | (a >= depth)
            if bad.any():
                k = int(np.argmax(bad))
                raise InputError(f"{chk.input_name!r} (labels): values must be in [0, {depth}), "
                                 f"received {a.flat[k]} at index {k}")

    def arguments(self, params, inputs, training=False, seed=0,
                  example_offset=0) -> list[np.ndarray]:
        """Positional arrays for self.graph.inputs, validated."""
        arrays, _ = self.check_inputs(inputs, training, seed, example_offset)
        p = self.check_params(params)
        return [arrays[n.name] if n.op is Op.INPUT else p[n.name] for n in self.graph.inputs]

    # -- running ------------------------------------------------------------------------------
    def positional_error(self, what: str, n: int) -> TypeError:
        """The error for inputs passed by position (they are keyword-only)."""
        names = ", ".join(f"{k}=..." for k in self.input_names)
        return TypeError(f"{what}: pass inputs by name: {names} (received {n} positional "
                         f"argument{'s' if n != 1 else ''} after params)")

    def __call__(self, params: Mapping[str, Any], *args: Any, training: bool = False,
                 seed: int = 0, backend: str = "auto", check_finite: bool = False,
                 example_offset: int = 0, **inputs: Any) -> Any:
        """Run the model: m(params, X=..., L=...). backend="auto" (the default) runs the
        compiled CPU kernels (the interpreter if compiling is impossible, with a warning);
        "interp", "cpu" or "cuda" choose one."""
        if args:
            raise self.positional_error(f"{self.name}(params, ...)", len(args))
        return self.run(params, inputs, training=training, seed=seed, backend=backend,
                        check_finite=check_finite, example_offset=example_offset)

    def run(self, params, inputs: Mapping[str, Any], *, training: bool = False, seed: int = 0,
            backend: str = "auto", check_finite: bool = False, example_offset: int = 0) -> Any:
        from .compiler import AUTO, check_backend_name, compile_auto

        check_backend_name(backend)
        args = self.arguments(params, inputs, training, seed, example_offset)
        threads.ensure_applied()
        compiled = None
        if backend == AUTO:
            compiled = compile_auto(self.graph, self._compiled)
        elif backend != "interp":
            compiled = self.compile(backend)
        if compiled is None:
            outs = evaluate(self.graph, args, Context(check_finite=check_finite))
        else:
            outs = compiled(*args)
            if check_finite and not (_all_finite(args) and _all_finite(outs)):
                # compiled kernels do not check as they go: find the op and step on the interpreter
                evaluate(self.graph, args, Context(check_finite=True))
                raise NonFiniteError(f"backend {backend!r} produced NaN/Inf outputs where the "
                                     f"interpreter did not (a backend discrepancy)")
        return unflatten(self.output_tree, outs)

    def compile(self, backend: str = "cpu", **options: Any):
        """The graph compiled for a backend ("cpu" or "cuda"); cached per options."""
        from .compiler import compile_graph

        key = (backend, tuple(sorted(options.items())))
        if key not in self._compiled:
            self._compiled[key] = compile_graph(self.graph, backend=backend, **options)
        return self._compiled[key]

    # -- gradients (rnncomp.runtime.grad) --------------------------------------------------------------
    def grad_graph(self, output: Any = 0, wrt: Any = None, recompute: bool = False,
                   checkpoint_every: int | None = None) -> Graph:
        """The forward + backward graph of d outputs[output] / d wrt (cached); print it to see
        the BPTT reverse scan (with checkpoint_every=k: the reverse scan over segments). See
        rnncomp.runtime.grad.model_grad_graph."""
        from .grad import model_grad_graph

        return model_grad_graph(self, output, wrt, recompute=recompute,
                                checkpoint_every=checkpoint_every)

    def value_and_grad(self, params: Mapping[str, Any], *args: Any, wrt: Any = None,
                       output: Any = 0, training: bool = False, seed: int = 0,
                       backend: str = "auto", check_finite: bool = False,
                       example_offset: int = 0, recompute: bool = False,
                       checkpoint_every: int | None = None,
                       **inputs: Any) -> tuple[Any, dict]:
        """(outputs, {name: gradient}) of the scalar output `output`; see rnncomp.runtime.grad."""
        from .grad import value_and_grad

        if args:
            raise self.positional_error(f"{self.name}.value_and_grad(params, ...)", len(args))

        res = value_and_grad(self, params, wrt=wrt, output=output, training=training,
                             seed=seed, backend=backend, check_finite=check_finite,
                             example_offset=example_offset, recompute=recompute,
                             checkpoint_every=checkpoint_every, **inputs)
        if check_finite and backend != "interp" and not _all_finite(
                flatten(res)[0] + [params[k] for k in self.param_specs if k in params]
                + [v for k, v in inputs.items() if k in self.input_names]):
            # compiled kernels do not check as they go: rerun on the interpreter, which raises
            # NonFiniteError naming the op and time step
            return self.value_and_grad(params, wrt=wrt, output=output, training=training,
                                       seed=seed, backend="interp", check_finite=True,
                                       example_offset=example_offset, recompute=recompute,
                                       checkpoint_every=checkpoint_every, **inputs)
        return res

    # -- batched inference ----------------------------------------------------------------------
    def predict(self, params: Mapping[str, Any], *args: Any, batch_size: int = 1000,
                backend: str = "auto", outputs: Any = None, **inputs: Any) -> Any:
        """The model's outputs over a whole data set, run in batches of `batch_size` examples
        (axis 0 of every batch-leading input, i.e. every input whose first dimension is the
        symbolic batch B) and concatenated along axis 0; other outputs (a scalar loss) are
        averaged over batches, weighted by batch size. Inference mode (training=False).

        `outputs`: None for the model's whole output structure, or one output selector (an index
        or a dict key, as in value_and_grad's `output`) for just that array. Inputs that the
        outputs do not need (labels for logits) may be left out: they are filled with zeros."""
        if args:
            raise self.positional_error(f"{self.name}.predict(params, ...)", len(args))
        from .grad import output_index

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
                batch_size <= 0:
            raise ValueError(f"predict: batch_size must be a positive int, received "
                             f"{batch_size!r}")
        batched = [n.name for n in self.graph.inputs
                   if n.op is Op.INPUT and not n.name.startswith("@") and n.shape
                   and n.shape[0] == "B"]
        given = self._batched_inputs(inputs)
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        n = arrays[given[0]].shape[0] if arrays[given[0]].ndim else 0
        for k in given:
            if arrays[k].ndim == 0 or arrays[k].shape[0] != n:
                raise InputError(f"predict: batched inputs must have the same number of "
                                 f"examples on axis 0: {given[0]!r} has {n}, {k!r} has "
                                 f"{arrays[k].shape[0] if arrays[k].ndim else 'none (0-d)'}")
        if n == 0:
            raise InputError(f"predict: {given[0]!r} has no examples")
        for k in batched:  # a batched input left out: zeros (e.g. labels for inference)
            if k not in arrays:
                node = self.graph.input_named(k)
                dims = {}
                for nd in self.graph.inputs:
                    if nd.op is Op.INPUT and nd.name in arrays:
                        for d, v in zip(nd.shape, arrays[nd.name].shape):
                            if isinstance(d, str):
                                dims.setdefault(d, v)
                try:
                    shape = tuple(dims[d] if isinstance(d, str) else d for d in node.shape)
                except KeyError as e:
                    raise InputError(f"predict: missing input {k!r} (its shape "
                                     f"[{shape_str(node.shape)}] is not known from the others)"
                                     ) from e
                arrays[k] = np.zeros(shape, node.dtype.np)
        pick = None if outputs is None else output_index(self, outputs)
        flat_parts: list[list[np.ndarray]] = []
        sizes = []
        for start in range(0, n, int(batch_size)):
            stop = min(start + int(batch_size), n)
            chunk = {k: (v[start:stop] if k in batched else v) for k, v in arrays.items()}
            out, _ = flatten(self.run(params, chunk, backend=backend))
            flat_parts.append([np.asarray(o) for o in out] if pick is None
                              else [np.asarray(out[pick])])
            sizes.append(stop - start)
        merged = []
        w = np.asarray(sizes, np.float64) / n
        for k in range(len(flat_parts[0])):
            parts = [p[k] for p in flat_parts]
            if parts[0].ndim and all(p.shape[0] == s for p, s in zip(parts, sizes)):
                merged.append(np.concatenate(parts, axis=0))
            else:  # not batch-leading (a scalar loss, a count): the example-weighted mean
                merged.append(np.asarray(sum(p.astype(np.float64) * wk for p, wk in
                                             zip(parts, w)), parts[0].dtype))
        if pick is not None:
            return merged[0]
        return unflatten(self.output_tree, merged)

    def _batched_inputs(self, inputs: Mapping[str, Any]) -> list[str]:
        """The given inputs whose first dimension is the symbolic batch B (predict cuts them)."""
        batched = [n.name for n in self.graph.inputs
                   if n.op is Op.INPUT and not n.name.startswith("@") and n.shape
                   and n.shape[0] == "B"]
        if not batched:
            raise ValueError(f"predict: no input of {self.name} has the symbolic batch "
                             f"dimension B first; call the model directly")
        given = [k for k in batched if k in inputs]
        if not given:
            raise InputError(f"predict: pass at least one batched input by name: "
                             f"{', '.join(f'{k}=...' for k in batched)}")
        return given

    def evaluate(self, params: Mapping[str, Any], *args: Any, labels: Any = None,
                 logits: Any = "logits", batch_size: int = 1000, backend: str = "auto",
                 **inputs: Any) -> dict[str, Any]:
        """Batched evaluation: every output of the model over the data set (as predict), plus
        "accuracy" when `labels` (integer class ids, one per example) is given: the share of
        examples whose argmax over the last axis of the `logits` output equals the label.
        Returns a dict: the outputs by name for a dict-returning model ("outputs" otherwise),
        "accuracy", and "n" (the number of examples)."""
        if args:
            raise self.positional_error(f"{self.name}.evaluate(params, ...)", len(args))
        from .metrics import accuracy

        out = self.predict(params, batch_size=batch_size, backend=backend, **inputs)
        res: dict[str, Any] = dict(out) if isinstance(out, dict) else {"outputs": out}
        if labels is not None:
            if isinstance(out, dict):
                if logits not in out:
                    raise KeyError(f"evaluate: no output {logits!r} to score; the outputs are "
                                   f"{list(out)} (pass logits=<name>)")
                scores = out[logits]
            elif isinstance(out, np.ndarray):
                scores = out
            else:
                scores = out[logits] if not isinstance(logits, str) else None
                if scores is None:
                    raise KeyError("evaluate: the model's outputs are not a dict; pass "
                                   "logits=<index> of the logits output")
            res["accuracy"] = accuracy(scores, labels)
        res["n"] = int(np.asarray(inputs[self._batched_inputs(inputs)[0]]).shape[0])
        return res

    def print_backward(self, output: Any = 0, wrt: Any = None) -> str:
        """Print (and return) the text of the forward + backward graph."""
        text = str(self.grad_graph(output, wrt))
        print(text)
        return text

    def __repr__(self) -> str:
        return (f"<Model {self.name}: inputs {self.input_names}, {len(self.param_specs)} params, "
                f"{len(self.graph.nodes)} nodes>")


def _all_finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in map(np.asarray, arrays) if a.dtype.kind == "f")


def _int64_arg(what: str, value: Any) -> np.ndarray:
    """A run-time integer argument (seed, example_offset) as the int64 the graph takes."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what}: expected an integer, received {value!r}")
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    if not lo <= int(value) <= hi:
        raise InputError(f"{what}: expected an integer in [{lo}, {hi}] (64 bits), received "
                         f"{value}")
    return np.asarray(int(value), np.int64)
