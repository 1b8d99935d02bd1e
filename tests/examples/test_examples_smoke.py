"""Smoke tests: every example runs end to end at tiny sizes in a subprocess, prints its summary
(`result: {json}` line) and writes its PNG pictures into --out.

The backend is --backend interp (no compile time) unless RNNCOMP_EXAMPLES_BACKEND says
otherwise; test_cpu_backend_smoke runs one example with the default backend (cpu, which falls
back to the interpreter with a one-line notice while the compiled backend cannot run it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _assert_png(path):
    """The picture exists when matplotlib (the viz extra) is installed; without it the example
    says so and skips the plot."""
    if HAS_MPL:
        assert path.stat().st_size > 0


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BACKEND = os.environ.get("RNNCOMP_EXAMPLES_BACKEND", "interp")


def run_example(name: str, *args: str, out: Path | None = None, timeout: int = 300,
                backend: str | None = BACKEND) -> tuple[dict, str]:
    cmd = [sys.executable, str(EXAMPLES / name), "--no-progress"]
    if backend is not None:
        cmd += ["--backend", backend]
    if out is not None:
        cmd += ["--out", str(out)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("result: ")]
    assert lines, f"{name} printed no result line:\n{proc.stdout}"
    return json.loads(lines[-1][len("result: "):]), proc.stdout



ALL = ["mnist_classifier.py", "time_series.py", "deep_rnn.py", "tbptt_long_sequences.py",
       "encoder_decoder.py", "checkpoint_resume.py"]


@pytest.mark.parametrize("name", ALL)
def test_help(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--help"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "--backend" in proc.stdout and "--seed" in proc.stdout
    assert "Defaults:" in proc.stdout  # says what the defaults do and how long they take


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole", "gru"])
def test_mnist_smoke(tmp_path, cell):
    res, out = run_example("mnist_classifier.py", "--epochs", "1", "--train-size", "300",
                           "--test-size", "200", "--cell", cell, out=tmp_path)
    assert res["cell"] == cell and 0.0 <= res["test_accuracy"] <= 1.0
    assert "epoch   1  train loss" in out and "test accuracy" in out and "epoch time" in out
    _assert_png(tmp_path / f"mnist_{cell}.png")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "peephole", "gru"])
def test_time_series_smoke(tmp_path, cell):
    res, out = run_example("time_series.py", "--iterations", "20", "--generate", "30",
                           "--test-size", "50", "--cell", cell, out=tmp_path)
    assert res["generated"] == 30 and res["naive_mse"] > 0
    assert "test MSE" in out
    _assert_png(tmp_path / f"time_series_{cell}.png")


def test_deep_rnn_facts(tmp_path):
    res, out = run_example("deep_rnn.py", "--iterations", "10", "--units", "16",
                           "--test-size", "20", out=tmp_path)
    assert res["inference_deterministic"] is True
    assert res["training_differs"] is True
    assert res["training_reproducible"] is True
    assert "inference is deterministic: True" in out
    assert "training differs between seeds: True" in out
    _assert_png(tmp_path / "deep_rnn_rnn.png")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_tbptt_smoke(tmp_path, cell):
    res, out = run_example("tbptt_long_sequences.py", "--length", "60", "--k", "20",
                           "--epochs", "1", "--train-size", "8", "--test-size", "4",
                           "--batch-size", "4", "--units", "8", "--cell", cell, out=tmp_path)
    assert res["tbptt_test_mse"] > 0 and res["full_test_mse"] > 0
    assert "truncated BPTT (k=20)" in out and "full BPTT (60 steps)" in out
    _assert_png(tmp_path / f"tbptt_{cell}.png")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_decoder_smoke(tmp_path, cell):
    res, out = run_example("encoder_decoder.py", "--iterations", "5", "--units", "16",
                           "--train-size", "200", "--test-size", "20", "--cell", cell,
                           out=tmp_path)
    assert 0.0 <= res["exact_match"] <= 1.0
    assert "held-out exact-match accuracy" in out
    _assert_png(tmp_path / f"encoder_decoder_{cell}.png")


def test_checkpoint_resume_bit_identical(tmp_path):
    res, out = run_example("checkpoint_resume.py", "--epochs", "2", "--batches", "3",
                           "--units", "8", "--batch-size", "8", out=tmp_path)
    assert res["bit_identical"] is True
    assert "[resumed] process restored checkpoint.npz: epoch 1" in out
    assert (tmp_path / "checkpoint.npz").exists()
    _assert_png(tmp_path / "checkpoint_resume.png")


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
