"""rnncomp: a compiler for recurrent neural networks.

Declare cells (built-in or your own) and how they unroll over time in a small Python DSL;
rnncomp traces them into an IR graph, optimizes it, derives BPTT by automatic differentiation,
and lowers forward and backward graphs to fused Numba CPU and numba-cuda GPU kernels.

Nothing in this package imports Numba: the backends (rnncomp.backends.*) are imported lazily.
"""

from . import dsl, initializers, ops
from .cells import (
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
from .dsl import (
    abs,
    add,
    broadcast_to,
    cast,
    concat,
    count,
    div,
    dropout,
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
    relu,
    reshape,
    sigmoid,
    slice,
    softmax,
    split,
    sqrt,
    square,
    stop_gradient,
    sub,
    sum,
    take,
    tanh,
    tensordot,
    training_flag,
    transpose,
    where,
    zeros,
    zeros_like,
)
from .dtypes import DType, f32, f64, i32, i64
from .interp import InputError, NonFiniteError, interpret
from .ir import Graph, Node, Op
from .model import Input, Model, trace
from .ops import ShapeError
from .printer import pformat
from .rnn import dynamic_rnn, scan, static_rnn, step_index
from .trace import TraceError, param, variable_scope
from .verify import VerifyError, verify

__version__ = "0.1.0"
