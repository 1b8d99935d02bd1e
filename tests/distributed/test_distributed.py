"""Data-parallel training over MPI (rnncomp.train.distributed, Trainer(distributed="mpi")).

The MPI tests launch `mpiexec -n 2` (and `-n 4`, oversubscribing the cores) on mpi_job.py and
compare what the ranks wrote with a single-process run in this process: after N Adam steps with
clipping and dropout, the ranks' parameters equal one process's on the whole batch (f64: 1e-10,
f32: 1e-5), whatever the number of ranks, and a failing rank stops every rank quickly with a
clear error. They skip, saying why, where mpi4py or mpiexec is missing (install the `mpi`
extra). The sharding and dropout-keying tests need no MPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import shard_model as SM  # noqa: E402
from rnncomp.train import Trainer  # noqa: E402
from rnncomp.train import distributed as dist  # noqa: E402


def _mpiexec() -> str | None:
    cand = Path(sys.executable).parent / "mpiexec"
    return str(cand) if cand.exists() else shutil.which("mpiexec")


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError as e:
        return f"mpi4py is not installed ({e}); pip install 'rnncomp[mpi]'"
    if _mpiexec() is None:
        return "no mpiexec on PATH or next to the Python interpreter; pip install 'rnncomp[mpi]'"
    return None


MISSING = _mpi_missing()
needs_mpi = pytest.mark.skipif(MISSING is not None, reason=f"MPI unavailable: {MISSING}")


def run_job(n: int, case: str, cfg: dict, tmp: Path, timeout: float = 120):
    cfg = {"out": str(tmp), **cfg}
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    # the kernel cache is this process's (the reference runs first and fills it; the ranks
    # load the compiled kernels instead of compiling them twice at once)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    res = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi_job.py"),
                          case, str(tmp / "cfg.json")], capture_output=True, text=True,
                         timeout=timeout, env=env)
    res.seconds = time.perf_counter() - t0
    return res


def reference(cfg: dict):
    """One process, the whole batch: the History the ranks must reproduce."""
    m = SM.model(cfg)
    tr = Trainer(m, loss_output="loss", optimizer=SM.optimizer(cfg),
                 clip_norm=cfg.get("clip_norm"), backend=cfg.get("backend", "interp"))
    return tr.fit(m.init(cfg.get("seed", 0)), SM.data_iter_fn(cfg), epochs=cfg["epochs"],
                  progress=False, seed=cfg.get("seed", 0))


def check_ranks(tmp: Path, n: int, ref, tol: float) -> None:
    for r in range(n):
        got = np.load(tmp / f"rank{r}.npz")
        for k, v in ref.params.items():
            assert got[k].dtype == v.dtype
            err = float(np.abs(got[k] - v).max())
            assert err <= tol, f"rank {r} of {n}: {k} differs by {err:.3g} > {tol}"
        meta = json.loads((tmp / f"rank{r}.json").read_text())
        assert meta["size"] == n and meta["step"] == ref.state.step
        want = ref.metric("loss")[-len(meta["loss"]):]   # a resumed run reports its epochs
        assert np.allclose(meta["loss"], want, rtol=tol * 10, atol=tol * 10)


# ---------------------------------------------------------------------------------------------
# equality: N ranks on shards == one process on the whole batch
# ---------------------------------------------------------------------------------------------
EQUALITY = [
    # f64, Adam + clipping (active: norms are ~0.3) + dropout, equal and unequal shards
    pytest.param(2, {"dtype": "f64", "batch": 8, "clip_norm": 0.05, "dropout": True}, 1e-10,
                 id="2ranks-f64-clip-dropout"),
    pytest.param(4, {"dtype": "f64", "batch": 7, "clip_norm": 0.05, "dropout": True}, 1e-10,
                 id="4ranks-f64-clip-dropout-uneven"),
    # the data iterator yields distributed.Shard (each rank loads only its rows)
    pytest.param(2, {"dtype": "f64", "batch": 7, "clip_norm": 0.05, "dropout": True,
                     "shards": True}, 1e-10, id="2ranks-f64-shards-from-the-iterator"),
    pytest.param(2, {"dtype": "f32", "batch": 6, "clip_norm": 0.05, "dropout": True}, 1e-5,
                 id="2ranks-f32-clip-dropout"),
    # compiled: the offset reaches the generated kernels' dropout hash
    pytest.param(2, {"dtype": "f32", "batch": 6, "dropout": True, "cell": "rnn",
                     "backend": "cpu"}, 1e-5, id="2ranks-f32-cpu-dropout"),
]


@needs_mpi
@pytest.mark.parametrize("n,cfg,tol", EQUALITY)
def test_ranks_equal_one_process(n, cfg, tol, tmp_path):
    cfg = {"epochs": 2, "batches": 3, **cfg}   # 6 Adam steps
    ref = reference(cfg)
    res = run_job(n, "train", cfg, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    check_ranks(tmp_path, n, ref, tol)


@needs_mpi
def test_resume_with_another_number_of_ranks(tmp_path):
    """2 ranks train 1 epoch and checkpoint (rank 0 only); 4 ranks, then 1 process, continue:
    both equal the uninterrupted single-process run."""
    cfg = {"dtype": "f64", "batch": 8, "batches": 3, "dropout": True, "clip_norm": 0.05}
    ck = tmp_path / "run.ckpt"
    a = tmp_path / "a"
    a.mkdir()
    res = run_job(2, "train", {**cfg, "epochs": 1, "checkpoint": str(ck)}, a)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ck.exists() and sorted(p.name for p in tmp_path.iterdir()
                                  if p.name.startswith("run.ckpt")) == ["run.ckpt"]
    ref = reference({**cfg, "epochs": 2})
    b = tmp_path / "b"
    b.mkdir()
    res = run_job(4, "train", {**cfg, "epochs": 2, "restore": str(ck)}, b)
    assert res.returncode == 0, res.stdout + res.stderr
    check_ranks(b, 4, ref, 1e-10)
    m = SM.model(cfg)
    tr = Trainer(m, loss_output="loss", optimizer=SM.optimizer(cfg), clip_norm=0.05)
    one = tr.fit(tr.restore(str(ck)), SM.data_iter_fn(cfg), epochs=2, progress=False)
    for k, v in ref.params.items():
        assert np.abs(one.params[k] - v).max() <= 1e-10


@needs_mpi
def test_collectives(tmp_path):
    """allreduce_mean in several buckets with two dtypes and uneven weights, broadcast from
    the last rank, broadcast_object: on 2 and 4 ranks."""
    for n in (2, 4):
        out = tmp_path / f"n{n}"
        out.mkdir()
        res = run_job(n, "collectives", {}, out, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert sorted(p.name for p in out.glob("ok*")) == [f"ok{r}" for r in range(n)]


# ---------------------------------------------------------------------------------------------
# a failing rank stops every rank, quickly, with a clear error
# ---------------------------------------------------------------------------------------------
FAIL = {"dtype": "f64", "batch": 8, "batches": 4, "epochs": 2, "fail_rank": 1, "fail_step": 2}


@needs_mpi
@pytest.mark.parametrize("mode,expect", [
    ("raise", "rank 1/2 failed before the batches of epoch 1: RuntimeError: injected failure"),
    ("sysexit", "rank 1/2 failed before the batches of epoch 1: SystemExit: 7"),
    ("hang", "rank 0/2: timed out after 3 s waiting for the gradient allreduce"),
])
def test_failing_rank_stops_every_rank(mode, expect, tmp_path):
    res = run_job(2, "fail", {**FAIL, "mode": mode, "timeout": 3}, tmp_path, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert expect in out, out
    assert res.seconds < 30, f"took {res.seconds:.1f} s to stop"


@needs_mpi
def test_crashing_rank_ends_the_job(tmp_path):
    """A rank that dies without a word (os._exit) ends the job at once (mpiexec kills the
    others), with its exit status."""
    res = run_job(2, "fail", {**FAIL, "mode": "exit", "timeout": 30}, tmp_path, timeout=60)
    assert res.returncode != 0
    assert res.seconds < 25


# ---------------------------------------------------------------------------------------------
# without MPI: sharding, dropout keyed by the global example index, the missing-extra error
# ---------------------------------------------------------------------------------------------
def test_shard_range_covers_the_batch_in_order():
    for n in (1, 5, 7, 8, 150):
        for s in (1, 2, 3, 4):
            parts = [dist.shard_range(n, r, s) for r in range(s)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        dist.shard_range(4, 2, 2)


def test_shard_and_shard_indices():
    X, y = np.arange(14).reshape(7, 2), np.arange(7)
    shards = [dist.shard({"X": X, "y": y}, r, 3) for r in range(3)]
    assert [s.offset for s in shards] == [0, 3, 5] and [s.n for s in shards] == [3, 2, 2]
    assert np.array_equal(np.concatenate([s.inputs["X"] for s in shards]), X)
    assert all(s.total == 7 for s in shards)
    idx, off = dist.shard_indices(np.array([9, 4, 7, 1, 0]), 1, 2)
    assert idx.tolist() == [1, 0] and off == 3
    with pytest.raises(ValueError, match="disagree on the batch size"):
        dist.shard({"X": X, "y": y[:5]}, 0, 2)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_dropout_masks_follow_the_global_example_index(backend):
    """Shards run with example_offset=start draw exactly the whole batch's masks (in the
    scan body and outside it); offset 0 on a shard would not."""
    cfg = {"dtype": "f64", "dropout": True, "cell": "rnn"}
    m = SM.model(cfg)
    p = m.init(0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((7, 5, 3)), rng.standard_normal((7, 5, 2))
    kw = dict(training=True, seed=11, backend=backend)
    whole = m(p, X=X, Y=Y, **kw)["pred"]
    parts = [m(p, X=X[a:b], Y=Y[a:b], example_offset=a, **kw)["pred"]
             for a, b in (dist.shard_range(7, r, 3) for r in range(3))]
    # the same masks; the values to rounding (BLAS may sum a product of 2 rows in another
    # order than one of 7: OpenBLAS's Haswell kernels on an AMD EPYC differed by 3e-16 here)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-12, atol=1e-14)
    unkeyed = m(p, X=X[3:], Y=Y[3:], **kw)["pred"]
    assert np.max(np.abs(unkeyed - whole[3:])) > 1e-3  # other masks: other values


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"rnncomp\[mpi\]"):
        dist._import_mpi()


def test_trainer_rejects_unknown_distributed_mode():
    m = SM.model({"dtype": "f64"})
    with pytest.raises(ValueError, match="distributed: expected None or 'mpi'"):
        Trainer(m, loss_output="loss", distributed="horovod")
