"""Data-parallel training across processes (and machines) with MPI, the Horovod model.

    mpiexec -n 4 python train.py            # every process runs the same script

    from rnncomp.train import distributed as dist
    dist.init()                              # MPI via mpi4py (the `rnncomp[mpi]` extra)
    dist.rank(), dist.size()
    params = dist.broadcast(params, root=0)  # every rank starts from rank 0's values
    grads = dist.allreduce_mean(grads)       # one fused allreduce (in buckets) of all gradients
    sh = dist.shard(batch)                   # this rank's rows of a global batch (and offset)

`Trainer(..., distributed="mpi")` (rnncomp.train.trainer) does all of this for you.

What this module owns: the MPI communicator (COMM_WORLD), the collectives the Trainer needs
(fused, bucketed, non-blocking allreduce of gradient dicts with a status trailer; broadcast of
array dicts and of small JSON objects), splitting a batch into per-rank shards, and failure
handling: every collective is a non-blocking MPI request polled against a deadline
(`timeout`, default 600 s, or $RNNCOMP_MPI_TIMEOUT), and a rank that times out reports which
collective it was waiting for and calls MPI_Abort, so no rank hangs. A rank that fails with an
exception reports it through the next gradient allreduce (`ok=False`), and every rank then
raises `RankFailed`.

Imports: NumPy and mpi4py only (mpi4py lazily, in `init`, with an error naming the extra);
nothing else of rnncomp, so the layout test's rules (train imports runtime and below) hold.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DistributedError",
    "RankFailed",
    "Shard",
    "Reduced",
    "init",
    "initialized",
    "rank",
    "size",
    "timeout",
    "barrier",
    "allreduce_mean",
    "allreduce_start",
    "broadcast",
    "broadcast_object",
    "shard",
    "shard_range",
    "shard_indices",
    "abort",
    "DEFAULT_BUCKET_BYTES",
]

DEFAULT_BUCKET_BYTES = 16 * 2**20  # gradients per allreduce request (like DDP's 25 MB buckets)
DEFAULT_TIMEOUT = 600.0


class DistributedError(RuntimeError):
    """A distributed run cannot continue (MPI missing, ranks disagree, a collective failed)."""


class RankFailed(DistributedError):
    """Raised on every rank when one or more ranks reported a failure in the same step."""

    def __init__(self, msg: str, ranks: Sequence[int]):
        super().__init__(msg)
        self.ranks = list(ranks)


class _State:
    comm: Any = None
    MPI: Any = None
    timeout: float = DEFAULT_TIMEOUT
    hooked: bool = False


_S = _State()


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - exercised where mpi4py is absent
        raise ImportError(
            "rnncomp.train.distributed needs mpi4py and an MPI library: install the extra with "
            "`pip install 'rnncomp[mpi]'` (mpi4py plus the mpich wheel, which brings mpiexec), "
            f"then launch with `mpiexec -n 2 python ...` ({e})") from e
    return MPI


def init(timeout: float | None = None, comm: Any = None, abort_on_exception: bool = True) -> Any:
    """Start MPI (once; later calls only update `timeout`) and return the communicator.

    timeout: seconds any collective may wait for the other ranks before this rank reports the
        stall and aborts the whole job (default $RNNCOMP_MPI_TIMEOUT or 600). It must exceed
        the longest compute between two collectives (one training step, an evaluation).
    comm: an mpi4py communicator to use instead of COMM_WORLD.
    abort_on_exception: an exception that ends this process's script (uncaught) prints its
        traceback and then aborts every rank (MPI_Abort), as `python -m mpi4py` does, instead
        of leaving the other ranks waiting in their next collective until the timeout.
    """
    if _S.comm is None or comm is not None:
        MPI = _import_mpi()
        _S.MPI = MPI
        _S.comm = comm if comm is not None else MPI.COMM_WORLD
        if timeout is None:
            timeout = float(os.environ.get("RNNCOMP_MPI_TIMEOUT", DEFAULT_TIMEOUT))
        if abort_on_exception and _S.comm.Get_size() > 1 and not _S.hooked:
            _install_excepthook()
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, received "
                             f"{timeout!r}")
        _S.timeout = float(timeout)
    return _S.comm


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        if _S.comm is not None and _S.comm.Get_size() > 1:
            abort(f"uncaught {kind.__name__}; ending every rank", code=1)

    sys.excepthook = hook
    _S.hooked = True


def initialized() -> bool:
    return _S.comm is not None


def _comm():
    return _S.comm if _S.comm is not None else init()


def rank() -> int:
    """This process's rank, 0..size()-1 (starts MPI if needed)."""
    return int(_comm().Get_rank())


def size() -> int:
    """The number of processes (1 when run without mpiexec)."""
    return int(_comm().Get_size())


def timeout() -> float:
    return _S.timeout


def abort(msg: str, code: int = 3) -> None:
    """Print `msg` on stderr (with this rank) and end every rank of the job (MPI_Abort)."""
    comm = _comm()
    sys.stdout.flush()
    sys.stderr.write(f"rnncomp.distributed: rank {comm.Get_rank()}/{comm.Get_size()}: {msg}\n")
    sys.stderr.flush()
    comm.Abort(code)


def _wait(reqs: list, what: str) -> None:
    """Poll non-blocking requests until all complete; past the deadline, abort the job."""
    MPI = _S.MPI
    if MPI.Request.Testall(reqs):
        return
    # Poll: spin for the first millisecond (a collective among ranks that arrive together
    # takes tens of microseconds; sleeping would add the scheduler's wake-up latency), then
    # yield the core to other processes for a while, then sleep in growing steps.
    start = time.monotonic()
    deadline = start + _S.timeout
    pause = 5e-5
    while not MPI.Request.Testall(reqs):
        now = time.monotonic()
        if now > deadline:
            abort(f"timed out after {_S.timeout:g} s waiting for {what}: another rank has "
                  f"stopped, hangs or runs a different sequence of collectives; aborting all "
                  f"ranks (raise the limit with init(timeout=...) or RNNCOMP_MPI_TIMEOUT)")
        if now - start < 1e-3:
            continue
        if now - start < 2e-2:
            time.sleep(0)
            continue
        time.sleep(pause)
        pause = min(pause * 2, 2e-3)


def barrier() -> None:
    """Wait for every rank (with the deadline)."""
    comm = _comm()
    _wait([comm.Ibarrier()], "a barrier")


# ---------------------------------------------------------------------------------------------
# allreduce
# ---------------------------------------------------------------------------------------------
def _buckets(names: list[str], arrays: Mapping[str, np.ndarray],
             bucket_bytes: int) -> list[list[str]]:
    """Consecutive names grouped by dtype into buckets of at most bucket_bytes (a larger array
    is a bucket of its own)."""
    out: list[list[str]] = []
    cur: list[str] = []
    cur_bytes, cur_dt = 0, None
    for n in names:
        a = arrays[n]
        if cur and (a.dtype != cur_dt or cur_bytes + a.nbytes > bucket_bytes):
            out.append(cur)
            cur, cur_bytes = [], 0
        cur.append(n)
        cur_bytes += a.nbytes
        cur_dt = a.dtype
    if cur:
        out.append(cur)
    return out


@dataclass
class Reduced:
    """The result of a gradient allreduce: the weighted mean gradients, the total weight (the
    number of examples in the global batch), the weighted mean of `value` (the loss), and
    how many ranks contributed a batch."""

    grads: dict[str, np.ndarray]
    weight: float
    value: float
    active: int


class _Pending:
    """An allreduce in flight (from allreduce_start); `wait()` returns the Reduced result."""

    def __init__(self, shapes, buckets, bufs, reqs, weight, value, active, what):
        self.shapes, self.buckets, self.bufs, self.reqs = shapes, buckets, bufs, reqs
        self.weight, self.value, self.active, self.what = weight, value, active, what

    def wait(self) -> Reduced:
        _wait(self.reqs, self.what)
        grads: dict[str, np.ndarray] = {}
        for names, buf in zip(self.buckets, self.bufs):
            if self.weight > 0:
                buf /= buf.dtype.type(self.weight)
            k = 0
            for n in names:
                size_n = int(np.prod(self.shapes[n], dtype=np.int64))
                grads[n] = buf[k:k + size_n].reshape(self.shapes[n])
                k += size_n
        return Reduced(grads, self.weight, self.value, self.active)


def _layout_key(names, arrays) -> int:
    """A 20-bit checksum of names, shapes and dtypes (small enough that sums of squares over
    thousands of ranks stay exact in float64)."""
    import zlib

    text = ";".join(f"{n}:{arrays[n].shape}:{arrays[n].dtype}" for n in names)
    return zlib.crc32(text.encode()) & 0xFFFFF


def _agree(key: int, what: str, *, weight: float = 0.0, value: float = 0.0,
           ok: bool = True) -> np.ndarray:
    """One small float64 allreduce (sum) that every collective of this module starts with:
    [weight, weight * value, ranks with weight > 0, sum key, sum key^2, failure flag per rank].
    Raises RankFailed / DistributedError on every rank alike, before any large buffer moves."""
    comm = _comm()
    MPI = _S.MPI
    n_ranks = comm.Get_size()
    t = np.zeros(5 + n_ranks, np.float64)
    t[0] = weight
    t[1] = value * weight if weight > 0 else 0.0
    t[2] = 1.0 if weight > 0 else 0.0
    t[3], t[4] = key, float(key) ** 2
    t[5 + comm.Get_rank()] = 0.0 if ok else 1.0
    _wait([comm.Iallreduce(MPI.IN_PLACE, t, op=MPI.SUM)], what)
    failed = [r for r in range(n_ranks) if t[5 + r] > 0]
    if failed:
        raise RankFailed(f"rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} "
                         f"of {n_ranks} failed before {what} (the failing rank prints its own "
                         f"error); stopping every rank", failed)
    if n_ranks * int(t[4]) != int(t[3]) ** 2:
        raise DistributedError(f"{what}: the ranks' arrays differ in names, shapes or dtypes "
                               f"(every rank must build the same model and train the same wrt)")
    return t


def allreduce_start(grads: Mapping[str, np.ndarray], *, weight: float = 1.0,
                    value: float = 0.0, ok: bool = True,
                    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                    what: str = "the gradient allreduce") -> _Pending:
    """Start the allreduce of `allreduce_mean` (one MPI_Iallreduce per bucket, each in flight
    while the next is packed); `.wait()` returns a `Reduced`. The caller may compute between
    start and wait.

    A small status allreduce goes first: it sums the weights and `value * weight` (the loss),
    checks that every rank has the same gradient layout, and carries `ok`: if any rank passes
    ok=False (it failed this step; its grads are ignored), every rank raises RankFailed and no
    gradient moves. A rank with weight 0 (no examples this step) contributes nothing.
    """
    comm = _comm()
    MPI = _S.MPI
    names = sorted(grads)
    arrays = {n: np.asarray(grads[n]) for n in names}
    t = _agree(_layout_key(names, arrays), what, weight=weight, value=value, ok=ok)
    total, active = float(t[0]), int(t[2])
    mean_value = float(t[1]) / total if total > 0 else float("nan")
    shapes = {n: arrays[n].shape for n in names}
    buckets = _buckets(names, arrays, int(bucket_bytes)) if total > 0 else []
    bufs, reqs = [], []
    for bucket in buckets:
        dt = arrays[bucket[0]].dtype
        buf = np.empty(sum(arrays[n].size for n in bucket), dt)
        k = 0
        w = dt.type(weight)
        for n in bucket:
            a = arrays[n].reshape(-1)
            if weight > 0:
                np.multiply(a, w, out=buf[k:k + a.size])
            else:
                buf[k:k + a.size] = 0
            k += a.size
        reqs.append(comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
        bufs.append(buf)
    return _Pending(shapes, buckets, bufs, reqs, total, mean_value, active, what)


def allreduce_mean(grads: Mapping[str, np.ndarray], *, weight: float | None = None,
                   bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> dict[str, np.ndarray]:
    """The mean over ranks of each gradient (same names, shapes and dtypes), identical on every
    rank: one fused buffer per bucket of `bucket_bytes`, each a non-blocking MPI_Iallreduce.

    weight: this rank's share (e.g. its number of examples); the result is then
        sum(weight_r * grads_r) / sum(weight_r), which equals the gradient of a mean loss over
        the union of the ranks' examples when shards differ in size. Default: 1 (plain mean).
    """
    w = 1.0 if weight is None else float(weight)
    return allreduce_start(grads, weight=w, bucket_bytes=bucket_bytes).wait().grads


# ---------------------------------------------------------------------------------------------
# broadcast
# ---------------------------------------------------------------------------------------------
def broadcast(arrays: Mapping[str, np.ndarray], root: int = 0) -> dict[str, np.ndarray]:
    """Rank `root`'s values of a dict of arrays, on every rank (one fused MPI_Ibcast per
    dtype). Every rank must pass the same names, shapes and dtypes (its values are ignored);
    a mismatch aborts with a message instead of corrupting memory."""
    comm = _comm()
    names = sorted(arrays)
    arrs = {n: np.asarray(arrays[n]) for n in names}
    _agree(_layout_key(names, arrs), f"a broadcast from rank {root}")
    groups: dict[np.dtype, list[str]] = {}
    for n in names:
        groups.setdefault(arrs[n].dtype, []).append(n)
    me = comm.Get_rank()
    bufs, reqs = [], []
    for dt, group in groups.items():
        if me == root:
            buf = np.concatenate([arrs[n].reshape(-1) for n in group]) if group else \
                np.empty(0, dt)
        else:
            buf = np.empty(sum(arrs[n].size for n in group), dt)
        reqs.append(comm.Ibcast(buf, root=root))
        bufs.append((group, buf))
    _wait(reqs, f"a broadcast from rank {root}")
    out: dict[str, np.ndarray] = {}
    for group, buf in bufs:
        k = 0
        for n in group:
            out[n] = buf[k:k + arrs[n].size].reshape(arrs[n].shape).copy()
            k += arrs[n].size
    return {n: out[n] for n in arrays}


def broadcast_object(obj: Any, root: int = 0) -> Any:
    """A JSON-able object of rank `root`, on every rank (no pickle)."""
    comm = _comm()
    me = comm.Get_rank()
    data = json.dumps(obj).encode() if me == root else b""
    n = np.array([len(data)], np.int64)
    _wait([comm.Ibcast(n, root=root)], f"a broadcast from rank {root}")
    buf = np.frombuffer(data, np.uint8).copy() if me == root else np.empty(int(n[0]), np.uint8)
    _wait([comm.Ibcast(buf, root=root)], f"a broadcast from rank {root}")
    return json.loads(buf.tobytes().decode())


# ---------------------------------------------------------------------------------------------
# sharding
# ---------------------------------------------------------------------------------------------
@dataclass
class Shard:
    """This rank's part of a global batch: its rows (`inputs`, a dict of model inputs), the
    global index of its first row (`offset`, which keys dropout masks) and the size of the
    global batch (`total`). Trainer.step in distributed mode takes a Shard as it is; a plain
    dict is taken as the global batch and sharded."""

    inputs: dict[str, Any]
    offset: int
    total: int

    @property
    def n(self) -> int:
        for v in self.inputs.values():
            a = np.asarray(v)
            if a.ndim:
                return int(a.shape[0])
        return 0


def shard_range(n: int, rank_: int | None = None, size_: int | None = None) -> tuple[int, int]:
    """[start, stop) of this rank's rows of n: contiguous, the first n % size ranks one row
    longer (so rank r of size s holds the same rows whatever the batch is)."""
    r = rank() if rank_ is None else int(rank_)
    s = size() if size_ is None else int(size_)
    if not 0 <= r < s:
        raise ValueError(f"rank {r} is not in 0..{s - 1}")
    base, extra = divmod(int(n), s)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def shard_indices(indices: Sequence[int] | np.ndarray, rank_: int | None = None,
                  size_: int | None = None) -> tuple[np.ndarray, int]:
    """(this rank's part of a global batch's example indices, its offset): load only these
    rows when the data set does not fit one machine."""
    idx = np.asarray(indices)
    start, stop = shard_range(len(idx), rank_, size_)
    return idx[start:stop], start


def shard(batch: Mapping[str, Any], rank_: int | None = None, size_: int | None = None,
          axis: int = 0) -> Shard:
    """This rank's rows (along `axis`, the batch axis) of every array of a global batch."""
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    sizes = {k: a.shape[axis] for k, a in arrays.items() if a.ndim > axis}
    if not sizes:
        raise ValueError("shard: the batch has no arrays with a batch axis")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"shard: inputs disagree on the batch size (axis {axis}): {sizes}")
    n = next(iter(sizes.values()))
    start, stop = shard_range(n, rank_, size_)
    out = {}
    for k, a in arrays.items():
        if k in sizes:
            idx = [slice(None)] * a.ndim
            idx[axis] = slice(start, stop)
            out[k] = a[tuple(idx)]
        else:
            out[k] = a
    return Shard(out, start, n)
