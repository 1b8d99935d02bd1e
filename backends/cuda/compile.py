"""The CUDA backend: an optimized graph -> numba.cuda kernels + a host executor over CuPy.

    compiled = rnncomp.runtime.compiler.compile_graph(graph, backend="cuda")
    outs = compiled(*numpy_arrays)               # NumPy in, NumPy out (inputs copied once)
    outs = compiled.run_device(*cupy_arrays)     # device in, device out (anything with
                                                 # __cuda_array_interface__)

Lowering (docs/cuda.md):
* FUSED groups and lone elementwise ops -> one generated kernel each (backends/cuda/codegen.py),
  all in one module written to the kernel cache directory (content-hashed, atomic write, like
  the CPU backend) and imported;
* matmul / tensordot -> CuPy (cuBLAS, true fp32: CUPY_TF32 unset); movement ops and reductions
  -> CuPy; scalars computed from constants, scalar inputs, the step index or integer inputs
  (sequence lengths) stay on the host (no device sync);
* scans -> a host loop over max(sequence_length) steps; step 0 runs eagerly (compiles kernels,
  allocates the step buffers once), steps 1.. are captured ONCE into a CUDA graph (CuPy stream
  capture) and replayed; the graph is cached per (shapes, trip count, buffer addresses) and the
  executor keeps its buffers between calls, so a second call replays without capturing. If
  capture fails the loop runs as plain launches (`capture_error` says why);
* a scan with a run-time stop (decoding) runs as plain launches, reading the stop flag before
  each step (one device sync per step);
* an LSTM forward scan (recognised structurally and checked numerically, kernels_lstm.py) runs
  as ONE persistent cooperative kernel for small batches (`persistent`: "auto" | True | False).

The same executor runs under numba's CUDA simulator with NumPy as the array module (CI).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .compat import ensure_numpy_compat, simulator

ensure_numpy_compat()

from rnncomp.ir import Graph, Node, Op  # noqa: E402
from rnncomp.ir.context import Context, InputError  # noqa: E402
from rnncomp.ir.graph import resolve_dim  # noqa: E402
from rnncomp.ir.ops import REGISTRY, scan_info, take_index_error  # noqa: E402
from rnncomp.runtime import kernel_cache  # noqa: E402

from . import codegen  # noqa: E402
from . import kernels_lstm  # noqa: E402
from . import runtime as rt  # noqa: E402

# every source file whose code runs inside a CUDA kernel (templates are in the rendered source)
CODE_FILES = (Path(__file__).with_name("runtime.py"),)


class Program:
    """The nodes of one graph (top level or a scan body) in execution order."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = [n for n in graph.nodes if n.op not in (Op.INPUT, Op.PARAM, Op.PLACEHOLDER)]
        self.bodies: dict[int, Program] = {}
        for n in self.nodes:
            if n.op is Op.SCAN:
                self.bodies[id(n)] = Program(n.attr("body"))


class CompiledCuda:
    """A graph compiled for the CUDA backend (same attributes as rnncomp.runtime.compiler.CompiledGraph:
    graph, backend, optimized, stages, source, path, key, timings; plus kernels, specs,
    persistent, use_graphs, capture_error, stats)."""

    def __init__(self, graph: Graph, opt, source: str, path: Path, key: str, module,
                 specs: dict, host: set, timings: dict):
        self.graph = graph
        self.backend = "cuda"
        self.optimized: Graph = opt.graph
        self.stages = opt.stages
        self.source = source
        self.path = path
        self.key = key
        self.module = module
        self.fn = None
        self.specs = specs
        self.kernels = {i: getattr(module, s.name) for i, s in specs.items()}
        self.host = host
        self.mirrored = codegen.mirrored_inputs(self.optimized)
        self.timings = timings
        self.prog = Program(self.optimized)
        self.sim = simulator()
        if not self.sim:
            from .compat import available

            if not available():
                raise RuntimeError("rnncomp cuda backend: no usable GPU (numba.cuda sees none); "
                                   "set NUMBA_ENABLE_CUDASIM=1 before importing numba to run "
                                   "the generated kernels in numba's CUDA simulator")
        self.xp = rt.get_xp()
        self.stream = None
        if not self.sim:
            self.stream = self.xp.cuda.Stream(non_blocking=True)
        self.launcher = rt.Launcher(self.sim, self.stream)
        self.gemm = rt.Gemm(self.xp, self.sim, self.stream)
        self.persistent: Any = os.environ.get("RNNCOMP_CUDA_PERSISTENT", "auto")
        if self.persistent in ("0", "1"):
            self.persistent = self.persistent == "1"
        self.persistent_max_batch = 16
        self.use_graphs = os.environ.get("RNNCOMP_CUDA_GRAPHS", "1") != "0"
        self.capture_error: str | None = None
        self._capturing = False
        self.capture_traceback: str | None = None
        self.lstm = kernels_lstm.find_lstm_scans(self.optimized)
        self.stats = {"graph_replays": 0, "captures": 0, "persistent_runs": 0, "eager_steps": 0}
        self._bufs: dict = {}
        self._graphs: dict = {}
        self.dims: dict[str, int] = {}

    # -- buffers --------------------------------------------------------------------------
    def shape(self, shape) -> tuple[int, ...]:
        return tuple(resolve_dim(d, self.dims) for d in shape)

    def buf(self, key, shape, dtype):
        shape = tuple(shape)
        dt = np.dtype(dtype)
        b = self._bufs.get(key)
        if b is None or b.shape != shape or b.dtype != dt:
            b = self.xp.empty(shape, dt)
            self._bufs[key] = b
        return b

    # -- calling ----------------------------------------------------------------------------
    def _bind(self, args, env: dict, mirror: dict) -> None:
        if len(args) != len(self.graph.inputs):
            raise InputError(f"compiled graph takes {len(self.graph.inputs)} inputs, received "
                             f"{len(args)}")
        ctx = Context()
        xp = self.xp
        for k, (node, a) in enumerate(zip(self.optimized.inputs, args)):
            what = f"input {node.name!r}"
            on_dev = not isinstance(a, np.ndarray) and hasattr(a, "__cuda_array_interface__")
            if on_dev and not self.sim:
                a = xp.asarray(a)
                if a.ndim != len(node.shape):
                    raise InputError(f"{what}: expected rank {len(node.shape)}, received "
                                     f"shape {tuple(a.shape)}")
                ctx.bind(node, np.empty(a.shape, np.uint8) if a.ndim else np.zeros((), np.uint8),
                         what)
            else:
                a = np.asarray(a)
                ctx.bind(node, a, what)
            if node.shape == ():
                v = a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a
                env[id(node)] = np.asarray(v, node.dtype.np)[()]
                continue
            b = self.buf(("in", k), a.shape, node.dtype.np)
            if isinstance(a, np.ndarray):
                if self.sim:
                    np.copyto(b, a, casting="unsafe")
                else:
                    b.set(np.ascontiguousarray(a, node.dtype.np))
            else:
                xp.copyto(b, a, casting="unsafe")
            env[id(node)] = b
            if id(node) in self.mirrored:
                mirror[id(node)] = a.astype(node.dtype.np) if isinstance(a, np.ndarray) \
                    else a.get().astype(node.dtype.np)
        self.dims = ctx.dims

    def _execute(self, args) -> list:
        env: dict = {}
        self._mirror: dict = {}
        self._bind(args, env, self._mirror)
        self._run(self.prog, env, {})
        outs = []
        for o in self.optimized.outputs:
            if o.op is Op.CONST:
                outs.append(np.asarray(o.attr("value"), o.dtype.np))
            else:
                outs.append(env[id(o)])
        return outs

    def __call__(self, *args) -> list[np.ndarray]:
        if self.sim:
            return [rt.as_host(np.asarray(o)) for o in self._execute(args)]
        with self.stream:
            outs = self._execute(args)
            res = [np.asarray(o) if isinstance(o, (np.generic, np.ndarray)) else o.get()
                   for o in outs]
        return res

    def run_device(self, *args) -> list:
        """Device arrays in (CuPy or __cuda_array_interface__), device arrays out (copies)."""
        xp = self.xp
        if self.sim:
            return [np.array(o) for o in self._execute(args)]
        caller = xp.cuda.get_current_stream()
        self.stream.wait_event(caller.record())
        with self.stream:
            outs = [xp.array(o) if not isinstance(o, (np.generic, np.ndarray))
                    else xp.asarray(np.asarray(o)) for o in self._execute(args)]
            ev = self.stream.record()
        caller.wait_event(ev)
        return outs

    def __repr__(self) -> str:
        return f"<CompiledCuda {self.path}>"

    # -- node evaluation ----------------------------------------------------------------------
    def _run(self, prog: Program, env: dict, direct: dict) -> None:
        for n in prog.nodes:
            if id(n) not in env:
                self._eval(n, env, prog, direct)

    def _hostval(self, x: Node, env: dict):
        if x.op is Op.CONST:
            return np.asarray(x.attr("value"), x.dtype.np)
        if id(x) in env and id(x) in self.host:
            return np.asarray(env[id(x)])
        if id(x) in self._mirror:
            return self._mirror[id(x)]
        v = env[id(x)]
        return v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else np.asarray(v)

    @staticmethod
    def _hostval_of(v):
        return v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else np.asarray(v)

    def _eval(self, n: Node, env: dict, prog: Program, direct: dict) -> None:
        op = n.op
        xp = self.xp
        if op is Op.CONST:
            env[id(n)] = np.asarray(n.attr("value"), n.dtype.np)[()]
            return
        if op is Op.ITEM:
            env[id(n)] = env[id(n.inputs[0])][n.attr("index")]
            return
        if op is Op.SCAN:
            env[id(n)] = self._scan(n, env, prog.bodies[id(n)])
            return
        if id(n) in self.host:
            if op is Op.DIMSIZE:
                env[id(n)] = n.dtype.np.type(np.shape(env[id(n.inputs[0])])[n.attr("axis")])
                return
            vals = [self._hostval(i, env) for i in n.inputs]
            r = REGISTRY[op].impl(Context(), dict(n.attrs), *vals)
            env[id(n)] = np.asarray(r, n.dtype.np)[()]
            return
        spec = self.specs.get(id(n))
        if spec is not None:
            self._launch(spec, n, env, direct)
            return
        ins = [env[id(i)] if i.op is not Op.CONST else np.asarray(i.attr("value"), i.dtype.np)
               for i in n.inputs]
        sh = self.shape(n.shape) if n.shape is not None else None
        dt = n.dtype.np if n.dtype is not None else None
        key = (id(n), 0)
        if op is Op.FULL:
            b = self.buf(key, sh, dt)
            b.fill(n.attr("value"))
            env[id(n)] = b
        elif op is Op.MATMUL:
            a, w = ins
            out = self.buf(key, sh, dt)
            if a.ndim == 2:
                self.gemm(a, w, out)
            else:
                a2 = xp.ascontiguousarray(a).reshape(-1, a.shape[-1])
                self.gemm(a2, w, out.reshape(a2.shape[0], out.shape[-1]))
            env[id(n)] = out
        elif op is Op.TENSORDOT:
            env[id(n)] = xp.ascontiguousarray(xp.tensordot(
                ins[0], ins[1], axes=(list(n.attr("a_axes")), list(n.attr("b_axes")))))
        elif op is Op.TRANSPOSE:
            out = self.buf(key, sh, dt)
            xp.copyto(out, ins[0].transpose(tuple(n.attr("perm"))))
            env[id(n)] = out
        elif op is Op.RESHAPE:
            x = ins[0]
            if n.inputs[0].shape == ():
                out = self.buf(key, sh, dt)
                out[...] = x
                env[id(n)] = out
            else:
                env[id(n)] = xp.ascontiguousarray(x).reshape(sh)
        elif op is Op.SLICE:
            ax = n.attr("axis")
            idx = (slice(None),) * ax + (slice(n.attr("start"), n.attr("stop")),)
            env[id(n)] = ins[0][idx]
        elif op is Op.PAD:
            ax, s = n.attr("axis"), n.attr("start")
            d = ins[0].shape[ax]
            out = self.buf(key, sh, dt)
            out.fill(0)
            out[(slice(None),) * ax + (slice(s, s + d),)] = ins[0]
            env[id(n)] = out
        elif op is Op.SEGMENT:
            x = ins[0]
            out = self.buf(key, (sh[0] * sh[1],) + sh[2:], dt)
            out[x.shape[0]:] = 0
            out[:x.shape[0]] = x
            env[id(n)] = out.reshape(sh)
        elif op is Op.UNSEGMENT:
            y = ins[0]
            env[id(n)] = xp.ascontiguousarray(y).reshape((-1,) + tuple(y.shape[2:]))[:sh[0]]
        elif op is Op.CONCAT:
            ax = n.attr("axis")
            out = self.buf(key, sh, dt)
            off = 0
            for x in ins:
                d = x.shape[ax]
                out[(slice(None),) * ax + (slice(off, off + d),)] = x
                off += d
            env[id(n)] = out
        elif op in (Op.REDUCE_SUM, Op.REDUCE_MAX):
            out = self.buf(key, sh, dt)
            f = xp.sum if op is Op.REDUCE_SUM else xp.max
            kw = {"dtype": dt} if op is Op.REDUCE_SUM else {}
            f(ins[0], axis=tuple(n.attr("axes")), keepdims=bool(n.attr("keepdims", False)),
              out=out, **kw)
            env[id(n)] = out
        elif op is Op.TAKE:
            x, idx = ins
            if not self._capturing:  # a check inside a captured graph would need a device sync
                bad = (idx < 0) | (idx >= x.shape[-1])
                if bool(bad.any()):
                    raise take_index_error(int(idx[bad].ravel()[0]), x.shape[-1])
            r = xp.take_along_axis(x, idx.astype(np.int64)[..., None], axis=-1)[..., 0]
            env[id(n)] = r
        elif op is Op.ONE_HOT:
            (idx,) = ins
            env[id(n)] = (idx[..., None] == xp.arange(n.attr("depth"))).astype(dt)
        elif op is Op.DIMSIZE:
            env[id(n)] = n.dtype.np.type(ins[0].shape[n.attr("axis")])
        elif op in (Op.GATHER, Op.SCATTER_ADD):
            src, idx = ins
            rows = src.shape[0] if op is Op.GATHER else n.attr("rows")
            if not self._capturing:  # a check inside a captured graph would need a device sync
                bad = (idx < 0) | (idx >= rows)
                if bool(bad.any()):
                    raise take_index_error(int(idx[bad].ravel()[0]), rows)
            idx = idx.astype(np.int64)
            if op is Op.GATHER:
                env[id(n)] = xp.take(src, idx, axis=0)
            else:
                out = self.buf(key, sh, dt)
                out.fill(0)
                rt.scatter_add(xp, out, idx, src)
                env[id(n)] = out
        elif op is Op.ARGMAX:
            env[id(n)] = xp.argmax(ins[0], axis=n.attr("axis")).astype(dt)
        # variable-length batches: this backend runs the sorted batch with its masks (it
        # ignores the scan's `rows` hint); the ragged GEMMs are dense GEMMs of the masked rows
        elif op is Op.ARGSORT:
            h = np.asarray(self._hostval(n.inputs[0], env)).astype(np.int64)
            env[id(n)] = xp.asarray(np.argsort(-h, kind="stable").astype(np.int32))
        elif op is Op.PERMUTE:
            x, p = ins
            p = xp.asarray(p).astype(np.int64)
            if n.attr("inverse", False):
                p = xp.argsort(p)
            env[id(n)] = xp.ascontiguousarray(xp.take(x, p, axis=n.attr("axis")))
        elif op in (Op.RAGGED_MATMUL, Op.RAGGED_TENSORDOT):
            a, b, lengths = ins
            valid = (xp.arange(a.shape[0])[:, None] <
                     xp.asarray(lengths).astype(np.int64)[None, :])[..., None]
            am = xp.where(valid, a, xp.zeros((), a.dtype))
            if op is Op.RAGGED_MATMUL:
                r = xp.matmul(am, b)
                env[id(n)] = xp.where(valid, r, xp.zeros((), r.dtype)).astype(dt)
            else:
                bm = xp.where(valid, b, xp.zeros((), b.dtype))
                env[id(n)] = xp.ascontiguousarray(
                    xp.tensordot(am, bm, axes=([0, 1], [0, 1]))).astype(dt)
        else:
            raise NotImplementedError(f"CUDA backend: no lowering for op {op.value}")

    def _launch(self, spec: codegen.KernelSpec, n: Node, env: dict, direct: dict) -> None:
        outs = []
        for k, o in enumerate(spec.outs):
            d = direct.get((id(n), k))
            if d is None:
                if spec.scalar_iter:
                    d = self.buf((id(n), k), (1,), o.dtype.np)
                else:
                    d = self.buf((id(n), k), self.shape(o.shape), o.dtype.np)
            outs.append(d)
        args = []
        for a, kind in zip(spec.args, spec.kinds):
            v = env[id(a)]
            if kind == "dev":
                v = v.reshape(1)
            elif kind == "host":
                v = np.asarray(v, a.dtype.np)[()]
            elif self.launcher.sim and isinstance(v, np.ndarray) and not v.flags.c_contiguous:
                # the simulator transfers only contiguous buffers (a GPU launch takes strides)
                v = np.ascontiguousarray(v)
            args.append(v)
        size = int(np.prod(outs[0].shape))
        if size:
            self.launcher.launch(self.kernels[id(n)], size, outs + args)
        vals = [o.reshape(()) if spec.scalar_iter else o for o in outs]
        env[id(n)] = vals if n.op is Op.FUSED else vals[0]

    # -- scans ------------------------------------------------------------------------------
    def _scan(self, n: Node, env: dict, prog: Program) -> list:
        xp = self.xp
        info = scan_info(n)
        body: Graph = n.attr("body")
        nc, nx, ni = info.n_carry, info.n_xs, info.n_inv
        ins = [env[id(i)] if i.op is not Op.CONST else np.asarray(i.attr("value"), i.dtype.np)[()]
               for i in n.inputs]
        init, X, W = ins[:nc], ins[nc:nc + nx], ins[nc + nx:nc + nx + ni]
        T = X[0].shape[0] if X else int(n.attr("length"))
        steps = T
        if info.has_length:
            steps = max(0, min(int(ins[-1]), T))
        hc = codegen.scan_carries_host(n, self.host)
        b_carry = body.inputs[1:1 + nc]
        carries: list = []
        for k, (c, pn) in enumerate(zip(init, b_carry)):
            if k in hc:
                carries.append(np.asarray(c, pn.dtype.np)[()])
                continue
            cb = self.buf(("carry", id(n), k), self.shape(pn.shape), pn.dtype.np)
            cb[...] = c
            carries.append(cb)
        ys = []
        for k, y in enumerate(body.outputs[nc:]):
            yb = self.buf(("ys", id(n), k), (T,) + self.shape(y.shape), y.dtype.np)
            yb.fill(0)
            ys.append(yb)
        result = lambda: carries + ys  # noqa: E731
        m = self.lstm.get(id(n)) if info.stop is None else None
        if m is not None and steps > 0 and kernels_lstm.run_persistent(self, m, n, ins, steps,
                                                                        carries, ys):
            self.stats["persistent_runs"] += 1
            return result()
        direct: dict = {}
        for k, y in enumerate(body.outputs[nc:]):
            if y.op is Op.ITEM and y.inputs[0].op is Op.FUSED and y.shape != () and \
                    (id(y.inputs[0]), y.attr("index")) not in direct:
                direct[(id(y.inputs[0]), y.attr("index"))] = k
        written = set(direct.values())
        t_ph = body.inputs[0]
        b_x = body.inputs[1 + nc:1 + nc + nx]
        b_w = body.inputs[1 + nc + nx:]
        carry_ph = {id(p) for p in b_carry}
        swap = any(id(o) in carry_ph and o is not p for o, p in zip(body.outputs[:nc], b_carry))

        def step(it: int) -> None:
            t = steps - 1 - it if info.reverse else it
            benv: dict = {id(t_ph): np.int32(t)}
            for p, c in zip(b_carry, carries):
                benv[id(p)] = c
            for p, x in zip(b_x, X):
                benv[id(p)] = x[t]
            for p, w in zip(b_w, W):
                benv[id(p)] = w
            dmap = {key: ys[k][t] for key, k in direct.items()}
            self._run(prog, benv, dmap)
            for k, y in enumerate(body.outputs[nc:]):
                if k not in written:
                    v = benv[id(y)] if y.op is not Op.CONST else y.attr("value")
                    ys[k][t] = v
            news = []
            for k, (o, p) in enumerate(zip(body.outputs[:nc], b_carry)):
                v = benv[id(o)] if o.op is not Op.CONST else np.asarray(o.attr("value"))
                if swap and k not in hc and o is not p:
                    v = xp.array(v)
                news.append(v)
            for k, (o, p, v) in enumerate(zip(body.outputs[:nc], b_carry, news)):
                if o is p:
                    continue
                if k in hc:
                    carries[k] = np.asarray(v, p.dtype.np)[()]
                else:
                    carries[k][...] = v

        if info.stop is not None:
            # run-time stop: one read of the flag carry per step (a device sync, so no CUDA
            # graph); the loop ends before a step whose flag is True
            for i in range(steps):
                if bool(self._hostval_of(carries[info.stop])):
                    break
                step(i)
                self.stats["eager_steps"] += 1
            return result()
        if steps == 0:
            return result()
        step(0)
        self.stats["eager_steps"] += 1
        rest = range(1, steps)
        if steps > 1 and not self.sim and self.use_graphs and not hc and not swap:
            key = (id(n), steps, tuple(sorted(self.dims.items())),
                   tuple(_addr(v) for v in ins), tuple(_addr(c) for c in carries),
                   tuple(_addr(y) for y in ys))
            g = self._graphs.get(key)
            if g is None:
                try:
                    self._capturing = True
                    try:
                        g = rt.GraphCapture.capture(self.stream, lambda: [step(i) for i in rest])
                    finally:
                        self._capturing = False
                    self._graphs[key] = g
                    self.stats["captures"] += 1
                except Exception as e:  # plain launches instead
                    import traceback

                    self.capture_error = f"{type(e).__name__}: {e}"
                    self.capture_traceback = traceback.format_exc()
                    self.use_graphs = False
                    g = None
            if g is not None:
                g.launch(self.stream)
                self.stats["graph_replays"] += 1
                return result()
        for i in rest:
            step(i)
        self.stats["eager_steps"] += len(rest)
        return result()


def _addr(v):
    if hasattr(v, "data") and hasattr(v.data, "ptr"):
        return (v.data.ptr, v.shape, v.strides)
    if isinstance(v, (np.generic, int, float, bool)):
        return ("v", repr(v))
    return ("id", id(v))


def compile_optimized(graph: Graph, opt, *, timings: dict[str, float] | None = None,
                      cache=None, always_compile: bool | None = None) -> CompiledCuda:
    """Render the optimized graph's kernels, write them to the cache, import, build the
    executor."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    host: set = set()
    g = opt.graph
    codegen.classify(g, host, codegen.mirrored_inputs(g))
    source, specs = codegen.render(g, host)
    timings["render"] = time.perf_counter() - t0
    # the module holds kernels only (the executor walks the graph in memory), so the source
    # alone keys it: graphs that differ only in GEMM sizes share kernels and numba's cache
    key = kernel_cache.key("cuda", source, code_files=CODE_FILES)
    t0 = time.perf_counter()
    mod, path = kernel_cache.load(source, "rnncomp_cuda", key, cache=cache, always=always_compile)
    timings["import"] = time.perf_counter() - t0
    return CompiledCuda(graph, opt, source, path, key, mod, specs, host, timings)


__all__ = ["compile_optimized", "CompiledCuda"]
