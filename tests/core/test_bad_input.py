"""Bad input: every case raises a specific error type whose message names the argument, what was
expected and what was received (trace time and run time)."""

from __future__ import annotations

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime.interp import InputError
from rnncomp.frontend.trace import TraceError

B, T, I, H = 4, 2, 3, 5
X_OK = np.zeros((B, T, I), np.float32)
L_OK = np.array([2, 1, 2, 2], np.int32)


def _rnn_model(**inputs):
    """dynamic_rnn over X with sequence_length L and initial state h0 (all graph inputs)."""
    def fn(X, L, h0):
        return rc.dynamic_rnn(rc.BasicRNNCell(H), X, sequence_length=L, initial_state=h0)

    spec = {"X": rc.Input((None, None, I)), "L": rc.Input((None,), "i32"),
            "h0": rc.Input((None, H))}
    spec.update(inputs)
    return rc.Model(fn, spec)


M = _rnn_model()
P = M.init(0)
FEEDS = {"X": X_OK, "L": L_OK, "h0": np.zeros((B, H), np.float32)}


def run_with(**changes):
    feeds = {**FEEDS, **changes}
    feeds = {k: v for k, v in feeds.items() if v is not None}
    return M(P, **feeds)


def trace_dynamic(cell_fn, x_shape=(None, None, I), **kw):
    return rc.Model(lambda X: rc.dynamic_rnn(cell_fn(), X, **kw), {"X": rc.Input(x_shape)})


def _wrong_structure_cell():
    # state_size is a pair but the function returns a single array as the state
    return rc.FunctionCell(lambda x, s: (s[0], s[0]), state_size=(H, H), output_size=H,
                           name="pair_cell")


def _wrong_shape_cell():
    def bad(x, h):
        w = rc.param("w", (I, H + 1))
        return h, rc.matmul(x, w)

    return rc.FunctionCell(bad, state_size=H, output_size=H)


def _bad_params(key, value):
    p = dict(P)
    if value is None:
        del p[key]
    else:
        p[key] = value
    return M(p, **FEEDS)


def _f64_state_model():
    def fn(X):
        h0 = rc.zeros(("B", H), "f64")
        return rc.dynamic_rnn(rc.BasicRNNCell(H), X, initial_state=h0)

    return rc.Model(fn, {"X": rc.Input((None, None, I))})


def _float_len_model():
    return rc.Model(lambda X, L: rc.dynamic_rnn(rc.BasicRNNCell(H), X, sequence_length=L),
                    {"X": rc.Input((None, None, I)), "L": rc.Input((None,))})


CASES = [
    # (id, action, error type, substrings the message must contain)
    ("x_rank_trace", lambda: trace_dynamic(lambda: rc.BasicRNNCell(H), (None, I)),
     ValueError, ["dynamic_rnn: inputs must have rank 3", "[B, T, I]", "received [B,3]"]),
    ("x_rank_run", lambda: run_with(X=np.zeros((B, I), np.float32)),
     InputError, ["input 'X'", "expected rank 3 [B,T,3]", "received shape (4, 3)"]),
    ("x_feature_size", lambda: run_with(X=np.zeros((B, T, 7), np.float32)),
     InputError, ["input 'X'", "expected shape [B,T,3]", "received (4, 2, 7)",
                  "dimension 2 should be 3"]),
    ("batch_mismatch_initial_state", lambda: run_with(h0=np.zeros((3, H), np.float32)),
     InputError, ["input 'h0'", "dimension 0 is B = 4 elsewhere", "received 3"]),
    ("initial_state_size", lambda: run_with(h0=np.zeros((B, H + 1), np.float32)),
     InputError, ["input 'h0'", "expected shape [B,5]", "received (4, 6)"]),
    ("labels_given_floats", lambda: run_with(L=L_OK.astype(np.float64)),
     InputError, ["input 'L'", "expected i32 values", "received float64",
                  "lengths and labels must be integers"]),
    ("f64_state_with_f32_x", _f64_state_model,
     ValueError, ["dynamic_rnn: initial_state leaf 0", "dtype f32 like the inputs",
                  "received f64"]),
    ("seq_len_wrong_length", lambda: run_with(L=np.array([2, 1, 2], np.int32)),
     InputError, ["input 'L'", "B = 4", "received 3"]),
    ("seq_len_above_T", lambda: run_with(L=np.array([2, 3, 1, 2], np.int32)),
     InputError, ["'L' (sequence_length)", "values must be in [0, 2]", "received 3 at index 1"]),
    ("seq_len_negative", lambda: run_with(L=np.array([2, 1, -1, 2], np.int32)),
     InputError, ["'L' (sequence_length)", "[0, 2]", "received -1 at index 2"]),
    ("seq_len_float_input_trace", _float_len_model,
     ValueError, ["dynamic_rnn: sequence_length must be an integer array", "received f32"]),
    ("unknown_activation", lambda: rc.BasicRNNCell(H, activation="swish"),
     ValueError, ["activation", "expected one of ['relu', 'sigmoid', 'tanh']",
                  "received 'swish'"]),
    ("unknown_cell_option", lambda: rc.LSTMCell(H, bogus=1),
     ValueError, ["LSTMCell: unsupported options ['bogus']", "supported: num_units"]),
    ("gru_form_as_second_positional", lambda: rc.GRUCell(H, False),
     ValueError, ["GRUCell: the second argument is activation (TF1's order)", "received False",
                  "pass reset_after=False by keyword"]),
    ("bad_num_units", lambda: rc.BasicLSTMCell(0),
     ValueError, ["num_units: expected a positive int", "received 0"]),
    ("bad_keep_prob", lambda: rc.DropoutWrapper(rc.BasicRNNCell(H), input_keep_prob=1.5),
     ValueError, ["input_keep_prob", "expected a probability in (0, 1]", "received 1.5"]),
    ("custom_cell_state_structure", lambda: trace_dynamic(_wrong_structure_cell),
     TraceError, ["dynamic_rnn: the cell returned a state of structure f32[B,5]",
                  "its state is (f32[B,5], f32[B,5])"]),
    ("custom_cell_state_shape", lambda: trace_dynamic(_wrong_shape_cell),
     TraceError, ["dynamic_rnn: state leaf 0", "enters the cell as f32[B,5]",
                  "the cell returns f32[B,6]"]),
    ("missing_param", lambda: _bad_params("rnn/basic_rnn_cell/bias", None),
     InputError, ["params: missing 1 parameter(s)", "rnn/basic_rnn_cell/bias"]),
    ("param_wrong_shape",
     lambda: _bad_params("rnn/basic_rnn_cell/kernel", np.zeros((8, 4), np.float32)),
     InputError, ["params['rnn/basic_rnn_cell/kernel']", "expected shape (8, 5)",
                  "received (8, 4)"]),
    ("param_not_float",
     lambda: _bad_params("rnn/basic_rnn_cell/bias", np.zeros(5, np.int64)),
     InputError, ["params['rnn/basic_rnn_cell/bias']", "expected f32", "received int64"]),
    ("missing_input", lambda: run_with(L=None),
     InputError, ["missing input 'L'", "expected i32[B]"]),
    ("unknown_input", lambda: run_with(Z=np.zeros(3)),
     InputError, ["unknown input(s) 'Z'", "this model takes X, L, h0"]),
    ("empty_batch", lambda: M(P, X=np.zeros((0, T, I), np.float32),
                              L=np.zeros(0, np.int32), h0=np.zeros((0, H), np.float32)),
     InputError, ["input 'X'", "dimension B is 0", "B >= 1"]),
    ("params_not_dict", lambda: M([1, 2], **FEEDS),
     TypeError, ["params: expected a dict of arrays", "received list"]),
    ("inputs_not_arrays", lambda: rc.dynamic_rnn(rc.BasicRNNCell(H), [[1.0]]),
     TypeError, ["dynamic_rnn: inputs must be an rnncomp array", "received list"]),
]


@pytest.mark.parametrize("action,exc,parts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(action, exc, parts):
    with pytest.raises(exc) as e:
        action()
    msg = str(e.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_good_feeds_run():
    out, st = run_with()
    assert out.shape == (B, T, H) and st.shape == (B, H)
    assert np.all(out[1, 1] == 0)
