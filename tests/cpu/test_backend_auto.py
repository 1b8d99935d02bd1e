"""backend="auto", the default of Model calls, value_and_grad, Trainer and `rnncomp run`: the
compiled CPU backend; the interpreter only when asked, or when compiling is impossible (then one
RuntimeWarning says why). The suite's conftest sets RNNCOMP_DEFAULT_BACKEND=interp; these tests
unset it to see what a user gets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rnncomp as rc
from rnncomp.runtime import compiler
from rnncomp.runtime.compiler import CompiledGraph
from rnncomp.tools.cli import main as cli_main


@pytest.fixture
def user_default(monkeypatch):
    monkeypatch.delenv("RNNCOMP_DEFAULT_BACKEND", raising=False)


def _model(units=3):
    def loss_model(X, Y):
        out, _ = rc.dynamic_rnn(rc.BasicRNNCell(units), X)
        return {"loss": rc.reduce_mean(rc.square(out - Y)), "out": out}

    return rc.Model(loss_model, {"X": rc.Input((None, None, 2)),
                                 "Y": rc.Input((None, None, units))})


def _data(rng, b=3, t=4, units=3):
    return (rng.standard_normal((b, t, 2)).astype(np.float32),
            rng.standard_normal((b, t, units)).astype(np.float32))


def _compiled(cache):
    return [c for c in cache.values() if isinstance(c, CompiledGraph)]


def test_default_is_compiled_cpu(user_default, rng):
    m = _model()
    p = m.init(0)
    x, y = _data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when compiling works
        out = m(p, X=x, Y=y)
        (loss, grads) = m.value_and_grad(p, output="loss", X=x, Y=y)
    assert [c.backend for c in _compiled(m._compiled)] == ["cpu"]
    assert [c.backend for c in _compiled(m._compiled_grad)] == ["cpu"]
    ref = m(p, X=x, Y=y, backend="interp")
    np.testing.assert_allclose(out["out"], ref["out"], rtol=1e-5, atol=1e-6)
    ref_loss, ref_grads = m.value_and_grad(p, output="loss", X=x, Y=y, backend="interp")
    np.testing.assert_allclose(loss["loss"], ref_loss["loss"], rtol=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_env_selects_interp(monkeypatch, rng):
    monkeypatch.setenv("RNNCOMP_DEFAULT_BACKEND", "interp")
    m = _model()
    x, y = _data(rng)
    m(m.init(0), X=x, Y=y)
    m.value_and_grad(m.init(0), output="loss", X=x, Y=y)
    assert not _compiled(m._compiled) and not _compiled(m.__dict__.get("_compiled_grad", {}))
    monkeypatch.setenv("RNNCOMP_DEFAULT_BACKEND", "gpu")
    with pytest.raises(ValueError, match="RNNCOMP_DEFAULT_BACKEND"):
        m(m.init(0), X=x, Y=y)


def test_compile_error_falls_back_with_one_warning(user_default, monkeypatch, rng):
    def broken(graph, backend="cpu", **kw):
        raise NotImplementedError("CPU backend: no template for op frobnicate\nsecond line")

    monkeypatch.setattr(compiler, "compile_graph", broken)
    m = _model()
    p = m.init(0)
    x, y = _data(rng)
    with pytest.warns(RuntimeWarning) as rec:
        out = m(p, X=x, Y=y)
    (w,) = [r for r in rec if issubclass(r.category, RuntimeWarning)]
    msg = str(w.message)
    assert "no template for op frobnicate" in msg and "interpreter" in msg
    assert "\n" not in msg  # one line
    np.testing.assert_array_equal(out["out"], m(p, X=x, Y=y, backend="interp")["out"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the outcome is remembered: no second warning
        m(p, X=x, Y=y)
    with pytest.warns(RuntimeWarning, match="frobnicate"):
        loss, _ = m.value_and_grad(p, output="loss", X=x, Y=y)
    # an explicit backend is never substituted: its error reaches the caller
    with pytest.raises(NotImplementedError, match="frobnicate"):
        rc.runtime.grad.run_graph(m, m.graph, m.arguments(p, {"X": x, "Y": y}), "cpu")


def test_numba_missing_falls_back(user_default, monkeypatch, rng):
    real = compiler.importlib.util.find_spec
    monkeypatch.setattr(compiler.importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real(name, *a))
    m = _model()
    x, y = _data(rng)
    with pytest.warns(RuntimeWarning, match="numba is not installed.*interpreter"):
        m(m.init(0), X=x, Y=y)
    assert not _compiled(m._compiled)


def test_bad_backend_name(rng):
    m = _model()
    x, y = _data(rng)
    with pytest.raises(ValueError, match="'auto', 'interp', 'cpu' or 'cuda'"):
        m(m.init(0), X=x, Y=y, backend="CPU")
    with pytest.raises(ValueError, match="backend"):
        rc.train.Trainer(m, "loss", backend="numba")


def test_trainer_default_is_auto(user_default, rng):
    m = _model()
    tr = rc.train.Trainer(m, "loss")
    assert tr.backend == "auto"
    x, y = _data(rng)
    p = m.init(0)
    st = tr.init(p)
    _, _, loss, _ = tr.step(st.params, st.opt_state, {"X": x, "Y": y})
    assert np.isfinite(loss)
    assert [c.backend for c in _compiled(m._compiled_grad)] == ["cpu"]


def test_cli_run_default_auto(user_default, capsys):
    assert cli_main(["run", "examples/models.py:basic_rnn", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "backend cpu" in out and "compile:" in out


def test_cli_run_bare_graph_with_dropout(user_default, tmp_path, capsys):
    """A bare Graph (not a Model) that uses dropout gets @training, @seed and @example_offset."""
    src = tmp_path / "g.py"
    src.write_text(
        "import rnncomp as rc\n"
        "def graph():\n"
        "    def f(X):\n"
        "        cell = rc.DropoutWrapper(rc.BasicRNNCell(3), output_keep_prob=0.5)\n"
        "        return rc.dynamic_rnn(cell, X)[0]\n"
        "    return rc.Model(f, {'X': rc.Input((None, None, 2))}).graph\n")
    for backend in ("interp", "auto"):
        assert cli_main(["run", f"{src}:graph", "--training", "--repeat", "1",
                         "--backend", backend]) == 0
        out = capsys.readouterr().out
        assert "outputs:" in out
    assert "backend cpu" in out
