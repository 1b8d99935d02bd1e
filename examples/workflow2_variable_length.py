"""Seed workflow 2: a variable-length batch; the second instance has length 1.

dynamic_rnn(..., sequence_length=L): outputs past an instance's length are zeros and its final
state is the state at its last valid step. static_rnn with the same sequence_length agrees.
"""

from __future__ import annotations

import argparse

import numpy as np

import rnncomp as rc

N_INPUTS, N_NEURONS = 3, 5


def dynamic(X, L):
    return rc.dynamic_rnn(rc.BasicRNNCell(N_NEURONS), X, sequence_length=L)


def static(X0, X1, L):
    return rc.static_rnn(rc.BasicRNNCell(N_NEURONS), [X0, X1], sequence_length=L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=42, help="seed of the parameters")
    ap.add_argument("--quiet", action="store_true", help="do not print the graph")
    args = ap.parse_args(argv)

    X = np.array([
        [[0, 1, 2], [9, 8, 7]],   # instance 0
        [[3, 4, 5], [0, 0, 0]],   # instance 1 (padded with a zero vector)
        [[6, 7, 8], [6, 5, 4]],   # instance 2
        [[9, 0, 1], [3, 2, 1]],   # instance 3
    ], np.float32)
    L = np.array([2, 1, 2, 2], np.int32)

    m = rc.Model(dynamic, {"X": rc.Input((None, None, N_INPUTS)), "L": rc.Input((None,), "i32")})
    m_static = rc.Model(static, {"X0": rc.Input((None, N_INPUTS)),
                                 "X1": rc.Input((None, N_INPUTS)), "L": rc.Input((None,), "i32")})
    if not args.quiet:
        print("== dynamic_rnn graph ==")
        print(m.graph)
    p = m.init(args.seed)
    out, state = m(p, X=X, L=L)
    (S0, S1), s_state = m_static(p, X0=X[:, 0], X1=X[:, 1], L=L)

    np.set_printoptions(precision=6, suppress=True)
    print("== outputs [4, 2, 5] ==")
    print(out)
    print("== final state [4, 5] ==")
    print(state)
    assert np.all(out[1, 1] == 0), "output past the length must be zero"
    assert np.array_equal(state[1], out[1, 0]), "final state = state at the last valid step"
    assert np.array_equal(state[0], out[0, 1])
    err = max(np.abs(np.stack([S0, S1], 1) - out).max(), np.abs(s_state - state).max())
    assert err < 1e-6, err
    print("instance 1 (length 1): output at step 2 is zero; final state = its step-1 output")
    print(f"static_rnn agrees with dynamic_rnn: max |diff| = {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
