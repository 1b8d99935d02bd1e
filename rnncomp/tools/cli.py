"""The `rnncomp` command line: inspect graphs and kernels, run models, benchmark, manage the cache.

    rnncomp inspect examples/models.py:lstm --stage traced
    rnncomp inspect examples/models.py:lstm --diff traced optimized
    rnncomp inspect examples/models.py:lstm --format svg -o lstm.svg
    rnncomp inspect examples/models.py:lstm --source cpu
    rnncomp run examples/models.py:gru --batch 8 --time 20 --backend cpu --repeat 5
    rnncomp export examples/models.py:lstm --format onnx -o lstm.onnx --check
    rnncomp bench -- --help
    rnncomp cache info

MODEL is `path/to/file.py:function` or `package.module:function`; the function (called with no
arguments, or with `-k NAME=VALUE` keyword arguments) returns an rnncomp.Model or a Graph.

Errors are one line on stderr and a non-zero exit status; `--debug` shows the traceback. Pieces
of the compiler that are not installed (the pass pipeline, a backend, the benchmark script) give
"not available yet: ..." rather than a crash. Also runnable as `python -m rnncomp.tools.cli`.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Graph, Op, shape_str

PROG = "rnncomp"
REPO_ROOT = Path(__file__).resolve().parents[2]

# exit statuses
EXIT_ERROR = 1  # bad model, unknown stage, failed run...
EXIT_USAGE = 2  # argparse's status for bad command lines
EXIT_UNAVAILABLE = 3  # a piece of the compiler is not installed yet


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


class NotAvailable(CLIError):
    """A piece of rnncomp this command needs has not landed (or is not installed)."""

    def __init__(self, what: str):
        super().__init__(f"not available yet: {what}", EXIT_UNAVAILABLE)


# ---------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------
def _parse_kwargs(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise CLIError(f"-k/--kwarg: expected NAME=VALUE, received {item!r}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text  # a bare word is a string: -k activation=relu
    return out


def _import_target(target: str) -> Any:
    """Import the module part of MODEL: a .py file path or a dotted module name."""
    looks_like_file = target.endswith(".py") or os.sep in target or "/" in target
    if looks_like_file:
        path = Path(target)
        if not path.is_file():
            raise CLIError(f"MODEL: file {target!r} not found")
        name = f"_rnncomp_cli_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CLIError(f"MODEL: cannot load {target!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        # the file's own folder is importable, as with `python file.py`
        sys.path.insert(0, str(path.resolve().parent))
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise CLIError(f"MODEL: importing {target!r} failed: {type(e).__name__}: "
                           f"{_one_line(e)}") from e
        return module
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and (target == e.name or target.startswith(e.name + ".")):
            raise CLIError(f"MODEL: no module named {target!r} (give FILE.py:FUNCTION or "
                           f"package.module:FUNCTION)") from e
        raise CLIError(f"MODEL: importing {target!r} failed: {type(e).__name__}: "
                       f"{_one_line(e)}") from e
    except Exception as e:
        raise CLIError(f"MODEL: importing {target!r} failed: {type(e).__name__}: "
                       f"{_one_line(e)}") from e


def load_model(spec: str, kwargs: dict[str, Any] | None = None) -> Any:
    """The Model or Graph named by `FILE.py:FUNCTION` or `package.module:FUNCTION`."""
    from ..runtime.model import Model

    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise CLIError(f"MODEL: expected FILE.py:FUNCTION or package.module:FUNCTION, received "
                       f"{spec!r}")
    module = _import_target(target)
    if not hasattr(module, func):
        available = sorted(k for k, v in vars(module).items()
                           if callable(v) and not k.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
        hint = f"; it defines {', '.join(available)}" if available else ""
        raise CLIError(f"MODEL: {target!r} has no function {func!r}{hint}")
    obj = getattr(module, func)
    if not isinstance(obj, (Model, Graph)):
        if not callable(obj):
            raise CLIError(f"MODEL: {spec!r} is a {type(obj).__name__}, not a function returning "
                           f"an rnncomp.Model or Graph")
        try:
            obj = obj(**(kwargs or {}))
        except Exception as e:
            raise CLIError(f"MODEL: {spec}() raised {type(e).__name__}: {_one_line(e)}") from e
    elif kwargs:
        raise CLIError(f"MODEL: {spec!r} is already a {type(obj).__name__}; -k applies to "
                       f"functions only")
    if not isinstance(obj, (Model, Graph)):
        raise CLIError(f"MODEL: {spec}() returned {type(obj).__name__}, expected an "
                       f"rnncomp.Model or rnncomp.Graph")
    return obj


def _graph_of(obj: Any) -> Graph:
    return obj if isinstance(obj, Graph) else obj.graph


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Stages: traced, each pass of the pipeline, optimized, backward
# ---------------------------------------------------------------------------------------------
def _import_passes():
    try:
        from ..transforms import passes
    except ImportError as e:
        if getattr(e, "name", None) in (f"{__package__}.passes", "passes", None):
            raise NotAvailable("the optimizing passes (rnncomp.transforms.passes)") from e
        raise
    return passes


def _pass_name(p: Any) -> str:
    if isinstance(p, str):
        return p
    if isinstance(p, tuple) and p and isinstance(p[0], str):
        return p[0]
    for attr in ("name", "__name__"):
        v = getattr(p, attr, None)
        if isinstance(v, str):
            return v
    return str(p)


def pass_names() -> list[str]:
    """Names of the passes of rnncomp.transforms.passes.PIPELINE, in order."""
    passes = _import_passes()
    pipeline = getattr(passes, "PIPELINE", None)
    if pipeline is None:
        raise NotAvailable("rnncomp.transforms.passes.PIPELINE")
    return [_pass_name(p) for p in pipeline]


def _results_graphs(results: Any) -> tuple[Graph, list[tuple[str, Graph]]]:
    """Normalize what optimize() returns into (final graph, [(pass name, graph after it)])."""
    final = None
    per_pass = None
    if isinstance(results, Graph):
        return results, []
    if isinstance(results, tuple) and len(results) == 2 and isinstance(results[0], Graph):
        final, per_pass = results
    else:
        final = getattr(results, "graph", None)
        for attr in ("passes", "results", "per_pass", "stages", "steps"):
            if hasattr(results, attr):
                per_pass = getattr(results, attr)
                break
        if per_pass is None and isinstance(results, (list, tuple)):
            per_pass = results
    pairs: list[tuple[str, Graph]] = []
    if isinstance(per_pass, dict):
        per_pass = list(per_pass.items())
    for item in per_pass or ():
        if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], Graph):
            pairs.append((str(item[0]), item[1]))
            continue
        g = getattr(item, "graph", None)
        if g is None:
            g = getattr(item, "after", None)
        name = getattr(item, "name", None) or _pass_name(getattr(item, "pass_", item))
        if isinstance(g, Graph):
            pairs.append((str(name), g))
    if final is None and pairs:
        final = pairs[-1][1]
    if not isinstance(final, Graph):
        raise CLIError(f"rnncomp.transforms.passes.optimize returned {type(results).__name__}, which the "
                       f"CLI cannot read a graph from")
    return final, pairs


def optimize_stages(graph: Graph, timings: dict[str, float] | None = None
                    ) -> tuple[Graph, list[tuple[str, Graph]]]:
    """Run the pipeline with the verifier on; (optimized graph, graph after each pass).
    Per-pass times (seconds) go into `timings` when the pipeline reports them."""
    passes = _import_passes()
    optimize = getattr(passes, "optimize", None)
    if optimize is None:
        raise NotAvailable("rnncomp.transforms.passes.optimize")
    try:
        results = optimize(graph, verify=True)
    except TypeError:
        results = optimize(graph)
    if timings is not None:
        timings.update(getattr(results, "timings", None) or {})
    return _results_graphs(results)


def backward_graph(graph: Graph) -> Graph:
    """The BPTT graph: grad_graph of output 0 if it is a float scalar (a loss), else the
    vector-Jacobian product graph (one cotangent input per float output)."""
    from ..transforms import autodiff

    loss = graph.outputs[0] if graph.outputs else None
    if loss is not None and loss.shape == () and loss.dtype is not None and loss.dtype.is_float:
        return autodiff.grad_graph(graph, 0)
    vjp_graph = getattr(autodiff, "vjp_graph", None)
    if vjp_graph is None:
        raise NotAvailable("rnncomp.transforms.autodiff.vjp_graph (backward of a model without a loss)")
    return vjp_graph(graph)


BASE_STAGES = ["traced", "optimized", "backward", "backward-optimized"]


class Stages:
    """Lazily computed graphs of one model, by stage name."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._cache: dict[str, Graph] = {"traced": graph}
        self.timings: dict[str, float] = {}

    def names(self) -> list[str]:
        """Every stage, in pipeline order: traced, each pass, optimized, backward, the backward
        graph after each pass (backward:<pass>), backward-optimized."""
        names = self._pass_names_or_empty()
        return (["traced"] + names + ["optimized", "backward"]
                + [f"backward:{n}" for n in names] + ["backward-optimized"])

    def get(self, name: str) -> Graph:
        if name in self._cache:
            return self._cache[name]
        if name == "backward":
            g = backward_graph(self.graph)
        elif name == "backward-optimized" or name.startswith("backward:"):
            # one pipeline run gives every backward stage (and one set of printed names)
            final, pairs = optimize_stages(self.get("backward"))
            self._cache["backward-optimized"] = final
            for n, pg in pairs:
                if n != "traced":
                    self._cache.setdefault(f"backward:{n}", pg)
            if name not in self._cache:
                raise self.unknown(name)
            g = self._cache[name]
        elif name in BASE_STAGES or name in self._pass_names_or_empty():
            final, pairs = optimize_stages(self.graph, self.timings)
            self._cache["optimized"] = final
            for n, pg in pairs:
                self._cache.setdefault(n, pg)
            if name not in self._cache:
                raise CLIError(f"stage {name!r}: the pass pipeline did not report a graph for it")
            g = self._cache[name]
        else:
            raise self.unknown(name)
        self._cache[name] = g
        return g

    def _pass_names_or_empty(self) -> list[str]:
        try:
            return pass_names()
        except NotAvailable:
            return []

    def unknown(self, name: str) -> CLIError:
        names = [n for n in self.names() if not n.startswith("backward:")]
        k = names.index("backward") + 1
        names[k:k] = ["backward:<pass>"]
        extra = "" if len(names) > len(BASE_STAGES) + 1 else \
            " (pass names become stages once rnncomp.transforms.passes is available)"
        return CLIError(f"unknown stage {name!r}; valid stages: {', '.join(names)}{extra} "
                        f"(--list-stages prints them all)")

    def check(self, name: str) -> None:
        if name in self.names():
            return
        raise self.unknown(name)


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------
def _write(text: str | bytes, out: str | None) -> None:
    if out is None or out == "-":
        if isinstance(text, bytes):
            sys.stdout.buffer.write(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(out, mode) as f:
        f.write(text if isinstance(text, bytes) or text.endswith("\n") else text + "\n")


def _compiled_source(graph: Graph, backend: str) -> str:
    try:
        from ..runtime.compiler import compile_graph
    except ImportError as e:
        if getattr(e, "name", None) in (f"{__package__}.compiler", None):
            raise NotAvailable(f"the {backend.upper()} backend (rnncomp.runtime.compiler.compile_graph)") \
                from e
        raise NotAvailable(f"the {backend.upper()} backend: {_one_line(e)}") from e
    try:
        compiled = compile_graph(graph, backend=backend)
    except (ImportError, NotImplementedError) as e:
        raise NotAvailable(f"the {backend.upper()} backend: {_one_line(e)}") from e
    source = getattr(compiled, "source", None)
    if source is None:
        raise NotAvailable(f"generated source (.source) of the {backend.upper()} backend")
    path = getattr(compiled, "path", None)
    header = f"# {path}\n" if path else ""
    sizes = getattr(compiled, "sizes", None)
    if sizes is not None and len(sizes):  # shape-generic CPU kernels read their sizes at run time
        header += f"# this graph's sizes: z<k> = sz[k], sz = {[int(v) for v in sizes]}\n"
    return header + source


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..ir.printer import pformat

    obj = load_model(args.model, _parse_kwargs(args.kwarg))
    stages = Stages(_graph_of(obj))
    if args.list_stages:
        _write("\n".join(stages.names()), args.output)
        return 0
    if args.diff:
        a, b = args.diff
        stages.check(a)
        stages.check(b)
        ta = pformat(stages.get(a), source_lines=args.source_lines)
        tb = pformat(stages.get(b), source_lines=args.source_lines)
        diff = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), fromfile=a, tofile=b,
                                         lineterm="", n=args.context))
        _write("\n".join(diff) if diff else f"(no differences between {a} and {b})", args.output)
        return 0
    stage = args.stage
    stages.check(stage)
    if args.source:
        graph = stages.get(stage)
        _write(_compiled_source(graph, args.source), args.output)
        return 0
    graph = stages.get(stage)
    if args.timings:
        if not stages.timings and stage != "traced":
            stages.get("optimized")
        for name, sec in stages.timings.items():
            print(f"# {name:<20} {sec * 1e3:9.3f} ms", file=sys.stderr)
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = suffix if suffix in ("dot", "svg", "png") else "text"
    if fmt == "text":
        _write(pformat(graph, source_lines=args.source_lines), args.output)
        return 0
    from . import viz

    name = getattr(obj, "name", "rnncomp")
    title = f"{name} ({stage})"
    draw = {"expand_fused": args.expand_fused, "source_lines": args.source_lines}
    if fmt == "dot":
        _write(viz.to_dot(graph, name=title, **draw), args.output)
        return 0
    # svg / png through Graphviz
    if fmt == "png" and (args.output is None or args.output == "-"):
        raise CLIError("--format png writes a binary image: give -o FILE.png")
    if shutil.which("dot") is None:
        raise CLIError("--format svg/png needs the Graphviz program 'dot', which is not on PATH; "
                       "install Graphviz (apt-get install graphviz / brew install graphviz) or use "
                       "--format dot")
    render = getattr(viz, "render", None)
    if render is None:
        raise NotAvailable("rnncomp.tools.viz.render")
    if args.output and args.output != "-":
        render(graph, args.output, format=fmt, name=title, **draw)
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"graph.{fmt}"
        render(graph, path, format=fmt, name=title, **draw)
        _write(path.read_text(), None)
    return 0


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
def _random_inputs(model: Any, graph: Graph, dims: dict[str, int],
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    checks = {}
    for chk in getattr(model, "checks", []) or []:
        checks.setdefault(chk.input_name, chk)
    out: dict[str, np.ndarray] = {}
    for node in graph.inputs:
        if node.op is not Op.INPUT or node.name.startswith("@"):
            continue
        shape = []
        for d in node.shape:
            if isinstance(d, str):
                if d not in dims:
                    raise CLIError(f"input {node.name!r} [{shape_str(node.shape)}]: give the size "
                                   f"of dimension {d} with --dim {d}=N")
                shape.append(dims[d])
            else:
                shape.append(d)
        dt = node.dtype
        if dt.is_float:
            a = rng.standard_normal(shape).astype(dt.np)
        elif dt.is_int:
            lo, hi = 0, dims.get("T", 10)
            chk = checks.get(node.name)
            if chk is not None and chk.kind == "range":
                h = chk.args["hi"]
                hi = dims.get(h, hi) if isinstance(h, str) else h
                lo = max(int(chk.args["lo"]), 1 if hi >= 1 else 0)  # lengths: at least one step
            elif chk is not None and chk.kind == "labels":
                lo, hi = 0, chk.args["depth"] - 1
            a = rng.integers(lo, hi + 1, size=shape).astype(dt.np)
        else:
            a = rng.random(shape) < 0.5
        out[node.name] = a
    return out


def _leaves(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return [x for f, v in zip(tree._fields, tree) for x in _leaves(v, f"{path}.{f}")]
    if isinstance(tree, (tuple, list)):
        return [x for k, v in enumerate(tree) for x in _leaves(v, f"{path}[{k}]")]
    if isinstance(tree, dict):
        return [x for k, v in tree.items() for x in _leaves(v, f"{path}[{k!r}]")]
    return [(path or "output", tree)]


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.interp import Context, evaluate
    from ..runtime.model import Model

    obj = load_model(args.model, _parse_kwargs(args.kwarg))
    graph = _graph_of(obj)
    model = obj if isinstance(obj, Model) else None
    for flag, v in (("--batch", args.batch), ("--time", args.time)):
        if v < 1:
            raise CLIError(f"{flag}: expected an integer >= 1, received {v}")
    dims = {"B": args.batch, "T": args.time}
    for item in args.dim or ():
        name, sep, val = item.partition("=")
        if not sep or not val.isdigit() or int(val) < 1:
            raise CLIError(f"--dim: expected NAME=N with N >= 1, received {item!r}")
        dims[name] = int(val)
    if args.repeat < 1:
        raise CLIError(f"--repeat: expected at least 1, received {args.repeat}")
    rng = np.random.default_rng(args.seed)
    if args.inputs:
        try:
            with open(args.inputs, "rb") as f:
                is_zip = f.read(2) == b"PK"
            if not is_zip:
                raise ValueError("not an .npz archive (np.savez writes one: arrays by input "
                                 "name)")
            with np.load(args.inputs, allow_pickle=False) as data:
                inputs = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise CLIError(f"--inputs: cannot read {args.inputs!r}: {_one_line(e)}") from e
        missing = [n.name for n in graph.inputs
                   if n.op is Op.INPUT and not n.name.startswith("@") and n.name not in inputs]
        if missing:
            raise CLIError(f"--inputs: {args.inputs!r} lacks input(s) {', '.join(missing)} "
                           f"(it has {', '.join(inputs) or 'nothing'})")
    else:
        inputs = _random_inputs(model, graph, dims, rng)

    pre_compiled, pre_s = None, None
    if args.backend == "auto":
        args.backend, pre_compiled, pre_s = _resolve_auto(model, graph)

    shown = inputs
    if model is not None:
        try:  # validate and convert as the model will (dtype, C order); report bound dims
            arrays, bound = model.check_inputs(inputs, args.training, args.seed)
        except ValueError as e:
            raise CLIError(f"inputs: {_one_line(e)}") from e
        shown = {k: v for k, v in arrays.items() if not k.startswith("@")}
        dims = {**dims, **bound}
        params = model.init(seed=args.seed)

        def call():
            return model.run(params, inputs, training=args.training, seed=args.seed,
                             backend=args.backend)
    else:
        # a bare Graph: parameters are small random normals, inputs by name
        params = {n.name: (0.1 * rng.standard_normal(
            [dims.get(d, d) if isinstance(d, str) else d for d in n.shape])).astype(n.dtype.np)
                  for n in graph.inputs if n.op is Op.PARAM}
        extra = {"@training": np.asarray(bool(args.training)),
                 "@seed": np.asarray(args.seed, np.int64),
                 "@example_offset": np.asarray(0, np.int64)}
        arrays = [inputs[n.name] if n.op is Op.INPUT and n.name in inputs else
                  extra.get(n.name, params.get(n.name)) for n in graph.inputs]
        if args.backend == "interp":
            def call():
                return evaluate(graph, arrays, Context())
        else:
            compiled = pre_compiled or _compile_for_run(
                lambda: _compile_graph(graph, args.backend), args.backend)

            def call():
                return compiled(*arrays)

    if pre_s is not None:
        compile_s = pre_s
    elif model is not None and args.backend != "interp":
        t0 = time.perf_counter()
        _compile_for_run(lambda: model.compile(args.backend), args.backend)
        compile_s = time.perf_counter() - t0
    else:
        compile_s = None

    times = []
    result = None
    for _ in range(args.repeat + (1 if args.warmup else 0)):
        t0 = time.perf_counter()
        try:
            result = call()
        except Exception as e:
            if isinstance(e, CLIError):
                raise
            raise CLIError(f"run failed: {type(e).__name__}: {_one_line(e)}") from e
        times.append(time.perf_counter() - t0)
    if args.warmup:
        times = times[1:]

    name = getattr(obj, "name", args.model)
    if model is None:  # sizes of symbolic dims as bound by the inputs actually given
        for n in graph.inputs:
            if n.op is Op.INPUT and n.name in inputs:
                for d, v in zip(n.shape, np.shape(inputs[n.name])):
                    if isinstance(d, str):
                        dims[d] = v
    dim_text = ", ".join(f"{k}={v}" for k, v in dims.items()
                         if any(k in (n.shape or ()) for n in graph.inputs))
    print(f"model {name} (backend {args.backend}{', ' + dim_text if dim_text else ''}"
          f"{', training' if args.training else ''})")
    print("inputs:")
    for k, v in shown.items():
        print(f"  {k}: {v.dtype} {tuple(v.shape)}")
    print("outputs:")
    for path, v in _leaves(result):
        a = np.asarray(v)
        print(f"  {path}: {a.dtype} {tuple(a.shape)}")
    if compile_s is not None:
        print(f"compile: {_fmt_time(compile_s)}")
    print(f"time: median {_fmt_time(statistics.median(times))} over {len(times)} run"
          f"{'s' if len(times) != 1 else ''} (min {_fmt_time(min(times))})")
    if args.save:
        flat = {path.lstrip(".") or "output": np.asarray(v) for path, v in _leaves(result)}
        np.savez(args.save, **flat)
        print(f"wrote {args.save}")
    return 0


def _resolve_auto(model: Any, graph: Graph) -> tuple[str, Any, float | None]:
    """--backend auto: (backend name, compiled graph or None, compile seconds or None). The
    default backend (cpu; $RNNCOMP_DEFAULT_BACKEND), or the interpreter with a one-line warning
    on stderr when compiling is impossible."""
    from ..runtime.compiler import default_backend, unavailable_reason

    name = default_backend()
    if name == "interp":
        return name, None, None
    reason = unavailable_reason(name)
    if reason is None:
        t0 = time.perf_counter()
        try:
            compiled = model.compile(name) if model is not None else _compile_graph(graph, name)
            return name, compiled, time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - any compiler failure: the interpreter runs it
            reason = f"compiling for {name!r} failed ({type(e).__name__}: {_one_line(e)})"
    print(f"warning: --backend auto: {reason}; running on the reference interpreter",
          file=sys.stderr)
    return "interp", None, None


def _compile_graph(graph: Graph, backend: str):
    from ..runtime.compiler import compile_graph

    return compile_graph(graph, backend=backend)


def _compile_for_run(make: Callable[[], Any], backend: str) -> Any:
    try:
        return make()
    except ImportError as e:
        if getattr(e, "name", None) in (f"{__package__}.compiler", None):
            raise NotAvailable(f"the {backend} backend (rnncomp.runtime.compiler.compile_graph)") from e
        raise NotAvailable(f"the {backend} backend: {_one_line(e)}") from e
    except NotImplementedError as e:
        raise NotAvailable(f"the {backend} backend: {_one_line(e)}") from e


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def _load_params(path: str, model: Any) -> dict[str, np.ndarray]:
    """Parameters from an rnncomp checkpoint, or from a plain .npz of arrays by name."""
    from ..train import checkpoint

    try:
        return checkpoint.load(path).params
    except FileNotFoundError as e:
        raise CLIError(f"--params: {_one_line(e)}") from e
    except checkpoint.CheckpointError as e:
        try:
            with np.load(path, allow_pickle=False) as data:
                params = {k: data[k] for k in data.files}
        except Exception:
            raise CLIError(f"--params: {_one_line(e)}") from e
        if not any(k in model.param_specs for k in params):
            raise CLIError(f"--params: {path!r} is neither an rnncomp checkpoint nor an .npz "
                           f"of this model's parameters ({_one_line(e)})") from e
        return params


def cmd_export(args: argparse.Namespace) -> int:
    from ..runtime.model import Model

    obj = load_model(args.model, _parse_kwargs(args.kwarg))
    if not isinstance(obj, Model):
        raise CLIError(f"export: {args.model} is a bare Graph; export needs an rnncomp.Model "
                       f"(its parameters, input and output names)")
    if args.format is None and not args.output.endswith(".onnx"):
        raise CLIError(f"export: give --format onnx (the format cannot be told from "
                       f"{args.output!r})")
    try:
        from . import onnx as onnx_export

        onnx_export._import_onnx()
    except ImportError as e:
        raise NotAvailable(f"ONNX export: {_one_line(e)}") from e
    if args.params:
        params = _load_params(args.params, obj)
        source = args.params
    else:
        params = obj.init(seed=args.seed)
        source = f"fresh initialization, seed {args.seed}; pass --params CHECKPOINT for trained " \
                 f"weights"
    try:
        proto = onnx_export.export(obj, params, args.output, native=args.native)
    except ValueError as e:  # ExportError, UnsupportedOpError, InputError on the params
        raise CLIError(f"export: {_one_line(e)}") from e
    g = proto.graph

    def typed(v) -> str:
        t = v.type.tensor_type
        elem = {1: "f32", 11: "f64", 6: "i32", 7: "i64", 9: "bool"}.get(t.elem_type, "?")
        dims = ",".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        return f"{v.name}: {elem}[{dims}]"

    props = {p.key: p.value for p in proto.metadata_props}
    loops = [f"{k}" for k in props.get("rnncomp.native_ops", "").split(",") if k]
    if props.get("rnncomp.scan_ops", "0") != "0":
        loops.append(f"Scan x{props['rnncomp.scan_ops']}")
    print(f"wrote {args.output} (ONNX opset {onnx_export.OPSET}, {len(g.node)} nodes; "
          f"recurrences: {', '.join(loops) or 'none'})")
    print(f"parameters: {source}")
    print("inputs:")
    for v in g.input:
        print(f"  {typed(v)}")
    print("outputs:")
    for v in g.output:
        print(f"  {typed(v)}")
    if args.check:
        rng = np.random.default_rng(args.seed)
        inputs = _random_inputs(obj, obj.graph, {"B": args.batch, "T": args.time}, rng)
        try:
            err = onnx_export.check(obj, params, args.output, inputs, atol=args.atol)
        except ImportError as e:
            raise NotAvailable(f"--check: {_one_line(e)}") from e
        except ValueError as e:
            raise CLIError(f"--check: {_one_line(e)}") from e
        print(f"check: ONNX Runtime matches rnncomp's interpreter (max abs difference "
              f"{err:.3g} <= {args.atol:g}; B={args.batch}, T={args.time})")
    return 0


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def _bench_script() -> Path | None:
    for root in (Path.cwd(), REPO_ROOT):
        p = root / "bench" / "bench_cpu.py"
        if p.is_file():
            return p
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    script = _bench_script()
    if script is None:
        raise NotAvailable(f"the CPU benchmark script bench/bench_cpu.py (looked in {Path.cwd()} "
                           f"and {REPO_ROOT})")
    rest = list(args.bench_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return subprocess.call([sys.executable, str(script), *rest])


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """RNNCOMP_CACHE_DIR, or ~/.cache/rnncomp (the compiler's own resolution)."""
    from ..runtime.kernel_cache import resolve_cache_path

    return resolve_cache_path()


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).lstat().st_size
            except OSError:
                pass
    return total


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cmd_cache(args: argparse.Namespace) -> int:
    from ..runtime import kernel_cache

    d = cache_dir()
    if d.exists() and not d.is_dir():
        raise CLIError(f"cache directory {d} is not a directory")
    if args.action == "info":
        if not d.exists():
            print(f"cache directory: {d} (does not exist yet)")
            print("entries: 0")
            print("size: 0 B")
            return 0
        files = kernel_cache.entries(d)
        total = sum(_size(p) for p in files)
        print(f"cache directory: {d}")
        print(f"entries: {sum(1 for p in files if p.suffix == '.py')} kernel modules "
              f"({len(files)} files)")
        print(f"size: {_human(total)} ({total} bytes)")
        return 0
    # clear: only rnncomp's own entries, whatever else the folder holds
    if not d.exists():
        print(f"cache directory {d} does not exist; nothing to clear")
        return 0
    n, total = kernel_cache.clear(d)
    print(f"cleared {d}: removed {n} file{'' if n == 1 else 's'} ({_human(total)})")
    return 0


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="rnncomp: a compiler for recurrent neural networks. Inspect the IR at every "
                    "stage and the generated kernels, run models, benchmark, manage the cache.",
        epilog="MODEL is FILE.py:FUNCTION or package.module:FUNCTION; the function returns an "
               "rnncomp.Model or Graph. Example: rnncomp inspect examples/models.py:lstm")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", metavar="MODEL",
                        help="FILE.py:FUNCTION or package.module:FUNCTION returning a Model/Graph")
        sp.add_argument("-k", "--kwarg", action="append", metavar="NAME=VALUE",
                        help="keyword argument for the model function (repeatable; VALUE is a "
                             "Python literal or a bare string), e.g. -k units=32")
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show Python tracebacks on errors")

    ins = sub.add_parser(
        "inspect", help="print a stage's IR, draw it, diff stages, or show kernel source",
        description="Print the IR of one stage of the compiler (text, DOT, SVG or PNG), a unified "
                    "diff between two stages, or the generated kernel source.",
        epilog="Stages: traced, then one per pass of rnncomp.transforms.passes.PIPELINE (by name), "
               "optimized, backward (BPTT: grad of output 0 if it is a scalar loss, else the "
               "VJP graph), backward-optimized, backward:<pass name>. --list-stages prints them.")
    model_args(ins)
    ins.add_argument("--stage", default="traced",
                     help="stage to show (default: traced); see --list-stages")
    ins.add_argument("--format", choices=("text", "dot", "svg", "png"), default=None,
                     help="output format (default: text, or from the -o file's suffix)")
    ins.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    ins.add_argument("--source", choices=("cpu", "cuda"),
                     help="print the generated kernel source of this backend for the stage")
    ins.add_argument("--diff", nargs=2, metavar=("A", "B"),
                     help="unified diff of the IR text between stages A and B")
    ins.add_argument("--context", type=int, default=3, metavar="N",
                     help="lines of context in --diff (default 3)")
    ins.add_argument("--list-stages", action="store_true", help="print the valid stage names")
    ins.add_argument("--timings", action="store_true",
                     help="print the time each pass took (on stderr)")
    ins.add_argument("--source-lines", action="store_true",
                     help="end each equation with the file:line of the model code that made it "
                          "(text and --diff; tooltips in pictures)")
    ins.add_argument("--expand-fused", action="store_true",
                     help="pictures: draw the ops inside fused nodes (default: one box each, "
                          "with a summary of its ops)")
    ins.set_defaults(func=cmd_inspect)

    run = sub.add_parser(
        "run", help="run a model on random (or .npz) inputs; print output shapes and timing",
        description="Run MODEL once per --repeat on random inputs (symbolic dims B and T from "
                    "--batch/--time) or on the arrays of an .npz file, and print the input and "
                    "output shapes and the median time.")
    model_args(run)
    run.add_argument("--batch", type=int, default=4, help="size of the symbolic batch B "
                                                          "(default 4)")
    run.add_argument("--time", type=int, default=10, help="size of the symbolic time T "
                                                          "(default 10)")
    run.add_argument("--dim", action="append", metavar="NAME=N",
                     help="size of another symbolic dimension (repeatable)")
    run.add_argument("--inputs", metavar="FILE.npz", help="arrays by input name instead of "
                                                          "random inputs")
    run.add_argument("--backend", choices=("auto", "interp", "cpu", "cuda"), default="auto",
                     help="auto (default: cpu, or the interpreter with a warning where "
                          "compiling is impossible), interp (NumPy reference interpreter), "
                          "cpu (Numba) or cuda")
    run.add_argument("--repeat", type=int, default=5, help="timed runs (default 5); the median "
                                                           "is reported")
    run.add_argument("--no-warmup", dest="warmup", action="store_false",
                     help="time the first run too (by default one untimed warm-up run)")
    run.add_argument("--seed", type=int, default=0, help="seed for inputs, parameters, dropout")
    run.add_argument("--training", action="store_true", help="training mode (dropout active)")
    run.add_argument("--save", metavar="FILE.npz", help="save the outputs to an .npz file")
    run.set_defaults(func=cmd_run)

    exp = sub.add_parser(
        "export", help="write a model as an ONNX file (ONNX Runtime, TensorRT, OpenVINO...)",
        description="Export MODEL with its parameters (a checkpoint, or a fresh initialization) "
                    "as an ONNX file whose inputs and outputs carry the model's names, with "
                    "dynamic batch and time axes. Needs `pip install rnncomp[onnx]`.",
        epilog="Built-in cells become ONNX RNN/LSTM/GRU where they match exactly, anything else "
               "an ONNX Scan of the cell's ops (see docs/deployment.md).")
    model_args(exp)
    exp.add_argument("--format", choices=("onnx",), default=None,
                     help="output format (default: from the -o suffix; onnx)")
    exp.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")
    exp.add_argument("--params", metavar="CHECKPOINT",
                     help="parameters: an rnncomp checkpoint or an .npz of arrays by name "
                          "(default: a fresh initialization from --seed)")
    exp.add_argument("--seed", type=int, default=0,
                     help="seed of the fresh parameters and of the --check inputs")
    exp.add_argument("--no-native", dest="native", action="store_false",
                     help="export every recurrence as an ONNX Scan (no native RNN/LSTM/GRU)")
    exp.add_argument("--check", action="store_true",
                     help="run the file in ONNX Runtime on random inputs and compare with "
                          "rnncomp's interpreter")
    exp.add_argument("--atol", type=float, default=1e-5,
                     help="largest absolute difference --check accepts (default 1e-5)")
    exp.add_argument("--batch", type=int, default=4, help="B for --check (default 4)")
    exp.add_argument("--time", type=int, default=10, help="T for --check (default 10)")
    exp.set_defaults(func=cmd_export)

    bench = sub.add_parser(
        "bench", help="run the CPU benchmarks (bench/bench_cpu.py); arguments pass through",
        description="Run bench/bench_cpu.py with the remaining arguments; e.g. "
                    "`rnncomp bench -- --help` shows the script's own options.",
        add_help=True)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="arguments for bench/bench_cpu.py (put them after --)")
    bench.set_defaults(func=cmd_bench)

    cache = sub.add_parser(
        "cache", help="show or clear the compiled-kernel cache",
        description="The compiled-kernel cache lives in $RNNCOMP_CACHE_DIR, or ~/.cache/rnncomp.")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: path, entries and size; clear: delete every entry")
    cache.set_defaults(func=cmd_cache)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        if debug:
            raise
        print(f"{PROG}: {'' if isinstance(e, NotAvailable) else 'error: '}{e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if debug:
            raise
        print(f"{PROG}: error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
