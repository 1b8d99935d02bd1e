"""Time series prediction and creative generation (seed workflow 4, and 6).

The book's series t*sin(t)/3 + 2*sin(5t), cut into windows of 20 steps; the target is the same
window shifted one step ahead. 100 ReLU units (BasicRNNCell(100, activation="relu")) wrapped in
OutputProjectionWrapper(cell, 1) predict the next value at every step; MSE loss, Adam.
Then the model generates 300 new steps by feeding its own predictions back in (each time it
reads the last 20 values and appends its prediction for the next one).

    python examples/time_series.py                   # 1500 iterations, as in the book
    python examples/time_series.py --cell lstm --iterations 3000
    mpiexec -n 2 python examples/time_series.py --distributed   # data-parallel, 2 ranks
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

CELLS = ("rnn", "lstm", "peephole", "gru")
T_MIN, T_MAX, RESOLUTION = 0.0, 30.0, 0.1


def time_series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def windows(rng: np.random.Generator, batch_size: int, n_steps: int):
    """The book's next_batch: random windows of n_steps+1 points; X = first n, y = last n."""
    t0 = rng.random((batch_size, 1)) * (T_MAX - T_MIN - n_steps * RESOLUTION)
    ts = t0 + np.arange(0.0, n_steps + 1) * RESOLUTION
    ys = time_series(ts).astype(np.float32)
    return ys[:, :-1, None], ys[:, 1:, None]


def make_cell(kind: str, units: int, activation: str = "relu") -> rc.RNNCell:
    if kind == "rnn":
        return rc.BasicRNNCell(units, activation=activation)
    if kind == "lstm":
        return rc.BasicLSTMCell(units)
    if kind == "peephole":
        return rc.LSTMCell(units, use_peepholes=True)
    if kind == "gru":
        return rc.GRUCell(units)  # TF1's GRUCell (reset before the recurrent matmul)
    raise ValueError(f"cell: expected one of {CELLS}, received {kind!r}")


def build_model(cell: str = "rnn", units: int = 100) -> rc.Model:
    def series_rnn(X, y):
        proj = rc.OutputProjectionWrapper(make_cell(cell, units), 1)
        outputs, _ = rc.dynamic_rnn(proj, X)
        return {"loss": losses.mse(outputs, y), "outputs": outputs}

    return rc.Model(series_rnn, {"X": rc.Input((None, None, 1)), "y": rc.Input((None, None, 1))},
                    name=f"series_{cell}")


def naive_mse(X, y) -> float:
    """MSE of predicting that the next value equals the current one."""
    return float(np.mean((X - y) ** 2))


def generate(run, model, params, seed_seq: np.ndarray, n_steps: int, n_new: int) -> np.ndarray:
    """Creative generation: repeatedly predict the next value from the last n_steps values."""
    seq = list(np.asarray(seed_seq, np.float32))
    dummy = np.zeros((1, n_steps, 1), np.float32)
    for _ in range(n_new):
        X = np.array(seq[-n_steps:], np.float32).reshape(1, n_steps, 1)
        out = run(model, params, X=X, y=dummy)["outputs"]
        seq.append(float(out[0, -1, 0]))
    return np.array(seq, np.float32)


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: basic ReLU RNN, 1500 iterations of batch 50 (the book's setting),\n"
                 "then 300 generated steps; well under a minute on 2 cores.\n"
                 "Longer runs: --iterations 5000, --cell lstm|peephole|gru.")
    p.add_argument("--cell", choices=CELLS, default="rnn", help="default rnn (ReLU BasicRNNCell)")
    p.add_argument("--iterations", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--units", type=int, default=100, help="default 100")
    p.add_argument("--steps", type=int, default=20, help="window length (default 20)")
    p.add_argument("--batch-size", type=int, default=50, help="default 50")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    p.add_argument("--generate", type=int, default=300, help="steps to generate (default 300)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out windows (default 1000)")
    args = C.finish_args(p.parse_args(argv))

    n = args.steps
    model = build_model(args.cell, args.units)
    params = model.init(args.seed)
    rng = np.random.default_rng(args.seed)
    Xte, yte = windows(np.random.default_rng(10_000 + args.seed), args.test_size, n)
    backend = C.probe_backend(args.backend, model, params, X=Xte[:2], y=yte[:2])
    run = C.Runner(backend)
    print(f"model: {args.cell} ({args.units} units) + output projection, "
          f"{sum(v.size for v in params.values())} parameters, backend {backend}")

    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(args.lr), backend=backend,
                      distributed=C.distributed(args))
    state = trainer.init(params)  # distributed: rank 0's parameters on every rank
    params, opt_state = state.params, state.opt_state
    curve = []
    with C.Timer() as tm:
        bar = C.progress(range(args.iterations), args, total=args.iterations, desc="training")
        for it in bar:
            X, y = windows(rng, args.batch_size, n)  # distributed: each rank its rows
            params, opt_state, loss, _ = trainer.step(params, opt_state, {"X": X, "y": y})
            curve.append(loss)
            if (it + 1) % max(1, args.iterations // 5) == 0 or it + 1 == args.iterations:
                print(f"iteration {it + 1:5d}  train MSE {np.mean(curve[-100:]):.5f}", flush=True)
    test_mse = float(run(model, params, X=Xte, y=yte)["loss"])
    naive = naive_mse(Xte, yte)
    print(f"test MSE {test_mse:.5f}  (naive last-value predictor {naive:.5f}, ratio "
          f"{test_mse / naive:.3f})  training time {tm.seconds:.1f}s")

    # the book's instance: the window starting at t = 12.2
    t_inst = np.linspace(12.2, 12.2 + RESOLUTION * (n + 1), n + 1)
    X_inst = time_series(t_inst[:-1]).astype(np.float32).reshape(1, n, 1)
    y_inst = time_series(t_inst[1:]).astype(np.float32).reshape(1, n, 1)
    pred_inst = run(model, params, X=X_inst, y=y_inst)["outputs"][0, :, 0]

    # creative generation from zeros (as in the book) and from a real window
    gen_zero = generate(run, model, params, np.zeros(n), n, args.generate)
    seed_seq = time_series(T_MIN + np.arange(n) * RESOLUTION)
    gen_real = generate(run, model, params, seed_seq, n, args.generate)
    print(f"generated {args.generate} steps: from zeros range [{gen_zero.min():.2f}, "
          f"{gen_zero.max():.2f}], from the series' first {n} values range "
          f"[{gen_real.min():.2f}, {gen_real.max():.2f}]")
    C.result(example="time_series", cell=args.cell, backend=backend, test_mse=test_mse,
             naive_mse=naive, ratio=test_mse / naive, train_time=tm.seconds,
             time_per_100_iterations=tm.seconds / max(args.iterations, 1) * 100,
             generated=len(gen_real) - n)

    plt = C.pyplot(args)
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        t = np.linspace(T_MIN, T_MAX, int((T_MAX - T_MIN) / RESOLUTION))
        ax = axes[0]
        ax.plot(t, time_series(t), label="t·sin(t)/3 + 2·sin(5t)")
        ax.plot(t_inst[:-1], time_series(t_inst[:-1]), "b-", linewidth=3,
                label="a training instance")
        ax.set_title("the time series")
        ax.set_xlabel("time")
        ax.legend(fontsize=8)
        ax = axes[1]
        ax.plot(t_inst[:-1], X_inst[0, :, 0], "bo", markersize=8, alpha=0.4, label="instance")
        ax.plot(t_inst[1:], y_inst[0, :, 0], "w*", markersize=10, markeredgecolor="k",
                label="target")
        ax.plot(t_inst[1:], pred_inst, "r.", markersize=10, label="prediction")
        ax.set_title(f"fit ({args.cell}), test MSE {test_mse:.4f}")
        ax.set_xlabel("time")
        ax.legend(fontsize=8)
        ax = axes[2]
        steps = np.arange(len(gen_real))
        ax.plot(steps, gen_zero, "b-", label="generated, seeded with zeros")
        ax.plot(steps, gen_real, "r-", label="generated, seeded with the series")
        ax.plot(steps[:n], seed_seq, "k.", label="seed values")
        ax.plot(steps, time_series(T_MIN + steps * RESOLUTION), "k:", alpha=0.5,
                label="true continuation")
        ax.set_title(f"creative generation, {args.generate} steps")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        C.save_figure(fig, args.out / f"time_series_{args.cell}.png")


if __name__ == "__main__":
    main()
