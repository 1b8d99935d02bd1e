"""The model, optimizer and batches the distributed tests share between the MPI job
(mpi_job.py, under mpiexec) and the single-process reference (test_distributed.py)."""

from __future__ import annotations

import numpy as np

import rnncomp as rc
from rnncomp import layers, losses, optim


def model(cfg: dict) -> rc.Model:
    units, dropout = cfg.get("units", 6), cfg.get("dropout", False)

    def fn(X, Y):
        cell = rc.BasicLSTMCell(units) if cfg.get("cell", "lstm") == "lstm" \
            else rc.BasicRNNCell(units)
        if dropout:
            cell = rc.DropoutWrapper(cell, input_keep_prob=0.8, output_keep_prob=0.7,
                                     state_keep_prob=0.9)
        out, _ = rc.dynamic_rnn(cell, X)
        if dropout:
            out = rc.dropout(out, 0.75)
        pred = layers.dense(out, 2, name="head")
        return {"loss": losses.mse(pred, Y), "pred": pred}

    return rc.Model(fn, {"X": rc.Input((None, None, 3)), "Y": rc.Input((None, None, 2))},
                    dtype=cfg.get("dtype", "f64"), name="shard_model")


def optimizer(cfg: dict) -> optim.Optimizer:
    return optim.Adam(cfg.get("lr", 0.01))


def data_iter_fn(cfg: dict):
    """`batches` global batches of `batch` examples per epoch, shuffled with the state's rng
    from one fixed pool (so a resumed run sees the same batches)."""
    dt = np.float64 if cfg.get("dtype", "f64") == "f64" else np.float32
    pool_rng = np.random.default_rng(1234)
    n, T = cfg["batch"] * cfg["batches"], cfg.get("T", 5)
    X = pool_rng.standard_normal((n, T, 3)).astype(dt)
    Y = pool_rng.standard_normal((n, T, 2)).astype(dt)

    def fn(epoch, rng):
        order = rng.permutation(n)
        for k in range(cfg["batches"]):
            idx = order[k * cfg["batch"]:(k + 1) * cfg["batch"]]
            if cfg.get("shards") and cfg.get("_distributed"):
                # each rank loads only its rows (data that does not fit one machine)
                from rnncomp.train import distributed as dist

                mine, offset = dist.shard_indices(idx)
                yield dist.Shard({"X": X[mine], "Y": Y[mine]}, offset, len(idx))
            else:
                yield {"X": X[idx], "Y": Y[idx]}

    return fn
