"""Independent NumPy oracles for the TF1 options of the cells (beyond tests/reference_cells.py).

Written from TF1's rnn_cell_impl formulas, as plain loops, without rnncomp:

* ``lstm_tf1_step``: LSTMCell with peepholes, ``cell_clip`` (c clipped to [-clip, clip] before
  the output gate sees it), ``num_proj`` (``m = (o * act(c)) @ projection/kernel``, clipped to
  [-proj_clip, proj_clip]); the recurrent input is m, so the kernel is ``[I + P, 4H]``.
* ``lstm_tf1_ref``: that step over time with dynamic_rnn's ``seq_len`` masking.
* ``variational_masks`` / ``dropout_lstm_ref``: a DropoutWrapper(variational_recurrent=True)
  around an LSTM: one keep-mask per sequence for the input, the output and the state h (c is
  never dropped), the same at every step; the masks are passed in (the only rnncomp-defined
  part is the counter-based random stream, see ``variational_masks``).
"""

from __future__ import annotations

import numpy as np

from reference_cells import _p, run_ref, sigmoid

__all__ = ["lstm_tf1_step", "lstm_tf1_ref", "variational_masks", "dropout_lstm_ref"]


def lstm_tf1_step(x, c, h, params, scope, forget_bias=1.0, use_peepholes=False, cell_clip=None,
                  num_proj=None, proj_clip=None, activation=np.tanh):
    """One TF1 LSTMCell step; returns (c', m') (m' is h', projected when num_proj is set)."""
    z = np.concatenate([x, h], axis=1) @ _p(params, scope, "kernel") + _p(params, scope, "bias")
    H = c.shape[1]
    z_i, z_j, z_f, z_o = (z[:, k * H:(k + 1) * H] for k in range(4))
    if use_peepholes:
        c_new = (sigmoid(z_f + forget_bias + _p(params, scope, "w_f_diag") * c) * c
                 + sigmoid(z_i + _p(params, scope, "w_i_diag") * c) * activation(z_j))
    else:
        c_new = sigmoid(z_f + forget_bias) * c + sigmoid(z_i) * activation(z_j)
    if cell_clip is not None:
        c_new = np.clip(c_new, -cell_clip, cell_clip)
    if use_peepholes:
        m = sigmoid(z_o + _p(params, scope, "w_o_diag") * c_new) * activation(c_new)
    else:
        m = sigmoid(z_o) * activation(c_new)
    if num_proj is not None:
        m = m @ _p(params, scope, "projection/kernel")
        if proj_clip is not None:
            m = np.clip(m, -proj_clip, proj_clip)
    return c_new, m


def lstm_tf1_ref(X, params, scope="rnn/lstm_cell", num_units=None, seq_len=None, c0=None,
                 h0=None, **options):
    """(outputs [B, T, P], (c [B, H], m [B, P])) of lstm_tf1_step over X [B, T, I]."""
    B = X.shape[0]
    H = num_units or _p(params, scope, "bias").shape[0] // 4
    P = options.get("num_proj") or H
    c = np.zeros((B, H), X.dtype) if c0 is None else c0
    h = np.zeros((B, P), X.dtype) if h0 is None else h0
    return run_ref(lambda x, c, h: lstm_tf1_step(x, c, h, params, scope, **options), X, (c, h),
                   seq_len)


def variational_masks(hash_uniform, seed: int, sites: dict, sizes: dict, B: int, keep: dict,
                      dtype=np.float32) -> dict:
    """Keep-masks [B, size] per kind: uniform numbers from rnncomp's documented counter-based
    stream `hash_uniform(seed, site, step=0, n, dtype)` (the one piece of rnncomp this oracle
    uses: it defines the random numbers), kept where u < keep_prob."""
    out = {}
    for kind, site in sites.items():
        u = hash_uniform(seed, site, 0, B * sizes[kind], dtype).reshape(B, sizes[kind])
        out[kind] = (u < dtype(keep[kind])).astype(dtype)
    return out


def dropout_lstm_ref(X, params, scope, masks: dict, keep: dict, forget_bias=1.0):
    """A BasicLSTMCell in DropoutWrapper(variational_recurrent=True), in training: the input is
    x * mask_in / keep_in, the output h * mask_out / keep_out, the carried h is
    h * mask_state / keep_state (c is not dropped); the same masks at every step."""
    B, T, _ = X.shape
    H = _p(params, scope, "bias").shape[0] // 4
    c = np.zeros((B, H), X.dtype)
    h = np.zeros((B, H), X.dtype)
    outs = np.zeros((B, T, H), X.dtype)
    for t in range(T):
        x = X[:, t] * masks["input"] / np.asarray(keep["input"], X.dtype)
        c, h_new = lstm_tf1_step(x, c, h, params, scope, forget_bias=forget_bias)
        outs[:, t] = h_new * masks["output"] / np.asarray(keep["output"], X.dtype)
        h = h_new * masks["state"] / np.asarray(keep["state"], X.dtype)
    return outs, (c, h)
