"""Training time per epoch of each example's model: rnncomp vs the same model in PyTorch.

Same data shapes, same hyperparameters (Adam, batch sizes, units), measured in one run on this
machine. PyTorch runs with torch.set_num_threads(1) and (2). rnncomp runs with the backend given
(--backend cpu by default; if the compiled backend cannot run a model the row says "interp").

An "epoch" is what the example calls one: MNIST 8000 digits in batches of 150 (54 steps); time
series and deep RNN 100 iterations of batch 50; TBPTT 128 sequences of 1000 steps in batches of
16, k=50 (160 updates); encoder-decoder 100 iterations of batch 64. Each row times --steps
training steps after 2 warm-up steps (compilation excluded) and scales to one epoch.

    python bench/examples_vs_torch.py                 # all models
    python bench/examples_vs_torch.py --only mnist_lstm time_series --steps 10
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import _common as C  # noqa: E402
import deep_rnn  # noqa: E402
import encoder_decoder as ED  # noqa: E402
import mnist_classifier  # noqa: E402
import tbptt_long_sequences as TB  # noqa: E402
import time_series  # noqa: E402

from rnncomp import optim  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402


# ----------------------------------------------------------------------------------------------
# rnncomp side: (model, list of batches, steps per epoch, step function)
# ----------------------------------------------------------------------------------------------
def rc_case(name: str, rng):
    if name.startswith("mnist_"):
        cell = name.split("_", 1)[1]
        m = mnist_classifier.build_model(cell)
        X = rng.random((150, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 150)
        return m, {"X": X, "y": y}, 54, None
    if name == "time_series":
        X, y = time_series.windows(rng, 50, 20)
        return time_series.build_model("rnn"), {"X": X, "y": y}, 100, None
    if name == "deep_rnn":
        X, y = time_series.windows(rng, 50, 20)
        return deep_rnn.build_model("rnn"), {"X": X, "y": y}, 100, None
    if name == "tbptt":
        X, y = TB.sequences(rng, 16, 1000)
        return TB.build_model("rnn", 32), {"X": X, "y": y}, 8, "tbptt"
    if name == "encoder_decoder":
        pairs, _ = ED.make_dataset(rng, 64)
        vocab = ED.source_vocab()
        arr = ED.encode(pairs, {w: i for i, w in enumerate(vocab)}, 9, 11)
        train, _, _ = ED.build_models("gru", len(vocab), 128, 32)
        feed = dict(zip(("src", "src_len", "dec_in", "dec_out", "weights"), arr))
        return train, feed, 100, None
    raise KeyError(name)


def time_rnncomp(name: str, backend: str, steps: int) -> tuple[float, str]:
    rng = np.random.default_rng(0)
    model, batch, per_epoch, kind = rc_case(name, rng)
    params = model.init(0)
    probe = {k: v[:2] for k, v in batch.items()}
    if kind == "tbptt":
        probe = {**{k: v[:, :8] for k, v in probe.items()}, **TB.zero_state("rnn", 2, 32)}
    backend = C.probe_backend(backend, model, params, **probe)
    tr = Trainer(model, loss_output="loss", optimizer=optim.Adam(1e-3), backend=backend)
    opt = tr.init(params).opt_state

    def step(p, o):
        if kind == "tbptt":
            st = TB.zero_state("rnn", 16, 32)
            p, o, *_ = tr.tbptt_step(p, o, batch, k=50, state={"h0": "h"},
                                     seq_inputs=["X", "y"], initial_state=st,
                                     update_every_chunk=True, reduce="mean")
            return p, o
        p, o, *_ = tr.step(p, o, batch)
        return p, o

    for _ in range(2):
        params, opt = step(params, opt)
    t0 = time.perf_counter()
    for _ in range(steps):
        params, opt = step(params, opt)
    return (time.perf_counter() - t0) / steps * per_epoch, backend


# ----------------------------------------------------------------------------------------------
# PyTorch side
# ----------------------------------------------------------------------------------------------
def torch_case(name: str, torch):
    nn = torch.nn
    g = torch.Generator().manual_seed(0)

    class Peephole(nn.Module):
        def __init__(self, i, h):
            super().__init__()
            self.lin = nn.Linear(i + h, 4 * h)
            self.w = nn.Parameter(torch.zeros(3, h))
            self.h = h

        def forward(self, x):
            B, T, _ = x.shape
            h = x.new_zeros(B, self.h)
            c = x.new_zeros(B, self.h)
            for t in range(T):
                z = self.lin(torch.cat([x[:, t], h], 1))
                zi, zj, zf, zo = z.chunk(4, 1)
                i = torch.sigmoid(zi + self.w[0] * c)
                f = torch.sigmoid(zf + 1.0 + self.w[1] * c)
                c = f * c + i * torch.tanh(zj)
                o = torch.sigmoid(zo + self.w[2] * c)
                h = o * torch.tanh(c)
            return h

    class Seq(nn.Module):
        def __init__(self, kind, i, h, out, final_only, layers=1, dropout_keep=1.0,
                     nonlinearity="tanh"):
            super().__init__()
            self.final_only, self.kind = final_only, kind
            if kind == "peephole":
                self.rnn = Peephole(i, h)
            else:
                mk = {"rnn": lambda a: nn.RNN(a, h, batch_first=True, nonlinearity=nonlinearity),
                      "lstm": lambda a: nn.LSTM(a, h, batch_first=True),
                      "gru": lambda a: nn.GRU(a, h, batch_first=True)}[kind]
                self.layers = nn.ModuleList([mk(i if k == 0 else h) for k in range(layers)])
            self.p = 1 - dropout_keep
            self.out = nn.Linear(h, out)

        def forward(self, x):
            if self.kind == "peephole":
                return self.out(self.rnn(x))
            for k, layer in enumerate(self.layers):
                if self.p and k > 0:
                    x = nn.functional.dropout(x, self.p, self.training)
                x, hn = layer(x)
            if self.final_only:
                hn = hn[0] if isinstance(hn, tuple) else hn
                return self.out(hn[-1])
            return self.out(x)

    if name.startswith("mnist_"):
        cell = name.split("_", 1)[1]
        model = Seq(cell, 28, 150, 10, True)
        X = torch.rand(150, 28, 28, generator=g)
        y = torch.randint(0, 10, (150,), generator=g)
        return model, [(X, y)], 54, nn.functional.cross_entropy
    if name in ("time_series", "deep_rnn"):
        layers = 3 if name == "deep_rnn" else 1
        model = Seq("rnn", 1, 100, 1, False, layers=layers,
                    dropout_keep=0.8 if layers > 1 else 1.0, nonlinearity="relu")
        X = torch.randn(50, 20, 1, generator=g)
        return model, [(X, X)], 100, nn.functional.mse_loss
    if name == "tbptt":
        model = Seq("rnn", 1, 32, 1, False)
        X = torch.randn(16, 1000, 1, generator=g)
        return model, [(X[:, s:s + 50], X[:, s:s + 50]) for s in range(0, 1000, 50)], 8, \
            nn.functional.mse_loss
    if name == "encoder_decoder":
        class S2S(nn.Module):
            def __init__(self):
                super().__init__()
                self.se, self.te = nn.Embedding(149, 32), nn.Embedding(14, 32)
                self.enc = nn.GRU(32, 128, batch_first=True)
                self.dec = nn.GRU(32, 128, batch_first=True)
                self.out = nn.Linear(128, 14)

            def forward(self, batch):
                src, dec_in = batch
                _, h = self.enc(self.se(src))
                o, _ = self.dec(self.te(dec_in), h)
                return self.out(o).reshape(-1, 14)

        src = torch.randint(0, 149, (64, 9), generator=g)
        dec = torch.randint(0, 14, (64, 11), generator=g)
        return S2S(), [((src, dec), dec.reshape(-1))], 100, nn.functional.cross_entropy
    raise KeyError(name)


def time_torch(name: str, threads: int, steps: int) -> float:
    import torch

    torch.set_num_threads(threads)
    model, batches, per_epoch, loss_fn = torch_case(name, torch)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        # TBPTT chunks start from zero state here (timing only: the cost is the same)
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * per_epoch


NAMES = ["mnist_rnn", "mnist_lstm", "mnist_peephole", "mnist_gru", "time_series", "deep_rnn",
         "tbptt", "encoder_decoder"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="cpu", choices=C.BACKENDS)
    p.add_argument("--steps", type=int, default=10, help="timed steps per row (default 10)")
    p.add_argument("--only", nargs="*", default=None, choices=NAMES)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    backend = C.resolve_backend(args.backend)
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("note: PyTorch is not installed; only rnncomp is timed")
    print(f"{os.cpu_count()} CPU cores; seconds per epoch (lower is better)")
    print(f"{'model':<16} {'rnncomp':>9} {'backend':>8} {'torch 1t':>9} {'torch 2t':>9}")
    for name in args.only or NAMES:
        t_rc, used = time_rnncomp(name, backend, args.steps)
        t1 = time_torch(name, 1, args.steps) if have_torch else float("nan")
        t2 = time_torch(name, 2, args.steps) if have_torch else float("nan")
        print(f"{name:<16} {t_rc:9.2f} {used:>8} {t1:9.2f} {t2:9.2f}", flush=True)


if __name__ == "__main__":
    main()
