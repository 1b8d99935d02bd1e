"""The SPMD program the distributed tests launch with `mpiexec -n K python mpi_job.py CASE
CONFIG_JSON`: every rank runs it; results go to files in the config's `out` folder.

Cases:
  train       Trainer(distributed="mpi").fit on the shared model and batches (shard_model.py);
              each rank saves its final parameters to out/rank{r}.npz (and rank 0 the
              checkpoint, if asked); `restore` continues from a checkpoint written by any
              number of ranks.
  collectives allreduce_mean (several buckets, two dtypes, uneven weights) and broadcast,
              checked against NumPy on every rank.
  fail        rank `fail_rank` fails at step `fail_step` (`mode`: raise, hang or exit).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import shard_model as SM  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402
from rnncomp.train import distributed as dist  # noqa: E402


def train(cfg: dict) -> None:
    dist.init(timeout=cfg.get("timeout", 120))
    model = SM.model(cfg)
    trainer = Trainer(model, loss_output="loss", optimizer=SM.optimizer(cfg),
                      clip_norm=cfg.get("clip_norm"), backend=cfg.get("backend", "interp"),
                      distributed="mpi")
    if cfg.get("restore"):
        state = trainer.restore(cfg["restore"])
    else:
        # every rank but 0 starts from other values: the broadcast must overwrite them
        state = model.init(seed=cfg.get("seed", 0) + 100 * dist.rank())
        if dist.rank() == 0:
            state = model.init(seed=cfg.get("seed", 0))
    hist = trainer.fit(state, SM.data_iter_fn({**cfg, "_distributed": True}), epochs=cfg["epochs"], progress=False,
                       seed=cfg.get("seed", 0), checkpoint_path=cfg.get("checkpoint"))
    out = Path(cfg["out"])
    np.savez(out / f"rank{dist.rank()}.npz", **hist.params)
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(
        {"loss": hist.metric("loss"), "steps": hist.metric("steps"), "size": dist.size(),
         "step": hist.state.step, "epoch": hist.state.epoch}))


def collectives(cfg: dict) -> None:
    dist.init(timeout=60)
    r, n = dist.rank(), dist.size()
    rng = np.random.default_rng(1)
    base = {"a": rng.standard_normal((300, 7)), "b": rng.standard_normal(5).astype(np.float32),
            "c": rng.standard_normal((64, 64)), "d": rng.standard_normal((3,)).astype(np.float32)}
    mine = {k: v * (r + 1) for k, v in base.items()}
    w = float(r + 1)
    got = dist.allreduce_mean(mine, weight=w, bucket_bytes=4096)   # several buckets
    wsum = sum(range(1, n + 1))
    for k, v in base.items():
        want = v * (sum((q + 1) ** 2 for q in range(n)) / wsum)
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        tol = 1e-12 if v.dtype == np.float64 else 1e-5
        assert np.allclose(got[k], want, rtol=tol, atol=tol), (k, np.abs(got[k] - want).max())
    plain = dist.allreduce_mean({k: v * (r + 1) for k, v in base.items()})
    assert np.allclose(plain["a"], base["a"] * (n + 1) / 2, rtol=1e-12)
    b = dist.broadcast({k: v + r for k, v in base.items()}, root=n - 1)
    for k, v in base.items():
        assert np.array_equal(b[k], v + (n - 1)), k
    obj = dist.broadcast_object({"rank": r, "x": [1, 2]} if r == 0 else None)
    assert obj == {"rank": 0, "x": [1, 2]}
    dist.barrier()
    Path(cfg["out"], f"ok{r}").write_text("ok")


def fail(cfg: dict) -> None:
    dist.init(timeout=cfg.get("timeout", 5))
    model = SM.model(cfg)
    trainer = Trainer(model, loss_output="loss", optimizer=SM.optimizer(cfg), distributed="mpi")
    batches = SM.data_iter_fn(cfg)
    me = dist.rank()

    def data(epoch, rng):
        for k, b in enumerate(batches(epoch, rng)):
            if me == cfg["fail_rank"] and k == cfg["fail_step"]:
                if cfg["mode"] == "raise":
                    raise RuntimeError("injected failure in the data pipeline")
                if cfg["mode"] == "hang":
                    time.sleep(600)
                if cfg["mode"] == "exit":
                    os._exit(7)
                if cfg["mode"] == "sysexit":
                    sys.exit(7)
            yield b

    trainer.fit(model.init(0), data, epochs=cfg["epochs"], progress=False)


if __name__ == "__main__":
    case, cfg = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    {"train": train, "collectives": collectives, "fail": fail}[case](cfg)
