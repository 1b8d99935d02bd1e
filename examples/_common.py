"""Shared helpers for the examples: command-line options, backend choice (with a fallback to the
reference interpreter while a compiled backend is unavailable), tqdm progress, training steps,
result lines for tests, and optional matplotlib plotting.

Nothing here is needed to use rnncomp; it only keeps the examples short.
"""

from __future__ import annotations

import os

# Threads: rnncomp's own default (rnncomp.get_num_threads(): 1 on machines with <= 2 CPUs,
# $RNNCOMP_NUM_THREADS / $OMP_NUM_THREADS when set) applies to BLAS and the compiled loops.
import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import rnncomp as rc  # noqa: E402

BACKENDS = ("auto", "cpu", "interp", "cuda")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def parser(description: str, default_note: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every example shares.

    `default_note` says what the defaults do and how long they take; it ends the --help text.
    """
    p = argparse.ArgumentParser(
        description=description,
        epilog=default_note,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="where the graphs run: auto (default: rnncomp's default, the compiled "
                        "cpu backend), cpu (Numba), interp (the NumPy reference interpreter), "
                        "cuda (numba-cuda). If cpu/cuda is not available, the example says so "
                        "in one line and uses interp.")
    p.add_argument("--seed", type=int, default=0, help="seed for parameters, data order and "
                                                       "dropout (default 0)")
    p.add_argument("--out", type=Path, default=Path("examples_out"),
                   help="folder for PNG pictures and checkpoints (default ./examples_out)")
    p.add_argument("--no-plot", action="store_true", help="do not draw PNG pictures")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI ranks (needs the mpi extra): launch "
                        "with `mpiexec -n N python examples/... --distributed`; every rank "
                        "computes its share of each batch, rank 0 prints, plots and saves")
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Create the output folder and settle the backend (with its one-line notice if needed).
    With --distributed: start MPI; ranks other than 0 print, plot and draw bars nothing."""
    args.rank, args.size = 0, 1
    if getattr(args, "distributed", False):
        from rnncomp.train import distributed as dist

        dist.init()
        args.rank, args.size = dist.rank(), dist.size()
        if args.rank != 0:
            args.no_plot = args.no_progress = True
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        else:
            print(f"distributed: {args.size} MPI rank(s); each step's batch is split "
                  f"among them", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    args.backend = resolve_backend(args.backend)
    return args


def distributed(args: argparse.Namespace) -> str | None:
    """The Trainer's `distributed` argument for these options ("mpi" or None)."""
    return "mpi" if getattr(args, "distributed", False) else None


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------
_notified: set[str] = set()


def notice(msg: str) -> None:
    """One line on stdout, printed once per distinct message."""
    if msg not in _notified:
        _notified.add(msg)
        print(f"note: {msg}", flush=True)


def resolve_backend(name: str) -> str:
    """The backend to use for `name`: itself when available, else "interp" with a notice.
    "auto" is rnncomp's default backend (cpu, or $RNNCOMP_DEFAULT_BACKEND)."""
    from rnncomp.runtime.compiler import default_backend, unavailable_reason

    if name == "auto":
        name = default_backend()
    if name == "interp":
        return name
    reason = unavailable_reason(name)
    if reason is not None and name == "cpu":
        notice(f"backend 'cpu' is not available ({reason}); using the reference interpreter "
               f"(--backend interp) instead")
        return "interp"
    try:
        from rnncomp.runtime.compiler import compile_graph  # noqa: F401
    except ImportError as e:
        notice(f"backend {name!r} is not available in this build ({e}); using the reference "
               f"interpreter (--backend interp) instead")
        return "interp"
    if name == "cuda":
        try:
            from numba import cuda

            ok = cuda.is_available()
        except Exception:  # numba-cuda missing or broken driver
            ok = False
        if not ok:
            notice("backend 'cuda' needs an NVIDIA GPU and numba-cuda; using 'cpu' instead")
            return resolve_backend("cpu")
    return name


class Runner:
    """Runs a model's forward pass and value_and_grad on one backend. If the compiled backend
    refuses a graph (not implemented yet), it says so once and continues on the interpreter,
    so the examples keep working while the backends grow."""

    def __init__(self, backend: str):
        self.backend = backend

    def _fallback(self, e: Exception) -> None:
        notice(f"backend {self.backend!r} could not run this model ({type(e).__name__}: "
               f"{str(e).splitlines()[0] if str(e) else ''}); using the reference interpreter")
        self.backend = "interp"

    def __call__(self, model: rc.Model, params, **kw):
        if self.backend != "interp":
            try:
                return model(params, backend=self.backend, **kw)
            except Exception as e:  # a backend still growing: keep the example usable
                self._fallback(e)
        return model(params, backend="interp", **kw)

    def value_and_grad(self, model: rc.Model, params, **kw):
        if self.backend != "interp":
            try:
                return value_and_grad(model, params, backend=self.backend, **kw)
            except Exception as e:  # a backend still growing: keep the example usable
                self._fallback(e)
        return value_and_grad(model, params, backend="interp", **kw)


def value_and_grad(model: rc.Model, params, **kw):
    """model.value_and_grad if the Model has it, else rnncomp.runtime.grad.value_and_grad."""
    if hasattr(model, "value_and_grad"):
        return model.value_and_grad(params, **kw)
    from rnncomp.runtime.grad import value_and_grad as vg

    return vg(model, params, **kw)


# --------------------------------------------------------------------------------------------
# training pieces
# --------------------------------------------------------------------------------------------
def probe_backend(backend: str, model: rc.Model, params, loss_output: Any = "loss",
                  **inputs) -> str:
    """Run value_and_grad once on `inputs` (a small batch) with `backend`; if the backend cannot
    compile this model yet, say so in one line and return "interp"."""
    if backend == "interp":
        return backend
    try:
        value_and_grad(model, params, output=loss_output, backend=backend, **inputs)
        model(params, backend=backend, **inputs)
    except Exception as e:  # a backend still growing: say so in one line, keep going
        notice(f"backend {backend!r} cannot run this model yet ({type(e).__name__}: "
               f"{str(e).splitlines()[0] if str(e) else ''}); using the reference interpreter")
        return "interp"
    return backend


class Adam:
    """Adam (rnncomp.train.optim) with optional global-norm clipping, as one functional step."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 clip: float | None = None):
        self.opt = _optim().Adam(lr)
        self.state = self.opt.init(params)
        self.clip = clip

    def step(self, params, grads):
        if self.clip:
            grads, _ = _optim().clip_by_global_norm(grads, self.clip)
        params, self.state = self.opt.update(params, grads, self.state)
        return params


def _optim():
    from rnncomp import optim

    return optim


def progress(it: Iterable, args: argparse.Namespace, total: int | None = None,
             desc: str = "", leave: bool = False):
    """A tqdm progress bar on stderr (plain iteration with --no-progress or without tqdm)."""
    if getattr(args, "no_progress", False):
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, leave=leave, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def result(**values: Any) -> None:
    """The machine-readable summary line the tests read: `result: {json}`."""
    print("result: " + json.dumps(values, sort_keys=True, default=float), flush=True)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def pyplot(args: argparse.Namespace):
    """matplotlib.pyplot on the Agg backend, or None (with a notice) if plots are off/missing."""
    if getattr(args, "no_plot", False):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        notice("matplotlib is not installed: skipping the PNG pictures "
               "(pip install matplotlib to get them)")
        return None
    return plt


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"saved {path}", flush=True)


def cpu_count_note() -> str:
    return f"{os.cpu_count()} CPU cores"
