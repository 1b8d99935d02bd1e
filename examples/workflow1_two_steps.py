"""Seed workflow 1: five tanh neurons over inputs of size 3, a batch of 4, two time steps.

The same network three ways (the RNN chapter of "Hands-On Machine Learning", TF1):
  1. unrolled by hand:  Y0 = tanh(X0 Wx + b),  Y1 = tanh(Y0 Wy + X1 Wx + b)
  2. static_rnn(BasicRNNCell(5), [X0, X1])      (one cell copy per step in the graph)
  3. dynamic_rnn(BasicRNNCell(5), X)            (one scan node whose body is the cell)
with the same weights (the cell's kernel is [Wx; Wy] stacked by rows); all three agree.
"""

from __future__ import annotations

import argparse

import numpy as np

import rnncomp as rc

N_INPUTS, N_NEURONS = 3, 5


def manual(X0, X1):
    Wx = rc.param("Wx", (N_INPUTS, N_NEURONS), "random_normal")
    Wy = rc.param("Wy", (N_NEURONS, N_NEURONS), "random_normal")
    b = rc.param("b", (1, N_NEURONS), "zeros")
    Y0 = rc.tanh(rc.matmul(X0, Wx) + b)
    Y1 = rc.tanh(rc.matmul(Y0, Wy) + rc.matmul(X1, Wx) + b)
    return Y0, Y1


def static(X0, X1):
    return rc.static_rnn(rc.BasicRNNCell(N_NEURONS), [X0, X1])


def dynamic(X):
    return rc.dynamic_rnn(rc.BasicRNNCell(N_NEURONS), X)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=42, help="seed of the random weights")
    ap.add_argument("--quiet", action="store_true", help="do not print the graphs")
    args = ap.parse_args(argv)

    # the book's mini-batch: 4 instances, 2 steps, 3 inputs
    X0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)
    X1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)
    steps = {"X0": rc.Input((None, N_INPUTS)), "X1": rc.Input((None, N_INPUTS))}

    m_manual = rc.Model(manual, steps)
    m_static = rc.Model(static, steps)
    m_dynamic = rc.Model(dynamic, {"X": rc.Input((None, None, N_INPUTS))})
    if not args.quiet:
        for title, m in (("manual", m_manual), ("static_rnn", m_static),
                         ("dynamic_rnn", m_dynamic)):
            print(f"== {title} graph ==")
            print(m.graph)

    p = m_manual.init(args.seed)
    p["b"] = np.random.default_rng(args.seed).standard_normal((1, N_NEURONS)).astype(np.float32)
    cell_p = {"rnn/basic_rnn_cell/kernel": np.concatenate([p["Wx"], p["Wy"]], axis=0),
              "rnn/basic_rnn_cell/bias": p["b"].reshape(-1)}

    Y0, Y1 = m_manual(p, X0=X0, X1=X1)
    (S0, S1), _ = m_static(cell_p, X0=X0, X1=X1)
    out, state = m_dynamic(cell_p, X=np.stack([X0, X1], axis=1))

    np.set_printoptions(precision=6, suppress=True)
    print("== Y0 (manual) ==")
    print(Y0)
    print("== Y1 (manual) ==")
    print(Y1)
    err = max(np.abs(S0 - Y0).max(), np.abs(S1 - Y1).max(), np.abs(out[:, 0] - Y0).max(),
              np.abs(out[:, 1] - Y1).max(), np.abs(state - Y1).max())
    assert err < 1e-5, err
    print(f"static_rnn and dynamic_rnn agree with the manual unroll: max |diff| = {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
