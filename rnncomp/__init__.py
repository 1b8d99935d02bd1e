"""rnncomp: a compiler for recurrent neural networks.

Declare cells (built-in or your own) and how they unroll over time in a small Python DSL;
rnncomp traces them into an IR graph, optimizes it, derives BPTT by automatic differentiation,
and lowers forward and backward graphs to fused Numba CPU and numba-cuda GPU kernels.

The tree follows the pipeline, and imports point only down it:

    ir/          graph, ops registry, dtypes, printer, verifier      (imports nothing of rnncomp)
    frontend/    tracing, DSL ops, cells, unrolls, layers, losses    (ir)
    transforms/  optimizing passes, autodiff (BPTT)                  (ir)
    runtime/     interpreter, compile driver, kernel cache, Model    (ir, frontend, transforms)
    backends/    one folder per backend: cpu (Numba), cuda           (runtime and below)
    train/       optimizers, Trainer, checkpoints, data              (runtime and below)
    tools/       command line, pictures, PyTorch conversion          (anything)

Nothing in rnncomp's core imports Numba: the backends (rnncomp.backends.*) are imported lazily,
by name, when a graph is first compiled for them. The module paths of the flat layout before 0.2
(`rnncomp.passes`, `rnncomp.compiler`, ...) still import, as aliases of the modules that moved.
"""

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys as _sys

from .frontend import dsl, initializers
from .frontend.cells import (
    AUTO_REUSE,
    BasicLSTMCell,
    BasicRNNCell,
    DropoutWrapper,
    FunctionCell,
    GRUCell,
    LSTMCell,
    LSTMStateTuple,
    MultiRNNCell,
    OutputProjectionWrapper,
    RNNCell,
)
from .frontend.dsl import (
    abs,
    add,
    argmax,
    broadcast_to,
    cast,
    clip_by_value,
    concat,
    count,
    div,
    dropout,
    embedding_lookup,
    equal,
    exp,
    expand_dims,
    gather,
    greater,
    greater_equal,
    less,
    less_equal,
    log,
    log_softmax,
    logical_and,
    logical_not,
    logical_or,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    minimum,
    mul,
    neg,
    one_hot,
    ones,
    pow,
    random_uniform_like,
    reduce_max,
    reduce_mean,
    reduce_sum,
    relu,
    reshape,
    sigmoid,
    slice,
    softmax,
    split,
    sqrt,
    square,
    stack,
    stop_gradient,
    sub,
    sum,
    take,
    tanh,
    tensordot,
    training_flag,
    transpose,
    unstack,
    where,
    zeros,
    zeros_like,
)
from .frontend.rnn import dynamic_rnn, scan, static_rnn, step_index
from .frontend.bidirectional import (
    bidirectional_dynamic_rnn,
    reverse_sequence,
    stack_bidirectional_dynamic_rnn,
)
from .frontend.tf1 import (
    bool_,
    constant_initializer,
    contrib,
    float32,
    float64,
    glorot_normal_initializer,
    glorot_uniform_initializer,
    int32,
    int64,
    nn,
    ones_initializer,
    orthogonal_initializer,
    random_normal_initializer,
    random_uniform_initializer,
    seq2seq,
    truncated_normal_initializer,
    variance_scaling_initializer,
    zeros_initializer,
)
from .frontend.trace import TraceError, param, variable_scope
from .ir import Graph, Node, Op, ops, pformat
from .ir.dtypes import DType, f32, f64, i32, i64
from .ir.ops import ShapeError
from .ir.verify import VerifyError, verify
from .runtime.interp import InputError, NonFiniteError, interpret
from .runtime.metrics import accuracy
from .runtime.model import Input, Model, trace
from .runtime.threads import get_num_threads, set_num_threads
from .version import __version__

# Old flat module path -> where it lives now. `import rnncomp.passes` and `rc.passes` keep
# working (loaded on first use, so `import rnncomp` pays for none of them).
_MOVED = {
    "dtypes": "ir.dtypes", "ops": "ir.ops", "printer": "ir.printer", "verify": "ir.verify",
    "trace": "frontend.trace", "dsl": "frontend.dsl", "cells": "frontend.cells",
    "rnn": "frontend.rnn", "layers": "frontend.layers", "losses": "frontend.losses",
    "initializers": "frontend.initializers",
    "passes": "transforms.passes", "autodiff": "transforms.autodiff",
    "interp": "runtime.interp", "compiler": "runtime.compiler", "model": "runtime.model",
    "grad": "runtime.grad",
    "optim": "train.optim", "checkpoint": "train.checkpoint", "data": "train.data",
    "cli": "tools.cli", "viz": "tools.viz", "convert": "tools.convert", "onnx": "tools.onnx",
}


class _MovedModuleFinder(_importlib_abc.MetaPathFinder, _importlib_abc.Loader):
    """Resolves `rnncomp.<old name>` to the module that now holds it (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head != __name__ or tail not in _MOVED:
            return None
        return _importlib_util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = _importlib.import_module(f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}")
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias's spec on the shared module: give it back its own
        module.__spec__ = self._own_spec

    def get_code(self, fullname):
        # `python -m rnncomp.cli` runs the moved module (rnncomp.tools.cli) as __main__
        target = f"{__name__}.{_MOVED[fullname.partition('.')[2]]}"
        return compile(f"import runpy\nrunpy.run_module({target!r}, run_name='__main__', "
                       f"alter_sys=True)\n", f"<alias of {target}>", "exec")


if not any(isinstance(f, _MovedModuleFinder) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedModuleFinder())


class _Package(type(_sys)):
    """rnncomp's module type: importing an old path such as `rnncomp.verify` or `rnncomp.trace`
    must not replace the public function of that name (`rc.verify`, `rc.trace`) with the
    module, as the import system would when it binds the submodule on its parent."""

    def __setattr__(self, name, value):
        if (name in _MOVED and isinstance(value, type(_sys))
                and not isinstance(self.__dict__.get(name, value), type(_sys))):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _MOVED:
        return _importlib.import_module(f"{__name__}.{name}")
    if name in ("train", "tools", "transforms", "runtime", "frontend"):
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
