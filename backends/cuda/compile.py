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
* a scan with the `rows` hint (a variable-length batch sorted by length) computes the active
  rows [:nb(t)] of each step only (row views of full-size buffers; nb from the sorted lengths,
  kept on the host); under CUDA graphs its steps are captured in segments of a fixed grid with
  their rows rounded up, cached without the trip count, so other length patterns replay them;
  ragged GEMMs run over the valid (t, b) rows only;
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

from rnncomp.ir import Graph, Node, Op, rows as rows_ir  # noqa: E402
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
    persistent, use_graphs, capture_error, stats; for variable-length batches row_log,
    row_chunk, row_levels, max_graphs)."""

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
        self.stats = {"graph_replays": 0, "captures": 0, "persistent_runs": 0, "eager_steps": 0,
                      "rows_skipped": 0}
        # length-aware scans (the `rows` hint, rnncomp.ir.rows): scan id -> ids of the per-row
        # values of its body, which a step computes on its active rows [:nb] only
        self.row_classes = _hinted_scans(self.optimized)
        # top-level permutes of a sorted batch that touch the steps below max(L) only
        self.permute_modes = _permute_modes(self.optimized)
        self.row_chunk = 8    # steps per captured segment of a length-aware scan
        self.row_levels = 8   # a segment's rows are rounded up to a multiple of ceil(B / this)
        self.max_graphs = 512  # captured graphs kept (the oldest are dropped)
        # per call: one entry per length-aware scan run, {"scan", "reverse", "rows"}: the rows
        # each step computed, in execution order
        self.row_log: list[dict] = []
        self._rows: tuple[set, int] | None = None  # (per-row ids, nb) of the running step
        self._ragged_idx: dict = {}
        self.sim_graph_keys: set = set()  # simulator: the keys of the graphs a GPU captures
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

    def obuf(self, key, n: Node, shape, dtype):
        """The buffer of node n; inside a length-aware step, the view of its active rows when
        n is a per-row value (buffers keep their full shape: stable addresses)."""
        b = self.buf(key, shape, dtype)
        r = self._rows
        return b[:r[1]] if r is not None and id(n) in r[0] else b

    def rshape(self, n: Node, shape) -> tuple[int, ...]:
        """shape with axis 0 cut to the active rows when n is a per-row value of the running
        length-aware step."""
        r = self._rows
        return (r[1],) + tuple(shape[1:]) if r is not None and id(n) in r[0] else tuple(shape)

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
        self.row_log = []
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
                env[id(n)] = n.dtype.np.type(self._dimsize(n, env))
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
            b = self.obuf(key, n, sh, dt)
            b.fill(n.attr("value"))
            env[id(n)] = b
        elif op is Op.MATMUL:
            a, w = ins
            out = self.obuf(key, n, sh, dt)
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
            out = self.obuf(key, n, sh, dt)
            xp.copyto(out, ins[0].transpose(tuple(n.attr("perm"))))
            env[id(n)] = out
        elif op is Op.RESHAPE:
            x = ins[0]
            if n.inputs[0].shape == ():
                out = self.obuf(key, n, sh, dt)
                out[...] = x
                env[id(n)] = out
            else:
                env[id(n)] = xp.ascontiguousarray(x).reshape(self.rshape(n, sh))
        elif op is Op.SLICE:
            ax = n.attr("axis")
            idx = (slice(None),) * ax + (slice(n.attr("start"), n.attr("stop")),)
            env[id(n)] = ins[0][idx]
        elif op is Op.PAD:
            ax, s = n.attr("axis"), n.attr("start")
            d = ins[0].shape[ax]
            out = self.obuf(key, n, sh, dt)
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
            out = self.obuf(key, n, sh, dt)
            off = 0
            for x in ins:
                d = x.shape[ax]
                out[(slice(None),) * ax + (slice(off, off + d),)] = x
                off += d
            env[id(n)] = out
        elif op in (Op.REDUCE_SUM, Op.REDUCE_MAX):
            out = self.obuf(key, n, sh, dt)
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
            env[id(n)] = n.dtype.np.type(self._dimsize(n, env))
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
                out = self.obuf(key, n, sh, dt)
                out.fill(0)
                rt.scatter_add(xp, out, idx, src)
                env[id(n)] = out
        elif op is Op.ARGMAX:
            env[id(n)] = xp.argmax(ins[0], axis=n.attr("axis")).astype(dt)
        # variable-length batches: the order and the sorted lengths are kept on the host too
        # (no device sync for the trip count, the active rows or the ragged GEMMs' row sets)
        elif op is Op.ARGSORT:
            h = np.argsort(-np.asarray(self._hostval(n.inputs[0], env)).astype(np.int64),
                           kind="stable").astype(np.int32)
            self._mirror[id(n)] = h
            env[id(n)] = self._upload(key, h, dt)
        elif op is Op.PERMUTE:
            self._permute(n, ins, env)
        elif op in (Op.RAGGED_MATMUL, Op.RAGGED_TENSORDOT):
            a, b, _ = ins
            T = a.shape[0]
            tf, idx = self._ragged_rows(self._hostval(n.inputs[2], env), T)
            a = xp.ascontiguousarray(a)
            b = xp.ascontiguousarray(b)
            out = self.obuf(key, n, sh, dt)
            if op is Op.RAGGED_MATMUL:
                rt.ragged_matmul(xp, self.gemm, a, b, tf, idx, out)
            else:
                rt.ragged_tensordot(xp, self.gemm, a, b, tf, idx, out)
            env[id(n)] = out
        else:
            raise NotImplementedError(f"CUDA backend: no lowering for op {op.value}")

    def _upload(self, key, h: np.ndarray, dtype):
        """A host array copied into the persistent buffer `key` (a stable address)."""
        h = np.ascontiguousarray(h, dtype)
        b = self.buf(key, h.shape, dtype)
        if self.sim:
            np.copyto(b, h)
        else:
            b.set(h)
        return b

    def _dimsize(self, n: Node, env: dict) -> int:
        """A DIMSIZE's value; axis 0 of a per-row value of a length-aware step is the batch,
        not the active rows the step computes."""
        x, ax = n.inputs[0], n.attr("axis")
        r = self._rows
        if ax == 0 and r is not None and id(x) in r[0]:
            return self.shape(x.shape)[0]
        return np.shape(env[id(x)])[ax]

    def _ragged_rows(self, lengths, T: int):
        """rt.ragged_rows with the index array on the device, cached per (T, lengths): the
        ragged GEMMs of one call (projection, dX, weight gradients) share one upload."""
        L = np.asarray(lengths).astype(np.int64)
        k = (T, L.tobytes())
        r = self._ragged_idx.get(k)
        if r is None:
            tf, idx = rt.ragged_rows(L, T)
            if len(self._ragged_idx) >= 16:
                self._ragged_idx.clear()
            r = self._ragged_idx[k] = (tf, self.xp.asarray(idx))
        return r

    def _permute(self, n: Node, ins: list, env: dict) -> None:
        """x.take(perm, axis) (or its inverse). A permutation known on the host (the batch's
        order) is checked there, and the identity costs no copy; a sorted batch's steps are
        permuted below max(L) only where every reader stops there (rows.steps_read), results
        zero past max(L) are copied below it and zero-filled above (rows.zero_steps)."""
        xp = self.xp
        x, p = ins
        ax = n.attr("axis")
        inverse = bool(n.attr("inverse", False))
        ph = self._mirror.get(id(n.inputs[1]))
        if ph is None:
            p = xp.asarray(p).astype(np.int64)
            env[id(n)] = xp.ascontiguousarray(xp.take(x, xp.argsort(p) if inverse else p,
                                                      axis=ax))
            return
        ph = ph.astype(np.int64)
        if sorted(ph.tolist()) != list(range(ph.shape[0])):
            raise InputError(f"permute: {ph.tolist()} is not a permutation of "
                             f"0..{ph.shape[0] - 1}")
        xh = self._mirror.get(id(n.inputs[0]))
        if xh is not None:  # the sorted lengths: on the host too
            self._mirror[id(n)] = np.take(xh, np.argsort(ph) if inverse else ph, axis=ax)
        if np.array_equal(ph, np.arange(ph.shape[0])):
            env[id(n)] = x  # an already sorted batch
            return
        mode = self.permute_modes.get(id(n))
        q = np.argsort(ph) if inverse else ph
        # results in the node's own buffer: a stable address (a later scan's graph key)
        if xh is not None:
            env[id(n)] = self._upload((id(n), 0), self._mirror[id(n)], n.dtype.np)
            return
        out = self.buf((id(n), 0), self.shape(n.shape), n.dtype.np)
        idx = xp.asarray(q)
        if mode is None:
            xp.take(x, idx, axis=ax, out=out)
            env[id(n)] = out
            return
        kind, L0 = mode
        T = x.shape[0]
        m = int(min(T, max(0, int(np.max(self._hostval(L0, env), initial=0)))))
        if m:
            out[:m] = xp.take(x[:m], idx, axis=1)
        if kind == "zero" and m < T:
            out[m:] = 0
        env[id(n)] = out

    def _launch(self, spec: codegen.KernelSpec, n: Node, env: dict, direct: dict) -> None:
        outs = []
        for k, o in enumerate(spec.outs):
            d = direct.get((id(n), k))
            if d is None:
                if spec.scalar_iter:
                    d = self.buf((id(n), k), (1,), o.dtype.np)
                else:
                    d = self.obuf((id(n), k), n, self.shape(o.shape), o.dtype.np)
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

        # the `rows` hint (rnncomp.ir.rows): the batch is sorted by length, longest first, and
        # a row past its length is a no-op, so step t computes its active rows [:nb] only
        # (per-row body values are views of the first nb rows of their buffers; carry rows
        # past nb stay frozen, ys rows past nb stay zero)
        per_row = self.row_classes.get(id(n))
        nbs = None
        if per_row is not None and steps > 0:
            nbs = self._active_rows(n, env, steps, carries[0].shape[0])
        w_rows = {k for k, p in enumerate(b_w) if per_row is not None and id(p) in per_row}

        def step(t: int, nb: int | None = None) -> None:
            if nb == 0:
                return  # every row has ended: a no-op
            rs = Ellipsis if nb is None else slice(0, nb)
            benv: dict = {id(t_ph): np.int32(t)}
            for p, c in zip(b_carry, carries):
                benv[id(p)] = c if nb is None else c[rs]
            for p, x in zip(b_x, X):
                benv[id(p)] = x[t] if nb is None else x[t, rs]
            for k, (p, w) in enumerate(zip(b_w, W)):
                benv[id(p)] = w[rs] if nb is not None and k in w_rows else w
            dmap = {key: ys[k][t] if nb is None else ys[k][t, rs] for key, k in direct.items()}
            saved = self._rows
            self._rows = None if nb is None else (per_row, nb)
            try:
                self._run(prog, benv, dmap)
            finally:
                self._rows = saved
            for k, y in enumerate(body.outputs[nc:]):
                if k not in written:
                    v = benv[id(y)] if y.op is not Op.CONST else y.attr("value")
                    if nb is None:
                        ys[k][t] = v
                    else:
                        ys[k][t, rs] = v
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
                    carries[k][rs] = v

        order = list(range(steps - 1, -1, -1)) if info.reverse else list(range(steps))
        if info.stop is not None:
            # run-time stop: one read of the flag carry per step (a device sync, so no CUDA
            # graph); the loop ends before a step whose flag is True
            for t in order:
                if bool(self._hostval_of(carries[info.stop])):
                    break
                step(t, None if nbs is None else int(nbs[t]))
                self.stats["eager_steps"] += 1
            return result()
        if steps == 0:
            return result()
        log: list[int] | None = None
        if nbs is not None:
            log = []
            self.row_log.append({"scan": n.name or f"scan{list(self.row_classes).index(id(n))}",
                                 "reverse": bool(info.reverse), "rows": log})

        def run(ts: list[int], nb_of) -> None:
            for t in ts:
                nb = nb_of(t)
                step(t, nb)
                if log is not None:
                    log.append(nb)
                    self.stats["rows_skipped"] += carries[0].shape[0] - nb
            self.stats["eager_steps"] += len(ts)

        exact = (lambda t: None) if nbs is None else (lambda t: int(nbs[t]))  # noqa: E731
        run(order[:1], exact)  # compiles kernels, allocates the step buffers
        rest = order[1:]
        capturable = steps > 1 and self.use_graphs and not hc and not swap
        B = carries[0].shape[0] if nbs is not None else 0
        if capturable and nbs is not None and int(nbs[steps - 1]) < B:
            # shrinking rows: segments of a fixed grid of steps, each with its largest row count
            # rounded up (row_segments), captured per (steps, rows) and replayed whenever a
            # later call has the same segment (the trip count is not part of the key)
            granule = -(-B // max(1, int(self.row_levels)))
            ins_key = tuple(_addr(v) for v in (ins[:-1] if info.has_length else ins))
            for ts, nb in row_segments(rest, nbs, max(1, int(self.row_chunk)), granule, B):
                key = ("rows", id(n), ts[0], ts[-1], nb, tuple(sorted(self.dims.items())),
                       ins_key, tuple(_addr(c) for c in carries), tuple(_addr(y) for y in ys))
                if self._replay(key, lambda ts=ts, nb=nb: [step(t, nb) for t in ts]):
                    if log is not None:
                        log.extend([nb] * len(ts))
                        self.stats["rows_skipped"] += (B - nb) * len(ts)
                else:
                    run(ts, lambda t, nb=nb: nb)
            return result()
        if capturable:
            key = (id(n), steps, tuple(sorted(self.dims.items())),
                   tuple(_addr(v) for v in ins), tuple(_addr(c) for c in carries),
                   tuple(_addr(y) for y in ys))
            if self._replay(key, lambda: [step(t, exact(t)) for t in rest]):
                if log is not None:
                    log.extend(exact(t) for t in rest)
                return result()
        run(rest, exact)
        return result()

    def _active_rows(self, n: Node, env: dict, steps: int, B: int) -> np.ndarray:
        """nb[t] = #{b : lengths[b] > t} for t < steps, from the hinted scan's sorted lengths
        (on the host: mirrored from the argsort of the input lengths, no device sync)."""
        L = np.asarray(self._hostval(rows_ir.lengths_input(n), env)).astype(np.int64).ravel()
        if L.shape[0] != B:
            raise InputError(f"scan {n.name!r}: the rows hint's lengths have {L.shape[0]} rows, "
                             f"the batch has {B}")
        if np.any(L[1:] > L[:-1]):
            raise ValueError("rnncomp: the rows hint needs lengths sorted longest first, "
                             f"received {L.tolist()}")
        return np.searchsorted(-L, -np.arange(steps), side="left")

    def _replay(self, key, fn) -> bool:
        """Run fn's launches as a CUDA graph, captured on the first call with this key and
        replayed after; False (fn not run) in the simulator (which records the key in
        sim_graph_keys), with graphs off, or when capture fails (capture_error says why; graphs
        are then off for this compiled graph)."""
        if not self.use_graphs:
            return False
        if self.sim:  # no graphs: record the key a GPU would capture under
            if len(self.sim_graph_keys) >= max(1, int(self.max_graphs)):
                self.sim_graph_keys.clear()
            self.sim_graph_keys.add(key)
            return False
        g = self._graphs.get(key)
        if g is None:
            try:
                self._capturing = True
                try:
                    g = rt.GraphCapture.capture(self.stream, fn)
                finally:
                    self._capturing = False
            except Exception as e:  # plain launches instead
                import traceback

                self.capture_error = f"{type(e).__name__}: {e}"
                self.capture_traceback = traceback.format_exc()
                self.use_graphs = False
                return False
            while len(self._graphs) >= max(1, int(self.max_graphs)):
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = g
            self.stats["captures"] += 1
        g.launch(self.stream)
        self.stats["graph_replays"] += 1
        return True


def row_segments(order: list[int], nbs, chunk: int, granule: int, B: int) -> list:
    """The steps `order` (execution order) of a length-aware scan as [(steps, rows)]: steps
    grouped by t // chunk (a fixed grid, so the same segments recur in calls with other
    lengths or trip counts), each run with the most active rows of its steps (nbs[t]) rounded
    up to a multiple of granule, at most B. Rows computed past their length are exact: the
    body's own masks keep them no-ops (the masked semantics), only the work is wasted."""
    segs: list = []
    for t in order:
        g = t // chunk
        if segs and segs[-1][0] == g:
            segs[-1][1].append(t)
        else:
            segs.append((g, [t]))
    out = []
    for _, ts in segs:
        nb = max(int(nbs[t]) for t in ts)
        out.append((ts, min(B, -(-nb // granule) * granule)))
    return out


def _hinted_scans(graph: Graph) -> dict[int, set[int]]:
    """Scan id -> the ids of its body's per-row values, for every scan (nested ones too) whose
    `rows` hint holds (rows.check: a row-separable body; a body that fails runs masked)."""
    out: dict[int, set[int]] = {}
    for n in graph.nodes:
        if n.op is not Op.SCAN:
            continue
        cls = rows_ir.check(n)
        if cls is not None and scan_info(n).stop is None:
            out[id(n)] = {i for i, c in cls.items() if c == rows_ir.R}
        out.update(_hinted_scans(n.attr("body")))
    return out


def _permute_modes(graph: Graph) -> dict[int, tuple[str, Node]]:
    """Top-level permutes of a batch sorted by length that need the steps below max(L) only:
    id -> ("head", L) where every reader stops there (rows.steps_read), ("zero", L) for
    results zero past max(L) (rows.zero_steps: copied below, zero-filled above)."""
    users: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(id(i), []).append(n)
    outputs = {id(o) for o in graph.outputs}
    modes: dict[int, tuple[str, Node]] = {}
    for n in graph.nodes:
        if n.op is not Op.PERMUTE:
            continue
        L = rows_ir.zero_steps(n)
        if L is not None:
            modes[id(n)] = ("zero", L)
            continue
        L = rows_ir.steps_read(n, users, outputs)
        if L is not None:
            modes[id(n)] = ("head", L)
    return modes


def _addr(v):
    if hasattr(v, "data") and hasattr(v.data, "ptr"):
        return (v.data.ptr, v.shape, v.strides)
    if isinstance(v, np.ndarray):  # the simulator's buffers
        return (v.__array_interface__["data"][0], v.shape, v.strides)
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
