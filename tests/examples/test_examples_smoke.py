"""Smoke tests: every example runs end to end at small sizes in a subprocess, prints its summary
(`result: {json}` line), writes its PNG pictures into --out, and reaches a stated outcome:

  * MNIST (the shipped mnist-10k, 4 epochs on 1000 images): test accuracy >= 0.35 (chance is
    0.10; measured 0.47-0.69) and the epoch-4 training loss <= 0.8 x epoch 1's (measured
    0.46-0.71);
  * time series (200 iterations): the last reported training MSE <= 0.25 x the first (measured
    0.04-0.10);
  * truncated BPTT (6 epochs): training MSE at epoch 6 <= 0.5 x epoch 1 for k=20 (measured
    0.06-0.26) and <= 0.6 x for full BPTT (measured 0.33-0.49);
  * encoder-decoder (300 iterations): loss at iteration 300 <= 0.5 x at iteration 60 (measured
    0.33-0.39);
  * deep RNN: the test checks the dropout facts itself (inference deterministic, training masks
    differ between seeds and repeat for one seed) on the example's model;
  * checkpoint resume: the test trains the uninterrupted run itself and compares its parameters
    and Adam state with those the resumed process saved, bit for bit.

The backend is --backend interp (no compile time) unless RNNCOMP_EXAMPLES_BACKEND says
otherwise; test_cpu_backend_smoke runs one example with the default backend (cpu).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import EXAMPLES, REPO, run_example

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _assert_png(path):
    """The picture exists when matplotlib (the viz extra) is installed; without it the example
    says so and skips the plot."""
    if HAS_MPL:
        assert path.stat().st_size > 0


def _floats(pattern: str, text: str) -> list[float]:
    return [float(v) for v in re.findall(pattern, text)]


def _example_module(name: str):
    """Import examples/<name>.py (examples/ on sys.path, as the scripts do themselves)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


ALL = ["mnist_classifier.py", "time_series.py", "deep_rnn.py", "tbptt_long_sequences.py",
       "encoder_decoder.py", "checkpoint_resume.py"]


@pytest.mark.parametrize("name", ALL)
def test_help(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--help"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--backend" in proc.stdout and "--seed" in proc.stdout
    assert "Defaults:" in proc.stdout  # says what the defaults do and how long they take


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole", "gru"])
def test_mnist_smoke(tmp_path, cell):
    res, out = run_example("mnist_classifier.py", "--epochs", "4", "--train-size", "1000",
                           "--test-size", "500", "--cell", cell, out=tmp_path)
    assert res["cell"] == cell and len(res["train_loss"]) == 4
    assert res["test_accuracy"] >= 0.35, res
    assert res["train_loss"][-1] <= 0.8 * res["train_loss"][0], res
    assert "epoch   4  train loss" in out and "test accuracy" in out and "epoch time" in out
    _assert_png(tmp_path / f"mnist_{cell}.png")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole", "gru"])
def test_time_series_smoke(tmp_path, cell):
    res, out = run_example("time_series.py", "--iterations", "200", "--generate", "30",
                           "--test-size", "50", "--cell", cell, out=tmp_path)
    assert res["generated"] == 30
    mse = _floats(r"iteration +\d+  train MSE (\S+)", out)
    assert len(mse) >= 2 and mse[-1] <= 0.25 * mse[0], mse
    assert np.isfinite(res["test_mse"]) and "test MSE" in out
    _assert_png(tmp_path / f"time_series_{cell}.png")


def test_deep_rnn_facts(tmp_path):
    res, out = run_example("deep_rnn.py", "--iterations", "10", "--units", "16",
                           "--test-size", "20", out=tmp_path)
    assert "inference is deterministic: True" in out
    assert "training differs between seeds: True" in out
    _assert_png(tmp_path / "deep_rnn_rnn.png")
    # the facts, checked here rather than taken from the example's own report
    deep = _example_module("deep_rnn")
    ts = _example_module("time_series")
    model = deep.build_model("rnn", 16, 2, 0.8)
    params = model.init(0)
    X, y = ts.windows(np.random.default_rng(0), 8, 20)

    def outputs(training, seed):
        return model(params, X=X, y=y, training=training, seed=seed)["outputs"]

    assert np.array_equal(outputs(False, 1), outputs(False, 2))
    assert not np.array_equal(outputs(True, 1), outputs(True, 2))
    assert np.array_equal(outputs(True, 1), outputs(True, 1))
    assert not np.array_equal(outputs(True, 1), outputs(False, 1))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_tbptt_smoke(tmp_path, cell):
    res, out = run_example("tbptt_long_sequences.py", "--length", "60", "--k", "20",
                           "--epochs", "6", "--train-size", "16", "--test-size", "4",
                           "--batch-size", "4", "--units", "8", "--cell", cell, out=tmp_path)
    k20 = _floats(r"k=20  epoch +\d+  train MSE (\S+)", out)
    full = _floats(r"full  epoch +\d+  train MSE (\S+)", out)
    assert len(k20) == len(full) == 6
    assert k20[-1] <= 0.5 * k20[0], k20
    assert full[-1] <= 0.6 * full[0], full
    assert "truncated BPTT (k=20)" in out and "full BPTT (60 steps)" in out
    assert res["tbptt_test_mse"] == pytest.approx(_floats(r"k=20  epoch +6 .* test MSE (\S+)",
                                                          out)[0], rel=1e-3)
    _assert_png(tmp_path / f"tbptt_{cell}.png")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_decoder_smoke(tmp_path, cell):
    res, out = run_example("encoder_decoder.py", "--iterations", "300", "--units", "16",
                           "--train-size", "200", "--test-size", "20", "--cell", cell,
                           out=tmp_path)
    loss = _floats(r"iteration +\d+  loss (\S+)", out)
    assert len(loss) == 5 and loss[-1] <= 0.5 * loss[0], loss
    assert "held-out exact-match accuracy" in out
    _assert_png(tmp_path / f"encoder_decoder_{cell}.png")


def test_checkpoint_resume_bit_identical(tmp_path):
    """The example trains, checkpoints half-way, and a new process resumes; this test trains
    the uninterrupted run itself and compares it with what the resumed process saved."""
    argv = ["--epochs", "2", "--batches", "3", "--units", "8", "--batch-size", "8",
            "--seed", "3"]
    res, out = run_example("checkpoint_resume.py", *argv, out=tmp_path)
    assert "[resumed] process restored checkpoint.npz: epoch 1" in out
    _assert_png(tmp_path / "checkpoint_resume.png")

    from rnncomp import checkpoint

    ex = _example_module("checkpoint_resume")
    args = argparse.Namespace(cell="rnn", layers=2, units=8, keep_prob=0.8, epochs=2, batches=3,
                              batch_size=8, steps=20, lr=0.001)
    model, trainer = ex.make_trainer(args, res["backend"])
    params0 = model.init(3)
    full = trainer.fit(params0, ex.data_fn(args), 2, progress=False, seed=3)
    half = trainer.fit(params0, ex.data_fn(args), 1, progress=False, seed=3)
    resumed = checkpoint.load(tmp_path / "resumed_final.npz")
    saved_half = checkpoint.load(tmp_path / "checkpoint.npz")
    assert set(resumed.params) == set(full.params) == set(params0)
    for n in full.params:
        assert np.array_equal(resumed.params[n], full.params[n]), n
        assert np.array_equal(saved_half.params[n], half.params[n]), n
    assert set(resumed.opt_state) == set(full.opt_state)
    for n in full.opt_state:
        assert np.array_equal(resumed.opt_state[n], full.opt_state[n]), n
    # and training did something in each half
    assert any(not np.array_equal(half.params[n], params0[n]) for n in params0)
    assert any(not np.array_equal(full.params[n], half.params[n]) for n in params0)


def test_no_plot_option(tmp_path):
    res, _ = run_example("time_series.py", "--iterations", "2", "--generate", "2",
                         "--test-size", "10", "--no-plot", out=tmp_path)
    assert not list(tmp_path.glob("*.png"))


def test_cpu_backend_smoke(tmp_path):
    """Default backend (cpu): the example really runs compiled (the examples fall back to the
    interpreter with a `note:` line if a compiled backend fails; that must not happen here)."""
    res, out = run_example("mnist_classifier.py", "--epochs", "1", "--train-size", "150",
                           "--test-size", "100", out=tmp_path, backend=None, timeout=600)
    assert res["backend"] == "cpu", out
    assert "note: backend 'cpu'" not in out
