"""Independent NumPy reference implementations of the TF1 recurrent cells.

This module is the test oracle for rnncomp: it deliberately does not import rnncomp
and is written as a plain loop over time so that it is easy to audit against the
formulas in ``docs/parameters.md``.  Use it from any test::

    from tests.reference_cells import lstm_ref          # or, with tests/ on sys.path,
    from reference_cells import lstm_ref

Parameters are the rnncomp flat ``dict[str, np.ndarray]``; ``scope`` is the *cell*
scope, i.e. the prefix right before ``kernel`` / ``gates/kernel``:
``"rnn/basic_lstm_cell"``, ``"rnn/multi_rnn_cell/cell_1/gru_cell"``, ...
(:func:`layer_scope` builds the latter).

Shapes: ``X`` is ``[B, T, I]`` (batch-major); outputs are ``[B, T, H]``; states are
``[B, H]``.  ``x`` and ``h`` are concatenated as ``[x, h]`` and multiplied by a single
kernel, as in TF1.

Cells (z = [x, h] @ kernel + bias):

* ``rnn_ref``:  ``h' = act(z)``, ``act`` in {tanh, relu}.  State ``h``.
* ``lstm_ref``: kernel columns ``i, j, f, o``;
  ``i = sig(z_i [+ w_i_diag*c])``, ``j = tanh(z_j)``,
  ``f = sig(z_f + forget_bias [+ w_f_diag*c])``, ``c' = f*c + i*j``,
  ``o = sig(z_o [+ w_o_diag*c'])``, ``h' = o*tanh(c')``.  State ``(c, h)``
  (the TF1 ``LSTMStateTuple`` order).  Bracketed terms only with ``peepholes=True``.
* ``gru_ref``: ``gates/kernel`` columns ``r, u``; ``r, u = sig([x, h] @ Wg + bg)``;
  reset_after=False (TF1): ``c = tanh([x, r*h] @ Wc + bc)``;
  reset_after=True (cuDNN/PyTorch): ``c = tanh(x @ Wc[:I] + bc + r*(h @ Wc[I:] + rb))``
  with ``rb = candidate/recurrent_bias``; then ``h' = u*h + (1-u)*c``.  State ``h``.

``seq_len`` (optional, ``[B]`` ints in ``[0, T]``) follows ``tf.nn.dynamic_rnn``:
for ``t >= seq_len[b]`` the output of instance ``b`` is zero and its state is
carried through unchanged, so the returned final state is the state after its last
valid step (the initial state when ``seq_len[b] == 0``).

Arithmetic is done in ``dtype`` (default: ``np.result_type`` of ``X``, the
parameters used and any initial state), and results are returned in that dtype.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "sigmoid",
    "layer_scope",
    "rnn_step",
    "lstm_step",
    "gru_step",
    "run_ref",
    "rnn_ref",
    "lstm_ref",
    "gru_ref",
    "multi_ref",
]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(x), copy=False)


def layer_scope(scope: str, k: int, cell: str) -> str:
    """Cell scope of layer ``k`` of a MultiRNNCell: ``{scope}/multi_rnn_cell/cell_{k}/{cell}``."""
    return f"{scope}/multi_rnn_cell/cell_{k}/{cell}"


def _p(params: Mapping[str, np.ndarray], scope: str, name: str) -> np.ndarray:
    key = f"{scope}/{name}"
    if key not in params:
        raise KeyError(f"reference_cells: parameter {key!r} not found")
    return np.asarray(params[key])


def _dtype(dtype, *arrays) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    return np.result_type(*[np.asarray(a).dtype for a in arrays if a is not None])


# --------------------------------------------------------------------------- single steps


def rnn_step(x, h, params, scope, activation="tanh"):
    """One BasicRNNCell step: ``h' = act([x, h] @ kernel + bias)``."""
    z = np.concatenate([x, h], axis=1) @ _p(params, scope, "kernel") + _p(params, scope, "bias")
    if activation == "tanh":
        return np.tanh(z)
    if activation == "relu":
        return np.maximum(z, 0)
    raise ValueError(f"unknown activation {activation!r} (expected 'tanh' or 'relu')")


def lstm_step(x, c, h, params, scope, forget_bias=1.0, peepholes=False):
    """One BasicLSTMCell / LSTMCell step; returns ``(c', h')``."""
    z = np.concatenate([x, h], axis=1) @ _p(params, scope, "kernel") + _p(params, scope, "bias")
    H = h.shape[1]
    z_i, z_j, z_f, z_o = (z[:, k * H:(k + 1) * H] for k in range(4))
    if peepholes:
        z_i = z_i + _p(params, scope, "w_i_diag") * c
        z_f = z_f + _p(params, scope, "w_f_diag") * c
    i = sigmoid(z_i)
    j = np.tanh(z_j)
    f = sigmoid(z_f + forget_bias)
    c_new = f * c + i * j
    if peepholes:
        z_o = z_o + _p(params, scope, "w_o_diag") * c_new
    o = sigmoid(z_o)
    h_new = o * np.tanh(c_new)
    return c_new, h_new


def gru_step(x, h, params, scope, reset_after=False):
    """One GRUCell step (TF1 reset-before, or cuDNN/PyTorch reset-after form)."""
    H = h.shape[1]
    I = x.shape[1]
    gates = sigmoid(np.concatenate([x, h], axis=1) @ _p(params, scope, "gates/kernel")
                    + _p(params, scope, "gates/bias"))
    r, u = gates[:, :H], gates[:, H:]
    Wc = _p(params, scope, "candidate/kernel")
    bc = _p(params, scope, "candidate/bias")
    if reset_after:
        rb = _p(params, scope, "candidate/recurrent_bias")
        cand = np.tanh(x @ Wc[:I] + bc + r * (h @ Wc[I:] + rb))
    else:
        cand = np.tanh(np.concatenate([x, r * h], axis=1) @ Wc + bc)
    return u * h + (1 - u) * cand


# --------------------------------------------------------------------------- time loop


def run_ref(step: Callable, X: np.ndarray, state0: tuple, seq_len=None):
    """Run ``step(x_t, *state) -> new_state_tuple`` over time with dynamic_rnn masking.

    The output at each step is the last element of the state tuple (``h``).
    Returns ``(outputs [B, T, H], final_state_tuple)``.
    """
    B, T, _ = X.shape
    state = tuple(state0)
    H = state[-1].shape[1]
    outputs = np.zeros((B, T, H), dtype=state[-1].dtype)
    if seq_len is None:
        lengths = np.full(B, T)
    else:
        lengths = np.asarray(seq_len).reshape(-1)
        if lengths.shape != (B,) or np.any(lengths < 0) or np.any(lengths > T):
            raise ValueError(f"seq_len must be {B} integers in [0, {T}], got {seq_len!r}")
    for t in range(T):
        new_state = step(X[:, t, :], *state)
        valid = (t < lengths)[:, None]
        state = tuple(np.where(valid, n, s) for n, s in zip(new_state, state))
        outputs[:, t, :] = np.where(valid, new_state[-1], 0)
    return outputs, state


def _prepare(X, dtype, H, inits):
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 3:
        raise ValueError(f"X must be [B, T, I], got shape {X.shape}")
    B = X.shape[0]
    states = []
    for s in inits:
        if s is None:
            states.append(np.zeros((B, H), dtype=dtype))
        else:
            states.append(np.broadcast_to(np.asarray(s, dtype=dtype), (B, H)).copy())
    return X, states


def _cast_params(params, scope, names, dtype):
    return {f"{scope}/{n}": np.asarray(_p(params, scope, n), dtype=dtype) for n in names}


def rnn_ref(X, params, scope="rnn/basic_rnn_cell", activation="tanh", h0=None, seq_len=None,
            dtype=None):
    """BasicRNNCell over a sequence.  Returns ``(outputs [B, T, H], h [B, H])``."""
    names = ["kernel", "bias"]
    dt = _dtype(dtype, X, h0, *(_p(params, scope, n) for n in names))
    p = _cast_params(params, scope, names, dt)
    H = p[f"{scope}/bias"].shape[0]
    X, (h,) = _prepare(X, dt, H, [h0])
    out, (h,) = run_ref(lambda x, h: (rnn_step(x, h, p, scope, activation),), X, (h,), seq_len)
    return out, h


def lstm_ref(X, params, scope="rnn/basic_lstm_cell", forget_bias=1.0, peepholes=False,
             h0=None, c0=None, seq_len=None, dtype=None):
    """BasicLSTMCell / LSTMCell(use_peepholes) over a sequence.

    Returns ``(outputs [B, T, H], (c [B, H], h [B, H]))``.
    """
    names = ["kernel", "bias"] + (["w_i_diag", "w_f_diag", "w_o_diag"] if peepholes else [])
    dt = _dtype(dtype, X, h0, c0, *(_p(params, scope, n) for n in names))
    p = _cast_params(params, scope, names, dt)
    H = p[f"{scope}/bias"].shape[0] // 4
    X, (c, h) = _prepare(X, dt, H, [c0, h0])
    fb = dt.type(forget_bias)

    def step(x, c, h):
        return lstm_step(x, c, h, p, scope, fb, peepholes)

    out, (c, h) = run_ref(step, X, (c, h), seq_len)
    return out, (c, h)


def gru_ref(X, params, scope="rnn/gru_cell", reset_after=False, h0=None, seq_len=None,
            dtype=None):
    """GRUCell over a sequence.  Returns ``(outputs [B, T, H], h [B, H])``."""
    names = ["gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"]
    if reset_after:
        names.append("candidate/recurrent_bias")
    dt = _dtype(dtype, X, h0, *(_p(params, scope, n) for n in names))
    p = _cast_params(params, scope, names, dt)
    H = p[f"{scope}/candidate/bias"].shape[0]
    X, (h,) = _prepare(X, dt, H, [h0])
    out, (h,) = run_ref(lambda x, h: (gru_step(x, h, p, scope, reset_after),), X, (h,), seq_len)
    return out, h


def multi_ref(X, layers: Sequence[Callable], seq_len=None):
    """MultiRNNCell: feed each layer's outputs to the next.

    ``layers`` are callables ``f(X, seq_len=...) -> (outputs, state)``, typically
    ``functools.partial(lstm_ref, params=p, scope=layer_scope("rnn", 0,
    "basic_lstm_cell"))`` (bind initial states there too).  Applying the layers one
    after another is equivalent to stepping the stacked cell, including under
    ``seq_len`` masking (a layer never sees the zeroed outputs past an instance's
    length).  Returns ``(outputs of the last layer, tuple of per-layer final states)``.
    """
    states = []
    out = X
    for f in layers:
        out, state = f(out, seq_len=seq_len)
        states.append(state)
    return out, tuple(states)
