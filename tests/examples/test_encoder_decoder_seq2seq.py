"""Smoke test of the encoder-decoder example's seq2seq options: a bidirectional encoder, Luong
attention, training through dynamic_decode(TrainingHelper) and greedy decoding compiled as one
scan (dynamic_decode(GreedyEmbeddingHelper)). Short settings; the quality numbers are in
docs/examples.md."""

from __future__ import annotations

import re

from helpers import run_example


def test_bidirectional_attention_smoke(tmp_path):
    res, out = run_example("encoder_decoder.py", "--bidirectional", "--attention",
                           "--iterations", "150", "--units", "16", "--train-size", "200",
                           "--test-size", "20", "--cell", "lstm", "--no-plot", out=tmp_path)
    assert res["bidirectional"] and res["attention"] and res["compiled_decode"], res
    loss = [float(x) for x in re.findall(r"iteration +\d+  loss (\S+)", out)]
    assert len(loss) == 5 and loss[-1] <= 0.7 * loss[0], loss
    assert "(bidirectional attention)" in out
    lengths = re.search(r"output lengths \[([\d, ]+)\]", out)
    assert lengths, out
