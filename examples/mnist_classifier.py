"""MNIST rows as sequences (seed workflow 3, and 6 for the other cells).

Each 28x28 digit is read as 28 time steps of 28 pixels (scaled to [0, 1]); a recurrent layer of
150 units runs over the rows, a dense layer on its final state h gives 10 logits, and the model
trains with softmax cross-entropy and Adam (lr 0.001, batch 150), as in the book's chapter 14.

    python examples/mnist_classifier.py                     # basic RNN, 5 epochs
    python examples/mnist_classifier.py --cell lstm --epochs 30
    python examples/mnist_classifier.py --data ~/mnist      # full MNIST / Fashion-MNIST folder
    mpiexec -n 2 python examples/mnist_classifier.py --distributed   # data-parallel, 2 ranks
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

import rnncomp as rc  # noqa: E402
from rnncomp import layers, losses, optim  # noqa: E402
from rnncomp.train.data import batches, default_mnist_dir, load_mnist  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402

CELLS = ("rnn", "lstm", "peephole", "gru")


def make_cell(kind: str, units: int, activation: str = "tanh") -> rc.RNNCell:
    """The recurrent cell by name: the book's cells, with TF1 names."""
    if kind == "rnn":
        return rc.BasicRNNCell(units, activation=activation)
    if kind == "lstm":
        return rc.BasicLSTMCell(units)
    if kind == "peephole":
        return rc.LSTMCell(units, use_peepholes=True)
    if kind == "gru":
        return rc.GRUCell(units, reset_after=True)
    raise ValueError(f"cell: expected one of {CELLS}, received {kind!r}")


def final_h(state):
    """The output part of a final state: h of an LSTMStateTuple, the state itself otherwise."""
    return state.h if isinstance(state, rc.LSTMStateTuple) else state


def build_model(cell: str = "rnn", units: int = 150, n_classes: int = 10,
                rows: int = 28, cols: int = 28) -> rc.Model:
    def mnist_rnn(X, y):
        _, state = rc.dynamic_rnn(make_cell(cell, units), X)
        logits = layers.dense(final_h(state), n_classes, name="logits")
        loss = losses.sparse_softmax_cross_entropy(labels=y, logits=logits)
        return {"loss": loss, "logits": logits}

    return rc.Model(mnist_rnn, {"X": rc.Input((None, rows, cols)),
                                "y": rc.Input((None,), "i64")}, name=f"mnist_{cell}")


def load(data_dir, train_size: int | None, test_size: int | None):
    folder = Path(data_dir) if data_dir else default_mnist_dir()
    if folder is None:
        sys.exit("error: no MNIST data found (the mnist-10k copy shipped in "
                 "rnncomp/train/datasets is missing from this installation): pass --data DIR "
                 "(a folder with the four standard MNIST files) or set RNNCOMP_MNIST_DIR")
    Xtr, ytr = load_mnist(folder, "train")
    Xte, yte = load_mnist(folder, "test")
    Xtr, ytr = Xtr[:train_size], ytr[:train_size]
    Xte, yte = Xte[:test_size], yte[:test_size]
    scale = np.float32(1 / 255)
    return (folder, Xtr.astype(np.float32) * scale, ytr.astype(np.int64),
            Xte.astype(np.float32) * scale, yte.astype(np.int64))


def predict(run: C.Runner, model, params, X, batch=1000):
    return np.concatenate([run(model, params, X=X[i:i + batch],
                               y=np.zeros(len(X[i:i + batch]), np.int64))["logits"]
                           for i in range(0, len(X), batch)])


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: basic RNN, 5 epochs on mnist-10k (8000 train / 2000 test digits);\n"
                 "measured on 2 cores with --backend cpu: about 1.3 s per epoch for the basic "
                 "RNN,\n4-5 s for LSTM and GRU, 7 s for the peephole LSTM, plus the first "
                 "run's compilation\n(up to a minute; cached on disk afterwards).\nFull-size runs: --epochs 30 (bars: basic RNN >= 92%, "
                 "LSTM >= 95% on mnist-10k), --data DIR\nfor full MNIST (60000/10000) or "
                 "Fashion-MNIST.")
    p.add_argument("--cell", choices=CELLS, default="rnn", help="recurrent cell (default rnn: "
                   "BasicRNNCell; gru is GRUCell(reset_after=True))")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    p.add_argument("--units", type=int, default=150, help="recurrent units (default 150)")
    p.add_argument("--batch-size", type=int, default=150, help="default 150")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    p.add_argument("--data", default=None, help="MNIST-format folder: full MNIST, or "
                   "Fashion-MNIST (Debian: apt-get install dataset-fashion-mnist, then --data "
                   "/usr/share/datasets/fashion-mnist) (default: $RNNCOMP_MNIST_DIR, else the "
                   "mnist-10k subset shipped in rnncomp/train/datasets)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training "
                   "digits")
    p.add_argument("--test-size", type=int, default=None, help="use only the first N test digits")
    args = C.finish_args(p.parse_args(argv))

    folder, Xtr, ytr, Xte, yte = load(args.data, args.train_size, args.test_size)
    print(f"data: {folder}: {len(Xtr)} train, {len(Xte)} test digits of "
          f"{Xtr.shape[1]}x{Xtr.shape[2]}")
    model = build_model(args.cell, args.units, int(max(ytr.max(), yte.max())) + 1,
                        Xtr.shape[1], Xtr.shape[2])
    params = model.init(args.seed)
    nparams = sum(v.size for v in params.values())
    backend = C.probe_backend(args.backend, model, params, X=Xtr[:4], y=ytr[:4])
    run = C.Runner(backend)
    print(f"model: {args.cell}, {args.units} units, {nparams} parameters, backend {backend}")

    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(args.lr), backend=backend,
                      distributed=C.distributed(args))

    def epoch_batches(epoch, rng):
        it = batches((Xtr, ytr), args.batch_size, shuffle=True, rng=rng)
        n = -(-len(Xtr) // args.batch_size)
        for xb, yb in C.progress(it, args, total=n, desc=f"epoch {epoch + 1}"):
            yield {"X": xb, "y": yb}

    def evaluate(params):
        if args.rank != 0:  # distributed: rank 0 evaluates (every rank holds the same params)
            return {"test_acc": float("nan")}
        return {"test_acc": losses.accuracy(predict(run, model, params, Xte), yte)}

    def report(state, row):
        print(f"epoch {row['epoch']:3d}  train loss {row['loss']:.4f}  test accuracy "
              f"{row['test_acc']:.4f}  epoch time {row['time']:.1f}s", flush=True)

    hist = trainer.fit(params, epoch_batches, args.epochs, progress=False, eval_fn=evaluate,
                       seed=args.seed, on_epoch_end=report)
    params = hist.params
    accs = hist.metric("test_acc")
    times = hist.metric("time")
    print(f"final test accuracy {accs[-1]:.4f} (best {max(accs):.4f}), mean epoch time "
          f"{np.mean(times):.1f}s, last epoch {len(Xtr) / times[-1]:.0f} images/s")
    C.result(example="mnist", cell=args.cell, backend=backend, test_accuracy=accs[-1],
             best_test_accuracy=max(accs), train_loss=hist.metric("loss"), test_acc=accs,
             epoch_time=float(np.mean(times)), epoch_times=times, ranks=args.size,
             images_per_s=len(Xtr) / times[-1])

    plt = C.pyplot(args)
    if plt is not None:
        logits = predict(run, model, params, Xte[:16])
        pred = logits.argmax(-1)
        fig = plt.figure(figsize=(11, 4.5))
        gs = fig.add_gridspec(4, 8)
        ax = fig.add_subplot(gs[:, :4])
        ep = np.arange(1, len(hist) + 1)
        ax.plot(ep, hist.metric("loss"), "o-", label="train loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        ax2 = ax.twinx()
        ax2.plot(ep, np.array(accs) * 100, "s-", color="C1", label="test accuracy")
        ax2.set_ylabel("test accuracy (%)")
        ax.set_title(f"{args.cell}: learning curves")
        ax.legend(loc="center left", fontsize=8)
        ax2.legend(loc="center right", fontsize=8)
        for k in range(16):
            a = fig.add_subplot(gs[k // 4, 4 + k % 4])
            a.imshow(Xte[k], cmap="gray_r")
            ok = pred[k] == yte[k]
            a.set_title(f"{pred[k]}" + ("" if ok else f" (true {yte[k]})"),
                        color="green" if ok else "red", fontsize=8)
            a.axis("off")
        C.save_figure(fig, args.out / f"mnist_{args.cell}.png")


if __name__ == "__main__":
    main()
