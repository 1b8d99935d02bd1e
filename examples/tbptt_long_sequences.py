"""Truncated BPTT on long sequences, with the state carried across chunks.

Task: sequences of 1000 steps of a noisy sine whose frequency and phase differ per sequence;
at every step the model predicts the next value (MSE). The model is written for one chunk: it
takes the recurrent state as inputs (h0, and c0 for LSTMs) and returns its final state, so

  * truncated BPTT (chunks of k steps) runs the chunks in order, feeding each chunk's final
    state into the next one as a value (the gradient stops at the boundary) and updating the
    parameters after every chunk (the classic TBPTT(k, k) schedule, Trainer.tbptt_step with
    update_every_chunk=True);
  * full BPTT runs the same model on the whole 1000 steps, one update per batch.

Both train for the same number of epochs on the same sequences; the example prints the test
MSE (whole sequences, state carried from step 0) and wall time of each, and plots both.

    python examples/tbptt_long_sequences.py
    python examples/tbptt_long_sequences.py --k 25 --epochs 20 --cell gru
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

import rnncomp as rc  # noqa: E402
from rnncomp import losses, optim  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402

CELLS = ("rnn", "lstm", "gru")


def sequences(rng: np.random.Generator, n: int, length: int, noise: float = 0.1):
    """n noisy sines of length+1 points; X = first `length`, y = the next value at each step."""
    w = rng.uniform(0.03, 0.15, (n, 1))
    phi = rng.uniform(0, 2 * np.pi, (n, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1))
    t = np.arange(length + 1)
    s = amp * np.sin(w * t + phi) + noise * rng.standard_normal((n, length + 1))
    s = s.astype(np.float32)
    return s[:, :-1, None], s[:, 1:, None]


def build_model(cell: str = "rnn", units: int = 32) -> rc.Model:
    lstm = cell == "lstm"

    def chunk_rnn(X, y, h0, c0=None):
        if cell == "rnn":
            core = rc.BasicRNNCell(units)
        elif cell == "gru":
            core = rc.GRUCell(units, reset_after=True)
        else:
            core = rc.BasicLSTMCell(units)
        proj = rc.OutputProjectionWrapper(core, 1)
        init = rc.LSTMStateTuple(c0, h0) if lstm else h0
        outputs, state = rc.dynamic_rnn(proj, X, initial_state=init)
        out = {"loss": losses.mse(outputs, y), "outputs": outputs}
        if lstm:
            out["c"], out["h"] = state.c, state.h
        else:
            out["h"] = state
        return out

    inputs = {"X": rc.Input((None, None, 1)), "y": rc.Input((None, None, 1)),
              "h0": rc.Input(("B", units))}
    if lstm:
        inputs["c0"] = rc.Input(("B", units))
    return rc.Model(chunk_rnn, inputs, name=f"tbptt_{cell}")


def state_map(cell: str) -> dict[str, str]:
    """Which output feeds which state input at the next chunk."""
    return {"c0": "c", "h0": "h"} if cell == "lstm" else {"h0": "h"}


def zero_state(cell: str, batch: int, units: int) -> dict[str, np.ndarray]:
    return {name: np.zeros((batch, units), np.float32) for name in state_map(cell)}


def train(args, model, backend, X, y, Xte, yte, k: int | None, label: str):
    """Train for args.epochs; k=None is full BPTT. Returns (params, curve, test curve, time)."""
    params = model.init(args.seed)
    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(args.lr),
                      clip_norm=args.clip, backend=backend)
    opt_state = trainer.init(params).opt_state
    rng = np.random.default_rng(args.seed)
    n_batches = -(-len(X) // args.batch_size)
    curve, test_curve, elapsed = [], [], 0.0
    run = C.Runner(backend)
    for epoch in range(args.epochs):
        order = rng.permutation(len(X))
        with C.Timer() as tm:
            for b in C.progress(range(n_batches), args, total=n_batches,
                                desc=f"{label} epoch {epoch + 1}"):
                idx = order[b * args.batch_size:(b + 1) * args.batch_size]
                batch = {"X": X[idx], "y": y[idx]}
                st = zero_state(args.cell, len(idx), args.units)
                if k is None:
                    params, opt_state, loss, _ = trainer.step(params, opt_state, {**batch, **st})
                else:
                    params, opt_state, loss, _, _ = trainer.tbptt_step(
                        params, opt_state, batch, k=k, state=state_map(args.cell),
                        seq_inputs=["X", "y"], initial_state=st, update_every_chunk=True,
                        reduce="mean")
                    loss = loss / -(-X.shape[1] // k)  # mean over chunks, comparable to full
                curve.append(loss)
        elapsed += tm.seconds
        te = float(run(model, params, X=Xte, y=yte,
                       **zero_state(args.cell, len(Xte), args.units))["loss"])
        test_curve.append((elapsed, te))
        print(f"{label:>10}  epoch {epoch + 1:3d}  train MSE {np.mean(curve[-n_batches:]):.4f}  "
              f"test MSE {te:.4f}  time {elapsed:.1f}s", flush=True)
    return params, curve, test_curve, elapsed


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: 1000-step sequences, 128 training / 32 test sequences, batch 16,\n"
                 "32 tanh units, k=50, 10 epochs each of TBPTT and full BPTT; under a minute on\n"
                 "2 cores. Longer: --epochs 20 --train-size 256 --length 2000.")
    p.add_argument("--cell", choices=CELLS, default="rnn", help="default rnn (tanh BasicRNNCell)")
    p.add_argument("--k", type=int, default=50, help="truncation length in steps (default 50)")
    p.add_argument("--length", type=int, default=1000, help="sequence length (default 1000)")
    p.add_argument("--units", type=int, default=32, help="default 32")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each method (default 10)")
    p.add_argument("--train-size", type=int, default=128, help="training sequences (default 128)")
    p.add_argument("--test-size", type=int, default=32, help="test sequences (default 32)")
    p.add_argument("--batch-size", type=int, default=16, help="default 16")
    p.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (default 0.003)")
    p.add_argument("--clip", type=float, default=5.0, help="global-norm clipping (default 5)")
    p.add_argument("--skip-full", action="store_true", help="train only with truncated BPTT")
    args = C.finish_args(p.parse_args(argv))

    X, y = sequences(np.random.default_rng(args.seed), args.train_size, args.length)
    Xte, yte = sequences(np.random.default_rng(10_000 + args.seed), args.test_size, args.length)
    model = build_model(args.cell, args.units)
    params0 = model.init(args.seed)
    backend = C.probe_backend(args.backend, model, params0, X=X[:2, :8], y=y[:2, :8],
                              **zero_state(args.cell, 2, args.units))
    print(f"task: {args.train_size} train / {args.test_size} test sequences of {args.length} "
          f"steps; model {args.cell} ({args.units} units), backend {backend}")
    naive = float(np.mean((Xte - yte) ** 2))
    print(f"naive last-value predictor: test MSE {naive:.4f}")

    results = {}
    p_k, c_k, t_k, s_k = train(args, model, backend, X, y, Xte, yte, args.k, f"k={args.k}")
    results["tbptt"] = (c_k, t_k, s_k)
    if not args.skip_full:
        _, c_f, t_f, s_f = train(args, model, backend, X, y, Xte, yte, None, "full")
        results["full"] = (c_f, t_f, s_f)
    print(f"truncated BPTT (k={args.k}): test MSE {t_k[-1][1]:.4f} in {s_k:.1f}s "
          f"({len(c_k)} batches, {len(c_k) * -(-args.length // args.k)} updates)")
    if "full" in results:
        print(f"full BPTT ({args.length} steps): test MSE {t_f[-1][1]:.4f} in {s_f:.1f}s "
              f"({len(c_f)} updates)")
    C.result(example="tbptt", cell=args.cell, backend=backend, k=args.k, naive_mse=naive,
             tbptt_test_mse=t_k[-1][1], tbptt_time=s_k,
             full_test_mse=results["full"][1][-1][1] if "full" in results else None,
             full_time=results["full"][2] if "full" in results else None)

    plt = C.pyplot(args)
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        for name, (curve, test_curve, _) in results.items():
            lbl = f"k={args.k}" if name == "tbptt" else f"full ({args.length} steps)"
            ax.plot(*zip(*test_curve), "o-", label=f"{lbl}: test MSE")
        ax.axhline(naive, color="k", linestyle=":", label="naive last-value")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("MSE")
        ax.set_yscale("log")
        ax.set_title("truncated vs full BPTT")
        ax.legend(fontsize=8)
        ax = axes[1]
        out = C.Runner(backend)(model, p_k, X=Xte[:1], y=yte[:1],
                                **zero_state(args.cell, 1, args.units))
        last = min(200, args.length)
        steps = np.arange(args.length - last, args.length)
        ax.plot(steps, yte[0, -last:, 0], "k.", markersize=3, label="target")
        ax.plot(steps, out["outputs"][0, -last:, 0], "r-", label=f"prediction (k={args.k})")
        ax.set_title(f"a test sequence, last {last} steps")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        C.save_figure(fig, args.out / f"tbptt_{args.cell}.png")


if __name__ == "__main__":
    main()
