"""The CUDA backend on numba's CUDA simulator, against the reference interpreter (float64),
the independent NumPy oracle and PyTorch.

Every built-in cell, forward and backward (rnncomp.transforms.autodiff.grad_graph), at toy size
(B2 H3 T3, one sequence shorter than T), through compile_graph(backend="cuda"): the generated
kernels run in the simulator and NumPy stands in for CuPy (GEMMs, movement ops). The forward
pass in inference mode also equals the oracle (tests/reference_cells.py), and the cells torch.nn
has (LSTM, reset-after GRU, tanh/relu RNN) side by side in one loss model (tests/helpers.py)
equal torch autograd: outputs, final states and every parameter gradient, with sequence_length
[0, T, 2] (an empty, a full and a partial sequence). Also: dropout
in training mode (masks must be bit-identical to rnncomp.ir.ops.hash_uniform_np), the persistent
LSTM forward kernel (float32, one block in the simulator), and a static unroll.

numba reads NUMBA_ENABLE_CUDASIM when numba.cuda is first imported, so unless the current
process already has it set, this module re-runs itself in a child process with it set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import (BUILTIN_CELLS, CELLS as CELL_TABLE, loss_inputs, loss_model,
                     numba_cuda_missing, perturbed_params, rel_err, run_pytest_child,
                     torch_reference)

ROOT = Path(__file__).resolve().parents[2]


def _torch_missing() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("torch") else "PyTorch is not installed"


if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    def test_cuda_backend_in_simulator():
        """This file under the simulator in a child pytest: a failure, an error or a child
        that only skipped fails here (the torch comparison runs in its own child, below, so
        that its skip is decided and reported here)."""
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"},
                         args=["-x", "-k", "not torch"])

    @pytest.mark.skipif(numba_cuda_missing() is not None, reason=str(numba_cuda_missing()))
    @pytest.mark.skipif(_torch_missing() is not None, reason=str(_torch_missing()))
    def test_cuda_backend_in_simulator_equals_torch():
        run_pytest_child(__file__, env={"NUMBA_ENABLE_CUDASIM": "1"}, args=["-x", "-k", "torch"])

else:
    # numba.cuda is installed (the parent checked): a backend that fails to import is a failure
    from rnncomp.backends.cuda import compile as cuda_compile  # noqa: F401

    import rnncomp as rc
    from rnncomp.transforms.autodiff import grad_graph
    from rnncomp.runtime.compiler import compile_graph
    from rnncomp.runtime.interp import evaluate
    from rnncomp.ir.ops import hash_uniform_np
    from rnncomp.frontend.trace import flatten

    B, H, T, I = 2, 3, 3, 2
    SEQ = np.array([3, 1], np.int32)

    CELLS = BUILTIN_CELLS  # the one cell table (tests/helpers.py)

    def _model(make, dtype="f64", with_len=True, unroll="dynamic"):
        def fn(X, L=None):
            if unroll == "dynamic":
                out, state = rc.dynamic_rnn(make(), X, sequence_length=L)
            else:
                xs = [rc.reshape(rc.slice(X, t, t + 1, axis=1), ("B", I)) for t in range(T)]
                outs, state = rc.static_rnn(make(), xs, sequence_length=L)
                out = rc.concat([rc.reshape(o, ("B", 1, o.shape[-1])) for o in outs], axis=1)
            return rc.sum(out * out), out, state

        inputs = {"X": rc.Input((None, T, I))}
        if with_len:
            inputs["L"] = rc.Input((None,), "i32")
        return rc.Model(fn, inputs, dtype=dtype)

    def _args(g, rng, dtype=np.float64, with_len=True, training=True, seed=12345):
        vals = {"X": rng.standard_normal((B, T, I)).astype(dtype), "L": SEQ,
                "@seed": np.int64(seed), "@training": np.bool_(training),
                "@example_offset": np.int64(3)}
        out = []
        for n in g.inputs:
            if n.name in vals:
                out.append(vals[n.name])
            else:
                out.append((0.5 * rng.standard_normal(n.shape)).astype(dtype))
        return out

    def _check(g, args, rtol=1e-10, atol=1e-12):
        c = compile_graph(g, backend="cuda")
        want = evaluate(g, args)
        got = c(*args)
        assert len(got) == len(want)
        for k, (w, o) in enumerate(zip(want, got, strict=True)):
            assert o.shape == w.shape and o.dtype == w.dtype, (k, o.shape, w.shape)
            np.testing.assert_allclose(o, w, rtol=rtol, atol=atol, err_msg=f"output {k}")
        return c

    @pytest.mark.parametrize("name", list(CELLS))
    def test_forward_and_backward_match_interpreter(name):
        rng = np.random.default_rng(0)
        m = _model(CELLS[name])
        for g in (m.graph, grad_graph(m.graph)):
            _check(g, _args(g, rng))

    @pytest.mark.parametrize("name", list(CELLS))
    def test_forward_matches_oracle(name):
        """Inference mode against the independent NumPy oracle (tests/reference_cells.py)."""
        rng = np.random.default_rng(4)
        m = _model(CELLS[name])
        g = m.graph
        args = _args(g, rng, training=False)
        got = compile_graph(g, backend="cuda")(*args)
        vals = {n.name: a for n, a in zip(g.inputs, args, strict=True)}
        init = [np.zeros((B, s)) for s in flatten(CELLS[name]().state_size)[0]]
        want_out, want_states = CELL_TABLE[name].oracle(vals["X"], vals, vals["L"], init)
        np.testing.assert_allclose(got[1], want_out, rtol=1e-10, atol=1e-12)
        for o, w in zip(got[2:], want_states, strict=True):
            np.testing.assert_allclose(o, w, rtol=1e-10, atol=1e-12)

    def test_static_unroll_backward():
        rng = np.random.default_rng(1)
        m = _model(CELLS["gru_before"], unroll="static")
        g = grad_graph(m.graph)
        _check(g, _args(g, rng))

    @pytest.mark.parametrize("name", ["basic_lstm", "gru_after"])
    def test_checkpoint_every_backward(name):
        """BPTT with checkpoint_every=2 over T=3 (a partial last segment): the segment/unsegment
        ops and the loops over segments with a loop nested in their bodies."""
        rng = np.random.default_rng(5)
        m = _model(CELLS[name])
        g = grad_graph(m.graph, checkpoint_every=2)
        _check(g, _args(g, rng))

    def test_dropout_masks_bit_identical():
        """float32 training-mode dropout: the keep/drop pattern must be identical (masks come
        from the same hash); values agree to float32 rounding."""
        rng = np.random.default_rng(2)
        m = _model(lambda: rc.DropoutWrapper(rc.BasicRNNCell(H), 0.5, 0.5), dtype="f32",
                   with_len=False)
        args = _args(m.graph, rng, np.float32, with_len=False, seed=987654321012)
        c = compile_graph(m.graph, backend="cuda")
        got = c(*args)[1]
        want = evaluate(m.graph, args)[1]
        assert np.array_equal(got == 0, want == 0)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)

    from numba import cuda  # the simulator swaps module-level `cuda` inside kernels

    from rnncomp.backends.cuda import runtime as rt

    def test_hash_uniform_kernel_bit_identical():
        @cuda.jit
        def k(out, seed, site, step):
            i = cuda.grid(1)
            if i < out.size:
                out[i] = rt.hash_uniform(seed, site, step, i)

        for seed in (0, 1, 2**40 + 17, -5):
            out = np.zeros(37)
            k[2, 32](out, np.int64(seed), np.int64(3), np.int32(9))
            np.testing.assert_array_equal(out, hash_uniform_np(seed, 3, 9, 37, np.float64))

    @pytest.mark.parametrize("with_len", [True, False])
    def test_persistent_lstm_forward(with_len):
        """An inference LSTM graph (float32) is recognised and runs as one persistent kernel."""
        rng = np.random.default_rng(3)

        def fn(X, L=None):
            out, state = rc.dynamic_rnn(rc.BasicLSTMCell(H, forget_bias=0.7), X,
                                        sequence_length=L)
            return out, state

        inputs = {"X": rc.Input((None, T, I))}
        if with_len:
            inputs["L"] = rc.Input((None,), "i32")
        m = rc.Model(fn, inputs, dtype="f32")
        args = _args(m.graph, rng, np.float32, with_len=with_len)
        c = _check(m.graph, args, rtol=2e-5, atol=2e-6)
        assert len(c.lstm) == 1 and c.stats["persistent_runs"] == 1
        c.persistent = False
        got = c(*args)
        assert c.stats["persistent_runs"] == 1
        for w, o in zip(evaluate(m.graph, args), got, strict=True):
            np.testing.assert_allclose(o, w, rtol=2e-5, atol=2e-6)

    def test_lstm_matcher_rejects_other_cells():
        from rnncomp.backends.cuda.kernels_lstm import find_lstm_scans
        from rnncomp.transforms.passes import optimize

        for name in ("gru_after", "lstm_peep", "rnn_tanh"):
            m = _model(CELLS[name], dtype="f32")
            assert find_lstm_scans(optimize(m.graph).graph) == {}

    def test_source_and_cache_file():
        m = _model(CELLS["basic_lstm"])
        c = compile_graph(m.graph, backend="cuda")
        assert c.path.exists() and c.path.read_text() == c.source
        assert "cuda.grid(1)" in c.source and "math.tanh" in c.source
        assert "fm." not in c.source

    TORCH_CELLS = [n for n, c in CELL_TABLE.items() if c.torch is not None]

    def test_forward_and_gradients_equal_torch():
        """The cells torch.nn has, side by side in one loss model (one compile), float64, with
        sequence_length: value_and_grad(backend="cuda") against torch autograd."""
        import torch  # the parent checked that it is installed

        torch.manual_seed(0)
        assert sorted(TORCH_CELLS) == ["basic_lstm", "gru_after", "rnn_relu", "rnn_tanh"]
        lm = loss_model(TORCH_CELLS, dynamic=True, with_len=True, dtype="f64", T=T, I=I)
        rng = np.random.default_rng(6)
        p = perturbed_params(lm.model, rng)
        inputs = loss_inputs(lm, rng, 3, [0, T, 2])
        (loss, out), grads = lm.model.value_and_grad(p, backend="cuda", **inputs)
        assert set(grads) == set(p)
        want_loss = 0.0
        for name in TORCH_CELLS:
            n = len(lm.state_sizes[name])
            t_out, t_states, t_grads = torch_reference(
                CELL_TABLE[name].torch, p, name, inputs["X"], inputs["L"],
                [inputs[f"{name}_s{k}"] for k in range(n)], inputs[f"{name}_R"],
                [inputs[f"{name}_Q{k}"] for k in range(n)])
            got_out, got_state = out[name]
            assert rel_err(got_out, t_out) < 1e-10, f"{name}: outputs vs torch"
            assert not np.any(got_out[0]), f"{name}: a length-0 sequence has zero outputs"
            for k, (g, w) in enumerate(zip(flatten(got_state)[0], t_states, strict=True)):
                assert rel_err(g, w) < 1e-10, f"{name}: final state {k} vs torch"
            assert set(t_grads) == {k for k in p if k.startswith(name + "/")}
            for k, want in t_grads.items():
                assert rel_err(grads[k], want) < 1e-9, f"d loss / d {k} vs torch"
            want_loss += float(np.sum(t_out * inputs[f"{name}_R"])) + sum(
                float(np.sum(np.tanh(s) * inputs[f"{name}_Q{k}"]))
                for k, s in enumerate(t_states))
        assert abs(float(loss) - want_loss) <= 1e-10 * max(1.0, abs(want_loss))
