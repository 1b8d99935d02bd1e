"""Data-parallel throughput: the MNIST example's model trained with Trainer(distributed="mpi")
on 1 rank x 1 thread vs 2 ranks x 1 thread (images/s), plus what one gradient allreduce costs.

    python bench/bench_distributed.py                        # 1 and 2 ranks, batch 150 and 600
    python bench/bench_distributed.py --ranks 1 2 4 --batch 150 --epochs 3 --json out.json

The driver launches this file under `mpiexec -n R` (the `mpi` extra's mpiexec, or the one on
PATH) with OMP/OpenBLAS/MKL threads = 1 per rank, once per (ranks, batch), alternating the
configurations `--repeat` times; each worker loads mnist-10k (8000 training digits, 28 rows of
28 pixels), builds the example's BasicRNNCell(150) classifier, compiles it (backend "cpu"),
runs one warm-up epoch and then times `--epochs` epochs. Reported per configuration (median
over epochs and repeats): wall images/s, process CPU ms per 1000 images summed over ranks (the
load-robust cost: on a shared machine wall time inflates, CPU time much less) and the time of
one allreduce_mean of the model's gradients (28 360 float32 = 113 KB), measured alone.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    import mnist_classifier as ex  # the example's model, unchanged

    from rnncomp import optim
    from rnncomp.train import Trainer
    from rnncomp.train import distributed as dist
    from rnncomp.train.data import batches

    dist.init(timeout=600)
    _, Xtr, ytr, _, _ = ex.load(None, args.train_size, 10)
    model = ex.build_model("rnn", 150)
    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(1e-3), backend="cpu",
                      distributed="mpi")
    state = trainer.init(model.init(0))

    def data(epoch, rng):
        for xb, yb in batches((Xtr, ytr), args.batch, shuffle=True, rng=rng):
            yield {"X": xb, "y": yb}

    rows = []
    for e in range(args.epochs + 1):        # epoch 0 is the warm-up (compile, caches)
        dist.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        hist = trainer.fit(state, data, epochs=state.epoch + 1, progress=False)
        state = hist.state
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        cpus = dist.allreduce_mean({"cpu": np.array([cpu])})["cpu"][0] * dist.size()
        walls = dist.allreduce_mean({"w": np.array([wall])})["w"][0]
        if e:
            rows.append({"wall": walls, "cpu_sum": cpus, "steps": hist[-1]["steps"]})
    grads = {n: np.zeros(s.shape, s.dtype.np) for n, s in model.param_specs.items()}
    ts = []
    for _ in range(60):
        dist.barrier()
        t0 = time.perf_counter()
        dist.allreduce_mean(grads)
        ts.append(time.perf_counter() - t0)
    if dist.rank() == 0:
        n = len(Xtr)
        out = {"ranks": dist.size(), "batch": args.batch, "images": n,
               "images_per_s": [n / r["wall"] for r in rows],
               "cpu_ms_per_1000": [1000 * r["cpu_sum"] / n * 1000 for r in rows],
               "steps": rows[0]["steps"], "allreduce_ms": float(np.median(ts[10:]) * 1e3),
               "grad_bytes": int(sum(g.nbytes for g in grads.values()))}
        Path(args.worker).write_text(json.dumps(out))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from mpi4py import MPI

        mpi = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as e:  # noqa: BLE001
        mpi = f"unavailable ({e})"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "mpi": mpi, "load_before": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[150, 600])
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per run (default 2)")
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration (default 2)")
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.batch = args.batch[0]
        worker(args)
        return
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install 'rnncomp[mpi]'")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"{info['mpi']}; load average before {info['load_before']}")
    results: dict = {}
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_distributed_{os.getpid()}.json"
    for rep in range(args.repeat):
        for batch in args.batch:
            for ranks in args.ranks:
                cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", str(tmp),
                       "--batch", str(batch), "--epochs", str(args.epochs), "--train-size",
                       str(args.train_size)]
                subprocess.run(cmd, check=True)
                r = json.loads(tmp.read_text())
                key = (ranks, batch)
                acc = results.setdefault(key, {**r, "images_per_s": [], "cpu_ms_per_1000": [],
                                               "allreduce": []})
                acc["images_per_s"] += r["images_per_s"]
                acc["cpu_ms_per_1000"] += r["cpu_ms_per_1000"]
                acc["allreduce"].append(r["allreduce_ms"])
                print(f"  run {rep + 1}: ranks {ranks} batch {batch}: "
                      f"{np.median(r['images_per_s']):.0f} images/s", flush=True)
    info["load_after"] = os.getloadavg()
    print(f"\n| ranks x threads | batch (per rank) | steps/epoch | images/s (median) | speed-up "
          f"| CPU ms / 1000 images (all ranks) | allreduce of {next(iter(results.values()))['grad_bytes'] // 1000} KB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for (ranks, batch), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = results.get((1, batch))
        ips = float(np.median(r["images_per_s"]))
        sp = ips / float(np.median(base["images_per_s"])) if base else float("nan")
        print(f"| {ranks} x 1 | {batch} ({batch // ranks}) | {r['steps']} | {ips:.0f} | "
              f"{sp:.2f}x | {np.median(r['cpu_ms_per_1000']):.0f} | "
              f"{np.median(r['allreduce']):.3f} ms |")
        rows.append({"ranks": ranks, "batch": batch, "images_per_s": r["images_per_s"],
                     "cpu_ms_per_1000": r["cpu_ms_per_1000"], "allreduce_ms": r["allreduce"],
                     "speedup": sp})
    print(f"load average after {info['load_after']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
