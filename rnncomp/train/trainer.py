"""Training: one optimizer step, an epoch loop with progress bars, checkpoints, truncated BPTT.

    trainer = Trainer(model, loss_output="loss", optimizer=optim.Adam(1e-3), clip_norm=5.0)
    params, opt_state, loss, gnorm = trainer.step(params, opt_state, {"X": x, "Y": y}, seed=0)
    hist = trainer.fit(params, lambda epoch, rng: batches(...), epochs=10)
    hist.params, hist[-1]["loss"]

Everything is functional: parameters and optimizer state are flat dicts of arrays, passed in and
returned, never mutated. The full training state (params, optimizer state, epoch, step counter,
data-shuffling RNG) is a `TrainState`, which `save_checkpoint` writes atomically and `restore`
reads back, so an interrupted run continues bit for bit.

With `distributed="mpi"` (data-parallel over MPI ranks; rnncomp.train.distributed) every rank
runs the same script: parameters come from rank 0, each step computes the gradient of this
rank's shard of the batch and averages it over ranks (weighted by examples) before clipping and
the optimizer, so every rank holds the same parameters; only rank 0 writes checkpoints and
draws progress bars.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checkpoint, optim
from . import distributed as _dist
from ..runtime.grad import output_index, tbptt_value_and_grad, time_chunk, value_and_grad
from ..transforms.autodiff import check_checkpoint_every

__all__ = ["Trainer", "TrainState", "History", "NonFiniteTrainingError", "step_seed"]


def step_seed(seed: int, step: int) -> int:
    """The dropout seed of one training step: a fixed mix of (run seed, global step)."""
    return int((int(seed) * 0x9E3779B1 + int(step) * 0x85EBCA77 + 0x27D4EB2F) % (2**63 - 1))


@dataclass
class TrainState:
    """Everything needed to continue training exactly: params, optimizer state, the number of
    finished epochs and steps, and the generator that data_iter_fn shuffles with."""

    params: dict[str, np.ndarray]
    opt_state: dict[str, np.ndarray]
    epoch: int = 0
    step: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


class History(list):
    """Per-epoch metric dicts (epoch, loss, grad_norm, time, steps and eval_fn's metrics), with
    the final `state` (and its `params`, `opt_state`) attached."""

    state: TrainState

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.state.params

    @property
    def opt_state(self) -> dict[str, np.ndarray]:
        return self.state.opt_state

    def metric(self, name: str) -> list[Any]:
        return [row.get(name) for row in self]


class Trainer:
    """Gradient steps on one scalar output of a Model.

    loss_output: which output is the loss (int index, dict key or path; see Model.grad_graph).
    optimizer: an rnncomp.train.optim optimizer (default Adam(1e-3)).
    clip_norm: rescale gradients to this global norm (tf.clip_by_global_norm) if larger.
    clip_value: clip every gradient element to [-clip_value, clip_value] (after clip_norm).
    wrt: the parameters trained (default: every trainable parameter).
    backend: "auto" (default: the compiled CPU backend, or the reference interpreter with a
        warning where compiling is impossible), "interp", "cpu" or "cuda".
    distributed: None (one process) or "mpi": data-parallel over the ranks of `mpiexec`
        (see rnncomp.train.distributed and docs/distributed.md).
    on_nonfinite: "raise" (stop at a NaN/Inf loss or gradient) or "skip" (skip that step).
    recompute: BPTT stores only each step's carries and recomputes the rest backwards (less
        memory, about one more forward pass of work; the same gradients).
    checkpoint_every: BPTT stores the carries every k steps only and recomputes the forward
        segment by segment backwards (k=1 is recompute=True; see docs/training.md). Applies to
        `step` and `fit`; `tbptt_step` stores its chunks' residuals.
    """

    def __init__(self, model: Any, loss_output: int | str | Sequence = 0,
                 optimizer: optim.Optimizer | None = None, clip_norm: float | None = None,
                 clip_value: float | None = None, backend: str = "auto",
                 wrt: Sequence[str] | None = None, training: bool = True,
                 distributed: str | None = None, on_nonfinite: str = "raise",
                 recompute: bool = False, checkpoint_every: int | None = None):
        self.model = model
        self.checkpoint_every = check_checkpoint_every(checkpoint_every, recompute)
        self.recompute = self.checkpoint_every == 1
        self.loss_output = loss_output
        output_index(model, loss_output)  # fail early on a bad selector
        self.optimizer = optimizer if optimizer is not None else optim.Adam(1e-3)
        if not isinstance(self.optimizer, optim.Optimizer):
            raise TypeError(f"optimizer: expected an rnncomp.train.optim optimizer, received "
                            f"{type(self.optimizer).__name__}")
        for what, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                                  or not v > 0):
                raise ValueError(f"{what}: expected a positive number, received {v!r} (None: no "
                                 f"clipping)")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', received "
                             f"{on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.skipped_steps = 0
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.clip_value = None if clip_value is None else float(clip_value)
        from ..runtime.compiler import check_backend_name

        check_backend_name(backend)
        self.backend = backend
        self.wrt = list(wrt) if wrt is not None else \
            [n for n, s in model.param_specs.items() if s.trainable]
        unknown = [w for w in self.wrt if w not in model.param_specs]
        if unknown:
            raise KeyError(f"wrt: {unknown} are not parameters of the model")
        self.training = bool(training)
        if distributed not in (None, "mpi"):
            raise ValueError(f"distributed: expected None or 'mpi', received {distributed!r}")
        self.distributed = distributed
        if distributed == "mpi":
            _dist.init()

    @property
    def is_root(self) -> bool:
        """True on the process that writes checkpoints and progress (rank 0, or the only one)."""
        return self.distributed is None or _dist.rank() == 0

    # -- configuration ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able trainer settings (stored in checkpoints)."""
        lo = self.loss_output
        return {"loss_output": list(lo) if isinstance(lo, tuple) else lo,
                "optimizer": self.optimizer.config(), "clip_norm": self.clip_norm,
                "clip_value": self.clip_value, "backend": self.backend, "wrt": self.wrt,
                "training": self.training}

    def init(self, params: Mapping[str, np.ndarray], seed: int = 0) -> TrainState:
        """A fresh TrainState: zero optimizer state, epoch 0, a data RNG seeded with `seed`."""
        params = self.model.check_params(params)
        if self.distributed:
            params = _dist.broadcast(params, root=0)  # every rank starts from rank 0's values
        return TrainState(params, self.optimizer.init({n: params[n] for n in self.wrt}), 0, 0,
                          np.random.default_rng(seed))

    # -- one step -----------------------------------------------------------------------------
    def _clip(self, grads: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        if self.clip_norm is not None:
            grads, norm = optim.clip_by_global_norm(grads, self.clip_norm)
        else:
            norm = optim.global_norm(grads)
        if self.clip_value is not None:
            grads = optim.clip_by_value(grads, -self.clip_value, self.clip_value)
        return grads, norm

    def _apply(self, params, opt_state, grads, loss: float = 0.0):
        norm = optim.global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            bad = loss if not math.isfinite(loss) else norm
            if self.on_nonfinite == "skip":
                self.skipped_steps += 1
                return dict(params), dict(opt_state), norm
            raise NonFiniteTrainingError(
                f"the {what} is {bad} on this batch: training stopped before the update (the "
                f"parameters and the last checkpoint are unchanged). Lower the learning rate, "
                f"clip gradients (clip_norm=...), check the batch for NaN/Inf, or pass "
                f"Trainer(on_nonfinite='skip') to skip such steps")
        grads, norm = self._clip(grads)
        trained = {n: params[n] for n in self.wrt}
        new, opt_state = self.optimizer.update(trained, grads, opt_state)
        out = dict(params)
        out.update(new)
        return out, opt_state, norm

    def step(self, params: Mapping[str, np.ndarray], opt_state: Mapping[str, np.ndarray],
             batch_inputs: Mapping[str, Any], seed: int = 0
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, float]:
        """One optimizer step on one batch: (new params, new opt state, loss, grad norm).

        The loss is the value before the update; the grad norm is the global norm before
        clipping. Dropout is active (training mode) with masks from `seed`.

        Distributed: `batch_inputs` is the global batch (every rank passes the same; each
        computes its rows) or a rnncomp.train.distributed.Shard (this rank's rows); the loss
        and norm are those of the global batch, identical on every rank.
        """
        if self.distributed:
            p, o, loss, norm, _ = self._dist_step(params, opt_state, batch_inputs, seed)
            return p, o, loss, norm
        if not isinstance(batch_inputs, Mapping):
            raise TypeError(f"batch_inputs: expected a dict of model inputs (input name -> "
                            f"array), received {type(batch_inputs).__name__}")
        params = self.model.check_params(params)
        outs, grads = value_and_grad(self.model, params, wrt=self.wrt, output=self.loss_output,
                                     training=self.training, seed=seed, backend=self.backend,
                                     checkpoint_every=self.checkpoint_every, **batch_inputs)
        loss = float(_select(self.model, outs, self.loss_output))
        params, opt_state, norm = self._apply(params, opt_state, grads, loss)
        return params, opt_state, loss, norm

    def tbptt_step(self, params: Mapping[str, np.ndarray], opt_state: Mapping[str, np.ndarray],
                   batch_inputs: Mapping[str, Any], *, k: int, state: Mapping[str, Any],
                   seq_inputs: Sequence[str], initial_state: Mapping[str, Any] | None = None,
                   seed: int = 0, update_every_chunk: bool = False, reduce: str = "sum",
                   length_input: str | None = None, time_axis: int = 1):
        """Truncated BPTT on one batch of long sequences, in chunks of k steps.

        The model is written for one chunk (state inputs in, final state among the outputs;
        see rnncomp.runtime.grad.tbptt_value_and_grad for `state`, `seq_inputs`, `reduce`). With
        update_every_chunk=False the chunk gradients are summed into one update; with True the
        parameters are updated after every chunk (the classic TBPTT(k, k) schedule) and later
        chunks run with the updated parameters.

        Returns (params, opt_state, loss, grad_norm, final state dict) where loss and grad_norm
        are summed / the last norm in the per-chunk schedule.
        """
        if self.distributed:
            raise NotImplementedError("tbptt_step with distributed='mpi' is not supported yet: "
                                      "average the chunk gradients with "
                                      "rnncomp.train.distributed.allreduce_mean")
        params = self.model.check_params(params)
        kw = dict(state=state, seq_inputs=seq_inputs, loss_output=self.loss_output,
                  wrt=self.wrt, time_axis=time_axis, length_input=length_input, reduce=reduce,
                  training=self.training, seed=seed, backend=self.backend)
        if not update_every_chunk:
            loss, grads, final = tbptt_value_and_grad(self.model, params, batch_inputs, k=k,
                                                      initial_state=initial_state, **kw)
            params, opt_state, norm = self._apply(params, opt_state, grads, loss)
            return params, opt_state, loss, norm, final
        arrays = {n: np.asarray(v) for n, v in batch_inputs.items()}
        T = arrays[seq_inputs[0]].shape[time_axis]
        cur = initial_state
        total, norm = 0.0, 0.0
        for start in range(0, T, k):
            stop = min(start + k, T)
            chunk = time_chunk(arrays, seq_inputs, start, stop, time_axis, length_input)
            loss, grads, cur = tbptt_value_and_grad(self.model, params, chunk, k=stop - start,
                                                    initial_state=cur,
                                                    **{**kw, "length_input": None,
                                                       "seed": step_seed(seed, start)})
            params, opt_state, norm = self._apply(params, opt_state, grads, loss)
            total += loss
        return params, opt_state, total, norm, cur

    # -- epochs -------------------------------------------------------------------------------
    def fit(self, params: Mapping[str, np.ndarray] | TrainState,
            data_iter_fn: Callable[[int, np.random.Generator], Iterable[Mapping[str, Any]]],
            epochs: int, progress: bool = True,
            eval_fn: Callable[[dict[str, np.ndarray]], Mapping[str, Any]] | None = None, *,
            seed: int = 0, checkpoint_path: str | None = None,
            on_epoch_end: Callable[[TrainState, dict], None] | None = None) -> History:
        """Train until `epochs` epochs are done in total; returns the History.

        params: initial parameters, or a TrainState (e.g. from `restore`) to continue from.
        data_iter_fn(epoch, rng): the batches of one epoch, dicts of model inputs; shuffle with
            `rng` (the TrainState's generator) so that a restored run sees the same batches.
        epochs: the total number of epochs; a TrainState that has done e epochs runs e..epochs-1.
        progress: tqdm bars (epochs and steps), shown only when stderr is a terminal.
        eval_fn(params) -> {metric: value}: called after each epoch, merged into its row.
        seed: the run seed (data RNG of a fresh state; dropout seeds mix it with the step).
        checkpoint_path: if given, the TrainState is saved there (atomically) after each epoch.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative integer (the total number of "
                             f"epochs), received {epochs!r}")
        if not callable(data_iter_fn):
            raise TypeError(f"data_iter_fn: expected a function (epoch, rng) -> iterable of "
                            f"batches, received {type(data_iter_fn).__name__}")
        if isinstance(params, TrainState):
            state = params
        else:
            state = self.init(params, seed)
        state.params = self.model.check_params(state.params)
        if self.distributed:
            state = self._sync_state(state)
            progress = progress and self.is_root
        hist = History()
        bar = _bar(progress, total=epochs, initial=state.epoch, desc="epochs", unit="epoch")
        try:
            while state.epoch < epochs:
                t0 = time.perf_counter()
                losses, norms = [], []
                inner = _bar(progress, desc=f"epoch {state.epoch + 1}", unit="batch",
                             leave=False)
                try:
                    for batch in self._batches(data_iter_fn, state):
                        if self.distributed:
                            p, o, loss, norm, n = self._dist_step(
                                state.params, state.opt_state, batch,
                                seed=step_seed(seed, state.step))
                            if n == 0:  # no rank had a batch left: the epoch is over
                                break
                        else:
                            try:
                                p, o, loss, norm = self.step(state.params, state.opt_state,
                                                             batch,
                                                             seed=step_seed(seed, state.step))
                            except NonFiniteTrainingError as e:
                                raise NonFiniteTrainingError(
                                    f"epoch {state.epoch + 1}, step {state.step}: {e}") from None
                        state.params, state.opt_state = p, o
                        state.step += 1
                        losses.append(loss)
                        norms.append(norm)
                        if inner is not None:
                            inner.update(1)
                            inner.set_postfix(loss=f"{loss:.4g}")
                finally:
                    if inner is not None:
                        inner.close()
                state.epoch += 1
                row: dict[str, Any] = {
                    "epoch": state.epoch,
                    "loss": float(np.mean(losses)) if losses else math.nan,
                    "grad_norm": float(np.mean(norms)) if norms else math.nan,
                    "steps": len(losses),
                    "time": time.perf_counter() - t0,
                }
                with self._all_or_none(f"the end of epoch {state.epoch}"):
                    if eval_fn is not None:
                        row.update(dict(eval_fn(state.params)))
                    hist.append(row)
                    if checkpoint_path is not None:
                        self.save_checkpoint(checkpoint_path, state)
                    if on_epoch_end is not None:
                        on_epoch_end(state, row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                     for k, v in row.items() if k not in ("epoch", "steps")})
        finally:
            if bar is not None:
                bar.close()
        hist.state = state
        return hist

    # -- data parallelism (distributed="mpi") -----------------------------------------------------
    def _batches(self, data_iter_fn, state: TrainState):
        """The epoch's batches; distributed, then None until the caller stops (when no rank has
        data left), and an exception of the iterator is reported to every rank."""
        if not self.distributed:
            yield from _checked_batches(data_iter_fn(state.epoch, state.rng), state.epoch)
            return
        try:
            for batch in _checked_batches(data_iter_fn(state.epoch, state.rng), state.epoch):
                yield batch
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            self._fail(e, f"the batches of epoch {state.epoch + 1}")
        while True:  # out of data here; the loop ends when every rank is
            yield None

    def _dist_step(self, params, opt_state, batch, seed):
        """One data-parallel step: (params, opt_state, global loss, norm, global examples)."""
        what = "the gradient allreduce"
        try:
            params = self.model.check_params(params)
            if batch is None:
                sh = None
            elif isinstance(batch, _dist.Shard):
                sh = batch
            elif isinstance(batch, Mapping):
                sh = _dist.shard(batch)
            else:
                raise TypeError(f"batch_inputs: expected a dict of model inputs or a "
                                f"distributed.Shard, received {type(batch).__name__}")
            if sh is not None and sh.n > 0:
                outs, grads = value_and_grad(self.model, params, wrt=self.wrt,
                                             output=self.loss_output, training=self.training,
                                             seed=seed, backend=self.backend,
                                             example_offset=sh.offset,
                                             checkpoint_every=self.checkpoint_every,
                                             **sh.inputs)
                loss, weight = float(_select(self.model, outs, self.loss_output)), sh.n
            else:
                grads = {n: np.zeros_like(params[n]) for n in self.wrt}
                loss, weight = 0.0, 0
        except (Exception, SystemExit, KeyboardInterrupt) as e:
            self._fail(e, what)
        red = _dist.allreduce_start(grads, weight=weight, value=loss, what=what).wait()
        if red.weight == 0:
            return params, dict(opt_state), math.nan, math.nan, 0
        # every rank sees the same global loss and gradients, so all stop (or skip) together
        params, opt_state, norm = self._apply(params, opt_state, red.grads, red.value)
        return params, opt_state, red.value, norm, red.weight

    def _fail(self, e: BaseException, what: str):
        """This rank failed: tell the others (they raise RankFailed), then raise `e` here."""
        sys.stderr.write(f"rnncomp.distributed: rank {_dist.rank()}/{_dist.size()} failed "
                         f"before {what}: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        try:
            _dist.allreduce_start({}, weight=0.0, ok=False, what=what)
        except _dist.DistributedError:
            pass
        raise e

    def _all_or_none(self, what: str):
        """A context: distributed, an exception inside on any rank stops every rank."""
        trainer = self

        class _Ctx:
            def __enter__(self):
                return self

            def __exit__(self, kind, value, tb):
                if not trainer.distributed:
                    return False
                if value is not None and isinstance(value, Exception):
                    trainer._fail(value, what)
                _dist.allreduce_start({}, weight=0.0, what=what)
                return False

        return _Ctx()

    def _sync_state(self, state: TrainState) -> TrainState:
        """Rank 0's TrainState (params, optimizer state, epoch, step, data RNG) on every rank."""
        meta = _dist.broadcast_object({"epoch": int(state.epoch), "step": int(state.step),
                                       "rng": _rng_state(state.rng)})
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        return TrainState(_dist.broadcast(state.params), _dist.broadcast(state.opt_state),
                          int(meta["epoch"]), int(meta["step"]), rng)

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, path: str, state: TrainState | Mapping[str, np.ndarray],
                        opt_state: Mapping[str, np.ndarray] | None = None, *, epoch: int = 0,
                        step: int = 0, rng: np.random.Generator | None = None,
                        extra: Any = None) -> None:
        """Atomically write params, optimizer state, trainer/optimizer config, epoch, step and
        the RNG state to `path` (a crash mid-save leaves the previous file intact).
        Distributed, only rank 0 writes (the state is the same on every rank)."""
        if not self.is_root:
            return
        if not isinstance(state, TrainState):
            state = TrainState(dict(state), dict(opt_state or {}), epoch, step,
                               rng if rng is not None else np.random.default_rng(0))
        meta = {"kind": "rnncomp.train", "trainer": self.config(), "epoch": int(state.epoch),
                "step": int(state.step), "rng": _rng_state(state.rng), "extra": extra,
                "model": getattr(self.model, "name", None)}
        checkpoint.save(path, state.params, state.opt_state, meta)

    def restore(self, path: str) -> TrainState:
        """Read a checkpoint written by save_checkpoint (parameters are checked against the
        model's) and return the TrainState to pass to `fit`. Distributed, rank 0 reads it and
        sends it to the others (any number of ranks; the file need only be on rank 0)."""
        if self.distributed:
            state = None
            with self._all_or_none(f"restoring {path}"):
                if self.is_root:
                    state = self._restore(path)
            if state is None:
                zeros = {n: np.zeros(s.shape, s.dtype.np) for n, s in
                         self.model.param_specs.items()}
                state = TrainState(zeros, self.optimizer.init({n: zeros[n] for n in self.wrt}))
            return self._sync_state(state)
        return self._restore(path)

    def _restore(self, path: str) -> TrainState:
        ck = checkpoint.load(path, expect_params={n: np.zeros(s.shape, s.dtype.np)
                                                  for n, s in self.model.param_specs.items()})
        meta = ck.metadata if isinstance(ck.metadata, dict) else {}
        if meta.get("kind") != "rnncomp.train":
            raise checkpoint.CheckpointError(f"{path}: not a checkpoint written by "
                                             f"Trainer.save_checkpoint")
        saved_opt = meta.get("trainer", {}).get("optimizer")
        if saved_opt is not None and saved_opt != self.optimizer.config():
            raise checkpoint.CheckpointError(
                f"{path}: saved with optimizer {saved_opt}, this trainer uses "
                f"{self.optimizer.config()}; build the Trainer with "
                f"optim.from_config(...) of the saved config to continue")
        epoch, step = (_meta_count(path, meta, k) for k in ("epoch", "step"))
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{path}: invalid data-RNG state in the trainer "
                                             f"metadata ({type(e).__name__}: {e})") from None
        return TrainState(dict(ck.params), dict(ck.opt_state or {}), epoch, step, rng)


class NonFiniteTrainingError(FloatingPointError):
    """A training step met a NaN/Inf loss or gradient (Trainer(on_nonfinite="raise"))."""


def _checked_batches(batches: Any, epoch: int):
    if batches is None or not hasattr(batches, "__iter__"):
        raise TypeError(f"data_iter_fn returned {type(batches).__name__} for epoch {epoch + 1}: "
                        f"expected an iterable of batches (dicts of model inputs); did it "
                        f"forget to return or yield?")
    for k, batch in enumerate(batches):
        if not isinstance(batch, (Mapping, _dist.Shard)):  # a Shard: this rank's rows
            raise TypeError(f"data_iter_fn: batch {k} of epoch {epoch + 1} is a "
                            f"{type(batch).__name__}: expected a dict of model inputs (input "
                            f"name -> array)")
        yield batch


def _meta_count(path: str, meta: dict, key: str) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise checkpoint.CheckpointError(f"{path}: trainer metadata {key!r} must be a "
                                         f"non-negative integer, received {v!r}")
    return v


def _select(model: Any, outs: Any, sel: Any) -> Any:
    """The leaf of the output pytree picked by `sel` (same rules as rnncomp.runtime.grad.output_index)."""
    from ..frontend.trace import flatten

    flat, _ = flatten(outs)
    return flat[output_index(model, sel)]


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return _jsonable(st)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _bar(progress: bool, **kw: Any):
    """A tqdm bar, or None when progress is off, stderr is not a terminal or tqdm is absent."""
    if not progress:
        return None
    try:
        if not sys.stderr.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return None
    return tqdm(**kw)
