"""BPTT with recomputation: value_and_grad(recompute=True) saves only the carries entering each
step and the reverse scan recomputes the step's other values from them; checkpoint_every=k saves
the carries entering every k-th step and the reverse loop over segments re-runs each segment's
forward before its reverse scan. The gradients equal the stored version's for every cell
(interpreter and compiled), the printed backward graph shows it, and bad option values are
refused."""

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


# ---------------------------------------------------------------------------------------------
# checkpoint_every=k: carries stored every k steps, the backward re-runs segment by segment
# ---------------------------------------------------------------------------------------------
def _grads_equal(got, ref, rtol=1e-12, atol=1e-13):
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=rtol, atol=atol, err_msg=k)


def test_checkpoint_every_gradients_equal_the_stored_version_for_every_cell():
    # every cell side by side in one graph; T=5: k=2 and 3 leave a partial last segment, k=5 is
    # one segment, k=7 > T; lengths 0, T and 3 end inside a segment
    lm = loss_model(list(BUILTIN_CELLS), dynamic=True, with_len=True, T=5)
    rng = np.random.default_rng(11)
    p = perturbed_params(lm.model, rng)
    inputs = loss_inputs(lm, rng, lengths=[0, 5, 3])
    kw = dict(training=True, seed=7, backend="interp")  # dropout masks must be the same too
    ref_out, ref = lm.model.value_and_grad(p, **kw, **inputs)
    for k in (2, 3, 5, 7):
        out, got = lm.model.value_and_grad(p, checkpoint_every=k, **kw, **inputs)
        assert float(out[0]) == float(ref_out[0]), k
        _grads_equal(got, ref)


def _reversed_scans(g):
    """The graph with its scans running backwards in time (a reverse scan, as a reverse
    direction would be): the same bodies, reverse=True."""
    from rnncomp.ir import ops
    from rnncomp.ir.graph import Graph, substitute

    mapping = {}
    for n in g.nodes:
        if n.op is Op.SCAN:
            mapping[id(n)] = ops.make(Op.SCAN, *n.inputs, **{**dict(n.attrs), "reverse": True})
    return Graph(g.inputs, substitute(list(g.outputs), mapping, ops.remake))


def test_checkpoint_every_reverse_scans():
    from rnncomp.runtime.interp import interpret
    from rnncomp.transforms.autodiff import grad_graph
    from rnncomp.transforms.remat import segment_scans

    lm = loss_model(["basic_lstm", "gru_before"], dynamic=True, with_len=True, T=5)
    g = _reversed_scans(lm.model.graph)
    rng = np.random.default_rng(2)
    p = perturbed_params(lm.model, rng)
    args = lm.model.arguments(p, loss_inputs(lm, rng, lengths=[1, 5, 4]), False, 0, 0)
    ref = interpret(g, args)
    ref_g = interpret(grad_graph(g), args)
    for k in (2, 7):
        for a, b in zip(interpret(segment_scans(g, k), args), ref):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
        for a, b in zip(interpret(grad_graph(g, checkpoint_every=k), args), ref_g):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def _symbolic_T_model():
    def fn(X, L, R):
        (o1, o2), _ = rc.bidirectional_dynamic_rnn(rc.BasicLSTMCell(3), rc.GRUCell(2), X,
                                                   sequence_length=L)
        return rc.sum(rc.concat([o1, o2], axis=2) * R)

    return rc.Model(fn, {"X": rc.Input((None, None, 2), "f32"), "L": rc.Input((None,), "i32"),
                         "R": rc.Input((None, None, 5), "f32")})


def test_checkpoint_every_compiled_with_a_symbolic_time_axis():
    m = _symbolic_T_model()
    rng = np.random.default_rng(4)
    p = perturbed_params(m, rng)
    # one compiled kernel, two runs: T=5 (k=2 leaves a partial segment: zero-padded copy) and
    # T=4 (k divides T: the segments are views)
    for T, L in ((5, [0, 5, 3]), (4, [4, 1, 2])):
        inputs = {"X": rng.standard_normal((3, T, 2)).astype(np.float32),
                  "L": np.asarray(L, np.int32),
                  "R": rng.standard_normal((3, T, 5)).astype(np.float32)}
        _, ref = m.value_and_grad(p, backend="interp", **inputs)
        _, got = m.value_and_grad(p, backend="cpu", checkpoint_every=2, **inputs)
        _grads_equal(got, ref, rtol=2e-5, atol=2e-6)


def test_checkpoint_every_segments_show_in_the_printed_graph():
    m = _symbolic_T_model()
    g = m.grad_graph(checkpoint_every=4)
    text = str(g)
    assert "segment[k=4]" in text and "unsegment[length=T]" in text
    # forward: one checkpoint per segment; backward: a reverse scan over the segments whose body
    # re-runs the segment's forward (a forward scan) before the segment's reverse scan
    assert "f32[ceil(T/4),B,3]" in text
    # every top-level loop runs over segments; the forward ones (the bw direction is a reverse
    # scan) run the step loop once, the backward ones re-run the segment's forward in its
    # direction, then the segment's backward in the other
    scans = [n for n in g.nodes if n.op is Op.SCAN]
    assert len(scans) == 4 and all(n.attr("remat") for n in scans)
    fwd, bwd = [], []
    for n in scans:
        inner = [x for x in n.attr("body").nodes if x.op is Op.SCAN]
        (fwd if len(inner) == 1 else bwd).append((n, inner))
    assert len(fwd) == len(bwd) == 2
    assert sorted(n.attr("reverse") for n, _ in bwd) == [False, True]
    for n, inner in bwd:
        assert [x.attr("reverse") for x in inner] == [not n.attr("reverse"), n.attr("reverse")]
    # only checkpoints leave the forward loops: nothing per step is stacked over all of T
    for n, _ in fwd:
        for shape, _ in n.shape[1][n.attr("n_carry"):]:
            assert shape[0] == "ceil(T/4)"


def test_checkpoint_every_keeps_less_than_recompute():
    lm = loss_model(["basic_lstm"], dynamic=True, with_len=False, T=12)

    def stacked(g):  # elements per batch row that the forward scans stack over time
        total = 0
        for n in g.nodes:
            if n.op is Op.SCAN and not n.attr("reverse"):
                for shape, _ in n.shape[1][n.attr("n_carry"):]:
                    total += int(np.prod([d for d in shape if isinstance(d, int)]))
        return total

    # y (the output) is stacked by all three; the checkpoints shrink with k
    k1 = stacked(lm.model.grad_graph(checkpoint_every=1))
    k4 = stacked(lm.model.grad_graph(checkpoint_every=4))
    assert k1 == stacked(lm.model.grad_graph(recompute=True))
    assert k4 < k1


@pytest.mark.parametrize("bad,err,msg", [
    (0, ValueError, r"checkpoint_every: expected a positive int .* received 0"),
    (-3, ValueError, r"checkpoint_every: expected a positive int .* received -3"),
    (2.0, TypeError, r"checkpoint_every: expected a positive int .* received 2.0"),
    ("4", TypeError, r"checkpoint_every: expected a positive int .* received '4'"),
    (True, TypeError, r"checkpoint_every: expected a positive int .* received True"),
])
def test_checkpoint_every_bad_values_are_refused(bad, err, msg):
    lm = loss_model(["rnn_tanh"], T=2)
    with pytest.raises(err, match=msg):
        lm.model.grad_graph(checkpoint_every=bad)
    with pytest.raises(err, match=msg):
        lm.model.value_and_grad(lm.model.init(0), checkpoint_every=bad, backend="interp",
                                **loss_inputs(lm, np.random.default_rng(0)))
    with pytest.raises(err, match=msg):
        rc.train.Trainer(lm.model, checkpoint_every=bad)


def test_checkpoint_every_with_recompute():
    lm = loss_model(["rnn_tanh"], T=2)
    with pytest.raises(ValueError, match=r"checkpoint_every: expected None or 1 with "
                                         r"recompute=True .* received 3"):
        lm.model.grad_graph(recompute=True, checkpoint_every=3)
    with pytest.raises(ValueError, match=r"received 3"):
        rc.train.Trainer(lm.model, recompute=True, checkpoint_every=3)
    # the same request spelled twice is the same graph
    assert lm.model.grad_graph(recompute=True, checkpoint_every=1) is \
        lm.model.grad_graph(checkpoint_every=1)


def test_trainer_checkpoint_every():
    lm = loss_model(["basic_lstm"], T=5, with_len=True)
    rng = np.random.default_rng(1)
    inputs = loss_inputs(lm, rng)
    p = perturbed_params(lm.model, rng)
    steps = {}
    for k in (None, 2):
        tr = rc.train.Trainer(lm.model, checkpoint_every=k, backend="interp")
        assert tr.checkpoint_every == k
        st = tr.init(p)
        steps[k] = tr.step(st.params, st.opt_state, inputs)
    for name in steps[None][0]:
        np.testing.assert_allclose(steps[2][0][name], steps[None][0][name], rtol=1e-12,
                                   atol=1e-14)


def test_checkpoint_every_loop_with_a_static_length_and_no_inputs():
    # a scan driven by its `length` attribute alone (no per-step inputs; it reads its step)
    from rnncomp.ir import ops
    from rnncomp.ir.dtypes import DType
    from rnncomp.ir.graph import Graph
    from rnncomp.runtime.interp import interpret
    from rnncomp.transforms.autodiff import grad_graph

    c0 = ops.make(Op.INPUT, name="c0", shape=("B", 3), dtype=DType.f64)
    w = ops.make(Op.PARAM, name="w", shape=(3,), dtype=DType.f64)
    t = ops.placeholder((), DType.i32)
    c = ops.placeholder(("B", 3), DType.f64)
    wp = ops.placeholder((3,), DType.f64)
    nc = ops.tanh(ops.add(ops.mul(c, wp), ops.cast(t, DType.f64)))
    res = ops.scan(Graph([t, c, wp], [nc, ops.mul(nc, nc)]), [c0], [], [w], length=5)
    g = Graph([c0, w], [ops.reduce_sum(ops.add(ops.reduce_sum(res[1], (0,)), res[0]), (0, 1))])
    args = [np.random.default_rng(0).standard_normal((2, 3)), np.array([0.3, -0.5, 0.9])]
    ref = interpret(grad_graph(g), args)
    for k in (2, 6):
        for a, b in zip(interpret(grad_graph(g, checkpoint_every=k), args), ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
