"""Every built-in cell and wrapper compiled for the CPU backend, checked against three references:
the interpreter, the independent NumPy oracle (tests/reference_cells.py) and PyTorch where
torch.nn has the cell; gradients also against finite differences taken on the compiled backend.

A compile is the expensive part, so every compile holds several cells side by side: the "loss
model" of tests/helpers.py (loss = sum over cells of sum(out * R) + sum_k sum(tanh(s_k) * Q_k)),
and `value_and_grad(backend="cpu")` compiles ONE graph (forward outputs + every parameter
gradient) per configuration, built once per session and reused by every test here (training and
inference mode are inputs of that graph, and the Trainer reuses it too; a parallel run keeps
this module on one worker: .ci/run uses `--dist loadscope`). The cells come in two
groups of five (A, B): compile time grows faster than linearly with the size of a graph, so two
graphs of five cells compile faster than one of ten, and far faster than ten of one.

- every cell in (dynamic, with sequence_length, f64) and (static, without, f32): two compiles
  each (groups A and B);
- LSTM and GRU (reset_after) also in (dynamic, without, f32) and (static, with, f64): one
  compile each;
- the inference path (`m(params, backend="cpu")`, no autodiff) on one model holding every cell,
  (dynamic, with, f32) and (dynamic, without, f64).
sequence_length is [0, T, 2]: an empty, a full and a partial sequence.

Checks per configuration: forward and gradients equal the interpreter (training mode: dropout
masks bit for bit); forward in inference mode equals the oracle; in f64 every cell's parameter
gradient passes a random-direction finite-difference check on the compiled graph (the only
independent gradient reference for the TF1 GRU, the peephole LSTM and the relu RNN) and the
cells torch has equal torch autograd; a Trainer step equals the interpreter's step.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import (CELLS, assert_close, fd_check, loss_inputs, loss_model, oracle,
                     perturbed_params, rel_err, torch_reference)

from rnncomp import optim
from rnncomp.frontend.trace import flatten
from rnncomp.train import Trainer

B, T, I = 3, 3, 2
SEED = 11
LENGTHS = [0, T, 2]
RTOL = {"f32": 2e-5, "f64": 1e-11}
# Cells per compile: five (5 cells cost about 3.5x one cell's compile time, 10 cells about 2.8x
# five, measured in CPU seconds). Static unrolls group the same way: the reroll pass makes
# every cell's copies one scan (tests/core/test_reroll.py), so a static configuration compiles
# like a dynamic one (B-static-full-f32: 532 s of setup while the LSTMs, the tuple
# MultiRNNCell and the dropout wrapper stayed straight-line code, 191 s since).
GROUP_A = ("rnn_tanh", "rnn_relu", "basic_lstm", "lstm_peep", "gru_before")
GROUP_B = ("gru_after", "multi_tuple", "multi_concat", "dropout", "projection")
assert sorted(GROUP_A + GROUP_B) == sorted(CELLS), "a cell of tests/helpers.py is not compiled"
PAIR = ("basic_lstm", "gru_after")
GROUP_NAMES = {GROUP_A: "A", GROUP_B: "B", PAIR: "lstm+gru"}
CONFIGS = [(GROUP_A, True, True, "f64"), (GROUP_B, True, True, "f64"),
           (GROUP_A, False, False, "f32"), (GROUP_B, False, False, "f32"),
           (PAIR, True, False, "f32"), (PAIR, False, True, "f64")]
F64 = [c for c in CONFIGS if c[3] == "f64"]


def _cfg_id(cfg) -> str:
    cells, dyn, ln, dt = cfg
    group = GROUP_NAMES.get(cells) or "+".join(cells)
    return f"{group}-{'dyn' if dyn else 'static'}-{'len' if ln else 'full'}-{dt}"


_BUILT: dict[str, dict] = {}


def _build(cfg) -> dict:
    """The compiled case of one configuration, built once per session."""
    key = _cfg_id(cfg)
    if key not in _BUILT:
        cells, dynamic, with_len, dtype = cfg
        lm = loss_model(list(cells), dynamic=dynamic, with_len=with_len, dtype=dtype, T=T, I=I)
        rng = np.random.default_rng(5)
        p = perturbed_params(lm.model, rng)
        inputs = loss_inputs(lm, rng, B, LENGTHS)
        kw = dict(training=True, seed=SEED)
        # wrt=None: every trainable parameter, as the Trainer uses (so it reuses the compile)
        _BUILT[key] = dict(
            cfg=cfg, id=key, lm=lm, params=p, inputs=inputs, rtol=RTOL[dtype],
            ref=lm.model.value_and_grad(p, backend="interp", **kw, **inputs),
            got=lm.model.value_and_grad(p, backend="cpu", **kw, **inputs),
            got_infer=lm.model.value_and_grad(p, backend="cpu", **inputs))
    return _BUILT[key]


@pytest.fixture(scope="module", params=CONFIGS, ids=_cfg_id)
def case(request):
    return _build(request.param)


@pytest.fixture(scope="module", params=F64, ids=_cfg_id)
def case64(request):
    return _build(request.param)


def _cell_params(case, name):
    return [k for k in case["params"] if k.startswith(name + "/")]


def test_forward_equals_interpreter(case):
    (ref_out, _), (got_out, _) = case["ref"], case["got"]
    assert_close(got_out[0], ref_out[0], case["rtol"], f"{case['id']}: loss")
    assert set(got_out[1]) == set(ref_out[1]) == set(case["lm"].cells)
    for name in case["lm"].cells:
        rf, _ = flatten(ref_out[1][name])
        gf, _ = flatten(got_out[1][name])
        for k, (a, b) in enumerate(zip(gf, rf, strict=True)):
            assert_close(a, b, case["rtol"], f"{case['id']}: {name} forward output {k}")
        # dropout masks (and sequence_length zeroing) agree exactly
        np.testing.assert_array_equal(gf[0] == 0, rf[0] == 0)
        if case["lm"].with_len:  # instance 0 (length 0) has all-zero outputs
            assert not np.any(gf[0][0])


def test_forward_equals_oracle(case):
    """Inference mode against the independent NumPy oracle (not the interpreter)."""
    (out, _) = case["got_infer"]
    rtol = 1e-12 if case["lm"].dtype == "f64" else 1e-5
    for name in case["lm"].cells:
        want_out, want_states = oracle(case["lm"], name, case["params"], case["inputs"])
        got_out, got_state = out[1][name]
        assert_close(got_out, want_out, rtol, f"{case['id']}: {name} outputs vs oracle")
        for k, (g, w) in enumerate(zip(flatten(got_state)[0], want_states, strict=True)):
            assert_close(g, w, rtol, f"{case['id']}: {name} final state {k} vs oracle")


def test_backward_equals_interpreter(case):
    (_, ref_g), (_, got_g) = case["ref"], case["got"]
    assert set(ref_g) == set(got_g) == set(case["params"])
    for name in ref_g:
        assert_close(got_g[name], ref_g[name], case["rtol"], f"{case['id']}: d loss / d {name}")
        assert np.any(ref_g[name] != 0), f"no gradient reaches {name}"


FD_CASES = [(cfg, cell) for cfg in F64 for cell in cfg[0]]


@pytest.mark.parametrize("cfg,cell", FD_CASES, ids=[f"{_cfg_id(c)}-{n}" for c, n in FD_CASES])
def test_gradient_finite_differences(cfg, cell):
    """d loss / d (this cell's parameters) of the compiled graph against central differences of
    the compiled loss along a random direction (float64, inference mode)."""
    case = _build(cfg)
    m, p, inputs = case["lm"].model, case["params"], case["inputs"]
    _, grads = case["got_infer"]

    def value(pp, ii):
        (loss, _), _ = m.value_and_grad(pp, backend="cpu", **ii)
        return loss

    fd_check(value, p, inputs, grads, _cell_params(case, cell),
             np.random.default_rng(sorted(CELLS).index(cell)), eps=1e-6, rtol=1e-6,
             what=f"{case['id']}: {cell}")


def test_every_cell_has_a_finite_difference_check():
    assert {cell for _, cell in FD_CASES} == set(CELLS)


def test_gradients_equal_torch(case64):
    """The cells torch.nn has (LSTM, reset-after GRU, tanh/relu RNN): outputs, final states and
    parameter gradients of the compiled graph equal torch autograd's."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lm, p, inputs = case64["lm"], case64["params"], case64["inputs"]
    out, grads = case64["got_infer"]
    checked = 0
    for name in lm.cells:
        kind = CELLS[name].torch
        if kind is None:
            continue
        n = len(lm.state_sizes[name])
        t_out, t_states, t_grads = torch_reference(
            kind, p, name, inputs["X"], inputs.get("L"),
            [inputs[f"{name}_s{k}"] for k in range(n)], inputs[f"{name}_R"],
            [inputs[f"{name}_Q{k}"] for k in range(n)])
        got_out, got_state = out[1][name]
        assert rel_err(got_out, t_out) < 1e-10, name
        for g, w in zip(flatten(got_state)[0], t_states, strict=True):
            assert rel_err(g, w) < 1e-10, name
        assert set(t_grads) == set(_cell_params(case64, name))
        for k, want in t_grads.items():
            assert rel_err(grads[k], want) < 1e-9, f"{case64['id']}: d loss / d {k} vs torch"
        checked += 1
    assert checked == sum(CELLS[c].torch is not None for c in lm.cells) > 0


def test_train_step(case):
    """One Trainer step with backend="cpu" (it reuses the compiled gradient graph) equals the
    interpreter's step."""
    m, p, inputs = case["lm"].model, case["params"], case["inputs"]
    results = {}
    for backend in ("interp", "cpu"):
        tr = Trainer(m, loss_output=0, optimizer=optim.Adam(1e-2), clip_norm=5.0,
                     backend=backend)
        st = tr.init(p)
        results[backend] = tr.step(st.params, st.opt_state, inputs, seed=SEED)
    (p_ref, s_ref, l_ref, n_ref), (p_got, s_got, l_got, n_got) = results["interp"], results["cpu"]
    rtol = case["rtol"]
    assert abs(l_got - l_ref) <= rtol * max(1.0, abs(l_ref)) * 10
    assert abs(n_got - n_ref) <= rtol * max(1.0, abs(n_ref)) * 10
    assert set(p_got) == set(p_ref) == set(p)
    for name in p_ref:
        # Adam's first step moves each weight by ~lr * sign(g): compare the update itself
        assert_close(p_got[name] - p[name], p_ref[name] - p[name], 1e-3 if rtol > 1e-6 else 1e-8,
                     f"{case['id']}: updated {name}")
    assert set(s_got) == set(s_ref)
    for name in s_ref:
        assert_close(s_got[name], s_ref[name], rtol * 10, f"{case['id']}: opt state {name}")


# ---------------------------------------------------------------------------------------------
# The inference path (no autodiff): one model with every cell, compiled once per dtype
# ---------------------------------------------------------------------------------------------
INFER = [(True, True, "f32"), (True, False, "f64")]


@pytest.fixture(scope="module", params=INFER,
                ids=lambda c: f"{'dyn' if c[0] else 'static'}-{'len' if c[1] else 'full'}-{c[2]}")
def all_cells(request):
    dynamic, with_len, dtype = request.param
    lm = loss_model(list(CELLS), dynamic=dynamic, with_len=with_len, dtype=dtype, T=T, I=I)
    rng = np.random.default_rng(3)
    p = perturbed_params(lm.model, rng)
    inputs = loss_inputs(lm, rng, B, LENGTHS)
    out = {}
    for training in (False, True):
        ref = lm.model(p, training=training, seed=SEED, **inputs)
        got = lm.model(p, training=training, seed=SEED, backend="cpu", **inputs)
        out[training] = (ref, got)
    return lm, p, inputs, out


@pytest.mark.parametrize("training", [False, True], ids=["infer", "training"])
@pytest.mark.parametrize("cell_name", list(CELLS))
def test_inference_path(all_cells, cell_name, training):
    lm, p, inputs, out = all_cells
    ref, got = out[training]
    rtol = RTOL[lm.dtype]
    rf, _ = flatten(ref[1][cell_name])
    gf, _ = flatten(got[1][cell_name])
    for k, (a, b) in enumerate(zip(gf, rf, strict=True)):
        assert_close(a, b, rtol, f"{cell_name} ({lm.dtype}, training={training}): output {k}")
    np.testing.assert_array_equal(gf[0] == 0, rf[0] == 0)
    if not training:
        want_out, want_states = oracle(lm, cell_name, p, inputs)
        rtol = 1e-12 if lm.dtype == "f64" else 1e-5
        assert_close(gf[0], want_out, rtol, f"{cell_name} ({lm.dtype}): outputs vs oracle")
        for k, (g, w) in enumerate(zip(gf[1:], want_states, strict=True)):
            assert_close(g, w, rtol, f"{cell_name} ({lm.dtype}): final state {k} vs oracle")
