"""Smoke test of the encoder-decoder example's seq2seq options: a bidirectional encoder, Luong
attention, training through dynamic_decode(TrainingHelper), greedy decoding compiled as one
scan (dynamic_decode(GreedyEmbeddingHelper)) and beam search (BeamSearchDecoder over tiled
memory), with a held-out set of sources longer than the training ones. Short settings; the
quality numbers are in docs/examples.md."""

from __future__ import annotations

import re

from helpers import run_example


def test_bidirectional_attention_smoke(tmp_path):
    res, out = run_example("encoder_decoder.py", "--bidirectional", "--attention",
                           "--iterations", "150", "--units", "16", "--train-size", "200",
                           "--test-size", "20", "--cell", "lstm", "--no-plot", "--beam", "3",
                           "--max-train-words", "6", out=tmp_path)
    assert res["bidirectional"] and res["attention"] and res["compiled_decode"], res
    loss = [float(x) for x in re.findall(r"iteration +\d+  loss (\S+)", out)]
    assert len(loss) == 5 and loss[-1] <= 0.7 * loss[0], loss
    assert "(bidirectional attention)" in out
    lengths = re.search(r"output lengths \[([\d, ]+)\]", out)
    assert lengths, out
    assert all(int(n) <= 12 for n in lengths.group(1).split(","))  # at most --max-len
    # beam search ran (its own compiled model) and decoded every held-out source
    beam = re.search(r"beam search \(width 3, length penalty 0.0\): exact-match (\S+) vs greedy "
                     r"(\S+) \((\d+) of (\d+) outputs differ\)", out)
    assert beam and int(beam.group(4)) == 20, out
    assert res["beam"] == 3 and 0.0 <= res["exact_match_beam"] <= 1.0, res
    long = re.search(r"longer sources than in training \((\d+)-(\d+) words, trained on <= 6\)",
                     out)
    assert long and int(long.group(1)) > 6, out
    assert "exact_match_long" in res and "exact_match_long_beam" in res, res
