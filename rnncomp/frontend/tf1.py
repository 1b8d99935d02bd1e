"""TF1's names for what the front end already has: `rc.nn`, `rc.nn.rnn_cell`, `rc.contrib.rnn`,
`rc.contrib.layers`, the dtype names (`rc.float32`, ...) and the initializer factories
(`rc.random_uniform_initializer(...)`, ...), so that TF1 code runs with `tf.` replaced by `rc.`.

Nothing here computes anything of its own: each name is the rnncomp function or class of the
same meaning (cells.py, rnn.py, dsl.py, losses.py, initializers.py), or a thin adapter of an
rnncomp initializer to TF1's argument names and defaults. The full table of TF1 names, their
rnncomp names and every difference is docs/tf1_pytorch_mapping.md.
"""

from __future__ import annotations

from typing import Any

from . import attention, bidirectional, cells, decode, dsl, initializers, losses, rnn
from ..ir.dtypes import DType, as_dtype

__all__ = ["nn", "contrib", "seq2seq", "float32", "float64", "int32", "int64", "bool_",
           "constant_initializer", "zeros_initializer", "ones_initializer",
           "random_uniform_initializer", "random_normal_initializer",
           "truncated_normal_initializer", "glorot_uniform_initializer",
           "glorot_normal_initializer", "variance_scaling_initializer", "orthogonal_initializer"]

float32, float64, int32, int64, bool_ = DType.f32, DType.f64, DType.i32, DType.i64, DType.bool


class Namespace:
    """A read-only bag of names, printed with the path users type (e.g. rnncomp.nn.rnn_cell)."""

    def __init__(self, path: str, **names: Any):
        self.__dict__.update(names)
        self._path = path

    def __repr__(self) -> str:
        public = sorted(k for k in self.__dict__ if not k.startswith("_"))
        return f"<namespace {self._path}: {', '.join(public)}>"

    def __dir__(self):
        return sorted(k for k in self.__dict__ if not k.startswith("_"))


# --- initializers: TF1 names, argument order and defaults -----------------------------------
# TF1 initializers take `seed` and `dtype`: here a parameter's values come from m.init(seed)
# and its name, and its dtype is the model's; `seed` must be an int or None and `dtype` a float
# type or None (the parameter's dtype is used).
def _check_seed_dtype(seed: Any, dtype: Any, who: str) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{who}: seed must be an int or None, received {seed!r}")
    if dtype is not None and not as_dtype(dtype).is_float:
        raise ValueError(f"{who}: dtype must be a float type, received {dtype!r}")


def constant_initializer(value: float = 0, dtype: Any = None, verify_shape: bool = False):
    """tf.constant_initializer(value): every element equal to `value` (a number)."""
    _check_seed_dtype(None, dtype, "constant_initializer")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"constant_initializer: value must be a number, received {value!r} "
                         f"(set whole arrays in the params dict instead)")
    return initializers.constant(float(value))


def zeros_initializer(dtype: Any = None):
    """tf.zeros_initializer()."""
    _check_seed_dtype(None, dtype, "zeros_initializer")
    return initializers.zeros()


def ones_initializer(dtype: Any = None):
    """tf.ones_initializer()."""
    _check_seed_dtype(None, dtype, "ones_initializer")
    return initializers.ones()


def random_uniform_initializer(minval: float = 0.0, maxval: float | None = None,
                               seed: int | None = None, dtype: Any = None):
    """tf.random_uniform_initializer(minval=0, maxval=1): uniform on [minval, maxval)."""
    _check_seed_dtype(seed, dtype, "random_uniform_initializer")
    return initializers.random_uniform(float(minval), 1.0 if maxval is None else float(maxval))


def random_normal_initializer(mean: float = 0.0, stddev: float = 1.0, seed: int | None = None,
                              dtype: Any = None):
    """tf.random_normal_initializer(mean=0, stddev=1)."""
    _check_seed_dtype(seed, dtype, "random_normal_initializer")
    return initializers.random_normal(float(stddev), float(mean))


def truncated_normal_initializer(mean: float = 0.0, stddev: float = 1.0,
                                 seed: int | None = None, dtype: Any = None):
    """tf.truncated_normal_initializer(mean=0, stddev=1): normal cut at two stddev."""
    _check_seed_dtype(seed, dtype, "truncated_normal_initializer")
    return initializers.truncated_normal(float(stddev), float(mean))


def glorot_uniform_initializer(seed: int | None = None, dtype: Any = None):
    """tf.glorot_uniform_initializer(): TF1's default for kernels."""
    _check_seed_dtype(seed, dtype, "glorot_uniform_initializer")
    return initializers.glorot_uniform()


def glorot_normal_initializer(seed: int | None = None, dtype: Any = None):
    """tf.glorot_normal_initializer()."""
    _check_seed_dtype(seed, dtype, "glorot_normal_initializer")
    return initializers.glorot_normal()


def variance_scaling_initializer(scale: float = 1.0, mode: str = "fan_in",
                                 distribution: str = "truncated_normal",
                                 seed: int | None = None, dtype: Any = None):
    """tf.variance_scaling_initializer (TF1 core): variance scale / n, n chosen by mode."""
    _check_seed_dtype(seed, dtype, "variance_scaling_initializer")
    return initializers.variance_scaling(float(scale), mode, distribution)


def orthogonal_initializer(gain: float = 1.0, seed: int | None = None, dtype: Any = None):
    """tf.orthogonal_initializer(gain=1)."""
    _check_seed_dtype(seed, dtype, "orthogonal_initializer")
    return initializers.orthogonal(float(gain))


def _contrib_variance_scaling_initializer(factor: float = 2.0, mode: str = "FAN_IN",
                                          uniform: bool = False, seed: int | None = None,
                                          dtype: Any = None):
    """tf.contrib.layers.variance_scaling_initializer(): He initialization by default.

    uniform=False: a normal truncated at two stddev with stddev sqrt(1.3 * factor / n), as
    TF1's contrib version; uniform=True: limit sqrt(3 * factor / n).
    """
    _check_seed_dtype(seed, dtype, "variance_scaling_initializer")
    modes = {"FAN_IN": "fan_in", "FAN_OUT": "fan_out", "FAN_AVG": "fan_avg"}
    if mode not in modes:
        raise ValueError(f"variance_scaling_initializer: mode must be one of {sorted(modes)}, "
                         f"received {mode!r}")
    if uniform:
        return initializers.variance_scaling(float(factor), modes[mode], "uniform")
    # rnncomp's truncated normal has the exact variance scale / n (it divides the stddev by
    # 0.8796..., the stddev of a unit normal cut at +-2); contrib's uses stddev sqrt(1.3 f / n)
    c = 0.87962566103423978
    return initializers.variance_scaling(1.3 * float(factor) * c * c, modes[mode],
                                         "truncated_normal")


# --- namespaces -------------------------------------------------------------------------------
_CELLS = dict(
    RNNCell=cells.RNNCell,
    BasicRNNCell=cells.BasicRNNCell,
    BasicLSTMCell=cells.BasicLSTMCell,
    LSTMCell=cells.LSTMCell,
    GRUCell=cells.GRUCell,
    MultiRNNCell=cells.MultiRNNCell,
    DropoutWrapper=cells.DropoutWrapper,
    OutputProjectionWrapper=cells.OutputProjectionWrapper,
    LSTMStateTuple=cells.LSTMStateTuple,
)

rnn_cell = Namespace("rnncomp.nn.rnn_cell", **_CELLS)

nn = Namespace(
    "rnncomp.nn",
    rnn_cell=rnn_cell,
    dynamic_rnn=rnn.dynamic_rnn,
    static_rnn=rnn.static_rnn,
    bidirectional_dynamic_rnn=bidirectional.bidirectional_dynamic_rnn,
    relu=dsl.relu,
    tanh=dsl.tanh,
    sigmoid=dsl.sigmoid,
    softmax=dsl.softmax,
    log_softmax=dsl.log_softmax,
    sparse_softmax_cross_entropy_with_logits=losses.sparse_softmax_cross_entropy_with_logits,
    embedding_lookup=dsl.embedding_lookup,
)

seq2seq = Namespace(
    "rnncomp.contrib.seq2seq",
    BahdanauAttention=attention.BahdanauAttention,
    LuongAttention=attention.LuongAttention,
    AttentionWrapper=attention.AttentionWrapper,
    AttentionWrapperState=attention.AttentionWrapperState,
    BasicDecoder=decode.BasicDecoder,
    BasicDecoderOutput=decode.BasicDecoderOutput,
    TrainingHelper=decode.TrainingHelper,
    GreedyEmbeddingHelper=decode.GreedyEmbeddingHelper,
    dynamic_decode=decode.dynamic_decode,
    Dense=decode.Dense,
    BeamSearchDecoder=decode.BeamSearchDecoder,
    BeamSearchDecoderOutput=decode.BeamSearchDecoderOutput,
    BeamSearchDecoderState=decode.BeamSearchDecoderState,
    FinalBeamSearchDecoderOutput=decode.FinalBeamSearchDecoderOutput,
    tile_batch=decode.tile_batch,
    gather_tree=decode.gather_tree,
)

contrib = Namespace(
    "rnncomp.contrib",
    seq2seq=seq2seq,
    rnn=Namespace("rnncomp.contrib.rnn", static_rnn=rnn.static_rnn,
                  stack_bidirectional_dynamic_rnn=bidirectional.stack_bidirectional_dynamic_rnn,
                  **_CELLS),
    layers=Namespace("rnncomp.contrib.layers",
                     variance_scaling_initializer=_contrib_variance_scaling_initializer),
)
