"""Deep RNN: 3 stacked layers with dropout in training only (seed workflow 5).

MultiRNNCell([DropoutWrapper(cell, input_keep_prob=0.8) for each of 3 layers]) wrapped in
OutputProjectionWrapper(..., 1), trained on the time series task of time_series.py. (The first
layer's input, the raw one-feature series, is dropped only with --drop-raw-input, as the book
does; by default dropout acts between layers.) Dropout is
active only when the model runs with training=True; the mode is a run-time argument of one graph,
not a second graph. The example checks and prints both facts:

  * inference is deterministic: two runs (even with different seeds) give identical outputs;
  * training is not: two training-mode runs with different seeds give different outputs
    (and the same seed gives the same outputs, so training runs are reproducible).

    python examples/deep_rnn.py
    python examples/deep_rnn.py --cell gru --keep-prob 0.8 --iterations 3000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from time_series import CELLS, make_cell, naive_mse, windows  # noqa: E402

import rnncomp as rc  # noqa: E402
from rnncomp import losses, optim  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402


def build_model(cell: str = "rnn", units: int = 100, layers: int = 3,
                keep_prob: float = 0.8, drop_raw_input: bool = False) -> rc.Model:
    """Every layer is a DropoutWrapper(cell, input_keep_prob); the first layer's input is the raw
    one-feature series, which is only dropped with drop_raw_input=True (the book's setting):
    zeroing half of the values the model must extrapolate from mostly teaches it noise."""

    def deep_rnn(X, y):
        cells = [rc.DropoutWrapper(make_cell(cell, units),
                                   input_keep_prob=keep_prob if k or drop_raw_input else 1.0)
                 for k in range(layers)]
        stack = rc.OutputProjectionWrapper(rc.MultiRNNCell(cells), 1)
        outputs, _ = rc.dynamic_rnn(stack, X)
        return {"loss": losses.mse(outputs, y), "outputs": outputs}

    return rc.Model(deep_rnn, {"X": rc.Input((None, None, 1)), "y": rc.Input((None, None, 1))},
                    name=f"deep_{cell}")


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: 3 layers of 100 ReLU units, input_keep_prob 0.8, 1000 iterations of\n"
                 "batch 50 on the time series task; about a minute on 2 cores.\n"
                 "Longer runs: --iterations 5000; --keep-prob 1.0 trains the same stack "
                 "without dropout.")
    p.add_argument("--cell", choices=CELLS, default="rnn", help="default rnn (ReLU BasicRNNCell)")
    p.add_argument("--layers", type=int, default=3, help="stacked layers (default 3)")
    p.add_argument("--units", type=int, default=100, help="units per layer (default 100)")
    p.add_argument("--keep-prob", type=float, default=0.8,
                   help="DropoutWrapper input_keep_prob (default 0.8; the book's 0.5 works but "
                        "leaves inference with ReLU units far worse than the training-mode fit)")
    p.add_argument("--drop-raw-input", action="store_true",
                   help="also drop the first layer's input, the raw series (the book's setting)")
    p.add_argument("--iterations", type=int, default=1000, help="training steps (default 1000)")
    p.add_argument("--steps", type=int, default=20, help="window length (default 20)")
    p.add_argument("--batch-size", type=int, default=50, help="default 50")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    p.add_argument("--test-size", type=int, default=500, help="held-out windows (default 500)")
    args = C.finish_args(p.parse_args(argv))

    model = build_model(args.cell, args.units, args.layers, args.keep_prob, args.drop_raw_input)
    params = model.init(args.seed)
    rng = np.random.default_rng(args.seed)
    Xte, yte = windows(np.random.default_rng(10_000 + args.seed), args.test_size, args.steps)
    backend = C.probe_backend(args.backend, model, params, X=Xte[:2], y=yte[:2])
    run = C.Runner(backend)
    print(f"model: {args.layers} x {args.cell} ({args.units} units), input_keep_prob "
          f"{args.keep_prob} ({'all layers' if args.drop_raw_input else 'layers 2+'}), {sum(v.size for v in params.values())} parameters, backend "
          f"{backend}")

    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(args.lr), backend=backend,
                      training=True)
    opt_state = trainer.init(params).opt_state
    curve, test_curve = [], []
    with C.Timer() as tm:
        for it in C.progress(range(args.iterations), args, total=args.iterations,
                             desc="training"):
            X, y = windows(rng, args.batch_size, args.steps)
            # training=True inside trainer.step; the dropout masks come from the step's seed
            params, opt_state, loss, _ = trainer.step(params, opt_state, {"X": X, "y": y},
                                                      seed=args.seed * 1_000_003 + it)
            curve.append(loss)
            if (it + 1) % max(1, args.iterations // 5) == 0 or it + 1 == args.iterations:
                te = float(run(model, params, X=Xte, y=yte)["loss"])
                test_curve.append((it + 1, te))
                print(f"iteration {it + 1:5d}  train MSE (with dropout) {np.mean(curve[-100:]):.4f}"
                      f"  test MSE (inference) {te:.4f}", flush=True)

    # the two facts
    Xs, ys = Xte[:8], yte[:8]
    inf_a = run(model, params, X=Xs, y=ys, training=False, seed=1)["outputs"]
    inf_b = run(model, params, X=Xs, y=ys, training=False, seed=2)["outputs"]
    tr_1 = run(model, params, X=Xs, y=ys, training=True, seed=1)["outputs"]
    tr_2 = run(model, params, X=Xs, y=ys, training=True, seed=2)["outputs"]
    tr_1b = run(model, params, X=Xs, y=ys, training=True, seed=1)["outputs"]
    inf_det = bool(np.array_equal(inf_a, inf_b))
    tr_diff = float(np.max(np.abs(tr_1 - tr_2)))
    tr_repro = bool(np.array_equal(tr_1, tr_1b))
    print(f"inference is deterministic: {inf_det} (two runs, seeds 1 and 2, max |difference| "
          f"{float(np.max(np.abs(inf_a - inf_b))):.3g})")
    print(f"training differs between seeds: {tr_diff > 0} (seeds 1 and 2, max |difference| "
          f"{tr_diff:.3g}); same seed reproduces: {tr_repro}")
    test_mse = test_curve[-1][1] if test_curve else float(run(model, params, X=Xte, y=yte)["loss"])
    naive = naive_mse(Xte, yte)
    print(f"test MSE {test_mse:.4f} (naive last-value predictor {naive:.4f}); training time "
          f"{tm.seconds:.1f}s")
    C.result(example="deep_rnn", cell=args.cell, backend=backend, inference_deterministic=inf_det,
             training_differs=tr_diff > 0, training_reproducible=tr_repro, test_mse=test_mse,
             naive_mse=naive, train_time=tm.seconds,
             time_per_100_iterations=tm.seconds / max(args.iterations, 1) * 100)

    plt = C.pyplot(args)
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        ax.semilogy(np.arange(1, len(curve) + 1), curve, alpha=0.4, label="train (dropout on)")
        if test_curve:
            ax.semilogy(*zip(*test_curve), "o-", label="test (inference)")
        ax.axhline(naive, color="k", linestyle=":", label="naive last-value")
        ax.set_xlabel("iteration")
        ax.set_ylabel("MSE")
        ax.set_title(f"{args.layers}-layer {args.cell}, keep_prob {args.keep_prob}")
        ax.legend(fontsize=8)
        ax = axes[1]
        t = np.arange(args.steps)
        ax.plot(t, ys[0, :, 0], "k*", label="target")
        ax.plot(t, inf_a[0, :, 0], "b-", linewidth=3, alpha=0.5, label="inference, seed 1")
        ax.plot(t, inf_b[0, :, 0], "c--", label="inference, seed 2 (identical)")
        ax.plot(t, tr_1[0, :, 0], "r-", alpha=0.7, label="training mode, seed 1")
        ax.plot(t, tr_2[0, :, 0], "m-", alpha=0.7, label="training mode, seed 2")
        ax.set_title("dropout only in training mode")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        C.save_figure(fig, args.out / f"deep_rnn_{args.cell}.png")


if __name__ == "__main__":
    main()
