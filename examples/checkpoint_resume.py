"""Checkpoints: train, save, restore in a new process, continue, and match bit for bit.

The model is the deep RNN of deep_rnn.py (stacked cells with dropout, so the dropout masks are
part of what must be reproduced) on the time series task. The example

  1. trains uninterrupted for --epochs epochs (in this process);
  2. trains again from the same start for --epochs/2 epochs, saving a checkpoint after each epoch
     (Trainer.fit(checkpoint_path=...): parameters, Adam state, epoch, step counter and the
     data-shuffling RNG, written atomically with rnncomp.train.checkpoint);
  3. starts a NEW Python process (this script with --resume CHECKPOINT) that restores the
     checkpoint (Trainer.restore) and continues to --epochs epochs, then saves its parameters;
  4. compares the resumed parameters with the uninterrupted ones: they must be identical, bit
     for bit (np.array_equal on every array, and the same checkpoint file hash of parameters).

    python examples/checkpoint_resume.py
    python examples/checkpoint_resume.py --epochs 10 --cell gru
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
from deep_rnn import build_model  # noqa: E402
from time_series import CELLS, windows  # noqa: E402

from rnncomp import checkpoint, optim  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402


def make_trainer(args, backend):
    model = build_model(args.cell, args.units, args.layers, args.keep_prob)
    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(args.lr), clip_norm=5.0,
                      backend=backend)
    return model, trainer


def data_fn(args):
    """The batches of one epoch, drawn from the TrainState's generator (so a restored run draws
    exactly the batches the uninterrupted run drew)."""
    def epoch_batches(epoch, rng):
        for _ in range(args.batches):
            X, y = windows(rng, args.batch_size, args.steps)
            yield {"X": X, "y": y}
    return epoch_batches


def report(tag):
    def on_epoch_end(state, row):
        print(f"[{tag}] epoch {row['epoch']}  loss {row['loss']:.5f}  step {state.step}",
              flush=True)
    return on_epoch_end


def resume(args):
    """The child process: restore, continue to args.epochs, save the final parameters."""
    model, trainer = make_trainer(args, args.backend)
    state = trainer.restore(str(args.resume))
    print(f"[resumed] process restored {args.resume.name}: epoch {state.epoch}, step "
          f"{state.step}", flush=True)
    hist = trainer.fit(state, data_fn(args), args.epochs, progress=not args.no_progress,
                       seed=args.seed, on_epoch_end=report("resumed"))
    checkpoint.save(args.out / "resumed_final.npz", hist.params, hist.opt_state)


def main(argv=None):
    p = C.parser(__doc__.split("\n\n")[0],
                 "Defaults: 2 layers of 50 ReLU units with dropout, 6 epochs of 20 batches;\n"
                 "well under a minute on 2 cores (the child process adds its start-up time).")
    p.add_argument("--cell", choices=CELLS, default="rnn", help="default rnn")
    p.add_argument("--layers", type=int, default=2, help="default 2")
    p.add_argument("--units", type=int, default=50, help="default 50")
    p.add_argument("--keep-prob", type=float, default=0.8, help="dropout keep prob (default 0.8)")
    p.add_argument("--epochs", type=int, default=6, help="total epochs (default 6); the "
                   "interrupted run stops after half of them")
    p.add_argument("--batches", type=int, default=20, help="batches per epoch (default 20)")
    p.add_argument("--batch-size", type=int, default=50, help="default 50")
    p.add_argument("--steps", type=int, default=20, help="window length (default 20)")
    p.add_argument("--lr", type=float, default=0.001, help="default 0.001")
    p.add_argument("--resume", type=Path, default=None,
                   help="(used by the example itself) restore this checkpoint and continue")
    args = p.parse_args(argv)
    if args.resume is not None:  # the child: the parent already settled the backend
        args.out.mkdir(parents=True, exist_ok=True)
        return resume(args)
    args = C.finish_args(args)

    model, _ = make_trainer(args, args.backend)
    params0 = model.init(args.seed)
    Xp, yp = windows(np.random.default_rng(0), 2, args.steps)
    backend = C.probe_backend(args.backend, model, params0, X=Xp, y=yp)
    args.backend = backend
    _, trainer = make_trainer(args, backend)
    print(f"model: {args.layers} x {args.cell} ({args.units} units) with dropout, backend "
          f"{backend}")

    # 1. uninterrupted
    with C.Timer() as t_full:
        full = trainer.fit(params0, data_fn(args), args.epochs, progress=not args.no_progress,
                           seed=args.seed, on_epoch_end=report("uninterrupted"))
    # 2. interrupted: half the epochs, checkpoint after each epoch
    ckpt = args.out / "checkpoint.npz"
    half = args.epochs // 2
    trainer.fit(params0, data_fn(args), half, progress=not args.no_progress, seed=args.seed,
                checkpoint_path=str(ckpt), on_epoch_end=report("interrupted"))
    print(f"saved {ckpt} after epoch {half}; continuing in a new process", flush=True)
    # 3. a new process restores and continues
    cmd = [sys.executable, str(Path(__file__).resolve()), "--resume", str(ckpt),
           "--backend", backend, "--seed", str(args.seed), "--out", str(args.out),
           "--cell", args.cell, "--layers", str(args.layers), "--units", str(args.units),
           "--keep-prob", str(args.keep_prob), "--epochs", str(args.epochs),
           "--batches", str(args.batches), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--lr", str(args.lr), "--no-plot"]
    if args.no_progress:
        cmd.append("--no-progress")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"error: the resumed process failed with exit code {proc.returncode}")
    # 4. compare
    resumed = checkpoint.load(args.out / "resumed_final.npz")
    same = {n: bool(np.array_equal(full.params[n], resumed.params[n])) for n in full.params}
    same_opt = all(np.array_equal(full.opt_state[n], resumed.opt_state[n])
                   for n in full.opt_state)
    max_diff = max(float(np.max(np.abs(full.params[n] - resumed.params[n]))) for n in same)
    ok = all(same.values()) and same_opt
    print(f"resumed run matches the uninterrupted run bit for bit: {ok} ({sum(same.values())}"
          f"/{len(same)} parameters identical, optimizer state identical: {same_opt}, max "
          f"|difference| {max_diff:.3g})")
    C.result(example="checkpoint_resume", backend=backend, bit_identical=ok,
             params_identical=sum(same.values()), params_total=len(same),
             opt_state_identical=same_opt, uninterrupted_time=t_full.seconds,
             final_loss=full[-1]["loss"])

    plt = C.pyplot(args)
    if plt is not None:
        import re

        resumed_losses = [float(m) for m in re.findall(r"\[resumed\] epoch \d+  loss (\S+)",
                                                       proc.stdout)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ep = np.arange(1, args.epochs + 1)
        ax.plot(ep, full.metric("loss"), "o-", markersize=10, alpha=0.5, label="uninterrupted")
        ax.plot(ep[:half], full.metric("loss")[:half], "k.", label="interrupted (process 1)")
        ax.plot(ep[half:half + len(resumed_losses)], resumed_losses, "r*",
                label="resumed (process 2)")
        ax.axvline(half + 0.5, color="gray", linestyle=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title("save, restore in a new process, continue: " +
                     ("identical" if ok else "DIFFERENT"))
        ax.legend(fontsize=8)
        C.save_figure(fig, args.out / "checkpoint_resume.png")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
