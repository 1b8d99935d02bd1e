"""Quality bars for the examples (the encoder-decoder and MNIST bars are `slow`: the default run
deselects them, .ci/run runs them as its second step with -m slow; the time-series bar takes
seconds and stays in the default set): each trains with its defaults (or the full-size setting for
MNIST) and must beat a stated baseline by a stated margin.

  * time series: test MSE <= 0.5 x the MSE of the naive last-value predictor (measured: about
    0.07 x after the default 1500 iterations; the naive predictor is the natural floor of
    "has learned nothing about the dynamics").
  * encoder-decoder: exact-match accuracy >= 80% on 1000 held-out dates (a copy/majority
    baseline scores ~0%: no output is a copy of its source and the most common target covers
    under 0.1% of pairs; measured 100% after 1500 iterations).
  * MNIST (slow, needs the data): within 30 epochs on mnist-10k the basic RNN reaches >= 92% and
    the LSTM >= 95% test accuracy (PyTorch with the same model, data and hyperparameters:
    basic RNN 92-94.5% over epochs 20-30, LSTM 95-96% over epochs 24-30).

Backend: the examples' default (cpu, falling back to the interpreter with a notice while the
compiled backend cannot run a model); RNNCOMP_EXAMPLES_BACKEND overrides it.
"""

from __future__ import annotations

import os

import pytest
from helpers import run_example

BAR_BACKEND = os.environ.get("RNNCOMP_EXAMPLES_BACKEND")  # None: the example's default (cpu)


def test_time_series_beats_naive_predictor(tmp_path):
    res, _ = run_example("time_series.py", "--generate", "20", out=tmp_path,
                         backend=BAR_BACKEND, timeout=600)
    assert res["test_mse"] <= 0.5 * res["naive_mse"], res


@pytest.mark.slow
def test_encoder_decoder_exact_match(tmp_path):
    res, _ = run_example("encoder_decoder.py", "--iterations", "1500", out=tmp_path,
                         backend=BAR_BACKEND, timeout=600)
    assert res["exact_match"] >= 0.80, res


@pytest.mark.slow
@pytest.mark.parametrize("cell,bar", [("rnn", 0.92), ("lstm", 0.95)])
def test_mnist_accuracy_bar(tmp_path, cell, bar):
    res, _ = run_example("mnist_classifier.py", "--cell", cell, "--epochs", "30", out=tmp_path,
                         backend=BAR_BACKEND, timeout=3600)
    assert res["best_test_accuracy"] >= bar, res
