"""Input validation at every public entry point, for the interpreter and the Numba CPU backend.

Each bad-input case must raise a specific error whose message names the argument, what was
expected and what was received, *before any kernel runs* (checked with a spy on the interpreter
and on the compiled kernels). Each good-input case (batch of 1, strided / Fortran arrays, int
or float64 data, NaN/Inf) must work and give the same result as the plain call. One compiled
model (forward + gradient graph) is shared by the whole module. docs/robustness.md lists and
counts the cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import B, H, I, T, pair_model_fn

import rnncomp as rc
import rnncomp.runtime.grad
import rnncomp.runtime.model
from rnncomp import data, losses, optim
from rnncomp.runtime.interp import InputError, NonFiniteError
from rnncomp.train import NonFiniteTrainingError, Trainer
from rnncomp.frontend.trace import TraceError

BACKENDS = ["interp", "cpu"]
DROP = object()  # "leave this input out"


@pytest.fixture(scope="module")
def warm(pair):
    """The pair model with its forward and gradient graphs compiled once for the CPU."""
    m, p, f = pair
    m(p, backend="cpu", **f)
    m.value_and_grad(p, output="loss", backend="cpu", **f)
    return pair


@pytest.fixture
def kernel_calls(warm, monkeypatch):
    """A list that records every interpreter run and every compiled-kernel call."""
    m = warm[0]
    calls: list[str] = []

    def spy(fn, what):
        def wrapped(*a, **k):
            calls.append(what)
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(rnncomp.runtime.model, "evaluate", spy(rnncomp.runtime.model.evaluate, "interp"))
    monkeypatch.setattr(rnncomp.runtime.grad, "evaluate", spy(rnncomp.runtime.grad.evaluate, "interp grad"))
    for cg in m._compiled.values():
        monkeypatch.setattr(cg, "fn", spy(cg.fn, "cpu kernel"))
    for _, cg in m._compiled_grad.values():
        monkeypatch.setattr(cg, "fn", spy(cg.fn, "cpu grad kernel"))
    return calls


def _feeds(f, changes):
    out = dict(f)
    for k, v in changes.items():
        out[k] = v(f) if callable(v) else v
    return {k: v for k, v in out.items() if v is not DROP}


def call(**changes):
    """Model.__call__ with some feeds changed (a value, a function of the feeds, or DROP)."""
    def act(m, p, f, backend):
        return m(p, backend=backend, **_feeds(f, changes))
    return act


def with_params(change):
    def act(m, p, f, backend):
        q = dict(p)
        change(q)
        return m(q, backend=backend, **f)
    return act


def grad(**changes):
    kw = {k: changes.pop(k) for k in ("wrt", "output") if k in changes}
    kw.setdefault("output", "loss")

    def act(m, p, f, backend):
        return m.value_and_grad(p, backend=backend, **kw, **_feeds(f, changes))
    return act


def step(batch=None, params=None):
    def act(m, p, f, backend):
        tr = Trainer(m, "loss", optim.SGD(0.1), backend=backend)
        q = params(dict(p)) if params else p
        b = batch(f) if callable(batch) else (f if batch is None else batch)
        return tr.step(q, tr.optimizer.init(p), b)
    return act


def compiled(change):
    """The compiled graph called directly with positional arrays (CompiledGraph.__call__)."""
    def act(m, p, f, backend):
        args = change(list(m.arguments(p, f)))
        return m.compile("cpu")(*args)
    return act


def _del(name):
    return lambda q: q.pop(name)


def _set(name, value):
    return lambda q: q.__setitem__(name, value(q[name]) if callable(value) else value)


def _rename(old, new):
    return lambda q: q.__setitem__(new, q.pop(old))


X0 = np.zeros((B, T, I), np.float32)

# (id, action, exception type, substrings of the message). Runs on every backend in BACKENDS.
ERROR_CASES = [
    # -- Model.__call__ / Model.run: the data input X [B, T, I] f32
    ("x_wrong_rank", call(X=lambda f: f["X"][:, :, 0]), InputError,
     ["input 'X'", "expected rank 3 [B,T,2]", "received shape (3, 5)"]),
    ("x_wrong_rank_4d", call(X=lambda f: f["X"][None]), InputError,
     ["input 'X'", "expected rank 3", "received shape (1, 3, 5, 2)"]),
    ("x_wrong_feature_size", call(X=np.zeros((B, T, I + 1), np.float32)), InputError,
     ["input 'X'", "expected shape [B,T,2]", "received (3, 5, 3)", "dimension 2 should be 2"]),
    ("x_strings", call(X=np.full((B, T, I), "a")), InputError,
     ["input 'X'", "expected f32 values", "received <U1"]),
    ("x_objects", call(X=np.full((B, T, I), None)), InputError,
     ["input 'X'", "expected f32 values", "received object"]),
    ("empty_batch", call(X=np.zeros((0, T, I), np.float32), L=np.zeros(0, np.int32),
                         Y=np.zeros(0, np.int32)), InputError,
     ["input 'X'", "dimension B is 0", "at least one batch instance (B >= 1)"]),
    ("zero_time_steps", call(X=np.zeros((B, 0, I), np.float32), L=np.zeros(B, np.int32)),
     InputError, ["input 'X'", "dimension T is 0", "at least one time step (T >= 1)"]),
    ("batch_mismatch", call(Y=np.array([0, 1], np.int32)), InputError,
     ["input 'Y'", "dimension 0 is B = 3 elsewhere", "received 2"]),
    # -- sequence_length L [B] i32 (dynamic_rnn registers the range check)
    ("seq_len_negative", call(L=np.array([5, -1, 1], np.int32)), InputError,
     ["'L' (sequence_length)", "values must be in [0, 5]", "received -1 at index 1"]),
    ("seq_len_above_T", call(L=np.array([6, 3, 1], np.int32)), InputError,
     ["'L' (sequence_length)", "values must be in [0, 5]", "received 6 at index 0"]),
    ("seq_len_wrong_length", call(L=np.array([5, 3], np.int32)), InputError,
     ["input 'L'", "B = 3 elsewhere", "received 2"]),
    ("seq_len_float", call(L=np.array([5.0, 3.0, 1.0])), InputError,
     ["input 'L'", "expected i32 values", "received float64", "must be integers"]),
    ("seq_len_bool", call(L=np.array([True, True, False])), InputError,
     ["input 'L'", "expected i32 values", "received bool"]),
    ("seq_len_overflows_i32", call(L=np.array([2**32 + 3, 3, 1], np.int64)), InputError,
     ["input 'L'", "values must fit i32", "received 4294967299"]),
    ("seq_len_scalar", call(L=np.int32(3)), InputError,
     ["input 'L'", "expected rank 1 [B]", "received shape ()"]),
    # -- labels Y [B] i32 (losses.sparse_softmax_cross_entropy registers the range check)
    ("labels_negative", call(Y=np.array([0, -1, 1], np.int32)), InputError,
     ["'Y' (labels)", "values must be in [0, 3)", "received -1 at index 1"]),
    ("labels_too_large", call(Y=np.array([0, 1, 3], np.int32)), InputError,
     ["'Y' (labels)", "values must be in [0, 3)", "received 3 at index 2"]),
    ("labels_float", call(Y=np.array([0.0, 1.0, 2.0], np.float32)), InputError,
     ["input 'Y'", "expected i32 values", "received float32"]),
    # -- inputs by name
    ("unknown_input", call(Z=np.zeros(3)), InputError,
     ["unknown input(s) 'Z'", "this model takes X, L, Y"]),
    ("misspelled_input", call(x=lambda f: f["X"], X=DROP), InputError,
     ["unknown input(s) 'x'", "this model takes X, L, Y"]),
    ("missing_input", call(Y=DROP), InputError, ["missing input 'Y'", "expected i32[B]"]),
    # -- parameters
    ("params_not_a_dict", lambda m, p, f, b: m(list(p.values()), backend=b, **f), TypeError,
     ["params: expected a dict of arrays", "received list"]),
    ("param_missing", with_params(_del("v")), InputError,
     ["params: missing 1 parameter(s): v"]),
    ("param_misspelled", with_params(_rename("v", "V")), InputError,
     ["params: missing 1 parameter(s): v", "(unexpected: V)"]),
    ("param_wrong_shape", with_params(_set("rnn/pair/w", lambda a: a.T)), InputError,
     ["params['rnn/pair/w']", "expected shape (2, 8)", "received (8, 2)"]),
    ("param_wrong_dtype_int", with_params(_set("rnn/pair/b", lambda a: a.astype(np.int32))),
     InputError, ["params['rnn/pair/b']", "expected f32", "received int32"]),
    ("param_wrong_dtype_complex",
     with_params(_set("v", lambda a: a.astype(np.complex64))), InputError,
     ["params['v']", "expected f32", "received complex64"]),
    ("unknown_backend", lambda m, p, f, b: m(p, backend="gpu", **f), ValueError,
     ["backend: expected 'auto', 'interp', 'cpu' or 'cuda'", "received 'gpu'"]),
    # -- Model.value_and_grad (same checks, gradient graph)
    ("grad_x_wrong_rank", grad(X=lambda f: f["X"][0]), InputError,
     ["input 'X'", "expected rank 3", "received shape (5, 2)"]),
    ("grad_labels_out_of_range", grad(Y=np.array([0, 7, 1], np.int32)), InputError,
     ["'Y' (labels)", "received 7 at index 1"]),
    ("grad_seq_len_above_T", grad(L=np.array([9, 1, 1], np.int32)), InputError,
     ["'L' (sequence_length)", "received 9 at index 0"]),
    ("grad_param_wrong_shape",
     lambda m, p, f, b: m.value_and_grad({**p, "v": p["v"][:2]}, output="loss", backend=b, **f),
     InputError, ["params['v']", "expected shape (4, 3)", "received (2, 3)"]),
    ("grad_unknown_wrt", grad(wrt=["nope"]), KeyError,
     ["wrt: unknown name(s) ['nope']", "parameters and inputs are"]),
    ("grad_unknown_output", grad(output="logits"), KeyError,
     ["output 'logits': no key 'logits'", "the outputs are ['out', 'loss']"]),
    ("grad_output_not_scalar", grad(output="out"), ValueError,
     ["must be a float scalar", "received f32[B,T,4]"]),
    # -- Trainer.step
    ("step_batch_not_a_dict", step(batch=[X0]), TypeError,
     ["batch_inputs: expected a dict of model inputs", "received list"]),
    ("step_missing_input", step(batch=lambda f: {"X": f["X"], "L": f["L"]}), InputError,
     ["missing input 'Y'"]),
    ("step_labels_out_of_range", step(batch=lambda f: {**f, "Y": np.array([3, 0, 0])}),
     InputError, ["'Y' (labels)", "received 3 at index 0"]),
    ("step_param_wrong_shape", step(params=lambda q: {**q, "v": q["v"][:, :2]}), InputError,
     ["params['v']", "expected shape (4, 3)", "received (4, 2)"]),
]

# CompiledGraph.__call__ (positional arrays for graph.inputs: X, L, Y, then the parameters)
COMPILED_CASES = [
    ("compiled_too_few_args", compiled(lambda a: a[:-1]), InputError,
     ["compiled graph takes 7 inputs, received 6"]),
    ("compiled_wrong_shape", compiled(lambda a: [a[0][:, :, :1]] + a[1:]), InputError,
     ["input 'X'", "expected shape [B,T,2]", "received (3, 5, 1)"]),
    ("compiled_float_labels", compiled(lambda a: a[:2] + [a[2].astype(np.float64)] + a[3:]),
     InputError, ["input 'Y'", "expected i32 values", "received float64"]),
    ("compiled_param_shape", compiled(lambda a: a[:3] + [a[3].T] + a[4:]), InputError,
     ["input 'rnn/pair/w'", "expected shape [2,8]", "received (8, 2)"]),
    ("compiled_empty_batch", compiled(lambda a: [x[:0] for x in a[:3]] + a[3:]), InputError,
     ["compiled graph: dimension B is 0", "'X'", ">= 1"]),
]


def _ids(cases):
    return [c[0] for c in cases]


def _check_message(e, parts):
    msg = str(e.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("action,exc,parts", [c[1:] for c in ERROR_CASES], ids=_ids(ERROR_CASES))
def test_bad_input_is_refused_before_any_kernel(warm, kernel_calls, backend, action, exc, parts):
    with pytest.raises(exc) as e:
        action(*warm, backend)
    _check_message(e, parts)
    assert kernel_calls == [], f"a kernel ran before the error: {kernel_calls}"


@pytest.mark.parametrize("action,exc,parts", [c[1:] for c in COMPILED_CASES],
                         ids=_ids(COMPILED_CASES))
def test_bad_input_to_compiled_graph(warm, kernel_calls, action, exc, parts):
    with pytest.raises(exc) as e:
        action(*warm, "cpu")
    _check_message(e, parts)
    assert kernel_calls == []


# -- inputs that must work ---------------------------------------------------------------------
def _strided(x):
    big = np.zeros((x.shape[0], 2 * x.shape[1], x.shape[2] + 1), x.dtype)
    big[:, ::2, :-1] = x
    v = big[:, ::2, :-1]
    assert not v.flags.c_contiguous
    return v


def _fortran(x):
    v = np.asfortranarray(x)
    assert not v.flags.c_contiguous
    return v


def _reversed_view(x):
    return np.ascontiguousarray(x[::-1])[::-1]  # same values, negative strides


# (id, feeds change, expected: "same" = identical to the plain call)
SAME_CASES = [
    ("non_contiguous_x", {"X": lambda f: _strided(f["X"])}),
    ("fortran_order_x", {"X": lambda f: _fortran(f["X"])}),
    ("negative_strides_x", {"X": lambda f: _reversed_view(f["X"])}),
    ("float64_x_converted", {"X": lambda f: f["X"].astype(np.float64)}),
    ("nested_lists", {"X": lambda f: f["X"].tolist(), "L": lambda f: f["L"].tolist(),
                      "Y": lambda f: f["Y"].tolist()}),
    ("int64_lengths_uint8_labels", {"L": lambda f: f["L"].astype(np.int64),
                                    "Y": lambda f: f["Y"].astype(np.uint8)}),
    ("fortran_lengths", {"L": lambda f: np.asfortranarray(f["L"])}),
]


@pytest.fixture(scope="module")
def reference(warm):
    m, p, f = warm
    return {b: m(p, backend=b, **f) for b in BACKENDS}


def _assert_same(a, b, exact=True):
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32, k
        if exact:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("changes", [c[1] for c in SAME_CASES], ids=_ids(SAME_CASES))
def test_accepted_input_gives_the_same_result(warm, reference, backend, changes):
    m, p, f = warm
    _assert_same(m(p, backend=backend, **_feeds(f, changes)), reference[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_x_is_converted(warm, backend):
    m, p, f = warm
    xi = np.round(f["X"] * 3).astype(np.int16)
    got = m(p, backend=backend, **{**f, "X": xi})
    _assert_same(got, m(p, backend=backend, **{**f, "X": xi.astype(np.float32)}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_params_are_converted(warm, reference, backend):
    m, p, f = warm
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    _assert_same(m(p64, backend=backend, **f), reference[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_one(warm, reference, backend):
    m, p, f = warm
    for k in range(B):
        got = m(p, backend=backend, **{n: v[k:k + 1] for n, v in f.items()})
        assert got["out"].shape == (1, T, H)
        np.testing.assert_allclose(got["out"], reference[backend]["out"][k:k + 1],
                                   rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_instance_and_one_step(warm, backend):
    m, p, f = warm
    got = m(p, backend=backend, **{**f, "L": np.array([5, 0, 1], np.int32)})
    assert np.all(got["out"][1] == 0) and np.isfinite(got["loss"])
    one = m(p, backend=backend, X=f["X"][:, :1], L=np.ones(B, np.int32), Y=f["Y"])
    assert one["out"].shape == (B, 1, H)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_input_propagates(warm, reference, backend, bad):
    """A NaN/Inf at X[1, 2] reaches row 1 from step 2 on (until its length, 3) and the loss;
    the other batch rows are untouched (no mixing between instances)."""
    m, p, f = warm
    x = f["X"].copy()
    x[1, 2, 0] = bad
    got = m(p, backend=backend, **{**f, "X": x})
    ref = reference[backend]
    np.testing.assert_array_equal(got["out"][[0, 2]], ref["out"][[0, 2]])
    np.testing.assert_array_equal(got["out"][1, :2], ref["out"][1, :2])
    assert np.all(got["out"][1, 3:] == 0)  # masked by sequence_length
    if bad is np.nan:
        assert np.isnan(got["out"][1, 2]).all() and np.isnan(got["loss"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "inf"])
def test_non_finite_input_caught_in_check_finite_mode(warm, backend, bad):
    m, p, f = warm
    x = f["X"].copy()
    x[1, 2, 0] = bad
    with pytest.raises(NonFiniteError, match=r"input 'X' contains NaN/Inf \(first at index "
                                             r"\(1, 2, 0\)\)"):
        m(p, backend=backend, check_finite=True, **{**f, "X": x})
    with pytest.raises(NonFiniteError, match="input 'X'"):
        m.value_and_grad(p, output="loss", backend=backend, check_finite=True, **{**f, "X": x})
    q = {**p, "v": p["v"].copy()}
    q["v"][0, 0] = bad
    with pytest.raises(NonFiniteError, match=r"parameter 'v' contains NaN/Inf"):
        m(q, backend=backend, check_finite=True, **f)
    m(p, backend=backend, check_finite=True, **f)  # finite data passes


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_check_finite_on_compiled_backend_names_the_op(warm):
    """check_finite with a compiled backend: the kernel runs unchecked; if its outputs are not
    finite the run is repeated on the interpreter, which names the op and the time step."""
    m, p, f = warm
    # finite but huge parameters: the logits overflow to +Inf, log_softmax gives Inf - Inf = NaN
    q = {**p, "rnn/pair/b": np.full_like(p["rnn/pair/b"], 3e38),
         "v": np.full_like(p["v"], 3e38)}
    out = m(q, backend="cpu", **f)
    assert not np.isfinite(out["loss"])
    with pytest.raises(NonFiniteError, match=r"(NaN|Inf) first produced by op matmul f32\[B,3\]"):
        m(q, backend="cpu", check_finite=True, **f)


# -- trace-time errors: a custom cell with a mismatched state --------------------------------
def _trace_with(cell_fn, state_size=(H, H)):
    def fn(X):
        return rc.dynamic_rnn(rc.FunctionCell(cell_fn, state_size, H, name="bad"), X)
    return lambda: rc.Model(fn, {"X": rc.Input((None, None, I))})


def _new_state(make):
    def cell(x, state):
        h, c = state
        h2 = rc.tanh(rc.matmul(x, rc.param("w", (I, H))) + h)
        return h2, make(h2, c)
    return cell


TRACE_CASES = [
    ("cell_state_list_not_tuple", _trace_with(_new_state(lambda h, c: [h, c])), TraceError,
     ["dynamic_rnn: the cell returned a state of structure [f32[B,4], f32[B,4]]",
      "its state is (f32[B,4], f32[B,4])"]),
    ("cell_state_too_many_leaves", _trace_with(_new_state(lambda h, c: (h, c, c))), TraceError,
     ["the cell returned a state of structure (f32[B,4], f32[B,4], f32[B,4])"]),
    ("cell_state_wrong_size",
     _trace_with(_new_state(lambda h, c: (h, rc.concat([c, c], axis=1)))), TraceError,
     ["state leaf 1 enters the cell as f32[B,4]", "the cell returns f32[B,8]"]),
    ("cell_state_wrong_dtype",
     _trace_with(_new_state(lambda h, c: (h, rc.cast(c, "f64")))), TraceError,
     ["state leaf 1 enters the cell as f32[B,4]", "the cell returns f64[B,4]"]),
    ("cell_state_not_an_array", _trace_with(_new_state(lambda h, c: (h, 0.0))), TraceError,
     ["state leaf 1 enters the cell as f32[B,4]", "the cell returns 0.0"]),
    ("declared_state_size_mismatch",
     _trace_with(_new_state(lambda h, c: (h, h)), state_size=(H, H + 1)), TraceError,
     ["state leaf 1 enters the cell as f32[B,5]", "the cell returns f32[B,4]"]),
    ("input_spec_negative_dim", lambda: rc.Model(pair_model_fn, {"X": rc.Input((None, -1)),
                                                                 "L": (None,), "Y": (None,)}),
     ValueError, ["Input: dimension 1 must be a positive int", "received -1"]),
]


@pytest.mark.parametrize("action,exc,parts", [c[1:] for c in TRACE_CASES], ids=_ids(TRACE_CASES))
def test_bad_model_definition(action, exc, parts):
    with pytest.raises(exc) as e:
        action()
    _check_message(e, parts)


# -- data loaders (the cases tests/core/test_data.py does not cover) --------------------------
DATA_CASES = [
    ("batches_float_size", lambda: data.batches(X0, 2.5), TypeError,
     ["batch_size must be an int", "2.5"]),
    ("batches_bool_size", lambda: data.batches(X0, True), TypeError,
     ["batch_size must be an int", "True"]),
    ("batches_no_arrays", lambda: data.batches([], 2), ValueError, ["at least one array"]),
    ("batches_0d_array", lambda: data.batches([X0, np.float32(1)], 2), ValueError,
     ["leading (sample) axis", "0-d"]),
    ("batches_shuffle_seed_not_generator",
     lambda: data.batches(X0, 2, shuffle=True, rng=0), ValueError,
     ["shuffle=True needs rng=np.random.default_rng(seed)"]),
]


@pytest.mark.parametrize("action,exc,parts", [c[1:] for c in DATA_CASES], ids=_ids(DATA_CASES))
def test_bad_data_loader_arguments(action, exc, parts):
    with pytest.raises(exc) as e:
        action()
    _check_message(e, parts)


def test_trainer_arguments():
    m = rc.Model(pair_model_fn, {"X": (None, None, I), "L": rc.Input((None,), "i32"),
                                 "Y": rc.Input((None,), "i32")})
    with pytest.raises(ValueError, match=r"clip_norm: expected a positive number, received 0"):
        Trainer(m, "loss", clip_norm=0)
    with pytest.raises(KeyError, match="no key 'nope'"):
        Trainer(m, "nope")
    with pytest.raises(TypeError, match="optimizer: expected an rnncomp.train.optim optimizer"):
        Trainer(m, "loss", optimizer="adam")


N_CASES = (len(ERROR_CASES) * len(BACKENDS) + len(COMPILED_CASES)
           + len(SAME_CASES) * len(BACKENDS) + len(TRACE_CASES) + len(DATA_CASES))


# -- debug mode: check_finite names the op and the time step ---------------------------------
def _nan_at_step_3(X):
    """log(-(1 + x^2)) only at step 3: the first NaN appears in op log at time step 3."""
    def body(h, x):
        sign = rc.where(rc.equal(rc.step_index(), 3), -1.0, 1.0)
        y = rc.log(sign * (1.0 + x * x)) + h
        return y, y
    h, _ = rc.scan(body, rc.zeros(("B", 2)), rc.transpose(X, (1, 0, 2)))
    return h


def _inf_grad_at_step_2(X):
    """sqrt(0) at step 2: finite forward, but d sqrt(u)/du = Inf there in the backward scan."""
    def body(h, x):
        gate = rc.where(rc.equal(rc.step_index(), 2), 0.0, 1.0)
        y = rc.sqrt(gate * x * x) + h
        return y, y
    h, _ = rc.scan(body, rc.zeros(("B", 2)), rc.transpose(X, (1, 0, 2)))
    return rc.mean(h)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_check_finite_names_op_and_time_step():
    m = rc.Model(_nan_at_step_3, {"X": rc.Input((None, None, 2))})
    x = np.ones((2, 6, 2), np.float32)
    assert np.isnan(m({}, X=x)).all()  # without the debug mode: NaN silently propagates
    with pytest.raises(NonFiniteError, match=r"^NaN first produced by op log f32\[B,2\] at time "
                                             r"step 3$"):
        m({}, X=x, check_finite=True)
    assert np.isfinite(m({}, X=x[:, :3], check_finite=True)).all()  # steps 0..2 are fine


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_check_finite_in_the_backward_scan():
    m = rc.Model(_inf_grad_at_step_2, {"X": rc.Input((None, None, 2))})
    x = np.ones((2, 6, 2), np.float32)
    loss, g = m.value_and_grad({}, wrt=["X"], X=x)
    assert np.isfinite(loss) and np.isnan(g["X"][:, 2]).all()
    with pytest.raises(NonFiniteError, match=r"Inf first produced by op div .* at time step 2"):
        m.value_and_grad({}, wrt=["X"], X=x, check_finite=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradient_clipping_keeps_training_finite():
    """A linear recurrence with gain > 1 over 25 steps: huge gradients. Plain SGD leaves the
    finite range within a few steps; with clip_norm every step moves params by <= lr*clip."""
    def fn(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(4, activation=lambda z: z), X)
        return losses.mse(out, Y)

    m = rc.Model(fn, {"X": rc.Input((None, None, 2)), "Y": rc.Input((None, None, 4))})
    p0 = m.init(3)
    p0["rnn/basic_rnn_cell/kernel"] = np.abs(p0["rnn/basic_rnn_cell/kernel"]) * 3.0
    rng = np.random.default_rng(0)
    batch = {"X": rng.random((2, 25, 2), np.float32), "Y": np.zeros((2, 25, 4), np.float32)}

    def run(clip, steps=5):
        tr = Trainer(m, optimizer=optim.SGD(1.0), clip_norm=clip)
        p, o = p0, tr.optimizer.init(p0)
        losses_, finite = [], True
        for _ in range(steps):
            try:
                q, o, loss, norm = tr.step(p, o, batch)
            except NonFiniteTrainingError:  # the trainer stops at a non-finite loss/gradient
                return False, losses_
            losses_.append(loss)
            finite &= all(np.isfinite(v).all() for v in q.values()) and np.isfinite(loss)
            if clip is not None and np.isfinite(norm):
                moved = np.sqrt(sum(np.sum((q[n].astype(np.float64) - p[n]) ** 2) for n in p))
                assert moved <= 1.0 * clip * (1 + 1e-5)
            p = q
        return finite, losses_

    finite, _ = run(None)
    assert not finite  # the exploding setup really explodes
    finite, hist = run(1.0)
    assert finite and hist[-1] < hist[0]
