"""BPTT with recomputation (value_and_grad(recompute=True)): the forward scan saves only the
carries entering each step, the reverse scan recomputes the step's other values from them. The
gradients equal the stored version's for every cell (interpreter and compiled), the printed
backward graph shows it, and bad option values are refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BUILTIN_CELLS, loss_inputs, loss_model, perturbed_params

import rnncomp as rc
from rnncomp.ir import Op


def _stored_per_step(g) -> int:
    """Elements per batch row and step that the forward scans of `g` stack for the backward."""
    total = 0
    for n in g.nodes:
        if n.op is Op.SCAN and not n.attr("reverse"):
            for shape, _ in n.shape[1][n.attr("n_carry"):]:
                total += int(np.prod([d for d in shape[2:] if isinstance(d, int)] or [1]))
    return total


@pytest.mark.parametrize("cell", list(BUILTIN_CELLS))
def test_gradients_equal_the_stored_version(cell):
    lm = loss_model([cell], dynamic=True, with_len=True, T=4)
    rng = np.random.default_rng(3)
    p = perturbed_params(lm.model, rng)
    inputs = loss_inputs(lm, rng, lengths=[0, 4, 2])
    kw = dict(training=True, seed=7, backend="interp")
    ref_out, ref = lm.model.value_and_grad(p, **kw, **inputs)
    got_out, got = lm.model.value_and_grad(p, recompute=True, **kw, **inputs)
    assert float(ref_out[0]) == float(got_out[0])
    assert set(ref) == set(got)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-13, err_msg=k)


def test_less_is_stored_and_the_graph_shows_it():
    lm = loss_model(["basic_lstm"], dynamic=True, with_len=False, T=4)
    stored = lm.model.grad_graph()
    remat = lm.model.grad_graph(recompute=True)
    # the LSTM body saves gates, cell and tanh values per step; recompute keeps (c, h) only
    assert _stored_per_step(remat) < _stored_per_step(stored) / 2
    text = str(remat)
    assert text.count("= scan[") == 2 and "reverse=True" in text


@pytest.mark.parametrize("cell", ["basic_lstm", "gru_before"])
def test_compiled_equals_interpreter(cell):
    lm = loss_model([cell], dynamic=True, with_len=True, T=4, dtype="f32")
    rng = np.random.default_rng(5)
    p = perturbed_params(lm.model, rng)
    inputs = loss_inputs(lm, rng, lengths=[0, 4, 2])
    _, ref = lm.model.value_and_grad(p, backend="interp", **inputs)
    _, got = lm.model.value_and_grad(p, backend="cpu", recompute=True, **inputs)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("bad", [1, "yes", None, 0.5])
def test_bad_values_are_refused(bad):
    lm = loss_model(["rnn_tanh"], T=2)
    with pytest.raises(TypeError, match=r"recompute: expected True or False"):
        lm.model.grad_graph(recompute=bad)


def test_trainer_option():
    lm = loss_model(["gru_after"], T=3, with_len=False)
    rng = np.random.default_rng(0)
    inputs = loss_inputs(lm, rng)
    p = perturbed_params(lm.model, rng)
    steps = {}
    for recompute in (False, True):
        tr = rc.train.Trainer(lm.model, recompute=recompute, backend="interp")
        st = tr.init(p)
        steps[recompute] = tr.step(st.params, st.opt_state, inputs)
    for k in steps[False][0]:
        np.testing.assert_allclose(steps[True][0][k], steps[False][0][k], rtol=1e-12, atol=1e-14)
