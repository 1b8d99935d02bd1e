"""Quickstart: an LSTM over variable-length sequences, traced to IR and run by the interpreter.

    python examples/quickstart.py            # prints the graph, runs it on random data
"""

from __future__ import annotations

import argparse

import numpy as np

import rnncomp as rc


def model(X, L):
    """A BasicLSTMCell(5) unrolled with dynamic_rnn over X [batch, time, 3]."""
    outputs, state = rc.dynamic_rnn(rc.BasicLSTMCell(5), X, sequence_length=L)
    return outputs, state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the parameters and the data")
    ap.add_argument("--batch", type=int, default=4, help="batch size")
    ap.add_argument("--steps", type=int, default=6, help="sequence length T")
    args = ap.parse_args(argv)

    m = rc.Model(model, {"X": rc.Input((None, None, 3)), "L": rc.Input((None,), "i32")})
    print(m.graph)
    rc.verify(m.graph)
    params = m.init(args.seed)
    print("parameters:", ", ".join(f"{k} {v.shape}" for k, v in params.items()))

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.batch, args.steps, 3)).astype(np.float32)
    L = rng.integers(1, args.steps + 1, size=args.batch).astype(np.int32)
    L[0] = args.steps
    outputs, state = m(params, X=X, L=L)

    print("sequence_length:", L.tolist())
    print("outputs:", outputs.shape, outputs.dtype)
    print("state.c:", state.c.shape, " state.h:", state.h.shape)
    print("outputs[0, -1, :3] =", np.array2string(outputs[0, -1, :3], precision=5))
    print("state.h[0, :3]     =", np.array2string(state.h[0, :3], precision=5))
    last = outputs[np.arange(args.batch), L - 1]
    assert np.array_equal(last, state.h), "final h = output at each instance's last step"
    print("final state h equals the output at each instance's last valid step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
